package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/cosmian"
	"github.com/xksproxy/xksproxy/sigv4"
	"github.com/xksproxy/xksproxy/xks"
)

func TestBuildServer(t *testing.T) {
	env := map[string]string{
		"KMS_AWS_XKS_REGION":                  "eu-west-1",
		"KMS_AWS_XKS_SIGV4_ACCESS_KEY_ID":     "AKIAIOSFODNN7EXAMPLE",
		"KMS_AWS_XKS_SIGV4_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
	}
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		wantErr string
		check   func(t *testing.T, o options)
	}{
		{"defaults", nil, nil, "", func(t *testing.T, o options) {
			if o.listen != "127.0.0.1:9998" || o.defaultUser != "admin" || o.version != "5.28" || o.region != "" {
				t.Fatalf("%+v", o)
			}
		}},
		{"xks from env", nil, env, "", func(t *testing.T, o options) {
			if o.region != "eu-west-1" || o.akid == "" || o.secret == "" {
				t.Fatalf("%+v", o)
			}
		}},
		{"flags override env", []string{"--xks-region", "us-east-1"}, env, "", func(t *testing.T, o options) {
			if o.region != "us-east-1" {
				t.Fatalf("%+v", o)
			}
		}},
		{"keys and tokens", []string{"--key", "k1", "--key", "k2:encrypt", "--key", "k3:none", "--token", "alice=t1"}, nil, "", nil},
		{"partial xks", []string{"--xks-region", "us-east-1"}, nil, "XKS needs", nil},
		{"bad usage", []string{"--key", "k1:sign"}, nil, "--key wants", nil},
		{"bad token", []string{"--token", "alice"}, nil, "--token wants", nil},
		{"bad version", []string{"--cosmian-version", "5.99"}, nil, "unknown Cosmian version", nil},
		{"5.26", []string{"--cosmian-version", "5.26"}, nil, "", func(t *testing.T, o options) {
			if o.version != "5.26" {
				t.Fatalf("%+v", o)
			}
		}},
		{"5.27", []string{"--cosmian-version", "5.27"}, nil, "", nil},
		{"xks-service is 5.27", []string{"--cosmian-version", "xks-service"}, nil, "", nil},
		{"5.28", []string{"--cosmian-version", "5.28"}, nil, "", nil},
		{"seed keys", []string{"--seed-keys", "3", "--key", "mine:encrypt"}, nil, "", nil},
		{"seed key over a named key", []string{"--seed-keys", "1", "--key", "key-000001"}, nil, "already exists", nil},
	}
	for _, bad := range []string{"-1", "1000001", "many"} {
		if _, err := parseFlags([]string{"--seed-keys", bad}, func(string) string { return "" }, io.Discard); err == nil {
			t.Errorf("--seed-keys %s accepted", bad)
		}
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o, err := parseFlags(tc.args, func(k string) string { return tc.env[k] }, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if tc.check != nil {
				tc.check(t, o)
			}
			srv, err := buildServer(o, slog.New(slog.DiscardHandler))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if want, ok := map[string]string{"5.26": "5.26", "5.27": "5.27", "xks-service is 5.27": "5.27", "5.28": "5.28", "defaults": "5.28"}[tc.name]; ok && string(srv.Generation()) != want {
				t.Fatalf("generation %s, want %s", srv.Generation(), want)
			}
			if tc.name == "seed keys" {
				objs := srv.Objects()
				var ids []string
				for _, o := range objs {
					ids = append(ids, o.UID)
					if want := int32(0x4); o.UID == "mine" && o.UsageMask != want || o.UID != "mine" && o.UsageMask != 60 {
						t.Errorf("%s: mask %d", o.UID, o.UsageMask)
					}
					if got := srv.Access(o.UID)["*"]; strings.Join(got, ",") != "decrypt,encrypt,getattributes" {
						t.Errorf("%s: grants %v", o.UID, got)
					}
				}
				if strings.Join(ids, ",") != "key-000001,key-000002,key-000003,mine" {
					t.Fatalf("seeded %v", ids)
				}
			}
			if tc.name == "keys and tokens" {
				objs := srv.Objects()
				if len(objs) != 3 || objs[1].UsageMask != 0x4 || objs[2].UsageMask != 0x30 || objs[0].Owner != "admin" {
					t.Fatalf("%+v", objs)
				}
				if got := srv.Access("k1")["*"]; strings.Join(got, ",") != "decrypt,encrypt,getattributes" {
					t.Fatalf("grants %v", got)
				}
			}
		})
	}
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func TestRunServesAndShutsDown(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var logs syncBuf
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--listen", "127.0.0.1:0", "--node-listen", "127.0.0.1:0", "--key", "k1"}, func(string) string { return "" }, &logs)
	}()
	re := regexp.MustCompile(`url=(http://127\.0\.0\.1:\d+)`)
	var urls [][]string
	for i := 0; i < 1000 && len(urls) < 2; i++ {
		if urls = re.FindAllStringSubmatch(logs.String(), -1); len(urls) < 2 {
			time.Sleep(10 * time.Millisecond)
		}
	}
	if len(urls) < 2 {
		cancel()
		t.Fatalf("no ready lines for both nodes: %s", logs.String())
	}
	// The key seeded through the first node is read through the second: one store.
	url := urls[1][1]
	resp, err := http.Post(url+"/kmip/2_1", "application/json", strings.NewReader(`{"tag":"GetAttributes","value":[{"tag":"UniqueIdentifier","type":"TextString","value":"k1"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"GetAttributesResponse"`) {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
}

// TestSeededKeysServeXKS: on every generation a key seeded with --key or --seed-keys answers a
// signed XKS Encrypt and Decrypt at once, and on 5.27 and 5.28 it carries the [aws-xks-service]
// grant that Cosmian gives aws-xks keys at start-up (migrate_aws_xks_key_access).
func TestSeededKeysServeXKS(t *testing.T) {
	const region, akid, secret = "eu-west-1", "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
	for _, gen := range []string{"5.26", "5.27", "5.28"} {
		t.Run(gen, func(t *testing.T) {
			o, err := parseFlags([]string{"--cosmian-version", gen, "--key", "k1", "--seed-keys", "2",
				"--xks-region", region, "--xks-access-key-id", akid, "--xks-secret-access-key", secret}, func(string) string { return "" }, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			srv, err := buildServer(o, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			if gen != "5.26" {
				if got := srv.Access("key-000002")[cosmian.XKSServiceUser]; strings.Join(got, ",") != "decrypt,encrypt,getattributes" {
					t.Fatalf("[aws-xks-service] grants %v", got)
				}
			}
			run, err := srv.Start("127.0.0.1:0", true)
			if err != nil {
				t.Fatal(err)
			}
			defer run.Close()
			tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: run.CertPool}}
			defer tr.CloseIdleConnections()
			signer, err := sigv4.NewSigner(sigv4.SignerConfig{Credential: sigv4.Credential{AccessKeyID: akid, Secret: secret}, Region: region})
			if err != nil {
				t.Fatal(err)
			}
			c, err := xks.NewClient(xks.ClientConfig{BaseURL: run.URL + "/aws/kms/xks/v1", HTTP: &http.Client{Transport: tr}, Signer: signer, Timeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			md := xks.RequestMetadata{AWSPrincipalArn: "arn:aws:iam::123456789012:user/Alice", KMSKeyArn: "arn:aws:kms:eu-west-1:123456789012:key/x", KMSOperation: "Encrypt", KMSRequestID: "r1"}
			for _, id := range []string{"k1", "key-000001", "key-000002"} {
				pt := []byte("seeded keys serve at once")
				enc, err := c.Encrypt(context.Background(), id, &xks.EncryptRequest{RequestMetadata: md, Plaintext: pt, EncryptionAlgorithm: xks.AlgorithmAESGCM})
				if err != nil {
					t.Fatalf("%s: encrypt: %v", id, err)
				}
				md.KMSOperation = "Decrypt"
				dec, err := c.Decrypt(context.Background(), id, &xks.DecryptRequest{RequestMetadata: md, Ciphertext: enc.Ciphertext, EncryptionAlgorithm: xks.AlgorithmAESGCM,
					InitializationVector: enc.InitializationVector, AuthenticationTag: enc.AuthenticationTag, CiphertextMetadata: enc.CiphertextMetadata})
				md.KMSOperation = "Encrypt"
				if err != nil || !bytes.Equal(dec.Plaintext, pt) {
					t.Fatalf("%s: decrypt: %v", id, err)
				}
			}
		})
	}
}
