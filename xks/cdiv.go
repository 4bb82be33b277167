package xks

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"hash"
)

// Appendix C of the spec: an Encrypt that names ciphertextDataIntegrityValueAlgorithm is
// answered only after the proxy has computed the ciphertext data integrity value (CDIV) of the
// reply and decrypted the reply successfully. These helpers work on the raw request body (as
// Validate accepted it) and the normalised reply (as NormalizeResponse wrote it): both are
// canonical padded standard base64, so they are read in place and nothing is decoded into a
// buffer of its own.

var (
	errCDIVMismatch = Errorf(InternalException, "key manager's ciphertextDataIntegrityValue does not match SHA-256(aad || ciphertextMetadata || iv || ciphertext || tag)")
	errCDIVReply    = Errorf(InternalException, "key manager's Encrypt reply could not be read for its integrity check")
	errCDIVRequest  = Errorf(InternalException, "Encrypt request could not be read again for its integrity check")
)

// encParts holds an Encrypt request and its normalised reply, parsed.
type encParts struct {
	req, reply   scanner
	reqVals      [maxFields]value
	meta         [numMeta]value
	replyVals    [maxFields]value
	aad, cm, cdv []byte // raw base64 (unescaped); nil when absent
}

func parseEnc(p *encParts, encReq, reply []byte) *Error {
	p.req, p.reply = scanner{b: encReq}, scanner{b: reply}
	if p.req.parseBody(encFields, p.reqVals[:len(encFields)], p.meta[:]) != nil {
		return errCDIVRequest
	}
	if p.reply.parseBody(encRespFields, p.replyVals[:len(encRespFields)], nil) != nil {
		return errCDIVReply
	}
	p.aad = rawB64(&p.req, &p.reqVals[eAAD])
	p.cm = rawB64(&p.reply, &p.replyVals[rCM])
	p.cdv = rawB64(&p.reply, &p.replyVals[rCDIV])
	for _, i := range []int{rCiphertext, rIV, rTag} {
		if !p.replyVals[i].set || p.replyVals[i].bad {
			return errCDIVReply
		}
	}
	return nil
}

// rawB64 returns the base64 text of a string member, unescaped (a copy only if it had escapes:
// JSON allows "\/" in base64 text), or nil when the member is absent or null.
func rawB64(s *scanner, v *value) []byte {
	if !v.set {
		return nil
	}
	raw := s.b[v.start:v.end]
	if v.esc {
		return appendUnescaped(make([]byte, 0, len(raw)), raw)
	}
	return raw
}

// CheckCDIV recomputes the ciphertextDataIntegrityValue of reply, the normalised reply to the
// Encrypt request encReq, as Appendix C defines it — SHA-256 over the decoded
// additionalAuthenticatedData of the request, then the reply's ciphertextMetadata,
// initializationVector, ciphertext and authenticationTag, absent members counting as empty — and
// compares it with the one the reply carries. A reply without one, or with another value, is an
// *Error (InternalException): a key manager that gets its integrity value wrong is failing.
func CheckCDIV(encReq, reply []byte) error {
	var p encParts
	if err := parseEnc(&p, encReq, reply); err != nil {
		return err
	}
	if p.cdv == nil {
		return errCDIVReply
	}
	var want [sha256.Size]byte
	if n, err := base64.StdEncoding.Decode(want[:], p.cdv); err != nil || n != sha256.Size {
		return errCDIVMismatch
	}
	h := sha256.New()
	for _, b := range [][]byte{p.aad, p.cm, p.reply.b[p.replyVals[rIV].start:p.replyVals[rIV].end],
		p.reply.b[p.replyVals[rCiphertext].start:p.replyVals[rCiphertext].end],
		p.reply.b[p.replyVals[rTag].start:p.replyVals[rTag].end]} {
		if err := hashB64(h, b); err != nil {
			return errCDIVReply
		}
	}
	var got [sha256.Size]byte
	h.Sum(got[:0])
	if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
		return errCDIVMismatch
	}
	return nil
}

