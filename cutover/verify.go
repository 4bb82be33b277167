package cutover

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/xksproxy/xksproxy/cosmian"
)

// verifier proves, as the keys' owner over KMIP, that the target holds the source's keys; and,
// before a switch, that the target answers and still holds a migrated key.
type verifier struct {
	*sides
	probe *storageProbe // shared storage: compare only what never changes
}

// verifyKey proves, as the keys' owner over KMIP (no grant is created on
// either side), that the target's copy of uid is the source's key: same
// metadata, and cross encrypt/decrypt with AAD both ways; keys that cannot
// encrypt (revoked, pre-active, one-way usage masks) are compared by material.
func (c *verifier) verifyKey(ctx context.Context, uid string, attempts int) error {
	if c.probe.isShared() {
		return c.verifyShared(ctx, uid, attempts)
	}
	sa, ta, err := c.bothAttrs(ctx, uid, attempts)
	if err != nil {
		return err
	}
	if d := attrDiff(sa, ta); d != "" {
		return failKey("metadata differs between %s and %s: %s", c.src.name, c.tgt.name, d)
	}
	const both = cosmian.UsageEncrypt | cosmian.UsageDecrypt
	return c.sameKey(ctx, uid, sa.State == cosmian.StateActive && sa.UsageMask&both == both, attempts)
}

// bothAttrs reads uid's attributes on the source and on the target; a key missing on either
// side is a per-key failure.
func (c *verifier) bothAttrs(ctx context.Context, uid string, attempts int) (sa, ta *cosmian.KeyAttributes, err error) {
	if sa, err = c.attrs(ctx, c.src, uid, attempts); err != nil {
		return nil, nil, err
	}
	if sa == nil {
		return nil, nil, failKey("no longer found on %s", c.src.name)
	}
	if ta, err = c.attrs(ctx, c.tgt, uid, attempts); err != nil {
		return nil, nil, err
	}
	if ta == nil {
		return nil, nil, failKey("not found on %s", c.tgt.name)
	}
	return sa, ta, nil
}

// sameKey proves that source and target hold the same material for uid: by cross
// encrypt/decrypt with AAD both ways when the key can encrypt, else by comparing the material.
func (c *verifier) sameKey(ctx context.Context, uid string, canEncrypt bool, attempts int) error {
	if canEncrypt {
		if err := c.crossCheck(ctx, c.src, c.tgt, uid, attempts); err != nil {
			return err
		}
		return c.crossCheck(ctx, c.tgt, c.src, uid, attempts)
	}
	exp, err := c.export(ctx, c.src, uid, attempts)
	if err != nil {
		return err
	}
	defer exp.Wipe()
	same, err := c.sameMaterial(ctx, c.tgt, uid, exp.Material, attempts)
	if err != nil {
		return err
	}
	if !same {
		return failKey("key material differs between %s and %s", c.src.name, c.tgt.name)
	}
	return nil
}

// crossCheck encrypts random data with random AAD on enc and decrypts it on dec.
func (c *verifier) crossCheck(ctx context.Context, enc, dec *backend, uid string, attempts int) error {
	var buf [48]byte
	rand.Read(buf[:])
	pt, aad := buf[:32], buf[32:]
	defer clear(buf[:])
	res, err := retry(ctx, c.sides, enc, attempts, "encrypt on "+enc.name, func(ctx context.Context) (*cosmian.EncryptResult, error) {
		return enc.k.Encrypt(ctx, uid, pt, aad)
	})
	if err != nil {
		return wrapKMS(err, "encrypt on %s", enc.name)
	}
	got, err := retry(ctx, c.sides, dec, attempts, "decrypt on "+dec.name, func(ctx context.Context) ([]byte, error) {
		return dec.k.Decrypt(ctx, uid, res.Ciphertext, res.IV, res.Tag, aad)
	})
	if err != nil {
		return wrapKMS(err, "ciphertext made on %s does not decrypt on %s", enc.name, dec.name)
	}
	defer clear(got)
	if subtle.ConstantTimeCompare(got, pt) != 1 {
		return failKey("ciphertext made on %s decrypts on %s to different plaintext", enc.name, dec.name)
	}
	return nil
}

