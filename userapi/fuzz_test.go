package userapi

import (
	"bytes"
	"errors"
	"net"
	"net/http/httptest"
	"net/mail"
	"strings"
	"testing"
	"unicode/utf8"

	"golang.org/x/net/idna"
	"golang.org/x/text/unicode/norm"

	"github.com/countersign/countersign/events"
)

// Run one: go test -run '^$' -fuzz FuzzDecodeRegister -fuzztime 60s ./userapi/
// Without -fuzz the seeds run as ordinary tests.

func seedBodies(f *testing.F, bodies ...string) {
	for _, ct := range []string{"application/json", "application/json; charset=utf-8", "text/plain", ""} {
		for _, b := range bodies {
			f.Add(ct, []byte(b))
		}
	}
}

// decodeFuzz runs the decoder as a handler does and checks what every
// outcome must satisfy: a refusal is a client error (400, 413 or 415), never
// anything else.
func decodeFuzz(t *testing.T, contentType string, body []byte, v validator) bool {
	req := httptest.NewRequest("POST", "/api/x", bytes.NewReader(body))
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	err := decodeRequest(httptest.NewRecorder(), req, v)
	if err == nil {
		return true
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("decode error %T %v is not an *Error: it would answer 500", err, err)
	}
	switch e.Code {
	case CodeInvalidRequest, CodeBodyTooLarge, CodeUnsupportedMediaType:
	default:
		t.Fatalf("decode error with code %s", e.Code)
	}
	if e.Detail == "" || !utf8.ValidString(e.Detail) {
		t.Fatalf("detail %q", e.Detail)
	}
	return false
}

func checkEmail(t *testing.T, s string) {
	t.Helper()
	if s != events.NormalizeEmail(s) {
		t.Fatalf("accepted address %q is not normalized", s)
	}
	if s == "" || len(s) > MaxEmailLength || strings.ContainsFunc(s, isForbiddenRune) || !utf8.ValidString(s) {
		t.Fatalf("accepted address %q breaks a limit", s)
	}
	a, err := mail.ParseAddress(s)
	if err != nil || a.Name != "" {
		t.Fatalf("accepted address %q is not one bare address: %v", s, err)
	}
	// The strict rules (issue 14): NFC, nothing invisible, no width
	// variants before the @, a routable domain of valid host name labels.
	if !norm.NFC.IsNormalString(s) {
		t.Fatalf("accepted address %q is not NFC", s)
	}
	if strings.ContainsFunc(s, isInvisibleRune) {
		t.Fatalf("accepted address %q has an invisible character", s)
	}
	at := strings.LastIndexByte(s, '@')
	if strings.ContainsFunc(s[:at], isWidthVariant) {
		t.Fatalf("accepted address %q has a fullwidth or halfwidth local part", s)
	}
	ascii, err := idna.Lookup.ToASCII(s[at+1:])
	if err != nil || strings.HasPrefix(s[at+1:], "[") || !strings.Contains(ascii, ".") || net.ParseIP(ascii) != nil {
		t.Fatalf("accepted address %q has a domain mail cannot be routed to (%q, %v)", s, ascii, err)
	}
	for _, label := range strings.Split(ascii, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' ||
			strings.Trim(label, "abcdefghijklmnopqrstuvwxyz0123456789-") != "" {
			t.Fatalf("accepted address %q has a label %q that is not a host name label", s, label)
		}
	}
	if tld := ascii[strings.LastIndexByte(ascii, '.')+1:]; tld[0] < 'a' || tld[0] > 'z' {
		t.Fatalf("accepted address %q has a top-level domain %q that does not start with a letter", s, tld)
	}
	if len(s[:at])+1+len(ascii) > MaxEmailLength {
		t.Fatalf("accepted address %q is too long in its A-label form", s)
	}
}

func checkName(t *testing.T, s string) {
	t.Helper()
	n := utf8.RuneCountInString(s)
	if !utf8.ValidString(s) || n < 1 || n > MaxNameLength || s != strings.TrimSpace(s) ||
		strings.ContainsAny(s, "\r\n") || strings.ContainsFunc(s, isForbiddenRune) {
		t.Fatalf("accepted name %q breaks a rule", s)
	}
}

