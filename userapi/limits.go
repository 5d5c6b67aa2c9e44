package userapi

import (
	"context"
	"fmt"
	"time"
)

// The limits of issue 14 that the handlers apply around the store: the
// mail budgets (see MailBudget) and the cap on pending registrations. Kept
// here, apart from the handlers, so each handler calls them in one line.

// pendingFullRetryAfter is the Retry-After of a register refused because
// the store is full: registrations expire within CODE_TTL, so room comes
// back by itself.
const pendingFullRetryAfter = time.Minute

// checkPendingRoom refuses a registration when the store holds PendingMax
// records or more, so a flood of registrations gets 503s instead of using
// up the memory of the store. The count and the write are two steps:
// concurrent registers can overshoot the cap by their number, which is
// bounded by the server's connections, not by the attacker's patience.
func (s *Server) checkPendingRoom(ctx context.Context) error {
	n, err := s.store.Len(ctx)
	if err != nil {
		return storeError(err)
	}
	if n < s.cfg.PendingMax {
		return nil
	}
	s.metrics.pendingRefused.Inc()
	if now := time.Now().UnixNano(); now-s.lastFullWarn.Load() > int64(time.Minute) {
		s.lastFullWarn.Store(now)
		s.logger.WarnContext(ctx, "pending store full: registrations refused", "pending", n, "max", s.cfg.PendingMax)
	}
	return &Error{Code: CodeUnavailable, Detail: "Too many registrations are pending; retry later.", RetryAfter: pendingFullRetryAfter}
}

// spendMail takes one send for p's mailbox from the mail budgets. held is
// true when a budget is used up: the caller then undoes its store change
// and answers as if the code had been sent, sending nothing. refund gives
// the send back when the code could not be published after all.
func (s *Server) spendMail(ctx context.Context, p Pending) (held bool, refund func(), err error) {
	spent, ok, budget, err := s.budget.Spend(ctx, Mailbox(p.Email), time.Now())
	if err != nil {
		return false, nil, &Error{Code: CodeUnavailable, Detail: "The request could not be completed; retry later.", Err: fmt.Errorf("mail budget: %w", err)}
	}
	if !ok {
		s.metrics.heldBack.WithLabelValues(budget).Inc()
		s.logger.InfoContext(ctx, "code mail held back: budget used up", "user_id", p.UserID, "budget", budget)
		return true, nil, nil
	}
	// The closure holds the user id alone: capturing p would move the
	// whole Pending to the heap on every register.
	userID := p.UserID
	return false, func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
		defer cancel()
		if err := s.budget.Refund(ctx, spent); err != nil {
			s.logger.ErrorContext(ctx, "refund mail budget after failed publish", "user_id", userID, "err", err)
		}
	}, nil
}
