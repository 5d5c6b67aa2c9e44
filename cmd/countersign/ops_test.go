package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/countersign/countersign/problem"
	"github.com/countersign/countersign/userapi"
)

// A worker's ops endpoint: /healthz says the process is up, /readyz asks
// the consumer and answers 503 problem+json, without the cause, when it is
// not ready.
func TestWorkerOpsEndpoint(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	var notReady atomic.Bool
	stop, err := serveOps(addr, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry(), func(context.Context) error {
		if notReady.Load() {
			return errors.New("kafka metadata: secret-broker-detail")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()

	get := func(path string) (*http.Response, string) {
		t.Helper()
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp, string(body)
	}
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		if resp, body := get(path); resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s = %d %s, want 200", path, resp.StatusCode, body)
		}
	}

	notReady.Store(true)
	resp, body := get("/readyz")
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Content-Type") != problem.ContentType {
		t.Fatalf("not ready: GET /readyz = %d %q, want 503 %s", resp.StatusCode, resp.Header.Get("Content-Type"), problem.ContentType)
	}
	var p problem.Problem
	if err := json.Unmarshal([]byte(body), &p); err != nil {
		t.Fatalf("problem %q: %v", body, err)
	}
	if p.Type != userapi.CodeUnavailable.Type() || p.Status != http.StatusServiceUnavailable || p.Detail == "" {
		t.Errorf("problem %+v", p)
	}
	if strings.Contains(body, "secret-broker-detail") {
		t.Errorf("the cause leaked into the response: %s", body)
	}
	if resp, _ := get("/healthz"); resp.StatusCode != http.StatusOK {
		t.Errorf("not ready: GET /healthz = %d, want 200 (the process is up)", resp.StatusCode)
	}
}
