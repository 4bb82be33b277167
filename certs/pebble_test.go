package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/internal/testpki"
)

// pebble is a running Debian pebble ACME test server on loopback.
type pebble struct {
	dirURL   string
	mgmtURL  string
	tlsPort  int // where pebble's VA sends TLS-ALPN-01 validations
	httpsCAs *x509.CertPool
	client   *http.Client
	cmd      *exec.Cmd
	exited   chan struct{}
}

// pebbleOpts tune a pebble instance.
type pebbleOpts struct {
	validity       time.Duration // certificateValidityPeriod
	alternateRoots int           // PEBBLE_ALTERNATE_ROOTS
}

// startPebble starts pebble with a temp config. A missing binary is a test
// failure, not a skip: CI installs it.
func startPebble(t *testing.T, o pebbleOpts) *pebble {
	t.Helper()
	bin, err := exec.LookPath("pebble")
	if err != nil {
		t.Fatalf("pebble (the ACME test server) is not installed: run `apt-get install -y pebble` (Debian package; .ci/run installs it): %v", err)
	}
	dir := t.TempDir()
	caPool, certFile, keyFile := writeServerCert(t, dir, "localhost", "127.0.0.1")
	ports := freePorts(t, 4)
	cfg := map[string]any{"pebble": map[string]any{
		"listenAddress":                  fmt.Sprintf("127.0.0.1:%d", ports[0]),
		"managementListenAddress":        fmt.Sprintf("127.0.0.1:%d", ports[1]),
		"certificate":                    certFile,
		"privateKey":                     keyFile,
		"httpPort":                       ports[2], // unused: HTTP-01 is disabled
		"tlsPort":                        ports[3],
		"ocspResponderURL":               "",
		"externalAccountBindingRequired": false,
		"certificateValidityPeriod":      uint64(o.validity / time.Second),
	}}
	b, _ := json.Marshal(cfg)
	cfgFile := filepath.Join(dir, "pebble-config.json")
	if err := os.WriteFile(cfgFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-config", cfgFile, "-strict=false")
	cmd.Env = append(os.Environ(),
		"PEBBLE_VA_NOSLEEP=1",
		"PEBBLE_WFE_NONCEREJECT=0",
		"PEBBLE_AUTHZREUSE=0", // every order is validated for real
		fmt.Sprintf("PEBBLE_ALTERNATE_ROOTS=%d", o.alternateRoots),
	)
	logf, err := os.Create(filepath.Join(dir, "pebble.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting pebble: %v", err)
	}
	p := &pebble{
		dirURL:   fmt.Sprintf("https://127.0.0.1:%d/dir", ports[0]),
		mgmtURL:  fmt.Sprintf("https://127.0.0.1:%d", ports[1]),
		tlsPort:  ports[3],
		httpsCAs: caPool,
		client: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: caPool},
		}},
		cmd:    cmd,
		exited: make(chan struct{}),
	}
	go func() { _ = cmd.Wait(); logf.Close(); close(p.exited) }()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			if b, err := os.ReadFile(filepath.Join(dir, "pebble.log")); err == nil {
				t.Logf("pebble log:\n%s", b)
			}
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := p.client.Get(p.dirURL)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		select {
		case <-p.exited:
			t.Fatalf("pebble exited at start (see log)")
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("pebble not ready at %s: %v", p.dirURL, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (p *pebble) stop() {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// root fetches issuing root i from the management interface (regenerated at
// every pebble start).
func (p *pebble) root(t *testing.T, i int) *x509.Certificate {
	t.Helper()
	resp, err := p.client.Get(fmt.Sprintf("%s/roots/%d", p.mgmtURL, i))
	if err != nil {
		t.Fatalf("pebble root %d: %v", i, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("pebble root %d: no PEM (status %d)", i, resp.StatusCode)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatalf("pebble root %d: %v", i, err)
	}
	return c
}

func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var lns []net.Listener
	var ports []int
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		ln.Close()
	}
	return ports
}

// writeServerCert makes a CA and a server certificate for hosts signed by
// it, writes the server pair into dir and returns the CA pool.
func writeServerCert(t *testing.T, dir string, hosts ...string) (*x509.CertPool, string, string) {
	t.Helper()
	ca := testpki.NewCA(t, "test CA", time.Now().Add(24*time.Hour))
	certFile, keyFile := filepath.Join(dir, "server.pem"), filepath.Join(dir, "server.key")
	ca.WriteLeaf(t, certFile, keyFile, 0, time.Now().Add(24*time.Hour), hosts...)
	return ca.Pool, certFile, keyFile
}

// serveTLS serves a tiny handler with cfg on 127.0.0.1:port (0: any).
func serveTLS(t *testing.T, cfg *tls.Config, port int) (addr string, stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") }),
		TLSConfig:         cfg,
		ReadHeaderTimeout: 5 * time.Second,
	}
	done := make(chan struct{})
	go func() { _ = srv.ServeTLS(ln, "", ""); close(done) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	}
	t.Cleanup(stop)
	return ln.Addr().String(), stop
}

// handshake dials addr, verifies the chain against roots for serverName and
// returns the peer chain.
func handshake(t *testing.T, addr, serverName string, roots *x509.CertPool) []*x509.Certificate {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{ServerName: serverName, RootCAs: roots, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatalf("handshake with %s: %v", addr, err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates
}

// keepAlive is one HTTP/1.1 connection reused for several requests.
type keepAlive struct {
	conn *tls.Conn
}

func dialKeepAlive(t *testing.T, addr, serverName string, roots *x509.CertPool) *keepAlive {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr,
		&tls.Config{ServerName: serverName, RootCAs: roots, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &keepAlive{conn: c}
}

func (k *keepAlive) get(t *testing.T) {
	t.Helper()
	_ = k.conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(k.conn, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"); err != nil {
		t.Fatalf("request on the established connection: %v", err)
	}
	buf := make([]byte, 512)
	n, err := k.conn.Read(buf)
	if err != nil {
		t.Fatalf("response on the established connection: %v", err)
	}
	if !strings.HasPrefix(string(buf[:n]), "HTTP/1.1 200") || !strings.HasSuffix(string(buf[:n]), "ok") {
		t.Fatalf("unexpected response on the established connection: %q", buf[:n])
	}
}
