package soak

import (
	"context"
	"crypto/tls"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/xksproxy/xksproxy/bench/loadgen"
	"github.com/xksproxy/xksproxy/cosmian"
	"github.com/xksproxy/xksproxy/cutover"
	"github.com/xksproxy/xksproxy/proxy"
	"github.com/xksproxy/xksproxy/sigv4"
	"github.com/xksproxy/xksproxy/xks"
)

// The adversary: beside the AWS-like load, callers who do not play fair, signed like AWS but
// with principals of their own, through every replica and both prefixes. They send CreateKey for
// keys that exist, race a victim's CreateKey for a new id, create keys under the names the
// proxy's own objects have (or had), and call the proxy's health-check keys. At the end every
// key's access list on both backends is compared with what its owner — the backend that minted
// it — granted: nobody may hold a right the owner did not give (rights_widened).

// otherPrefix is the second key store path every replica serves (the same keys): an attacker's
// requests arrive through both.
const otherPrefix = "/other"

var attackers = []string{
	"arn:aws:iam::999999999999:user/soak-attacker-1",
	"arn:aws:iam::999999999999:user/soak-attacker-2",
	"arn:aws:iam::999999999999:user/soak-attacker-3",
}

// ownLikeNames are customer key ids that look like the proxy's own objects; attacker 1 creates
// them.
var ownLikeNames = []string{"xksproxy-cutover-marker", "xksproxy-health-check", "xksproxy-storage-canary-soak"}

// adversary is the running adversary and what it made.
type adversary struct {
	s       *soak
	clients [][]*xks.Client // [replica][prefix]

	mu      sync.Mutex
	races   map[string][2]string // new id → the two principals that raced for it
	own     map[string]string    // id → the attacker that alone created it
	actions map[string]int64     // action → requests
	wrong   []string             // a health-check key not refused as absent
	n       int
}

func (s *soak) newAdversary() (*adversary, error) {
	a := &adversary{s: s, races: map[string][2]string{}, own: map[string]string{}, actions: map[string]int64{}}
	signer, err := sigv4.NewSigner(sigv4.SignerConfig{Credential: s.loadCred, Region: region})
	if err != nil {
		return nil, err
	}
	for _, r := range s.replicas {
		var cs []*xks.Client
		for _, p := range []string{"/aws", otherPrefix} {
			c, err := xks.NewClient(xks.ClientConfig{
				BaseURL: r.endpoint() + p + xks.APIPathSuffix,
				HTTP:    &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: s.pki.pool, MinVersion: tls.VersionTLS12}}},
				Signer:  signer, Timeout: s.o.ClientTimeout,
			})
			if err != nil {
				return nil, err
			}
			cs = append(cs, c)
		}
		a.clients = append(a.clients, cs)
	}
	return a, nil
}

func md(principal, op string) xks.RequestMetadata {
	return xks.RequestMetadata{AWSPrincipalArn: principal, KMSOperation: op, KMSRequestID: "soak-adversary-" + randHex(6),
		KMSKeyArn: "arn:aws:kms:" + region + ":999999999999:key/soak-adversary"}
}

// client picks a replica and a prefix at random.
func (a *adversary) client() *xks.Client {
	r := a.clients[rand.IntN(len(a.clients))]
	return r[rand.IntN(len(r))]
}

func (a *adversary) count(action string) {
	a.mu.Lock()
	a.actions[action]++
	a.mu.Unlock()
}

// run sends the adversary's requests at rate until ctx ends or stop is closed.
func (a *adversary) run(ctx context.Context, rate float64, stop <-chan struct{}) {
	t := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-stop:
			return
		case <-t.C:
		}
		a.once(ctx)
	}
}

func (a *adversary) once(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 2*a.s.o.ClientTimeout)
	defer cancel()
	attacker := attackers[rand.IntN(len(attackers))]
	a.mu.Lock()
	a.n++
	n := a.n
	a.mu.Unlock()
	switch n % 5 {
	case 0: // CreateKey for a key that exists: gives its caller nothing
		a.count("createkey_existing")
		id := a.s.seededKeys()[rand.IntN(a.s.o.Keys)]
		_, _ = a.client().Metadata(ctx, id, md(attacker, "CreateKey"))
	case 1: // two callers race a CreateKey for one new id
		a.count("createkey_race")
		id := fmt.Sprintf("soak-adv-race-%d", n)
		pair := [2]string{attacker, loadgen.DefaultPrincipal}
		a.mu.Lock()
		a.races[id] = pair
		a.mu.Unlock()
		var wg sync.WaitGroup
		for _, p := range pair {
			wg.Go(func() { _, _ = a.client().Metadata(ctx, id, md(p, "CreateKey")) })
		}
		wg.Wait()
	case 2: // names like the proxy's own objects: keys like any other, the attacker's
		a.count("createkey_own_like_name")
		id := ownLikeNames[rand.IntN(len(ownLikeNames))]
		a.mu.Lock()
		a.own[id] = attackers[0]
		a.mu.Unlock()
		c := a.client()
		if _, err := c.Metadata(ctx, id, md(attackers[0], "CreateKey")); err == nil {
			_, _ = c.Encrypt(ctx, id, &xks.EncryptRequest{RequestMetadata: md(attackers[0], "Encrypt"), Plaintext: []byte("adversary")})
		}
	case 3: // the proxy's health-check keys: refused as absent, by the proxy itself
		a.count("health_key")
		hk := a.s.healthKeyIDs()
		id := hk[rand.IntN(len(hk))]
		_, err := a.client().Encrypt(ctx, id, &xks.EncryptRequest{RequestMetadata: md(attacker, "Encrypt"), Plaintext: []byte("adversary")})
		if n := xks.NameOf(err); err == nil || n != xks.KeyNotFoundException && !n.Retryable() && ctx.Err() == nil {
			a.mu.Lock()
			a.wrong = appendCapped(a.wrong, fmt.Sprintf("Encrypt with the health-check key %s: %v", id, err))
			a.mu.Unlock()
		}
	default: // a key of its own
		a.count("createkey_own")
		id := fmt.Sprintf("soak-adv-own-%d", n)
		a.mu.Lock()
		a.own[id] = attacker
		a.mu.Unlock()
		_, _ = a.client().Metadata(ctx, id, md(attacker, "CreateKey"))
	}
}

