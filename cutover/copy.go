package cutover

import (
	"context"
	"errors"
	"slices"
	"sort"
	"sync/atomic"

	"github.com/xksproxy/xksproxy/cosmian"
)

// copier copies keys between the sides as their owner: material in memory through KMIP (zeroed
// after each key), attributes, state and the access rights the other side's owner gave — never a
// right nobody gave (copyGrants). While a copy's rights are being written the key is marked
// pending (a refusal there is not policy yet); a new key's finished copy is marked completed.
type copier struct {
	*sides
	rights *rightsSync   // takes the target's rights as the baseline after each copy
	probe  *storageProbe // shared storage: nothing to copy
	// grantsCopied counts (key, user) grants applied on the target by this process.
	grantsCopied atomic.Int64
	// grantEveryone: Config.GrantEveryoneForServiceKeys.
	grantEveryone bool
}

// copyKey copies uid from → to with its attributes, state and grants. It
// returns ResultOK (imported) or ResultSkipped (identical key already there),
// a *keyError, or a transient/context error.
func (c *copier) copyKey(ctx context.Context, from, to *backend, uid string, attempts int) (string, error) {
	if c.probe.isShared() {
		return ResultSkipped, nil // one database: the key is already there (shared.go)
	}
	sa, err := c.attrs(ctx, from, uid, attempts)
	if err != nil {
		return "", err
	}
	if sa == nil {
		return "", failKey("not found on %s, or the configured identity has no right on it", from.name)
	}
	if why := unmovableAttrs(sa); why != "" {
		return "", unmovableKey("%s", why)
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
			if n := ownNameNote(uid, to.name, true); n != "" && uid == legacyHealthKeyID {
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
		_, err := retry(ctx, c.sides, to, attempts, "import on "+to.name, func(ctx context.Context) (string, error) {
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
		err := retryErr(ctx, c.sides, to, attempts, "revoke on "+to.name, func(ctx context.Context) error {
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
		c.rights.noteBaseline(ctx, uid, attempts)
	}
	c.book.marks.clearPending(uid, to.name)
	return result, nil
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
func (c *copier) copyGrants(ctx context.Context, from, to *backend, uid string, attempts int) error {
	list, err := retry(ctx, c.sides, from, attempts, "list access on "+from.name, func(ctx context.Context) ([]cosmian.UserAccess, error) {
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
		case c.grantEveryone:
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
		if err := retryErr(ctx, c.sides, to, attempts, "grant on "+to.name, func(ctx context.Context) error {
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

// copyOne copies id source → target and journals the result. Only a
// context error is returned; everything else is a per-key result.
func (c *copier) copyOne(ctx context.Context, id string) error {
	res, err := c.copyKey(ctx, c.src, c.tgt, id, forever)
	if err == nil || ctx.Err() == nil {
		c.pace.keyDone()
	}
	var ke *keyError
	switch {
	case err == nil:
		c.book.setKey(id, KeyProgress{Phase: PhaseCopy, Result: res, Existing: res == ResultSkipped})
	case errors.As(err, &ke) && ke.unmovable:
		reason := c.unmovableReason(ke.reason)
		if c.sel.Unmovable == UnmovableKeep {
			if kerr := c.book.keep(id, c.src.name, ke.reason); kerr == nil {
				c.book.setKey(id, KeyProgress{Phase: PhaseCopy, Result: ResultKept, Error: reason})
				c.log.Warn("cutover: key cannot be exported; it stays served by the source", "key_id", id, "source", c.src.name, "reason", ke.reason)
				return nil
			} else {
				reason = truncate(kerr.Error())
			}
		}
		c.book.setKey(id, KeyProgress{Phase: PhaseCopy, Result: ResultError, Error: reason})
		c.log.Warn("cutover: key cannot be exported; it blocks the switch", "key_id", id, "reason", reason)
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
func (c *copier) importedMeanwhile(ctx context.Context, to *backend, uid string, material []byte, attempts int) bool {
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

// copyCreated copies a key that a CreateKey just made (or found) on backend to the other side
// while a migration runs, within ctx (the request path's hook, CopyCreated). Failures are left to
// the catch-up before the switch and to the backfill after it.
func (c *copier) copyCreated(ctx context.Context, keyID, backend string) {
	// Not only once switched: a key made on the source after the switch's last catch-up pass,
	// and first used after the switch, would otherwise reach the target before the backfill
	// copied it (a KeyNotFound there that falls back, but that probation counts against the
	// target). In fleet mode some member may serve the other side at any moment anyway (the
	// epochs reach members at different times).
	if !c.book.state().inMigration() {
		return
	}
	// AWS repeats CreateKey (GetKeyMetadata with kmsOperation CreateKey) for keys that exist: a
	// key this process copied to completion, or one the migration copied, is on both sides, and
	// copying it again on every repeat would only load both backends while the migration runs.
	if c.book.marks.isCompleted(keyID) || c.book.keptOn(keyID) != "" {
		return // on both sides already, or kept where it is for good
	}
	if k, ok := c.book.key(keyID); copied(k, ok) {
		return
	}
	from, to := c.tgt, c.src
	if backend == c.src.name {
		from, to = c.src, c.tgt
	}
	// No "already there" shortcut: a key found on to may be a copy cut short before its
	// grants; copyKey completes those on an identical key and refuses a different one.
	if _, err := c.copyKey(ctx, from, to, keyID, 1); err != nil {
		c.log.Warn("cutover: copying a new key at CreateKey time failed; the backfill will retry",
			"key_id", keyID, "from", from.name, "to", to.name, "err", err)
		return
	}
	c.book.marks.markCompleted(keyID)
	c.log.Info("cutover: new key copied at CreateKey time", "key_id", keyID, "from", from.name, "to", to.name)
}
