package problem_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/countersign/countersign/problem"
)

func TestWrite(t *testing.T) {
	rec := httptest.NewRecorder()
	rec.Header().Set("Retry-After", "3")
	problem.Write(rec, problem.Problem{Type: problem.Type("unavailable"), Title: "Service unavailable", Status: 503, Detail: "d", Instance: "/readyz"})
	if rec.Code != http.StatusServiceUnavailable {
		t.Errorf("status %d", rec.Code)
	}
	for k, v := range map[string]string{"Content-Type": "application/problem+json", "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "Retry-After": "3"} {
		if got := rec.Header().Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	want := `{"type":"https://countersign.dev/problems/unavailable","title":"Service unavailable","status":503,"detail":"d","instance":"/readyz"}` + "\n"
	if rec.Body.String() != want {
		t.Errorf("body %q, want %q", rec.Body.String(), want)
	}
	var p problem.Problem
	if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil || p.Status != 503 {
		t.Errorf("%+v %v", p, err)
	}
}
