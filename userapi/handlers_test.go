package userapi

import (
	"context"
	"testing"
	"time"
)

func TestMaskLatency(t *testing.T) {
	s := &Server{cfg: Config{PublishTimeout: time.Second}}
	// No publish seen yet: nothing to imitate.
	start := time.Now()
	s.maskLatency(context.Background())
	if time.Since(start) > 100*time.Millisecond {
		t.Error("waited with no latency observed")
	}
	s.observeCreatedLatency(40 * time.Millisecond)
	start = time.Now()
	s.maskLatency(context.Background())
	if d := time.Since(start); d < 20*time.Millisecond {
		t.Errorf("waited %v, want at least half the 40ms average", d)
	}
	// The wait ends with the request.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s.observeCreatedLatency(10 * time.Second)
	start = time.Now()
	s.maskLatency(ctx)
	if time.Since(start) > 500*time.Millisecond {
		t.Error("kept waiting after the request ended")
	}
}
