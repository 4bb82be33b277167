package deploy_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// The commands an operator runs (xksproxy, kmsemu, xksload), built once for the package's tests
// into a directory TestMain removes.
var bins struct {
	once sync.Once
	dir  string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if bins.dir != "" {
		_ = os.RemoveAll(bins.dir)
	}
	os.Exit(code)
}

// commandPath returns the path of the built command name (xksproxy, kmsemu or xksload).
func commandPath(t *testing.T, name string) string {
	t.Helper()
	bins.once.Do(func() {
		dir, err := os.MkdirTemp("", "xksproxy-deploy-bin-")
		if err != nil {
			bins.err = err
			return
		}
		bins.dir = dir
		cmd := exec.Command("go", "build", "-o", dir+string(filepath.Separator),
			"./cmd/xksproxy", "./cmd/kmsemu", "./bench/cmd/xksload")
		cmd.Dir = ".."
		if out, err := cmd.CombinedOutput(); err != nil {
			bins.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if bins.err != nil {
		t.Fatal(bins.err)
	}
	return filepath.Join(bins.dir, name)
}
