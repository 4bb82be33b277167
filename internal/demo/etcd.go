package demo

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// embeddedEtcd is the demo's fleet store: one etcd member in this process, on loopback ports,
// with its data in a temporary directory removed at Close. Plain HTTP: it never leaves
// 127.0.0.1 (production etcd uses TLS, see deploy/kubernetes/fleet/etcd.yaml).
type embeddedEtcd struct {
	URL string
	e   *embed.Etcd
	dir string
}

func startEtcd() (*embeddedEtcd, error) {
	dir, err := os.MkdirTemp("", "xksproxy-demo-etcd-")
	if err != nil {
		return nil, err
	}
	ports, err := freePorts(2)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	cfg := embed.NewConfig()
	cfg.Name = "demo"
	cfg.Dir = filepath.Join(dir, "data")
	cfg.UnsafeNoFsync = true // throwaway data
	cfg.LogLevel = "error"
	// Silent: its only errors in a run were the listeners' "server closed" at shutdown, printed
	// after the report; a store that fails shows as the fleet's own "store unreachable".
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	// Fast elections and a 1 s minimum lease: a dead driver is replaced in seconds.
	cfg.TickMs, cfg.ElectionMs = 50, 500
	peer := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", ports[0])}
	cli := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", ports[1])}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{cli}, []url.URL{cli}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("demo: embedded etcd: %w", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(60 * time.Second):
		e.Close()
		os.RemoveAll(dir)
		return nil, errors.New("demo: embedded etcd not ready after 60s")
	}
	return &embeddedEtcd{URL: cli.String(), e: e, dir: dir}, nil
}

func (s *embeddedEtcd) Close() {
	s.e.Close()
	<-s.e.Server.StopNotify()
	os.RemoveAll(s.dir)
}

// freePorts returns n loopback ports free a moment ago.
func freePorts(n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
