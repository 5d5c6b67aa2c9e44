package kafka

import "testing"

func TestLagArithmetic(t *testing.T) {
	for _, c := range []struct {
		committed, low, high, want int64
	}{
		{committed: 5, low: 0, high: 9, want: 4},
		{committed: 9, low: 0, high: 9, want: 0},
		{committed: -1001, low: 0, high: 9, want: 9}, // nothing committed: from the earliest
		{committed: -1001, low: 4, high: 9, want: 5}, // the oldest deleted by retention
		{committed: 2, low: 4, high: 9, want: 5},     // committed offset out of range: reset to the earliest
		{committed: -1001, low: 0, high: 0, want: 0}, // empty partition
	} {
		if got := lag(c.committed, c.low, c.high); got != c.want {
			t.Errorf("lag(committed %d, low %d, high %d) = %d, want %d", c.committed, c.low, c.high, got, c.want)
		}
	}
}
