package userapi_test

// The attacker's tests of issue 13, each run on both stores (memory, and a
// real redis-server) and on the test broker (embedded, or the cluster of
// KAFKA_TEST_BROKERS): guessing, replaying a verified address, taking over
// a pending registration, racing for a second account, and a restart that
// must not forget the accounts.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/countersign/countersign/events"
	"github.com/countersign/countersign/events/eventstest"
	"github.com/countersign/countersign/events/kafka"
	"github.com/countersign/countersign/userapi"
	"github.com/countersign/countersign/userapi/redistest"
)

// storeKind makes the stores of one test: every call of newStore on the
// Redis kind shares one redis-server and one prefix, as replicas do.
type storeKind struct {
	name     string
	newStore func(t *testing.T) func() userapi.Store
}

var storeKinds = []storeKind{
	{"memory", func(*testing.T) func() userapi.Store {
		return func() userapi.Store { return userapi.NewMemoryStore() }
	}},
	{"redis", func(t *testing.T) func() userapi.Store {
		srv := redistest.Start(t)
		// Patient clients: these tests assert exact outcomes under hundreds
		// of concurrent requests on a busy machine, where the binary's
		// one-second timeouts would turn some into 503s.
		opt, err := userapi.ParseRedisURL(srv.URL())
		if err != nil {
			t.Fatal(err)
		}
		opt.PoolSize, opt.PoolTimeout, opt.ReadTimeout, opt.WriteTimeout = 100, 20*time.Second, 20*time.Second, 20*time.Second
		rdb := redis.NewClient(opt)
		t.Cleanup(func() { _ = rdb.Close() })
		prefix := "attack-" + eventstest.Suffix() + ":"
		return func() userapi.Store {
			return userapi.NewRedisStore(rdb, userapi.RedisOptions{Prefix: prefix, Timeout: 20 * time.Second})
		}
	}},
}

// forEachStore runs fn as a parallel subtest per store kind.
func forEachStore(t *testing.T, fn func(t *testing.T, newStore func() userapi.Store)) {
	for _, k := range storeKinds {
		t.Run(k.name, func(t *testing.T) {
			t.Parallel()
			fn(t, k.newStore(t))
		})
	}
}

// createdCount counts the user_account_created events of email for d.
func (h *harness) createdCount(email string, d time.Duration) int {
	h.t.Helper()
	return len(eventstest.CountTopic(h.t, h.brokers, events.TopicUserAccountCreated, d, eventstest.ByKey(email)))
}

// verifiedCount counts the user_account_verified events of email for d,
// tombstones left out.
func (h *harness) verifiedCount(email string, d time.Duration) int {
	h.t.Helper()
	n := 0
	for _, m := range h.verified(email, d) {
		if m.Value != nil {
			n++
		}
	}
	return n
}

// followAccounts feeds store from the accounts log of brokers until the
// test ends, like the binary does; the channel closes once loaded.
func followAccounts(t *testing.T, brokers string, store userapi.Store) <-chan struct{} {
	t.Helper()
	cfg := eventstest.Config(t, brokers)
	ctx, cancel := context.WithCancel(context.Background())
	loaded := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- kafka.FollowTopic(ctx, cfg, events.TopicUserAccountVerified, func(ctx context.Context, recs []kafka.Record) error {
			var changes []userapi.AccountChange
			for _, r := range recs {
				changes = append(changes, userapi.AccountChange{Email: string(r.Key), Forgets: r.Tombstone()})
			}
			return store.ApplyAccounts(ctx, changes)
		}, func() { close(loaded) })
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("follow accounts: %v", err)
		}
	})
	return loaded
}

