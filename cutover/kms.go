package cutover

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/xksproxy/xksproxy/cosmian"
)

// kmipAPI is the part of *cosmian.Client the controller uses.
type kmipAPI interface {
	Import(ctx context.Context, r cosmian.ImportRequest) (string, error)
	Export(ctx context.Context, uid string, unwrap bool) (*cosmian.ExportedKey, error)
	GetAttributes(ctx context.Context, uid string) (*cosmian.KeyAttributes, error)
	Locate(ctx context.Context, r cosmian.LocateRequest) ([]string, error)
	Encrypt(ctx context.Context, uid string, plaintext, aad []byte) (*cosmian.EncryptResult, error)
	Decrypt(ctx context.Context, uid string, ciphertext, iv, tag, aad []byte) ([]byte, error)
	Revoke(ctx context.Context, uid, reasonCode, message string) error
	Grant(ctx context.Context, a cosmian.Access) error
	RevokeAccess(ctx context.Context, a cosmian.Access) error
	ListAccess(ctx context.Context, uid string) ([]cosmian.UserAccess, error)
	Owned(ctx context.Context) ([]cosmian.OwnedObject, error)
	Version(ctx context.Context) (string, error)
	Destroy(ctx context.Context, uid string, remove bool) error
}

// accessChecker is *cosmian.Client's check of its KMIP side: the server answers and accepts the
// credential (cosmian.Client.Check). Fakes of kmipAPI need not have it.
type accessChecker interface {
	Check(ctx context.Context) (cosmian.Identity, error)
}

// accessCheckTimeout bounds each side's check of a plan or a start.
const accessCheckTimeout = 10 * time.Second

// checkAccess refuses a plan or a start while a side's KMIP access is broken, with the check's
// own words (which name the ckms_config file and its server_url), instead of a plan that reads a
// broken side as holding no key. With deniedOnly (a start), only a credential the server refuses
// counts: a server that does not answer now may later, and the copy waits for it.
func (s *sides) checkAccess(ctx context.Context, deniedOnly bool) error {
	g, ctx := errgroup.WithContext(ctx)
	for _, b := range []*backend{s.src, s.tgt} {
		c, ok := b.k.(accessChecker)
		if !ok {
			continue
		}
		g.Go(func() error {
			cctx, cancel := context.WithTimeout(ctx, accessCheckTimeout)
			defer cancel()
			_, err := c.Check(cctx)
			if err == nil || deniedOnly && !errors.Is(err, cosmian.ErrAccessDenied) {
				return nil
			}
			return fmt.Errorf("%w: backend %s: %w", ErrBackendAccess, b.name, err)
		})
	}
	return g.Wait()
}

// backend is one side of the migration as the keys' owner reaches it (KMIP).
type backend struct {
	name string
	k    kmipAPI
	acl  string
}

// sides are the migration's two backends and the calls every part makes on them: retried when
// the failure is transient, bounded in attempts, run over many keys at once. A call that keeps
// failing is logged and noted as the journal's last error (it says why the machine waits).
type sides struct {
	src, tgt *backend
	sel      Selection
	pace     *pace // every call and every key of the background work draws from it
	log      *slog.Logger
	book     *ledger
	checks   createKeyChecks // the CreateKey existence checks (Traffic.Holds)
}

// createKeyChecks counts how the existence checks of CreateKeys during a migration were
// answered (the status's figures; xks_cutover_createkey_checks_total is the metric).
type createKeyChecks struct{ records, backend, failed atomic.Uint64 }

func (c *createKeyChecks) note(answer string) {
	switch answer {
	case "records":
		c.records.Add(1)
	case "backend":
		c.backend.Add(1)
	case "failed":
		c.failed.Add(1)
	}
}

