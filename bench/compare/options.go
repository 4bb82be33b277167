package compare

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"time"
)

// Options configures Run. Zero values take the defaults named on each field.
type Options struct {
	RepoDir  string        // module root; found upwards from the working directory when empty
	Duration time.Duration // each measured run [10s]
	Rate     float64       // the fixed open-loop rate [1800]
	Keys     int           // keys seeded in the emulator and used by the client [100]
	Workers  int           // closed-loop concurrency and connections for rps_max [32]
	Conns    int           // keep-alive connections at the fixed rate [16]
	Region   string        // SigV4 region ["us-east-1"]
	Rounds   int           // every path is measured this many times, interleaved; the medians are reported [1]
	HTTP2    bool          // the client offers HTTP/2 (ALPN h2, http/1.1); nginx and xksproxy accept it, the emulator speaks HTTP/1.1

	PerfDir string // profiling: `perf record -g` the middle process in each phase into this directory

	SkipNginx bool          // debugging only
	SkipDemo  bool          // skip the cutover-under-load scenario
	DemoKeys  int           // [1000]
	DemoRPS   float64       // [1800]
	DemoLimit time.Duration // bound on the demo run [5m]

	Log io.Writer // progress; io.Discard when nil
}

func (o *Options) setDefaults() error {
	if o.Duration == 0 {
		o.Duration = 10 * time.Second
	}
	if o.Rate == 0 {
		o.Rate = 1800
	}
	if o.Keys == 0 {
		o.Keys = 100
	}
	if o.Workers == 0 {
		o.Workers = 32
	}
	if o.Conns == 0 {
		o.Conns = 16
	}
	if o.Region == "" {
		o.Region = "us-east-1"
	}
	if o.Rounds == 0 {
		o.Rounds = 1
	}
	if o.DemoKeys == 0 {
		o.DemoKeys = 1000
	}
	if o.DemoRPS == 0 {
		o.DemoRPS = 1800
	}
	if o.DemoLimit == 0 {
		o.DemoLimit = 5 * time.Minute
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	if o.Duration < 500*time.Millisecond || o.Duration > time.Hour || o.Rate < 1 || o.Rate > 1e5 ||
		o.Keys < 1 || o.Keys > 10000 || o.Workers < 1 || o.Workers > 4096 || o.Conns < 1 || o.Conns > 4096 ||
		o.DemoKeys < 1 || o.DemoRPS <= 0 || o.Rounds < 1 || o.Rounds > 100 {
		return errors.New("compare: options out of range (duration 0.5s..1h, rate 1..1e5, keys 1..10000, workers/conns 1..4096, rounds 1..100)")
	}
	if o.RepoDir == "" {
		dir, err := findModuleRoot()
		if err != nil {
			return err
		}
		o.RepoDir = dir
	}
	return nil
}

func findModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.Contains(b, []byte("module github.com/xksproxy/xksproxy\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("compare: run from inside the xksproxy module (go.mod not found)")
		}
		dir = parent
	}
}

// Outcome is everything one Run measured.
