package events

import (
	"bytes"
	"encoding/binary"
	"strconv"
	"testing"
	"time"
)

// The additional data of seals and MACs must not change by a byte: codes
// sealed and MACs stored by an older build must still open and verify.
// These are the first implementations, kept as the reference.
func referenceSealData(keyID string, d UserAccountCreated) []byte {
	b := []byte("countersign/code/v2")
	for _, f := range []string{keyID, d.UserID, NormalizeEmail(d.Email), d.FirstName, d.LastName,
		strconv.FormatInt(d.ExpiresAt.UnixMicro(), 10)} {
		b = binary.BigEndian.AppendUint32(b, uint32(len(f)))
		b = append(b, f...)
	}
	return b
}

func referencePurposeData(purpose, keyID, userID, email string) []byte {
	return []byte(purpose + "\x00" + keyID + "\x00" + userID + "\x00" + NormalizeEmail(email))
}

func FuzzAdditionalDataUnchanged(f *testing.F) {
	f.Add("k1", "0b0e5f3c-1", "Ada@Example.COM", "Ada", "", int64(1764500000123456))
	f.Add("", "", "li@例子.测试", "李", "雷", int64(-1))
	f.Fuzz(func(t *testing.T, keyID, userID, email, first, last string, micros int64) {
		d := UserAccountCreated{UserID: userID, Email: email, FirstName: first, LastName: last, ExpiresAt: time.UnixMicro(micros)}
		if got, want := sealData(keyID, d), referenceSealData(keyID, d); !bytes.Equal(got, want) {
			t.Fatalf("sealData %q, want %q", got, want)
		}
		if got, want := purposeData(first, keyID, userID, email), referencePurposeData(first, keyID, userID, email); !bytes.Equal(got, want) {
			t.Fatalf("purposeData %q, want %q", got, want)
		}
	})
}
