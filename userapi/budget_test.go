package userapi_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/countersign/countersign/events"
	"github.com/countersign/countersign/events/eventstest"
	"github.com/countersign/countersign/userapi"
	"github.com/countersign/countersign/userapi/redistest"
)

func TestMailbox(t *testing.T) {
	for in, want := range map[string]string{
		"victim@gmail.com":            "victim@gmail.com",
		"victim+1@gmail.com":          "victim@gmail.com",
		"v.ictim@gmail.com":           "victim@gmail.com",
		"v.i.c.t.i.m+x+y@gmail.com":   "victim@gmail.com",
		"victim@googlemail.com":       "victim@gmail.com",
		"vic.tim+news@googlemail.com": "victim@gmail.com",
		// Dots matter elsewhere: only the +tag goes.
		"v.ictim+a@example.com": "v.ictim@example.com",
		"victim@example.com":    "victim@example.com",
		// A leading + is the local part, not a tag.
		"+x@example.com": "+x@example.com",
		"no-at-sign":     "no-at-sign",
	} {
		if got := userapi.Mailbox(in); got != want {
			t.Errorf("Mailbox(%q) = %q, want %q", in, got, want)
		}
	}
}

// runBudgetContract is the MailBudget contract, run against every
// implementation. Times are given, so nothing waits for a clock.
func runBudgetContract(t *testing.T, newBudget func(t *testing.T, perDay, perHour int) userapi.MailBudget) {
	ctx := context.Background()
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	mailbox := func(t *testing.T) string { return "m-" + eventstest.Suffix() + "@example.com" }

	t.Run("per mailbox in a sliding day", func(t *testing.T) {
		b := newBudget(t, 3, 0)
		m, other := mailbox(t), mailbox(t)
		for i := range 3 {
			if _, ok, _, err := b.Spend(ctx, m, t0.Add(time.Duration(i)*time.Hour)); err != nil || !ok {
				t.Fatalf("send %d: ok %v, %v", i+1, ok, err)
			}
		}
		_, ok, held, err := b.Spend(ctx, m, t0.Add(23*time.Hour))
		if err != nil || ok || held != userapi.BudgetMailbox {
			t.Fatalf("4th send within a day: ok %v held %q %v, want held by %q", ok, held, err, userapi.BudgetMailbox)
		}
		if _, ok, _, err := b.Spend(ctx, other, t0.Add(23*time.Hour)); err != nil || !ok {
			t.Errorf("another mailbox was held by the first one's sends: %v %v", ok, err)
		}
		// 24 h after the first send, one send is free again, and only one.
		if _, ok, _, err := b.Spend(ctx, m, t0.Add(24*time.Hour+time.Second)); err != nil || !ok {
			t.Errorf("a day after the first send: ok %v, %v", ok, err)
		}
		if _, ok, _, _ := b.Spend(ctx, m, t0.Add(24*time.Hour+2*time.Second)); ok {
			t.Error("two sends freed by one leaving the window")
		}
	})

	t.Run("platform in a sliding hour", func(t *testing.T) {
		b := newBudget(t, 10, 2)
		for i := range 2 {
			if _, ok, _, err := b.Spend(ctx, mailbox(t), t0.Add(time.Duration(i)*time.Minute)); err != nil || !ok {
				t.Fatalf("send %d: ok %v, %v", i+1, ok, err)
			}
		}
		m := mailbox(t)
		_, ok, held, err := b.Spend(ctx, m, t0.Add(59*time.Minute))
		if err != nil || ok || held != userapi.BudgetPlatform {
			t.Fatalf("3rd send within the hour: ok %v held %q %v, want held by %q", ok, held, err, userapi.BudgetPlatform)
		}
		// Held back by the platform: the mailbox's budget was not spent.
		if _, ok, _, err := b.Spend(ctx, m, t0.Add(61*time.Minute)); err != nil || !ok {
			t.Fatalf("after the hour: ok %v, %v", ok, err)
		}
	})

	t.Run("refund", func(t *testing.T) {
		b := newBudget(t, 1, 1)
		m := mailbox(t)
		s, ok, _, err := b.Spend(ctx, m, t0)
		if err != nil || !ok {
			t.Fatal(ok, err)
		}
		if _, ok, _, _ := b.Spend(ctx, m, t0.Add(time.Second)); ok {
			t.Fatal("a second send with a budget of one")
		}
		if err := b.Refund(ctx, s); err != nil {
			t.Fatal(err)
		}
		if err := b.Refund(ctx, s); err != nil {
			t.Fatalf("a second refund of one send: %v", err)
		}
		s2, ok, _, err := b.Spend(ctx, m, t0.Add(2*time.Second))
		if err != nil || !ok {
			t.Fatalf("after the refund: ok %v, %v", ok, err)
		}
		// Refunding the first send again does not free the second one.
		_ = b.Refund(ctx, s)
		if _, ok, _, _ := b.Spend(ctx, m, t0.Add(3*time.Second)); ok {
			t.Error("a stale refund freed a send")
		}
		_ = s2
	})

	t.Run("concurrent spends take the last send once", func(t *testing.T) {
		b := newBudget(t, 10, 0)
		m := mailbox(t)
		var taken atomic.Int32
		var wg sync.WaitGroup
		for range 100 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, ok, _, err := b.Spend(ctx, m, t0); err == nil && ok {
					taken.Add(1)
				}
			}()
		}
		wg.Wait()
		if taken.Load() != 10 {
			t.Errorf("%d of 100 concurrent sends taken, want 10", taken.Load())
		}
	})
}

