package compare

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
)

// UserHZ is the unit of utime and stime in /proc/PID/stat. Linux fixes it at 100 for every
// architecture (USER_HZ is part of the /proc ABI, unlike the kernel's internal HZ).
const UserHZ = 100

// ErrProcFormat is wrapped by every /proc parse error.
var ErrProcFormat = errors.New("compare: unexpected /proc format")

// maxProcFile bounds what is read of one /proc file (stat and status are a few KB).
const maxProcFile = 64 << 10

// Stat is the part of /proc/PID/stat the benchmark uses.
type Stat struct {
	PID   int
	Comm  string
	State byte
	PPID  int
	UTime uint64 // clock ticks (UserHZ) spent in user mode, all threads, live and exited
	STime uint64 // clock ticks spent in kernel mode
}

// CPUTicks is utime + stime.
func (s Stat) CPUTicks() uint64 { return s.UTime + s.STime }

// ParseStat parses the contents of /proc/PID/stat. comm may contain spaces and parentheses,
// so the fields after it are found from the last ')'.
func ParseStat(b []byte) (Stat, error) {
	var s Stat
	if len(b) > maxProcFile {
		return s, fmt.Errorf("%w: stat too long", ErrProcFormat)
	}
	open := bytes.IndexByte(b, '(')
	closeIdx := bytes.LastIndexByte(b, ')')
	if open < 1 || closeIdx < open {
		return s, fmt.Errorf("%w: stat has no (comm)", ErrProcFormat)
	}
	pid, err := strconv.Atoi(string(bytes.TrimSpace(b[:open])))
	if err != nil || pid <= 0 {
		return s, fmt.Errorf("%w: stat pid", ErrProcFormat)
	}
	s.PID = pid
	s.Comm = string(b[open+1 : closeIdx])
	// Fields from 3 (state) on; index 0 here is field 3 in proc(5).
	rest := bytes.Fields(b[closeIdx+1:])
	const (
		first  = 3 // proc(5) number of rest[0]
		fState = 3 - first
		fPPID  = 4 - first
		fUTime = 14 - first
		fSTime = 15 - first
	)
	if len(rest) <= fSTime {
		return s, fmt.Errorf("%w: stat has %d fields after comm", ErrProcFormat, len(rest))
	}
	if len(rest[fState]) != 1 {
		return s, fmt.Errorf("%w: stat state", ErrProcFormat)
	}
	s.State = rest[fState][0]
	if s.PPID, err = strconv.Atoi(string(rest[fPPID])); err != nil || s.PPID < 0 {
		return s, fmt.Errorf("%w: stat ppid", ErrProcFormat)
	}
	if s.UTime, err = strconv.ParseUint(string(rest[fUTime]), 10, 64); err != nil {
		return s, fmt.Errorf("%w: stat utime", ErrProcFormat)
	}
	if s.STime, err = strconv.ParseUint(string(rest[fSTime]), 10, 64); err != nil {
		return s, fmt.Errorf("%w: stat stime", ErrProcFormat)
	}
	return s, nil
}

// Status is the part of /proc/PID/status the benchmark uses, in kB.
type Status struct {
	VmHWM int64 // peak resident set size
	VmRSS int64 // current resident set size
	// CtxSwitches is voluntary_ctxt_switches + nonvoluntary_ctxt_switches: of one thread when
	// read from /proc/PID/task/TID/status.
	CtxSwitches uint64
}

// ParseStatus parses the contents of /proc/PID/status. Kernel threads and zombies have no Vm*
// lines; both fields are then 0.
func ParseStatus(b []byte) (Status, error) {
	var s Status
	if len(b) > maxProcFile {
		return s, fmt.Errorf("%w: status too long", ErrProcFormat)
	}
	for line := range bytes.SplitSeq(b, []byte{'\n'}) {
		name, val, ok := bytes.Cut(line, []byte{':'})
		if !ok {
			continue
		}
		var dst *int64
		switch string(name) {
		case "VmHWM":
			dst = &s.VmHWM
		case "VmRSS":
			dst = &s.VmRSS
		case "voluntary_ctxt_switches", "nonvoluntary_ctxt_switches":
			n, err := strconv.ParseUint(string(bytes.TrimSpace(val)), 10, 64)
			if err != nil {
				return Status{}, fmt.Errorf("%w: status %s", ErrProcFormat, name)
			}
			s.CtxSwitches += n
			continue
		default:
			continue
		}
		f := bytes.Fields(val)
		if len(f) != 2 || string(f[1]) != "kB" {
			return Status{}, fmt.Errorf("%w: status %s", ErrProcFormat, name)
		}
		n, err := strconv.ParseInt(string(f[0]), 10, 64)
		if err != nil || n < 0 {
			return Status{}, fmt.Errorf("%w: status %s", ErrProcFormat, name)
		}
		*dst = n
	}
	return s, nil
}

