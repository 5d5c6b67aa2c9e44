package main_test

// Browser tests (issue 15): `countersign dev` driven by Debian's chromium,
// headless, over the Chrome DevTools Protocol (chromedp). They walk the
// pages as a person would: register, read the mail in the dev inbox, enter
// the code or open the link, confirm. With COUNTERSIGN_SCREENSHOTS=<dir>
// they also write the screenshots the README shows (phone and desktop).

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/countersign/countersign/events"
	"github.com/countersign/countersign/events/eventstest"
)

// chromium returns the browser's path, or fails with how to install it.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("chromium is not installed: apt-get install -y chromium (.ci/run installs it)")
	return ""
}

// devStack is one `countersign dev` with its pages and inbox.
type devStack struct {
	base, inbox, brokers string
	proc                 *proc
}

func startDevStack(t *testing.T) *devStack {
	t.Helper()
	dir := t.TempDir()
	httpAddr, inboxAddr := freeAddr(t), freeAddr(t)
	env := []string{"HTTP_ADDR=" + httpAddr, "DEV_INBOX_ADDR=" + inboxAddr, "METRICS_ADDR=off",
		"MAIL_OUTBOX_DIR=" + filepath.Join(dir, "outbox"), "LOG_LEVEL=info", "SUPPORT_EMAIL=help@example.com"}
	brokers, kafkaEnv := devKafka(t)
	env = append(env, kafkaEnv...)
	p := start(t, dir, env, "dev")
	s := &devStack{base: "http://" + httpAddr, inbox: "http://" + inboxAddr, brokers: brokers, proc: p}
	waitHTTP(t, p, s.base+"/readyz", 90*time.Second)
	waitHTTP(t, p, s.inbox+"/", 30*time.Second)
	out := p.output()
	for _, want := range []string{s.base + "/", s.inbox + "/"} {
		if !strings.Contains(out, want) {
			t.Errorf("the dev banner does not say to open %s:\n%s", want, out)
		}
	}
	return s
}

var (
	inboxRowRE = regexp.MustCompile(`<td>([^<]*)</td><td><a href="/mail/([^"]+)">([^<]*)</a>`)
	linkRE     = regexp.MustCompile(`https?://[^\s<>"]+` + regexp.QuoteMeta(events.ConfirmPath) + `[A-Za-z0-9_-]+`)
)

// inboxMail polls the dev inbox for the newest mail to addr whose subject
// contains subject, and returns its inbox path (/mail/<name>).
func (s *devStack) inboxMail(t *testing.T, addr, subject string) string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(s.inbox + "/")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			for _, m := range inboxRowRE.FindAllStringSubmatch(string(body), -1) {
				if strings.Contains(m[1], addr) && strings.Contains(m[3], subject) {
					return "/mail/" + m[2]
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no mail to %s with %q in the dev inbox after 60s", addr, subject)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// verifiedEvents reads user_account_verified records keyed addr.
func (s *devStack) verifiedEvents(t *testing.T, addr string) []events.UserAccountVerified {
	t.Helper()
	var out []events.UserAccountVerified
	for _, rec := range readWithKcat(t, s.brokers, events.TopicUserAccountVerified, addr) {
		e, err := events.Decode([]byte(rec))
		if err != nil {
			t.Fatal(err)
		}
		d, err := e.UserAccountVerified()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, d)
	}
	return out
}

// browser is one headless chromium; tab opens a fresh incognito-like
// context (its own cookies) with an Accept-Language.
type browser struct {
	ctx context.Context
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium(t)),
		chromedp.Flag("no-sandbox", true), // tests run as root in CI
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1280, 900),
	)
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancel)
	bctx, cancel2 := chromedp.NewContext(actx)
	t.Cleanup(cancel2)
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return &browser{ctx: bctx}
}

// tab is one browser context: separate cookies, its requests recorded.
type tab struct {
	ctx  context.Context
	mu   sync.Mutex
	reqs []string
}

