package sigv4

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/textproto"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

const suiteDir = "testdata/aws-sig-v4-test-suite/v4"

// suiteExpectedFailures are the AWS suite cases that cannot verify by design, with the reason.
// Each is asserted to FAIL with the given reason.
//
// All six sign the dot-segment/duplicate-slash-normalised form of a path that is sent
// unnormalised ("normalize": true). The verifier authenticates the path exactly as received,
// because that is the path that gets routed: accepting a signature over a different (cleaned)
// path would let the authenticated and the executed path differ. XKS paths never contain dot
// segments or empty segments, and the matching "-unnormalized" cases (same request line, path
// signed as sent) all verify.
var suiteExpectedFailures = map[string]string{
	"get-relative-normalized":            ReasonBadSignature,
	"get-relative-relative-normalized":   ReasonBadSignature,
	"get-slash-dot-slash-normalized":     ReasonBadSignature,
	"get-slash-normalized":               ReasonBadSignature,
	"get-slash-pointless-dot-normalized": ReasonBadSignature,
	"get-slashes-normalized":             ReasonBadSignature,
}

type suiteContext struct {
	Credentials struct {
		AccessKeyID     string `json:"access_key_id"`
		SecretAccessKey string `json:"secret_access_key"`
		Token           string `json:"token"`
	} `json:"credentials"`
	Normalize bool      `json:"normalize"`
	Region    string    `json:"region"`
	Service   string    `json:"service"`
	SignBody  bool      `json:"sign_body"`
	Timestamp time.Time `json:"timestamp"`
}

type suiteCase struct {
	name      string
	ctx       suiteContext
	signedReq []byte
	canonical string
	sts       string
}

func loadSuite(t testing.TB) []suiteCase {
	t.Helper()
	dirs, err := os.ReadDir(suiteDir)
	if err != nil {
		t.Fatal(err)
	}
	var cases []suiteCase
	for _, d := range dirs {
		if !d.IsDir() {
			continue
		}
		read := func(f string) []byte {
			b, err := os.ReadFile(filepath.Join(suiteDir, d.Name(), f))
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
		c := suiteCase{
			name:      d.Name(),
			signedReq: read("header-signed-request.txt"),
			canonical: string(read("header-canonical-request.txt")),
			sts:       string(read("header-string-to-sign.txt")),
		}
		if err := json.Unmarshal(read("context.json"), &c.ctx); err != nil {
			t.Fatalf("%s: %v", d.Name(), err)
		}
		cases = append(cases, c)
	}
	if len(cases) < 38 {
		t.Fatalf("found %d suite cases, want 38", len(cases))
	}
	return cases
}

// parseSuiteRequest turns a suite request file into the *http.Request a Go server would hand
// to a handler: Host moved to r.Host, header keys canonicalised, values trimmed, obs-fold
// continuation lines joined with a space. The request target is kept as written (the suite's
// "/example space/" cannot pass a Go server's request-line parser; it stands for the raw path).
func parseSuiteRequest(t testing.TB, raw []byte) (*http.Request, []byte) {
	t.Helper()
	head, body, _ := bytes.Cut(raw, []byte("\n\n"))
	lines := strings.Split(string(head), "\n")
	first := lines[0]
	sp1, sp2 := strings.IndexByte(first, ' '), strings.LastIndexByte(first, ' ')
	if sp1 < 0 || sp2 <= sp1 {
		t.Fatalf("bad request line %q", first)
	}
	method, target := first[:sp1], first[sp1+1:sp2]
	path, query, _ := strings.Cut(target, "?")
	u, err := url.ParseRequestURI(target)
	if err != nil || u.Path == "" {
		u = &url.URL{Path: path, RawPath: path, RawQuery: query}
	}
	if wirePath(u) != path {
		u.Path, u.RawPath = path, path
	}
	r := &http.Request{Method: method, URL: u, Header: http.Header{}, RequestURI: target, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1}
	var lastKey string
	for _, l := range lines[1:] {
		if l != "" && (l[0] == ' ' || l[0] == '\t') {
			vs := r.Header[lastKey]
			vs[len(vs)-1] += " " + l
			continue
		}
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			t.Fatalf("bad header line %q", l)
		}
		lastKey = textproto.CanonicalMIMEHeaderKey(k)
		r.Header[lastKey] = append(r.Header[lastKey], trimOWS(v))
	}
	if h := r.Header["Host"]; len(h) > 0 {
		r.Host = h[0]
		delete(r.Header, "Host")
	}
	if cl := r.Header.Get("Content-Length"); cl != "" {
		r.ContentLength, _ = strconv.ParseInt(cl, 10, 64)
	}
	return r, body
}

