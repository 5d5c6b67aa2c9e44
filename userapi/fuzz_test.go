package userapi

import (
	"bytes"
	"errors"
	"net/http/httptest"
	"net/mail"
	"strings"
	"testing"
	"unicode/utf8"

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
		if len(q.Code) < MinCodeDigits || len(q.Code) > MaxCodeDigits || strings.Trim(q.Code, "0123456789") != "" {
			t.Fatalf("accepted code %q is not %d to %d ASCII digits", q.Code, MinCodeDigits, MaxCodeDigits)
		}
	})
}

func FuzzDecodeResend(f *testing.F) {
	seedBodies(f, `{"email":"ada@example.com"}`, `{"email":""}`, `{"email":null}`, `{"Email":"ada@example.com"}`)
	f.Fuzz(func(t *testing.T, contentType string, body []byte) {
		var q ResendRequest
		if decodeFuzz(t, contentType, body, &q) {
			checkEmail(t, q.Email)
		}
	})
}
