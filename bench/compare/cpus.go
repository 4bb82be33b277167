package compare

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

func allowedCPUs() []int {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return nil
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Cpus_allowed_list:"); ok {
			cpus, _ := ParseCPUList(strings.TrimSpace(v))
			return cpus
		}
	}
	return nil
}

// ParseCPUList parses a Linux CPU list such as "0-3,8,10-11".

func ParseCPUList(s string) ([]int, error) {
	var out []int
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil || a < 0 {
			return nil, fmt.Errorf("%w: cpu list %q", ErrProcFormat, s)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil || b < a || b-a > 4096 {
				return nil, fmt.Errorf("%w: cpu list %q", ErrProcFormat, s)
			}
		}
		for c := a; c <= b; c++ {
			out = append(out, c)
		}
		if len(out) > 4096 {
			return nil, fmt.Errorf("%w: cpu list too long", ErrProcFormat)
		}
	}
	return out, nil
}