func suiteVerifier(t testing.TB, c suiteContext) *Verifier {
	t.Helper()
	v, err := newVerifier(VerifierConfig{
		Region:      c.Region,
		Service:     c.Service,
		Now:         func() time.Time { return c.Timestamp },
		Credentials: []Credential{{AccessKeyID: c.Credentials.AccessKeyID, Secret: c.Credentials.SecretAccessKey}},
	}, true) // AKIDEXAMPLE is shorter than Credential.Validate's 16-character minimum
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func reasonOf(err error) string {
	var ae *AuthError
	if errors.As(err, &ae) {
		return ae.Reason
	}
	return ""
}

func TestAWSSuiteVerify(t *testing.T) {
	seen := map[string]bool{}
	for _, c := range loadSuite(t) {
		t.Run(c.name, func(t *testing.T) {
			r, body := parseSuiteRequest(t, c.signedReq)
			v := suiteVerifier(t, c.ctx)
			id, err := v.Verify(r, body)
			if want, bad := suiteExpectedFailures[c.name]; bad {
				seen[c.name] = true
				if err == nil || reasonOf(err) != want {
					t.Fatalf("expected failure %s by design, got id=%q err=%v", want, id, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if id != c.ctx.Credentials.AccessKeyID {
				t.Fatalf("id = %q", id)
			}
		})
	}
	for name := range suiteExpectedFailures {
		if !seen[name] {
			t.Errorf("expected-failure case %s not found in the suite", name)
		}
	}
}

// TestAWSSuiteCanonical compares our canonical request and string to sign with the suite's.
func TestAWSSuiteCanonical(t *testing.T) {
	for _, c := range loadSuite(t) {
		t.Run(c.name, func(t *testing.T) {
			r, body := parseSuiteRequest(t, c.signedReq)
			a, err := ParseAuthorization(r.Header.Get("Authorization"))
			if err != nil {
				t.Fatal(err)
			}
			ph := sha256Hex(body)
			cr, e := appendCanonicalRequest(nil, r, &a, []byte(ph))
			if e != nil {
				t.Fatal(e)
			}
			sts := appendStringToSign(nil, r.Header.Get("X-Amz-Date"), a.Scope, cr)
			if _, bad := suiteExpectedFailures[c.name]; bad {
				// Only the canonical URI may differ: we keep the path as sent.
				got, want := strings.Split(string(cr), "\n"), strings.Split(c.canonical, "\n")
				if got[1] == want[1] {
					t.Fatalf("canonical URI %q unexpectedly equals the normalised one", got[1])
				}
				got[1], want[1] = "", ""
				if strings.Join(got, "\n") != strings.Join(want, "\n") {
					t.Fatalf("canonical request differs beyond the URI:\n got %q\nwant %q", cr, c.canonical)
				}
				return
			}
			if string(cr) != c.canonical {
				t.Fatalf("canonical request:\n got %q\nwant %q", cr, c.canonical)
			}
			if string(sts) != c.sts {
				t.Fatalf("string to sign:\n got %q\nwant %q", sts, c.sts)
			}
		})
	}
}

// TestAWSSuiteMutations changes each signed element of every verifying case, one at a time.
func TestAWSSuiteMutations(t *testing.T) {
	for _, c := range loadSuite(t) {
		if _, bad := suiteExpectedFailures[c.name]; bad {
			continue
		}
		t.Run(c.name, func(t *testing.T) {
			v := suiteVerifier(t, c.ctx)
			fresh := func() (*http.Request, []byte) { return parseSuiteRequest(t, c.signedReq) }
			base, _ := fresh()
			a, err := ParseAuthorization(base.Header.Get("Authorization"))
			if err != nil {
				t.Fatal(err)
			}
			type mutation struct {
				name   string
				mutate func(r *http.Request, body []byte) []byte
				want   string // "" = must still verify
			}
			setAuth := func(r *http.Request, old, new string) {
				h := r.Header.Get("Authorization")
				if !strings.Contains(h, old) {
					t.Fatalf("%q not in %q", old, h)
				}
				r.Header.Set("Authorization", strings.Replace(h, old, new, 1))
			}
			scopeOld := "Credential=" + a.AccessKeyID + "/" + a.Scope
			scopeWith := func(i int, val string) string {
				parts := append([]string{a.AccessKeyID}, strings.Split(a.Scope, "/")...)
				parts[i] = val
				return "Credential=" + strings.Join(parts, "/")
			}
			ms := []mutation{
				{"unsigned header added", func(r *http.Request, b []byte) []byte { r.Header.Set("X-Unsigned", "x"); return b }, ""},
				{"method", func(r *http.Request, b []byte) []byte {
					r.Method = map[bool]string{true: "PUT", false: "POST"}[r.Method == "POST"]
					return b
				}, ReasonBadSignature},
				{"path", func(r *http.Request, b []byte) []byte {
					p := wirePath(r.URL) + "x"
					r.URL.Path, r.URL.RawPath = p, p
					return b
				}, ReasonBadSignature},
				{"query", func(r *http.Request, b []byte) []byte { r.URL.RawQuery += "&extra=1"; return b }, ReasonBadSignature},
				{"body", func(r *http.Request, b []byte) []byte {
					if len(b) == 0 {
						return []byte("x")
					}
					nb := bytes.Clone(b)
					nb[len(nb)/2] ^= 1
					return nb
				}, ReasonBadSignature},
				{"host value", func(r *http.Request, b []byte) []byte { r.Host += "x"; return b }, ReasonBadSignature},
				{"host absent", func(r *http.Request, b []byte) []byte { r.Host = ""; return b }, ReasonSignedHeaderMissing},
				{"x-amz-date second", func(r *http.Request, b []byte) []byte {
					r.Header.Set("X-Amz-Date", c.ctx.Timestamp.Add(time.Second).UTC().Format(amzDateLayout))
					return b
				}, ReasonBadSignature},
				{"x-amz-date day", func(r *http.Request, b []byte) []byte {
					r.Header.Set("X-Amz-Date", c.ctx.Timestamp.Add(24*time.Hour).UTC().Format(amzDateLayout))
					return b
				}, ReasonDateScopeMismatch},
				{"x-amz-date format", func(r *http.Request, b []byte) []byte {
					r.Header.Set("X-Amz-Date", c.ctx.Timestamp.Format(time.RFC1123))
					return b
				}, ReasonBadDate},
				{"x-amz-date absent", func(r *http.Request, b []byte) []byte { r.Header.Del("X-Amz-Date"); return b }, ReasonMissingDate},
				{"algorithm", func(r *http.Request, b []byte) []byte { setAuth(r, "AWS4-HMAC-SHA256", "AWS4-HMAC-SHA512"); return b }, ReasonUnsupportedAlgorithm},
				{"scope access key", func(r *http.Request, b []byte) []byte {
					setAuth(r, scopeOld, scopeWith(0, a.AccessKeyID+"X"))
					return b
				}, ReasonUnknownAccessKey},
				{"scope date", func(r *http.Request, b []byte) []byte {
					setAuth(r, scopeOld, scopeWith(1, c.ctx.Timestamp.Add(-24*time.Hour).Format("20060102")))
					return b
				}, ReasonDateScopeMismatch},
				{"scope date format", func(r *http.Request, b []byte) []byte { setAuth(r, scopeOld, scopeWith(1, "20151330")); return b }, ReasonBadScope},
				{"scope region", func(r *http.Request, b []byte) []byte { setAuth(r, scopeOld, scopeWith(2, a.Region+"x")); return b }, ReasonWrongRegion},
				{"scope service", func(r *http.Request, b []byte) []byte { setAuth(r, scopeOld, scopeWith(3, a.Service+"x")); return b }, ReasonWrongService},
				{"scope terminator", func(r *http.Request, b []byte) []byte { setAuth(r, scopeOld, scopeWith(4, "aws4_requesx")); return b }, ReasonBadScope},
				{"signature", func(r *http.Request, b []byte) []byte {
					h := r.Header.Get("Authorization")
					i := strings.Index(h, "Signature=") + len("Signature=") + 7
					c := byte('0')
					if h[i] == '0' {
						c = '1'
					}
					r.Header.Set("Authorization", h[:i]+string(c)+h[i+1:])
					return b
				}, ReasonBadSignature},
				{"signed headers dropped entry", func(r *http.Request, b []byte) []byte {
					hs := a.Headers()
					var keep []string
					dropped := false
					for _, h := range hs {
						if !dropped && h != "host" && h != "x-amz-date" {
							dropped = true
							continue
						}
						keep = append(keep, h)
					}
					if len(keep) == len(hs) { // only host;x-amz-date: drop x-amz-date instead
						setAuth(r, "SignedHeaders="+a.SignedHeaders, "SignedHeaders=host")
						return b
					}
					setAuth(r, "SignedHeaders="+a.SignedHeaders, "SignedHeaders="+strings.Join(keep, ";"))
					return b
				}, ""}, // want set below
				{"authorization absent", func(r *http.Request, b []byte) []byte { r.Header.Del("Authorization"); return b }, ReasonMissingAuthorization},
			}
			// Dropping x-amz-date is host_not_signed; dropping another entry breaks the signature.
			if len(a.Headers()) == 2 {
				ms[len(ms)-2].want = ReasonHostNotSigned
			} else {
				ms[len(ms)-2].want = ReasonBadSignature
			}
			// Every signed header other than host and x-amz-date: change its value, then drop it.
			for _, h := range a.Headers() {
				if h == "host" || h == "x-amz-date" {
					continue
				}
				key := textproto.CanonicalMIMEHeaderKey(h)
				ms = append(ms,
					mutation{"value of " + h, func(r *http.Request, b []byte) []byte {
						vs := r.Header[key]
						vs[0] += "x"
						return b
					}, ReasonBadSignature},
					mutation{"absent " + h, func(r *http.Request, b []byte) []byte { delete(r.Header, key); return b }, ReasonSignedHeaderMissing},
				)
				if len(base.Header[key]) > 1 {
					ms = append(ms, mutation{"value order of " + h, func(r *http.Request, b []byte) []byte {
						vs := r.Header[key]
						vs[0], vs[len(vs)-1] = vs[len(vs)-1], vs[0]
						return b
					}, ReasonBadSignature})
				}
			}
			for _, m := range ms {
				t.Run(m.name, func(t *testing.T) {
					r, body := fresh()
					body = m.mutate(r, body)
					id, err := v.Verify(r, body)
					if m.want == "" {
						if err != nil {
							t.Fatalf("want success, got %v", err)
						}
						return
					}
					if err == nil {
						t.Fatalf("want %s, verified as %q", m.want, id)
					}
					if !errors.Is(err, ErrAuth) || reasonOf(err) != m.want {
						t.Fatalf("want reason %s, got %v", m.want, err)
					}
				})
			}
		})
	}
}