// Guessing: with 5 attempts a code and a budget of 7 wrong codes a day, a
// second code buys 2 more guesses and then nothing: right or wrong, every
// verify is refused without a check, and register and resend send nothing.
func TestAttackGuessingIsBounded(t *testing.T) {
	forEachStore(t, func(t *testing.T, newStore func() userapi.Store) {
		h := newHarnessWith(t, harnessOptions{store: newStore()}, func(c *userapi.Config) {
			c.ResendInterval = time.Second
			c.VerifyMaxFailuresPerDay = 7
		})
		ctx := context.Background()
		email := h.email()
		code := h.code(email)
		for range 5 {
			wantProblem(t, h.verify(email, wrong(code)), http.StatusBadRequest, userapi.CodeInvalidCode)
		}
		wantProblem(t, h.verify(email, code), http.StatusTooManyRequests, userapi.CodeTooManyAttempts)
		time.Sleep(1100 * time.Millisecond)
		h.mustStatus(h.resend(email), http.StatusAccepted)
		_, codes := h.created(email, 2)
		code = codes[1]
		for range 2 {
			wantProblem(t, h.verify(email, wrong(code)), http.StatusBadRequest, userapi.CodeInvalidCode)
		}
		// The budget is spent: the right code gets a wrong code's answer, and
		// no attempt is counted.
		for range 3 {
			wantProblem(t, h.verify(email, code), http.StatusBadRequest, userapi.CodeInvalidCode)
			wantProblem(t, h.verify(email, wrong(code)), http.StatusBadRequest, userapi.CodeInvalidCode)
		}
		if p, err := h.store.Get(ctx, email); err != nil || p.Attempts != 2 {
			t.Errorf("record %+v, %v: want 2 attempts, the refused ones not counted", p, err)
		}
		time.Sleep(1100 * time.Millisecond)
		h.mustStatus(h.resend(email), http.StatusAccepted)
		h.mustStatus(h.register(email), http.StatusAccepted)
		if n := h.createdCount(email, 2*time.Second); n != 2 {
			t.Errorf("%d user_account_created events, want 2: a spent budget sends nothing", n)
		}
		if n := h.verifiedCount(email, time.Second); n != 0 {
			t.Errorf("%d user_account_verified events, want none", n)
		}
		// Void and out of budget: the answer of a void code.
		for range 3 {
			h.verify(email, wrong(code))
		}
	})
}

// Replay: a verified address stays verified. Registering it again answers
// as for a new address and publishes nothing; verify and resend behave as
// for an unknown address; no second user_account_verified, ever.
func TestAttackVerifiedAddressIsRemembered(t *testing.T) {
	forEachStore(t, func(t *testing.T, newStore func() userapi.Store) {
		h := newHarnessWith(t, harnessOptions{store: newStore()}, func(c *userapi.Config) { c.ResendInterval = time.Second })
		email := h.email()
		code := h.code(email)
		h.mustStatus(h.verify(email, code), http.StatusOK)

		fresh := h.register(h.email())
		time.Sleep(1100 * time.Millisecond)
		start := time.Now()
		r := h.post("/api/register", map[string]string{"email": email, "first_name": "Mallory", "last_name": "Evil"})
		h.mustStatus(r, http.StatusAccepted)
		var got, want userapi.RegisterResponse
		if err := json.Unmarshal(r.body, &got); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(fresh.body, &want); err != nil {
			t.Fatal(err)
		}
		if got.Status != want.Status || got.ExpiresAt.Before(start.Add(15*time.Minute-time.Second)) || r.header.Get("Content-Type") != fresh.header.Get("Content-Type") {
			t.Errorf("register of an account answered %s, want the answer of a new address (like %s)", r.body, fresh.body)
		}
		wantProblem(t, h.verify(email, code), http.StatusBadRequest, userapi.CodeInvalidCode)
		h.mustStatus(h.resend(email), http.StatusAccepted)
		if n := h.createdCount(email, 2*time.Second); n != 1 {
			t.Errorf("%d user_account_created events, want 1", n)
		}
		if n := h.verifiedCount(email, time.Second); n != 1 {
			t.Errorf("%d user_account_verified events, want exactly 1", n)
		}
		if ok, err := h.store.IsAccount(context.Background(), email); err != nil || !ok {
			t.Errorf("IsAccount = %v, %v", ok, err)
		}
	})
}

