package userapi

import (
	"errors"
	"strings"
	"testing"
)

// The strict address rules of validEmail (issue 14, point 4): each refusal
// answers 400 invalid-request with a detail that says what is wrong and
// never quotes the address.
func TestValidEmailRefuses(t *testing.T) {
	for _, c := range []struct{ name, in, detail string }{
		{"IPv4 literal", "user@[127.0.0.1]", "IP address literal"},
		{"IPv6 literal", "user@[IPv6:::1]", "IP address literal"},
		{"bracketed name", "user@[example.com]", "IP address literal"},
		{"dotted IPv4 without brackets", "user@127.0.0.1", "is an IP address"},
		{"numeric top-level domain", "user@example.123", "is an IP address"},
		{"hexadecimal IPv4 form", "user@0x7f.0x1", "top-level domain"},
		{"top-level domain starting with a digit", "user@example.1com", "top-level domain"},
		{"single label localhost", "root@localhost", "no dot"},
		{"single label internal", "postmaster@internal", "no dot"},
		{"single label a@b", "a@b", "no dot"},
		{"single label IDN", "li@测试", "no dot"},
		{"hyphen at both ends", "user@-bad-.com", "not a valid host name"},
		{"hyphen at the end", "user@bad-.com", "not a valid host name"},
		{"underscore", "user@under_score.com", "not a valid host name"},
		{"label over 63", "user@" + strings.Repeat("a", 64) + ".com", "not a valid host name"},
		{"bad A-label", "user@xn--zz.com", "not a valid host name"},
		{"symbol in an IDN label", "user@ex☃mple..com", "not a single valid"},
		{"zero-width space in local part", "us\u200ber@example.com", "invisible"},
		{"zero-width space in domain", "user@exa\u200bmple.com", "invisible"},
		{"zero-width joiner", "us\u200der@example.com", "invisible"},
		{"zero-width non-joiner", "us\u200cer@example.com", "invisible"},
		{"word joiner", "us\u2060er@example.com", "invisible"},
		{"byte order mark", "\ufeffuser@example.com", "invisible"},
		{"soft hyphen", "us\u00ader@example.com", "invisible"},
		{"left-to-right mark", "user\u200e@example.com", "invisible"},
		{"Hangul filler", "\u3164@example.com", "invisible"},
		{"combining grapheme joiner", "use\u034fr@example.com", "invisible"},
		{"fullwidth local part", "ｖｉｃｔｉｍ@gmail.com", "fullwidth or halfwidth"},
		{"halfwidth katakana local part", "ｶﾀｶﾅ@example.jp", "fullwidth or halfwidth"},
		{"A-label form too long for the envelope", strings.Repeat("a", 64) + "@" + strings.Repeat("abcdé.", 15) + "com", "converted for DNS"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := validEmail(c.in)
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("validEmail accepted it as %q (err %v)", got, err)
			}
			if e.Code != CodeInvalidRequest || e.Code.Status() != 400 {
				t.Errorf("code %s", e.Code)
			}
			if !strings.Contains(e.Detail, c.detail) {
				t.Errorf("detail %q, want it to mention %q", e.Detail, c.detail)
			}
			if at := strings.LastIndexByte(c.in, '@'); strings.Contains(e.Detail, c.in[:at]) && at > 1 {
				t.Errorf("detail %q quotes the address", e.Detail)
			}
		})
	}
}

// Visually identical forms of one address are one key (NFC, then lower
// case); non-ASCII local parts and IDN domains are accepted.
func TestValidEmailAcceptsAndNormalizes(t *testing.T) {
	for _, c := range []struct{ name, in, want string }{
		{"plain", " Ada@Example.COM ", "ada@example.com"},
		{"composed á", "j\u00e1@example.com", "j\u00e1@example.com"},
		{"decomposed á is the same key", "ja\u0301@example.com", "j\u00e1@example.com"},
		{"upper-case decomposed Á", "JA\u0301@EXAMPLE.COM", "j\u00e1@example.com"},
		{"non-ASCII local part", "josé@example.com", "josé@example.com"},
		{"CJK local part", "用户@example.com", "用户@example.com"},
		{"IDN domain", "li@例子.测试", "li@例子.测试"},
		{"A-label domain keyed in Unicode", "li@xn--fsqu00a.xn--0zwm56d", "li@例子.测试"},
		{"ideographic full stop", "li@例子。测试", "li@例子.测试"},
		{"fullwidth domain folded to ASCII", "ada@ｅｘａｍｐｌｅ.com", "ada@example.com"},
		{"composed and decomposed domain", "ada@e\u0301cole.fr", "ada@\u00e9cole.fr"},
		{"German sharp s kept", "ada@faß.de", "ada@faß.de"},
		{"hyphen inside a label", "ada@my-host.example.com", "ada@my-host.example.com"},
		{"digits in labels", "ada@1and1.co.uk", "ada@1and1.co.uk"},
		{"plus tag", "ada+news@example.com", "ada+news@example.com"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := validEmail(c.in)
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			if got != c.want {
				t.Errorf("key %q, want %q", got, c.want)
			}
		})
	}
}

func TestNonASCIILocalPart(t *testing.T) {
	for in, want := range map[string]bool{
		"ada@example.com": false, "li@例子.测试": false, "josé@example.com": true, "用户@example.com": true,
	} {
		if got := nonASCIILocalPart(in); got != want {
			t.Errorf("nonASCIILocalPart(%q) = %v", in, got)
		}
	}
}

// BenchmarkValidEmail: the cost of the address rules per request.
func BenchmarkValidEmail(b *testing.B) {
	for _, in := range []string{"Ada.Lovelace+news@Example.COM", "li@例子.测试", "josé@xn--fsqu00a.xn--0zwm56d"} {
		b.Run(in, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := validEmail(in); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
