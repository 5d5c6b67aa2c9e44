package userapi_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/countersign/countersign/userapi"
)

// serve runs one request through h in process.
func serve(h http.Handler, method, path, contentType, body string) response {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	b, _ := io.ReadAll(rec.Result().Body)
	return response{status: rec.Code, header: rec.Header(), body: b}
}

// Bad input never gets a 5xx, always gets a problem document, and writes
// nothing: no record, no event.
func TestBadInput(t *testing.T) {
	h := newHarness(t, func(c *userapi.Config) { c.RateLimitPerIP = userapi.RateLimitOff })
	ok := `"email":"ada@example.com","first_name":"Ada","last_name":"Lovelace"`
	big := `{"email":"ada@example.com","first_name":"` + strings.Repeat("a", 70<<10) + `","last_name":"L"}`
	json := "application/json"
	cases := []struct {
		name, method, path, ctype, body string
		status                          int
		code                            userapi.Code
	}{
		{"malformed JSON", "POST", "/api/register", json, `{"email":}`, 400, userapi.CodeInvalidRequest},
		{"truncated JSON", "POST", "/api/register", json, `{"email":"ada@example.com","first_na`, 400, userapi.CodeInvalidRequest},
		{"empty body", "POST", "/api/register", json, ``, 400, userapi.CodeInvalidRequest},
		{"null", "POST", "/api/register", json, `null`, 400, userapi.CodeInvalidRequest},
		{"array", "POST", "/api/register", json, `[{` + ok + `}]`, 400, userapi.CodeInvalidRequest},
		{"string", "POST", "/api/register", json, `"ada@example.com"`, 400, userapi.CodeInvalidRequest},
		{"two documents", "POST", "/api/register", json, `{` + ok + `}{` + ok + `}`, 400, userapi.CodeInvalidRequest},
		{"trailing garbage", "POST", "/api/register", json, `{` + ok + `} x`, 400, userapi.CodeInvalidRequest},
		{"unknown field", "POST", "/api/register", json, `{` + ok + `,"admin":true}`, 400, userapi.CodeInvalidRequest},
		{"wrong type", "POST", "/api/register", json, `{"email":42,"first_name":"Ada","last_name":"L"}`, 400, userapi.CodeInvalidRequest},
		{"name object", "POST", "/api/register", json, `{"email":"ada@example.com","first_name":{},"last_name":"L"}`, 400, userapi.CodeInvalidRequest},
		{"missing email", "POST", "/api/register", json, `{"first_name":"Ada","last_name":"L"}`, 400, userapi.CodeInvalidRequest},
		{"two addresses", "POST", "/api/register", json, `{"email":"a@example.com, b@example.com","first_name":"Ada","last_name":"L"}`, 400, userapi.CodeInvalidRequest},
		{"display name", "POST", "/api/register", json, `{"email":"Ada <ada@example.com>","first_name":"Ada","last_name":"L"}`, 400, userapi.CodeInvalidRequest},
		{"no domain", "POST", "/api/register", json, `{"email":"ada","first_name":"Ada","last_name":"L"}`, 400, userapi.CodeInvalidRequest},
		{"address too long", "POST", "/api/register", json, `{"email":"` + strings.Repeat("a", 64) + "@" + strings.Repeat("b", 186) + `.com","first_name":"Ada","last_name":"L"}`, 400, userapi.CodeInvalidRequest},
		{"CRLF in name", "POST", "/api/register", json, `{"email":"ada@example.com","first_name":"Ada\r\nBcc: x@evil.example","last_name":"L"}`, 400, userapi.CodeInvalidRequest},
		{"LF at name end", "POST", "/api/register", json, `{"email":"ada@example.com","first_name":"Ada\n","last_name":"L"}`, 400, userapi.CodeInvalidRequest},
		{"CR in address", "POST", "/api/register", json, `{"email":"ada@example.com\r","first_name":"Ada","last_name":"L"}`, 400, userapi.CodeInvalidRequest},
		{"bidi override in name", "POST", "/api/register", json, `{"email":"ada@example.com","first_name":"Ada\u202e","last_name":"L"}`, 400, userapi.CodeInvalidRequest},
		{"empty name", "POST", "/api/register", json, `{"email":"ada@example.com","first_name":"  ","last_name":"L"}`, 400, userapi.CodeInvalidRequest},
		{"name of 101", "POST", "/api/register", json, `{"email":"ada@example.com","first_name":"` + strings.Repeat("é", 101) + `","last_name":"L"}`, 400, userapi.CodeInvalidRequest},
		{"code of 5", "POST", "/api/verify", json, `{"email":"ada@example.com","code":"12345"}`, 400, userapi.CodeInvalidRequest},
		{"code not digits", "POST", "/api/verify", json, `{"email":"ada@example.com","code":"12345a"}`, 400, userapi.CodeInvalidRequest},
		{"code as number", "POST", "/api/verify", json, `{"email":"ada@example.com","code":123456}`, 400, userapi.CodeInvalidRequest},
		{"resend unknown field", "POST", "/api/resend", json, `{"email":"ada@example.com","code":"123456"}`, 400, userapi.CodeInvalidRequest},
		{"text/plain", "POST", "/api/register", "text/plain", `{` + ok + `}`, 415, userapi.CodeUnsupportedMediaType},
		{"form", "POST", "/api/verify", "application/x-www-form-urlencoded", `email=a`, 415, userapi.CodeUnsupportedMediaType},
		{"no content type", "POST", "/api/resend", "", `{"email":"ada@example.com"}`, 415, userapi.CodeUnsupportedMediaType},
		{"latin1", "POST", "/api/register", "application/json; charset=iso-8859-1", `{` + ok + `}`, 415, userapi.CodeUnsupportedMediaType},
		{"bad media type", "POST", "/api/register", "application/json; charset", `{` + ok + `}`, 415, userapi.CodeUnsupportedMediaType},
		{"body over 64 KiB", "POST", "/api/register", json, big, 413, userapi.CodeBodyTooLarge},
		{"GET register", "GET", "/api/register", "", ``, 405, userapi.CodeMethodNotAllowed},
		{"PUT verify", "PUT", "/api/verify", json, `{}`, 405, userapi.CodeMethodNotAllowed},
		{"POST healthz", "POST", "/healthz", json, `{}`, 405, userapi.CodeMethodNotAllowed},
		{"metrics not on the public port", "GET", "/metrics", "", ``, 404, userapi.CodeNotFound},
		{"unknown path", "GET", "/nowhere", "", ``, 404, userapi.CodeNotFound},
		{"unknown api path", "POST", "/api/users", json, `{}`, 404, userapi.CodeNotFound},
		{"trailing slash", "POST", "/api/register/", json, `{` + ok + `}`, 404, userapi.CodeNotFound},
		{"dot segments", "POST", "/api/../api/register", json, `{` + ok + `}`, 404, userapi.CodeNotFound},
		{"root", "GET", "/", "", ``, 404, userapi.CodeNotFound},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := h.do(tc.method, tc.path, tc.ctype, tc.body)
			wantProblem(t, r, tc.status, tc.code)
			if tc.status == 405 {
				want := "POST"
				if !strings.HasPrefix(tc.path, "/api/") {
					want = "GET"
				}
				if got := r.header.Get("Allow"); got != want {
					t.Errorf("Allow %q, want %q", got, want)
				}
			}
		})
	}
	t.Run("chunked body over 64 KiB", func(t *testing.T) {
		// No Content-Length: the limit is enforced while reading.
		req, _ := http.NewRequest(http.MethodPost, h.base+"/api/register", io.MultiReader(strings.NewReader(big)))
		req.Header.Set("Content-Type", json)
		req.ContentLength = -1
		wantProblem(t, h.send(req), 413, userapi.CodeBodyTooLarge)
	})

	if n, _ := h.store.Len(context.Background()); n != 0 {
		t.Errorf("bad input left %d records", n)
	}
	if c := h.pub.calls.Load(); c != 0 {
		t.Errorf("bad input published %d events", c)
	}
}

