package userapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/countersign/countersign/events"
	"github.com/countersign/countersign/events/eventstest"
	"github.com/countersign/countersign/events/kafka"
	"github.com/countersign/countersign/userapi"
)

// harness is a running server on :0 publishing to a real broker (embedded,
// or KAFKA_TEST_BROKERS), with its logs captured.
type harness struct {
	t        *testing.T
	brokers  string
	producer *kafka.Producer
	pub      *switchPublisher
	keyring  *events.Keyring
	store    userapi.Store
	reg      *prometheus.Registry
	srv      *userapi.Server
	base     string
	logs     *syncBuffer
	client   *http.Client
}

// newHarness starts a server on a memory store; configure may change the
// configuration. Addresses in emails (added with h.email) must never appear
// in its logs; that is checked when the test ends.
func newHarness(t *testing.T, configure func(*userapi.Config)) *harness {
	t.Helper()
	return newHarnessWith(t, harnessOptions{}, configure)
}

// newHarnessOn is newHarness with a producer built from ecfg, for tests that
// bring their own broker (eventstest.StartRestartable).
func newHarnessOn(t *testing.T, ecfg kafka.Config, configure func(*userapi.Config)) *harness {
	t.Helper()
	return newHarnessWith(t, harnessOptions{ecfg: &ecfg}, configure)
}

// harnessOptions are what some tests change besides the configuration.
type harnessOptions struct {
	// store, when set, replaces a new MemoryStore.
	store userapi.Store
	// brokers, when set, is used instead of eventstest.Brokers.
	brokers string
	// ecfg, when set, is the producer's configuration (brokers unused).
	ecfg *kafka.Config
	// keyring, when set, replaces a new random one.
	keyring *events.Keyring
	// loaded is passed as Deps.AccountsLoaded.
	loaded <-chan struct{}
}

func newHarnessWith(t *testing.T, opt harnessOptions, configure func(*userapi.Config)) *harness {
	t.Helper()
	var ecfg kafka.Config
	if opt.ecfg != nil {
		ecfg = *opt.ecfg
	} else {
		brokers := opt.brokers
		if brokers == "" {
			brokers = eventstest.Brokers(t)
		}
		ecfg = eventstest.Config(t, brokers)
	}
	brokers := ecfg.Brokers
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := kafka.EnsureTopics(ctx, ecfg, events.Topics...); err != nil {
		t.Fatal(err)
	}
	producer, err := kafka.NewProducer(ecfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = producer.Close(ctx)
	})
	keyring := opt.keyring
	if keyring == nil {
		if keyring, err = events.NewRandomKeyring(); err != nil {
			t.Fatal(err)
		}
	}
	store := opt.store
	if store == nil {
		store = userapi.NewMemoryStore()
	}
	h := &harness{
		t:        t,
		brokers:  brokers,
		producer: producer,
		pub:      &switchPublisher{real: producer},
		keyring:  keyring,
		store:    store,
		reg:      prometheus.NewRegistry(),
		logs:     &syncBuffer{},
		client:   &http.Client{Timeout: 30 * time.Second},
	}
	// Runs after the server closed (cleanups run last-in first-out), when
	// every log line is written.
	t.Cleanup(func() { h.logs.checkNoLeaks(t) })
	cfg := userapi.Config{HTTPAddr: "127.0.0.1:0"}
	if configure != nil {
		configure(&cfg)
	}
	h.srv, err = userapi.NewServer(cfg, userapi.Deps{
		Publisher:      h.pub,
		Keyring:        keyring,
		Store:          h.store,
		Ready:          producer.Ping,
		AccountsLoaded: opt.loaded,
		Logger:         slog.New(slog.NewJSONHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Registry:       h.reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.srv.Open(); err != nil {
		t.Fatal(err)
	}
	h.base = "http://" + h.srv.Addr()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := h.srv.Close(ctx); err != nil {
			t.Errorf("close: %v", err)
		}
		h.client.CloseIdleConnections()
	})
	return h
}

// email returns a unique address for this test.
func (h *harness) email() string {
	e := eventstest.UniqueEmail(h.t)
	h.logs.addEmail(e)
	return e
}

type response struct {
	status int
	header http.Header
	body   []byte
}

