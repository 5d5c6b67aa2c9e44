package userapi

import (
	"net/http"
	"strings"

	"github.com/gorilla/mux"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// instrumentation names the tracer: the package, as OpenTelemetry asks.
const instrumentation = "github.com/countersign/countersign/userapi"

func newTracer(tp trace.TracerProvider) trace.Tracer {
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	return tp.Tracer(instrumentation)
}

// traceRequests is router middleware: each API request gets a server span,
// "POST /api/register" and so on, a child of the caller's W3C traceparent
// header when it sends one. The handler's context carries the span, so the
// event it publishes continues the trace (the producer writes it into the
// event's traceparent, see kafka.Producer.Publish) through the topic to the
// notifier's mail. Health, readiness and metrics requests are not traced.
//
// With no tracer provider installed the span is a no-op, and the request
// goes on unchanged unless the caller sent a traceparent.
func (s *Server) traceRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/api/") {
			next.ServeHTTP(w, r)
			return
		}
		route := r.URL.Path
		if tpl, err := mux.CurrentRoute(r).GetPathTemplate(); err == nil {
			route = tpl
		}
		ctx := propagation.TraceContext{}.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		ctx, span := s.tracer.Start(ctx, r.Method+" "+route, trace.WithSpanKind(trace.SpanKindServer))
		defer span.End()
		if !span.IsRecording() {
			if trace.SpanContextFromContext(ctx).IsValid() {
				r = r.WithContext(ctx)
			}
			next.ServeHTTP(w, r)
			return
		}
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r.WithContext(ctx))
		status := sw.status()
		span.SetAttributes(
			attribute.String("http.request.method", r.Method),
			attribute.String("http.route", route),
			attribute.Int("http.response.status_code", status),
		)
		if status >= 500 {
			span.SetStatus(codes.Error, http.StatusText(status))
		}
	})
}
