package compare

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Process supervision: the servers a run starts (emulator, nginx, xksproxy), their pinning,
// environment, logs and stop; proc.go reads their /proc figures.

type procSpec struct {
	name    string
	cpu     string // "" → not pinned
	bin     string
	args    []string
	env     []string
	stdout  io.Writer
	stderr  io.Writer
	logFile string // stdout and stderr, unless given
}

type proc struct {
	name    string
	cmd     *exec.Cmd
	done    chan struct{}
	err     error
	logPath string
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) logTail() string {
	if p.logPath == "" {
		return ""
	}
	b, _ := os.ReadFile(p.logPath)
	return tail(b, 2048)
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return strings.TrimSpace(string(b))
}

type procSet struct {
	mu   sync.Mutex
	live []*proc
}

func (s *procSet) start(ctx context.Context, sp procSpec) (*proc, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	argv := append([]string{sp.bin}, sp.args...)
	if sp.cpu != "" {
		argv = append([]string{"taskset", "-c", sp.cpu}, argv...)
	}
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return nil, err
	}
	cmd := &exec.Cmd{Path: path, Args: argv, Env: append(baseEnv(), sp.env...)}
	// Own process group (nginx's worker is stopped with its master); killed if we die.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if os.Geteuid() == 0 {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: nobody, Gid: nobody}
	}
	var logF *os.File
	if sp.logFile != "" {
		if logF, err = os.Create(sp.logFile); err != nil {
			return nil, err
		}
	}
	cmd.Stdout, cmd.Stderr = sp.stdout, sp.stderr
	if cmd.Stdout == nil && logF != nil {
		cmd.Stdout = logF
	}
	if cmd.Stderr == nil && logF != nil {
		cmd.Stderr = logF
	}
	if err := cmd.Start(); err != nil {
		if logF != nil {
			logF.Close()
		}
		return nil, fmt.Errorf("start %s: %w", sp.name, err)
	}
	p := &proc{name: sp.name, cmd: cmd, done: make(chan struct{}), logPath: sp.logFile}
	go func() {
		p.err = cmd.Wait()
		if logF != nil {
			logF.Close()
		}
		close(p.done)
	}()
	s.mu.Lock()
	s.live = append(s.live, p)
	s.mu.Unlock()
	return p, nil
}

// baseEnv is the environment of started processes: PATH and HOME only, so nothing of the
// caller's environment (credentials included) leaks into them.

func baseEnv() []string {
	env := []string{"PATH=" + os.Getenv("PATH")}
	if os.Geteuid() == 0 {
		return append(env, "HOME=/nonexistent")
	}
	return append(env, "HOME="+os.Getenv("HOME"))
}

func (s *procSet) forget(p *proc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, q := range s.live {
		if q == p {
			s.live = append(s.live[:i], s.live[i+1:]...)
			return
		}
	}
}

// stop ends p's process group: SIGTERM, then SIGKILL after 5 s.

func (s *procSet) stop(p *proc) {
	s.forget(p)
	pgid := p.pid()
	select {
	case <-p.done:
		return // reaped: its group id may no longer be ours to signal
	default:
	}
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.done
	}
}

func (s *procSet) stopAll() {
	for {
		s.mu.Lock()
		if len(s.live) == 0 {
			s.mu.Unlock()
			return
		}
		p := s.live[len(s.live)-1]
		s.mu.Unlock()
		s.stop(p)
	}
}

// limitedBuffer keeps the first n bytes written and discards the rest.

type limitedBuffer struct {
	b *bytes.Buffer
	n int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := l.n - l.b.Len(); room > 0 {
		l.b.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}
