package audit

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/countersign/countersign/events/kafka"
)

// auditEventColumns are the columns a batch fills, in COPY order.
var auditEventColumns = []string{"event_id", "event_type", "email", "user_id", "occurred_at", "topic", "kafka_partition", "kafka_offset", "payload"}

// writePostgres writes a batch in one transaction on a native pgx
// connection: the events with COPY, the fastest way into PostgreSQL, inside
// a savepoint. COPY has no ON CONFLICT: when an event is already there
// (23505, a unique violation: the rare re-read after a lost partition) the
// savepoint is rolled back and the events go in with INSERT … ON CONFLICT
// DO NOTHING instead.
func (s *Store) writePostgres(ctx context.Context, group string, rows []row, next map[kafka.Partition]int64, topicIDs map[string]string) (inserted int, err error) {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return 0, fmt.Errorf("write batch: connect: %w", err)
	}
	defer conn.Close()
	err = conn.Raw(func(dc any) error {
		pc := dc.(*stdlib.Conn).Conn()
		tx, err := pc.Begin(ctx)
		if err != nil {
			return fmt.Errorf("write batch: begin: %w", err)
		}
		defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
		if inserted, err = s.copyEvents(ctx, tx, rows); err != nil {
			return err
		}
		ex := pgxExecer{tx}
		if err := s.applyAccounts(ctx, ex, rows); err != nil {
			return err
		}
		if err := s.storeOffsets(ctx, ex, group, next, topicIDs); err != nil {
			return err
		}
		if err := tx.Commit(ctx); err != nil {
			return fmt.Errorf("write batch: commit: %w", err)
		}
		return nil
	})
	return inserted, err
}

func (s *Store) copyEvents(ctx context.Context, tx pgx.Tx, rows []row) (int, error) {
	if len(rows) == 0 {
		return 0, nil
	}
	sp, err := tx.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("write batch: savepoint: %w", err)
	}
	n, err := sp.CopyFrom(ctx, pgx.Identifier{"audit_events"}, auditEventColumns, pgx.CopyFromSlice(len(rows), func(i int) ([]any, error) {
		r := &rows[i]
		return []any{r.eventID, r.eventType, r.email, r.userID, r.occurredAt.UTC(), r.topic, r.partition, r.offset, string(r.payload)}, nil
	}))
	if err == nil {
		if err := sp.Commit(ctx); err != nil {
			return 0, fmt.Errorf("write batch: release savepoint: %w", err)
		}
		return int(n), nil
	}
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "23505" {
		return 0, fmt.Errorf("write batch: copy audit_events: %w", err)
	}
	if err := sp.Rollback(ctx); err != nil {
		return 0, fmt.Errorf("write batch: roll back to savepoint: %w", err)
	}
	return s.insertEvents(ctx, pgxExecer{tx}, rows)
}

// pgxExecer gives a pgx transaction the ExecContext the shared SQL helpers
// use.
type pgxExecer struct{ tx pgx.Tx }

func (p pgxExecer) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	tag, err := p.tx.Exec(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	return rowsAffected(tag.RowsAffected()), nil
}

type rowsAffected int64

func (r rowsAffected) LastInsertId() (int64, error) { return 0, errors.New("not supported") }
func (r rowsAffected) RowsAffected() (int64, error) { return int64(r), nil }