// CreateKeyChecks are the figures of the CreateKey existence checks this process made since it
// started: answered from the migration's records, by a backend, or not in time (the CreateKey
// was refused with a retryable error).
type CreateKeyChecks struct {
	Records uint64 `json:"records"`
	Backend uint64 `json:"backend"`
	Failed  uint64 `json:"failed"`
}

func (c *createKeyChecks) snapshot() CreateKeyChecks {
	return CreateKeyChecks{Records: c.records.Load(), Backend: c.backend.Load(), Failed: c.failed.Load()}
}

// byName is the side named name, nil if neither.
func (c *sides) byName(name string) *backend {
	switch name {
	case c.src.name:
		return c.src
	case c.tgt.name:
		return c.tgt
	}
	return nil
}

// keyError is a per-key failure: it blocks that key (and the switch) but not
// the other keys. Result is ResultConflict or ResultError.
type keyError struct {
	result string
	reason string
	// unmovable: the key cannot leave its backend at all (sensitive, not extractable, wrapped
	// without its wrapping key): Config.Unmovable decides whether that blocks the switch or the
	// key stays served where it is.
	unmovable bool
}

func (e *keyError) Error() string { return e.reason }

func failKey(format string, args ...any) *keyError {
	return &keyError{result: ResultError, reason: truncate(fmt.Sprintf(format, args...))}
}

func unmovableKey(format string, args ...any) *keyError {
	return &keyError{result: ResultError, reason: truncate(fmt.Sprintf(format, args...)), unmovable: true}
}

// isUnmovable reports whether err says the key cannot be exported from its backend at all.
func isUnmovable(err error) (*keyError, bool) {
	var ke *keyError
	return ke, errors.As(err, &ke) && ke.unmovable
}

// unmovableAttrs says why a key's attributes forbid its export ("" when they do not).
func unmovableAttrs(a *cosmian.KeyAttributes) string {
	switch {
	case a.Sensitive:
		return "sensitive key: its material cannot be exported"
	case a.Extractable != nil && !*a.Extractable:
		return "not extractable (Extractable = false): Cosmian 5.28 and later refuse its export"
	case a.NeverExtractable != nil && *a.NeverExtractable:
		return "never extractable (NeverExtractable = true): Cosmian 5.28 and later refuse its export"
	}
	return ""
}

func conflictKey(format string, args ...any) *keyError {
	return &keyError{result: ResultConflict, reason: truncate(fmt.Sprintf(format, args...))}
}

// transient reports whether err is worth retrying: transport failures,
// timeouts and server-side (5xx, 429) errors. A cancelled context, a KMS
// refusal or a client-side check is not.
func transient(ctx context.Context, err error) bool {
	if err == nil || ctx.Err() != nil || errors.Is(err, context.Canceled) {
		return false
	}
	var ke *cosmian.KMSError
	if errors.As(err, &ke) {
		return errors.Is(err, cosmian.ErrServer)
	}
	var kerr *keyError
	if errors.As(err, &kerr) {
		return false
	}
	var ne net.Error
	var ue *url.Error
	return errors.As(err, &ne) || errors.As(err, &ue) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET)
}

// forever means retry transient errors until the context ends (a backend
// that is down makes the copy wait, then resume).
const forever = 0

// listingKey marks a call that lists every key of a backend: it takes seconds with 100 000
// keys, which says nothing about the backend's latency to one call, so the pace does not take it
// as a sample of it.
type listingKey struct{}

func withListing(ctx context.Context) context.Context {
	return context.WithValue(ctx, listingKey{}, true)
}

func isListing(ctx context.Context) bool { v, _ := ctx.Value(listingKey{}).(bool); return v }

