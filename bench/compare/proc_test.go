package compare

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
)

// A real /proc/PID/stat line (nginx worker), with a comm containing spaces and parentheses
// substituted in one case.
const statNginx = "4242 (nginx) S 4241 4241 4241 0 -1 4194624 1210 0 0 0 317 142 0 0 20 0 1 0 123456 16384000 1024 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n"

func TestParseStat(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    Stat
		wantErr bool
	}{
		{"nginx", statNginx, Stat{PID: 4242, Comm: "nginx", State: 'S', PPID: 4241, UTime: 317, STime: 142}, false},
		{"comm with spaces and parens", "7 (a b) (c)) R 1 7 7 0 -1 0 0 0 0 0 5 6 0 0 20 0 1 0 1 1 1", Stat{PID: 7, Comm: "a b) (c)", State: 'R', PPID: 1, UTime: 5, STime: 6}, false},
		{"empty", "", Stat{}, true},
		{"no comm", "12 S 1 2 3", Stat{}, true},
		{"bad pid", "x (a) S 1 1 1 0 -1 0 0 0 0 0 5 6", Stat{}, true},
		{"too few fields", "12 (a) S 1 1 1 0 -1 0 0 0 0 0 5", Stat{}, true},
		{"bad utime", "12 (a) S 1 1 1 0 -1 0 0 0 0 0 -5 6", Stat{}, true},
		{"bad state", "12 (a) SS 1 1 1 0 -1 0 0 0 0 0 5 6", Stat{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseStat([]byte(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if err != nil {
				if !errors.Is(err, ErrProcFormat) {
					t.Fatalf("error %v does not wrap ErrProcFormat", err)
				}
				return
			}
			if got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
			if got.CPUTicks() != tt.want.UTime+tt.want.STime {
				t.Fatalf("CPUTicks = %d", got.CPUTicks())
			}
		})
	}
}

const statusGo = `Name:	xksproxy
Umask:	0022
State:	S (sleeping)
Pid:	99
PPid:	1
VmPeak:	 1263340 kB
VmSize:	 1263340 kB
VmHWM:	   19416 kB
VmRSS:	   18044 kB
Threads:	7
voluntary_ctxt_switches:	150
nonvoluntary_ctxt_switches:	12
`

func TestParseStatus(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    Status
		wantErr bool
	}{
		{"go process", statusGo, Status{VmHWM: 19416, VmRSS: 18044, CtxSwitches: 162}, false},
		{"bad context switch count", "voluntary_ctxt_switches:\t-1\n", Status{}, true},
		{"kernel thread has no Vm lines", "Name:\tkthreadd\nState:\tS (sleeping)\n", Status{}, false},
		{"bad unit", "VmHWM:\t 12 MB\n", Status{}, true},
		{"not a number", "VmRSS:\t x kB\n", Status{}, true},
		{"negative", "VmRSS:\t -3 kB\n", Status{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseStatus([]byte(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if err == nil && got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseCPUList(t *testing.T) {
	tests := []struct {
		in      string
		want    []int
		wantErr bool
	}{
		{"0-1", []int{0, 1}, false},
		{"0", []int{0}, false},
		{"2-3,8,10-11", []int{2, 3, 8, 10, 11}, false},
		{"", nil, false},
		{"3-1", nil, true},
		{"a", nil, true},
		{"0-99999", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseCPUList(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v", err)
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
}

// fakeProc writes a proc tree: pid → (ppid, utime, stime, hwm kB).
func fakeProc(t *testing.T, procs map[int][4]int) string {
	t.Helper()
	root := t.TempDir()
	for pid, v := range procs {
		dir := filepath.Join(root, strconv.Itoa(pid))
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		stat := strconv.Itoa(pid) + " (p) S " + strconv.Itoa(v[0]) + " 1 1 0 -1 0 0 0 0 0 " + strconv.Itoa(v[1]) + " " + strconv.Itoa(v[2]) + " 0 0 20 0 1 0"
		status := "Name:\tp\nVmHWM:\t" + strconv.Itoa(v[3]) + " kB\nVmRSS:\t" + strconv.Itoa(v[3]/2) + " kB\n"
		if err := os.WriteFile(filepath.Join(dir, "stat"), []byte(stat), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "status"), []byte(status), 0o644); err != nil {
			t.Fatal(err)
		}
		// Two threads: the leader (TID = PID) with pid context switches, one more with 1000.
		for tid, n := range map[int]int{pid: pid, pid + 1000: 1000} {
			tdir := filepath.Join(dir, "task", strconv.Itoa(tid))
			if err := os.MkdirAll(tdir, 0o755); err != nil {
				t.Fatal(err)
			}
			ts := "Name:\tp\nvoluntary_ctxt_switches:\t" + strconv.Itoa(n-1) + "\nnonvoluntary_ctxt_switches:\t1\n"
			if err := os.WriteFile(filepath.Join(tdir, "status"), []byte(ts), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Non-process entries are skipped.
	if err := os.WriteFile(filepath.Join(root, "cpuinfo"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	return root
}

func TestProcFSTreeAndSample(t *testing.T) {
	root := fakeProc(t, map[int][4]int{
		1:  {0, 0, 0, 0},
		10: {1, 100, 50, 2048}, // nginx master
		11: {10, 300, 200, 8192},
		12: {11, 1, 1, 1024}, // grandchild
		20: {1, 9, 9, 4096},  // unrelated
	})
	p := ProcFS{Root: root}
	tree, err := p.Tree(10)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(tree)
	if !slices.Equal(tree, []int{10, 11, 12}) {
		t.Fatalf("tree = %v", tree)
	}
	before := p.Sample(tree)
	if before.HWMkB != 2048+8192+1024 || before.RSSkB != (2048+8192+1024)/2 || len(before.Problems) != 0 {
		t.Fatalf("sample = %+v", before)
	}
	// Later: the worker used 250 more ticks, the master 10; a process that vanished counts 0.
	after := Usage{PerPID: map[int]uint64{10: 160, 11: 750, 99: 1000}}
	if got := after.CPUSince(before); got != 260 {
		t.Fatalf("CPUSince = %d, want 260", got)
	}
	if len(before.PerTask) != 6 || before.PerTask[11] != 11 || before.PerTask[1011] != 1000 {
		t.Fatalf("per-thread context switches = %v", before.PerTask)
	}
	// Later: thread 11 switched 40 more times, 1010 did not, 1011 exited, 77 is new with 5.
	after.PerTask = map[int]uint64{10: 10, 1010: 1000, 11: 51, 77: 5}
	if got := after.CtxSwitchesSince(before); got != 45 {
		t.Fatalf("CtxSwitchesSince = %d, want 45", got)
	}
	if got := p.Sample([]int{10, 404}); len(got.Problems) != 1 || got.PerPID[10] != 150 {
		t.Fatalf("missing pid: %+v", got)
	}
	if TicksToMicros(260) != 2_600_000 {
		t.Fatalf("TicksToMicros(260) = %v", TicksToMicros(260))
	}
}

// The real /proc of this test process parses.
func TestProcFSSelf(t *testing.T) {
	p := ProcFS{}
	st, err := p.Stat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if st.PID != os.Getpid() || st.PPID != os.Getppid() {
		t.Fatalf("stat = %+v", st)
	}
	ss, err := p.Status(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if ss.VmHWM <= 0 || ss.VmRSS <= 0 || ss.VmRSS > ss.VmHWM {
		t.Fatalf("status = %+v", ss)
	}
	// This process has threads, and the test binary has switched context by now.
	u := p.Sample([]int{os.Getpid()})
	if len(u.PerTask) < 2 || u.PerTask[os.Getpid()] == 0 {
		t.Fatalf("per-thread context switches of this process = %v", u.PerTask)
	}
}

func FuzzParseStat(f *testing.F) {
	f.Add([]byte(statNginx))
	f.Add([]byte("7 (a b) (c)) R 1 7 7 0 -1 0 0 0 0 0 5 6"))
	f.Add([]byte("1 ("))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := ParseStat(b)
		if err == nil && (st.PID <= 0 || st.PPID < 0) {
			t.Fatalf("accepted %+v", st)
		}
	})
}

func FuzzParseStatus(f *testing.F) {
	f.Add([]byte(statusGo))
	f.Add([]byte("VmHWM:\t 12 MB\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := ParseStatus(b)
		if err == nil && (st.VmHWM < 0 || st.VmRSS < 0) {
			t.Fatalf("accepted %+v", st)
		}
	})
}

func FuzzParseCPUList(f *testing.F) {
	f.Add("0-1")
	f.Add("2-3,8,10-11")
	f.Fuzz(func(t *testing.T, s string) {
		cpus, err := ParseCPUList(s)
		if err == nil && len(cpus) > 4096 {
			t.Fatalf("%d cpus", len(cpus))
		}
	})
}
