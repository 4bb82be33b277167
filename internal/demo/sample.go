package demo

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/xksproxy/xksproxy/cutover"
)

// sampler follows the run every half second: the process's resident memory, and the pace of
// whichever controller drives.
type sampler struct {
	mu      sync.Mutex
	rssMax  uint64
	paceMin float64
	paceMax float64
	limited map[string]int // ticks by what limited the pace (its first words)
	stop    chan struct{}
	done    chan struct{}
}

// samplePeriod is how often the sampler looks; progressEvery, how often it prints progress.
const (
	samplePeriod  = 500 * time.Millisecond
	progressEvery = 10 * time.Second
)

// startSampler samples until stop; status is the driving controller's (ok false: none now).
// Every change of state or driver goes to tl.
func startSampler(tl *timeline, status func() (cutover.Status, bool)) *sampler {
	s := &sampler{stop: make(chan struct{}), done: make(chan struct{}), limited: map[string]int{}}
	go func() {
		defer close(s.done)
		t := time.NewTicker(samplePeriod)
		defer t.Stop()
		var last string
		var n int
		for {
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
			rss := rssBytes()
			st, ok := status()
			if now := stateLine(st, ok); now != last {
				tl.note(now)
				last = now
			}
			// A line of progress every 10 s while the migration runs: with 100 000 keys the
			// listing and the copy take minutes.
			if n++; n%int(progressEvery/samplePeriod) == 0 && ok && st.State.InMigration() {
				tl.report(st)
			}
			s.mu.Lock()
			s.rssMax = max(s.rssMax, rss)
			if ok && st.State.InMigration() && st.State != cutover.StateSwitched {
				r := st.Pace.CallsPerSecond
				if s.paceMin == 0 || r < s.paceMin {
					s.paceMin = r
				}
				s.paceMax = max(s.paceMax, r)
				s.limited[st.Pace.Limit]++
			}
			s.mu.Unlock()
		}
	}()
	return s
}

func (s *sampler) finish() {
	close(s.stop)
	<-s.done
}

// rssBytes is this process's resident set (Linux; 0 elsewhere).
func rssBytes() uint64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return 0
			}
			return kb << 10
		}
	}
	return 0
}

// fill adds the samples to the report: memory per key (the whole process: every replica, both
// emulators and the load generator; before is the resident set when the migration started).
func (s *sampler) fill(rep *Report, before uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rep.RSSBeforeMB = round(float64(before) / (1 << 20))
	rep.RSSPeakMB = round(float64(s.rssMax) / (1 << 20))
	if rep.KeysTotal > 0 && s.rssMax > before {
		rep.RSSGrowthBytesPerKey = round(float64(s.rssMax-before) / float64(rep.KeysTotal))
	}
	rep.PaceMinCallsPerSecond, rep.PaceMaxCallsPerSecond = s.paceMin, s.paceMax
	if len(s.limited) > 0 {
		rep.PaceLimitedTicks = s.limited
	}
}

// stateLine is the migration's state as the timeline records it.
func stateLine(st cutover.Status, ok bool) string {
	if !ok {
		return "no driver"
	}
	line := "state " + string(st.State)
	if st.Fleet != nil {
		line += " (driver " + st.Fleet.Member + ")"
		if len(st.Fleet.WaitingFor) > 0 {
			line += "; waiting for " + strings.Join(st.Fleet.WaitingFor, ", ")
		}
	}
	return line
}
