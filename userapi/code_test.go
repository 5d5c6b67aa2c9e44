package userapi

import (
	"math"
	"math/big"
	"testing"
)

func TestCodeLimitIsUnbiased(t *testing.T) {
	max := new(big.Int).SetUint64(math.MaxUint64)
	for d := MinCodeDigits; d <= MaxCodeDigits; d++ {
		space, limit := codeSpace(d), codeLimit(codeSpace(d))
		rest := new(big.Int).Sub(max, new(big.Int).SetUint64(limit))
		if limit%space != 0 || rest.Cmp(new(big.Int).SetUint64(space)) >= 0 {
			t.Fatalf("%d digits: limit %d is not the largest multiple of %d in a uint64", d, limit, space)
		}
	}
}

// The codes have the configured length and spread evenly. The bound is 6
// standard deviations, so a correct generator fails about once in 10^8 runs.
func TestNewCodeDistribution(t *testing.T) {
	for _, digits := range []int{MinCodeDigits, 8, MaxCodeDigits} {
		const n = 100_000
		var first [10]int
		leadingZero := false
		for i := 0; i < n; i++ {
			c, err := newCode(digits)
			if err != nil {
				t.Fatal(err)
			}
			if len(c) != digits {
				t.Fatalf("code of length %d, want %d", len(c), digits)
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
			t.Errorf("%d digits: no code starts with 0: leading zeros are lost", digits)
		}
		mean, sd := n/10.0, math.Sqrt(n*0.1*0.9)
		for d, count := range first {
			if math.Abs(float64(count)-mean) > 6*sd {
				t.Errorf("%d digits: first digit %d: %d of %d codes, want about %.0f", digits, d, count, n, mean)
			}
		}
	}
}
