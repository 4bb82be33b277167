package sigv4

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"sort"
	"strings"
	"time"
)

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// Test credentials in AWS's format (20 chars of A-Z2-7; 44-char base64 secret).
var (
	credA = Credential{AccessKeyID: "AKIAXKSPROXYTESTAAAA", Secret: "c2VjcmV0LWEtc2VjcmV0LWEtc2VjcmV0LWEtc2VjcmV0"}
	credB = Credential{AccessKeyID: "AKIAXKSPROXYTESTBBBB", Secret: "c2VjcmV0LWItc2VjcmV0LWItc2VjcmV0LWItc2VjcmV0"}
	credC = Credential{AccessKeyID: "AKIAXKSPROXYTESTCCCC", Secret: "c2VjcmV0LWMtc2VjcmV0LWMtc2VjcmV0LWMtc2VjcmV0"}
)

var testTime = time.Date(2026, 3, 14, 15, 9, 26, 0, time.UTC)

func fixedClock(t time.Time) func() time.Time { return func() time.Time { return t } }

// refSign is an independent, deliberately plain SigV4 header signer used to produce requests
// the way curl and KMS do. It signs the listed header names (lowercase) with the values
// currently on r (host from r.Host) and sets X-Amz-Date and Authorization.
func refSign(r *http.Request, body []byte, c Credential, region, service string, at time.Time, names ...string) {
	amzDate := at.UTC().Format("20060102T150405Z")
	r.Header.Set("X-Amz-Date", amzDate)
	names = append(names, "host", "x-amz-date")
	sort.Strings(names)
	var ch strings.Builder
	for _, n := range names {
		var v string
		if n == "host" {
			v = r.Host
		} else {
			v = strings.Join(r.Header.Values(n), ",")
		}
		ch.WriteString(n + ":" + strings.Join(strings.Fields(v), " ") + "\n")
	}
	signed := strings.Join(names, ";")
	canonical := strings.Join([]string{r.Method, r.URL.EscapedPath(), "", ch.String(), signed, sha256Hex(body)}, "\n")
	scope := amzDate[:8] + "/" + region + "/" + service + "/aws4_request"
	sts := "AWS4-HMAC-SHA256\n" + amzDate + "\n" + scope + "\n" + sha256Hex([]byte(canonical))
	mac := func(k []byte, s string) []byte { h := hmac.New(sha256.New, k); h.Write([]byte(s)); return h.Sum(nil) }
	k := mac(mac(mac(mac([]byte("AWS4"+c.Secret), amzDate[:8]), region), service), "aws4_request")
	r.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential="+c.AccessKeyID+"/"+scope+", SignedHeaders="+signed+", Signature="+hex.EncodeToString(mac(k, sts)))
}