// retry runs f until it succeeds, fails permanently, attempts run out (attempts > 0) or ctx
// ends, backing off from 50ms to 2s. Each attempt on b takes a token of the pace (ctx's class
// says how) and tells it how long b took.
func retry[T any](ctx context.Context, c *sides, b *backend, attempts int, what string, f func(context.Context) (T, error)) (T, error) {
	backoff := 50 * time.Millisecond
	live := classOf(ctx) == classLive
	for n := 1; ; n++ {
		if err := c.pace.call(ctx); err != nil {
			var zero T
			return zero, fmt.Errorf("%w (waiting for the pace before %s)", err, what)
		}
		t0 := time.Now()
		v, err := f(ctx)
		tr := transient(ctx, err)
		if !live && !isListing(ctx) {
			c.pace.observeCall(c.sideOf(b), time.Since(t0), tr)
		}
		if err == nil || !tr || (attempts > 0 && n >= attempts) {
			if err != nil && ctx.Err() != nil {
				err = fmt.Errorf("%w (%v)", ctx.Err(), err)
			}
			return v, err
		}
		if n == 3 || n%20 == 0 {
			c.log.Warn("cutover: backend call failing, retrying", "call", what, "attempt", n, "err", truncate(err.Error()))
			c.book.setError(truncate(fmt.Sprintf("%s: %v (retrying)", what, err)))
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return v, fmt.Errorf("%w (%v)", ctx.Err(), err)
		case <-t.C:
		}
		backoff = min(backoff*2, 2*time.Second)
	}
}

func retryErr(ctx context.Context, c *sides, b *backend, attempts int, what string, f func(context.Context) error) error {
	_, err := retry(ctx, c, b, attempts, what, func(ctx context.Context) (struct{}, error) {
		return struct{}{}, f(ctx)
	})
	return err
}

// sideOf is b's side.
func (c *sides) sideOf(b *backend) side {
	if b == c.tgt {
		return sideTarget
	}
	return sideSource
}

// list returns the ids the selection names on b, sorted.
func (c *sides) list(ctx context.Context, b *backend, attempts int) ([]string, error) {
	sel := c.sel
	var ids []string
	switch sel.Mode {
	case SelectList:
		ids = slices.Clone(sel.Keys)
	case SelectOwned:
		objs, err := retry(withListing(ctx), c, b, attempts, "owned on "+b.name, func(ctx context.Context) ([]cosmian.OwnedObject, error) {
			return b.k.Owned(ctx)
		})
		if err != nil {
			return nil, fmt.Errorf("cutover: listing keys owned on %s: %w", b.name, err)
		}
		for _, o := range objs {
			if destroyed(o.State) || validKeyID(o.ObjectID) != nil {
				continue
			}
			ids = append(ids, o.ObjectID)
		}
	default:
		var err error
		ids, err = retry(withListing(ctx), c, b, attempts, "locate on "+b.name, func(ctx context.Context) ([]string, error) {
			return b.k.Locate(ctx, cosmian.LocateRequest{Tags: []string{sel.Tag}, ObjectType: "SymmetricKey", PageSize: 1000})
		})
		if errors.Is(err, cosmian.ErrLocateIncomplete) {
			// Cosmian ≤ 5.26 ignores OffsetItems, so Locate stops at 1000:
			// list what the identity owns and keep the tagged keys.
			c.log.Info("cutover: Locate capped by the server; listing owned objects instead", "backend", b.name)
			ids, err = c.ownedTagged(ctx, b, sel.Tag, attempts)
		}
		if err != nil {
			return nil, fmt.Errorf("cutover: locating keys tagged %q on %s: %w", sel.Tag, b.name, err)
		}
	}
	ids = slices.DeleteFunc(ids, func(id string) bool { return slices.Contains(sel.Exclude, id) })
	if sel.Mode == SelectOwned {
		// Every owned object is listed, the proxy's own among them (a canary whose removal
		// failed; a marker): they are told apart by their tags. A tag selection never lists
		// them (they carry no customer tag).
		var err error
		if ids, err = c.dropOwn(ctx, b, ids, attempts); err != nil {
			return nil, fmt.Errorf("cutover: listing keys owned on %s: %w", b.name, err)
		}
	}
	sort.Strings(ids)
	return slices.Compact(ids), nil
}

