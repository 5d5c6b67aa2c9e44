package userapi_test

import (
	"bytes"
	"context"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/countersign/countersign/events"
	"github.com/countersign/countersign/templates"
	"github.com/countersign/countersign/userapi"
)

// recorder is a Publisher that keeps what it is given.
type recorder struct {
	mu     sync.Mutex
	events []events.Event
}

func (r *recorder) Publish(_ context.Context, e events.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
	return nil
}

func (r *recorder) ofType(typ string) []events.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []events.Event
	for _, e := range r.events {
		if e.Type == typ {
			out = append(out, e)
		}
	}
	return out
}

type pagesHarness struct {
	t    *testing.T
	srv  *httptest.Server
	pub  *recorder
	keys *events.Keyring
	logs *bytes.Buffer
}

func newPagesHarness(t *testing.T, configure func(*userapi.Config)) *pagesHarness {
	t.Helper()
	keys, err := events.NewRandomKeyring()
	if err != nil {
		t.Fatal(err)
	}
	h := &pagesHarness{t: t, pub: &recorder{}, keys: keys, logs: &bytes.Buffer{}}
	cfg := userapi.Config{Pages: true, PublicURL: "https://accounts.example.com", RateLimitPerIP: userapi.RateLimitOff, ResendInterval: time.Second}
	if configure != nil {
		configure(&cfg)
	}
	s, err := userapi.NewServer(cfg, userapi.Deps{Publisher: h.pub, Keyring: keys, Registry: prometheus.NewRegistry(),
		Logger: slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	h.srv = httptest.NewServer(s.Handler())
	t.Cleanup(h.srv.Close)
	return h
}

type pageResponse struct {
	status int
	header http.Header
	body   string
}

// do sends a browser-like request: same-origin unless headers say otherwise.
func (h *pagesHarness) do(method, path string, form url.Values, header ...string) pageResponse {
	h.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, h.srv.URL+path, body)
	if err != nil {
		h.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Sec-Fetch-Site", "same-origin")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return pageResponse{resp.StatusCode, resp.Header, string(b)}
}

// register registers addr through the form and returns the link token the
// event carries.
func (h *pagesHarness) register(addr, lang string) string {
	h.t.Helper()
	before := len(h.pub.ofType(events.TopicUserAccountCreated))
	r := h.do(http.MethodPost, "/", url.Values{"email": {addr}, "first_name": {"Ada"}, "last_name": {"Lovelace"}, "lang": {lang}})
	if r.status != http.StatusSeeOther || r.header.Get("Location") != "/check?lang="+lang {
		h.t.Fatalf("register: %d %s\n%s", r.status, r.header.Get("Location"), r.body)
	}
	created := h.pub.ofType(events.TopicUserAccountCreated)
	if len(created) != before+1 {
		h.t.Fatalf("%d user_account_created, want %d", len(created), before+1)
	}
	return h.token(created[len(created)-1], lang)
}

func (h *pagesHarness) token(e events.Event, lang string) string {
	h.t.Helper()
	d, err := e.UserAccountCreated()
	if err != nil {
		h.t.Fatal(err)
	}
	if d.EncryptedLinkToken == nil || d.Locale != lang {
		h.t.Fatalf("event: link token %v, locale %q; want a token and %q", d.EncryptedLinkToken, d.Locale, lang)
	}
	tok, err := h.keys.OpenLinkToken(*d.EncryptedLinkToken, d.UserID, d.Email)
	if err != nil {
		h.t.Fatal(err)
	}
	if len(tok) < 22 {
		h.t.Fatalf("token %d characters, want at least 128 bits", len(tok))
	}
	return tok
}

func TestPagesHeaders(t *testing.T) {
	h := newPagesHarness(t, nil)
	for _, p := range []string{"/", "/check", "/verified", "/confirm/x", "/static/style.css"} {
		r := h.do(http.MethodGet, p, nil)
		for name, want := range map[string]string{
			"Content-Security-Policy": "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'",
			"X-Frame-Options":         "DENY",
			"Referrer-Policy":         "no-referrer",
			"X-Content-Type-Options":  "nosniff",
		} {
			if got := r.header.Get(name); got != want {
				t.Errorf("GET %s: %s = %q, want %q", p, name, got, want)
			}
		}
	}
	if r := h.do(http.MethodGet, "/nowhere", nil, "Accept", "text/html"); r.status != http.StatusNotFound || !strings.Contains(r.body, "<html") {
		t.Errorf("a browser's 404: %d %.80q", r.status, r.body)
	}
	if r := h.do(http.MethodGet, "/nowhere", nil); r.header.Get("Content-Type") != userapi.ContentTypeProblem {
		t.Errorf("an API client's 404 is %q, want problem+json", r.header.Get("Content-Type"))
	}
}

func TestPagesLanguage(t *testing.T) {
	h := newPagesHarness(t, nil)
	if r := h.do(http.MethodGet, "/", nil, "Accept-Language", "zh-CN,zh;q=0.9"); !strings.Contains(r.body, `<html lang="zh-CN">`) || !strings.Contains(r.body, "创建您的账户") {
		t.Errorf("Accept-Language zh-CN did not give the Chinese page")
	}
	if r := h.do(http.MethodGet, "/?lang=en", nil, "Accept-Language", "zh-CN"); !strings.Contains(r.body, "Create your account") {
		t.Errorf("?lang=en did not win over Accept-Language")
	}
	if r := h.do(http.MethodGet, "/?lang=xx", nil); !strings.Contains(r.body, `<html lang="en">`) {
		t.Errorf("an unknown lang did not fall back to English")
	}
}

// Opening the link publishes nothing; the button's POST verifies once.
func TestPagesLinkNeedsTheButton(t *testing.T) {
	h := newPagesHarness(t, nil)
	tok := h.register("ada@example.com", "en")
	for range 3 { // a scanner, a preview, the person
		r := h.do(http.MethodGet, events.ConfirmPath+tok, nil)
		if r.status != http.StatusOK || !strings.Contains(r.body, "Confirm my address") {
			t.Fatalf("GET link: %d\n%s", r.status, r.body)
		}
	}
	if n := len(h.pub.ofType(events.TopicUserAccountVerified)); n != 0 {
		t.Fatalf("opening the link published %d user_account_verified", n)
	}
	// No cookie: another device.
	r := h.do(http.MethodPost, events.ConfirmPath+tok, url.Values{"lang": {"zh-CN"}})
	if r.status != http.StatusSeeOther || r.header.Get("Location") != "/verified?lang=zh-CN" {
		t.Fatalf("POST link: %d %s\n%s", r.status, r.header.Get("Location"), r.body)
	}
	v := h.pub.ofType(events.TopicUserAccountVerified)
	if len(v) != 1 {
		t.Fatalf("%d user_account_verified, want 1", len(v))
	}
	if d, _ := v[0].UserAccountVerified(); d.Locale != "zh-CN" || d.Email != "ada@example.com" {
		t.Errorf("verified %+v", d)
	}
	if r := h.do(http.MethodPost, events.ConfirmPath+tok, url.Values{}); r.status != http.StatusGone {
		t.Errorf("second POST: %d, want 410", r.status)
	}
	if r := h.do(http.MethodGet, events.ConfirmPath+tok, nil); r.status != http.StatusGone || !strings.Contains(r.body, "no longer works") {
		t.Errorf("GET a used link: %d", r.status)
	}
	if len(h.pub.ofType(events.TopicUserAccountVerified)) != 1 {
		t.Error("a second user_account_verified")
	}
	if strings.Contains(h.logs.String(), tok) {
		t.Error("the link token is in the logs")
	}
}

// The link is not subject to the wrong-code budget, and the code is void
// once the link verified.
func TestPagesLinkIgnoresTheAttemptBudget(t *testing.T) {
	h := newPagesHarness(t, func(c *userapi.Config) { c.CodeMaxAttempts = 2 })
	tok := h.register("bob@example.com", "en")
	statuses := []int{}
	for range 3 {
		r := h.do(http.MethodPost, "/check", url.Values{"email": {"bob@example.com"}, "code": {"000000"}, "lang": {"en"}})
		statuses = append(statuses, r.status)
		if !strings.Contains(r.body, `aria-invalid="true"`) || !strings.Contains(r.body, "autofocus") {
			t.Errorf("wrong code page lacks aria-invalid or autofocus")
		}
	}
	// 000000 may be the code itself once in a million runs: then 303.
	if statuses[2] != http.StatusTooManyRequests && statuses[0] != http.StatusSeeOther {
		t.Errorf("wrong codes: %v, want 400, 400, 429", statuses)
	}
	if r := h.do(http.MethodPost, events.ConfirmPath+tok, url.Values{}); r.status != http.StatusSeeOther {
		t.Errorf("link after the budget: %d, want 303", r.status)
	}
}

// A link lives and dies with its code: a resend while the code is alive
// mails the same code (issue 13), so the old link still works; once the
// attempts are used up a resend stores a new code, and the old link dies.
func TestPagesLinkDiesWithItsCode(t *testing.T) {
	h := newPagesHarness(t, func(c *userapi.Config) { c.CodeMaxAttempts = 1 })
	old := h.register("cy@example.com", "en")
	time.Sleep(1100 * time.Millisecond) // RESEND_INTERVAL is 1s here
	r := h.do(http.MethodPost, "/resend", url.Values{"email": {"cy@example.com"}, "lang": {"en"}})
	if r.status != http.StatusSeeOther || r.header.Get("Location") != "/check?lang=en&resent=1" {
		t.Fatalf("resend: %d %s", r.status, r.header.Get("Location"))
	}
	if r := h.do(http.MethodGet, events.ConfirmPath+old, nil); r.status != http.StatusOK {
		t.Errorf("old link after a resend of the same code: %d, want 200", r.status)
	}
	// The one attempt, spent on a code that is certainly wrong.
	created := h.pub.ofType(events.TopicUserAccountCreated)
	d, err := created[len(created)-1].UserAccountCreated()
	if err != nil {
		t.Fatal(err)
	}
	code, err := h.keys.Open(d)
	if err != nil {
		t.Fatal(err)
	}
	wrong := "000000"
	if code == wrong {
		wrong = "000001"
	}
	if r := h.do(http.MethodPost, "/check", url.Values{"email": {"cy@example.com"}, "code": {wrong}, "lang": {"en"}}); r.status == http.StatusSeeOther {
		t.Fatal("a wrong code verified")
	}
	time.Sleep(1100 * time.Millisecond)
	if r := h.do(http.MethodPost, "/resend", url.Values{"email": {"cy@example.com"}, "lang": {"en"}}); r.status != http.StatusSeeOther {
		t.Fatalf("second resend: %d", r.status)
	}
	created = h.pub.ofType(events.TopicUserAccountCreated)
	fresh := h.token(created[len(created)-1], "en")
	if r := h.do(http.MethodGet, events.ConfirmPath+old, nil); r.status != http.StatusGone {
		t.Errorf("old link after a new code: %d, want 410", r.status)
	}
	if r := h.do(http.MethodPost, events.ConfirmPath+old, url.Values{}); r.status != http.StatusGone {
		t.Errorf("old link POST after a new code: %d, want 410", r.status)
	}
	if r := h.do(http.MethodPost, events.ConfirmPath+fresh, url.Values{}); r.status != http.StatusSeeOther {
		t.Errorf("new link: %d, want 303", r.status)
	}
}

func TestPagesRefuseCrossSitePosts(t *testing.T) {
	h := newPagesHarness(t, nil)
	form := url.Values{"email": {"dee@example.com"}, "first_name": {"D"}, "last_name": {"E"}}
	for _, hdr := range [][]string{
		{"Sec-Fetch-Site", "cross-site"},
		{"Sec-Fetch-Site", "same-site"},
		{"Sec-Fetch-Site", "", "Origin", "https://evil.example"},
	} {
		r := h.do(http.MethodPost, "/", form, hdr...)
		if r.status != http.StatusForbidden || !strings.Contains(r.body, "Request refused") {
			t.Errorf("POST with %v: %d, want 403 and the refusal page", hdr, r.status)
		}
	}
	if n := len(h.pub.ofType(events.TopicUserAccountCreated)); n != 0 {
		t.Errorf("a refused post published %d events", n)
	}
	// The public origin, as a proxy in front would pass it.
	if r := h.do(http.MethodPost, "/", form, "Sec-Fetch-Site", "", "Origin", "https://accounts.example.com"); r.status != http.StatusSeeOther {
		t.Errorf("POST from PUBLIC_URL's origin: %d, want 303", r.status)
	}
}

func TestPagesFormErrors(t *testing.T) {
	h := newPagesHarness(t, nil)
	r := h.do(http.MethodPost, "/", url.Values{"email": {"not-an-address"}, "first_name": {""}, "last_name": {"L"}, "lang": {"en"}})
	if r.status != http.StatusUnprocessableEntity {
		t.Fatalf("status %d", r.status)
	}
	for _, want := range []string{`role="alert"`, `aria-live="assertive"`, "Enter an email address like name@example.com.", "Enter your first name.",
		`id="email" name="email" type="email" autocomplete="email" inputmode="email" spellcheck="false" required maxlength="254" value="not-an-address" aria-invalid="true" aria-describedby="email-error" autofocus`} {
		if !strings.Contains(r.body, want) {
			t.Errorf("error page lacks %q", want)
		}
	}
	if strings.Count(r.body, "autofocus") != 1 {
		t.Errorf("autofocus %d times, want once (the first error)", strings.Count(r.body, "autofocus"))
	}
}

func TestPublicURLRequiredWithPages(t *testing.T) {
	for _, v := range []string{"", "accounts.example.com", "ftp://x", "https://x/?a=1", "https://u:p@x"} {
		_, err := userapi.NewServer(userapi.Config{Pages: true, PublicURL: v}, userapi.Deps{Publisher: &recorder{}, Keyring: mustKeyring(t)})
		if err == nil || !strings.Contains(err.Error(), "PUBLIC_URL") {
			t.Errorf("PUBLIC_URL=%q: %v, want an error naming PUBLIC_URL", v, err)
		}
	}
}

func mustKeyring(t *testing.T) *events.Keyring {
	k, err := events.NewRandomKeyring()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// Every page with its stylesheet and script stays under 30 KB.
func TestPagesWeight(t *testing.T) {
	h := newPagesHarness(t, nil)
	assets := 0
	_ = fs.WalkDir(templates.Static(), ".", func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			b, _ := fs.ReadFile(templates.Static(), p)
			assets += len(b)
		}
		return nil
	})
	tok := h.register("w@example.com", "zh-CN")
	for _, p := range []string{"/", "/?lang=zh-CN", "/check", events.ConfirmPath + tok, "/verified"} {
		n := len(h.do(http.MethodGet, p, nil).body) + assets
		t.Logf("%s: %d bytes with its assets (%d)", p, n, assets)
		if n > 30<<10 {
			t.Errorf("%s weighs %d bytes, over 30 KB", p, n)
		}
	}
}

// The JSON API's mail follows the request's Accept-Language, as the pages'
// does: an app calling the API from a browser passes the person's. Without
// the header the events carry no locale (English).
func TestAPIMailFollowsAcceptLanguage(t *testing.T) {
	h := newPagesHarness(t, nil)
	post := func(path, body, lang string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, h.srv.URL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		if lang != "" {
			req.Header.Set("Accept-Language", lang)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode >= 300 {
			t.Fatalf("%s: %d %s", path, resp.StatusCode, b)
		}
	}
	post("/api/register", `{"email":"li@example.com","first_name":"Li","last_name":"Lei"}`, "fr-FR, zh-CN;q=0.8, en;q=0.5")
	post("/api/register", `{"email":"ada@example.com","first_name":"Ada","last_name":"Lovelace"}`, "")
	created := h.pub.ofType(events.TopicUserAccountCreated)
	if len(created) != 2 {
		t.Fatalf("%d user_account_created, want 2", len(created))
	}
	li, err := created[0].UserAccountCreated()
	if err != nil || li.Locale != "zh-CN" {
		t.Errorf("register with Accept-Language zh-CN;q=0.8 (fr unsupported): locale %q, %v; want zh-CN", li.Locale, err)
	}
	if ada, err := created[1].UserAccountCreated(); err != nil || ada.Locale != "" {
		t.Errorf("register without Accept-Language: locale %q, %v; want none", ada.Locale, err)
	}

	code, err := h.keys.Open(li)
	if err != nil {
		t.Fatal(err)
	}
	post("/api/verify", `{"email":"li@example.com","code":"`+code+`"}`, "zh-CN")
	verified := h.pub.ofType(events.TopicUserAccountVerified)
	if len(verified) != 1 {
		t.Fatalf("%d user_account_verified, want 1", len(verified))
	}
	if v, err := verified[0].UserAccountVerified(); err != nil || v.Locale != "zh-CN" {
		t.Errorf("verify with Accept-Language zh-CN: locale %q, %v", v.Locale, err)
	}

	post("/api/register", `{"email":"li@example.com","first_name":"Li","last_name":"Lei"}`, "zh-Hans-CN")
	notices := h.pub.ofType(events.TopicUserAccountExists)
	if len(notices) != 1 {
		t.Fatalf("%d user_account_exists, want 1", len(notices))
	}
	if n, err := notices[0].UserAccountExists(); err != nil || n.Locale != "zh-CN" {
		t.Errorf("notice for an API register with Accept-Language zh-Hans-CN: locale %q, %v", n.Locale, err)
	}
}
