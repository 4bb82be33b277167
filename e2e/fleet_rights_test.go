package e2e

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/cosmian"
	"github.com/xksproxy/xksproxy/cosmian/kmsemu"
	"github.com/xksproxy/xksproxy/cutover"
	"github.com/xksproxy/xksproxy/internal/devstack"
	"github.com/xksproxy/xksproxy/xks"
)

// A grant revoked on the serving side is refused by every replica, not only by the driver.
// Cosmian answers a caller without a grant with KeyNotFound, and a KeyNotFound falls back only
// for a key the target may still lack: a replica that did not know the driver had copied the key
// would ask the source, which still holds the grant, and serve the revoked caller. The rights
// sync is held back for the whole test (its interval is a minute), so each replica must refuse
// on what it knows, before the revocation reaches the source.
func TestFleetRevokedGrantRefusedByEveryReplica(t *testing.T) {
	f := startFleet(t, 4, 3, func(c *devstack.Config) {
		c.CosmianA, c.CosmianB = kmsemu.Cosmian526, kmsemu.Cosmian526
		c.Probation = testProbation(10 * time.Minute)
		c.RightsSyncInterval = time.Minute
	})
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	if _, err := f.admin(f.driver()).Start(ctx, cutover.StartOptions{AutoSwitch: true}); err != nil {
		t.Fatal(err)
	}
	f.waitAll(t, cutover.StateSwitched)
	// The first rights pass runs at the switch; the next one a minute later.
	d := f.driver()
	waitFor(t, waitLong, "the first rights pass", func() bool {
		v, ok := metricValue(t, d.MetricsURL, "xks_cutover_rights_sync_pass_seconds")
		return ok && v > 0
	})
	id := f.ids[1]
	reps := f.running()
	for _, r := range reps {
		if err := newXKSAsAt(t, f.st, r.Endpoint, p1).describe(ctx, id); err != nil {
			t.Fatalf("%s before the revocation: %v", r.Name, err)
		}
	}
	if err := f.st.B.RevokeAccess("admin", id, p1, cosmian.OpEncrypt, cosmian.OpDecrypt, cosmian.OpGetAttributes); err != nil {
		t.Fatal(err)
	}
	for _, r := range reps {
		x := newXKSAsAt(t, f.st, r.Endpoint, p1)
		err := x.describe(ctx, id)
		refusedAs(t, r.Name+": DescribeKey after the grant was revoked on B", err, xks.KeyNotFoundException, xks.InvalidKeyUsageException, xks.AccessDeniedException)
		_, err = x.encrypt(ctx, id)
		refusedAs(t, r.Name+": Encrypt after the grant was revoked on B", err, xks.KeyNotFoundException, xks.InvalidKeyUsageException, xks.AccessDeniedException)
	}
	// The premise: A still grants p1, so a refusal above came from B, not from a carried change.
	if ops := rightsOf(f.st.A, id, p1); len(ops) == 0 {
		t.Fatal("the revocation reached A during the test: the refusals above prove nothing")
	}
	// Another key is still served by every replica.
	for _, r := range reps {
		if _, err := newXKSAsAt(t, f.st, r.Endpoint, p1).encrypt(ctx, f.ids[2]); err != nil {
			t.Errorf("%s: encrypt with an untouched key: %v", r.Name, err)
		}
	}
}

// metricValue reads one unlabelled sample from a replica's metrics endpoint.
func metricValue(t *testing.T, url, name string) (float64, bool) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			return f, err == nil
		}
	}
	return 0, false
}