// ownedTagged lists the live objects b's identity owns that carry tag.
func (c *sides) ownedTagged(ctx context.Context, b *backend, tag string, attempts int) ([]string, error) {
	objs, err := retry(withListing(ctx), c, b, attempts, "owned on "+b.name, func(ctx context.Context) ([]cosmian.OwnedObject, error) {
		return b.k.Owned(ctx)
	})
	if err != nil {
		return nil, err
	}
	// A key the journal already holds was selected before and stays in the work list whatever
	// its tags now (workList adds the journal's keys), so only the others are read: each later
	// listing (every catch-up round, finalize) costs one GetAttributes per new key, not one per
	// key — 10 000 keys were read ten times over.
	live := make([]string, 0, len(objs))
	for _, o := range objs {
		if !destroyed(o.State) && validKeyID(o.ObjectID) == nil {
			live = append(live, o.ObjectID)
		}
	}
	ids, cand := c.book.split(live)
	var mu sync.Mutex
	err = c.forEach(ctx, cand, func(ctx context.Context, id string) error {
		a, err := c.attrs(ctx, b, id, attempts)
		if err != nil {
			return err
		}
		if a != nil && (a.ObjectType == "" || a.ObjectType == "SymmetricKey") && slices.Contains(a.Tags, tag) {
			mu.Lock()
			ids = append(ids, id)
			mu.Unlock()
		}
		return nil
	})
	return ids, err
}

// revokeReason maps a revoked state to the KMIP revocation reason that
// reproduces it (KeyCompromise → Compromised, anything else → Deactivated).
func revokeReason(state string) string {
	if state == cosmian.StateCompromised {
		return "KeyCompromise"
	}
	return "CessationOfOperation"
}

func revoked(state string) bool {
	return state == cosmian.StateDeactivated || state == cosmian.StateCompromised
}

func destroyed(state string) bool {
	return state == cosmian.StateDestroyed || state == cosmian.StateDestroyedCompromised
}

// exportErr turns an Export failure into a per-key error naming the cause.
func exportErr(b *backend, err error) error {
	switch {
	case errors.Is(err, cosmian.ErrWrapped):
		return unmovableKey("key is wrapped at rest on %s and the server did not unwrap it (is its wrapping key available?)", b.name)
	case errors.Is(err, cosmian.ErrSensitive):
		return unmovableKey("sensitive key: cannot be exported from %s", b.name)
	case errors.Is(err, cosmian.ErrNotExtractable):
		return unmovableKey("not extractable: %s refuses its export", b.name)
	case errors.Is(err, cosmian.ErrNotFound), errors.Is(err, cosmian.ErrAccessDenied):
		return failKey("cannot export from %s: the configured identity does not own this key (or it does not exist): %v", b.name, err)
	case errors.Is(err, cosmian.ErrWrongState):
		return failKey("cannot export from %s: key in a state that forbids export: %v", b.name, err)
	}
	if transient(context.Background(), err) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return failKey("export from %s: %v", b.name, err)
}

// export reads a key's material in clear (KeyWrapType NotWrapped). The
// caller must Wipe the result.
func (c *sides) export(ctx context.Context, b *backend, uid string, attempts int) (*cosmian.ExportedKey, error) {
	exp, err := retry(ctx, c, b, attempts, "export from "+b.name, func(ctx context.Context) (*cosmian.ExportedKey, error) {
		return b.k.Export(ctx, uid, true)
	})
	if err != nil {
		return nil, exportErr(b, err)
	}
	if exp == nil {
		return nil, failKey("export from %s returned no key", b.name)
	}
	if exp.Wrapped {
		exp.Wipe()
		return nil, unmovableKey("key is wrapped at rest on %s and the server did not unwrap it (is its wrapping key available?)", b.name)
	}
	if len(exp.Material) == 0 {
		exp.Wipe()
		return nil, failKey("export from %s returned no key material", b.name)
	}
	return exp, nil
}

