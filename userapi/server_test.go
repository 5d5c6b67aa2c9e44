package userapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/countersign/countersign/events"
	"github.com/countersign/countersign/events/eventstest"
	"github.com/countersign/countersign/userapi"
)

func TestRegisterThenVerify(t *testing.T) {
	h := newHarness(t, nil)
	email := h.email()
	start := time.Now()
	// The address is normalized: the event key and the store use the
	// trimmed, lower-cased form.
	r := h.post("/api/register", map[string]string{"email": "  " + strings.ToUpper(email) + " ", "first_name": " Ada ", "last_name": "Lovelace"})
	h.mustStatus(r, http.StatusAccepted)
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	var reg userapi.RegisterResponse
	if err := json.Unmarshal(r.body, &reg); err != nil {
		t.Fatal(err)
	}
	if reg.Status != "pending_verification" || reg.ExpiresAt.Before(start.Add(15*time.Minute-time.Second)) || reg.ExpiresAt.After(time.Now().Add(15*time.Minute)) {
		t.Errorf("response %s: want pending_verification expiring in the default 15m", r.body)
	}

	// 202 came after the broker's ack, so the event is on the topic.
	created, codes := h.created(email, 1)
	c := created[0]
	if _, err := uuid.Parse(c.UserID); err != nil {
		t.Errorf("user id %q is not a UUID", c.UserID)
	}
	if c.Email != email || c.FirstName != "Ada" || c.LastName != "Lovelace" || !c.ExpiresAt.Equal(reg.ExpiresAt) {
		t.Errorf("event data %+v, response expires_at %v", c, reg.ExpiresAt)
	}
	code := codes[0]
	if len(code) != 6 || strings.Trim(code, "0123456789") != "" {
		t.Fatalf("sealed code opens to %d characters, want 6 digits", len(code))
	}
	p, err := h.store.Get(context.Background(), email)
	if err != nil {
		t.Fatal(err)
	}
	if p.UserID != c.UserID || strings.Contains(string(p.MAC), code) {
		t.Errorf("stored record: user %s (event %s); it must hold a MAC, not the code", p.UserID, c.UserID)
	}
	if !h.keyring.VerifyCodeMAC(p.MACKeyID, p.MAC, code, "", email) {
		t.Error("stored MAC is not the CodeMAC of the code sent")
	}

	r = h.verify(strings.ToUpper(email), code)
	h.mustStatus(r, http.StatusOK)
	if string(r.body) != `{"status":"verified"}`+"\n" {
		t.Errorf("verify body %s", r.body)
	}
	msgs := eventstest.ReadTopic(t, h.brokers, events.TopicUserAccountVerified, 1, 20*time.Second, eventstest.ByKey(email))
	v, err := eventstest.Decode(t, msgs[0]).UserAccountVerified()
	if err != nil {
		t.Fatal(err)
	}
	if v.UserID != c.UserID || v.Email != email || v.FirstName != "Ada" || v.LastName != "Lovelace" || v.VerifiedAt.Before(start) {
		t.Errorf("verified event %+v", v)
	}
	if _, err := h.store.Get(context.Background(), email); !errors.Is(err, userapi.ErrNotFound) {
		t.Errorf("pending registration still there after verify: %v", err)
	}
	// The code is spent.
	wantProblem(t, h.verify(email, code), http.StatusBadRequest, userapi.CodeInvalidCode)
}

// A wrong code, an unknown address and an expired registration must be
// indistinguishable, or verify tells which addresses are pending.
func TestVerifyFailuresLookAlike(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	short := newHarness(t, func(c *userapi.Config) { c.CodeTTL = time.Second })
	known, expired := h.email(), short.email()
	code := h.code(known)
	expiredCode := short.code(expired)
	time.Sleep(1200 * time.Millisecond)

	bodies := map[string]response{
		"wrong code":      h.verify(known, wrong(code)),
		"unknown address": h.verify(h.email(), code),
		"expired":         short.verify(expired, expiredCode),
	}
	var first string
	for name, r := range bodies {
		p := wantProblem(t, r, http.StatusBadRequest, userapi.CodeInvalidCode)
		doc := fmt.Sprintf("%+v %s", p, r.header)
		doc = doc[:strings.Index(doc, "Date:")] // all but the date header
		if first == "" {
			first = doc
		} else if doc != first {
			t.Errorf("%s answers %s, another %s", name, doc, first)
		}
	}
	h.mustStatus(h.verify(known, code), http.StatusOK)
}

