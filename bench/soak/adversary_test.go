package soak

import (
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/bench/loadgen"
	"github.com/xksproxy/xksproxy/cosmian"
	"github.com/xksproxy/xksproxy/cosmian/kmsemu"
)

// The rights check finds every way a principal can hold a right its owner never gave, and
// nothing else.
func TestAdversaryRightsCheck(t *testing.T) {
	var bs []*backend
	for _, n := range []string{"a", "b"} {
		b, err := startBackend(n, kmsemu.Cosmian526)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.run.Close() })
		bs = append(bs, b)
	}
	s := &soak{o: Options{Keys: 2, Progress: io.Discard}, backends: bs, start: time.Now()}
	for _, b := range bs {
		if err := b.seed(s.seededKeys()); err != nil {
			t.Fatal(err)
		}
	}
	ops := []string{cosmian.OpEncrypt, cosmian.OpDecrypt, cosmian.OpGetAttributes}
	mk := func(b *backend, id string, grantees ...string) {
		t.Helper()
		if _, ok := b.emu.Object(id); !ok {
			if err := b.emu.CreateKey("admin", id, kmsemu.KeyOptions{Tags: []string{cosmian.XKSTag}}); err != nil {
				t.Fatal(err)
			}
		}
		for _, g := range grantees {
			if err := b.emu.GrantAccess("admin", id, g, ops...); err != nil {
				t.Fatal(err)
			}
		}
	}
	a := &adversary{s: s, races: map[string][2]string{}, own: map[string]string{}, actions: map[string]int64{}}
	// Fine: the owner's grants as the minting backend gave them, copied as they are.
	mk(bs[0], "soak-r0-new-1", loadgen.DefaultPrincipal)
	mk(bs[1], "soak-r0-new-1", loadgen.DefaultPrincipal)
	a.own["soak-adv-own-4"] = attackers[1]
	mk(bs[0], "soak-adv-own-4", attackers[1])
	a.races["soak-adv-race-1"] = [2]string{attackers[0], loadgen.DefaultPrincipal}
	mk(bs[0], "soak-adv-race-1", loadgen.DefaultPrincipal)
	mk(bs[1], "soak-adv-race-1", loadgen.DefaultPrincipal, cosmian.XKSServiceUser)
	rep := &Report{}
	a.checkRights(rep)
	if rep.Adversary.RightsWidened != 0 || rep.Adversary.KeysChecked != 5 {
		t.Fatalf("clean case: %+v", rep.Adversary)
	}
	// Each way a right is widened.
	mk(bs[0], s.seededKeys()[0], attackers[0]) // on a seeded key
	mk(bs[1], "soak-adv-race-1", attackers[0]) // both racers, and the sides differ
	mk(bs[0], "soak-r0-new-2", attackers[2])   // on a key the load made
	mk(bs[1], "soak-adv-own-4", "*")           // to every user
	mk(bs[0], "made-by-nobody")                // a key nobody in the soak made
	rep = &Report{}
	a.checkRights(rep)
	want := []string{s.seededKeys()[0], "soak-adv-race-1", "soak-r0-new-2", "soak-adv-own-4", "made-by-nobody"}
	for _, id := range want {
		if !slices.ContainsFunc(rep.Adversary.WidenedIDs, func(w string) bool { return strings.HasPrefix(w, id+": ") }) {
			t.Errorf("%s not reported widened: %v", id, rep.Adversary.WidenedIDs)
		}
	}
	rep.judge()
	if rep.Pass {
		t.Error("a report with widened rights passes")
	}
}
