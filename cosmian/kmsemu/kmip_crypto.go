package kmsemu

import (
	"crypto/aes"
	"crypto/cipher"

	"github.com/xksproxy/xksproxy/cosmian/ttlv"
)

// ---- Encrypt / Decrypt (core/operations/encrypt.rs, decrypt.rs, key_ops/crypto_op.rs) ----

type cryptoReq struct {
	uid               string
	data, iv, aad, tg []byte
	hasData, hasIV    bool
}

func parseCryptoReq(req ttlv.Node, decrypt bool) (cryptoReq, *kmsError) {
	var c cryptoReq
	var kerr *kmsError
	if c.uid, kerr = uidOf(req); kerr != nil {
		return c, kerr
	}
	if cp, ok, kerr := optChild(req, "CryptographicParameters", ttlv.Structure); kerr != nil {
		return c, kerr
	} else if ok {
		if m, ok := cp.Child("BlockCipherMode"); ok && m.Str != "GCM" {
			return c, notSupportedErr("kmsemu: only AES-GCM is emulated, got block cipher mode " + m.Str)
		}
		if alg, ok := cp.Child("CryptographicAlgorithm"); ok && alg.Str != "AES" {
			return c, notSupportedErr("kmsemu: only AES is emulated, got " + alg.Str)
		}
	}
	for _, f := range []struct {
		tag string
		dst *[]byte
		has *bool
	}{
		{"Data", &c.data, &c.hasData},
		{"IVCounterNonce", &c.iv, &c.hasIV},
		{"AuthenticatedEncryptionAdditionalData", &c.aad, nil},
		{"AuthenticatedEncryptionTag", &c.tg, nil},
	} {
		n, ok, kerr := optChild(req, f.tag, ttlv.ByteString)
		if kerr != nil {
			return c, kerr
		}
		if ok {
			*f.dst = n.Bytes
			if f.has != nil {
				*f.has = true
			}
		}
	}
	_ = decrypt
	return c, nil
}

// keyForCrypto selects the key and copies its plaintext material (the caller wipes it).
func (s *Server) keyForCrypto(id string, decrypt bool, user string) (string, []byte, *kmsError) {
	now := s.now()
	s.st.mu.Lock()
	defer s.st.mu.Unlock()
	o, kerr := s.selectCryptoKey(id, decrypt, user, now)
	if kerr != nil {
		return "", nil, kerr
	}
	key, err := s.plainMaterialLocked(o)
	if err != nil {
		return "", nil, serverErr(err.Error())
	}
	return o.uid, key, nil
}

func gcm(key []byte, nonceSize int) (cipher.AEAD, *kmsError) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, notSupportedErr("kmsemu: AES key of " + itoa(len(key)) + " bytes")
	}
	a, err := cipher.NewGCMWithNonceSize(block, nonceSize)
	if err != nil {
		return nil, kmipErr("Cryptographic_Failure", "CRYPTO: error: Error: OpenSSL error. Details: ErrorStack([])")
	}
	return a, nil
}

// encryptGCM is the shared Encrypt path (also used by XKS).
func (s *Server) encryptGCM(c cryptoReq, user string) (uid string, ct, iv, tag []byte, kerr *kmsError) {
	uid, key, kerr := s.keyForCrypto(c.uid, false, user)
	if kerr != nil {
		return "", nil, nil, nil, kerr
	}
	defer clear(key)
	if !c.hasData {
		return "", nil, nil, nil, invalidErr("Encrypt: data to encrypt must be provided")
	}
	iv = c.iv
	if !c.hasIV {
		var err error
		if iv, err = s.randBytes(12); err != nil {
			return "", nil, nil, nil, serverErr(err.Error())
		}
	}
	if len(iv) == 0 {
		return "", nil, nil, nil, invalidErr("Encrypt: invalid IV/nonce length: expected 12 bytes for Aes256Gcm, got 0")
	}
	a, kerr := gcm(key, len(iv))
	if kerr != nil {
		return "", nil, nil, nil, kerr
	}
	out := a.Seal(nil, iv, c.data, c.aad)
	n := len(out) - a.Overhead()
	return uid, out[:n], iv, out[n:], nil
}

// decryptGCM is the shared Decrypt path (also used by XKS).
func (s *Server) decryptGCM(c cryptoReq, user string) (string, []byte, *kmsError) {
	uid, key, kerr := s.keyForCrypto(c.uid, true, user)
	if kerr != nil {
		return "", nil, kerr
	}
	defer clear(key)
	if !c.hasData {
		return "", nil, invalidErr("Decrypt: data to decrypt must be provided")
	}
	if !c.hasIV {
		return "", nil, kmipErr("Invalid_Message", "missing-iv")
	}
	iv := c.iv
	if len(iv) == 0 {
		iv = make([]byte, 12)
	}
	var a cipher.AEAD
	switch {
	case len(c.tg) == 16:
		var kerr *kmsError
		if a, kerr = gcm(key, len(iv)); kerr != nil {
			return "", nil, kerr
		}
	case len(c.tg) >= 12 && len(c.tg) < 16 && len(iv) == 12:
		// OpenSSL checks a truncated tag against the tag's prefix; so does Go's GCM.
		block, err := aes.NewCipher(key)
		if err != nil {
			return "", nil, notSupportedErr("kmsemu: AES key of " + itoa(len(key)) + " bytes")
		}
		if a, err = cipher.NewGCMWithTagSize(block, len(c.tg)); err != nil {
			return "", nil, errGCMTag
		}
	default:
		return "", nil, errGCMTag
	}
	in := make([]byte, 0, len(c.data)+len(c.tg))
	in = append(append(in, c.data...), c.tg...)
	pt, err := a.Open(nil, iv, in, c.aad)
	if err != nil {
		return "", nil, errGCMTag
	}
	return uid, pt, nil
}

func (s *Server) opEncrypt(req ttlv.Node, user string) (ttlv.Node, *kmsError) {
	c, kerr := parseCryptoReq(req, false)
	if kerr != nil {
		return ttlv.Node{}, kerr
	}
	uid, ct, iv, tag, kerr := s.encryptGCM(c, user)
	if kerr != nil {
		return ttlv.Node{}, kerr
	}
	return ttlv.Struct("EncryptResponse",
		ttlv.Text("UniqueIdentifier", uid),
		ttlv.Bytes("Data", ct),
		ttlv.Bytes("IVCounterNonce", iv),
		ttlv.Bytes("AuthenticatedEncryptionTag", tag),
	), nil
}

func (s *Server) opDecrypt(req ttlv.Node, user string) (ttlv.Node, *kmsError) {
	c, kerr := parseCryptoReq(req, true)
	if kerr != nil {
		return ttlv.Node{}, kerr
	}
	uid, pt, kerr := s.decryptGCM(c, user)
	if kerr != nil {
		return ttlv.Node{}, kerr
	}
	return ttlv.Struct("DecryptResponse", ttlv.Text("UniqueIdentifier", uid), ttlv.Bytes("Data", pt)), nil
}