// ProcFS reads process figures from a proc file system mounted at Root ("/proc" when empty).
type ProcFS struct{ Root string }

func (p ProcFS) root() string {
	if p.Root == "" {
		return "/proc"
	}
	return p.Root
}

func (p ProcFS) read(pid int, name string) ([]byte, error) {
	f, err := os.Open(filepath.Join(p.root(), strconv.Itoa(pid), name))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, maxProcFile+1))
}

// Stat reads and parses /proc/PID/stat.
func (p ProcFS) Stat(pid int) (Stat, error) {
	b, err := p.read(pid, "stat")
	if err != nil {
		return Stat{}, err
	}
	return ParseStat(b)
}

// Status reads and parses /proc/PID/status.
func (p ProcFS) Status(pid int) (Status, error) {
	b, err := p.read(pid, "status")
	if err != nil {
		return Status{}, err
	}
	return ParseStatus(b)
}

// Tree returns pid followed by all its live descendants (nginx: master, then workers).
func (p ProcFS) Tree(pid int) ([]int, error) {
	ents, err := os.ReadDir(p.root())
	if err != nil {
		return nil, err
	}
	children := map[int][]int{}
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil || n <= 0 {
			continue
		}
		st, err := p.Stat(n)
		if err != nil {
			continue // exited meanwhile, or not a process directory
		}
		children[st.PPID] = append(children[st.PPID], n)
	}
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out, nil
}

// Usage is the summed figures of a group of processes at one instant.
type Usage struct {
	PerPID   map[int]uint64 // CPU ticks of each process
	PerTask  map[int]uint64 // context switches of each thread (TID)
	HWMkB    int64          // sum of VmHWM (an upper bound when processes share pages)
	RSSkB    int64          // sum of VmRSS
	Problems []string       // processes that could not be read
}

// Sample reads the CPU ticks and memory of every process in pids.
func (p ProcFS) Sample(pids []int) Usage {
	u := Usage{PerPID: make(map[int]uint64, len(pids)), PerTask: map[int]uint64{}}
	for _, pid := range pids {
		st, err := p.Stat(pid)
		if err != nil {
			u.Problems = append(u.Problems, fmt.Sprintf("pid %d: %v", pid, err))
			continue
		}
		u.PerPID[pid] = st.CPUTicks()
		ss, err := p.Status(pid)
		if err != nil {
			u.Problems = append(u.Problems, fmt.Sprintf("pid %d: %v", pid, err))
			continue
		}
		u.HWMkB += ss.VmHWM
		u.RSSkB += ss.VmRSS
		p.sampleTasks(pid, u.PerTask)
	}
	return u
}

// sampleTasks adds the context switches of every thread of pid to into (threads that exit
// between the listing and the read are skipped).
func (p ProcFS) sampleTasks(pid int, into map[int]uint64) {
	ents, err := os.ReadDir(filepath.Join(p.root(), strconv.Itoa(pid), "task"))
	if err != nil {
		return
	}
	for _, e := range ents {
		tid, err := strconv.Atoi(e.Name())
		if err != nil || tid <= 0 {
			continue
		}
		b, err := p.read(pid, filepath.Join("task", e.Name(), "status"))
		if err != nil {
			continue
		}
		if st, err := ParseStatus(b); err == nil {
			into[tid] = st.CtxSwitches
		}
	}
}

// CtxSwitchesSince returns the context switches between before and u of the threads in u;
// a thread started in between counts whole.
func (u Usage) CtxSwitchesSince(before Usage) (n uint64) {
	for tid, c := range u.PerTask {
		if b := before.PerTask[tid]; c >= b {
			n += c - b
		}
	}
	return n
}

// CPUSince returns the CPU time spent between before and u by the processes present in both.
func (u Usage) CPUSince(before Usage) (ticks uint64) {
	for pid, t := range u.PerPID {
		if b, ok := before.PerPID[pid]; ok && t >= b {
			ticks += t - b
		}
	}
	return ticks
}

// TicksToMicros converts clock ticks to microseconds.
func TicksToMicros(t uint64) float64 { return float64(t) * 1e6 / UserHZ }
