package proxy

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/xksproxy/xksproxy/sigv4"
)

// fakeKMS is a small Cosmian-like XKS endpoint (fixed /aws prefix, 401/418 statuses, JSON
// nulls, raw AAD) for tests that need precise fault control (garbled replies, dropped
// connections). The end-to-end tests against the project's emulator are in emu_test.go.
type fakeKMS struct {
	verifier *sigv4.Verifier
	mu       sync.Mutex
	keys     map[string]*fakeKey
	calls    atomic.Int64
	latency  atomic.Int64 // ns
	down     atomic.Bool  // drop the connection without a reply
	garble   atomic.Bool  // 200 with a non-JSON body
	status   atomic.Int64 // when non-zero: reply this status with an InternalException body
}

type fakeKey struct {
	aead     cipher.AEAD
	enc, dec bool
}

func newFakeKMS(cred sigv4.Credential) *fakeKMS {
	v, err := sigv4.NewVerifier(sigv4.VerifierConfig{Region: "eu-west-1", Credentials: []sigv4.Credential{cred}})
	if err != nil {
		panic(err)
	}
	return &fakeKMS{verifier: v, keys: map[string]*fakeKey{}}
}

func (f *fakeKMS) addKey(id string, enc, dec bool, material []byte) {
	if material == nil {
		material = make([]byte, 32)
		_, _ = rand.Read(material)
	}
	blk, _ := aes.NewCipher(material)
	g, _ := cipher.NewGCM(blk)
	f.mu.Lock()
	f.keys[id] = &fakeKey{aead: g, enc: enc, dec: dec}
	f.mu.Unlock()
}

func fakeErr(w http.ResponseWriter, status int, name string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, `{"errorName":"`+name+`","errorMessage":"fake `+name+`"}`)
}

func (f *fakeKMS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.calls.Add(1)
	if d := f.latency.Load(); d > 0 {
		select {
		case <-time.After(time.Duration(d)):
		case <-r.Context().Done():
			return
		}
	}
	if f.down.Load() {
		if hj, ok := w.(http.Hijacker); ok {
			c, _, _ := hj.Hijack()
			c.Close()
			return
		}
		panic(http.ErrAbortHandler)
	}
	if s := f.status.Load(); s != 0 {
		fakeErr(w, int(s), "InternalException")
		return
	}
	if f.garble.Load() {
		w.WriteHeader(200)
		_, _ = io.WriteString(w, "<html>oops</html>")
		return
	}
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if _, err := f.verifier.Verify(r, body); err != nil {
		w.WriteHeader(401) // Cosmian's malformed-auth path: plain text
		_, _ = io.WriteString(w, "Unauthorized")
		return
	}
	rest, ok := strings.CutPrefix(r.URL.Path, "/aws/kms/xks/v1/")
	if !ok {
		fakeErr(w, 404, "InvalidUriPathException")
		return
	}
	if rest == "health" {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"xksProxyFleetSize":1,"xksProxyVendor":"Cosmian","xksProxyModel":"Cosmian KMS 5.26.0","ekmVendor":"Cosmian","ekmFleetDetails":[{"id":"1","model":"Cosmian KMS 5.26.0","healthStatus":"ACTIVE"}]}`)
		return
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 3 || parts[0] != "keys" {
		fakeErr(w, 404, "InvalidUriPathException")
		return
	}
	id, op := parts[1], parts[2]
	var req struct {
		RequestMetadata struct {
			KMSOperation string `json:"kmsOperation"`
		} `json:"requestMetadata"`
		Plaintext  []byte `json:"plaintext"`
		Ciphertext []byte `json:"ciphertext"`
		IV         []byte `json:"initializationVector"`
		Tag        []byte `json:"authenticationTag"`
		AAD        []byte `json:"additionalAuthenticatedData"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		fakeErr(w, 401, "ValidationException")
		return
	}
	f.mu.Lock()
	k := f.keys[id]
	if k == nil && op == "metadata" && req.RequestMetadata.KMSOperation == "CreateKey" {
		f.mu.Unlock()
		f.addKey(id, true, true, nil)
		f.mu.Lock()
		k = f.keys[id]
	}
	f.mu.Unlock()
	if k == nil {
		fakeErr(w, 418, "KeyNotFoundException")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	switch op {
	case "metadata":
		_, _ = io.WriteString(w, `{"keySpec":"AES_256","keyUsage":["ENCRYPT","DECRYPT","WRAP","UNWRAP"],"keyStatus":"ENABLED"}`)
	case "encrypt":
		if !k.enc {
			fakeErr(w, 401, "InvalidKeyUsageException")
			return
		}
		iv := make([]byte, 12)
		_, _ = rand.Read(iv)
		out := k.aead.Seal(nil, iv, req.Plaintext, req.AAD)
		n := len(req.Plaintext)
		_ = json.NewEncoder(w).Encode(map[string]any{
			"ciphertext": out[:n], "ciphertextMetadata": nil, "initializationVector": iv,
			"authenticationTag": out[n:], "ciphertextDataIntegrityValue": nil,
		})
	case "decrypt":
		if !k.dec {
			fakeErr(w, 401, "InvalidKeyUsageException")
			return
		}
		if len(req.IV) != 12 || len(req.Tag) != 16 {
			fakeErr(w, 401, "InvalidCiphertextException")
			return
		}
		pt, err := k.aead.Open(nil, req.IV, append(append([]byte(nil), req.Ciphertext...), req.Tag...), req.AAD)
		if err != nil {
			fakeErr(w, 401, "InvalidCiphertextException")
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"plaintext": pt})
	default:
		fakeErr(w, 404, "InvalidUriPathException")
	}
}