// hashB64 writes the bytes that the base64 text raw decodes to, a chunk at a time.
func hashB64(h hash.Hash, raw []byte) error {
	var buf [768]byte
	for len(raw) > 0 {
		n := min(len(raw), 1024) // a multiple of 4: only the last chunk carries padding
		m, err := base64.StdEncoding.Decode(buf[:], raw[:n])
		if err != nil {
			return err
		}
		h.Write(buf[:m])
		raw = raw[n:]
	}
	return nil
}

// AppendTrialDecrypt appends to dst the body of the Decrypt request that decrypts reply, the
// normalised reply to the Encrypt request encReq: requestMetadata md (the Encrypt's own, so that
// the key manager's audit names the request it belongs to), encryptionAlgorithm AES_GCM, the
// reply's ciphertext, initializationVector, authenticationTag and ciphertextMetadata, and the
// request's additionalAuthenticatedData.
func AppendTrialDecrypt(dst, encReq, reply []byte, md RequestMetadata) ([]byte, error) {
	var p encParts
	if err := parseEnc(&p, encReq, reply); err != nil {
		return dst, err
	}
	dst = append(dst, `{"requestMetadata":{"awsPrincipalArn":`...)
	dst = appendJSONString(dst, md.AWSPrincipalArn)
	dst = append(dst, `,"kmsKeyArn":`...)
	dst = appendJSONString(dst, md.KMSKeyArn)
	dst = append(dst, `,"kmsOperation":`...)
	dst = appendJSONString(dst, md.KMSOperation)
	dst = append(dst, `,"kmsRequestId":`...)
	dst = appendJSONString(dst, md.KMSRequestID)
	for _, o := range [...]struct{ name, v string }{{"awsSourceVpc", md.AWSSourceVpc}, {"awsSourceVpce", md.AWSSourceVpce}, {"kmsViaService", md.KMSViaService}} {
		if o.v != "" {
			dst = append(dst, `,"`...)
			dst = append(dst, o.name...)
			dst = append(dst, `":`...)
			dst = appendJSONString(dst, o.v)
		}
	}
	dst = append(dst, `},"ciphertext":`...)
	dst = p.reply.appendB64(dst, &p.replyVals[rCiphertext])
	dst = append(dst, `,"encryptionAlgorithm":"AES_GCM","initializationVector":`...)
	dst = p.reply.appendB64(dst, &p.replyVals[rIV])
	dst = append(dst, `,"authenticationTag":`...)
	dst = p.reply.appendB64(dst, &p.replyVals[rTag])
	if len(p.cm) > 0 {
		dst = append(dst, `,"ciphertextMetadata":"`...)
		dst = append(dst, p.cm...)
		dst = append(dst, '"')
	}
	if p.aad != nil {
		dst = append(dst, `,"additionalAuthenticatedData":"`...)
		dst = append(dst, p.aad...)
		dst = append(dst, '"')
	}
	return append(dst, '}'), nil
}

// SamePlaintext reports, in constant time, whether decReply (a normalised Decrypt reply) carries
// the plaintext of encReq (a validated Encrypt request). Both are canonical padded standard
// base64 — Validate and NormalizeResponse refuse anything else — so equal text means equal
// bytes. A copy made to remove JSON escapes is cleared before returning.
func SamePlaintext(encReq, decReply []byte) bool {
	var vals, dvals [maxFields]value
	var meta [numMeta]value
	s, d := scanner{b: encReq}, scanner{b: decReply}
	if s.parseBody(encFields, vals[:len(encFields)], meta[:]) != nil || d.parseBody(decRespFields, dvals[:len(decRespFields)], nil) != nil {
		return false
	}
	a, b := &vals[ePlaintext], &dvals[0]
	if !a.set || !b.set || a.bad || b.bad {
		return false
	}
	pa, pb := rawB64(&s, a), rawB64(&d, b)
	if a.esc {
		defer clear(pa)
	}
	if b.esc {
		defer clear(pb)
	}
	return subtle.ConstantTimeCompare(pa, pb) == 1
}
