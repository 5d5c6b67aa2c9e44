package platform

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestWaitFor(t *testing.T) {
	ctx := context.Background()
	calls := 0
	err := WaitFor(ctx, time.Minute, time.Millisecond, func(context.Context) error {
		if calls++; calls < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Errorf("WaitFor = %v after %d calls, want nil after 3", err, calls)
	}
	// The last error comes back once the time is up; each try sees the
	// deadline.
	err = WaitFor(ctx, 50*time.Millisecond, time.Millisecond, func(ctx context.Context) error {
		if _, ok := ctx.Deadline(); !ok {
			t.Error("try got a context without deadline")
		}
		return errors.New("down")
	})
	if err == nil || err.Error() != "down" {
		t.Errorf("WaitFor = %v, want the last error", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := WaitFor(cctx, time.Hour, time.Hour, func(context.Context) error { return errors.New("down") }); err == nil {
		t.Error("WaitFor with an ended context succeeded")
	}
}
