package proxy

import (
	"crypto/sha256"
	"time"

	"github.com/xksproxy/xksproxy/xks"
)

// Appendix C of the XKS spec: an Encrypt that names ciphertextDataIntegrityValueAlgorithm is
// answered only once the ciphertext data integrity value (CDIV) has been computed over the
// output and a decrypt of that output has succeeded. Cosmian computes the value and skips the
// decrypt, so the proxy does both: it recomputes the CDIV and compares it with the backend's,
// then decrypts the output on the backend that produced it — one more backend call, inside the
// request's budget — and checks that the plaintext is the one sent. Requests without a CDIV
// never come here.

// verifyEncrypt checks a successful Encrypt reply out that asked for a CDIV (ex.v.WantCDIV) and
// returns it unchanged, or the XKS error that replaces it. While a migration holds the key on
// both sides (Migration.TrialOn), the trial decrypt runs on the other backend first: live traffic
// then proves the target decrypts what the source encrypts (and the reverse). A failure there is
// counted and logged (Migration.CrossChecked) and the serving backend's own trial decides, so it
// is never the caller's failure.
func (p *Proxy) verifyEncrypt(ex *exchange, status int, out []byte) (int, []byte, error) {
	if err := xks.CheckCDIV(ex.body, out); err != nil {
		e := &xks.Error{Name: xks.NameOf(err), Message: xks.MessageOf(err) + " (backend " + ex.res.Backend + ")", Err: err}
		return p.replaceReply(ex, e)
	}
	b := p.backends[ex.res.Backend]
	if b == nil {
		return p.replaceReply(ex, xks.Errorf(xks.InternalException, "no backend %q to run the trial decrypt on", ex.res.Backend))
	}
	if mig := p.cfg.Migration; mig != nil {
		if other := p.backends[mig.TrialOn(ex.keyID, b.name)]; other != nil && other != b {
			same, ran, err := p.trial(ex, other, out)
			if ran {
				mig.CrossChecked(other.name, same && err == nil)
				if same && err == nil {
					return status, out, nil
				}
				p.log.Warn("the other backend did not decrypt what the serving one encrypted (the serving backend's own trial decides)",
					"keyId", ex.keyID, "encrypted_on", b.name, "trial_on", other.name, "error", xks.NameOf(err))
			}
		}
	}
	same, ran, err := p.trial(ex, b, out)
	switch {
	case !ran && err != nil:
		return p.replaceReply(ex, err.(*xks.Error))
	case err != nil:
		return p.replaceReply(ex, p.trialError(ex, b, err))
	case !same:
		return p.replaceReply(ex, xks.Errorf(xks.InternalException,
			"the trial decrypt on backend %s returned other plaintext than the Encrypt request's", b.name))
	}
	return status, out, nil
}

// trial decrypts the Encrypt reply out on backend b, within the request's budget, and compares
// the plaintext with the request's; the trial's plaintext is cleared at once. ran is false when
// no call was made (no time left, or the reply cannot be turned into a Decrypt): err is then
// the *xks.Error to answer with.
func (p *Proxy) trial(ex *exchange, b *backend, out []byte) (same, ran bool, err error) {
	remaining := time.Until(ex.start.Add(p.cfg.Limits.Budget))
	if remaining < minAttempt {
		return false, false, xks.Errorf(xks.DependencyTimeoutException,
			"no time left in the request's budget for the trial decrypt that a ciphertextDataIntegrityValue needs")
	}
	body, raw, dec := p.getBuf(), p.getBuf(), p.getBuf()
	defer p.putBuf(body, true)
	tb, terr := xks.AppendTrialDecrypt((*body)[:0], ex.body, out, ex.v.Metadata)
	*body = tb
	if terr != nil {
		p.putBuf(raw, false)
		p.putBuf(dec, false)
		return false, false, &xks.Error{Name: xks.NameOf(terr), Message: xks.MessageOf(terr), Err: terr}
	}
	tex := exchange{
		ctx: ex.ctx, op: xks.OpDecrypt, keyID: ex.keyID, body: tb, bodySum: sha256.Sum256(tb),
		v:     xks.Validated{Op: xks.OpDecrypt, Metadata: ex.v.Metadata, PayloadLen: ex.v.PayloadLen, AADLen: ex.v.AADLen},
		start: ex.start, rawBuf: raw, outBuf: dec,
	}
	_, plain, derr := p.attempt(&tex, b, min(b.cfg.Timeout, remaining))
	same = derr == nil && xks.SamePlaintext(ex.body, plain)
	// The trial's plaintext goes at once, whatever the outcome.
	clear((*raw)[:cap(*raw)])
	clear((*dec)[:cap(*dec)])
	p.putBuf(raw, false)
	p.putBuf(dec, false)
	return same, true, derr
}

// trialError turns the failure of a trial decrypt into the error the Encrypt answers with. The
// caller sent no ciphertext, so a ciphertext the backend cannot decrypt is the backend's fault
// (InternalException), never InvalidCiphertextException.
func (p *Proxy) trialError(ex *exchange, b *backend, err error) *xks.Error {
	name := xks.NameOf(err)
	prefix := "the trial decrypt that a ciphertextDataIntegrityValue needs failed on backend " + b.name + ": "
	switch name {
	case xks.KeyNotFoundException:
		// The key encrypted on this backend a moment ago, so it exists: Cosmian answers a Decrypt
		// with a key whose usage mask lacks the Decrypt bit with "not found" (keyinfo.go). Where
		// a key-attribute reader is configured it confirms; a key gone since stays not found.
		if p.keyInfo != nil {
			deadline := ex.start.Add(p.cfg.Limits.Budget - 10*time.Millisecond)
			if f, ok := p.keyInfo.lookup(ex.ctx, b.name, ex.keyID, deadline); ok && !f.exists {
				return &xks.Error{Name: name, Message: prefix + xks.MessageOf(err), Err: err}
			}
		}
		return &xks.Error{Name: xks.InvalidKeyUsageException, Err: err,
			Message: "key " + ex.keyID + " does not allow Decrypt, and an Encrypt that asks for a ciphertextDataIntegrityValue needs a trial decrypt"}
	case xks.InvalidKeyUsageException, xks.InvalidStateException, xks.DependencyTimeoutException, xks.ThrottlingException:
		return &xks.Error{Name: name, Message: prefix + xks.MessageOf(err), Err: err}
	}
	return &xks.Error{Name: xks.InternalException, Message: prefix + string(name), Err: err}
}

// replaceReply writes e as the exchange's reply.
func (p *Proxy) replaceReply(ex *exchange, e *xks.Error) (int, []byte, error) {
	o := xks.AppendErrorBody((*ex.outBuf)[:0], e.Name, e.Message)
	*ex.outBuf = o
	return e.Status(), o, e
}