// healthKeyIDs are the proxy's health-check keys on the two backends (derived from their SigV4
// secrets, as the proxy derives them).
func (s *soak) healthKeyIDs() []string {
	var out []string
	for _, b := range s.backends {
		out = append(out, proxy.HealthKeyID(proxy.HealthConfig{}, proxy.BackendConfig{Name: b.name, Credential: b.cred}))
	}
	return out
}

// principals are the users holding a right on id on b, but the reserved service identity and
// "every user".
func principals(b *backend, id string) []string {
	var out []string
	for u, ops := range b.emu.Access(id) {
		if len(ops) > 0 && u != cosmian.XKSServiceUser && u != "*" {
			out = append(out, u)
		}
	}
	sort.Strings(out)
	return out
}

// checkRights compares every key's access lists on both backends with what its owner granted:
//   - seeded keys: granted to every user by the soak, to no principal;
//   - keys the load created: at most the load's principal (the backend that minted it granted
//     it, and a copy carries it);
//   - keys a caller created alone: at most that caller;
//   - ids two callers raced for: at most one of them, the same one on both backends;
//   - "*" only where the soak granted it.
//
// A key on both backends holds the same principals on both.
func (a *adversary) checkRights(rep *Report) {
	health := a.s.healthKeyIDs()
	seeded := map[string]bool{}
	for _, id := range a.s.seededKeys() {
		seeded[id] = true
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	rep.Adversary = &AdversaryReport{Requests: map[string]int64{}}
	for k, v := range a.actions {
		rep.Adversary.Requests[k] = v
	}
	rep.Adversary.HealthKeyNotRefused = slices.Clone(a.wrong)
	ids := map[string]bool{}
	for _, b := range a.s.backends {
		for _, o := range b.emu.Objects() {
			if !cutover.IsOwnObject(o.Tags) && !slices.Contains(health, o.UID) {
				ids[o.UID] = true
			}
		}
	}
	widened := func(id, why string) {
		rep.Adversary.RightsWidened++
		rep.Adversary.WidenedIDs = appendCapped(rep.Adversary.WidenedIDs, id+": "+why)
	}
	for id := range ids {
		rep.Adversary.KeysChecked++
		var allowed []string
		switch {
		case seeded[id]:
		case strings.HasPrefix(id, "soak-r") && strings.Contains(id, "-new-"):
			allowed = []string{loadgen.DefaultPrincipal}
		case a.own[id] != "":
			allowed = []string{a.own[id]}
		case a.races[id] != [2]string{}:
			p := a.races[id]
			allowed = p[:]
		default:
			widened(id, "a key nobody in the soak created")
			continue
		}
		var union []string
		var lists [][]string
		for _, b := range a.s.backends {
			if _, ok := b.emu.Object(id); !ok {
				continue
			}
			ps := principals(b, id)
			lists = append(lists, ps)
			for _, p := range ps {
				if !slices.Contains(union, p) {
					union = append(union, p)
				}
			}
			if _, every := b.emu.Access(id)["*"]; every && !seeded[id] {
				widened(id, "granted to every user on "+b.name)
			}
		}
		for _, p := range union {
			if !slices.Contains(allowed, p) {
				widened(id, p+" holds a right its owner never gave")
			}
		}
		if a.races[id] != [2]string{} && len(union) > 1 {
			widened(id, fmt.Sprintf("both racers hold rights: %v", union))
		}
		if len(lists) == 2 && !slices.Equal(lists[0], lists[1]) {
			widened(id, fmt.Sprintf("the backends grant different principals: %v and %v", lists[0], lists[1]))
		}
	}
	sort.Strings(rep.Adversary.WidenedIDs)
	a.s.say("adversary: %d keys' rights checked on both backends: %d widened; %d health-check calls not refused",
		rep.Adversary.KeysChecked, rep.Adversary.RightsWidened, len(a.wrong))
}

// AdversaryReport is what the adversary did and what the rights check found.
type AdversaryReport struct {
	Requests            map[string]int64 `json:"requests"`
	KeysChecked         int              `json:"keys_checked"`
	RightsWidened       int              `json:"rights_widened"`
	WidenedIDs          []string         `json:"widened,omitempty"`
	HealthKeyNotRefused []string         `json:"health_key_not_refused,omitempty"`
}
