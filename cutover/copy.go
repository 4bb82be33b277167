package cutover

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"slices"
	"sort"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/xksproxy/xksproxy/cosmian"
)

// keyError is a per-key failure: it blocks that key (and the switch) but not
// the other keys. Result is ResultConflict or ResultError.
type keyError struct {
	result string
	reason string
}

func (e *keyError) Error() string { return e.reason }

func failKey(format string, args ...any) *keyError {
	return &keyError{result: ResultError, reason: truncate(fmt.Sprintf(format, args...))}
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

// retry runs f until it succeeds, fails permanently, attempts run out
// (attempts > 0) or ctx ends, backing off from 50ms to 2s.
func retry[T any](ctx context.Context, c *Controller, attempts int, what string, f func(context.Context) (T, error)) (T, error) {
	backoff := 50 * time.Millisecond
	for n := 1; ; n++ {
		v, err := f(ctx)
		if err == nil || !transient(ctx, err) || (attempts > 0 && n >= attempts) {
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

func retryErr(ctx context.Context, c *Controller, attempts int, what string, f func(context.Context) error) error {
	_, err := retry(ctx, c, attempts, what, func(ctx context.Context) (struct{}, error) {
		return struct{}{}, f(ctx)
	})
	return err
}

// list returns the ids the selection names on b, sorted.
func (c *Controller) list(ctx context.Context, b *backend, attempts int) ([]string, error) {
	sel := c.cfg.Select
	var ids []string
	switch sel.Mode {
	case SelectList:
		ids = slices.Clone(sel.Keys)
	case SelectOwned:
		objs, err := retry(ctx, c, attempts, "owned on "+b.name, func(ctx context.Context) ([]cosmian.OwnedObject, error) {
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
		ids, err = retry(ctx, c, attempts, "locate on "+b.name, func(ctx context.Context) ([]string, error) {
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
func (c *Controller) ownedTagged(ctx context.Context, b *backend, tag string, attempts int) ([]string, error) {
	objs, err := retry(ctx, c, attempts, "owned on "+b.name, func(ctx context.Context) ([]cosmian.OwnedObject, error) {
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
		return failKey("key is wrapped at rest on %s and the server did not unwrap it (is its wrapping key available?)", b.name)
	case errors.Is(err, cosmian.ErrSensitive):
		return failKey("sensitive key: cannot be exported from %s", b.name)
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
func (c *Controller) export(ctx context.Context, b *backend, uid string, attempts int) (*cosmian.ExportedKey, error) {
	exp, err := retry(ctx, c, attempts, "export from "+b.name, func(ctx context.Context) (*cosmian.ExportedKey, error) {
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
		return nil, failKey("key is wrapped at rest on %s and the server did not unwrap it (is its wrapping key available?)", b.name)
	}
	if len(exp.Material) == 0 {
		exp.Wipe()
		return nil, failKey("export from %s returned no key material", b.name)
	}
	return exp, nil
}

// attrs reads a key's attributes; a missing key is reported as (nil, nil).
func (c *Controller) attrs(ctx context.Context, b *backend, uid string, attempts int) (*cosmian.KeyAttributes, error) {
	a, err := retry(ctx, c, attempts, "get attributes on "+b.name, func(ctx context.Context) (*cosmian.KeyAttributes, error) {
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
func (c *Controller) sameMaterial(ctx context.Context, b *backend, uid string, material []byte, attempts int) (bool, error) {
	exp, err := c.export(ctx, b, uid, attempts)
	if err != nil {
		return false, err
	}
	defer exp.Wipe()
	return subtle.ConstantTimeCompare(exp.Material, material) == 1, nil
}

// copyKey copies uid from → to with its attributes, state and grants. It
// returns ResultOK (imported) or ResultSkipped (identical key already there),
// a *keyError, or a transient/context error.
func (c *Controller) copyKey(ctx context.Context, from, to *backend, uid string, attempts int) (string, error) {
	if c.shared.Load() {
		return ResultSkipped, nil // one database: the key is already there (shared.go)
	}
	sa, err := c.attrs(ctx, from, uid, attempts)
	if err != nil {
		return "", err
	}
	if sa == nil {
		return "", failKey("not found on %s, or the configured identity has no right on it", from.name)
	}
	if sa.Sensitive {
		return "", failKey("sensitive key: cannot be exported")
	}
	if sa.ObjectType != "" && sa.ObjectType != "SymmetricKey" {
		return "", failKey("unsupported object type %s (only symmetric keys migrate)", sa.ObjectType)
	}
	if destroyed(sa.State) {
		return "", failKey("destroyed on %s", from.name)
	}
	exp, err := c.export(ctx, from, uid, attempts)
	if err != nil {
		return "", err
	}
	defer exp.Wipe()

	ta, err := c.attrs(ctx, to, uid, attempts)
	if err != nil {
		return "", err
	}
	result := ResultOK
	if ta != nil {
		if destroyed(ta.State) {
			return "", conflictKey("uid is taken on %s by a destroyed object; it cannot be imported there (remove it with Destroy remove=true)", to.name)
		}
		same, err := c.sameMaterial(ctx, to, uid, exp.Material, attempts)
		if err != nil {
			return "", err
		}
		if !same {
			if n := c.ownNameNote(uid, true); n != "" && uid == legacyHealthKeyID {
				return "", conflictKey("a different key with this uid already exists on %s; it is never overwritten (%s)", to.name, n)
			}
			return "", conflictKey("a different key with this uid already exists on %s; it is never overwritten", to.name)
		}
		result = ResultSkipped
		if revoked(ta.State) && !revoked(sa.State) {
			return "", conflictKey("identical key on %s is %s while it is %s on %s", to.name, ta.State, sa.State, from.name)
		}
	} else {
		req := cosmian.ImportRequest{
			UID:             uid,
			ReplaceExisting: false,
			Material:        exp.Material,
			Attributes: cosmian.KeyAttributes{
				ObjectType: "SymmetricKey",
				Algorithm:  sa.Algorithm,
				Length:     sa.Length,
				UsageMask:  sa.UsageMask,
				// The original date: the target computes Active/PreActive from it.
				ActivationDate: sa.ActivationDate,
				Tags:           sa.UserTags(),
				KeyFormatType:  exp.Attributes.KeyFormatType,
			},
		}
		if req.Attributes.Algorithm == "" {
			req.Attributes.Algorithm = exp.Attributes.Algorithm
		}
		if req.Attributes.Length == 0 {
			req.Attributes.Length = exp.Attributes.Length
		}
		// From the import until its grants are written, a refusal on to is not policy: the
		// proxy may fall back for this key (GrantsPending). A copy cut short after the import
		// leaves it pending: the key is on to without its grants until a later copyKey (the
		// backfill, the catch-up, a rollback) completes them and clears it.
		c.book.marks.markPending(uid, to.name)
		_, err := retry(ctx, c, attempts, "import on "+to.name, func(ctx context.Context) (string, error) {
			return to.k.Import(ctx, req)
		})
		switch {
		case errors.Is(err, cosmian.ErrAlreadyExists):
			// The other copy path (the proxy's copy of a key created after the switch, or the
			// background pass) may have imported it a moment ago: then it is ours and identical,
			// a normal race. Otherwise it is not visible to us (another owner): never overwrite.
			if !c.importedMeanwhile(ctx, to, uid, exp.Material, attempts) {
				// Not ours: its refusals there are its owner's policy, never pending.
				c.book.marks.clearPending(uid, to.name)
				return "", conflictKey("uid already exists on %s under another owner (or destroyed); it is never overwritten", to.name)
			}
			result = ResultSkipped
		case err != nil:
			var ke *cosmian.KMSError
			if errors.As(err, &ke) {
				c.book.marks.clearPending(uid, to.name) // refused: nothing was imported
				return "", failKey("import on %s: %v", to.name, err)
			}
			// No answer: the import may have landed, so the key stays pending.
			return "", err
		}
		ta = &cosmian.KeyAttributes{State: cosmian.StateActive}
	}
	exp.Wipe()

	// Lifecycle: a revoked key stays revoked (Compromised stays Compromised).
	if revoked(sa.State) && ta.State != sa.State {
		reason := revokeReason(sa.State)
		err := retryErr(ctx, c, attempts, "revoke on "+to.name, func(ctx context.Context) error {
			return to.k.Revoke(ctx, uid, reason, "revoked on "+from.name+"; replicated by xksproxy cutover")
		})
		if err != nil {
			return "", wrapKMS(err, "revoke on %s", to.name)
		}
	}
	if err := c.copyGrants(ctx, from, to, uid, attempts); err != nil {
		return "", err
	}
	if to == c.tgt || from == c.tgt {
		// What the target holds now is what the source knows of: later changes there are
		// carried as changes (rightsync.go).
		c.noteTargetBaseline(ctx, uid, attempts)
	}
	c.book.marks.clearPending(uid, to.name)
	return result, nil
}

func wrapKMS(err error, format string, args ...any) error {
	var ke *cosmian.KMSError
	if errors.As(err, &ke) {
		return failKey("%s: %v", fmt.Sprintf(format, args...), err)
	}
	return err
}

// xksServiceOps are the rights Cosmian's CreateKey gives the reserved XKS identity.
var xksServiceOps = []string{cosmian.OpEncrypt, cosmian.OpDecrypt, cosmian.OpGetAttributes}

// copyGrants replicates from's access list of uid onto to, and adds the [aws-xks-service] grant
// where to runs that generation. It only adds: a right present on to is never removed here
// (rightsync.go carries removals).
//
// The rule it keeps: every right written on to is one that from's access list, read as the
// keys' owner just now, holds for that key (or the [aws-xks-service] grant Cosmian itself gives
// every XKS key on the generations that have it). Nothing a caller said (a CreateKey's principal)
// and nothing a store holds (journal, etcd) is a source of rights: who may use a key is the
// owner's decision, as recorded by the backends.
func (c *Controller) copyGrants(ctx context.Context, from, to *backend, uid string, attempts int) error {
	list, err := retry(ctx, c, attempts, "list access on "+from.name, func(ctx context.Context) ([]cosmian.UserAccess, error) {
		return from.k.ListAccess(ctx, uid)
	})
	if err != nil {
		if errors.Is(err, cosmian.ErrAccessDenied) || errors.Is(err, cosmian.ErrNotFound) {
			return failKey("cannot read access rights on %s: the configured identity does not own this key: %v", from.name, err)
		}
		return wrapKMS(err, "list access on %s", from.name)
	}
	want := map[string][]string{}
	for _, ua := range list {
		want[ua.UserID] = append(want[ua.UserID], ua.Operations...)
	}
	if mayServe(to.acl, ACLService) {
		want[cosmian.XKSServiceUser] = append(want[cosmian.XKSServiceUser], xksServiceOps...)
	}
	if mayServe(from.acl, ACLService) && mayServe(to.acl, ACLARN) && (to == c.tgt || c.book.createdOnTarget(uid)) && len(want[cosmian.XKSServiceUser]) > 0 &&
		(from.acl == ACLService && to.acl == ACLARN || !grantsAnyPrincipal(want)) {
		// A newer source lets any signed XKS request use a key granted to [aws-xks-service]; a
		// 5.26 backend authorizes the caller's ARN, so only a grant to every user would keep the
		// key usable by any principal AWS sends — and would give every KMIP user of that server
		// the key too. Only with the operator's consent; never for a migrated key copied back
		// (the source still holds the grants it had).
		switch {
		case c.cfg.GrantEveryoneForServiceKeys:
			want["*"] = append(want["*"], want[cosmian.XKSServiceUser]...)
		case !grantsAnyPrincipal(want):
			return failKey("granted on %s only to %s, which %s (Cosmian 5.26 access control) cannot express without a grant to every user (*): as the keys' owner, grant the AWS principals that use it on %s (encrypt, decrypt, getattributes), or set [cutover] grant_everyone_for_service_keys = true to accept a grant to every user",
				from.name, cosmian.XKSServiceUser, to.name, from.name)
		}
	}
	users := make([]string, 0, len(want))
	for u := range want {
		users = append(users, u)
	}
	sort.Strings(users)
	for _, u := range users {
		ops := missing(want[u], nil)
		if len(ops) == 0 {
			continue
		}
		a := cosmian.Access{UID: uid, UserID: u, Operations: ops}
		if err := retryErr(ctx, c, attempts, "grant on "+to.name, func(ctx context.Context) error {
			return to.k.Grant(ctx, a)
		}); err != nil {
			return wrapKMS(err, "grant %v to %q on %s", ops, u, to.name)
		}
		if to == c.tgt {
			c.grantsCopied.Add(1)
		}
	}
	return nil
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

// forEach runs f over ids with the configured concurrency. f's per-key
// errors are its own business; a non-nil return stops the whole pass.
func (c *Controller) forEach(ctx context.Context, ids []string, f func(ctx context.Context, id string) error) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(c.cfg.Concurrency)
	for _, id := range ids {
		if gctx.Err() != nil {
			break
		}
		g.Go(func() error { return f(gctx, id) })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return ctx.Err()
}

// copyOne copies id source → target and journals the result. Only a
// context error is returned; everything else is a per-key result.
func (c *Controller) copyOne(ctx context.Context, id string) error {
	res, err := c.copyKey(ctx, c.src, c.tgt, id, forever)
	var ke *keyError
	switch {
	case err == nil:
		c.book.setKey(id, KeyProgress{Phase: PhaseCopy, Result: res, Existing: res == ResultSkipped})
	case errors.As(err, &ke):
		c.book.setKey(id, KeyProgress{Phase: PhaseCopy, Result: ke.result, Error: ke.reason})
		c.log.Warn("cutover: key not copied", "key_id", id, "result", ke.result, "reason", ke.reason)
	case ctx.Err() != nil:
		return ctx.Err()
	default:
		// Transient retries are unbounded, so this is an unexpected error
		// with no KMS classification: record it against the key.
		c.book.setKey(id, KeyProgress{Phase: PhaseCopy, Result: ResultError, Error: truncate(err.Error())})
	}
	return nil
}

// copied reports whether a key's copy is done (its entry says so).
func copied(k KeyProgress, ok bool) bool {
	if !ok {
		return false
	}
	if k.Phase == PhaseVerify {
		return true
	}
	return k.Result == ResultOK || k.Result == ResultSkipped
}

// isCopied is copied for a journaled key.
func isCopied(k KeyProgress) bool { return copied(k, true) }

func verified(k KeyProgress, ok bool) bool {
	return ok && k.Phase == PhaseVerify && k.Result == ResultOK
}

// importedMeanwhile says whether uid, refused by an import as already existing, is now
// readable on to as the owner with the material we hold.
func (c *Controller) importedMeanwhile(ctx context.Context, to *backend, uid string, material []byte, attempts int) bool {
	ta, err := c.attrs(ctx, to, uid, attempts)
	if err != nil || ta == nil || destroyed(ta.State) {
		return false
	}
	same, err := c.sameMaterial(ctx, to, uid, material, attempts)
	return err == nil && same
}

// grantsAnyPrincipal reports whether want grants an AWS principal (or everyone) a right that
// serves an XKS call on a 5.26 server.
func grantsAnyPrincipal(want map[string][]string) bool {
	for u, ops := range want {
		if u == cosmian.XKSServiceUser {
			continue
		}
		if slices.Contains(ops, cosmian.OpEncrypt) || slices.Contains(ops, cosmian.OpDecrypt) {
			return true
		}
	}
	return false
}
