package userapi

import (
	"context"
	"errors"
	"time"

	"github.com/countersign/countersign/events"
)

// Failing fast and honest 503s (issue 17): while the publisher knows it
// cannot publish, register, verify and resend answer 503 at once, before
// touching the store; a publish that fails undoes the store change only when
// the event was certainly not written.

// publishRetryAfter is the Retry-After of a 503 for want of the broker.
// While no broker is reachable the answer comes at once, so clients are
// told to wait rather than retry in a tight loop; a returning broker is
// noticed within about two seconds.
const publishRetryAfter = 5 * time.Second

// DownReporter is implemented by a Publisher that knows, without trying,
// that it cannot publish now: kafka.Producer's Down reports
// kafka.ErrBrokersDown while every broker connection is down. Publishers
// without it are tried on every request.
type DownReporter interface {
	Down() error
}

// publisherDown answers for register, verify and resend while the
// publisher is down: 503 with Retry-After, before the store is touched. All
// three answer alike, so that an outage does not tell a pending address
// from another by the answer to resend (202 for an address that is not
// pending, 503 for one that is).
func (s *Server) publisherDown() error {
	d, ok := s.publisher.(DownReporter)
	if !ok {
		return nil
	}
	if err := d.Down(); err != nil {
		return &Error{
			Code:       CodeUnavailable,
			Detail:     "The request could not be completed; retry later.",
			RetryAfter: publishRetryAfter,
			Err:        err,
		}
	}
	return nil
}

// undoSend handles a code whose user_account_created was not acknowledged.
// When the publisher knows the event was not written (events.ErrNotPublished:
// no broker reachable, or refused) the store change is rolled back, so a
// retry starts afresh. Otherwise the outcome is unknown (a timeout): the
// event may still reach the notifier and mail the code, so the pending
// registration with that code is kept and the code verifies if it arrives.
// A retry within RESEND_INTERVAL is then answered 429, as after any code
// sent.
func (s *Server) undoSend(ctx context.Context, err error, written Pending, replaced *Pending) {
	if errors.Is(err, events.ErrNotPublished) {
		s.rollback(ctx, written, replaced)
		return
	}
	s.logger.WarnContext(ctx, "publish outcome unknown: keeping the pending registration, whose code verifies if the event arrives late",
		"user_id", written.UserID)
}
