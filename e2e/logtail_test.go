package e2e

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

// logTail keeps the last lines the stack logged, so that a failing test shows what the proxy
// did (the migration's own account) without flooding a passing run's output.
type logTail struct {
	mu    sync.Mutex
	lines []string
	next  int
	full  bool
}

const logTailLines = 300

func (l *logTail) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, line := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		if len(l.lines) < logTailLines {
			l.lines = append(l.lines, line)
			continue
		}
		l.lines[l.next] = line
		l.next = (l.next + 1) % logTailLines
		l.full = true
	}
	return len(p), nil
}

func (l *logTail) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b bytes.Buffer
	if l.full {
		b.WriteString("… (earlier lines dropped)\n")
	}
	for i := range l.lines {
		b.WriteString(l.lines[(l.next+i)%len(l.lines)])
		b.WriteByte('\n')
	}
	return b.String()
}

// tailLogger returns a logger whose last lines are printed if t fails.
func tailLogger(t *testing.T) *slog.Logger {
	t.Helper()
	tail := &logTail{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the stack's last log lines:\n%s", tail)
		}
	})
	return slog.New(slog.NewTextHandler(tail, &slog.HandlerOptions{Level: slog.LevelInfo}))
}
