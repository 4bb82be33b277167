package loadgen

import "testing"

// The Decrypt rings of all keys together stay within ringBudget entries (give or take ringMin
// per key) however many keys the CreateKey share adds, and a few keys keep the full ring.
func TestRingSizeFor(t *testing.T) {
	for _, tc := range []struct{ keys, want int }{
		{0, ringSize}, {1, ringSize}, {50, ringSize}, {128, ringSize},
		{1000, ringBudget / 1000}, {4096, ringMin}, {12709, ringMin}, {1 << 20, ringMin},
	} {
		if got := ringSizeFor(tc.keys); got != tc.want {
			t.Errorf("ringSizeFor(%d) = %d, want %d", tc.keys, got, tc.want)
		}
		// Between the two clamps, the keys share the budget.
		if n, size := tc.keys, ringSizeFor(tc.keys); size > ringMin && size < ringSize && n*size > ringBudget {
			t.Errorf("%d keys × %d entries is over the budget of %d", n, size, ringBudget)
		}
	}
}