// Takeover: a third party re-registering a pending address after the
// interval gets the owner's code mailed to the owner again, with the
// owner's names; the verified event carries them.
func TestAttackTakeoverOfPendingRegistration(t *testing.T) {
	forEachStore(t, func(t *testing.T, newStore func() userapi.Store) {
		h := newHarnessWith(t, harnessOptions{store: newStore()}, func(c *userapi.Config) { c.ResendInterval = time.Second })
		email := h.email()
		first := h.register(email)
		h.mustStatus(first, http.StatusAccepted)
		h.created(email, 1)
		time.Sleep(1100 * time.Millisecond)
		r := h.post("/api/register", map[string]string{"email": email, "first_name": "Visit evil.example/claim", "last_name": "now"})
		h.mustStatus(r, http.StatusAccepted)
		if string(r.body) != string(first.body) {
			t.Errorf("re-register answered %s, want %s (the same expiry)", r.body, first.body)
		}
		created, codes := h.created(email, 2)
		if created[1].FirstName != "Ada" || created[1].LastName != "Lovelace" || created[1].UserID != created[0].UserID ||
			!created[1].ExpiresAt.Equal(created[0].ExpiresAt) || codes[1] != codes[0] {
			t.Errorf("second mail %+v: want the same code, user id, expiry and the owner's names", created[1])
		}
		h.mustStatus(h.verify(email, codes[0]), http.StatusOK)
		msgs := eventstest.ReadTopic(t, h.brokers, events.TopicUserAccountVerified, 1, 20*time.Second, eventstest.ByKey(email))
		v, err := eventstest.Decode(t, msgs[0]).UserAccountVerified()
		if err != nil {
			t.Fatal(err)
		}
		if v.FirstName != "Ada" || v.LastName != "Lovelace" || v.UserID != created[0].UserID {
			t.Errorf("verified %+v: want the owner's names and user id", v)
		}
	})
}

// Race: registers and right-code verifies of one address, at once, over two
// servers sharing the store (Redis; one server on the memory store) give
// exactly one user_account_verified.
func TestAttackRushGivesOneAccount(t *testing.T) {
	forEachStore(t, func(t *testing.T, newStore func() userapi.Store) {
		cfg := func(c *userapi.Config) {
			c.RateLimitPerIP = userapi.RateLimitOff
			c.ResendInterval = time.Second
			c.PublishTimeout = time.Minute
		}
		a := newHarnessWith(t, harnessOptions{store: newStore()}, cfg)
		b := a
		if _, shared := a.store.(*userapi.RedisStore); shared {
			b = newHarnessWith(t, harnessOptions{store: newStore(), brokers: a.brokers, keyring: a.keyring}, cfg)
		}
		email := a.email()
		code := a.code(email)
		time.Sleep(1100 * time.Millisecond)
		verify, _ := json.Marshal(map[string]string{"email": email, "code": code})
		register, _ := json.Marshal(map[string]string{"email": email, "first_name": "Mallory", "last_name": "Evil"})
		const n = 400
		client := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: n, MaxConnsPerHost: n}}
		defer client.CloseIdleConnections()
		var ok atomic.Int32
		var mu sync.Mutex
		statuses := map[string]int{}
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range n {
			base, path, body := a.base, "/api/verify", verify
			if i%2 == 1 {
				base = b.base
			}
			if i%4 == 3 {
				path, body = "/api/register", register
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				resp, err := client.Post(base+path, "application/json", strings.NewReader(string(body)))
				if err != nil {
					t.Error(err)
					return
				}
				resp.Body.Close()
				mu.Lock()
				statuses[fmt.Sprintf("%s %d", path, resp.StatusCode)]++
				mu.Unlock()
				if path == "/api/verify" && resp.StatusCode == http.StatusOK {
					ok.Add(1)
				}
				if resp.StatusCode >= 500 {
					t.Errorf("%s answered %d", path, resp.StatusCode)
				}
			}()
		}
		close(start)
		wg.Wait()
		t.Logf("statuses: %v", statuses)
		if ok.Load() != 1 {
			t.Errorf("%d verifies succeeded, want exactly 1", ok.Load())
			t.Logf("logs of A:\n%s\nlogs of B:\n%s", a.logs, b.logs)
		}
		// And later, with the code and a fresh register, still one.
		wantProblem(t, b.verify(email, code), http.StatusBadRequest, userapi.CodeInvalidCode)
		eventstest.ReadTopic(t, a.brokers, events.TopicUserAccountVerified, 1, 20*time.Second, eventstest.ByKey(email))
		if got := a.verifiedCount(email, 3*time.Second); got != 1 {
			t.Errorf("%d user_account_verified events, want exactly 1", got)
		}
		// A register that came before the verify may have mailed the same
		// code again (once: the interval holds the others back), with the
		// owner's names; nothing after.
		msgs := eventstest.CountTopic(t, a.brokers, events.TopicUserAccountCreated, time.Second, eventstest.ByKey(email))
		if len(msgs) > 2 {
			t.Errorf("%d user_account_created events, want at most 2", len(msgs))
		}
		for _, m := range msgs {
			if d, err := eventstest.Decode(t, m).UserAccountCreated(); err != nil || d.FirstName != "Ada" {
				t.Errorf("mail %+v, %v: want the owner's names", d, err)
			}
		}
		time.Sleep(1100 * time.Millisecond)
		b.mustStatus(b.register(email), http.StatusAccepted)
		if got := a.createdCount(email, time.Second); got != len(msgs) {
			t.Errorf("%d user_account_created events after a register of the account, want %d", got, len(msgs))
		}
	})
}