// attrs reads a key's attributes; a missing key is reported as (nil, nil).
func (c *sides) attrs(ctx context.Context, b *backend, uid string, attempts int) (*cosmian.KeyAttributes, error) {
	a, err := retry(ctx, c, b, attempts, "get attributes on "+b.name, func(ctx context.Context) (*cosmian.KeyAttributes, error) {
		return b.k.GetAttributes(ctx, uid)
	})
	if errors.Is(err, cosmian.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		var ke *cosmian.KMSError
		if errors.As(err, &ke) {
			return nil, failKey("get attributes on %s: %v", b.name, err)
		}
		return nil, err
	}
	return a, nil
}

// sameMaterial exports uid from to and compares it with material in constant time.
func (c *sides) sameMaterial(ctx context.Context, b *backend, uid string, material []byte, attempts int) (bool, error) {
	exp, err := c.export(ctx, b, uid, attempts)
	if err != nil {
		return false, err
	}
	defer exp.Wipe()
	return subtle.ConstantTimeCompare(exp.Material, material) == 1, nil
}

func wrapKMS(err error, format string, args ...any) error {
	var ke *cosmian.KMSError
	if errors.As(err, &ke) {
		return failKey("%s: %v", fmt.Sprintf(format, args...), err)
	}
	return err
}

// missing returns the elements of want not in have, sorted and unique.
func missing(want, have []string) []string {
	var out []string
	for _, w := range want {
		if !slices.Contains(have, w) && !slices.Contains(out, w) {
			out = append(out, w)
		}
	}
	sort.Strings(out)
	return out
}

// forEach runs f over ids, each key holding one of the pace's slots while f works on it. f's
// per-key errors are its own business; a non-nil return stops the whole pass.
func (c *sides) forEach(ctx context.Context, ids []string, f func(ctx context.Context, id string) error) error {
	g, gctx := errgroup.WithContext(ctx)
	for _, id := range ids {
		release, err := c.pace.slot(gctx)
		if err != nil {
			break
		}
		g.Go(func() error {
			defer release()
			return f(gctx, id)
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return ctx.Err()
}

// dropOwn removes, from ids listed on b, the proxy's own objects: only ids with the proxy's
// prefix are read (their tags say), so a customer key named like one stays.
func (c *sides) dropOwn(ctx context.Context, b *backend, ids []string, attempts int) ([]string, error) {
	var own []string
	for _, id := range ids {
		if !strings.HasPrefix(id, ownPrefix) {
			continue
		}
		a, err := c.attrs(ctx, b, id, attempts)
		if err != nil {
			return nil, err
		}
		if a != nil && IsOwnObject(a.Tags) {
			own = append(own, id)
		}
	}
	if len(own) == 0 {
		return ids, nil
	}
	return slices.DeleteFunc(ids, func(id string) bool { return slices.Contains(own, id) }), nil
}

// truncate shortens an error text for the journal and status.
func truncate(s string) string { return Truncate(s) }

// Truncate shortens an error text to one line of at most 300 bytes, for the journal, status
// and its rendering.
func Truncate(s string) string {
	const max = 300
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > max {
		return s[:max] + "…"
	}
	return s
}

// listable reports whether listing a side finds every key XKS creates (Cosmian tags them
// aws-xks, owned by the keys' owner): a selection by that tag, or of every owned key.
func (c *sides) listable() bool {
	return c.sel.Mode == SelectOwned || c.sel.Mode == SelectTag && c.sel.Tag == cosmian.XKSTag
}

// mintOnSource: the source may authorize per principal and the target may be of the
// [aws-xks-service] generation (either known, or not known: "both").
func (c *sides) mintOnSource() bool {
	return mayServe(c.src.acl, ACLARN) && mayServe(c.tgt.acl, ACLService)
}
