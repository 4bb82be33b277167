// Package upgrade replaces the running xksproxy process with the binary at the same path without
// refusing a connection (SIGUSR2), and speaks to systemd.
//
// An upgrade (github.com/cloudflare/tableflip): the process starts the binary at its own path as
// a child that inherits every listening socket and one end of a socket pair, the handover. The
// child asks over it for the journal before it loads it: the parent stops its controller (its
// last progress written) and says so; the journal has one writer at a time. The child builds
// everything, listens on the inherited sockets and says it is ready; only then does the parent
// stop accepting and drain its connections (proxy/drain.go), telling the child meanwhile of the
// keys AWS created through it, and exit. The child runs its controller once the parent is gone,
// so that no route moves while two processes serve. A child that fails to start, or does not
// say it is ready in time, is killed and the parent takes the journal back and goes on serving.
//
// Under systemd (Type=notify, NotifyAccess=all) the process says READY=1 once it serves, the
// child names itself the main PID, and a reload says RELOADING=1 then READY=1. Sockets systemd
// opened (socket activation: deploy/systemd/xksproxy.socket) are taken for the listener
// configured on their address, so even `systemctl restart` refuses no connection: systemd holds
// the sockets while no process runs.
package upgrade

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cloudflare/tableflip"
	"github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"
)

// handoverName is the inherited file of the handover socket.
const handoverName = "xksproxy-handover"

// maxLine bounds one handover message (a key id is at most 512 bytes).
const maxLine = 4096

// Config configures an Upgrader.
type Config struct {
	// Timeout bounds the new process's start, up to its readiness (default 1m); it is killed
	// after that and this process goes on serving.
	Timeout time.Duration
	// PIDFile, when set, gets the PID of the process that serves (for a service manager that
	// follows a PID file rather than sd_notify).
	PIDFile string
	Logger  *slog.Logger
}

// Upgrader is the process's side of upgrades. Create it once, first thing: it takes what the
// parent passed (and systemd's sockets).
type Upgrader struct {
	cfg     Config
	log     *slog.Logger
	upg     *tableflip.Upgrader
	systemd []net.Listener // sockets systemd passed (socket activation), not taken yet
	parent  net.Conn       // the handover with the process this one replaces; nil for the first
	pr      *bufio.Reader
	gone    chan struct{} // the parent exited (closed at once for the first process)
	mu      sync.Mutex
	child   net.Conn // the handover with the process replacing this one, during an upgrade
}

// New takes the sockets and the handover the parent passed, if any, and systemd's sockets.
func New(cfg Config) (*Upgrader, error) {
	if cfg.Timeout <= 0 {
		cfg.Timeout = time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	upg, err := tableflip.New(tableflip.Options{UpgradeTimeout: cfg.Timeout, PIDFile: cfg.PIDFile})
	if err != nil {
		return nil, fmt.Errorf("upgrade: %w", err)
	}
	u := &Upgrader{cfg: cfg, log: cfg.Logger, upg: upg, gone: make(chan struct{})}
	if !upg.HasParent() {
		close(u.gone)
		lns, err := activation.Listeners()
		if err != nil {
			upg.Stop()
			return nil, fmt.Errorf("upgrade: sockets from systemd: %w", err)
		}
		for _, ln := range lns {
			if ln != nil {
				u.systemd = append(u.systemd, ln)
			}
		}
		return u, nil
	}
	f, err := upg.Fds.File(handoverName)
	if err != nil || f == nil {
		upg.Stop()
		return nil, fmt.Errorf("upgrade: started by an upgrade without its handover: %v", err)
	}
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		upg.Stop()
		return nil, fmt.Errorf("upgrade: handover: %w", err)
	}
	u.parent, u.pr = c, bufio.NewReaderSize(c, maxLine)
	go func() {
		_ = upg.WaitForParent(context.Background())
		close(u.gone)
	}()
	return u, nil
}

// HasParent reports whether this process replaces another one.
func (u *Upgrader) HasParent() bool { return u.parent != nil }

// Listen returns the listening socket for addr: the one the parent passed, else the one systemd
// passed on that address, else a new one. Each is passed on to the next process.
func (u *Upgrader) Listen(addr string) (net.Listener, error) {
	if ln, err := u.upg.Fds.Listener("tcp", addr); err != nil || ln != nil {
		return ln, err
	}
	for i, ln := range u.systemd {
		if !sameAddr(ln.Addr(), addr) {
			continue
		}
		u.systemd = append(u.systemd[:i], u.systemd[i+1:]...)
		tl, ok := ln.(tableflip.Listener)
		if !ok {
			return nil, fmt.Errorf("upgrade: systemd's socket on %s is not a TCP listener", addr)
		}
		if err := u.upg.Fds.AddListener("tcp", addr, tl); err != nil {
			return nil, err
		}
		u.log.Info("listening on the socket systemd passed", "addr", ln.Addr().String())
		return ln, nil
	}
	return u.upg.Fds.Listen("tcp", addr)
}

// sameAddr reports whether a bound socket is the one a configured host:port names (same port;
// same address, or both every address).
func sameAddr(a net.Addr, addr string) bool {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return false
	}
	want, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil || want.Port != ta.Port {
		return false
	}
	return want.IP.Equal(ta.IP) || (len(want.IP) == 0 || want.IP.IsUnspecified()) && ta.IP.IsUnspecified()
}