func TestExpiry(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *userapi.Config) { c.CodeTTL = time.Second })
	email := h.email()
	code := h.code(email)
	time.Sleep(1200 * time.Millisecond)
	wantProblem(t, h.verify(email, code), http.StatusBadRequest, userapi.CodeInvalidCode)
	if _, err := h.store.Get(context.Background(), email); !errors.Is(err, userapi.ErrNotFound) {
		t.Errorf("expired record still readable: %v", err)
	}
	// An expired registration holds nothing back: register again at once,
	// though RESEND_INTERVAL (60s) has not passed, as a new person.
	h.mustStatus(h.register(email), http.StatusAccepted)
	created, _ := h.created(email, 2)
	if created[0].UserID == created[1].UserID {
		t.Error("a registration after expiry reused the old user id")
	}
}

func TestAttemptLimit(t *testing.T) {
	h := newHarness(t, nil)
	t.Run("void after five wrong codes", func(t *testing.T) {
		email := h.email()
		code := h.code(email)
		for i := 0; i < 5; i++ {
			wantProblem(t, h.verify(email, wrong(code)), http.StatusBadRequest, userapi.CodeInvalidCode)
		}
		// Void now: even the right code is refused.
		wantProblem(t, h.verify(email, code), http.StatusTooManyRequests, userapi.CodeTooManyAttempts)
		wantProblem(t, h.verify(email, wrong(code)), http.StatusTooManyRequests, userapi.CodeTooManyAttempts)
		if n := len(h.verified(email, 2*time.Second)); n != 0 {
			t.Errorf("%d user_account_verified events for a void registration", n)
		}
	})
	t.Run("right code on the last attempt", func(t *testing.T) {
		email := h.email()
		code := h.code(email)
		for i := 0; i < 4; i++ {
			wantProblem(t, h.verify(email, wrong(code)), http.StatusBadRequest, userapi.CodeInvalidCode)
		}
		h.mustStatus(h.verify(email, code), http.StatusOK)
	})
	t.Run("limit from config", func(t *testing.T) {
		h := newHarness(t, func(c *userapi.Config) { c.CodeMaxAttempts = 2 })
		email := h.email()
		code := h.code(email)
		for i := 0; i < 2; i++ {
			wantProblem(t, h.verify(email, wrong(code)), http.StatusBadRequest, userapi.CodeInvalidCode)
		}
		wantProblem(t, h.verify(email, code), http.StatusTooManyRequests, userapi.CodeTooManyAttempts)
	})
}

func TestResendLimit(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *userapi.Config) { c.ResendInterval = 2 * time.Second })
	email := h.email()
	first := h.register(email)
	h.mustStatus(first, http.StatusAccepted)
	h.created(email, 1)

	r := h.resend(email)
	wantProblem(t, r, http.StatusTooManyRequests, userapi.CodeResendTooSoon)
	if ra, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || ra < 1 || ra > 2 {
		t.Errorf("Retry-After %q, want 1 or 2 seconds", r.header.Get("Retry-After"))
	}
	// Re-registering within the interval is a double click: the same 202
	// and body, and no mail.
	r = h.register(email)
	h.mustStatus(r, http.StatusAccepted)
	if string(r.body) != string(first.body) {
		t.Errorf("repeated register answered %s, want the first answer %s", r.body, first.body)
	}

	time.Sleep(2100 * time.Millisecond)
	r = h.resend(email)
	h.mustStatus(r, http.StatusAccepted)
	if string(r.body) != `{"status":"accepted"}`+"\n" {
		t.Errorf("resend body %s", r.body)
	}
	created, codes := h.created(email, 2)
	if created[1].UserID != created[0].UserID || created[1].FirstName != "Ada" || !created[1].ExpiresAt.Equal(created[0].ExpiresAt) {
		t.Errorf("resend event %+v: want the same user, names and expiry", created[1])
	}
	if codes[0] != codes[1] {
		t.Error("resend of a live code sent another code")
	}
	if n := len(eventstest.CountTopic(t, h.brokers, events.TopicUserAccountCreated, time.Second, eventstest.ByKey(email))); n != 2 {
		t.Errorf("%d user_account_created events, want 2: the repeated register sent nothing", n)
	}
	h.mustStatus(h.verify(email, codes[1]), http.StatusOK)
}

