package cutover

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/xksproxy/xksproxy/cosmian"
)

// Cosmian's HA mode is several nodes over one shared database. "Migrating" between two nodes of
// one cluster has nothing to copy, and revoking the source's grants would revoke the target's:
// they are the same rows. Each node also caches objects in memory (idle TTL 15 minutes by
// default since 5.25), so a change made through one node may stay invisible through the other
// for a while. Before planning or starting, the controller asks whether source and target
// share storage: it imports a canary object through the source, looks it up through the target,
// then destroys it. With shared storage the copy is skipped, verification compares only what
// never changes (the key material, by cross encrypt/decrypt or digest), and revoking source
// grants is refused.

// SharedStorageNote is what plan and status say when source and target share storage.
const SharedStorageNote = "shared storage: nothing to copy"

// canaryPrefix starts the uid of every canary object, followed by 96 random bits: no caller
// can name one. A customer key whose name merely starts like it is a key like any other.
const canaryPrefix = "xksproxy-storage-canary-"

// canaryTag marks a canary object; like the marker tag, only the keys' owner can set it (KMIP),
// so the selection finds a canary left behind by its tag, never by its name.
const canaryTag = "xksproxy-storage-canary"

// canaryTimeout bounds each KMIP call of a detection.
const canaryTimeout = 5 * time.Second

// IsOwnObject reports whether an object with these tags is one of the proxy's own (a cutover
// marker or a shared-storage canary): tags only the keys' owner can set through KMIP. Inventory
// comparisons skip them, as the migration does.
func IsOwnObject(tags []string) bool {
	return slices.Contains(tags, markerTag) || slices.Contains(tags, canaryTag)
}

// storageProbe asks whether source and target share storage, and keeps the answer. The canary
// objects it makes are the proxy's own while they live: their ids are reserved (the proxy
// refuses XKS calls for them).
type storageProbe struct {
	*sides
	shared, known atomic.Bool
	mu            sync.Mutex
	canaries      map[string]bool // ids of the canaries alive now
}

// isShared: source and target were last found to be nodes over one database.
func (c *storageProbe) isShared() bool { return c.shared.Load() }

// reserve marks a canary id as alive (on) or gone.
func (c *storageProbe) reserve(id string, on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.canaries == nil {
		c.canaries = map[string]bool{}
	}
	if on {
		c.canaries[id] = true
	} else {
		delete(c.canaries, id)
	}
}

// reserved reports whether id is a canary alive now.
func (c *storageProbe) reserved(id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.canaries[id]
}

// detectShared imports a canary through the source, looks it up through the target and
// destroys it. A new object is read from the database on a cache miss, so the look-up does not
// depend on the target's object cache.
func (c *storageProbe) detectShared(ctx context.Context) (bool, error) {
	rnd := make([]byte, 12)
	material := make([]byte, 32)
	defer clear(material)
	if _, err := rand.Read(rnd); err != nil {
		return false, err
	}
	if _, err := rand.Read(material); err != nil {
		return false, err
	}
	uid := canaryPrefix + hex.EncodeToString(rnd)
	c.reserve(uid, true)
	defer c.reserve(uid, false)
	cctx, cancel := context.WithTimeout(ctx, canaryTimeout)
	// No activation date: PreActive, unusable for any cryptographic call, destroyable at once.
	_, err := c.src.k.Import(cctx, cosmian.ImportRequest{UID: uid, Material: material,
		Attributes: cosmian.KeyAttributes{Tags: []string{canaryTag}}})
	cancel()
	if err != nil {
		return false, fmt.Errorf("cutover: shared-storage check: creating %s on %s: %w", uid, c.src.name, err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), canaryTimeout)
		defer cancel()
		if err := c.src.k.Destroy(dctx, uid, true); err != nil {
			c.log.Warn("cutover: could not destroy the shared-storage canary; it is never migrated and may be removed by hand",
				"backend", c.src.name, "uid", uid, "err", err)
		}
	}()
	lctx, cancel := context.WithTimeout(ctx, canaryTimeout)
	_, err = c.tgt.k.GetAttributes(lctx, uid)
	cancel()
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, cosmian.ErrNotFound):
		return false, nil
	default:
		return false, fmt.Errorf("cutover: shared-storage check: looking %s up on %s: %w", uid, c.tgt.name, err)
	}
}

// checkShared runs detectShared and records the answer for status and for the copy, verify and
// finalize steps; it logs when the answer is yes.
func (c *storageProbe) checkShared(ctx context.Context) (bool, error) {
	shared, err := c.detectShared(ctx)
	if err != nil {
		return false, err
	}
	if shared && !c.shared.Swap(true) {
		c.log.Info("cutover: "+SharedStorageNote+": source and target are nodes over one database", "source", c.src.name, "target", c.tgt.name)
	}
	if !shared {
		c.shared.Store(false)
	}
	c.known.Store(true)
	return shared, nil
}

// ensureShared runs the check if no answer is known yet; a failure (say, the source is down)
// is logged, not fatal: a copy into shared storage finds the same key and skips it, the copy
// phase asks again, and Finalize asks again before revoking source grants.
func (c *storageProbe) ensureShared(ctx context.Context) {
	if c.known.Load() {
		return
	}
	if _, err := c.checkShared(ctx); err != nil && ctx.Err() == nil {
		c.log.Warn("cutover: could not tell whether source and target share storage; will ask again", "err", err)
	}
}

// notes are the plan's and status's remarks for the operator.
func (s *sides) notes(shared bool, exclude []string) []string {
	var n []string
	if shared {
		n = append(n, SharedStorageNote+" ("+s.src.name+" and "+s.tgt.name+" are nodes over one database); verification still runs")
	}
	if s.mintOnSource() {
		n = append(n, "from a per-principal source ("+s.src.name+", Cosmian 5.26) to an [aws-xks-service] target ("+s.tgt.name+"): while switched, keys AWS creates are minted on "+
			s.src.name+" (5.26 grants the principal that minted them there; the copy gives "+s.tgt.name+" that grant and [aws-xks-service]), so a rollback carries nothing the source cannot express; once finalized they are minted on "+
			s.tgt.name+", and a rollback from finalized carries those back only with grant_everyone_for_service_keys = true")
	}
	if len(exclude) > 0 {
		n = append(n, "never migrated, each backend holds its own: "+strings.Join(exclude, ", "))
	}
	return n
}

// refuseRevokeShared is Finalize's check before revoking source grants: they are the target's.
func (c *storageProbe) refuseRevokeShared(ctx context.Context) error {
	shared := c.shared.Load()
	if !shared {
		var err error
		if shared, err = c.checkShared(ctx); err != nil {
			return fmt.Errorf("%w: finalize --revoke-source-grants: cannot tell whether %s and %s share storage: %v", ErrRefused, c.src.name, c.tgt.name, err)
		}
	}
	if shared {
		return fmt.Errorf("%w: %w: revoking the grants on %s would revoke them on %s too (the same rows); finalize without revoking", ErrRefused, ErrSharedStorage, c.src.name, c.tgt.name)
	}
	return nil
}
