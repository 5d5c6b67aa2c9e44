package main_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/countersign/countersign/events"
	"github.com/countersign/countersign/events/eventstest"
	"github.com/countersign/countersign/events/kafka"
	"github.com/countersign/countersign/mail"
	"github.com/countersign/countersign/mail/smtptest"
	"github.com/countersign/countersign/notifier"
	"github.com/countersign/countersign/templates"
	"github.com/countersign/countersign/userapi"
)

// TestOneTraceFromRegisterToSMTP: a registration sent with a W3C
// traceparent header gives one trace, recorded in memory, that runs
// client → POST /api/register → send user_account_created → (topic) →
// process user_account_created in the notifier → smtp send, each span the
// child of the one before.
func TestOneTraceFromRegisterToSMTP(t *testing.T) {
	brokers := eventstest.Brokers(t)
	kcfg, tp, rec := eventstest.Traced(t, brokers)
	keys, err := events.NewRandomKeyring()
	if err != nil {
		t.Fatal(err)
	}

	producer, err := kafka.NewProducer(kcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = producer.Close(context.Background()) })
	api, err := userapi.NewServer(userapi.Config{HTTPAddr: "127.0.0.1:0"}, userapi.Deps{
		Publisher: producer, Keyring: keys, Logger: eventstest.Logger(t), Registry: prometheus.NewRegistry(), TracerProvider: tp,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := api.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = api.Close(context.Background()) })

	smtp := smtptest.Start(t)
	sender, err := mail.NewSMTPSender(mail.SMTPConfig{Host: "127.0.0.1", Port: smtp.Port(), TLS: mail.TLSNone, TracerProvider: tp}, eventstest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sender.Close() })
	tpl, err := templates.Load("")
	if err != nil {
		t.Fatal(err)
	}
	group := eventstest.UniqueGroup(t)
	eventstest.GroupAtEnd(t, brokers, group)
	n, err := notifier.New(notifier.Config{WorkerConfig: kafka.WorkerConfig{GroupID: group}},
		notifier.Deps{Kafka: kcfg, Keyring: keys, Templates: tpl, Sender: sender, Logger: eventstest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	nctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(nctx) }()
	t.Cleanup(func() { stop(); <-done })

	// The caller's own span, as a browser or gateway would send it.
	const (
		traceID      = "4bf92f3577b34da6a3ce929d0e0e4736"
		clientSpanID = "00f067aa0ba902b7"
	)
	email := eventstest.UniqueEmail(t)
	req, _ := http.NewRequest(http.MethodPost, "http://"+api.Addr()+"/api/register",
		strings.NewReader(fmt.Sprintf(`{"email":%q,"first_name":"Grace","last_name":"Hopper"}`, email)))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("traceparent", "00-"+traceID+"-"+clientSpanID+"-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("register: %d", resp.StatusCode)
	}
	waitMail(t, smtp, email, 1, 60*time.Second)

	chain := []struct {
		name string
		kind trace.SpanKind
	}{
		{"POST /api/register", trace.SpanKindServer},
		{"send " + events.TopicUserAccountCreated, trace.SpanKindProducer},
		{"process " + events.TopicUserAccountCreated, trace.SpanKindConsumer},
		{"smtp send", trace.SpanKindClient},
	}
	byName := map[string]sdktrace.ReadOnlySpan{}
	deadline := time.Now().Add(30 * time.Second)
	for len(byName) < len(chain) {
		if time.Now().After(deadline) {
			t.Fatalf("spans of trace %s after 30s: %v", traceID, keysOf(byName))
		}
		for _, s := range rec.Ended() {
			if s.SpanContext().TraceID().String() == traceID {
				byName[s.Name()] = s
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	parent := clientSpanID
	for _, link := range chain {
		s := byName[link.name]
		if s.SpanKind() != link.kind {
			t.Errorf("%q is a %v span, want %v", link.name, s.SpanKind(), link.kind)
		}
		if got := s.Parent().SpanID().String(); got != parent {
			t.Errorf("%q has parent %s, want %s", link.name, got, parent)
		}
		parent = s.SpanContext().SpanID().String()
	}
	for _, s := range byName {
		for _, a := range s.Attributes() {
			if strings.Contains(a.Value.Emit(), email) {
				t.Errorf("span %q attribute %s holds the address", s.Name(), a.Key)
			}
		}
	}
}

func keysOf(m map[string]sdktrace.ReadOnlySpan) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
