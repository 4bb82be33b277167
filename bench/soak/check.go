package soak

import (
	"context"
	"fmt"
	"slices"
	"sort"

	"github.com/xksproxy/xksproxy/bench/loadgen"
)

// finalChecks re-decrypts every recorded ciphertext through every replica and compares every
// key the load knew of on both backends.
func (s *soak) finalChecks(ctx context.Context, rep *Report) {
	var items []loadgen.Sealed
	for _, lg := range s.loads {
		items = append(items, lg.Recorded()...)
	}
	rep.Recorded = len(items)
	for i, r := range s.replicas {
		cfg := s.loadConfig(i)
		cfg.Rate, cfg.Duration, cfg.Workers, cfg.Record, cfg.OnFailure = 0, 0, 32, false, nil
		lg, err := loadgen.New(cfg)
		if err != nil {
			rep.Problems = append(rep.Problems, fmt.Sprintf("re-decrypt through %s: %v", r.name, err))
			continue
		}
		ok, failed, failures, err := lg.Redecrypt(ctx, items)
		rep.Redecrypted += ok
		rep.RedecryptFailed += failed
		rep.RedecryptFailures = append(rep.RedecryptFailures, failures...)
		if err != nil {
			rep.Problems = append(rep.Problems, fmt.Sprintf("re-decrypt through %s: %v", r.name, err))
		}
		s.say("re-decrypted %d ciphertexts through %s: %d failed", len(items), r.name, failed)
	}

	ids := map[string]bool{}
	for _, id := range s.seededKeys() {
		ids[id] = true
	}
	for _, lg := range s.loads {
		for _, id := range lg.Keys() {
			ids[id] = true
		}
	}
	sorted := make([]string, 0, len(ids))
	for id := range ids {
		sorted = append(sorted, id)
	}
	sort.Strings(sorted)
	a, b := s.backend("a"), s.backend("b")
	serving := s.backend(s.serving)
	rep.ServingBackend = s.serving
	for _, id := range sorted {
		rep.KeysCompared++
		_, onA := a.emu.Object(id)
		_, onB := b.emu.Object(id)
		if _, ok := serving.emu.Object(id); !ok {
			rep.KeysLost++
			rep.LostIDs = appendCapped(rep.LostIDs, id)
			continue
		}
		if onA && onB {
			rep.KeysOnBoth++
			same, err := a.emu.KeyMaterialEqual(id, b.emu)
			if err != nil || !same {
				rep.KeysSplit++
				rep.SplitIDs = appendCapped(rep.SplitIDs, id)
			}
		}
	}
	for i, r := range s.replicas {
		st, err := r.admin.Status(ctx)
		if err != nil {
			rep.Problems = append(rep.Problems, fmt.Sprintf("%s: cutover status: %v", r.name, err))
			continue
		}
		if i == 0 {
			rep.FinalState = string(st.State)
		}
		if st.Primary != s.serving {
			rep.Problems = append(rep.Problems, fmt.Sprintf("%s routes to %s, the soak expected %s", r.name, st.Primary, s.serving))
		}
	}
	s.say("%d keys compared: %d lost, %d split (%d on both backends)", rep.KeysCompared, rep.KeysLost, rep.KeysSplit, rep.KeysOnBoth)
	if s.adv != nil {
		s.adv.checkRights(rep)
	}
}

func appendCapped(list []string, id string) []string {
	if len(list) < 20 && !slices.Contains(list, id) {
		return append(list, id)
	}
	return list
}