func (b *browser) tab(t *testing.T, acceptLanguage string) *tab {
	t.Helper()
	ctx, cancel := chromedp.NewContext(b.ctx, chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	ctx, cancel2 := context.WithTimeout(ctx, 3*time.Minute)
	t.Cleanup(cancel2)
	tb := &tab{ctx: ctx}
	reqs := chromedp.Events(ctx, network.RequestWillBeSent)
	if err := chromedp.Do(ctx); err != nil {
		t.Fatal(err)
	}
	go func() {
		for ev, err := range reqs {
			if err != nil {
				return
			}
			tb.mu.Lock()
			tb.reqs = append(tb.reqs, ev.Request.URL)
			tb.mu.Unlock()
		}
	}()
	if _, err := chromedp.Call(ctx, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{Headers: network.Headers{"Accept-Language": acceptLanguage}}); err != nil {
		t.Fatal(err)
	}
	return tb
}

// requests returns and forgets the URLs requested so far.
func (tb *tab) requests() []string {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	r := tb.reqs
	tb.reqs = nil
	return r
}

func (tb *tab) run(t *testing.T, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(tb.ctx, actions...); err != nil {
		t.Fatal(err)
	}
}

func (tb *tab) text(t *testing.T, sel string) string {
	t.Helper()
	tb.run(t, chromedp.WaitVisible(chromedp.CSS(sel)))
	s, err := chromedp.Run(tb.ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(s)
}

func (tb *tab) h1(t *testing.T) string { return tb.text(t, "h1") }

func evalJS[T any](t *testing.T, tb *tab, js string) T {
	t.Helper()
	v, err := chromedp.Run(tb.ctx, chromedp.Evaluate[T](js))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// sameOrigin fails when a request went anywhere but origin.
func sameOrigin(t *testing.T, origin string, reqs []string) {
	t.Helper()
	if len(reqs) == 0 {
		t.Error("no request recorded")
	}
	for _, r := range reqs {
		u, err := url.Parse(r)
		if err != nil || u.Scheme+"://"+u.Host != origin {
			t.Errorf("request left the origin %s: %s", origin, r)
		}
	}
}

// screenshot writes the tab at phone and desktop widths into
// $COUNTERSIGN_SCREENSHOTS when it is set.
func (tb *tab) screenshot(t *testing.T, name string) {
	t.Helper()
	dir := os.Getenv("COUNTERSIGN_SCREENSHOTS")
	if dir == "" {
		return
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, v := range []struct {
		suffix string
		w, h   int64
		mobile bool
	}{{"phone", 390, 844, true}, {"desktop", 1280, 800, false}} {
		emulate := chromedp.EmulateViewport(v.w, v.h)
		if v.mobile {
			emulate = chromedp.EmulateViewport(v.w, v.h, chromedp.EmulateMobile)
		}
		tb.run(t, emulate, chromedp.Sleep(200*time.Millisecond))
		buf, err := chromedp.Run(tb.ctx, chromedp.CaptureScreenshot())
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name+"-"+v.suffix+".png"), buf, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tb.run(t, chromedp.EmulateViewport(1280, 900))
}

// screenshotDark is screenshot with prefers-color-scheme: dark.
func (tb *tab) screenshotDark(t *testing.T, name string) {
	t.Helper()
	if os.Getenv("COUNTERSIGN_SCREENSHOTS") == "" {
		return
	}
	dark := func(v string) {
		if _, err := chromedp.Call(tb.ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
			Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: v}}}); err != nil {
			t.Fatal(err)
		}
	}
	dark("dark")
	tb.screenshot(t, name)
	dark("")
}

func TestBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary and chromium")
	}
	s := startDevStack(t)
	b := newBrowser(t)

	// register → inbox → code (a wrong one first) → verified, in English.
	t.Run("CodeFlow", func(t *testing.T) {
		tb := b.tab(t, "en-GB,en;q=0.9")
		addr := eventstest.UniqueEmail(t)
		tb.run(t, chromedp.Navigate(s.base+"/"))
		if got := tb.h1(t); got != "Create your account" {
			t.Fatalf("h1 = %q", got)
		}
		tb.screenshot(t, "register")
		tb.screenshotDark(t, "register-dark")
		// Submitting empty: errors in words, announced, focus on the first.
		tb.run(t, chromedp.Click(chromedp.CSS(`button[type=submit]`)), chromedp.WaitVisible(chromedp.CSS("#error-summary")))
		focused := evalJS[string](t, tb, `document.activeElement.id`)
		if focused != "email" {
			t.Errorf("focus after errors is on %q, want the email field", focused)
		}
		if msg := tb.text(t, "#email-error"); msg != "Enter your email address." {
			t.Errorf("email error = %q", msg)
		}
		tb.screenshot(t, "register-errors")
		tb.run(t,
			chromedp.SendKeys(chromedp.CSS("#email"), addr),
			chromedp.SendKeys(chromedp.CSS("#first_name"), "Ada"),
			chromedp.SendKeys(chromedp.CSS("#last_name"), "Lovelace"),
			chromedp.Submit(chromedp.CSS("#email")),
			chromedp.WaitVisible(chromedp.CSS("#code")))
		if got := tb.h1(t); got != "Check your inbox" {
			t.Fatalf("after register h1 = %q", got)
		}
		if lead := tb.text(t, "p.lead"); !strings.Contains(lead, addr) {
			t.Errorf("check page does not name the address: %q", lead)
		}
		left := evalJS[string](t, tb, `document.querySelector("[data-expires]").textContent`)
		if !regexp.MustCompile(`^1[45]:[0-5][0-9]$`).MatchString(left) {
			t.Errorf("time left = %q, want about 15 minutes", left)
		}
		tb.screenshot(t, "check")
		sameOrigin(t, s.base, tb.requests())

		// The inbox, as a newcomer reads it.
		path := s.inboxMail(t, addr, "Verify your account")
		tb.run(t, chromedp.Navigate(s.inbox+"/"), chromedp.WaitVisible(chromedp.CSS("table")))
		tb.screenshot(t, "inbox")
		tb.run(t, chromedp.Navigate(s.inbox+path))
		mailText := tb.text(t, "pre")
		code := regexp.MustCompile(`(?m)^\s{4}([0-9]{6})$`).FindStringSubmatch(mailText)
		if code == nil {
			t.Fatalf("no code in the mail:\n%s", mailText)
		}
		if !linkRE.MatchString(mailText) {
			t.Errorf("no link in the mail:\n%s", mailText)
		}
		if !strings.Contains(mailText, "help@example.com") {
			t.Errorf("the mail does not give SUPPORT_EMAIL:\n%s", mailText)
		}
		tb.run(t, chromedp.Navigate(s.inbox+path+"/html"), chromedp.WaitVisible(chromedp.CSS("a")))
		tb.screenshot(t, "mail")
		tb.requests()

		// Back on the pages: a wrong code, then the right one.
		wrong := "000000"
		if code[1] == wrong {
			wrong = "000001"
		}
		tb.run(t, chromedp.Navigate(s.base+"/check"), chromedp.WaitVisible(chromedp.CSS("#code")),
			chromedp.SendKeys(chromedp.CSS("#code"), wrong), chromedp.Submit(chromedp.CSS("#code")),
			chromedp.WaitVisible(chromedp.CSS("#code-error")))
		if msg := tb.text(t, "#code-error"); !strings.Contains(msg, "not right") {
			t.Errorf("wrong code error = %q", msg)
		}
		focused = evalJS[string](t, tb, `document.activeElement.id`)
		if focused != "code" {
			t.Errorf("focus after a wrong code is on %q, want the code field", focused)
		}
		invalid := evalJS[string](t, tb, `document.getElementById("code").getAttribute("aria-invalid") + "|" + document.getElementById("messages").getAttribute("aria-live")`)
		if invalid != "true|assertive" {
			t.Errorf("aria-invalid|aria-live = %q", invalid)
		}
		tb.screenshot(t, "check-wrong-code")
		tb.screenshotDark(t, "check-wrong-code-dark")
		tb.run(t, chromedp.SendKeys(chromedp.CSS("#code"), code[1]), chromedp.Submit(chromedp.CSS("#code")),
			chromedp.WaitVisible(chromedp.CSS(".done")))
		if got := tb.h1(t); got != "Your address is verified" {
			t.Fatalf("after the code h1 = %q", got)
		}
		tb.screenshot(t, "verified")
		sameOrigin(t, s.base, tb.requests())
		if ev := s.verifiedEvents(t, addr); len(ev) != 1 || ev[0].Locale != "en" {
			t.Errorf("verified events = %+v, want one in en", ev)
		}
	})

	// register → link → confirm page → confirm → verified, in Chinese,
	// the link opened in another browser context (no cookie).
	t.Run("LinkFlowChinese", func(t *testing.T) {
		tb := b.tab(t, "zh-CN,zh;q=0.9,en;q=0.5")
		addr := eventstest.UniqueEmail(t)
		tb.run(t, chromedp.Navigate(s.base+"/"))
		if got := tb.h1(t); got != "创建您的账户" {
			t.Fatalf("h1 = %q, want the Chinese page from Accept-Language", got)
		}
		lang := evalJS[string](t, tb, `document.documentElement.lang`)
		if lang != "zh-CN" {
			t.Errorf("html lang = %q", lang)
		}
		tb.screenshot(t, "register-zh")
		tb.run(t,
			chromedp.SendKeys(chromedp.CSS("#email"), addr),
			chromedp.SendKeys(chromedp.CSS("#first_name"), "明"),
			chromedp.SendKeys(chromedp.CSS("#last_name"), "李"),
			chromedp.Submit(chromedp.CSS("#email")),
			chromedp.WaitVisible(chromedp.CSS("#code")))
		if got := tb.h1(t); got != "请查看您的收件箱" {
			t.Fatalf("after register h1 = %q", got)
		}
		path := s.inboxMail(t, addr, "验证您的账户")
		other := b.tab(t, "zh-CN")
		other.run(t, chromedp.Navigate(s.inbox+path))
		mailText := other.text(t, "pre")
		link := linkRE.FindString(mailText)
		if link == "" || !strings.HasPrefix(link, s.base+events.ConfirmPath) {
			t.Fatalf("no link to %s in the mail:\n%s", s.base, mailText)
		}
		other.requests()
		other.run(t, chromedp.Navigate(link))
		if got := other.h1(t); got != "确认您的电子邮件地址" {
			t.Fatalf("link page h1 = %q", got)
		}
		other.screenshot(t, "confirm-zh")
		// Opening the link verified nothing: a pause, then the topic.
		time.Sleep(3 * time.Second)
		if ev := s.verifiedEvents(t, addr); len(ev) != 0 {
			t.Fatalf("opening the link alone published %d user_account_verified", len(ev))
		}
		other.run(t, chromedp.Click(chromedp.CSS(`form button[type=submit]`)), chromedp.WaitVisible(chromedp.CSS(".done")))
		if got := other.h1(t); got != "您的地址已验证" {
			t.Fatalf("after confirm h1 = %q", got)
		}
		other.screenshot(t, "verified-zh")
		sameOrigin(t, s.base, other.requests())
		ev := s.verifiedEvents(t, addr)
		if len(ev) != 1 || ev[0].Locale != "zh-CN" {
			t.Fatalf("verified events = %+v, want one in zh-CN", ev)
		}
		// Used: the link now says so, and verifies nothing more.
		other.run(t, chromedp.Navigate(link))
		if got := other.h1(t); got != "此链接已失效" {
			t.Errorf("a used link's h1 = %q", got)
		}
		// The switch: English on demand.
		other.run(t, chromedp.Click(chromedp.CSS(`nav a[hreflang=en]`)), chromedp.WaitVisible(chromedp.CSS("h1")))
		if got := other.h1(t); got != "This link no longer works" {
			t.Errorf("after the language switch h1 = %q", got)
		}
		s.inboxMail(t, addr, "您的账户已验证")
	})

	t.Run("LinkInEnglishScreenshot", func(t *testing.T) {
		if os.Getenv("COUNTERSIGN_SCREENSHOTS") == "" {
			t.Skip("only takes screenshots")
		}
		tb := b.tab(t, "en")
		addr := eventstest.UniqueEmail(t)
		resp, err := http.PostForm(s.base+"/", url.Values{"email": {addr}, "first_name": {"Ada"}, "last_name": {"Lovelace"}, "lang": {"en"}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		tb.run(t, chromedp.Navigate(s.inbox+s.inboxMail(t, addr, "Verify")))
		tb.run(t, chromedp.Navigate(linkRE.FindString(tb.text(t, "pre"))))
		tb.h1(t)
		tb.screenshot(t, "confirm")
	})

	// A form posted from another origin is refused by the browser's own
	// Sec-Fetch-Site and Origin headers.
	t.Run("CrossSitePostRefused", func(t *testing.T) {
		evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, `<!DOCTYPE html><form method="post" action="%s/resend"><input name="email" value="victim@example.com"><button id="go">go</button></form>`, s.base)
		}))
		defer evil.Close()
		tb := b.tab(t, "en")
		tb.run(t, chromedp.Navigate(evil.URL), chromedp.Click(chromedp.ID("go")), chromedp.WaitVisible(chromedp.CSS("h1")))
		if got := tb.h1(t); got != "Request refused" {
			t.Errorf("cross-site post: h1 = %q, want the refusal", got)
		}
		status := evalJS[int](t, tb, `performance.getEntriesByType("navigation")[0].responseStatus`)
		if status != http.StatusForbidden {
			t.Errorf("cross-site post: status %d, want 403", status)
		}
	})
}

