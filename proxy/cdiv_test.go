package proxy

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/cosmian"
	"github.com/xksproxy/xksproxy/cosmian/kmsemu"
	"github.com/xksproxy/xksproxy/xks"
)

// Spec Appendix C: an Encrypt that asks for a ciphertext data integrity value is answered only
// after the proxy has checked the backend's value and decrypted the output on that backend.

type cdivEnv struct {
	*env
	emu    *kmsemu.Server
	reader *emuReader
}

// newCDIVEnv runs one emulator of generation gen behind the proxy, with an encrypt-decrypt key
// "ed" and an encrypt-only key "enc" (usage masks, as `kmsemu --key ID:encrypt` seeds them), both
// usable by the XKS caller of that generation. withReader adds the key-attribute reader.
func newCDIVEnv(t *testing.T, gen kmsemu.Generation, withReader bool, post ...func(*Proxy)) *cdivEnv {
	t.Helper()
	s, err := kmsemu.New(kmsemu.Config{
		XKS:            &kmsemu.XKSConfig{Region: "eu-west-1", AccessKeyID: credBackend.AccessKeyID, SecretAccessKey: credBackend.Secret},
		CosmianVersion: gen,
	})
	if err != nil {
		t.Fatal(err)
	}
	grantee := aliceARN
	if gen != kmsemu.Cosmian526 {
		grantee = cosmian.XKSServiceUser
	}
	for uid, mask := range map[string]int32{"ed": kmsemu.DefaultUsageMask, "enc": cosmian.UsageEncrypt} {
		if err := s.CreateKey("admin", uid, kmsemu.KeyOptions{UsageMask: mask, Tags: []string{"aws-xks"}}); err != nil {
			t.Fatal(err)
		}
		if err := s.GrantAccess("admin", uid, grantee, "encrypt", "decrypt", "getattributes"); err != nil {
			t.Fatal(err)
		}
	}
	run, err := s.Start("127.0.0.1:0", true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = run.Close() })
	e := &cdivEnv{env: &env{}, emu: s, reader: &emuReader{s: s}}
	e.start(t, []BackendConfig{{Name: "a", XKSURL: run.URL + "/aws", Region: "eu-west-1", Credential: credBackend,
		TLS: &tls.Config{RootCAs: run.CertPool, MinVersion: tls.VersionTLS12}, Timeout: 240 * time.Millisecond}},
		func(c *Config) {
			c.Health.Disabled = true
			if withReader {
				c.KeyInfo.Readers = map[string]KeyAttributeReader{"a": e.reader}
			}
		}, post...)
	return e
}

func cdivBody(pt, aad []byte) []byte {
	b := encBody(pt, aad)
	return append(b[:len(b)-1], `,"ciphertextDataIntegrityValueAlgorithm":"SHA_256"}`...)
}

type cdivReply struct {
	Ciphertext, InitializationVector, AuthenticationTag, CiphertextMetadata, CiphertextDataIntegrityValue []byte
}

// decrypts counts the XKS Decrypt calls the emulator has answered.
func (e *cdivEnv) decrypts() int64 { return e.emu.Stats().XKS["decrypt"] }

func TestEncryptWithCDIV(t *testing.T) {
	pt := []byte("plaintext the trial decrypt must give back")
	for _, gen := range []kmsemu.Generation{kmsemu.Cosmian526, kmsemu.Cosmian528} {
		for _, withReader := range []bool{false, true} {
			name := string(gen) + "/without reader"
			if withReader {
				name = string(gen) + "/with reader"
			}
			t.Run(name, func(t *testing.T) {
				e := newCDIVEnv(t, gen, withReader)
				for _, aad := range [][]byte{nil, []byte("project=nile,department=marketing")} {
					// An encrypt-decrypt key: 200, the backend's CDIV, which is Appendix C's
					// formula over the reply, after exactly one more backend call, a Decrypt.
					before := e.decrypts()
					st, b := e.post(t, keysPath+"ed/encrypt", cdivBody(pt, aad))
					if st != 200 {
						t.Fatalf("aad %q: %d %s", aad, st, b)
					}
					var r cdivReply
					if err := json.Unmarshal(b, &r); err != nil {
						t.Fatal(err)
					}
					want := xks.CDIV(aad, r.CiphertextMetadata, r.InitializationVector, r.Ciphertext, r.AuthenticationTag)
					if !bytes.Equal(r.CiphertextDataIntegrityValue, want) {
						t.Fatalf("aad %q: CDIV %x, want %x", aad, r.CiphertextDataIntegrityValue, want)
					}
					if n := e.decrypts() - before; n != 1 {
						t.Fatalf("aad %q: %d trial decrypts, want 1", aad, n)
					}
					st, b = e.post(t, keysPath+"ed/decrypt", decBody(encReply{Ciphertext: r.Ciphertext, InitializationVector: r.InitializationVector, AuthenticationTag: r.AuthenticationTag}, aad))
					if st != 200 || !strings.Contains(string(b), b64(pt)) {
						t.Fatalf("aad %q: decrypt of the output: %d %s", aad, st, b)
					}
					// An encrypt-only key encrypts, but cannot pass the trial decrypt: 400
					// InvalidKeyUsageException, whatever Cosmian's own status for it.
					st, b = e.post(t, keysPath+"enc/encrypt", cdivBody(pt, aad))
					if st != 400 || errName(t, b) != "InvalidKeyUsageException" {
						t.Fatalf("aad %q: encrypt-only key: %d %s", aad, st, b)
					}
					if strings.Contains(string(b), b64(pt)) {
						t.Fatal("the error reply holds the plaintext")
					}
					// Without a CDIV the same key encrypts, and no decrypt is made.
					before = e.decrypts()
					if st, b := e.post(t, keysPath+"enc/encrypt", encBody(pt, aad)); st != 200 || strings.Contains(string(b), "ciphertextDataIntegrityValue") {
						t.Fatalf("aad %q: encrypt-only key without CDIV: %d %s", aad, st, b)
					}
					if e.decrypts() != before {
						t.Fatal("a trial decrypt for an Encrypt without CDIV")
					}
				}
			})
		}
	}
}