// A void code (its attempts used up) is replaced by a new one on the next
// register after the interval, and only then may the names change.
func TestReRegisterReplacesVoidCode(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *userapi.Config) { c.ResendInterval = time.Second; c.CodeMaxAttempts = 2 })
	email := h.email()
	code := h.code(email)
	for range 2 {
		wantProblem(t, h.verify(email, wrong(code)), http.StatusBadRequest, userapi.CodeInvalidCode)
	}
	time.Sleep(1100 * time.Millisecond)
	h.mustStatus(h.post("/api/register", map[string]string{"email": email, "first_name": "Grace", "last_name": "Hopper"}), http.StatusAccepted)
	created, codes := h.created(email, 2)
	if created[1].UserID != created[0].UserID {
		t.Error("re-registering a pending address changed its user id")
	}
	if codes[0] != codes[1] {
		wantProblem(t, h.verify(email, codes[0]), http.StatusBadRequest, userapi.CodeInvalidCode)
	}
	h.mustStatus(h.verify(email, codes[1]), http.StatusOK)
	msgs := eventstest.ReadTopic(t, h.brokers, events.TopicUserAccountVerified, 1, 20*time.Second, eventstest.ByKey(email))
	v, err := eventstest.Decode(t, msgs[0]).UserAccountVerified()
	if err != nil {
		t.Fatal(err)
	}
	if v.FirstName != "Grace" || v.LastName != "Hopper" || v.UserID != created[0].UserID {
		t.Errorf("verified %+v: want the latest names and the first user id", v)
	}
}

func TestResendUnknownAddress(t *testing.T) {
	h := newHarness(t, nil)
	email := h.email()
	r := h.resend(email)
	h.mustStatus(r, http.StatusAccepted)
	if string(r.body) != `{"status":"accepted"}`+"\n" {
		t.Errorf("body %s", r.body)
	}
	if h.pub.calls.Load() != 0 {
		t.Error("resend of an unknown address published an event")
	}
	if _, err := h.store.Get(context.Background(), email); !errors.Is(err, userapi.ErrNotFound) {
		t.Errorf("resend of an unknown address created a record: %v", err)
	}
	// The same answer for a pending address.
	h.mustStatus(h.resend(email), http.StatusAccepted)
}

// The concurrency rule: 2,000 concurrent verifies with the right
// code give exactly one 200 and exactly one user_account_verified event.
func TestConcurrentVerifyExactlyOnce(t *testing.T) {
	h := newHarness(t, func(c *userapi.Config) { c.RateLimitPerIP = userapi.RateLimitOff })
	email := h.email()
	code := h.code(email)
	body, _ := json.Marshal(map[string]string{"email": email, "code": code})

	const n = 2000
	client := &http.Client{
		Timeout:   60 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: n, MaxConnsPerHost: n},
	}
	defer client.CloseIdleConnections()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		statuses = map[int]int{}
		start    = make(chan struct{})
	)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			resp, err := client.Post(h.base+"/api/verify", "application/json", strings.NewReader(string(body)))
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				statuses[-1]++
				return
			}
			resp.Body.Close()
			statuses[resp.StatusCode]++
		}()
	}
	close(start)
	wg.Wait()
	t.Logf("statuses: %v", statuses)
	if statuses[http.StatusOK] != 1 {
		t.Errorf("%d verifies succeeded, want exactly 1 (statuses %v)", statuses[http.StatusOK], statuses)
	}
	for s, c := range statuses {
		if s != http.StatusOK && s != http.StatusBadRequest && s != http.StatusTooManyRequests {
			t.Errorf("%d requests got %d", c, s)
		}
	}
	eventstest.ReadTopic(t, h.brokers, events.TopicUserAccountVerified, 1, 20*time.Second, eventstest.ByKey(email))
	if got := h.verified(email, 3*time.Second); len(got) != 1 {
		t.Errorf("%d user_account_verified events, want exactly 1", len(got))
	}
}

