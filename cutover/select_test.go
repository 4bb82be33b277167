package cutover

import (
	"fmt"
	"testing"

	"github.com/xksproxy/xksproxy/cosmian"
	"github.com/xksproxy/xksproxy/cosmian/kmsemu"
)

// Past Cosmian's Locate cap (1000, no paging before 5.27) the tag selection lists what the
// identity owns and reads each object's tags. Every tagged key is migrated, no untagged one is,
// and the later listings (catch-up rounds, one per phase) read only keys they have not seen:
// a key is read on the source a bounded number of times, not once per listing.
func TestTagSelectionPastLocateCap(t *testing.T) {
	e := newEnv(t, kmsemu.Cosmian526)
	const tagged, untagged = 1010, 20
	for i := range tagged {
		must(t, e.A.CreateKey("admin", fmt.Sprintf("t-%04d", i), kmsemu.KeyOptions{Tags: []string{cosmian.XKSTag}}))
	}
	for i := range untagged {
		must(t, e.A.CreateKey("admin", fmt.Sprintf("u-%02d", i), kmsemu.KeyOptions{Tags: []string{"other"}}))
	}
	c := e.controller(t, nil)
	before := e.A.Stats().KMIP["GetAttributes"]
	must(t, c.Start(ctxT(t), StartOptions{}))
	st := mustWait(t, c, StateVerified)
	if st.Keys.Total != tagged || st.Keys.Verified != tagged {
		t.Fatalf("keys %+v, want %d tagged ones copied and verified", st.Keys, tagged)
	}
	if _, ok := e.B.Object("u-00"); ok {
		t.Error("an untagged key was copied to B")
	}
	reads := e.A.Stats().KMIP["GetAttributes"] - before
	t.Logf("GetAttributes on A: %d for %d owned objects", reads, tagged+untagged)
	// Plan, copy and verify read each key three times; re-reading every key at each of the
	// run's listings (five or more) would be over 5 per key.
	if limit := int64(7 * (tagged + untagged) / 2); reads > limit {
		t.Errorf("%d GetAttributes on A for %d objects (over %d): listings re-read known keys", reads, tagged+untagged, limit)
	}
}