// TestEncryptWithCDIVCorrupted: a backend whose output does not decrypt, or whose CDIV is not
// Appendix C's, gets an XKS error, never a 200. Without a CDIV the proxy passes the output on
// unchecked, as before.
func TestEncryptWithCDIVCorrupted(t *testing.T) {
	e := newCDIVEnv(t, kmsemu.NewestGeneration, true)
	aad := []byte("aad")
	for _, tc := range []struct {
		name        string
		fault       kmsemu.Corruption
		wantDecrypt int64 // trial decrypts made
	}{
		{"ciphertext", kmsemu.CorruptCiphertext, 1},
		{"cdiv", kmsemu.CorruptCDIV, 0}, // the CDIV is checked first: no backend call for it
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.emu.SetFaults(kmsemu.Faults{CorruptEncrypt: tc.fault})
			defer e.emu.SetFaults(kmsemu.Faults{})
			before := e.decrypts()
			st, b := e.post(t, keysPath+"ed/encrypt", cdivBody([]byte("hello"), aad))
			if st != 500 || errName(t, b) != "InternalException" || strings.Contains(string(b), "ciphertextDataIntegrityValue\":") {
				t.Fatalf("%d %s", st, b)
			}
			if n := e.decrypts() - before; n != tc.wantDecrypt {
				t.Fatalf("%d trial decrypts, want %d", n, tc.wantDecrypt)
			}
			if st, b := e.post(t, keysPath+"ed/encrypt", encBody([]byte("hello"), aad)); st != 200 {
				t.Fatalf("without CDIV: %d %s", st, b)
			}
		})
	}
	if st, b := e.post(t, keysPath+"ed/encrypt", cdivBody([]byte("hello"), aad)); st != 200 {
		t.Fatalf("after the faults: %d %s", st, b)
	}
}

// TestEncryptWithCDIVBudget: the trial decrypt gets what is left of the request's one budget;
// when the backend is too slow for both calls the answer is 503 DependencyTimeoutException.
func TestEncryptWithCDIVBudget(t *testing.T) {
	e := newCDIVEnv(t, kmsemu.NewestGeneration, false, func(p *Proxy) {
		p.cfg.Limits.Budget = time.Second
		p.order[0].cfg.Timeout = time.Second
	})
	e.emu.SetFaults(kmsemu.Faults{Latency: 600 * time.Millisecond, XKSOnly: true})
	st, b := e.post(t, keysPath+"ed/encrypt", cdivBody([]byte("hello"), nil))
	if st != 503 || errName(t, b) != "DependencyTimeoutException" {
		t.Fatalf("%d %s", st, b)
	}
}

// TestForwardEncryptWithCDIV: Forward, which the migration uses to send traffic as AWS would,
// makes the same check.
func TestForwardEncryptWithCDIV(t *testing.T) {
	e := newCDIVEnv(t, kmsemu.NewestGeneration, false)
	st, _, err := e.p.Forward(t.Context(), "a", xks.OpEncrypt, "enc", cdivBody([]byte("hello"), nil))
	if st != 400 || xks.NameOf(err) != xks.InvalidKeyUsageException {
		t.Fatalf("%d %v", st, err)
	}
	st, out, err := e.p.Forward(t.Context(), "a", xks.OpEncrypt, "ed", cdivBody([]byte("hello"), nil))
	if st != 200 || err != nil || !bytes.Contains(out, []byte("ciphertextDataIntegrityValue")) {
		t.Fatalf("%d %s %v", st, out, err)
	}
}
