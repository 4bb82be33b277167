package cutover

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
)

// The table allows exactly the moves the machine has always taken, and (state, event) names at
// most one of them.
func TestStateTable(t *testing.T) {
	want := map[State][]State{
		StateServing:      {StateCopying},
		StateRolledBack:   {StateCopying},
		StateFinalized:    {StateCopying, StateRollingBack},
		StateCopyFailed:   {StateCopying, StateRolledBack},
		StateVerifyFailed: {StateCopying, StateRolledBack},
		StateCopying:      {StateCopyFailed, StateVerifying, StateRolledBack},
		StateVerifying:    {StateVerifyFailed, StateVerified, StateShadowing, StateRolledBack},
		StateShadowing:    {StateVerifyFailed, StateVerified, StateRolledBack},
		StateVerified:     {StateSwitched, StateVerifyFailed, StateRolledBack},
		StateSwitched:     {StateFinalized, StateRollingBack, StateVerified},
		StateRollingBack:  {StateRolledBack},
	}
	for _, from := range allStates {
		for _, to := range allStates {
			if got, exp := canMove(from, to), slices.Contains(want[from], to); got != exp {
				t.Errorf("%s → %s: legal %v, want %v", from, to, got, exp)
			}
		}
	}
	seen := map[State]map[event]bool{}
	for _, r := range table {
		if !r.to.valid() || r.needs == "" {
			t.Errorf("rule %+v", r)
		}
		for _, f := range r.from {
			if seen[f] == nil {
				seen[f] = map[event]bool{}
			}
			if seen[f][r.on] {
				t.Errorf("%s: event %q has two rules", f, r.on)
			}
			seen[f][r.on] = true
		}
	}
	_, _, err := next(StateServing, evSwitch)
	var me *MoveError
	if !errors.As(err, &me) || !errors.Is(err, ErrIllegalMove) || me.From != StateServing || me.StatusCode() != 409 {
		t.Errorf("switch from serving: %v", err)
	}
	if to, keys, err := next(StateCopyFailed, evRetry); err != nil || to != StateCopying || keys != keysFailed {
		t.Errorf("retry from copy_failed: %s %v %v", to, keys, err)
	}
}

// stateTable renders the state table as docs/architecture.md shows it.
func stateTable() string {
	var b strings.Builder
	b.WriteString("| from | event | to | serves | what must hold first |\n|---|---|---|---|---|\n")
	for _, r := range table {
		from := make([]string, len(r.from))
		for i, s := range r.from {
			from[i] = string(s)
		}
		p, f := routeSides(r.to)
		serves := sideName(p)
		if f != sideNone {
			serves += ", fallback " + sideName(f)
		}
		needs := r.needs
		switch r.keys {
		case keysReset:
			needs += "; key records reset"
		case keysFailed:
			needs += "; failed keys' records dropped"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", strings.Join(from, ", "), r.on, r.to, serves, needs)
	}
	return b.String()
}

func sideName(s side) string {
	if s == sideTarget {
		return "target"
	}
	return "source"
}

// The architecture page shows the state table as the code has it.
func TestStateTableDocumented(t *testing.T) {
	doc, err := os.ReadFile("../docs/architecture.md")
	if err != nil {
		t.Fatal(err)
	}
	if want := stateTable(); !strings.Contains(string(doc), want) {
		t.Errorf("docs/architecture.md lacks the state table as the code has it:\n%s", want)
	}
}
