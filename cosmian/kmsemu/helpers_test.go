package kmsemu

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/xksproxy/xksproxy/cosmian/ttlv"
)

// Test identities: two bearer tokens, as the vector manifests' owner and user certificates.
const (
	ownerUser  = "owner.client@acme.com"
	userUser   = "user.client@acme.com"
	ownerToken = "owner-token-0123456789"
	userToken  = "user-token-0123456789"
	testAKID   = "AKIAIOSFODNN7EXAMPLE" // testdata/aws_xks/aws_xks.toml
	testSecret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
	testRegion = "us-east-1"
	testARN    = "arn:aws:iam::123456789012:user/Alice"
)

type env struct {
	t   *testing.T
	s   *Server
	url string
	c   *http.Client
}

func newEnv(t *testing.T, cfg Config) *env {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	return &env{t: t, s: s, url: ts.URL, c: ts.Client()}
}

// authEnv has owner and user tokens and XKS enabled.
func authEnv(t *testing.T, acl Generation) *env {
	return newEnv(t, Config{
		Tokens:         map[string]string{ownerToken: ownerUser, userToken: userUser},
		XKS:            &XKSConfig{Region: testRegion, AccessKeyID: testAKID, SecretAccessKey: testSecret},
		CosmianVersion: acl,
	})
}

type reply struct {
	status int
	ctype  string
	body   []byte
}

func (r reply) String() string { return string(r.body) }

