package platform

import (
	"context"
	"log/slog"
	"time"

	"github.com/countersign/countersign/events"
	"github.com/countersign/countersign/events/kafka"
	"github.com/countersign/countersign/userapi"
)

// accountsFollower keeps the store's verified addresses in step with the
// accounts log, the compacted topic user_account_verified: it reads the
// whole log at start (loaded is closed when it has), then follows it, so
// a `countersign forget` reaches every replica. Kafka is the source of
// truth; a Redis store keeps a copy every replica shares.
type accountsFollower struct {
	loaded chan struct{}
	cancel context.CancelFunc
	done   chan struct{}
}

// followAccounts starts following. A failure (Kafka or the store gone for
// good) is logged and the log is read again from the start a second later:
// applying it twice changes nothing.
func followAccounts(kcfg kafka.Config, store userapi.Store, logger *slog.Logger) *accountsFollower {
	ctx, cancel := context.WithCancel(context.Background())
	f := &accountsFollower{loaded: make(chan struct{}), cancel: cancel, done: make(chan struct{})}
	logger = logger.With("component", "accounts")
	go func() {
		defer close(f.done)
		start, loaded := time.Now(), false
		count := 0
		for ctx.Err() == nil {
			err := kafka.FollowTopic(ctx, kcfg, events.TopicUserAccountVerified,
				func(ctx context.Context, recs []kafka.Record) error {
					changes := accountChanges(recs)
					if !loaded {
						count += len(changes)
					}
					return store.ApplyAccounts(ctx, changes)
				},
				func() {
					if !loaded {
						loaded = true
						logger.Info("verified addresses loaded from the accounts log", "records", count, "took", time.Since(start).Round(time.Millisecond))
						close(f.loaded)
					}
				})
			if err == nil || ctx.Err() != nil {
				return
			}
			logger.Error("following the accounts log failed; reading it again", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}()
	return f
}

// accountChanges turns records of the accounts log into store changes: a
// verified event makes its key an account, a tombstone forgets it.
func accountChanges(recs []kafka.Record) []userapi.AccountChange {
	out := make([]userapi.AccountChange, 0, len(recs))
	for _, r := range recs {
		if len(r.Key) == 0 {
			continue
		}
		out = append(out, userapi.AccountChange{Email: events.NormalizeEmail(string(r.Key)), Forgets: r.Tombstone()})
	}
	return out
}

// stop ends the following and waits for it.
func (f *accountsFollower) stop() {
	f.cancel()
	<-f.done
}
