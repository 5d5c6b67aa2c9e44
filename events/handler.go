package events

import (
	"context"
	"errors"
)

// Handler handles one event. Returning nil means handled: the offset may be
// committed. An error wrapped with Permanent sends the record to the
// dead-letter topic at once; any other error is retried with backoff and,
// once the retry budget is spent, dead-lettered too.
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
