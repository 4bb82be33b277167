//go:build !race

package allocguard

// RaceEnabled reports whether the race detector is on.
const RaceEnabled = false
