// Package etcdproc runs a real etcd server process (the `etcd` binary of Debian's etcd-server
// package, which .ci/run installs) on loopback for tests: its own data directory, TLS for
// clients from a test CA, and Kill/Restart on the same ports and data to simulate a crash.
// It has the same shape as internal/etcdtest (embedded etcd), so a scenario can run on both.
package etcdproc

import (
	"context"
	"crypto/tls"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/internal/etcdtest"
	"github.com/xksproxy/xksproxy/internal/testpki"
)

// Server is one etcd process.
type Server struct {
	// Endpoint is its client URL (https://127.0.0.1:port).
	Endpoint string
	// CAFile trusts its certificate.
	CAFile string
	// Version is what `etcd --version` printed first ("etcd Version: 3.4.23").
	Version string

	t        testing.TB
	bin      string
	dir      string
	cert     string
	key      string
	cliPort  int
	peerPort int
	client   *http.Client

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	log  *os.File
}

// Binary returns the etcd binary's path, or fails the test saying what to install.
func Binary(t testing.TB) string {
	t.Helper()
	bin, err := exec.LookPath("etcd")
	if err != nil {
		t.Fatalf("etcd not found on PATH: install the Debian package \"etcd-server\" (apt-get install -y etcd-server; .ci/run installs it without starting its service)")
	}
	return bin
}

// Start runs etcd and waits until it answers; it is killed when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	bin := Binary(t)
	dir := t.TempDir()
	ca := testpki.NewCA(t, "etcdproc CA", time.Now().Add(24*time.Hour))
	s := &Server{t: t, bin: bin, dir: dir, cert: filepath.Join(dir, "etcd.crt"), key: filepath.Join(dir, "etcd.key"),
		CAFile: filepath.Join(dir, "ca.crt"), cliPort: etcdtest.FreePort(t), peerPort: etcdtest.FreePort(t)}
	ca.WriteLeaf(t, s.cert, s.key, 0, time.Now().Add(24*time.Hour), "127.0.0.1", "localhost")
	if err := os.WriteFile(s.CAFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	s.client = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool}}}
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		t.Fatalf("etcd --version: %v", err)
	}
	s.Version, _, _ = strings.Cut(strings.TrimSpace(string(out)), "\n")
	s.Endpoint = fmt.Sprintf("https://127.0.0.1:%d", s.cliPort)
	s.Restart()
	t.Cleanup(s.Kill)
	return s
}

// Restart starts the process again after Kill (same ports, same data), and waits until it
// serves.
func (s *Server) Restart() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return
	}
	peer := fmt.Sprintf("http://127.0.0.1:%d", s.peerPort)
	args := []string{
		"--name", "etcdproc",
		"--data-dir", filepath.Join(s.dir, "data"),
		"--listen-client-urls", s.Endpoint, "--advertise-client-urls", s.Endpoint,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "etcdproc=" + peer, "--initial-cluster-state", "new",
		"--cert-file", s.cert, "--key-file", s.key,
		// Fast elections and a 1 s minimum lease: outages and expiries take seconds.
		"--heartbeat-interval", "50", "--election-timeout", "500",
		"--logger", "zap", "--log-level", "error",
	}
	logf, err := os.OpenFile(filepath.Join(s.dir, "etcd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		s.t.Fatal(err)
	}
	for attempt := 0; ; attempt++ {
		cmd := exec.Command(s.bin, args...)
		cmd.Stdout, cmd.Stderr = logf, logf
		// Its own process group: the kill reaches etcd and nothing else.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			logf.Close()
			s.t.Fatalf("etcdproc: start %s: %v", s.bin, err)
		}
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		err := s.waitHealthy(done)
		if err == nil {
			s.cmd, s.done, s.log = cmd, done, logf
			return
		}
		_ = cmd.Process.Kill()
		<-done
		// A port held a moment after a kill makes etcd exit at once: try again, briefly.
		if attempt >= 20 {
			logf.Close()
			s.t.Fatalf("etcdproc: %v; log:\n%s", err, s.tail())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitHealthy polls GET /health until etcd says true, the process exits, or 60 s pass.
func (s *Server) waitHealthy(exited <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.Endpoint+"/health", nil)
		if resp, err := s.client.Do(req); err == nil {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && strings.Contains(string(b), `"health":"true"`) {
				return nil
			}
		}
		select {
		case <-exited:
			return fmt.Errorf("etcd exited during start-up")
		case <-ctx.Done():
			return fmt.Errorf("etcd not healthy after 60s")
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Kill stops the process with SIGKILL, as a crash would (clients see it unreachable until
// Restart). Safe to call twice.
func (s *Server) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	<-s.done
	s.log.Close()
	s.cmd, s.done, s.log = nil, nil, nil
}

// tail returns the end of the process log, for a failure message.
func (s *Server) tail() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "etcd.log"))
	if len(b) > 4096 {
		b = b[len(b)-4096:]
	}
	return string(b)
}
