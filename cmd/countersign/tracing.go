package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Tracing settings: OpenTelemetry's standard variables, so that a collector
// set up for other services needs nothing new. The SDK and the exporter
// read the rest of the standard set themselves, from the process
// environment (OTEL_EXPORTER_OTLP_HEADERS, OTEL_TRACES_SAMPLER,
// OTEL_RESOURCE_ATTRIBUTES, OTEL_BSP_*, ...).
var otelSettings = []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SERVICE_NAME", "OTEL_SDK_DISABLED"}

// tracingConfig is what startTracing takes from the OTEL_* settings.
type tracingConfig struct {
	// Endpoint is OTEL_EXPORTER_OTLP_ENDPOINT, the collector's base URL;
	// spans go to Endpoint + "/v1/traces".
	Endpoint *url.URL
	// TracesEndpoint is OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, the full URL;
	// it wins over Endpoint.
	TracesEndpoint *url.URL
	// ServiceName is OTEL_SERVICE_NAME; empty means "countersign-<command>".
	ServiceName string
	// Disabled is OTEL_SDK_DISABLED: no tracing whatever the endpoints.
	Disabled bool
}

// url returns where spans go, or nil when tracing is off.
func (c tracingConfig) url() *url.URL {
	switch {
	case c.Disabled:
		return nil
	case c.TracesEndpoint != nil:
		return c.TracesEndpoint
	case c.Endpoint != nil:
		return c.Endpoint.JoinPath("v1", "traces")
	}
	return nil
}

// otlpURL parses an OTLP/HTTP endpoint setting into *field.
func otlpURL(field func(*config) **url.URL) func(*config, string, string) error {
	return func(c *config, name, v string) error {
		u, err := url.Parse(v)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			// The value may hold credentials: it is not repeated.
			return fmt.Errorf("%s: want an http:// or https:// URL, such as http://localhost:4318", name)
		}
		*field(c) = u
		return nil
	}
}

// startTracing installs OpenTelemetry's SDK as the process's tracer
// provider when the OTEL_* variables ask for it; the packages pick it up as
// their default (userapi, events/kafka, mail). Otherwise it installs
// OpenTelemetry's no-op provider, whose spans cost a few nanoseconds and
// no allocation: the default global one delegates, and allocated some
// 450 B per API request (docs/benchmarks.md, issue 18). service names the
// process unless OTEL_SERVICE_NAME does. stop flushes the spans still
// buffered; call it at exit.
func startTracing(ctx context.Context, cfg tracingConfig, service string, logger *slog.Logger) (stop func(), err error) {
	endpoint := cfg.url()
	if endpoint == nil {
		otel.SetTracerProvider(noop.NewTracerProvider())
		return func() {}, nil
	}
	if cfg.ServiceName != "" {
		service = cfg.ServiceName
	}
	exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(endpoint.String()))
	if err != nil {
		return nil, fmt.Errorf("OTEL_EXPORTER_OTLP_ENDPOINT: %w", err)
	}
	res, err := resource.New(ctx,
		resource.WithFromEnv(), // OTEL_RESOURCE_ATTRIBUTES from the process environment
		resource.WithTelemetrySDK(),
		resource.WithAttributes(attribute.String("service.name", service)),
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
	logger.Info("tracing on: spans are exported over OTLP/HTTP", "endpoint", endpoint.Redacted(), "service", service)
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := tp.Shutdown(ctx); err != nil {
			logger.Warn("flush spans at exit", "err", err)
		}
	}, nil
}
