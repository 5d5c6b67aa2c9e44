package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/countersign/countersign/cmd/internal/platform"
	"github.com/countersign/countersign/events/kafka"
)

// replayTargets are the services whose dead letters replay-dlq re-processes,
// with the settings each reads (those of the service itself, minus its
// operations endpoint: the replay serves no metrics).
var replayTargets = map[string][]string{
	"notifier":    concat(notifierSettings, mailSettings, kafkaSettings, keySettings, logSettings, otelSettings),
	"recommender": concat(recommenderSettings, mailSettings, kafkaSettings, logSettings, otelSettings),
}

// replayCommand is `replay-dlq <service>`.
func replayCommand(service string) command {
	return command{
		summary:  fmt.Sprintf("re-process the %s's dead letters with its own handler, for it alone, then exit", service),
		settings: replayTargets[service],
		run:      func(ctx context.Context, env *Env, cfg *config) error { return runReplayDLQ(ctx, env, cfg, service) },
	}
}

// runReplayDLQ runs the service's handler over "<group-id>.dlq" as consumer
// group "<group-id>.replay" (docs/subscribers.md, "Re-processing dead
// letters") until it has finished every dead letter that was there when it
// started, then prints a summary. The replay group commits like any other, so
// a second run, or a run after an interrupt, goes on where the last stopped;
// what fails again goes to "<group-id>.replay.dlq". Records dead-lettered
// while it runs are replayed when they arrive before it stops, and by the
// next run otherwise.
func runReplayDLQ(ctx context.Context, env *Env, cfg *config, service string) error {
	m, err := platform.NewMail(cfg.Config)
	if err != nil {
		return err
	}
	defer m.Close()

	// The service is built for its Handle and retry settings; its own
	// subscriber never runs.
	var w interface {
		GroupID() string
		Replay(onResult func(kafka.Result)) (*kafka.Subscriber, error)
	}
	switch service {
	case "notifier":
		n, err := platform.NewNotifier(cfg.Config, m, nil, platform.TopicsReady())
		if err != nil {
			return err
		}
		w = n
	case "recommender":
		r, err := platform.NewRecommender(cfg.Config, m, nil, platform.TopicsReady())
		if err != nil {
			return err
		}
		w = r
	default:
		return fmt.Errorf("%w: want replay-dlq notifier or replay-dlq recommender", errUsage)
	}
	group := w.GroupID()
	dlq, replayGroup := kafka.DeadLetterTopic(group), group+".replay"
	// Kafka topic names hold at most 249 characters.
	if again := kafka.DeadLetterTopic(replayGroup); len(again) > 249 {
		return fmt.Errorf("group id %q is too long for the replay's dead-letter topic %s", group, again)
	}

	// The dead letters and where those that fail again go, once.
	if err := platform.EnsureTopics(ctx, cfg.Kafka, dlq, kafka.DeadLetterTopic(replayGroup)); err != nil {
		return err
	}
	bctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	backlog, err := kafka.Backlog(bctx, cfg.Kafka, replayGroup, dlq)
	cancel()
	if err != nil {
		return err
	}
	p := newReplayProgress(backlog)
	if p.caughtUp() {
		p.print(env, dlq, replayGroup)
		return nil
	}
	env.Logger.Info("replaying dead letters", "topic", dlq, "group", replayGroup, "backlog", p.remaining())

	rctx, stop := context.WithCancel(ctx)
	defer stop()
	sub, err := w.Replay(func(r kafka.Result) {
		if p.record(r) {
			// Every dead letter present at the start is finished: stop,
			// which commits them.
			stop()
		}
	})
	if err != nil {
		return err
	}
	if err := sub.Run(rctx); err != nil {
		return err
	}
	p.print(env, dlq, replayGroup)
	if ctx.Err() != nil && !p.caughtUp() {
		return fmt.Errorf("interrupted with %d dead letters of %s left; run it again to go on", p.remaining(), dlq)
	}
	return nil
}

// replayProgress counts what the replay finished and knows when it has
// reached, on every partition, the end offset read at the start. Offsets
// rather than an idle period decide, so a slow handler (a mail retried for
// minutes) does not end the replay early, and an empty topic ends it at once.
type replayProgress struct {
	mu              sync.Mutex
	end             map[int32]int64 // high watermark at the start, for partitions with a backlog
	handled, failed int
	backlog         int64 // at the start
}

func newReplayProgress(backlog []kafka.PartitionBacklog) *replayProgress {
	p := &replayProgress{end: map[int32]int64{}}
	for _, b := range backlog {
		if b.Next < b.End {
			p.end[b.Partition] = b.End
			p.backlog += b.End - b.Next
		}
	}
	return p
}

// record counts one finished record and reports whether the replay has
// caught up.
func (p *replayProgress) record(r kafka.Result) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if r.Outcome == kafka.OutcomeHandled {
		p.handled++
	} else {
		p.failed++
	}
	if end, ok := p.end[r.Partition]; ok && r.Offset+1 >= end {
		delete(p.end, r.Partition)
	}
	return len(p.end) == 0
}

func (p *replayProgress) caughtUp() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.end) == 0
}

// remaining is the backlog at the start minus what was finished since; an
// estimate when records arrived meanwhile.
func (p *replayProgress) remaining() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return max(0, p.backlog-int64(p.handled+p.failed))
}

func (p *replayProgress) print(env *Env, dlq, group string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(env.Stdout, "replay of %s as group %s: %d replayed, %d handled, %d failed again (in %s)\n",
		dlq, group, p.handled+p.failed, p.handled, p.failed, kafka.DeadLetterTopic(group))
}
