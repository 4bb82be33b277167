package cutover

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/xks"
)

// Probation counts a definite refusal from the target only when the source does not refuse the
// same request the same way: an id neither side holds, a forged ciphertext or a principal
// without a grant is the caller's mistake, not the target's.
func TestProbationJudgesRefusalsOnTheSourcesAnswer(t *testing.T) {
	var asked atomic.Int64
	var sourceSays atomic.Value // xks.ErrorName; "" = 200
	sourceSays.Store(xks.ErrorName(""))
	fwd := &fakeForwarder{fn: func(_ context.Context, backend string, op xks.Operation, keyID string, body []byte) (int, []byte, error) {
		asked.Add(1)
		if backend != "A" {
			t.Errorf("second opinion asked of %s", backend)
		}
		if n := sourceSays.Load().(xks.ErrorName); n != "" {
			return n.Status(), nil, xks.Errorf(n, "no")
		}
		return http.StatusOK, []byte(`{"plaintext":"AAAA"}`), nil
	}}
	e, _, _ := switchedEnv(t)
	e.router.setForward(fwd)
	c := e.controller(t, nil)
	if c.book.state() != StateSwitched {
		t.Fatalf("state %s", c.book.state())
	}
	wait := func(n int64) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for c.probation.win.stats(c.cfg.Now(), time.Time{}, time.Hour).Requests < int(n) {
			if time.Now().After(deadline) {
				t.Fatalf("%d judged, want %d", c.probation.win.stats(c.cfg.Now(), time.Time{}, time.Hour).Requests, n)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	body := []byte(`{"requestMetadata":{},"ciphertext":"AAAA"}`)
	for _, tc := range []struct {
		name       string
		target     xks.ErrorName
		source     xks.ErrorName
		createKey  bool
		wantFailed bool
		wantAsked  bool
	}{
		{"id neither side holds", xks.KeyNotFoundException, xks.KeyNotFoundException, false, false, true},
		{"forged ciphertext", xks.InvalidCiphertextException, xks.InvalidCiphertextException, false, false, true},
		{"principal without a grant", xks.InvalidKeyUsageException, xks.InvalidKeyUsageException, false, false, true},
		{"the source decrypts it", xks.InvalidCiphertextException, "", false, true, true},
		{"the source answers otherwise", xks.KeyNotFoundException, xks.InvalidStateException, false, true, true},
		{"a CreateKey is never sent again", xks.KeyNotFoundException, xks.KeyNotFoundException, true, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c.probation.reset()
			sourceSays.Store(tc.source)
			before := asked.Load()
			c.Traffic().Observe("B", tc.target, time.Millisecond, false) // Recheck records it, not Observe
			c.Traffic().Recheck("B", xks.OpDecrypt, tc.createKey, "key-000", tc.target, time.Millisecond, body)
			wait(1)
			st := c.probation.win.stats(c.cfg.Now(), time.Time{}, time.Hour)
			if st.Requests != 1 || (st.Errors == 1) != tc.wantFailed {
				t.Errorf("window %+v, want failed=%v", st, tc.wantFailed)
			}
			if got := asked.Load() > before; got != tc.wantAsked {
				t.Errorf("source asked: %v, want %v", got, tc.wantAsked)
			}
		})
	}
	// A request that fell back: the source's answer is already there.
	c.probation.reset()
	c.Traffic().ObserveFellBack("B", "key-000", xks.KeyNotFoundException, time.Millisecond, xks.KeyNotFoundException)
	c.Traffic().ObserveFellBack("B", "key-000", xks.KeyNotFoundException, time.Millisecond, "")
	if st := c.probation.win.stats(c.cfg.Now(), time.Time{}, time.Hour); st.Requests != 2 || st.Errors != 1 {
		t.Errorf("fell back: window %+v, want 2 requests, 1 error", st)
	}
}
