package kafka

import (
	"context"
	"time"

	gocache "github.com/patrickmn/go-cache"

	"github.com/countersign/countersign/events"
)

// Dedupe wraps h so that an event whose id was handled within window is
// skipped (onDuplicate, when set, sees it) instead of handled again. An id
// is marked only after h returned nil: a failed attempt, retried or
// dead-lettered, is never mistaken for a handled one (Watermill's
// deduplicator marks before the handler runs, so a failure there loses the
// retry). Memory is per process and bounded by window; a crash forgets it.
func Dedupe(window time.Duration, onDuplicate func(events.Event), h events.Handler) events.Handler {
	seen := gocache.New(window, time.Minute)
	return func(ctx context.Context, e events.Event) error {
		if _, dup := seen.Get(e.ID); dup {
			if onDuplicate != nil {
				onDuplicate(e)
			}
			return nil
		}
		if err := h(ctx, e); err != nil {
			return err
		}
		seen.SetDefault(e.ID, struct{}{})
		return nil
	}
}
