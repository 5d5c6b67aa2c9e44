package userapi_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/countersign/countersign/userapi"
)

// uniqueLocal returns a unique ASCII local part for this test, registered
// with the leak check.
func uniqueLocal(h *harness) string {
	e := h.email()
	return e[:strings.IndexByte(e, '@')]
}

// ALLOW_UTF8_LOCAL_PART=false (Config.ASCIILocalPartOnly): an address with a
// non-ASCII local part gets 400 at register and nothing is published; an IDN
// domain is still accepted, since it is delivered through any relay.
func TestASCIILocalPartOnly(t *testing.T) {
	h := newHarness(t, func(c *userapi.Config) {
		c.RateLimitPerIP = userapi.RateLimitOff
		c.ASCIILocalPartOnly = true
	})
	local := uniqueLocal(h)
	jose := "josé-" + local + "@example.com"
	h.logs.addEmail(jose)
	p := wantProblem(t, h.register(jose), http.StatusBadRequest, userapi.CodeInvalidRequest)
	if !strings.Contains(p.Detail, "non-ASCII characters before the @ cannot receive mail here") {
		t.Errorf("detail %q does not say why", p.Detail)
	}
	if strings.Contains(p.Detail, local) {
		t.Errorf("detail %q quotes the address", p.Detail)
	}
	if c := h.pub.calls.Load(); c != 0 {
		t.Errorf("refused registration published %d events", c)
	}
	if n, _ := h.store.Len(context.Background()); n != 0 {
		t.Errorf("refused registration left %d records", n)
	}

	li := local + "@例子.测试"
	h.logs.addEmail(li)
	h.mustStatus(h.register(li), http.StatusAccepted)
	if d, _ := h.created(li, 1); d[0].Email != li {
		t.Errorf("event address %q, want %q", d[0].Email, li)
	}
}

// By default (ALLOW_UTF8_LOCAL_PART=true) a non-ASCII local part is
// accepted, and each address is keyed in NFC: the decomposed form of an
// address already pending is the same registration (resend too soon).
func TestUTF8LocalPartAcceptedAndKeyedNFC(t *testing.T) {
	h := newHarness(t, func(c *userapi.Config) { c.RateLimitPerIP = userapi.RateLimitOff })
	local := uniqueLocal(h)
	composed := "jos\u00e9-" + local + "@example.com"
	decomposed := "Jose\u0301-" + strings.ToUpper(local) + "@EXAMPLE.com"
	h.logs.addEmail(composed)
	h.logs.addEmail(decomposed)
	h.logs.addEmail(strings.ToLower(decomposed))

	h.mustStatus(h.register(composed), http.StatusAccepted)
	d, _ := h.created(composed, 1)
	if d[0].Email != composed {
		t.Errorf("event address %q, want %q", d[0].Email, composed)
	}
	wantProblem(t, h.register(decomposed), http.StatusTooManyRequests, userapi.CodeResendTooSoon)
	if n, _ := h.store.Len(context.Background()); n != 1 {
		t.Errorf("%d pending records, want 1 for two forms of one address", n)
	}
	// An A-label domain and its Unicode form are one key as well.
	h.mustStatus(h.register(local+"@例子.测试"), http.StatusAccepted)
	h.logs.addEmail(local + "@例子.测试")
	h.logs.addEmail(local + "@xn--fsqu00a.xn--0zwm56d")
	wantProblem(t, h.register(local+"@xn--fsqu00a.xn--0zwm56d"), http.StatusTooManyRequests, userapi.CodeResendTooSoon)
}

// The odd addresses of the abuse review (issue 14) get 400 and no mail.
func TestOddAddressesRefused(t *testing.T) {
	h := newHarness(t, func(c *userapi.Config) { c.RateLimitPerIP = userapi.RateLimitOff })
	for _, a := range []string{"user@[127.0.0.1]", "root@localhost", "postmaster@internal", "a@b", "user@-bad-.com", "us\u200ber@example.com", "ｖｉｃｔｉｍ@example.com"} {
		wantProblem(t, h.register(a), http.StatusBadRequest, userapi.CodeInvalidRequest)
	}
	if c := h.pub.calls.Load(); c != 0 {
		t.Errorf("refused addresses published %d events", c)
	}
}
