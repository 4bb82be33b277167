package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The product binary links none of the demo and dev tooling: not the emulator, the load
// generator, the dev environment, the demo or an etcd server (they live in xksproxy-dev).
func TestProductBinaryLinksNoTooling(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("the go command is not on PATH")
	}
	out, err := exec.Command(goTool, "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 50 {
		t.Fatalf("go list -deps listed %d packages: %s", len(deps), out)
	}
	for _, d := range deps {
		for _, bad := range []string{modulePath + "/internal/demo", modulePath + "/internal/devstack", modulePath + "/cosmian/kmsemu",
			modulePath + "/bench/", "go.etcd.io/etcd/server/", "go.etcd.io/etcd/server/v3"} {
			if d == bad || strings.HasPrefix(d, bad+"/") || strings.HasSuffix(bad, "/") && strings.HasPrefix(d, bad) {
				t.Errorf("cmd/xksproxy links %s", d)
			}
		}
	}
}

func TestLocateDevTool(t *testing.T) {
	mkModule := func(t *testing.T, module string, withTool bool) string {
		root := t.TempDir()
		if err := os.WriteFile(filepath.Join(root, "go.mod"), []byte("// a comment\nmodule "+module+"\n\ngo 1.26\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if withTool {
			if err := os.MkdirAll(filepath.Join(root, "cmd", "xksproxy-dev"), 0o700); err != nil {
				t.Fatal(err)
			}
		}
		deep := filepath.Join(root, "a", "b")
		if err := os.MkdirAll(deep, 0o700); err != nil {
			t.Fatal(err)
		}
		return root
	}
	installed := t.TempDir()
	exe := filepath.Join(installed, "xksproxy")
	if err := os.WriteFile(filepath.Join(installed, "xksproxy-dev"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	notExec := t.TempDir()
	if err := os.WriteFile(filepath.Join(notExec, "xksproxy-dev"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	ours := mkModule(t, modulePath, true)
	other := mkModule(t, "example.com/other", true)
	noTool := mkModule(t, modulePath, false)
	for _, tc := range []struct {
		name     string
		exe, dir string
		want     devToolLocation
	}{
		{"next to the executable wins", exe, filepath.Join(ours, "a", "b"), devToolLocation{path: filepath.Join(installed, "xksproxy-dev")}},
		{"source tree above the working directory", filepath.Join(t.TempDir(), "xksproxy"), filepath.Join(ours, "a", "b"), devToolLocation{moduleRoot: ours}},
		{"a file that is not executable is not the tool", filepath.Join(notExec, "xksproxy"), ours, devToolLocation{moduleRoot: ours}},
		{"another module", "", filepath.Join(other, "a"), devToolLocation{}},
		{"this module without the tool's source", "", noTool, devToolLocation{}},
		{"nowhere", "", t.TempDir(), devToolLocation{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := locateDevTool(tc.exe, tc.dir); got != tc.want {
				t.Errorf("locateDevTool(%q, %q) = %+v, want %+v", tc.exe, tc.dir, got, tc.want)
			}
		})
	}
}

// The tool's exit status and output are xksproxy's; an interrupted tool that stops cleanly is
// a clean stop.
func TestRunDevToolStatus(t *testing.T) {
	dir := t.TempDir()
	tool := filepath.Join(dir, "tool")
	script := "#!/bin/sh\necho out \"$@\"; echo err >&2\ncase \"$1\" in\n  fail) exit 3;;\n  wait) trap 'exit 0' INT; touch \"$0.trapped\"; while :; do sleep 0.05; done;;\nesac\n"
	if err := os.WriteFile(tool, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		arg  string
		code int
	}{{"ok", 0}, {"fail", 3}, {"wait", 0}} {
		t.Run(tc.arg, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tc.arg == "wait" {
				go func() { // interrupt once the tool handles it
					for {
						if _, err := os.Stat(tool + ".trapped"); err == nil {
							cancel()
							return
						}
						time.Sleep(10 * time.Millisecond)
					}
				}()
			}
			var out, errb bytes.Buffer
			err := execDevTool(ctx, tool, []string{tc.arg, "--x=1"}, &out, &errb, func() {})
			code := 0
			if es, ok := err.(exitStatus); ok {
				code = int(es)
			} else if err != nil {
				t.Fatalf("%v", err)
			}
			if code != tc.code || (tc.arg != "wait" && (out.String() != "out "+tc.arg+" --x=1\n" || errb.String() != "err\n")) {
				t.Errorf("status %d (want %d), stdout %q, stderr %q", code, tc.code, out.String(), errb.String())
			}
		})
	}
}
