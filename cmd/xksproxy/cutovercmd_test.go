package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/pem"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/internal/testpki"
)

// TestAdminServerName: an https admin API reached at an address its certificate does not name
// (127.0.0.1 inside a pod whose admin listener has the XKS certificate) verifies with
// --admin-server-name, and only with it.
func TestAdminServerName(t *testing.T) {
	ca := testpki.NewCA(t, "admin CA", time.Now().Add(time.Hour))
	certPEM, keyPEM := ca.Leaf(t, 0, time.Now().Add(time.Hour), "xks.example.com")
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"state":"serving","epoch":7}`))
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes are the point
	srv.StartTLS()
	defer srv.Close()
	caFile := writeTemp(t, "ca.pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw})))
	t.Setenv("XKSPROXY_ADMIN_TOKEN", "operator-token-operator-token-operator")
	t.Setenv("XKSPROXY_ADMIN_SERVER_NAME", "")
	for _, tc := range []struct {
		name  string
		extra []string
		code  int
		want  string
	}{
		{"the certificate's name", []string{"--admin-server-name", "xks.example.com"}, 0, `"epoch": 7`},
		{"no name: the address is checked", nil, 1, "cannot validate certificate for 127.0.0.1"},
		{"another name", []string{"--admin-server-name", "evil.example.com"}, 1, "not evil.example.com"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			args := append([]string{"cutover", "status", "--json", "--admin", srv.URL, "--admin-ca", caFile}, tc.extra...)
			code := run(context.Background(), args, &out, &errb)
			if code != tc.code || !strings.Contains(out.String()+errb.String(), tc.want) {
				t.Fatalf("exit %d, stdout %q, stderr %q; want %d with %q", code, out.String(), errb.String(), tc.code, tc.want)
			}
		})
	}
}