// do sends a request with a JSON content type unless one is given.
func (h *harness) do(method, path, contentType, body string) response {
	h.t.Helper()
	req, err := http.NewRequest(method, h.base+path, strings.NewReader(body))
	if err != nil {
		h.t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	return h.send(req)
}

func (h *harness) send(req *http.Request) response {
	h.t.Helper()
	resp, err := h.client.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	h.logs.addResponse(b)
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

func (h *harness) post(path string, v any) response {
	h.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		h.t.Fatal(err)
	}
	return h.do(http.MethodPost, path, "application/json", string(b))
}

func (h *harness) register(email string) response {
	h.t.Helper()
	return h.post("/api/register", map[string]string{"email": email, "first_name": "Ada", "last_name": "Lovelace"})
}

func (h *harness) verify(email, code string) response {
	h.t.Helper()
	return h.post("/api/verify", map[string]string{"email": email, "code": code})
}

func (h *harness) resend(email string) response {
	h.t.Helper()
	return h.post("/api/resend", map[string]string{"email": email})
}

func (h *harness) mustStatus(r response, status int) {
	h.t.Helper()
	if r.status != status {
		h.t.Fatalf("status %d, want %d; body %s", r.status, status, r.body)
	}
}

// created reads the first n user_account_created events of email and
// returns them with the codes they carry, opened with the keyring.
func (h *harness) created(email string, n int) ([]events.UserAccountCreated, []string) {
	h.t.Helper()
	msgs := eventstest.ReadTopic(h.t, h.brokers, events.TopicUserAccountCreated, n, 20*time.Second, eventstest.ByKey(email))
	var (
		data  []events.UserAccountCreated
		codes []string
	)
	for _, m := range msgs[:n] {
		d, err := eventstest.Decode(h.t, m).UserAccountCreated()
		if err != nil {
			h.t.Fatal(err)
		}
		code, err := h.keyring.Open(d)
		if err != nil {
			h.t.Fatalf("open sealed code: %v", err)
		}
		data = append(data, d)
		codes = append(codes, code)
		h.logs.addCode(code)
	}
	return data, codes
}

// code registers email and returns the code it was sent.
func (h *harness) code(email string) string {
	h.t.Helper()
	h.mustStatus(h.register(email), http.StatusAccepted)
	_, codes := h.created(email, 1)
	return codes[0]
}

// verified reads user_account_verified events of email for d, all of them.
func (h *harness) verified(email string, d time.Duration) []*ckafka.Message {
	h.t.Helper()
	return eventstest.CountTopic(h.t, h.brokers, events.TopicUserAccountVerified, d, eventstest.ByKey(email))
}

// wrong returns a code that is not code.
func wrong(code string) string {
	b := []byte(code)
	b[0] = '0' + (b[0]-'0'+1)%10
	return string(b)
}

// wantProblem checks r is an RFC 9457 problem with the given status and code.
func wantProblem(t *testing.T, r response, status int, code userapi.Code) userapi.Problem {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d; body %s", r.status, status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("Content-Type %q, want application/problem+json", ct)
	}
	var p userapi.Problem
	dec := json.NewDecoder(bytes.NewReader(r.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		t.Fatalf("problem body %s: %v", r.body, err)
	}
	if p.Type != "https://countersign.dev/problems/"+string(code) || p.Status != status || p.Title == "" || p.Detail == "" {
		t.Errorf("problem %+v, want type %s status %d with title and detail", p, code, status)
	}
	return p
}

// switchPublisher publishes through the real producer unless told to fail:
// failure injection for the publish call only.
type switchPublisher struct {
	real  events.Publisher
	mode  atomic.Int32 // 0 real, 1 fail, 2 block until ctx ends
	calls atomic.Int32
}

const (
	publishOK = iota
	publishFail
	publishBlock
)

// errBrokerDown is a failure known not to have written the event (as
// kafka.ErrBrokersDown is); a blocked publish ends with an unknown outcome.
var errBrokerDown = fmt.Errorf("broker down (injected): %w", events.ErrNotPublished)

// Down forwards the real producer's: tests that stop the broker see the
// user API refuse requests up front, as in production.
func (p *switchPublisher) Down() error {
	if d, ok := p.real.(userapi.DownReporter); ok {
		return d.Down()
	}
	return nil
}

func (p *switchPublisher) Publish(ctx context.Context, e events.Event) error {
	p.calls.Add(1)
	switch p.mode.Load() {
	case publishFail:
		return errBrokerDown
	case publishBlock:
		<-ctx.Done()
		return ctx.Err()
	}
	return p.real.Publish(ctx, e)
}

// syncBuffer collects log output and response bodies, and the codes and
// addresses that must never appear in them.
type syncBuffer struct {
	mu        sync.Mutex
	logs      bytes.Buffer
	responses [][]byte
	codes     []string
	emails    []string
}

func (b *syncBuffer) addEmail(e string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.emails = append(b.emails, e)
}

// checkNoLeaks fails t if a code seen in an event appears in a log line or
// a response body, or a test address in a log line. A code is matched as a
// run of exactly six digits, so timestamps and ids cannot match by chance.
func (b *syncBuffer) checkNoLeaks(t *testing.T) {
	b.mu.Lock()
	defer b.mu.Unlock()
	logs := b.logs.String()
	for _, code := range b.codes {
		re := regexp.MustCompile(`(^|[^0-9])` + code + `([^0-9]|$)`)
		if line := firstMatchingLine(logs, re); line != "" {
			t.Errorf("a code appears in the log: %s", line)
		}
		for _, body := range b.responses {
			if re.Match(body) {
				t.Errorf("a code appears in a response: %s", body)
			}
		}
	}
	for _, e := range b.emails {
		if strings.Contains(strings.ToLower(logs), e) {
			t.Errorf("an address appears in the log: %s", firstMatchingLine(logs, regexp.MustCompile(regexp.QuoteMeta(e))))
		}
	}
}

func firstMatchingLine(s string, re *regexp.Regexp) string {
	for _, line := range strings.Split(s, "\n") {
		if re.MatchString(line) {
			return line
		}
	}
	return ""
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.logs.Write(p)
}

func (b *syncBuffer) addResponse(body []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.responses = append(b.responses, body)
}

func (b *syncBuffer) addCode(code string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.codes = append(b.codes, code)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.logs.String()
}