// Accepted inputs at the limits, so the refusals above are not too eager.
func TestInputLimitsAccepted(t *testing.T) {
	h := newHarness(t, func(c *userapi.Config) { c.RateLimitPerIP = userapi.RateLimitOff })
	local := h.email()
	local = local[:strings.IndexByte(local, '@')]
	// 254 bytes, in labels of at most 63 (a longer label is not a host name).
	domain := "com"
	for n := 254 - len(local) - 1 - len(domain); n > 0; {
		l := min(n-1, 63)
		domain = strings.Repeat("d", l) + "." + domain
		n -= l + 1
	}
	long := local + "@" + domain
	if len(long) != 254 {
		t.Fatalf("built a %d-byte address", len(long))
	}
	h.logs.addEmail(long)
	for name, body := range map[string]string{
		"254-byte address":     `{"email":"` + long + `","first_name":"Ada","last_name":"L"}`,
		"100-character name":   `{"email":"n-` + h.email() + `","first_name":"` + strings.Repeat("é", 100) + `","last_name":"L"}`,
		"charset utf-8":        `{"email":"c-` + h.email() + `","first_name":"Zoë","last_name":"Ødegård"}`,
		"ZWJ and CJK in names": `{"email":"z-` + h.email() + `","first_name":"李\u200d","last_name":"小龍"}`,
	} {
		t.Run(name, func(t *testing.T) {
			h.mustStatus(h.do(http.MethodPost, "/api/register", "application/json; charset=UTF-8", body), http.StatusAccepted)
		})
	}
}
