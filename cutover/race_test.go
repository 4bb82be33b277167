package cutover

import (
	"context"
	"fmt"
	"testing"

	"github.com/xksproxy/xksproxy/cosmian"
	"github.com/xksproxy/xksproxy/cosmian/kmsemu"
)

// racingImport imports the key and then reports that it already exists: what one copy path
// sees when the other (the proxy's copy of a key created after the switch, or the background
// pass) imported the same key a moment before.
type racingImport struct{ kmipAPI }

func (r racingImport) Import(ctx context.Context, req cosmian.ImportRequest) (string, error) {
	if _, err := r.kmipAPI.Import(ctx, req); err != nil {
		return "", err
	}
	return "", fmt.Errorf("import %s: %w", req.UID, cosmian.ErrAlreadyExists)
}

// TestCopyRaceIsASkip: losing that race is a skip of an identical key, not a conflict.
func TestCopyRaceIsASkip(t *testing.T) {
	e := newEnv(t, kmsemu.Cosmian526)
	ids := seedMixed(t, e.A, 1)
	c := e.controller(t, nil)
	// The fresh key store's first marker is written in the background: let it land before the
	// client is swapped under the writer.
	markerOn(t, e.A, "A", 1)
	markerOn(t, e.B, "B", 1)
	c.sides.tgt.k = racingImport{c.sides.tgt.k}
	res, err := c.copier.copyKey(ctxT(t), c.sides.src, c.sides.tgt, ids[0], controlAttempts)
	if err != nil || res != ResultSkipped {
		t.Fatalf("copy after a lost race: result %q, err %v; want skipped", res, err)
	}
	e.checkCopies(t, ids)
}