// attrDiff names the first attribute on which a and b disagree ("" if none).
func attrDiff(a, b *cosmian.KeyAttributes) string {
	switch {
	case a.ObjectType != b.ObjectType:
		return fmt.Sprintf("object type %s vs %s", a.ObjectType, b.ObjectType)
	case a.Algorithm != b.Algorithm:
		return fmt.Sprintf("algorithm %s vs %s", a.Algorithm, b.Algorithm)
	case a.Length != b.Length:
		return fmt.Sprintf("length %d vs %d", a.Length, b.Length)
	case a.UsageMask != b.UsageMask:
		return fmt.Sprintf("usage mask %d vs %d", a.UsageMask, b.UsageMask)
	case a.State != b.State:
		return fmt.Sprintf("state %s vs %s", a.State, b.State)
	case !sameTime(a.ActivationDate, b.ActivationDate):
		return fmt.Sprintf("activation date %s vs %s", fmtTime(a.ActivationDate), fmtTime(b.ActivationDate))
	}
	at, bt := sortedTags(a), sortedTags(b)
	if !slices.Equal(at, bt) {
		return fmt.Sprintf("tags %q vs %q", at, bt)
	}
	return ""
}

// sameTime compares at KMIP DateTime precision (seconds).
func sameTime(a, b time.Time) bool {
	return a.Truncate(time.Second).Equal(b.Truncate(time.Second))
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "none"
	}
	return t.UTC().Format(time.RFC3339)
}

func sortedTags(a *cosmian.KeyAttributes) []string {
	t := slices.Clone(a.UserTags())
	sort.Strings(t)
	return slices.Compact(t)
}

// verifyOne verifies id and journals the result; only a context error is returned.
func (c *verifier) verifyOne(ctx context.Context, id string) error {
	err := c.verifyKey(ctx, id, forever)
	if err == nil || ctx.Err() == nil {
		c.pace.keyDone()
	}
	var ke *keyError
	switch {
	case err == nil:
		c.book.setKey(id, KeyProgress{Phase: PhaseVerify, Result: ResultOK})
	case errors.As(err, &ke):
		c.book.setKey(id, KeyProgress{Phase: PhaseVerify, Result: ResultError, Error: ke.reason})
		c.log.Warn("cutover: key failed verification", "key_id", id, "reason", ke.reason)
	case ctx.Err() != nil:
		return ctx.Err()
	default:
		c.book.setKey(id, KeyProgress{Phase: PhaseVerify, Result: ResultError, Error: truncate(err.Error())})
	}
	return nil
}

// verifyShared proves that the target serves the source's key when both read one database: the
// key exists through both, and what never changes agrees (cross encrypt/decrypt with AAD both
// ways, or the material for a key that cannot encrypt). State and grants are not compared: a
// change made through one node may not yet be visible through the other (object cache).
func (c *verifier) verifyShared(ctx context.Context, uid string, attempts int) error {
	sa, ta, err := c.bothAttrs(ctx, uid, attempts)
	if err != nil {
		return err
	}
	const both = cosmian.UsageEncrypt | cosmian.UsageDecrypt
	active := sa.State == cosmian.StateActive && ta.State == cosmian.StateActive
	return c.sameKey(ctx, uid, active && sa.UsageMask&both == both && ta.UsageMask&both == both, attempts)
}

// checkTarget proves the target answers KMIP right now and still holds a
// migrated key.
func (c *verifier) checkTarget(ctx context.Context) error {
	_, err := retry(ctx, c.sides, c.tgt, controlAttempts, "version of "+c.tgt.name, func(ctx context.Context) (string, error) {
		return c.tgt.k.Version(ctx)
	})
	if err != nil {
		return fmt.Errorf("target %s does not answer: %v", c.tgt.name, err)
	}
	ids := c.book.keyIDs(isCopied) // a key kept on the source is not on the target
	if len(ids) == 0 {
		return nil
	}
	probe := ids[0]
	a, err := c.attrs(ctx, c.tgt, probe, controlAttempts)
	if err != nil {
		return fmt.Errorf("target %s: reading key %s: %v", c.tgt.name, probe, err)
	}
	if a == nil {
		return fmt.Errorf("target %s no longer has key %s", c.tgt.name, probe)
	}
	return nil
}