// Restart: a user API that starts with an empty store (a new process on
// the memory store, or a Redis that lost its data) rebuilds the accounts
// from Kafka before it answers, and still refuses a second account.
func TestAccountsSurviveRestart(t *testing.T) {
	forEachStore(t, func(t *testing.T, newStore func() userapi.Store) {
		brokers := eventstest.Brokers(t)
		first := newHarnessWith(t, harnessOptions{brokers: brokers, store: newStore()}, nil)
		email := first.email()
		code := first.code(email)
		first.mustStatus(first.verify(email, code), http.StatusOK)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := first.srv.Close(ctx); err != nil {
			t.Fatal(err)
		}

		store := newStore()
		if rs, ok := store.(*userapi.RedisStore); ok {
			// Redis lost everything: only Kafka remembers.
			if err := rs.ApplyAccounts(ctx, []userapi.AccountChange{{Email: email, Forgets: true}}); err != nil {
				t.Fatal(err)
			}
		}
		if ok, _ := store.IsAccount(ctx, email); ok {
			t.Fatal("the new store knows the account before the rebuild")
		}
		loaded := followAccounts(t, brokers, store)
		second := newHarnessWith(t, harnessOptions{brokers: brokers, store: store, loaded: loaded, keyring: first.keyring}, nil)
		second.logs.addEmail(email)
		waitUntil(t, func() bool { return second.do(http.MethodGet, "/readyz", "", "").status == http.StatusOK })
		second.mustStatus(second.register(email), http.StatusAccepted)
		if n := second.createdCount(email, 2*time.Second); n != 1 {
			t.Errorf("%d user_account_created events, want 1: the restarted API sent a code to an account", n)
		}
		wantProblem(t, second.verify(email, code), http.StatusBadRequest, userapi.CodeInvalidCode)
		if n := second.verifiedCount(email, time.Second); n != 1 {
			t.Errorf("%d user_account_verified events, want 1", n)
		}
	})
}

// Until the accounts are loaded, /readyz and the API answer 503: nothing is
// answered from a half-built memory.
func TestNotReadyUntilAccountsLoaded(t *testing.T) {
	loaded := make(chan struct{})
	h := newHarnessWith(t, harnessOptions{loaded: loaded}, nil)
	email := h.email()
	wantProblem(t, h.do(http.MethodGet, "/readyz", "", ""), http.StatusServiceUnavailable, userapi.CodeUnavailable)
	r := h.register(email)
	wantProblem(t, r, http.StatusServiceUnavailable, userapi.CodeUnavailable)
	if r.header.Get("Retry-After") == "" {
		t.Error("no Retry-After while loading")
	}
	wantProblem(t, h.verify(email, "123456"), http.StatusServiceUnavailable, userapi.CodeUnavailable)
	wantProblem(t, h.resend(email), http.StatusServiceUnavailable, userapi.CodeUnavailable)
	h.mustStatus(h.do(http.MethodGet, "/healthz", "", ""), http.StatusOK)
	if h.pub.calls.Load() != 0 {
		t.Error("published while loading")
	}
	close(loaded)
	h.mustStatus(h.do(http.MethodGet, "/readyz", "", ""), http.StatusOK)
	h.mustStatus(h.register(email), http.StatusAccepted)
}

