package userapi_test

import (
	"encoding/json"
	"maps"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/countersign/countersign/events"
	"github.com/countersign/countersign/events/eventstest"
	"github.com/countersign/countersign/userapi"
)

// The notice to an account (issue 13, point 3), tried as an attacker
// would: registering someone's verified address again and again, at once,
// and past the mail budgets, with names of the attacker's choosing.

// account registers and verifies a fresh address and returns it.
func (h *harness) account() string {
	h.t.Helper()
	email := h.email()
	h.mustStatus(h.verify(email, h.code(email)), http.StatusOK)
	return email
}

// attackerRegister registers email with names that must never reach the
// owner's mailbox.
func (h *harness) attackerRegister(email string) response {
	h.t.Helper()
	return h.post("/api/register", map[string]string{"email": email, "first_name": "Visit evil.example", "last_name": "Mallory"})
}

// notices reads the user_account_exists events of email for d.
func (h *harness) notices(email string, d time.Duration) []events.UserAccountExists {
	h.t.Helper()
	var out []events.UserAccountExists
	for _, m := range eventstest.CountTopic(h.t, h.brokers, events.TopicUserAccountExists, d, eventstest.ByKey(email)) {
		d, err := eventstest.Decode(h.t, m).UserAccountExists()
		if err != nil {
			h.t.Fatal(err)
		}
		if strings.Contains(string(m.Value), "evil") || strings.Contains(string(m.Value), "Mallory") {
			h.t.Errorf("user_account_exists carries the attempt's names: %s", m.Value)
		}
		out = append(out, d)
	}
	return out
}

// sameShape fails unless r is a 202 shaped like the answer for a new
// address (the expiry is a fresh code's either way, so only its presence
// is compared).
func sameShape(t *testing.T, r, fresh response) {
	t.Helper()
	if r.status != http.StatusAccepted || r.header.Get("Content-Type") != fresh.header.Get("Content-Type") {
		t.Fatalf("register of an account: %d %s %s, want 202 like a new address (%s)", r.status, r.header.Get("Content-Type"), r.body, fresh.body)
	}
	var got, want map[string]any
	if err := json.Unmarshal(r.body, &got); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(fresh.body, &want); err != nil {
		t.Fatal(err)
	}
	if got["status"] != want["status"] || !reflect.DeepEqual(keys(got), keys(want)) {
		t.Errorf("register of an account answered %s, want the body of a new address (like %s)", r.body, fresh.body)
	}
	var rr userapi.RegisterResponse
	if err := json.Unmarshal(r.body, &rr); err != nil || rr.ExpiresAt.Before(time.Now()) {
		t.Errorf("register of an account: expires_at %v, %v; want a fresh code's", rr.ExpiresAt, err)
	}
}

func keys(m map[string]any) []string { return slices.Sorted(maps.Keys(m)) }

// Registering a verified address twice within RESEND_INTERVAL, then 20
// times at once: one notice, carrying the address and no names; every
// answer the 202 of a new address.
func TestNoticeOncePerInterval(t *testing.T) {
	forEachStore(t, func(t *testing.T, newStore func() userapi.Store) {
		h := newHarnessWith(t, harnessOptions{store: newStore()}, func(c *userapi.Config) {
			c.ResendInterval = time.Hour
			c.RateLimitPerIP = userapi.RateLimitOff
		})
		email := h.account()
		fresh := h.register(h.email())
		sameShape(t, h.attackerRegister(email), fresh)
		sameShape(t, h.attackerRegister(email), fresh)
		var wg sync.WaitGroup
		rs := make([]response, 20)
		for i := range rs {
			wg.Go(func() { rs[i] = h.attackerRegister(email) })
		}
		wg.Wait()
		for _, r := range rs {
			sameShape(t, r, fresh)
		}
		ns := h.notices(email, 2*time.Second)
		if len(ns) != 1 {
			t.Fatalf("%d user_account_exists events for 22 registers within RESEND_INTERVAL, want 1", len(ns))
		}
		if ns[0].Email != email || ns[0].AttemptedAt.IsZero() || ns[0].Locale != "" {
			t.Errorf("notice %+v: want the address, the time, no locale (the API has none)", ns[0])
		}
		if got := counterValue(t, h.reg, "countersign_account_notices_total", "sent"); got != 1 {
			t.Errorf("notices sent %v, want 1", got)
		}
		if got := counterValue(t, h.reg, "countersign_account_notices_total", "throttled"); got != 21 {
			t.Errorf("notices throttled %v, want 21", got)
		}
		if n := h.createdCount(email, time.Second); n != 1 {
			t.Errorf("%d user_account_created events, want 1 (the first registration's)", n)
		}
	})
}

// A concurrent rush on a fresh account, through two servers sharing the
// store (Redis; one server on the memory store, which replicas cannot
// share): one notice.
func TestNoticeConcurrentRegistersSendOne(t *testing.T) {
	forEachStore(t, func(t *testing.T, newStore func() userapi.Store) {
		cfg := func(c *userapi.Config) {
			c.ResendInterval = time.Hour
			c.RateLimitPerIP = userapi.RateLimitOff
		}
		h := newHarnessWith(t, harnessOptions{store: newStore()}, cfg)
		servers := []*harness{h}
		if _, redis := h.store.(*userapi.RedisStore); redis {
			servers = append(servers, newHarnessWith(t, harnessOptions{store: newStore(), brokers: h.brokers, keyring: h.keyring}, cfg))
		}
		email := h.account()
		var wg sync.WaitGroup
		for i := range 20 {
			wg.Go(func() {
				servers[i%len(servers)].mustStatus(servers[i%len(servers)].attackerRegister(email), http.StatusAccepted)
			})
		}
		wg.Wait()
		if ns := h.notices(email, 2*time.Second); len(ns) != 1 {
			t.Errorf("%d user_account_exists events for 20 concurrent registers over %d servers, want 1", len(ns), len(servers))
		}
	})
}

