package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/xksproxy/xksproxy/internal/cli"
)

// The demo and dev mode live in their own executable, xksproxy-dev (cmd/xksproxy-dev): they
// link the Cosmian emulator, the load generator and an embedded etcd server, which the
// product's `serve --config` must neither carry nor initialise. `xksproxy demo` and
// `xksproxy serve --dev` check their flags here and run the tool with them.

const (
	modulePath = "github.com/xksproxy/xksproxy"
	// devToolGrace is how long the tool has to stop after it was interrupted.
	devToolGrace = 30 * time.Second
	// devToolBuildTimeout bounds `go build` (it may download modules on a fresh clone).
	devToolBuildTimeout = 10 * time.Minute
)

// exitStatus is the dev tool's non-zero exit status, passed on as xksproxy's own: the tool has
// already written why.
type exitStatus int

func (e exitStatus) Error() string {
	return fmt.Sprintf("%s exited with status %d", cli.DevToolName, int(e))
}

// runDevTool runs xksproxy-dev with args, its output on stdout and stderr, until it exits. When
// ctx ends first, the tool is interrupted (as Ctrl-C would) and given devToolGrace to stop.
func runDevTool(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	path, unlock, err := findDevTool(ctx, stderr)
	if err != nil {
		return err
	}
	return execDevTool(ctx, path, args, stdout, stderr, unlock)
}

// execDevTool runs the tool at path; unlock is called once it started.
func execDevTool(ctx context.Context, path string, args []string, stdout, stderr io.Writer, unlock func()) error {
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = devToolGrace
	stopWithParent(cmd)
	err := cmd.Start()
	unlock()
	if err != nil {
		return fmt.Errorf("%s: %w", cli.DevToolName, err)
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	switch {
	case cmd.ProcessState != nil && cmd.ProcessState.Success():
		return nil // also when interrupted: the tool stopped cleanly
	case errors.As(err, &ee) && ee.Exited():
		return exitStatus(ee.ExitCode())
	}
	return fmt.Errorf("%s: %w", cli.DevToolName, err)
}

// findDevTool finds xksproxy-dev: next to this executable (as installed, or as bench/compare
// builds them), else, run from this module's source tree, built from it with `go build` into
// the user's cache directory (go build leaves an up-to-date executable alone, so only the
// first run, or a run after a change, builds). unlock must be called once the tool started:
// until then no other xksproxy rebuilds it.
func findDevTool(ctx context.Context, stderr io.Writer) (path string, unlock func(), err error) {
	exe, _ := os.Executable()
	if exe != "" {
		if p, err := filepath.EvalSymlinks(exe); err == nil {
			exe = p
		}
	}
	wd, _ := os.Getwd()
	loc := locateDevTool(exe, wd)
	switch {
	case loc.path != "":
		return loc.path, func() {}, nil
	case loc.moduleRoot == "":
		return "", nil, fmt.Errorf("the demo and dev mode run in %s, which is not next to %s: build both into one directory (go build -o DIR/ ./cmd/xksproxy ./cmd/%s), or run from the source tree (go run ./cmd/xksproxy ...)",
			cli.DevToolName, exe, cli.DevToolName)
	}
	return buildDevTool(ctx, loc.moduleRoot, stderr)
}

// devToolLocation is where the tool is (path) or can be built from (moduleRoot).
type devToolLocation struct{ path, moduleRoot string }

// locateDevTool looks for the tool next to exe, then for this module's source tree at or
// above dir.
func locateDevTool(exe, dir string) devToolLocation {
	if exe != "" {
		p := filepath.Join(filepath.Dir(exe), cli.DevToolName)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
			return devToolLocation{path: p}
		}
	}
	for d := dir; d != ""; {
		if isModuleRoot(d) {
			return devToolLocation{moduleRoot: d}
		}
		parent := filepath.Dir(d)
		if parent == d {
			break
		}
		d = parent
	}
	return devToolLocation{}
}

// isModuleRoot reports whether dir holds this module's go.mod and the tool's source.
func isModuleRoot(dir string) bool {
	if fi, err := os.Stat(filepath.Join(dir, "cmd", cli.DevToolName)); err != nil || !fi.IsDir() {
		return false
	}
	f, err := os.Open(filepath.Join(dir, "go.mod"))
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(io.LimitReader(f, 1<<20))
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) == 2 && fields[0] == "module" {
			return strings.Trim(fields[1], `"`) == modulePath
		}
	}
	return false
}

// buildDevTool builds the tool from the source tree at root into a directory of the user's
// cache that is this tree's own.
func buildDevTool(ctx context.Context, root string, stderr io.Writer) (string, func(), error) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		return "", nil, fmt.Errorf("building %s from %s: the go command is not on PATH", cli.DevToolName, root)
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	sum := sha256.Sum256([]byte(root))
	dir := filepath.Join(cache, "xksproxy", "dev-"+hex.EncodeToString(sum[:6]))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", nil, fmt.Errorf("building %s: %w", cli.DevToolName, err)
	}
	unlock, err := lockFile(filepath.Join(dir, "lock"))
	if err != nil {
		return "", nil, fmt.Errorf("building %s: %w", cli.DevToolName, err)
	}
	out := filepath.Join(dir, cli.DevToolName)
	fmt.Fprintf(stderr, "xksproxy: go build -o %s ./cmd/%s (the demo and dev mode; a minute the first time)\n", out, cli.DevToolName)
	bctx, cancel := context.WithTimeout(ctx, devToolBuildTimeout)
	defer cancel()
	cmd := exec.CommandContext(bctx, goTool, "build", "-o", out, "./cmd/"+cli.DevToolName)
	cmd.Dir = root
	cmd.Stdout, cmd.Stderr = stderr, stderr
	if err := cmd.Run(); err != nil {
		unlock()
		return "", nil, fmt.Errorf("building %s: go build: %w", cli.DevToolName, err)
	}
	return out, unlock, nil
}
