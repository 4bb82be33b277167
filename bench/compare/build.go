package compare

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "go" // exec reports that it is not on PATH
}

func (r *run) build(ctx context.Context) error {
	r.bin = filepath.Join(r.dir, "bin")
	if err := os.Mkdir(r.bin, 0o755); err != nil {
		return err
	}
	bctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	pkgs := []string{"./cmd/kmsemu", "./cmd/xksproxy", "./bench/cmd/xksload"}
	if !r.o.SkipDemo {
		// `xksproxy demo` runs xksproxy-dev, which it finds next to itself.
		pkgs = append(pkgs, "./cmd/xksproxy-dev")
	}
	cmd := exec.CommandContext(bctx, goTool(), append([]string{"build", "-o", r.bin + "/"}, pkgs...)...)
	cmd.Dir = r.o.RepoDir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %w\n%s", err, out)
	}
	return nil
}

// measure runs one path: fresh emulator (and middle process), warm-up, the fixed-rate run,
// then the closed-loop run.