// Acquire asks the parent for the journal and waits until it stopped writing it (nothing to do
// for the first process).
func (u *Upgrader) Acquire(ctx context.Context) error {
	if u.parent == nil {
		return nil
	}
	if d, ok := ctx.Deadline(); ok {
		_ = u.parent.SetDeadline(d)
	} else {
		_ = u.parent.SetDeadline(time.Now().Add(u.cfg.Timeout))
	}
	defer u.parent.SetDeadline(time.Time{})
	if _, err := u.parent.Write([]byte("release\n")); err != nil {
		return fmt.Errorf("upgrade: asking the previous process for the journal: %w", err)
	}
	line, err := readLine(u.pr)
	if err != nil {
		return fmt.Errorf("upgrade: waiting for the previous process to release the journal: %w", err)
	}
	if line != "released" {
		return fmt.Errorf("upgrade: the previous process kept the journal: %s", strings.TrimPrefix(line, "refused "))
	}
	return nil
}

// Ready says this process serves: the parent stops accepting and drains, systemd learns the new
// main PID. created is called for each key the parent tells of until it has gone (a CreateKey
// it answered after it released the journal).
func (u *Upgrader) Ready(created func(keyID, backend string)) error {
	if err := u.upg.Ready(); err != nil {
		return fmt.Errorf("upgrade: %w", err)
	}
	state := "READY=1"
	if u.parent != nil {
		state = "MAINPID=" + strconv.Itoa(os.Getpid()) + "\n" + state
		go u.readNotes(created)
	}
	if _, err := daemon.SdNotify(false, state); err != nil {
		u.log.Warn("systemd notification failed", "err", err)
	}
	return nil
}

// readNotes takes the parent's created-key notes until the handover closes (the parent exited).
func (u *Upgrader) readNotes(created func(keyID, backend string)) {
	defer u.parent.Close()
	for {
		line, err := readLine(u.pr)
		if err != nil {
			return
		}
		if rest, ok := strings.CutPrefix(line, "created "); ok && created != nil {
			if id, backend, ok := strings.Cut(rest, " "); ok && id != "" && backend != "" {
				created(id, backend)
			}
		}
	}
}

// ParentGone is closed once the process this one replaced has exited (at once for the first).
func (u *Upgrader) ParentGone() <-chan struct{} { return u.gone }

// Exit is closed when the process that replaces this one is ready: stop accepting, drain, exit.
func (u *Upgrader) Exit() <-chan struct{} { return u.upg.Exit() }

// Stop gives up the sockets' hand-over (the process ends without a successor).
func (u *Upgrader) Stop() { u.upg.Stop() }

// Reloading and Reloaded frame a configuration reload for systemd.
func (u *Upgrader) Reloading() {
	_, _ = daemon.SdNotify(false, fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%d", monotonicUsec()))
}

// Reloaded: the reload ended (applied or refused); status is shown by systemctl status.
func (u *Upgrader) Reloaded(status string) {
	_, _ = daemon.SdNotify(false, "READY=1\nSTATUS="+strings.ReplaceAll(status, "\n", " "))
}

// Journal is what an upgrade asks of the running process: let go of the journal, take it back if
// the new process fails.
type Journal interface {
	// Release stops writing the journal; created, until Resume or the end, is to be called for
	// each key a CreateKey made through this process meanwhile.
	Release(created func(keyID, backend string)) error
	Resume() error
}

// Upgrade starts the binary at this process's path and waits for it to be ready (nil: this
// process must now exit, Exit is closed) or to fail (the journal is taken back).
func (u *Upgrader) Upgrade(j Journal) error {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("upgrade: handover: %w", err)
	}
	mine, theirs := os.NewFile(uintptr(fds[0]), "handover"), os.NewFile(uintptr(fds[1]), "handover-child")
	err = u.upg.Fds.AddFile(handoverName, theirs)
	theirs.Close()
	if err != nil {
		mine.Close()
		return fmt.Errorf("upgrade: handover: %w", err)
	}
	c, err := net.FileConn(mine)
	mine.Close()
	if err != nil {
		return fmt.Errorf("upgrade: handover: %w", err)
	}
	var mu sync.Mutex
	took := false
	served := make(chan struct{})
	go func() {
		defer close(served)
		r := bufio.NewReaderSize(c, maxLine)
		line, err := readLine(r)
		if err != nil || line != "release" {
			return
		}
		err = j.Release(func(keyID, backend string) {
			mu.Lock()
			defer mu.Unlock()
			_, _ = fmt.Fprintf(c, "created %s %s\n", keyID, backend)
		})
		mu.Lock()
		if err != nil {
			_, _ = fmt.Fprintf(c, "refused %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
		} else {
			took = true
			_, _ = c.Write([]byte("released\n"))
		}
		mu.Unlock()
	}()
	u.log.Info("upgrade: starting the new process")
	if err = u.upg.Upgrade(); err != nil {
		c.Close() // the child is gone: the goroutine above ends
		<-served
		mu.Lock()
		t := took
		mu.Unlock()
		if t {
			if rerr := j.Resume(); rerr != nil {
				err = errors.Join(err, rerr)
			}
		}
		return fmt.Errorf("upgrade: the new process did not start; this one goes on serving: %w", err)
	}
	u.mu.Lock()
	u.child = c // closed by the process's exit: the child learns it then
	u.mu.Unlock()
	u.log.Info("upgrade: the new process serves; this one stops accepting and drains")
	return nil
}

// monotonicUsec is CLOCK_MONOTONIC in microseconds, as systemd wants it with RELOADING=1.
func monotonicUsec() int64 {
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts) != nil {
		return 0
	}
	return ts.Nano() / 1000
}

func readLine(r *bufio.Reader) (string, error) {
	line, err := r.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return "", errors.New("handover: a line too long")
		}
		return "", err
	}
	return strings.TrimSuffix(string(line), "\n"), nil
}