func (e *env) do(method, path, token, ctype string, body []byte) reply {
	e.t.Helper()
	req, err := http.NewRequest(method, e.url+path, bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	return e.send(req)
}

func (e *env) send(req *http.Request) reply {
	e.t.Helper()
	resp, err := e.c.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return reply{status: resp.StatusCode, ctype: resp.Header.Get("Content-Type"), body: b}
}

func (e *env) kmip(token string, body []byte) reply {
	e.t.Helper()
	return e.do(http.MethodPost, "/kmip/2_1", token, "application/json", body)
}

// kmipOK posts a TTLV node and decodes a 200 reply.
func (e *env) kmipOK(token string, n ttlv.Node) ttlv.Node {
	e.t.Helper()
	b, err := ttlv.Marshal(n)
	if err != nil {
		e.t.Fatal(err)
	}
	r := e.kmip(token, b)
	if r.status != http.StatusOK {
		e.t.Fatalf("%s: status %d: %s", n.Tag, r.status, r.body)
	}
	out, err := ttlv.Unmarshal(r.body)
	if err != nil {
		e.t.Fatalf("%s: reply is not JSON TTLV: %v: %s", n.Tag, err, r.body)
	}
	return out
}

// kmipErr posts a TTLV node and expects a bare error reply.
func (e *env) kmipFail(token string, n ttlv.Node, status int, text string) {
	e.t.Helper()
	b, err := ttlv.Marshal(n)
	if err != nil {
		e.t.Fatal(err)
	}
	r := e.kmip(token, b)
	if r.status != status || r.ctype != "text/html; charset=utf-8" || !strings.Contains(string(r.body), text) {
		e.t.Fatalf("%s: got %d %q %q, want %d text/html containing %q", n.Tag, r.status, r.ctype, r.body, status, text)
	}
}

func uidNode(uid string) ttlv.Node { return ttlv.Text("UniqueIdentifier", uid) }

func createReq(uid string, mask int32, act *time.Time, tags ...string) ttlv.Node {
	attrs := []ttlv.Node{
		ttlv.Enum("CryptographicAlgorithm", "AES"),
		ttlv.Int("CryptographicLength", 256),
		ttlv.Int("CryptographicUsageMask", mask),
	}
	if act != nil {
		attrs = append(attrs, ttlv.Date("ActivationDate", *act))
	}
	if uid != "" {
		attrs = append(attrs, uidNode(uid))
	}
	if tags != nil {
		b, _ := json.Marshal(tags)
		attrs = append(attrs, ttlv.Struct("Attribute", ttlv.Text("VendorIdentification", "cosmian"),
			ttlv.Text("AttributeName", "tag"), ttlv.Text("AttributeValue", string(b))))
	}
	return ttlv.Struct("Create", ttlv.Enum("ObjectType", "SymmetricKey"), ttlv.Struct("Attributes", attrs...))
}

func encryptReq(uid string, data []byte) ttlv.Node {
	return ttlv.Struct("Encrypt", uidNode(uid), ttlv.Bytes("Data", data))
}

func child(t *testing.T, n ttlv.Node, path ...string) ttlv.Node {
	t.Helper()
	c, ok := n.Path(path...)
	if !ok {
		t.Fatalf("no %v in %v", path, n)
	}
	return c
}

func readTestdata(t *testing.T, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", filepath.FromSlash(rel)))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// ---- XKS helpers ----

type signStyle int

const (
	signAWSKMS signStyle = iota // host;x-amz-date (Content-Type added after signing)
	signCurl                    // content-type;host;x-amz-date
)

// xksRequest builds a signed XKS request with the aws-sdk-go-v2 v4 signer.
func (e *env) xksRequest(path string, body []byte, style signStyle, at time.Time) *http.Request {
	e.t.Helper()
	return e.xksRequestMethod(http.MethodPost, path, body, style, at)
}

func (e *env) xksRequestMethod(method, path string, body []byte, style signStyle, at time.Time) *http.Request {
	e.t.Helper()
	req, err := http.NewRequest(method, e.url+path, bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if style == signCurl {
		req.Header.Set("Content-Type", "application/json")
	}
	sum := sha256.Sum256(body)
	creds := aws.Credentials{AccessKeyID: testAKID, SecretAccessKey: testSecret}
	// Neither AWS KMS nor curl signs Content-Length; hide it from the SDK signer.
	n := req.ContentLength
	req.ContentLength = 0
	if err := v4.NewSigner().SignHTTP(context.Background(), creds, req, hex.EncodeToString(sum[:]), "kms-xks-proxy", testRegion, at); err != nil {
		e.t.Fatal(err)
	}
	req.ContentLength = n
	if style == signAWSKMS {
		req.Header.Set("Content-Type", "application/json")
	}
	return req
}

func (e *env) xks(path string, body any) reply {
	e.t.Helper()
	b, ok := body.([]byte)
	if !ok {
		var err error
		if b, err = json.Marshal(body); err != nil {
			e.t.Fatal(err)
		}
	}
	return e.send(e.xksRequest(path, b, signAWSKMS, time.Now()))
}

func meta(op string) map[string]any {
	return map[string]any{"awsPrincipalArn": testARN, "kmsKeyArn": "arn:aws:kms:us-east-1:123456789012:key/k",
		"kmsOperation": op, "kmsRequestId": "4112f4d6-db54-4af4-ae30-c55a22a8dfae"}
}

func xksErrorOf(t *testing.T, r reply) (string, string) {
	t.Helper()
	var x struct {
		ErrorName    string  `json:"errorName"`
		ErrorMessage *string `json:"errorMessage"`
	}
	if err := json.Unmarshal(r.body, &x); err != nil || r.ctype != "application/json" {
		t.Fatalf("not an XKS JSON error: %d %q %s", r.status, r.ctype, r.body)
	}
	if x.ErrorMessage == nil {
		return x.ErrorName, ""
	}
	return x.ErrorName, *x.ErrorMessage
}

func wantXKSError(t *testing.T, r reply, status int, name, msgPart string) {
	t.Helper()
	n, m := xksErrorOf(t, r)
	if r.status != status || n != name || !strings.Contains(m, msgPart) {
		t.Fatalf("got %d %s %q, want %d %s containing %q", r.status, n, m, status, name, msgPart)
	}
}
