package kafka

import (
	"errors"
	"time"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"
)

// commitBehind starts committing the records handled so far, in the
// background, once the previous background commit has finished. The offsets
// are taken now, so exactly what was handled by now is committed.
func (s *Subscriber) commitBehind() {
	s.waitCommit()
	offsets := make([]ckafka.TopicPartition, 0, len(s.next))
	for k, off := range s.next {
		topic := k.topic
		offsets = append(offsets, ckafka.TopicPartition{Topic: &topic, Partition: k.partition, Offset: ckafka.Offset(off)})
	}
	s.uncommitted = 0
	s.lastCommit = time.Now()
	if len(offsets) == 0 {
		return
	}
	done := make(chan struct{})
	s.inflight = done
	go func() {
		defer close(done)
		_, err := s.consumer.CommitOffsets(offsets)
		var kerr ckafka.Error
		if err != nil && !(errors.As(err, &kerr) && kerr.Code() == ckafka.ErrNoOffset) {
			// The offsets stay stored; the next commit carries them.
			s.behindFailed.Store(true)
			s.logger.Warn("commit offsets", "reason", "every", "err", err)
		}
	}()
}

// waitCommit waits for the background commit in progress, if any.
func (s *Subscriber) waitCommit() {
	if s.inflight != nil {
		<-s.inflight
		s.inflight = nil
	}
}

// commit commits the stored offsets and waits for the broker's answer,
// after the background commit in progress: commits never overtake each
// other, so a committed offset never moves backwards.
func (s *Subscriber) commit(reason string) {
	s.waitCommit()
	if s.uncommitted == 0 && !s.behindFailed.Load() && reason != "revoke" && reason != "shutdown" {
		return
	}
	_, err := s.consumer.Commit()
	var kerr ckafka.Error
	if errors.As(err, &kerr) && kerr.Code() == ckafka.ErrNoOffset {
		err = nil
	}
	// Failed or not, the next interval commit is CommitInterval away: a
	// broker outage gets one warning per interval, not one per poll.
	s.lastCommit = time.Now()
	if err != nil {
		// The stored offsets stay stored; the next commit carries them.
		s.logger.Warn("commit offsets", "reason", reason, "err", err)
		return
	}
	s.uncommitted = 0
	s.behindFailed.Store(false)
}