func TestMemoryBudget(t *testing.T) {
	runBudgetContract(t, func(_ *testing.T, perDay, perHour int) userapi.MailBudget {
		return userapi.NewMemoryBudget(perDay, perHour)
	})
}

func TestRedisBudget(t *testing.T) {
	srv := redistest.Start(t)
	rdb := newRedisClient(t, srv.URL())
	runBudgetContract(t, func(_ *testing.T, perDay, perHour int) userapi.MailBudget {
		s := userapi.NewRedisStore(rdb, userapi.RedisOptions{Prefix: "budget-" + eventstest.Suffix() + ":"})
		return s.MailBudget(perDay, perHour)
	})
}

// plusTags registers n plus-tag variants of one gmail mailbox and returns
// how many user_account_created events were published for them.
func plusTags(t *testing.T, base string, n int, register func(email string) response) int {
	t.Helper()
	user, _, _ := strings.Cut(base, "@")
	var variants []string
	for i := range n {
		// victim+1@gmail.com, v.ictim+2@gmail.com, ...: one inbox.
		local := user
		if i%2 == 1 {
			local = local[:1] + "." + local[1:]
		}
		variants = append(variants, fmt.Sprintf("%s+%d@gmail.com", local, i))
	}
	for _, v := range variants {
		if r := register(v); r.status != http.StatusAccepted {
			t.Fatalf("register %s: %d %s, want 202 whatever the budget", v, r.status, r.body)
		}
	}
	return len(variants)
}

// TestMailBudgetPerMailbox is the abuse review's spam cannon: 20
// registrations for plus-tag and dotted variants of one gmail inbox, from
// one client. All answer 202; 10 codes are published (mailed), 10 held
// back and counted.
func TestMailBudgetPerMailbox(t *testing.T) {
	h := newHarness(t, func(c *userapi.Config) { c.RateLimitPerIP = userapi.RateLimitOff })
	user := "victim" + strings.ReplaceAll(eventstest.Suffix(), "-", "")
	plusTags(t, user+"@gmail.com", 20, h.register)
	published := int(h.pub.calls.Load())
	if published != 10 {
		t.Errorf("%d codes published for 20 variants of one mailbox, want 10 (CODE_MAX_SENDS_PER_DAY)", published)
	}
	if got := counterValue(t, h.reg, "countersign_code_mails_held_back_total", "mailbox"); got != 10 {
		t.Errorf("held back metric %v, want 10", got)
	}
	// A held-back registration is not pending: no code was sent for it.
	if _, err := h.store.Get(context.Background(), fmt.Sprintf("%s+19@gmail.com", user[:1]+"."+user[1:])); err == nil {
		t.Error("a held-back registration was left pending")
	}
	// Another mailbox is not affected.
	h.mustStatus(h.register(h.email()), http.StatusAccepted)
	if got := int(h.pub.calls.Load()); got != 11 {
		t.Errorf("another mailbox: %d publishes in all, want 11", got)
	}
	t.Logf("mails sent for 20 plus-tag variants of one mailbox: %d", published)
}

// TestMailBudgetResend: resend spends from the same budget, and past it
// answers 202 with nothing sent.
func TestMailBudgetResend(t *testing.T) {
	h := newHarness(t, func(c *userapi.Config) {
		c.CodeMaxSendsPerDay = 2
		c.ResendInterval = time.Second
	})
	email := h.email()
	h.code(email)
	time.Sleep(1100 * time.Millisecond)
	h.mustStatus(h.resend(email), http.StatusAccepted) // the 2nd send
	time.Sleep(1100 * time.Millisecond)
	h.mustStatus(h.resend(email), http.StatusAccepted) // held back
	if got := h.pub.calls.Load(); got != 2 {
		t.Errorf("%d publishes, want 2", got)
	}
	if got := counterValue(t, h.reg, "countersign_code_mails_held_back_total", "mailbox"); got != 1 {
		t.Errorf("held back %v, want 1", got)
	}
}