func TestRegisterPublishFailure(t *testing.T) {
	h := newHarness(t, func(c *userapi.Config) { c.ResendInterval = time.Second })
	ctx := context.Background()

	t.Run("new registration is removed", func(t *testing.T) {
		email := h.email()
		h.pub.mode.Store(publishFail)
		wantProblem(t, h.register(email), http.StatusServiceUnavailable, userapi.CodeUnavailable)
		h.pub.mode.Store(publishOK)
		if _, err := h.store.Get(ctx, email); !errors.Is(err, userapi.ErrNotFound) {
			t.Fatalf("a failed register left a record behind: %v", err)
		}
		// Nothing holds back a retry: no resend interval was started.
		code := h.code(email)
		h.mustStatus(h.verify(email, code), http.StatusOK)
	})

	t.Run("replaced registration comes back", func(t *testing.T) {
		email := h.email()
		code := h.code(email)
		before, err := h.store.Get(ctx, email)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(1100 * time.Millisecond)
		h.pub.mode.Store(publishFail)
		wantProblem(t, h.register(email), http.StatusServiceUnavailable, userapi.CodeUnavailable)
		wantProblem(t, h.resend(email), http.StatusServiceUnavailable, userapi.CodeUnavailable)
		h.pub.mode.Store(publishOK)
		after, err := h.store.Get(ctx, email)
		if err != nil || after.Version != before.Version {
			t.Fatalf("after failed re-register and resend: %+v, %v; want the first record back", after, err)
		}
		h.mustStatus(h.verify(email, code), http.StatusOK)
	})

	t.Run("timeout keeps the registration", func(t *testing.T) {
		// The event may still arrive and mail its code: that code must
		// verify, so the registration stays (issue 17).
		h := newHarness(t, func(c *userapi.Config) { c.PublishTimeout = 200 * time.Millisecond })
		email := h.email()
		h.pub.mode.Store(publishBlock)
		r := h.register(email)
		wantProblem(t, r, http.StatusServiceUnavailable, userapi.CodeUnavailable)
		if r.header.Get("Retry-After") == "" {
			t.Error("503 without Retry-After")
		}
		if _, err := h.store.Get(ctx, email); err != nil {
			t.Fatalf("a timed-out register removed the registration whose code may still be mailed: %v", err)
		}
	})

	// The cause is logged (5xx), with the user id and without the address.
	if !strings.Contains(h.logs.String(), errBrokerDown.Error()) {
		t.Errorf("the publish failure was not logged:\n%s", h.logs)
	}
}

func TestVerifyPublishFailureRestores(t *testing.T) {
	h := newHarness(t, nil)
	email := h.email()
	code := h.code(email)
	wantProblem(t, h.verify(email, wrong(code)), http.StatusBadRequest, userapi.CodeInvalidCode)

	h.pub.mode.Store(publishFail)
	wantProblem(t, h.verify(email, code), http.StatusServiceUnavailable, userapi.CodeUnavailable)
	h.pub.mode.Store(publishOK)
	p, err := h.store.Get(context.Background(), email)
	if err != nil {
		t.Fatalf("pending registration not restored: %v", err)
	}
	if p.Attempts != 1 {
		t.Errorf("attempts = %d after restore, want 1: the attempt that met the broker outage is given back", p.Attempts)
	}
	h.mustStatus(h.verify(email, code), http.StatusOK)
	eventstest.ReadTopic(t, h.brokers, events.TopicUserAccountVerified, 1, 20*time.Second, eventstest.ByKey(email))
	if got := h.verified(email, 2*time.Second); len(got) != 1 {
		t.Errorf("%d user_account_verified events, want 1", len(got))
	}
}

