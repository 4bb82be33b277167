package proxy

import (
	"crypto/tls"
	"io"
	"net/http"
	"testing"
)

// TestRepliesCarryContentLength: every XKS reply, small or large, over HTTP/1.1 or HTTP/2,
// carries a Content-Length equal to its body and is never chunked (writeJSON leaves small
// replies' Content-Length to net/http).
func TestRepliesCarryContentLength(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		e := newEnv(t, nil)
		if !h2 {
			tr := e.client.Transport.(*http.Transport)
			tr.ForceAttemptHTTP2 = false
			tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
		}
		for _, size := range []int{1, 32, 1400, 1500, 4300} {
			pt := make([]byte, size)
			for _, tc := range []struct {
				name string
				path string
				body func() []byte
			}{
				{"encrypt", keysPath + "k1/encrypt", func() []byte { return encBody(pt, nil) }},
				{"decrypt", keysPath + "k1/decrypt", func() []byte { return decBody(e.encrypt(t, "k1", pt, nil), nil) }},
				{"error", keysPath + "nope/encrypt", func() []byte { return encBody(pt, nil) }},
			} {
				resp, err := e.client.Do(e.request(t, http.MethodPost, tc.path, tc.body(), e.signer, styleKMS))
				if err != nil {
					t.Fatal(err)
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil {
					t.Fatal(err)
				}
				if resp.ContentLength != int64(len(b)) || len(resp.TransferEncoding) > 0 || len(b) == 0 {
					t.Errorf("h2=%v %s of %d bytes: %s, Content-Length %d, Transfer-Encoding %v, body of %d bytes",
						h2, tc.name, size, resp.Proto, resp.ContentLength, resp.TransferEncoding, len(b))
				}
			}
		}
	}
}