// The page weight (each page plus its stylesheet and script), logged for
// the docs and held under 30 KB.
func TestBrowserPageWeight(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary")
	}
	s := startDevStack(t)
	get := func(path string) int {
		req, _ := http.NewRequest(http.MethodGet, s.base+path, nil)
		req.Header.Set("Accept", "text/html")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return len(b)
	}
	assets := get("/static/style.css") + get("/static/app.js")
	weights := map[string]int{}
	for _, p := range []string{"/", "/check", "/confirm/AAAAAAAAAAAAAAAAAAAAAAAA", "/verified", "/?lang=zh-CN"} {
		weights[p] = get(p) + assets
		if weights[p] > 30<<10 {
			t.Errorf("%s weighs %d bytes with its assets, over 30 KB", p, weights[p])
		}
	}
	j, _ := json.Marshal(weights)
	t.Logf("page weights in bytes, stylesheet and script (%d bytes) included: %s", assets, j)
}

// A busy HTTP_ADDR or DEV_INBOX_ADDR in dev names the variable, as a busy
// EMBEDDED_KAFKA_ADDR does.
func TestDevBusyAddressesNamed(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary")
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	for _, name := range []string{"HTTP_ADDR", "DEV_INBOX_ADDR"} {
		env := []string{"HTTP_ADDR=" + freeAddr(t), "DEV_INBOX_ADDR=" + freeAddr(t), "METRICS_ADDR=off", "EMBEDDED_KAFKA_ADDR=" + freeAddr(t), name + "=" + busy.Addr().String()}
		out, code := run(t, env, "dev")
		if code != 1 || !strings.Contains(out, name+"=") {
			t.Errorf("dev with a busy %s: exit %d, output:\n%s", name, code, out)
		}
	}
}