// Codes and addresses stay out of logs and responses on every path,
// failures included, with debug logging on. (Every harness test checks
// this at its end; this one walks all the paths.)
func TestNoCodeInLogsOrResponses(t *testing.T) {
	h := newHarness(t, func(c *userapi.Config) { c.ResendInterval = time.Second; c.CodeMaxAttempts = 2 })
	a, b := h.email(), h.email()
	codeA := h.code(a)
	h.verify(a, wrong(codeA))
	h.resend(a)
	h.pub.mode.Store(publishFail)
	h.verify(a, codeA)
	h.register(b)
	h.pub.mode.Store(publishOK)
	h.verify(a, codeA)
	codeB := h.code(b)
	h.verify(b, wrong(codeB))
	h.verify(b, wrong(codeB))
	h.verify(b, codeB) // 429
	time.Sleep(1100 * time.Millisecond)
	h.resend(b)
	_, codes := h.created(b, 2)
	h.verify(b, codes[1])
	h.do(http.MethodPost, "/api/verify", "application/json", `{"email":"`+b+`","code":"`+codeB+`","x":1}`)
	h.do(http.MethodPost, "/api/verify", "text/plain", `{"email":"`+b+`","code":"`+codeB+`"}`)
	h.do(http.MethodPost, "/api/verify", "application/json", `{"email":"`+b+`","code":`+codeB+`}`)

	if !strings.Contains(h.logs.String(), `"level":"DEBUG"`) || !strings.Contains(h.logs.String(), `"level":"ERROR"`) {
		t.Fatalf("expected debug and error lines to check:\n%s", h.logs)
	}
	h.logs.checkNoLeaks(t)
}

func TestHealthReadyMetrics(t *testing.T) {
	h := newHarness(t, nil)
	r := h.do(http.MethodGet, "/healthz", "", "")
	h.mustStatus(r, http.StatusOK)
	r = h.do(http.MethodGet, "/readyz", "", "")
	h.mustStatus(r, http.StatusOK)

	email := h.email()
	h.code(email)
	h.verify(email, "000000x"[:6])
	h.do(http.MethodGet, "/nowhere", "", "")

	// Metrics are not served on the public port (issue 14): they would tell
	// which addresses are pending. cmd serves the registry on METRICS_ADDR.
	wantProblem(t, h.do(http.MethodGet, "/metrics", "", ""), http.StatusNotFound, userapi.CodeNotFound)
	r = serve(promhttp.HandlerFor(h.reg, promhttp.HandlerOpts{}), http.MethodGet, "/metrics", "", "")
	h.mustStatus(r, http.StatusOK)
	for _, want := range []string{
		`countersign_http_requests_total{method="POST",route="/api/register",status="202"} 1`,
		`countersign_http_requests_total{method="GET",route="unmatched",status="404"} 2`, // /nowhere and /metrics
		`countersign_http_request_duration_seconds_count{route="/api/register"} 1`,
		`countersign_publish_duration_seconds_count{outcome="ok",topic="user_account_created"} 1`,
		`countersign_pending_registrations 1`,
		`countersign_code_mails_held_back_total{budget="mailbox"} 0`,
		`countersign_pending_refused_total 0`,
	} {
		if !strings.Contains(string(r.body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

func TestReadyzBrokerDown(t *testing.T) {
	keyring, _ := events.NewRandomKeyring()
	srv, err := userapi.NewServer(userapi.Config{}, userapi.Deps{
		Publisher: &switchPublisher{},
		Keyring:   keyring,
		Ready:     func(context.Context) error { return errors.New("no broker") },
		Logger:    eventstest.Logger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	rec := serve(srv.Handler(), http.MethodGet, "/readyz", "", "")
	wantProblem(t, rec, http.StatusServiceUnavailable, userapi.CodeUnavailable)
	rec = serve(srv.Handler(), http.MethodGet, "/healthz", "", "")
	if rec.status != http.StatusOK {
		t.Errorf("/healthz %d while the broker is down: the process is up", rec.status)
	}
}