// Forgetting: after a tombstone on the accounts log (what `countersign
// forget` publishes), every user API lets the address register as new.
func TestForgottenAddressRegistersAgain(t *testing.T) {
	forEachStore(t, func(t *testing.T, newStore func() userapi.Store) {
		brokers := eventstest.Brokers(t)
		store := newStore()
		loaded := followAccounts(t, brokers, store)
		h := newHarnessWith(t, harnessOptions{brokers: brokers, store: store, loaded: loaded}, nil)
		waitUntil(t, func() bool { return h.do(http.MethodGet, "/readyz", "", "").status == http.StatusOK })
		email := h.email()
		code := h.code(email)
		h.mustStatus(h.verify(email, code), http.StatusOK)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := h.producer.PublishTombstone(ctx, events.TopicUserAccountVerified, email); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, func() bool { ok, _ := store.IsAccount(ctx, email); return !ok })
		h.mustStatus(h.post("/api/register", map[string]string{"email": email, "first_name": "Grace", "last_name": "Hopper"}), http.StatusAccepted)
		created, codes := h.created(email, 2)
		if created[1].UserID == created[0].UserID || created[1].FirstName != "Grace" {
			t.Errorf("registration after forget %+v: want a new user id and the new names", created[1])
		}
		h.mustStatus(h.verify(email, codes[1]), http.StatusOK)
		// The new verification is remembered again, through the log too.
		waitUntil(t, func() bool { return h.verifiedCount(email, 500*time.Millisecond) == 2 })
		if ok, _ := store.IsAccount(ctx, email); !ok {
			t.Error("the address is not an account after its second verification")
		}
	})
}

// Verify answers an account, a spent budget and an unknown address as it
// answers a wrong code: none of them tells anything about the address.
func TestAttackAnswersLookAlike(t *testing.T) {
	h := newHarness(t, func(c *userapi.Config) { c.VerifyMaxFailuresPerDay = 1 })
	wrongOne, account, locked := h.email(), h.email(), h.email()
	code := h.code(wrongOne)
	accountCode := h.code(account)
	h.mustStatus(h.verify(account, accountCode), http.StatusOK)
	lockedCode := h.code(locked)
	wantProblem(t, h.verify(locked, wrong(lockedCode)), http.StatusBadRequest, userapi.CodeInvalidCode)

	answers := map[string]response{
		"wrong code":      h.verify(wrongOne, wrong(code)),
		"account":         h.verify(account, accountCode),
		"budget spent":    h.verify(locked, lockedCode),
		"unknown address": h.verify(h.email(), code),
	}
	var first string
	for name, r := range answers {
		p := wantProblem(t, r, http.StatusBadRequest, userapi.CodeInvalidCode)
		doc := p.Type + p.Title + p.Detail + r.header.Get("Content-Type") + r.header.Get("Retry-After")
		if first == "" {
			first = doc
		} else if doc != first {
			t.Errorf("%s answers %s, another %s", name, doc, first)
		}
	}
}

// CODE_DIGITS sets the length of the code; another length is refused before
// any check, and counts nothing.
func TestCodeDigits(t *testing.T) {
	h := newHarness(t, func(c *userapi.Config) { c.CodeDigits = 8; c.VerifyMaxFailuresPerDay = 1 })
	email := h.email()
	code := h.code(email)
	if len(code) != 8 || strings.Trim(code, "0123456789") != "" {
		t.Fatalf("code of %d characters, want 8 digits", len(code))
	}
	wantProblem(t, h.verify(email, code[:6]), http.StatusBadRequest, userapi.CodeInvalidRequest)
	h.mustStatus(h.verify(email, code), http.StatusOK)
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 60s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
