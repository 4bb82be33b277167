package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"net/http"
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/sigv4"
	"github.com/xksproxy/xksproxy/xks"
)

// TestServeDevKeyUsage is the check of README's "What AWS sees": with keys of every usage, each
// Encrypt or Decrypt the usage forbids answers 400 InvalidKeyUsageException and GetKeyMetadata
// reports the real usage. An Encrypt with a ciphertext data integrity value needs both.
func TestServeDevKeyUsage(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errb syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--dev", "--listen", "127.0.0.1:0", "--log-level", "error",
			"--dev-key", "foo", "--dev-key", "encrypt_only_key:encrypt", "--dev-key", "decrypt_only_key:decrypt",
			"--dev-key", "impotent_key:none"}, &out, &errb)
	}()
	defer func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("serve --dev did not stop")
		}
	}()
	re := regexp.MustCompile(`(?s)endpoint\s+(https://\S+).*region\s+(\S+).*access key id\s+(\S+).*secret\s+(\S+)`)
	var m []string
	for deadline := time.Now().Add(60 * time.Second); m == nil && time.Now().Before(deadline); {
		if m = re.FindStringSubmatch(out.String()); m == nil {
			time.Sleep(50 * time.Millisecond)
		}
	}
	if m == nil {
		t.Fatalf("serve --dev did not start:\n%s\n%s", out.String(), errb.String())
	}
	signer, err := sigv4.NewSigner(sigv4.SignerConfig{Credential: sigv4.Credential{AccessKeyID: m[3], Secret: m[4]}, Region: m[2]})
	if err != nil {
		t.Fatal(err)
	}
	c, err := xks.NewClient(xks.ClientConfig{BaseURL: m[1], Signer: signer, Timeout: 10 * time.Second, HTTP: &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}, // serve --dev's self-signed certificate
	}}})
	if err != nil {
		t.Fatal(err)
	}
	md := func(op string) xks.RequestMetadata {
		return xks.RequestMetadata{AWSPrincipalArn: "arn:aws:iam::111122223333:user/dev", KMSKeyArn: "arn:aws:kms:us-east-1:111122223333:key/dev", KMSOperation: op, KMSRequestID: "1"}
	}
	// A ciphertext under the shared dev material, made with the key that may encrypt.
	ct, err := c.Encrypt(ctx, "foo", &xks.EncryptRequest{RequestMetadata: md("Encrypt"), Plaintext: []byte("hello")})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		key            string
		usage          []string
		encrypt, decry bool
	}{
		{"foo", []string{"ENCRYPT", "DECRYPT", "WRAP", "UNWRAP"}, true, true},
		{"encrypt_only_key", []string{"ENCRYPT", "WRAP"}, true, false},
		{"decrypt_only_key", []string{"DECRYPT", "UNWRAP"}, false, true},
		{"impotent_key", []string{}, false, false},
	} {
		t.Run(tc.key, func(t *testing.T) {
			// Do, not Metadata: the client refuses an empty keyUsage from a backend, which the
			// proxy reports for a key with no usage at all.
			body, _ := json.Marshal(xks.MetadataRequest{RequestMetadata: md("GetKeyMetadata")})
			status, raw, err := c.Do(ctx, xks.OpMetadata, tc.key, body)
			var meta xks.MetadataResponse
			if err != nil || status != 200 || json.Unmarshal(raw, &meta) != nil || !slices.Equal(meta.KeyUsage, tc.usage) || meta.KeyStatus != "ENABLED" {
				t.Fatalf("metadata %d %s %v, want usage %v", status, raw, err, tc.usage)
			}
			_, err = c.Encrypt(ctx, tc.key, &xks.EncryptRequest{RequestMetadata: md("Encrypt"), Plaintext: []byte("hello")})
			wantUsage(t, "Encrypt", err, tc.encrypt)
			_, err = c.Decrypt(ctx, tc.key, &xks.DecryptRequest{RequestMetadata: md("Decrypt"), Ciphertext: ct.Ciphertext,
				InitializationVector: ct.InitializationVector, AuthenticationTag: ct.AuthenticationTag})
			wantUsage(t, "Decrypt", err, tc.decry)

			// An Encrypt that asks for a ciphertext data integrity value needs both usages: the
			// proxy decrypts the output before answering (spec Appendix C).
			for _, aad := range [][]byte{nil, []byte("project=nile,department=marketing")} {
				r, err := c.Encrypt(ctx, tc.key, &xks.EncryptRequest{RequestMetadata: md("Encrypt"), Plaintext: []byte("hello"),
					AdditionalAuthenticatedData: aad, CiphertextDataIntegrityValueAlgorithm: xks.CDIVAlgSHA256})
				wantUsage(t, "Encrypt with CDIV", err, tc.encrypt && tc.decry)
				if err == nil && !bytes.Equal(r.CiphertextDataIntegrityValue, xks.CDIV(aad, r.CiphertextMetadata, r.InitializationVector, r.Ciphertext, r.AuthenticationTag)) {
					t.Errorf("CDIV %x is not Appendix C's", r.CiphertextDataIntegrityValue)
				}
			}
		})
	}
}

// wantUsage: allowed → success (or, for a Decrypt of another key's ciphertext, 400
// InvalidCiphertextException: each dev key has its own material); forbidden → 400
// InvalidKeyUsageException.
func wantUsage(t *testing.T, op string, err error, allowed bool) {
	t.Helper()
	var xe *xks.Error
	switch {
	case allowed && err != nil && !(op == "Decrypt" && errors.As(err, &xe) && xe.Name == xks.InvalidCiphertextException):
		t.Errorf("%s: %v, want success", op, err)
	case !allowed && (!errors.As(err, &xe) || xe.Name != xks.InvalidKeyUsageException || xe.HTTPStatus != 400):
		t.Errorf("%s: %v, want 400 InvalidKeyUsageException", op, err)
	}
}
