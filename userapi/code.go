package userapi

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
)

// The length of a code, in decimal digits (CODE_DIGITS).
const (
	MinCodeDigits     = 6
	MaxCodeDigits     = 10
	DefaultCodeDigits = 6
)

// codeSpace returns 10^digits, the number of distinct codes.
func codeSpace(digits int) uint64 {
	n := uint64(1)
	for range digits {
		n *= 10
	}
	return n
}

// codeLimit returns the largest multiple of space that fits in a uint64.
// Values at or above it are drawn again, so every code is equally likely:
// taking any uint64 modulo space would favour the codes below 2^64 mod space.
func codeLimit(space uint64) uint64 {
	return (^uint64(0) / space) * space
}

// newCode returns a verification code of digits decimal digits, uniform
// over all 10^digits of them, from crypto/rand. Leading zeros are kept.
func newCode(digits int) (string, error) {
	space := codeSpace(digits)
	limit := codeLimit(space)
	var b [8]byte
	for {
		if _, err := rand.Read(b[:]); err != nil {
			return "", fmt.Errorf("generate code: %w", err)
		}
		if n := binary.BigEndian.Uint64(b[:]); n < limit {
			return fmt.Sprintf("%0*d", digits, n%space), nil
		}
	}
}
