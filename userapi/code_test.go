package userapi

import (
	"math"
	"testing"
)

func TestCodeLimitIsUnbiased(t *testing.T) {
	if codeLimit%codeSpace != 0 || codeLimit > math.MaxUint32 || math.MaxUint32-codeLimit >= codeSpace {
		t.Fatalf("codeLimit %d is not the largest multiple of %d below 2^32", codeLimit, codeSpace)
	}
}

// The codes are six digits and spread evenly. The bound is 6 standard
// deviations, so a correct generator fails about once in 10^8 runs.
func TestNewCodeDistribution(t *testing.T) {
	const n = 200_000
	var first [10]int
	leadingZero := false
	for i := 0; i < n; i++ {
		c, err := newCode()
		if err != nil {
			t.Fatal(err)
		}
		if len(c) != CodeLength {
			t.Fatalf("code of length %d", len(c))
		}
		for _, r := range c {
			if r < '0' || r > '9' {
				t.Fatalf("code with a non-digit")
			}
		}
		first[c[0]-'0']++
		leadingZero = leadingZero || c[0] == '0'
	}
	if !leadingZero {
		t.Error("no code starts with 0: leading zeros are lost")
	}
	mean, sd := n/10.0, math.Sqrt(n*0.1*0.9)
	for d, count := range first {
		if math.Abs(float64(count)-mean) > 6*sd {
			t.Errorf("first digit %d: %d of %d codes, want about %.0f", d, count, n, mean)
		}
	}
}
