package cutover

import (
	"fmt"
	"runtime"
	"slices"
	"testing"

	"github.com/xksproxy/xksproxy/cosmian"
)

// BenchmarkRightsBaseMemory reports what the rights baselines hold per key while switched (and
// after a finalize, for a rollback): the driver keeps one for every migrated key, so this is
// the bulk of its memory growth over a migration.
func BenchmarkRightsBaseMemory(b *testing.B) {
	const keys = 10000
	for range b.N {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		r := newRightsBase()
		for i := range keys {
			// What a snapshot decodes from Cosmian: fresh strings for every key (the state is the
			// cosmian constant its decoder returns).
			s := keySnap{acl: map[string][]string{}, state: cosmian.StateActive}
			for _, u := range []string{"arn:aws:iam::123456789012:role/app-%05d", "arn:aws:iam::123456789012:user/alice-%05d", "[aws-xks-service]%.0d"} {
				s.acl[fmt.Sprintf(u, i)] = []string{string([]byte("decrypt")), string([]byte("encrypt")), string([]byte("getattributes"))}
			}
			r.set(fmt.Sprintf("soak-r1-new-%06d", i), s)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/keys, "heapB/key")
		runtime.KeepAlive(r)
	}
}

func TestPackedACLRoundTrip(t *testing.T) {
	long := string(make([]byte, 300)) // a length over one varint byte, and NULs inside
	for name, acl := range map[string]map[string][]string{
		"empty":       {},
		"one user":    {"arn:aws:iam::1:role/a": {"decrypt", "encrypt"}},
		"no ops":      {"u": {}},
		"odd bytes":   {"\x00\x01\xff": {"\x80", ""}, "": {"get"}},
		"long values": {long: {long, "x"}, "*": {"getattributes"}},
	} {
		t.Run(name, func(t *testing.T) {
			got := unpackACL(packACL(acl))
			if len(got) != len(acl) {
				t.Fatalf("%d users back, want %d", len(got), len(acl))
			}
			for u, ops := range acl {
				if g, ok := got[u]; !ok || !slices.Equal(g, ops) {
					t.Errorf("user %q: %q, want %q", u, g, ops)
				}
			}
			if packACL(got) != packACL(acl) {
				t.Error("packing is not stable")
			}
		})
	}
	// Different lists never pack alike (the fast path of a pass relies on it).
	a := packACL(map[string][]string{"ab": {"c"}})
	b := packACL(map[string][]string{"a": {"bc"}})
	if a == b {
		t.Error("two lists packed alike")
	}
}
