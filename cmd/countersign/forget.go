package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/countersign/countersign/cmd/internal/platform"
	"github.com/countersign/countersign/events"
	"github.com/countersign/countersign/events/kafka"
)

// forgetCommand is `forget <address>`.
func forgetCommand(address string) command {
	return command{
		summary:  forgetSummary,
		settings: forgetSettings,
		run:      func(ctx context.Context, env *Env, cfg *config) error { return runForget(ctx, env, cfg, address) },
	}
}

const forgetSummary = "erase a verified account, so the address may register again: forget <address>"

var forgetSettings = concat(kafkaSettings, logSettings)

// runForget publishes what makes every user API replica forget the address
// (a tombstone on the compacted user_account_verified, which they follow)
// and then user_account_deleted for the subscribers, each acknowledged by
// the brokers. It is the operator's answer to an erasure request, or to an
// account deleted downstream. The user id of the event is the one of the
// address's newest user_account_verified, found by reading that topic.
// Running it twice is harmless: the second run publishes the same again.
func runForget(ctx context.Context, env *Env, cfg *config, address string) error {
	addr := events.NormalizeEmail(address)
	if !strings.Contains(addr, "@") || strings.ContainsAny(addr, " \t\r\n") {
		return fmt.Errorf("%w: %q is not an e-mail address", errUsage, address)
	}
	kcfg := cfg.Kafka
	if err := kcfg.Validate(); err != nil {
		return err
	}
	if err := platform.EnsureTopics(ctx, kcfg, events.Topics...); err != nil {
		return err
	}
	userID, err := lastVerifiedUserID(ctx, kcfg, addr)
	if err != nil {
		return err
	}
	p, err := kafka.NewProducer(kcfg)
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), platform.ShutdownTimeout)
		defer cancel()
		if err := p.Close(cctx); err != nil {
			env.Logger.Error("close producer", "err", err)
		}
	}()
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := p.PublishTombstone(pctx, events.TopicUserAccountVerified, addr); err != nil {
		return err
	}
	e, err := events.NewUserAccountDeleted(events.UserAccountDeleted{UserID: userID, Email: addr, DeletedAt: time.Now()})
	if err != nil {
		return err
	}
	if err := p.Publish(pctx, e); err != nil {
		return fmt.Errorf("the tombstone was published, user_account_deleted was not (run forget again): %w", err)
	}
	who := "no user_account_verified found for it"
	if userID != "" {
		who = "user id " + userID
	}
	fmt.Fprintf(env.Stdout, "forgot %s (%s): tombstone on %s and %s published; the address may register again\n",
		addr, who, events.TopicUserAccountVerified, events.TopicUserAccountDeleted)
	return nil
}

// lastVerifiedUserID reads the accounts log to its current end and returns
// the user id of addr's newest user_account_verified ("" if there is none,
// or it was forgotten since).
func lastVerifiedUserID(ctx context.Context, kcfg kafka.Config, addr string) (string, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var last []byte
	err := kafka.FollowTopic(ctx, kcfg, events.TopicUserAccountVerified, func(_ context.Context, recs []kafka.Record) error {
		for _, r := range recs {
			if string(r.Key) == addr {
				last = r.Value
			}
		}
		return nil
	}, cancel)
	if err != nil && !errors.Is(err, context.Canceled) {
		return "", err
	}
	if ctx.Err() != nil && last != nil {
		e, err := events.Decode(last)
		if err != nil {
			return "", nil // not ours to judge: the tombstone still goes out
		}
		if d, err := e.UserAccountVerified(); err == nil {
			return d.UserID, nil
		}
	}
	return "", nil
}
