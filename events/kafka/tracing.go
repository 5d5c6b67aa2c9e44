package kafka

import (
	"context"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/countersign/countersign/events"
)

// instrumentation names the tracer, as OpenTelemetry asks: the package.
const instrumentation = "github.com/countersign/countersign/events/kafka"

// Traces follow the CloudEvents distributed-tracing extension: Publish
// writes the W3C trace context of its span into the event's traceparent
// and tracestate attributes, and the subscriber starts the span of each
// record it handles as a child of them, so one trace runs from the request
// that caused an event to whatever its handlers do. Only the W3C format is
// used, whatever the process's global propagator, because that is what the
// extension carries.
var traceContext propagation.TraceContext

func tracer(tp trace.TracerProvider) trace.Tracer {
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	return tp.Tracer(instrumentation)
}

// injectTrace writes the span context of ctx into e. Without a valid span
// in ctx, e is left as it is.
func injectTrace(ctx context.Context, e *events.Event) {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return
	}
	c := propagation.MapCarrier{}
	traceContext.Inject(ctx, c)
	e.TraceParent, e.TraceState = c["traceparent"], c["tracestate"]
}

// extractTrace returns ctx with the remote span context e carries, if any.
// A malformed traceparent is ignored: the record is handled all the same,
// in a trace of its own.
func extractTrace(ctx context.Context, e events.Event) context.Context {
	if e.TraceParent == "" {
		return ctx
	}
	c := propagation.MapCarrier{"traceparent": e.TraceParent}
	if e.TraceState != "" {
		c["tracestate"] = e.TraceState
	}
	return traceContext.Extract(ctx, c)
}

// Made once: with tracing off a span should cost as little as possible.
var (
	producerSpan = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindProducer)}
	consumerSpan = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindConsumer)}
	spanNames    = func() map[[2]string]string {
		m := map[[2]string]string{}
		for _, op := range []string{"send ", "process "} {
			for _, t := range events.Topics {
				m[[2]string{op, t}] = op + t
			}
		}
		return m
	}()
)

// spanName is op + topic, without an allocation for the platform's topics.
func spanName(op, topic string) string {
	if n, ok := spanNames[[2]string{op, topic}]; ok {
		return n
	}
	return op + topic
}

// startPublishSpan starts the producer span of one event (OpenTelemetry's
// messaging conventions: "send <topic>", kind producer).
func startPublishSpan(ctx context.Context, t trace.Tracer, e events.Event) (context.Context, trace.Span) {
	ctx, span := t.Start(ctx, spanName("send ", e.Type), producerSpan...)
	if span.IsRecording() {
		span.SetAttributes(
			attribute.String("messaging.system", "kafka"),
			attribute.String("messaging.operation.type", "send"),
			attribute.String("messaging.destination.name", e.Type),
			attribute.String("messaging.message.id", e.ID),
		)
	}
	return ctx, span
}

// startProcessSpan starts the consumer span of one record ("process
// <topic>", kind consumer), a child of the trace context its event carries.
func startProcessSpan(ctx context.Context, t trace.Tracer, group string, m *ckafka.Message, e events.Event) (context.Context, trace.Span) {
	ctx, span := t.Start(extractTrace(ctx, e), spanName("process ", *m.TopicPartition.Topic), consumerSpan...)
	if span.IsRecording() {
		span.SetAttributes(
			attribute.String("messaging.system", "kafka"),
			attribute.String("messaging.operation.type", "process"),
			attribute.String("messaging.destination.name", *m.TopicPartition.Topic),
			attribute.String("messaging.consumer.group.name", group),
			attribute.Int("messaging.destination.partition.id", int(m.TopicPartition.Partition)),
			attribute.Int64("messaging.kafka.offset", int64(m.TopicPartition.Offset)),
			attribute.String("messaging.message.id", e.ID),
			attribute.String("cloudevents.event_type", e.Type),
		)
	}
	return ctx, span
}

// endSpan records err (if any) on span and ends it. The error text is the
// handler's or the client's, which never carries codes or addresses.
func endSpan(span trace.Span, err error) {
	if err != nil && span.IsRecording() {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}
