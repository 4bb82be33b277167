package devstack

import (
	"context"
	"errors"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/fleet"
	"github.com/xksproxy/xksproxy/internal/etcdtest"
)

// ours lists the goroutines running code of this module other than the test itself (an
// embedded etcd server's or the runtime's do not count).
func ours() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "github.com/xksproxy/xksproxy/") && !strings.Contains(g, "lifecycle_test.go") {
			out = append(out, g)
		}
	}
	return out
}

// settle waits until no goroutine of ours runs (idle connections and timers wind down
// asynchronously) and prints those left if some do.
func settle(t *testing.T, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		left := ours()
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d goroutines of ours still run:\n%s", what, len(left), strings.Join(left, "\n\n"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The same in fleet mode: the member's watch, heartbeat and campaign loops and the etcd client
// end with the proxy (the embedded etcd server itself runs on until the test ends).
func TestLifecycleFleetLeavesNothingRunning(t *testing.T) {
	srv := etcdtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := Start(ctx, Config{Listen: "127.0.0.1:0", Keys: []Key{{ID: "k1"}},
		Fleet: &fleet.Config{Endpoints: []string{srv.Endpoint}, CAFile: srv.CAFile, LeaseTTL: 2 * time.Second, MinLeaseTTL: time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	// Elected, the member runs every loop it has (campaign won, driver's runner).
	deadline := time.Now().Add(30 * time.Second)
	for !s.App.Cutover.IsDriver() {
		if time.Now().After(deadline) {
			t.Fatal("the only member was not elected driver within 30s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	running := len(ours())
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d goroutines of ours while running; settling after Close", running)
	settle(t, "after Close")
}

// The components' lifecycle contract, end to end: Run(ctx) owns every goroutine it starts
// (none is left once the proxy, its controller and the emulators have stopped), and a start
// that fails half-way (the proxy's port is taken) unwinds what it had started.
func TestLifecycleLeavesNothingRunning(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := Start(ctx, Config{Listen: "127.0.0.1:0", Keys: []Key{{ID: "k1"}}})
	if err != nil {
		t.Fatal(err)
	}
	running := len(ours())
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d goroutines of ours while running; settling after Close", running)
	settle(t, "after Close")

	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	_, err = Start(ctx, Config{Listen: busy.Addr().String(), Keys: []Key{{ID: "k1"}}})
	if err == nil {
		t.Fatal("a proxy started on a port already in use")
	}
	var op *net.OpError
	if !errors.As(err, &op) && !strings.Contains(err.Error(), "in use") {
		t.Logf("start refused: %v", err)
	}
	settle(t, "after the failed start")
}
