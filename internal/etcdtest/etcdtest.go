// Package etcdtest runs an embedded etcd (go.etcd.io/etcd/server/v3/embed) on loopback for
// tests, over real TLS from a test CA, and can stop and restart it on the same address and data
// directory to simulate an outage.
package etcdtest

import (
	"encoding/pem"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/xksproxy/xksproxy/internal/testpki"
)

// Server is one embedded etcd member.
type Server struct {
	// Endpoint is its client URL (https://127.0.0.1:port).
	Endpoint string
	// CAFile trusts its certificate.
	CAFile string

	t        testing.TB
	dir      string
	cert     string
	key      string
	peerPort int
	cliPort  int

	mu sync.Mutex
	e  *embed.Etcd
}

// Start starts an etcd on loopback over TLS; it is stopped when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	dir := t.TempDir()
	ca := testpki.NewCA(t, "etcdtest CA", time.Now().Add(24*time.Hour))
	s := &Server{t: t, dir: dir, cert: filepath.Join(dir, "etcd.crt"), key: filepath.Join(dir, "etcd.key"),
		CAFile: filepath.Join(dir, "ca.crt"), peerPort: FreePort(t), cliPort: FreePort(t)}
	ca.WriteLeaf(t, s.cert, s.key, 0, time.Now().Add(24*time.Hour), "127.0.0.1", "localhost")
	if err := os.WriteFile(s.CAFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	s.Endpoint = fmt.Sprintf("https://127.0.0.1:%d", s.cliPort)
	s.Restart()
	t.Cleanup(s.Stop)
	return s
}

// FreePort returns a loopback port that was free a moment ago.
func FreePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Restart starts the server again after Stop (same address, same data).
func (s *Server) Restart() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.e != nil {
		return
	}
	cfg := embed.NewConfig()
	cfg.Name = "etcdtest"
	cfg.Dir = filepath.Join(s.dir, "data")
	cfg.UnsafeNoFsync = true
	cfg.LogLevel = "error"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	// Fast elections and a 1 s minimum lease: outages and expiries take seconds, not tens.
	cfg.TickMs, cfg.ElectionMs = 50, 500
	peer := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", s.peerPort)}
	cli := url.URL{Scheme: "https", Host: fmt.Sprintf("127.0.0.1:%d", s.cliPort)}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{cli}, []url.URL{cli}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.ClientTLSInfo.CertFile, cfg.ClientTLSInfo.KeyFile = s.cert, s.key
	var e *embed.Etcd
	var err error
	// The port was free when chosen; after a Stop the kernel may hold it a moment.
	for range 50 {
		if e, err = embed.StartEtcd(cfg); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		s.t.Fatalf("etcdtest: start: %v", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(60 * time.Second):
		e.Close()
		s.t.Fatal("etcdtest: not ready after 60s")
	}
	s.e = e
}

// Stop stops the server (clients see it unreachable until Restart).
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.e == nil {
		return
	}
	s.e.Close()
	<-s.e.Server.StopNotify()
	s.e = nil
}
