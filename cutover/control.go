package cutover

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	"github.com/xksproxy/xksproxy/xks"
)

// control is the controller's lifecycle and its serialisation: what Run gives (its context and
// the proxy), the goroutines Run owns (none starts before Run or after it returned: spawn
// refuses), the runner among them, and the control lock.
//
// The control lock orders every operation that changes the state: the operator's actions
// (start, switch, rollback, finalize) and the runner's own moves. It is taken with a context,
// so that a cancelled runner never deadlocks an operator's rollback, and only while Run runs.
// A function that needs it held takes a ctlHeld (the one convention: a ctlHeld parameter is
// the control lock; a ...Locked suffix is a part's own mutex, inside that part).
type control struct {
	ctl     chan struct{}
	link    link
	started chan struct{} // closed when Run starts

	mu      sync.Mutex
	ctx     context.Context // Run's; nil before it starts
	stopped bool            // Run is ending: nothing more starts
	wg      sync.WaitGroup

	// The runner (run.go): at most one, started and stopped under the control lock.
	running bool
	runStop context.CancelFunc
	runDone chan struct{}
}

// ctlHeld is proof, by convention, that the caller holds the control lock.
type ctlHeld struct{}

func newControl() *control {
	return &control{ctl: make(chan struct{}, 1), started: make(chan struct{})}
}

// errRunTwice: Run was called again.
var errRunTwice = errors.New("cutover: Run called twice")

// begin is Run's start: ctx is Run's, p the proxy it drives.
func (c *control) begin(ctx context.Context, p Proxy) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ctx != nil {
		return errRunTwice
	}
	c.ctx = ctx
	c.link.attach(p)
	close(c.started)
	return nil
}

// end is Run's end: nothing more starts, and it returns once every goroutine Run owned ended
// (they all live in Run's context, which has ended).
func (c *control) end() {
	c.mu.Lock()
	c.stopped = true
	c.mu.Unlock()
	c.wg.Wait()
}

// spawn runs f in a goroutine Run owns, with Run's context; it reports false (and f does not run)
// before Run started or once it is ending.
func (c *control) spawn(f func(ctx context.Context)) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ctx == nil || c.stopped {
		return false
	}
	ctx := c.ctx
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		f(ctx)
	}()
	return true
}

// runContext is Run's context (nil before it starts).
func (c *control) runContext() context.Context {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ctx
}

// lock acquires the control lock, once Run has started, or gives up when ctx ends. After Run
// returned it refuses with ErrStopped.
func (c *control) lock(ctx context.Context) (ctlHeld, error) {
	select {
	case <-c.started:
	case <-ctx.Done():
		return ctlHeld{}, ctx.Err()
	}
	c.mu.Lock()
	stopped := c.stopped
	c.mu.Unlock()
	if stopped {
		return ctlHeld{}, ErrStopped
	}
	select {
	case c.ctl <- struct{}{}:
	case <-ctx.Done():
		return ctlHeld{}, ctx.Err()
	}
	c.mu.Lock()
	stopped = c.stopped
	c.mu.Unlock()
	if stopped { // Run ended while this call waited for the lock
		<-c.ctl
		return ctlHeld{}, ErrStopped
	}
	return ctlHeld{}, nil
}

func (c *control) unlock(ctlHeld) { <-c.ctl }

// launch starts the runner in parent (Run's context, or a fleet driver's lead), if none runs.
func (c *control) launch(_ ctlHeld, parent context.Context, run func(ctx context.Context)) {
	ctx, cancel := context.WithCancel(parent)
	done := make(chan struct{})
	c.mu.Lock()
	if c.running {
		c.mu.Unlock()
		cancel()
		return
	}
	c.running, c.runStop, c.runDone = true, cancel, done
	c.mu.Unlock()
	ok := c.spawn(func(context.Context) {
		defer close(done)
		defer cancel()
		run(ctx)
		c.mu.Lock()
		if c.runDone == done {
			c.running, c.runStop, c.runDone = false, nil, nil
		}
		c.mu.Unlock()
	})
	if !ok {
		cancel()
		c.mu.Lock()
		c.running, c.runStop, c.runDone = false, nil, nil
		c.mu.Unlock()
	}
}

// stopRunner cancels the runner and waits for it. The caller holds the control lock and is
// never the runner itself.
func (c *control) stopRunner(ctlHeld) {
	c.mu.Lock()
	cancel, done := c.runStop, c.runDone
	c.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

// isRunning reports whether the runner runs.
func (c *control) isRunning() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.running
}

// Proxy is the request path as the migration drives it: its route table, which each move's route
// is applied to, and the forwarding of one XKS call to one named backend the way live traffic
// goes, which the shadow's mirrored Decrypts and probation's second opinions take. The app hands
// the proxy to Run.
type Proxy interface {
	SetRoute(epoch uint64, primary, fallback string) error
	// Forward's resp is the spec-normalised reply body (the caller clears it: it may hold
	// plaintext); err carries the XKS error of an error reply.
	Forward(ctx context.Context, backend string, op xks.Operation, keyID string, body []byte) (status int, resp []byte, err error)
}

// errNoProxy: a route or a forward was asked for before Run gave the proxy.
var errNoProxy = errors.New("cutover: the proxy is not attached (Run has not started)")

// link reaches the proxy Run was given.
type link struct{ p atomic.Pointer[Proxy] }

func (l *link) attach(p Proxy) { l.p.Store(&p) }

// attached reports whether Run gave the proxy.
func (l *link) attached() bool { return l.p.Load() != nil }

func (l *link) setRoute(epoch uint64, primary, fallback string) error {
	p := l.p.Load()
	if p == nil {
		return errNoProxy
	}
	return (*p).SetRoute(epoch, primary, fallback)
}

func (l *link) forward(ctx context.Context, backend string, op xks.Operation, keyID string, body []byte) (int, []byte, error) {
	p := l.p.Load()
	if p == nil {
		return 0, nil, errNoProxy
	}
	return (*p).Forward(ctx, backend, op, keyID, body)
}
