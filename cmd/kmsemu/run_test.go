package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
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
			if o.listen != "127.0.0.1:9998" || o.defaultUser != "admin" || o.version != "xks-service" || o.region != "" {
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
