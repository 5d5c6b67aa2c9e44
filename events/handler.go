package events

import (
	"context"
	"errors"
)

// Handler handles one event. Returning nil means handled: the offset may be
// committed. An error wrapped with Permanent sends the record to the
// dead-letter topic at once. An error wrapped with Unavailable is retried
// for as long as it lasts: the record is never dead-lettered for it. Any
// other error is retried with backoff and, once the retry budget is spent,
// dead-lettered.
//
// Delivery is at-least-once, so a handler must be idempotent: the same event
// (same ID) can arrive again after a crash or a rebalance.
//
// The context a handler receives is not cancelled when the subscriber shuts
// down, so the record in hand is finished; it carries a per-attempt timeout.
type Handler func(ctx context.Context, e Event) error

type permanentError struct{ err error }

func (p permanentError) Error() string { return p.err.Error() }
func (p permanentError) Unwrap() error { return p.err }

// Permanent marks err as not worth retrying: the record goes to the
// dead-letter topic now. Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanentError{err}
}

// IsPermanent reports whether err (or an error it wraps) was marked Permanent.
func IsPermanent(err error) bool {
	var p permanentError
	return errors.As(err, &p)
}

type unavailableError struct{ err error }

func (u unavailableError) Error() string { return u.err.Error() }
func (u unavailableError) Unwrap() error { return u.err }

// Unavailable marks err as the failure of something the handler depends on
// rather than of the record: an SMTP server that refuses connections, say.
// Every record would fail the same way, so dead-lettering them would only
// move the outage into the dead-letter topic. The subscriber retries such a
// record within its retry budget as usual; once that is spent it keeps the
// record, pauses its partitions, and tries it again every few seconds, for as
// long as the outage lasts, polling meanwhile so that it stays in the group
// and takes part in rebalances. Unavailable(nil) is nil.
func Unavailable(err error) error {
	if err == nil {
		return nil
	}
	return unavailableError{err}
}

// IsUnavailable reports whether err (or an error it wraps) was marked
// Unavailable and not also Permanent.
func IsUnavailable(err error) bool {
	var u unavailableError
	return errors.As(err, &u) && !IsPermanent(err)
}

// Delivery describes the record a handler is working on.
type Delivery struct {
	Topic     string
	Partition int32
	Offset    int64
	// Attempt counts from 1.
	Attempt int
}

type deliveryKey struct{}

// DeliveryFrom returns the record a handler's context belongs to.
func DeliveryFrom(ctx context.Context) (Delivery, bool) {
	d, ok := ctx.Value(deliveryKey{}).(Delivery)
	return d, ok
}

// WithDelivery returns ctx carrying d, for DeliveryFrom. A subscriber
// runtime (events/kafka, or one a team writes for another client) calls it
// before each handler attempt.
func WithDelivery(ctx context.Context, d Delivery) context.Context {
	return context.WithValue(ctx, deliveryKey{}, d)
}

// Publisher publishes events. Publish must be safe for concurrent use and
// return nil only once the broker acknowledged the event (acks=all). An
// error that matches ErrNotPublished means the event was certainly not
// written and never will be; any other error leaves the outcome unknown:
// the event may still arrive (a timeout cannot tell).
type Publisher interface {
	Publish(ctx context.Context, e Event) error
}

// ErrNotPublished is matched (errors.Is) by a Publish error when the event
// was certainly not written: the publisher refused it before handing it to
// a broker (no broker reachable, closed, unencodable), or the broker
// rejected it. Only then may a caller undo what the event announces; after
// any other error the event may still be delivered, so whatever it refers
// to must stay valid.
var ErrNotPublished = errors.New("event not published")