// TestMailBudgetPlatform: CODE_MAX_SENDS_PER_HOUR bounds every mailbox
// together.
func TestMailBudgetPlatform(t *testing.T) {
	h := newHarness(t, func(c *userapi.Config) { c.CodeMaxSendsPerHour = 3 })
	for range 5 {
		h.mustStatus(h.register(h.email()), http.StatusAccepted)
	}
	if got := h.pub.calls.Load(); got != 3 {
		t.Errorf("%d publishes, want 3", got)
	}
	if got := counterValue(t, h.reg, "countersign_code_mails_held_back_total", "platform"); got != 2 {
		t.Errorf("held back %v, want 2", got)
	}
}

// TestMailBudgetRefundedWhenPublishFails: a broker outage does not use up
// a person's budget.
func TestMailBudgetRefundedWhenPublishFails(t *testing.T) {
	h := newHarness(t, func(c *userapi.Config) { c.CodeMaxSendsPerDay = 1 })
	email := h.email()
	h.pub.mode.Store(publishFail)
	for range 3 {
		wantProblem(t, h.register(email), http.StatusServiceUnavailable, userapi.CodeUnavailable)
	}
	h.pub.mode.Store(publishOK)
	h.code(email)
}

// TestMailBudgetSharedByReplicas: two servers on one Redis spend from one
// budget per mailbox.
func TestMailBudgetSharedByReplicas(t *testing.T) {
	rds := redistest.Start(t)
	prefix := "replicas-" + eventstest.Suffix() + ":"
	keyring, err := events.NewRandomKeyring()
	if err != nil {
		t.Fatal(err)
	}
	var published atomic.Int32
	pub := publisherFunc(func(context.Context, events.Event) error { published.Add(1); return nil })
	var servers []http.Handler
	for range 2 {
		store := userapi.NewRedisStore(newRedisClient(t, rds.URL()), userapi.RedisOptions{Prefix: prefix})
		srv, err := userapi.NewServer(userapi.Config{RateLimitPerIP: userapi.RateLimitOff}, userapi.Deps{
			Publisher: pub, Keyring: keyring, Store: store, NewMailBudget: store.MailBudget,
			Logger: slog.New(slog.DiscardHandler), Registry: prometheus.NewRegistry(),
		})
		if err != nil {
			t.Fatal(err)
		}
		servers = append(servers, srv.Handler())
	}
	i := 0
	user := "victim" + strings.ReplaceAll(eventstest.Suffix(), "-", "")
	plusTags(t, user+"@gmail.com", 20, func(email string) response {
		i++
		return serve(servers[i%2], http.MethodPost, "/api/register", "application/json",
			fmt.Sprintf(`{"email":%q,"first_name":"Ada","last_name":"Lovelace"}`, email))
	})
	if got := published.Load(); got != 10 {
		t.Errorf("%d codes published by two replicas for 20 variants of one mailbox, want 10", got)
	}
}

type publisherFunc func(context.Context, events.Event) error

func (f publisherFunc) Publish(ctx context.Context, e events.Event) error { return f(ctx, e) }

// counterValue reads one counter (or the sum of a vector's children whose
// first labels equal labels) from reg.
func counterValue(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	total := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for i, l := range m.GetLabel() {
				if i < len(labels) && l.GetValue() != labels[i] {
					continue metrics
				}
			}
			total += m.GetCounter().GetValue()
		}
	}
	return total
}

// TestPendingMax: past PENDING_MAX pending registrations, register answers
// 503 problem+json with Retry-After and counts the refusal; nothing is
// published or stored.
func TestPendingMax(t *testing.T) {
	h := newHarness(t, func(c *userapi.Config) { c.PendingMax = 3 })
	for range 3 {
		h.mustStatus(h.register(h.email()), http.StatusAccepted)
	}
	email := h.email()
	r := h.register(email)
	wantProblem(t, r, http.StatusServiceUnavailable, userapi.CodeUnavailable)
	if r.header.Get("Retry-After") == "" {
		t.Error("503 for a full store without Retry-After")
	}
	if got := counterValue(t, h.reg, "countersign_pending_refused_total"); got != 1 {
		t.Errorf("refusals counted %v, want 1", got)
	}
	if got := h.pub.calls.Load(); got != 3 {
		t.Errorf("%d publishes, want 3", got)
	}
	if n, _ := h.store.Len(context.Background()); n != 3 {
		t.Errorf("store holds %d, want 3", n)
	}
}
