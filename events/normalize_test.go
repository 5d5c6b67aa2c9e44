package events_test

import (
	"testing"
	"time"

	"github.com/countersign/countersign/events"
)

func TestNormalizeEmail(t *testing.T) {
	for _, c := range []struct{ name, in, want string }{
		{"trim and lower-case", "  Ada@Example.COM ", "ada@example.com"},
		{"composed á stays", "j\u00e1@example.com", "j\u00e1@example.com"},
		{"decomposed á composes (NFC)", "ja\u0301@example.com", "j\u00e1@example.com"},
		{"upper-case decomposed Á", "JA\u0301@EXAMPLE.COM", "j\u00e1@example.com"},
		{"IDN domain kept in Unicode", "li@例子.测试", "li@例子.测试"},
		{"A-label domain becomes Unicode", "li@XN--FSQU00A.xn--0zwm56d", "li@例子.测试"},
		{"ideographic full stop in domain", "li@例子。测试", "li@例子.测试"},
		{"fullwidth domain letters become ASCII", "ada@ＥＸＡＭＰＬＥ.com", "ada@example.com"},
		{"fullwidth local part is not folded", "ＡＤＡ@example.com", "ａｄａ@example.com"},
		{"non-ASCII local part", "JOSÉ@Example.com", "josé@example.com"},
		{"no @", " X ", "x"},
		{"invalid domain left as is", "a@-Bad-.com", "a@-bad-.com"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := events.NormalizeEmail(c.in)
			if got != c.want {
				t.Fatalf("NormalizeEmail(%q) = %q, want %q", c.in, got, c.want)
			}
			if again := events.NormalizeEmail(got); again != got {
				t.Fatalf("not a fixed point: %q then %q", got, again)
			}
		})
	}
}

// The seal's additional data goes through NormalizeEmail: a code sealed for
// one form of an address opens for every form with the same key.
func TestKeyringOpensForEveryFormOfOneAddress(t *testing.T) {
	k, err := events.ParseKeyring(mustKeyEntry(t))
	if err != nil {
		t.Fatal(err)
	}
	d := events.UserAccountCreated{UserID: "u1", Email: "li@xn--fsqu00a.xn--0zwm56d", FirstName: "Li", LastName: "Wei",
		ExpiresAt: time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)}
	sealed, err := k.Seal("123456", d)
	if err != nil {
		t.Fatal(err)
	}
	d.Email, d.EncryptedCode = "LI@例子。测试", sealed
	code, err := k.Open(d)
	if err != nil || code != "123456" {
		t.Fatalf("Open = %q, %v", code, err)
	}
}

func mustKeyEntry(t *testing.T) string {
	t.Helper()
	e, err := events.GenerateKeyEntry()
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// FuzzNormalizeEmail: the key is a fixed point, for any input, so that a
// key normalized again (by a subscriber, by the keyring) stays the key.
func FuzzNormalizeEmail(f *testing.F) {
	for _, s := range []string{"Ada@Example.COM", "JA\u0301@例子。测试", "li@XN--FSQU00A.xn--0zwm56d", "ｖ@ＥＸＡＭＰＬＥ.com", "İ@x.y", "a@-b-.c", "@", "a@b@c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		k := events.NormalizeEmail(s)
		if again := events.NormalizeEmail(k); again != k {
			t.Fatalf("NormalizeEmail(%q) = %q, then %q", s, k, again)
		}
	})
}
