package main_test

import (
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/countersign/countersign/events"
	"github.com/countersign/countersign/events/eventstest"
	"github.com/countersign/countersign/mail/smtptest"
)

// collectedSpan is what the fake collector keeps of an exported span.
type collectedSpan struct {
	service, name, traceID, spanID, parentID string
}

// otlpCollector is an OTLP/HTTP endpoint (protobuf) that records spans.
type otlpCollector struct {
	mu    sync.Mutex
	spans []collectedSpan
	srv   *httptest.Server
}

func startCollector(t *testing.T) *otlpCollector {
	c := &otlpCollector{}
	c.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" {
			http.Error(w, "want protobuf on /v1/traces", http.StatusBadRequest)
			return
		}
		body, err := io.ReadAll(r.Body)
		var req coltracepb.ExportTraceServiceRequest
		if err == nil {
			err = proto.Unmarshal(body, &req)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		c.mu.Lock()
		for _, rs := range req.ResourceSpans {
			service := ""
			for _, a := range rs.GetResource().GetAttributes() {
				if a.Key == "service.name" {
					service = a.GetValue().GetStringValue()
				}
			}
			for _, ss := range rs.ScopeSpans {
				for _, s := range ss.Spans {
					c.spans = append(c.spans, collectedSpan{service, s.Name,
						hex.EncodeToString(s.TraceId), hex.EncodeToString(s.SpanId), hex.EncodeToString(s.ParentSpanId)})
				}
			}
		}
		c.mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
		out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
		_, _ = w.Write(out)
	}))
	t.Cleanup(c.srv.Close)
	return c
}

func (c *otlpCollector) trace(id string) map[string]collectedSpan {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]collectedSpan{}
	for _, s := range c.spans {
		if s.traceID == id {
			out[s.name] = s
		}
	}
	return out
}

// TestTracingAcrossProcesses: `countersign userapi` and `countersign
// notifier`, switched on by OTEL_EXPORTER_OTLP_ENDPOINT alone, export the
// spans of one registration to an OTLP collector under one trace id, each
// under its own service name, the notifier's spans children of the user
// API's across the topic.
func TestTracingAcrossProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	brokers := eventstest.Brokers(t)
	col := startCollector(t)
	group := eventstest.UniqueGroup(t)
	eventstest.GroupAtEnd(t, brokers, group)
	smtp := smtptest.Start(t)
	entry, err := events.GenerateKeyEntry()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	httpAddr, opsAddr := freeAddr(t), freeAddr(t)
	common := []string{"KAFKA_BROKERS=" + brokers, "CODE_ENCRYPTION_KEYS=" + entry, "LOG_LEVEL=info",
		"OTEL_EXPORTER_OTLP_ENDPOINT=" + col.srv.URL, "OTEL_BSP_SCHEDULE_DELAY=100", "PUBLIC_URL=http://" + httpAddr}
	api := start(t, dir, append([]string{"HTTP_ADDR=" + httpAddr, "METRICS_ADDR=off"}, common...), "userapi")
	ntf := start(t, dir, append([]string{
		"NOTIFIER_GROUP_ID=" + group, "OTEL_SERVICE_NAME=mailer",
		"SMTP_HOST=127.0.0.1", "SMTP_PORT=" + strconv.Itoa(smtp.Port()), "SMTP_TLS=none", "METRICS_ADDR=" + opsAddr,
	}, common...), "notifier")
	base := "http://" + httpAddr
	waitHTTP(t, api, base+"/readyz", 90*time.Second)
	waitHTTP(t, ntf, "http://"+opsAddr+"/readyz", 90*time.Second)

	const traceID = "0af7651916cd43dd8448eb211c80319c"
	email := eventstest.UniqueEmail(t)
	req, _ := http.NewRequest(http.MethodPost, base+"/api/register",
		strings.NewReader(fmt.Sprintf(`{"email":%q,"first_name":"Grace","last_name":"Hopper"}`, email)))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("traceparent", "00-"+traceID+"-b7ad6b7169203331-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("register: %d", resp.StatusCode)
	}
	waitMail(t, smtp, email, 1, 60*time.Second)

	want := []struct{ name, service string }{
		{"POST /api/register", "countersign-userapi"},
		{"send user_account_created", "countersign-userapi"},
		{"process user_account_created", "mailer"},
		{"smtp send", "mailer"},
	}
	var got map[string]collectedSpan
	deadline := time.Now().Add(30 * time.Second)
	for got = col.trace(traceID); len(got) < len(want); got = col.trace(traceID) {
		if time.Now().After(deadline) {
			t.Fatalf("spans of trace %s exported within 30s: %v", traceID, got)
		}
		time.Sleep(100 * time.Millisecond)
	}
	parent := "b7ad6b7169203331"
	for _, w := range want {
		s, ok := got[w.name]
		if !ok {
			t.Fatalf("no span %q in the trace: %v", w.name, got)
		}
		if s.service != w.service || s.parentID != parent {
			t.Errorf("span %q: service %q, parent %s; want %q, %s", w.name, s.service, s.parentID, w.service, parent)
		}
		parent = s.spanID
	}
}

// Tracing is off without an endpoint, and a wrong OTEL_* value stops the
// start with a message naming the variable.
func TestTracingSettingsAreChecked(t *testing.T) {
	for _, tc := range []struct {
		env  []string
		want string
	}{
		{[]string{"OTEL_SDK_DISABLED=maybe"}, "OTEL_SDK_DISABLED"},
		{[]string{"OTEL_EXPORTER_OTLP_ENDPOINT=localhost:4318"}, "OTEL_EXPORTER_OTLP_ENDPOINT"},
		{[]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=ftp://collector/v1/traces"}, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"},
	} {
		out, code := run(t, tc.env, "userapi")
		if code == 0 || !strings.Contains(out, tc.want) {
			t.Errorf("%v: exit %d, output %q; want a failure naming %s", tc.env, code, out, tc.want)
		}
	}
	// Disabled wins over an endpoint: the start then fails for want of
	// Kafka, and never says tracing is on.
	out, code := run(t, []string{"OTEL_SDK_DISABLED=true", "OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:1"}, "userapi")
	if code == 0 || strings.Contains(out, "tracing on") || !strings.Contains(out, "KAFKA_BROKERS") {
		t.Errorf("OTEL_SDK_DISABLED=true with an endpoint: exit %d, %q; want tracing off and a failure for want of KAFKA_BROKERS", code, out)
	}
}
