package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// Tracing settings: OpenTelemetry's standard variables, so that a collector
// set up for other services needs nothing new. The SDK and the exporter
// read the rest of the standard set themselves (OTEL_EXPORTER_OTLP_HEADERS,
// OTEL_TRACES_SAMPLER, OTEL_RESOURCE_ATTRIBUTES, OTEL_BSP_*, ...).
var otelSettings = []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SERVICE_NAME", "OTEL_SDK_DISABLED"}

// tracingConfig is what startTracing needs from the environment.
type tracingConfig struct {
	// endpoint is where spans are sent (OTLP over HTTP, protobuf): the
	// traces endpoint as given, or the general endpoint + "/v1/traces".
	// Empty means tracing is off.
	endpoint string
}

// tracingFromEnv reads and checks the OTEL_* variables. Tracing is on when
// an OTLP endpoint is set and OTEL_SDK_DISABLED is not true.
func tracingFromEnv(getenv func(string) string) (tracingConfig, error) {
	var cfg tracingConfig
	switch v := strings.ToLower(strings.TrimSpace(getenv("OTEL_SDK_DISABLED"))); v {
	case "", "false":
	case "true":
		return cfg, nil
	default:
		return cfg, fmt.Errorf("OTEL_SDK_DISABLED=%q: want true or false", v)
	}
	for _, name := range []string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"} {
		v := strings.TrimSpace(getenv(name))
		if v == "" {
			continue
		}
		u, err := url.Parse(v)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			// The value may hold credentials: it is not repeated.
			return cfg, fmt.Errorf("%s: want an http:// or https:// URL, such as http://localhost:4318", name)
		}
		if name == "OTEL_EXPORTER_OTLP_ENDPOINT" {
			u = u.JoinPath("v1", "traces")
		}
		cfg.endpoint = u.String()
		return cfg, nil
	}
	return cfg, nil
}

// startTracing installs OpenTelemetry's SDK as the process's tracer
// provider when the OTEL_* variables ask for it; the packages pick it up as
// their default (userapi, events/kafka, mail). Otherwise it installs
// nothing: the global provider stays OpenTelemetry's no-op, and a span
// costs a few nanoseconds. service names the process (OTEL_SERVICE_NAME
// wins). stop flushes the spans still buffered; call it at exit.
func startTracing(ctx context.Context, getenv func(string) string, service string, logger *slog.Logger) (stop func(), err error) {
	cfg, err := tracingFromEnv(getenv)
	if err != nil || cfg.endpoint == "" {
		return func() {}, err
	}
	exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(cfg.endpoint))
	if err != nil {
		return nil, fmt.Errorf("OTEL_EXPORTER_OTLP_ENDPOINT: %w", err)
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(attribute.String("service.name", service)),
		resource.WithFromEnv(), // OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
		resource.WithTelemetrySDK(),
	)
	if err != nil {
		return nil, fmt.Errorf("OTEL_RESOURCE_ATTRIBUTES: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		logger.Warn("opentelemetry", "err", err)
	}))
	u, _ := url.Parse(cfg.endpoint)
	logger.Info("tracing on: spans are exported over OTLP/HTTP", "endpoint", u.Redacted())
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := tp.Shutdown(ctx); err != nil {
			logger.Warn("flush spans at exit", "err", err)
		}
	}, nil
}