func FuzzDecodeRegister(f *testing.F) {
	seedBodies(f,
		`{"email":"ada@example.com","first_name":"Ada","last_name":"Lovelace"}`,
		`{"email":" Ada@Example.COM ","first_name":" Zoë ","last_name":"李"}`,
		`{"email":"a@b.c, d@e.f","first_name":"A","last_name":"B"}`,
		`{"email":"Ada <ada@example.com>","first_name":"A","last_name":"B"}`,
		`{"email":"\"a b\"@example.com","first_name":"A","last_name":"B"}`,
		`{"email":"a@[127.0.0.1]","first_name":"A","last_name":"B"}`,
		`{"email":"root@localhost","first_name":"A","last_name":"B"}`,
		`{"email":"user@127.0.0.1","first_name":"A","last_name":"B"}`,
		`{"email":"user@-bad-.com","first_name":"A","last_name":"B"}`,
		`{"email":"us\u200ber@example.com","first_name":"A","last_name":"B"}`,
		`{"email":"ja\u0301@example.com","first_name":"A","last_name":"B"}`,
		`{"email":"ｖｉｃｔｉｍ@ｇｍａｉｌ.com","first_name":"A","last_name":"B"}`,
		`{"email":"li@例子。测试","first_name":"李","last_name":"B"}`,
		`{"email":"josé@xn--fsqu00a.xn--0zwm56d","first_name":"A","last_name":"B"}`,
		`{"email":"ada@example.com","first_name":"A\r\nBcc: x@y.z","last_name":"B"}`,
		`{"email":"ada@example.com","first_name":"A\u2028","last_name":"B"}`,
		`{"email":"ada@example.com","first_name":"A","last_name":"B","x":1}`,
		`{"email":1}`, `{"email":`, `[]`, `null`, `{}{}`, ``, "\xff\xfe",
	)
	f.Fuzz(func(t *testing.T, contentType string, body []byte) {
		var q RegisterRequest
		if !decodeFuzz(t, contentType, body, &q) {
			return
		}
		checkEmail(t, q.Email)
		checkName(t, q.FirstName)
		checkName(t, q.LastName)
	})
}

func FuzzDecodeVerify(f *testing.F) {
	seedBodies(f,
		`{"email":"ada@example.com","code":"012345"}`,
		`{"email":"ada@example.com","code":" 012345 "}`,
		`{"email":"ada@example.com","code":"٠١٢٣٤٥"}`,
		`{"email":"ada@example.com","code":"12345"}`,
		`{"email":"ada@example.com","code":123456}`,
		`{"email":"ada@example.com","code":"1234567"}`,
		`{"email":"ada@example.com"}`,
	)
	f.Fuzz(func(t *testing.T, contentType string, body []byte) {
		var q VerifyRequest
		if !decodeFuzz(t, contentType, body, &q) {
			return
		}
		checkEmail(t, q.Email)
		if len(q.Code) != CodeLength || strings.Trim(q.Code, "0123456789") != "" {
			t.Fatalf("accepted code %q is not %d ASCII digits", q.Code, CodeLength)
		}
	})
}

func FuzzDecodeResend(f *testing.F) {
	seedBodies(f, `{"email":"ada@example.com"}`, `{"email":"li@例子.测试"}`, `{"email":"a@b"}`, `{"email":""}`, `{"email":null}`, `{"Email":"ada@example.com"}`)
	f.Fuzz(func(t *testing.T, contentType string, body []byte) {
		var q ResendRequest
		if decodeFuzz(t, contentType, body, &q) {
			checkEmail(t, q.Email)
		}
	})
}

// FuzzValidEmail drives the address rules directly, with seeds for each
// rule of issue 14 (point 4) and issue 20: every accepted address meets
// them, and its key is a fixed point (validating the key gives the key), so
// that the user API, the store and every subscriber agree on it.
func FuzzValidEmail(f *testing.F) {
	for _, s := range []string{
		"ada@example.com", " Ada@Example.COM ", "ja\u0301@example.com", "j\u00e1@example.com",
		"josé@example.com", "用户@example.com", "li@例子.测试", "li@例子。测试", "li@xn--fsqu00a.xn--0zwm56d",
		"ada@ｅｘａｍｐｌｅ.com", "ｖｉｃｔｉｍ@gmail.com", "user@[127.0.0.1]", "user@127.0.0.1", "root@localhost",
		"a@b", "user@-bad-.com", "us\u200ber@example.com", "us\u200der@example.com", "ada@faß.de",
		"ada@e\u0301cole.fr", "İ@example.com", "ǅ@example.com", "a@xn--zz.com", "a@ab--c.com", "a@0x7f.0x1", "a@b.xn--0zwm56d",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		key, err := validEmail(s)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Code != CodeInvalidRequest || e.Detail == "" {
				t.Fatalf("refusal %v is not a 400 with a detail", err)
			}
			return
		}
		checkEmail(t, key)
		again, err := validEmail(key)
		if err != nil || again != key {
			t.Fatalf("key %q of %q is not a fixed point: %q, %v", key, s, again, err)
		}
	})
}
