package kafka

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/countersign/countersign/events"
)

// process handles one record to completion: handled, or dead-lettered. It
// returns false only when ctx was cancelled before that, in which case the
// offset is not stored.
func (s *Subscriber) process(ctx context.Context, m *ckafka.Message) bool {
	start := time.Now()
	res := Result{Topic: *m.TopicPartition.Topic, Partition: m.TopicPartition.Partition, Offset: int64(m.TopicPartition.Offset)}
	e, err := events.Decode(m.Value)
	if err == nil {
		e.Key = string(m.Key)
		res.EventID = e.ID
		hctx, span := startProcessSpan(ctx, s.tracer, s.sc.GroupID, m, e)
		res.Attempts, err = s.handle(hctx, m, e)
		endSpan(span, err)
		if err != nil && ctx.Err() != nil && !events.IsPermanent(err) && res.Attempts < s.sc.MaxAttempts {
			return false
		}
		if events.IsUnavailable(err) {
			s.holdBack(m, e, err)
			return false
		}
		if err == nil && !s.outageSince.IsZero() {
			s.logger.Info("dependency available again: resuming", "unavailable_for", time.Since(s.outageSince).Round(time.Millisecond))
			s.outageSince = time.Time{}
			s.kit.setHeldBack(s.sc.GroupID, false)
		}
	}
	if err != nil {
		res.Outcome, res.Err = OutcomeDeadLettered, err
		if !s.deadLetter(ctx, m, res) {
			return false
		}
		s.kit.countDeadLettered(s.sc.GroupID, res.Topic)
	} else {
		res.Outcome = OutcomeHandled
	}
	if _, serr := s.consumer.StoreMessage(m); serr != nil {
		// The partition was revoked meanwhile; its next owner re-handles it.
		s.logger.Warn("store offset", "topic", res.Topic, "partition", res.Partition, "offset", res.Offset, "err", serr)
	} else {
		s.next[partitionKey{res.Topic, res.Partition}] = res.Offset + 1
	}
	res.Duration = time.Since(start)
	if s.sc.OnResult != nil {
		s.sc.OnResult(res)
	}
	return true
}

// handle runs the handler with retries. It returns the attempts made and the
// last error (nil when handled).
func (s *Subscriber) handle(ctx context.Context, m *ckafka.Message, e events.Event) (int, error) {
	backoff := s.sc.InitialBackoff
	for attempt := 1; ; attempt++ {
		d := events.Delivery{Topic: *m.TopicPartition.Topic, Partition: m.TopicPartition.Partition, Offset: int64(m.TopicPartition.Offset), Attempt: attempt}
		err := s.runHandler(ctx, d, e)
		if err == nil {
			return attempt, nil
		}
		if events.IsPermanent(err) || attempt >= s.sc.MaxAttempts {
			return attempt, err
		}
		if events.IsUnavailable(err) && !s.outageSince.IsZero() {
			// Still down: hold the record back now rather than spend
			// another retry budget away from Poll.
			return attempt, err
		}
		wait := jitter(backoff)
		if events.IsUnavailable(err) {
			// The dependency is down, not the record: probe it at least
			// every ProbeInterval, so its return is noticed soon.
			wait = jitter(min(backoff, s.sc.ProbeInterval))
		}
		s.logger.Warn("handler failed; retrying", "topic", d.Topic, "partition", d.Partition, "offset", d.Offset,
			"event_id", e.ID, "attempt", attempt, "retry_in", wait, "err", err)
		select {
		case <-ctx.Done():
			return attempt, err
		case <-time.After(wait):
		}
		backoff = min(2*backoff, s.sc.MaxBackoff)
	}
}

// holdBack keeps a record whose handler reported a dependency Unavailable:
// it rewinds the record's partition to it, so it is read again, and pauses
// every assigned partition until ProbeInterval from now. The loop goes on
// polling meanwhile, which keeps the member in the group and runs
// rebalances; a record fetched before the pause, or from a partition
// assigned since, gets one attempt and is held back the same way. The
// record's offset is not stored, so nothing past it is committed.
func (s *Subscriber) holdBack(m *ckafka.Message, e events.Event, err error) {
	tp := m.TopicPartition
	if serr := s.consumer.Seek(ckafka.TopicPartition{Topic: tp.Topic, Partition: tp.Partition, Offset: tp.Offset}, 0); serr != nil {
		// Not assigned any more: its next owner reads it again.
		s.logger.Warn("rewind to held-back record", "topic", *tp.Topic, "partition", tp.Partition, "offset", int64(tp.Offset), "err", serr)
	}
	s.kit.countHeldBack(s.sc.GroupID, *tp.Topic)
	now := time.Now()
	if s.outageSince.IsZero() {
		s.kit.setHeldBack(s.sc.GroupID, true)
		s.outageSince = now
		s.logger.Error("dependency unavailable: holding records back until it answers",
			"topic", *tp.Topic, "partition", tp.Partition, "offset", int64(tp.Offset), "event_id", e.ID, "retry_every", s.sc.ProbeInterval, "err", err)
	} else {
		s.logger.Warn("dependency still unavailable", "topic", *tp.Topic, "partition", tp.Partition, "offset", int64(tp.Offset),
			"event_id", e.ID, "unavailable_for", now.Sub(s.outageSince).Round(time.Millisecond), "err", err)
	}
	s.resumeAt = now.Add(jitter(s.sc.ProbeInterval))
	if tps, aerr := s.consumer.Assignment(); aerr == nil && len(tps) > 0 {
		if perr := s.consumer.Pause(tps); perr != nil {
			s.logger.Warn("pause partitions", "err", perr)
		}
	}
}

// resume ends the pause holdBack began, on every partition assigned now.
func (s *Subscriber) resume() {
	s.resumeAt = time.Time{}
	if tps, err := s.consumer.Assignment(); err == nil && len(tps) > 0 {
		if err := s.consumer.Resume(tps); err != nil {
			s.logger.Warn("resume partitions", "err", err)
		}
	}
}

// runHandler runs one attempt. Shutdown does not cancel it (the record in
// hand is finished), but a panic is turned into an error so one bad record
// cannot crash-loop the consumer. The handler's context carries the
// record's "process <topic>" span (see startProcessSpan), so the handler's
// own spans are its children.
func (s *Subscriber) runHandler(ctx context.Context, d events.Delivery, e events.Event) (err error) {
	hctx, cancel := context.WithTimeout(events.WithDelivery(context.WithoutCancel(ctx), d), s.sc.HandlerTimeout)
	defer cancel()
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("handler panic: %v", r)
		}
	}()
	return s.handler(hctx, e)
}

func jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}
