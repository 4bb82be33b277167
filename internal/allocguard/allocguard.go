// Package allocguard holds tests to the allocations the request path makes: a change that adds
// one fails CI, like a failing test. The bounds are the measured counts, exact: one that is
// too high lets an allocation in unnoticed.
//
// Counts are only deterministic without the race detector (it makes sync.Pool drop objects at
// random), so under -race the check is skipped; .ci/run runs the guards without it.
package allocguard

import "testing"

// Exact fails t unless f allocates exactly want times per run (testing.AllocsPerRun over runs
// calls, after one warm-up call). what names the operation in the message.
//
// Updating a bound honestly: lower it when a change removes an allocation; raise it only for a
// change that needs the new allocation, and say in that commit which one and why.
func Exact(t testing.TB, what string, want int, runs int, f func()) {
	t.Helper()
	SkipUnderRace(t)
	Equal(t, what, want, testing.AllocsPerRun(runs, f))
}

// SkipUnderRace skips t under the race detector, where allocation counts are not deterministic.
func SkipUnderRace(t testing.TB) {
	t.Helper()
	if RaceEnabled {
		t.Skip("allocation counts under the race detector are not deterministic; .ci/run runs this test without -race")
	}
}

// Equal fails t unless got, a count of allocations per operation, is want (see Exact).
func Equal(t testing.TB, what string, want int, got float64) {
	t.Helper()
	switch {
	case got > float64(want):
		t.Errorf("%s: %v allocations, want %d: a change added an allocation to the request path "+
			"(find it with go test -run %s -memprofile m.out -memprofilerate 1; raise the bound only if it is needed, saying why)",
			what, got, want, t.Name())
	case got < float64(want):
		t.Errorf("%s: %v allocations, want %d: fewer than the bound, lower it to the new count", what, got, want)
	}
}
