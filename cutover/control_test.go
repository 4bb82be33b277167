package cutover

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/cosmian/kmsemu"
)

// The control lock is Run's: before Run, an operation waits for it (within its context); once
// Run returned, it is refused; nothing is spawned outside Run.
func TestControlBelongsToRun(t *testing.T) {
	c := newControl()
	short, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := c.lock(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("lock before Run: %v, want it to wait for Run", err)
	}
	if c.spawn(func(context.Context) { t.Error("spawned before Run") }) {
		t.Fatal("spawn before Run accepted")
	}
	ctx, stop := context.WithCancel(context.Background())
	must(t, c.begin(ctx, &fakeRouter{}))
	if err := c.begin(ctx, &fakeRouter{}); !errors.Is(err, errRunTwice) {
		t.Fatalf("second begin: %v", err)
	}
	held, err := c.lock(context.Background())
	must(t, err)
	ended := make(chan struct{})
	if !c.spawn(func(ctx context.Context) { <-ctx.Done(); close(ended) }) {
		t.Fatal("spawn during Run refused")
	}
	waiting := make(chan error, 1)
	go func() { _, err := c.lock(context.Background()); waiting <- err }()
	stop()
	c.end()
	select {
	case <-ended:
	default:
		t.Fatal("end returned before the goroutine Run owned ended")
	}
	c.unlock(held)
	if err := <-waiting; !errors.Is(err, ErrStopped) {
		t.Fatalf("lock that waited across the end of Run: %v, want ErrStopped", err)
	}
	if _, err := c.lock(context.Background()); !errors.Is(err, ErrStopped) {
		t.Fatalf("lock after Run: %v", err)
	}
	if c.spawn(func(context.Context) { t.Error("spawned after Run") }) {
		t.Fatal("spawn after Run accepted")
	}
}

// Run returns once the runner it owned ended; the controller then refuses control operations.
func TestRunReturnsWithItsRunner(t *testing.T) {
	e := newEnv(t, kmsemu.Cosmian526)
	seedMixed(t, e.A, 20)
	e.A.SetFaults(kmsemu.Faults{Latency: 5 * time.Millisecond})
	c := e.controller(t, func(cfg *Config) { cfg.Pace.MaxConcurrency = 1 })
	if _, err := c.Load(ctxT(t)); !errors.Is(err, errLoaded) {
		t.Errorf("second Load: %v", err)
	}
	must(t, c.Start(ctxT(t), StartOptions{}))
	if !c.control.isRunning() {
		t.Fatal("no runner after Start")
	}
	must(t, e.stop(c))
	if c.control.isRunning() {
		t.Error("the runner outlived Run")
	}
	if err := c.Start(ctxT(t), StartOptions{}); !errors.Is(err, ErrStopped) {
		t.Errorf("Start after Run: %v, want ErrStopped", err)
	}
	if err := c.Run(context.Background(), e.router); !errors.Is(err, errRunTwice) {
		t.Errorf("second Run: %v", err)
	}
}
