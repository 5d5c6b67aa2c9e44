package kafka

import (
	"context"
	"testing"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/countersign/countersign/events"
)

// BenchmarkTracingOff measures what tracing adds to a publish and to a
// handled record when no tracer provider is installed (OTEL_* unset):
// OpenTelemetry's no-op tracer.
func BenchmarkTracingOff(b *testing.B) {
	t := tracer(nil)
	e := events.Event{ID: "id", Type: events.TopicUserAccountCreated}
	topic := events.TopicUserAccountCreated
	m := &ckafka.Message{TopicPartition: ckafka.TopicPartition{Topic: &topic}}
	ctx := context.Background()
	b.Run("publish", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			sctx, span := startPublishSpan(ctx, t, e)
			ev := e
			injectTrace(sctx, &ev)
			endSpan(span, nil)
		}
	})
	b.Run("process", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, span := startProcessSpan(ctx, t, "group", m, e)
			endSpan(span, nil)
		}
	})
}
