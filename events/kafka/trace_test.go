package kafka_test

import (
	"context"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/countersign/countersign/events"
	"github.com/countersign/countersign/events/eventstest"
	"github.com/countersign/countersign/events/kafka"
)

// TestTraceCrossesTopic: the span in Publish's context is continued on the
// other side of a real topic. The chain is request → "send <topic>" →
// "process <topic>" → the handler's own span, in one trace.
func TestTraceCrossesTopic(t *testing.T) {
	brokers := eventstest.Brokers(t)
	cfg, tp, rec := eventstest.Traced(t, brokers)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	p := mustProducer(t, cfg)
	e := createdEvent(t, mustKeyring(t), eventstest.UniqueEmail(t))

	handled := make(chan trace.SpanContext, 1)
	startSubscriber(t, cfg, kafka.SubscriberConfig{GroupID: eventstest.UniqueGroup(t), Topics: []string{events.TopicUserAccountCreated}},
		func(ctx context.Context, got events.Event) error {
			if got.ID != e.ID {
				return nil
			}
			_, span := tp.Tracer("test").Start(ctx, "handler work")
			span.End()
			handled <- span.SpanContext()
			return nil
		})

	rctx, root := tp.Tracer("test").Start(ctx, "POST /api/register")
	if err := p.Publish(rctx, e); err != nil {
		t.Fatal(err)
	}
	root.End()
	select {
	case <-handled:
	case <-ctx.Done():
		t.Fatal("the event was not handled")
	}

	// The process span ends after the handler returned.
	byName := map[string]sdktrace.ReadOnlySpan{}
	waitFor(t, "the process span ends", 20*time.Second, func() bool {
		for _, s := range rec.Ended() {
			if s.SpanContext().TraceID() == root.SpanContext().TraceID() {
				byName[s.Name()] = s
			}
		}
		return byName["process "+events.TopicUserAccountCreated] != nil
	})
	chain := []struct {
		name string
		kind trace.SpanKind
	}{
		{"POST /api/register", trace.SpanKindInternal},
		{"send " + events.TopicUserAccountCreated, trace.SpanKindProducer},
		{"process " + events.TopicUserAccountCreated, trace.SpanKindConsumer},
		{"handler work", trace.SpanKindInternal},
	}
	for i, link := range chain {
		s, ok := byName[link.name]
		if !ok {
			t.Fatalf("no span %q in the request's trace; spans: %v", link.name, names(rec.Ended()))
		}
		if s.SpanKind() != link.kind {
			t.Errorf("span %q is %v, want %v", link.name, s.SpanKind(), link.kind)
		}
		if i == 0 {
			continue
		}
		parent := byName[chain[i-1].name]
		if s.Parent().SpanID() != parent.SpanContext().SpanID() {
			t.Errorf("span %q has parent %s, want %q (%s)", link.name, s.Parent().SpanID(), chain[i-1].name, parent.SpanContext().SpanID())
		}
	}
	if !byName[chain[2].name].Parent().IsRemote() {
		t.Error("the process span's parent is not the remote context the event carried")
	}
}

// TestPublishWritesTraceParent: the event on the topic carries the send
// span's W3C trace context as its traceparent attribute; without a span in
// the context it carries none.
func TestPublishWritesTraceParent(t *testing.T) {
	brokers := eventstest.Brokers(t)
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	cfg := eventstest.Config(t, brokers)
	cfg.TracerProvider = tp
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := kafka.EnsureTopics(ctx, cfg, events.Topics...); err != nil {
		t.Fatal(err)
	}
	p := mustProducer(t, cfg)
	k := mustKeyring(t)
	traced, untraced := eventstest.UniqueEmail(t), "untraced-"+eventstest.UniqueEmail(t)
	rctx, root := tp.Tracer("test").Start(ctx, "root")
	if err := p.Publish(rctx, createdEvent(t, k, traced)); err != nil {
		t.Fatal(err)
	}
	root.End()
	// A producer with the no-op default provider and no span in ctx.
	plain := mustProducer(t, eventstest.Config(t, brokers))
	if err := plain.Publish(ctx, createdEvent(t, k, untraced)); err != nil {
		t.Fatal(err)
	}
	got := eventstest.Decode(t, eventstest.ReadTopic(t, brokers, events.TopicUserAccountCreated, 1, 20*time.Second, eventstest.ByKey(traced))[0])
	var send sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.Name() == "send "+events.TopicUserAccountCreated {
			send = s
		}
	}
	if send == nil {
		t.Fatal("no send span")
	}
	want := "00-" + send.SpanContext().TraceID().String() + "-" + send.SpanContext().SpanID().String() + "-01"
	if got.TraceParent != want {
		t.Errorf("traceparent = %q, want %q", got.TraceParent, want)
	}
	if got := eventstest.Decode(t, eventstest.ReadTopic(t, brokers, events.TopicUserAccountCreated, 1, 20*time.Second, eventstest.ByKey(untraced))[0]); got.TraceParent != "" || got.TraceState != "" {
		t.Errorf("untraced event carries traceparent %q, tracestate %q", got.TraceParent, got.TraceState)
	}
}

func names(spans []sdktrace.ReadOnlySpan) []string {
	out := make([]string, len(spans))
	for i, s := range spans {
		out[i] = s.Name()
	}
	return out
}
