package soak

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/xksproxy/xksproxy/bench/compare"
)

// etcdProc is the fleet's etcd: one `etcd` process (Debian's etcd-server package) on loopback,
// plain HTTP (loopback only), its own data directory; stopped and started again on the same
// ports and data for the etcd-stop fault.
type etcdProc struct {
	bin, dir, client, peer string
	log                    *os.File
	cmd                    *exec.Cmd
	exited                 chan struct{}
}

func newEtcd(dir string) (*etcdProc, error) {
	bin, err := exec.LookPath("etcd")
	if err != nil {
		return nil, errors.New("soak: --replicas > 1 needs the etcd binary on PATH (Debian package etcd-server; .ci/run installs it)")
	}
	e := &etcdProc{bin: bin, dir: filepath.Join(dir, "etcd")}
	if e.client, err = compare.FreePort(); err != nil {
		return nil, err
	}
	if e.peer, err = compare.FreePort(); err != nil {
		return nil, err
	}
	if e.log, err = os.OpenFile(filepath.Join(dir, "etcd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600); err != nil {
		return nil, err
	}
	return e, nil
}

func (e *etcdProc) endpoint() string { return "http://" + e.client }

// start runs etcd and waits (a minute at most) until it accepts connections.
func (e *etcdProc) start(ctx context.Context) error {
	peer := "http://" + e.peer
	cmd := exec.Command(e.bin, "--name", "soak", "--data-dir", e.dir,
		"--listen-client-urls", e.endpoint(), "--advertise-client-urls", e.endpoint(),
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "soak="+peer, "--initial-cluster-state", "new")
	cmd.Stdout, cmd.Stderr = e.log, e.log
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("soak: etcd: %w", err)
	}
	e.cmd, e.exited = cmd, make(chan struct{})
	go func(done chan struct{}) { _ = cmd.Wait(); close(done) }(e.exited)
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := waitListening(wctx, e.client, e.exited); err != nil {
		return fmt.Errorf("soak: etcd: %w (log: %s)", err, e.log.Name())
	}
	return nil
}

// stop ends etcd (SIGTERM, then SIGKILL after 10 s) and waits for it.
func (e *etcdProc) stop() {
	if e.cmd == nil {
		return
	}
	_ = e.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-e.exited:
	case <-time.After(10 * time.Second):
		_ = e.cmd.Process.Kill()
		<-e.exited
	}
	e.cmd = nil
}