// Once RESEND_INTERVAL has passed, the next register sends a second
// notice. The interval is the shortest allowed (1s) and the wait longer:
// only "after" is asserted, which no slowness can break.
func TestNoticeAgainAfterInterval(t *testing.T) {
	forEachStore(t, func(t *testing.T, newStore func() userapi.Store) {
		h := newHarnessWith(t, harnessOptions{store: newStore()}, func(c *userapi.Config) { c.ResendInterval = time.Second })
		email := h.account()
		h.mustStatus(h.attackerRegister(email), http.StatusAccepted)
		time.Sleep(1200 * time.Millisecond)
		h.mustStatus(h.attackerRegister(email), http.StatusAccepted)
		if ns := h.notices(email, 2*time.Second); len(ns) != 2 {
			t.Errorf("%d user_account_exists events for two registers RESEND_INTERVAL apart, want 2", len(ns))
		}
	})
}

// Notices spend from the mailbox's budget with the code mails: with
// CODE_MAX_SENDS_PER_DAY=2, the code and one notice, then nothing, and the
// same 202. Re-registering someone's address is no spam cannon.
func TestNoticeBoundByMailBudget(t *testing.T) {
	forEachStore(t, func(t *testing.T, newStore func() userapi.Store) {
		h := newHarnessWith(t, harnessOptions{store: newStore()}, func(c *userapi.Config) {
			c.ResendInterval = time.Second
			c.CodeMaxSendsPerDay = 2
		})
		email := h.account() // 1: the code
		fresh := h.register(h.email())
		sameShape(t, h.attackerRegister(email), fresh) // 2: the notice
		for range 3 {
			time.Sleep(1100 * time.Millisecond)
			sameShape(t, h.attackerRegister(email), fresh) // held back
		}
		if ns := h.notices(email, 2*time.Second); len(ns) != 1 {
			t.Errorf("%d notices past a budget of 2 sends (one code, one notice), want 1", len(ns))
		}
		if got := counterValue(t, h.reg, "countersign_account_notices_total", "held_back"); got != 3 {
			t.Errorf("notices held back %v, want 3", got)
		}
		// The platform's code mails are not counted as held back: no code
		// was due.
		if got := counterValue(t, h.reg, "countersign_code_mails_held_back_total"); got != 0 {
			t.Errorf("code mails held back %v, want 0", got)
		}
	})
}

// CODE_MAX_SENDS_PER_HOUR bounds notices too.
func TestNoticeBoundByPlatformBudget(t *testing.T) {
	h := newHarness(t, func(c *userapi.Config) { c.CodeMaxSendsPerHour = 2 })
	email := h.account() // 1
	other := h.account() // 2
	h.mustStatus(h.attackerRegister(email), http.StatusAccepted)
	h.mustStatus(h.attackerRegister(other), http.StatusAccepted)
	if n := len(h.notices(email, time.Second)) + len(h.notices(other, time.Second)); n != 0 {
		t.Errorf("%d notices past the platform's hourly budget, want 0", n)
	}
}

// When the notice cannot be published the register answers as a code mail
// that failed: 503 problem+json with Retry-After. The claim and the budget
// are given back, so the next register once the broker is back sends it.
func TestNoticePublishFails(t *testing.T) {
	h := newHarness(t, func(c *userapi.Config) {
		c.ResendInterval = time.Hour
		c.CodeMaxSendsPerDay = 2
	})
	email := h.account() // 1: the code
	h.pub.mode.Store(publishFail)
	for range 3 {
		r := h.attackerRegister(email)
		wantProblem(t, r, http.StatusServiceUnavailable, userapi.CodeUnavailable)
		if r.header.Get("Retry-After") == "" {
			t.Error("503 without Retry-After")
		}
	}
	h.pub.mode.Store(publishOK)
	h.mustStatus(h.attackerRegister(email), http.StatusAccepted) // 2: the notice
	if ns := h.notices(email, 2*time.Second); len(ns) != 1 {
		t.Fatalf("%d notices after the broker came back, want 1", len(ns))
	}
}

// The registration page's locale travels in the notice, and the page
// answers as for a new address (the redirect to the code page).
func TestNoticeCarriesPageLocale(t *testing.T) {
	h := newPagesHarness(t, nil)
	tok := h.register("ada@example.com", "zh-CN")
	if r := h.do(http.MethodPost, events.ConfirmPath+tok, url.Values{"lang": {"zh-CN"}}); r.status != http.StatusSeeOther {
		t.Fatalf("confirm: %d\n%s", r.status, r.body)
	}
	r := h.do(http.MethodPost, "/", url.Values{"email": {"ada@example.com"}, "first_name": {"Visit evil.example"}, "last_name": {"Mallory"}, "lang": {"zh-CN"}})
	if r.status != http.StatusSeeOther || r.header.Get("Location") != "/check?lang=zh-CN" {
		t.Errorf("page register of an account: %d %s, want the redirect of a new address", r.status, r.header.Get("Location"))
	}
	ns := h.pub.ofType(events.TopicUserAccountExists)
	if len(ns) != 1 {
		t.Fatalf("%d user_account_exists, want 1", len(ns))
	}
	d, err := ns[0].UserAccountExists()
	if err != nil || d.Locale != "zh-CN" || d.Email != "ada@example.com" {
		t.Errorf("notice %+v, %v: want ada@example.com in zh-CN", d, err)
	}
	if strings.Contains(string(ns[0].Data), "evil") {
		t.Errorf("notice carries the attempt's names: %s", ns[0].Data)
	}
}
