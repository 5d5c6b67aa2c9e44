package userapi

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
)

// codeSpace is the number of distinct codes: six decimal digits.
const codeSpace = 1_000_000

// codeLimit is the largest multiple of codeSpace that fits in a uint32.
// Values at or above it are drawn again, so every code is equally likely:
// taking any uint32 modulo 10^6 would favour the codes below 2^32 mod 10^6.
const codeLimit = (1 << 32) / codeSpace * codeSpace

// newCode returns a verification code of six decimal digits, uniform over
// 000000–999999, from crypto/rand. Leading zeros are kept.
func newCode() (string, error) {
	var b [4]byte
	for {
		if _, err := rand.Read(b[:]); err != nil {
			return "", fmt.Errorf("generate code: %w", err)
		}
		if n := binary.BigEndian.Uint32(b[:]); n < codeLimit {
			return fmt.Sprintf("%06d", n%codeSpace), nil
		}
	}
}
