package audit

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
	_ "modernc.org/sqlite"             // database/sql driver "sqlite", pure Go

	"github.com/countersign/countersign/events/kafka"
)

// Dialect is the SQL engine behind a Store.
type Dialect string

const (
	SQLite   Dialect = "sqlite"
	Postgres Dialect = "postgres"
)

// sqliteTime is how times are stored in SQLite: UTC, fixed width, so text
// order is time order.
const sqliteTime = "2006-01-02T15:04:05.000000Z"

// rowsPerInsert bounds one multi-row INSERT: 100 rows of 9 columns stay far
// below both engines' limits on bound parameters (SQLite 32766, Postgres
// 65535).
const rowsPerInsert = 100

// Store writes audit rows and the consumer's offsets to SQLite or
// PostgreSQL. It implements kafka.BatchStore.
type Store struct {
	db      *sql.DB
	dialect Dialect
	// desc describes the database for logs, without a password.
	desc string
	// onDuplicates, when set, is told how many events of a written batch
	// were already in audit_events (same event_id).
	onDuplicates func(n int)
}

var _ kafka.TopicIDStore = (*Store)(nil)

// ParseDatabaseURL checks an AUDIT_DATABASE_URL and returns its dialect and
// the driver's data source name.
//
//	sqlite://./countersign-audit.db  (relative path)
//	sqlite:///var/lib/audit.db       (absolute path)
//	postgres://user:pass@host:5432/db?sslmode=require  (also postgresql://)
func ParseDatabaseURL(s string) (Dialect, string, error) {
	s = strings.TrimSpace(s)
	switch {
	case strings.HasPrefix(s, "sqlite://"):
		path := strings.TrimPrefix(s, "sqlite://")
		if i := strings.IndexByte(path, '?'); i >= 0 {
			path = path[:i]
		}
		if path == "" {
			return "", "", errors.New("sqlite:// needs a file path, e.g. sqlite://./countersign-audit.db")
		}
		// WAL lets readers (your queries) run while the service writes;
		// synchronous=NORMAL may lose the last transactions on power loss,
		// never on a process crash, and never tears a batch from its
		// offsets. _txlock=immediate takes the write lock at BEGIN, so two
		// processes queue on busy_timeout instead of failing to upgrade.
		q := url.Values{}
		q.Add("_pragma", "busy_timeout(30000)")
		q.Add("_pragma", "journal_mode(WAL)")
		q.Add("_pragma", "synchronous(NORMAL)")
		q.Add("_pragma", "foreign_keys(ON)")
		// 64 MiB of page cache: the event_id and email indexes take
		// random keys, and each batch touches pages all over them.
		q.Add("_pragma", "cache_size(-65536)")
		// A multi-row INSERT … ON CONFLICT keeps a statement journal (to
		// undo just that statement); in memory, not in a temp file, that
		// is a fifth of the write's syscalls gone. It holds nothing a
		// crash needs: the transaction is lost or committed whole.
		q.Add("_pragma", "temp_store(MEMORY)")
		// Checkpoint (copy the WAL into the database file) every 10,000
		// pages (40 MiB of WAL) rather than 1,000: index pages rewritten
		// by consecutive batches are copied once, not once per batch.
		// Committed transactions are as durable either way.
		q.Add("_pragma", "wal_autocheckpoint(10000)")
		q.Set("_txlock", "immediate")
		return SQLite, "file:" + path + "?" + q.Encode(), nil
	case strings.HasPrefix(s, "postgres://"), strings.HasPrefix(s, "postgresql://"):
		if _, err := url.Parse(s); err != nil {
			return "", "", errors.New("not a valid postgres:// URL")
		}
		return Postgres, s, nil
	}
	return "", "", errors.New("want sqlite://PATH or postgres://USER:PASSWORD@HOST:PORT/DATABASE")
}

// redact returns a database URL for logs: the password replaced.
func redact(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		return s
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	return u.String()
}

// Open connects to the database named by rawURL (AUDIT_DATABASE_URL form)
// and applies the migrations it lacks. Two processes opening one database
// together apply each migration once.
func Open(ctx context.Context, rawURL string) (*Store, error) {
	dialect, dsn, err := ParseDatabaseURL(rawURL)
	if err != nil {
		return nil, err
	}
	driver := "sqlite"
	if dialect == Postgres {
		driver = "pgx"
	}
	db, err := sql.Open(driver, dsn)
	if err != nil {
		return nil, fmt.Errorf("open %s database: %w", dialect, err)
	}
	if dialect == SQLite {
		// One writer at a time anyway; a few readers for Offsets and pings.
		db.SetMaxOpenConns(4)
	} else {
		db.SetMaxOpenConns(8)
	}
	db.SetConnMaxIdleTime(5 * time.Minute)
	s := &Store{db: db, dialect: dialect, desc: redact(strings.TrimSpace(rawURL))}
	if err := s.Migrate(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// DB is the underlying handle, for queries and tests.
func (s *Store) DB() *sql.DB { return s.db }

// Dialect is the engine behind the store.
func (s *Store) Dialect() Dialect { return s.dialect }

// String describes the database without its password.
func (s *Store) String() string { return s.desc }

// Close closes the connections.
func (s *Store) Close() error { return s.db.Close() }

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error { return s.db.PingContext(ctx) }

// migrationLock is the Postgres advisory lock key serialising migrations:
// the bytes of "cs-audit".
const migrationLock int64 = 0x63732d6175646974

// Migrate applies the migrations the database lacks, in one transaction
// that first takes a lock: Postgres' pg_advisory_xact_lock, SQLite's write
// lock (BEGIN IMMEDIATE). A second process starting at the same moment
// waits, then finds every migration applied. It returns the versions it
// applied through Applied.
func (s *Store) Migrate(ctx context.Context) error {
	_, err := s.migrate(ctx)
	return err
}

func (s *Store) migrate(ctx context.Context) (applied []int, err error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("migrate: begin: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	if s.dialect == Postgres {
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, migrationLock); err != nil {
			return nil, fmt.Errorf("migrate: lock: %w", err)
		}
	}
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS audit_schema_migrations (
	version    INTEGER PRIMARY KEY,
	name       TEXT    NOT NULL,
	applied_at TEXT    NOT NULL
)`); err != nil {
		return nil, fmt.Errorf("migrate: create audit_schema_migrations: %w", err)
	}
	have := map[int]bool{}
	rows, err := tx.QueryContext(ctx, `SELECT version FROM audit_schema_migrations`)
	if err != nil {
		return nil, fmt.Errorf("migrate: read versions: %w", err)
	}
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			rows.Close()
			return nil, fmt.Errorf("migrate: read versions: %w", err)
		}
		have[v] = true
	}
	if err := rows.Close(); err != nil {
		return nil, fmt.Errorf("migrate: read versions: %w", err)
	}
	for _, m := range migrations {
		if have[m.version] {
			continue
		}
		q := m.sqlite
		if s.dialect == Postgres {
			q = m.postgres
		}
		if _, err := tx.ExecContext(ctx, q); err != nil {
			return nil, fmt.Errorf("migrate: version %d (%s): %w", m.version, m.name, err)
		}
		if _, err := tx.ExecContext(ctx, s.bind(`INSERT INTO audit_schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`),
			m.version, m.name, time.Now().UTC().Format(sqliteTime)); err != nil {
			return nil, fmt.Errorf("migrate: record version %d: %w", m.version, err)
		}
		applied = append(applied, m.version)
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("migrate: commit: %w", err)
	}
	return applied, nil
}

// bind rewrites ? placeholders as $1, $2, … for Postgres.
func (s *Store) bind(q string) string {
	if s.dialect != Postgres {
		return q
	}
	var b strings.Builder
	b.Grow(len(q) + 16)
	n := 0
	for i := 0; i < len(q); i++ {
		if q[i] == '?' {
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteByte(q[i])
	}
	return b.String()
}

// timeArg is how a time is passed to the database.
func (s *Store) timeArg(t time.Time) any {
	if s.dialect == Postgres {
		return t.UTC()
	}
	return t.UTC().Format(sqliteTime)
}

// Offsets implements kafka.BatchStore: the offsets stored with the last
// batch written for group.
func (s *Store) Offsets(ctx context.Context, group string, ps []kafka.Partition) (map[kafka.Partition]int64, error) {
	stored, err := s.OffsetsWithTopicIDs(ctx, group, ps)
	if err != nil {
		return nil, err
	}
	out := make(map[kafka.Partition]int64, len(stored))
	for p, so := range stored {
		out[p] = so.Next
	}
	return out, nil
}

// OffsetsWithTopicIDs implements kafka.TopicIDStore: the offsets with the
// id of the topic they were read from (empty when stored before ids were).
func (s *Store) OffsetsWithTopicIDs(ctx context.Context, group string, ps []kafka.Partition) (map[kafka.Partition]kafka.StoredOffset, error) {
	want := make(map[kafka.Partition]bool, len(ps))
	for _, p := range ps {
		want[p] = true
	}
	rows, err := s.db.QueryContext(ctx, s.bind(`SELECT topic, kafka_partition, next_offset, topic_id FROM audit_offsets WHERE group_id = ?`), group)
	if err != nil {
		return nil, fmt.Errorf("read offsets: %w", err)
	}
	defer rows.Close()
	out := map[kafka.Partition]kafka.StoredOffset{}
	for rows.Next() {
		var p kafka.Partition
		var so kafka.StoredOffset
		if err := rows.Scan(&p.Topic, &p.Partition, &so.Next, &so.TopicID); err != nil {
			return nil, fmt.Errorf("read offsets: %w", err)
		}
		if want[p] {
			out[p] = so
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read offsets: %w", err)
	}
	return out, nil
}

// execer is what the write helpers need of a transaction: a *sql.Tx, or a
// pgx transaction through pgxExecer.
type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// Write implements kafka.BatchStore: the batch's rows, its changes to
// accounts and its offsets, in one transaction. An event already in
// audit_events (same event_id) is not written again.
func (s *Store) Write(ctx context.Context, group string, b kafka.Batch) (err error) {
	rows := make([]row, 0, len(b.Records))
	for _, r := range b.Records {
		rw, err := toRow(r)
		if err != nil {
			// Decode validated the event: this is a bug, not bad input.
			return fmt.Errorf("write batch: %w", err)
		}
		rows = append(rows, rw)
	}
	var inserted int
	if s.dialect == Postgres {
		inserted, err = s.writePostgres(ctx, group, rows, b.Next, b.TopicIDs)
	} else {
		inserted, err = s.writeSQL(ctx, group, rows, b.Next, b.TopicIDs)
	}
	if err != nil {
		return err
	}
	if dup := len(rows) - inserted; dup > 0 && s.onDuplicates != nil {
		s.onDuplicates(dup)
	}
	return nil
}

// writeSQL writes a batch through database/sql (SQLite).
func (s *Store) writeSQL(ctx context.Context, group string, rows []row, next map[kafka.Partition]int64, topicIDs map[string]string) (inserted int, err error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("write batch: begin: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	if inserted, err = s.insertEvents(ctx, tx, rows); err != nil {
		return 0, err
	}
	if err := s.applyAccounts(ctx, tx, rows); err != nil {
		return 0, err
	}
	if err := s.storeOffsets(ctx, tx, group, next, topicIDs); err != nil {
		return 0, err
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("write batch: commit: %w", err)
	}
	return inserted, nil
}

func (s *Store) insertEvents(ctx context.Context, tx execer, rows []row) (int, error) {
	inserted := 0
	for start := 0; start < len(rows); start += rowsPerInsert {
		chunk := rows[start:min(start+rowsPerInsert, len(rows))]
		var q strings.Builder
		q.WriteString(`INSERT INTO audit_events (event_id, event_type, email, user_id, occurred_at, topic, kafka_partition, kafka_offset, payload) VALUES `)
		args := make([]any, 0, 9*len(chunk))
		for i, r := range chunk {
			if i > 0 {
				q.WriteByte(',')
			}
			q.WriteString(`(?,?,?,?,?,?,?,?,?)`)
			args = append(args, r.eventID, r.eventType, r.email, r.userID, s.timeArg(r.occurredAt), r.topic, r.partition, r.offset, string(r.payload))
		}
		q.WriteString(` ON CONFLICT (event_id) DO NOTHING`)
		res, err := tx.ExecContext(ctx, s.bind(q.String()), args...)
		if err != nil {
			return 0, fmt.Errorf("write batch: insert audit_events: %w", err)
		}
		if n, err := res.RowsAffected(); err == nil {
			inserted += int(n)
		}
	}
	return inserted, nil
}

// applyAccounts brings accounts up to date with the batch. Verified and
// deleted events travel on different topics, so their order in the stream
// is not their order in time: per address the newest event (by its time)
// decides, in the batch and across batches. A verification is not applied
// when audit_events holds a later deletion of the address, and a deletion
// does not remove a later verification.
func (s *Store) applyAccounts(ctx context.Context, tx execer, rows []row) error {
	last := map[string]*row{}
	var order []string
	for i := range rows {
		r := &rows[i]
		if r.account == accountNone {
			continue
		}
		prev, seen := last[r.email]
		if !seen {
			order = append(order, r.email)
		}
		if !seen || !r.occurredAt.Before(prev.occurredAt) {
			last[r.email] = r
		}
	}
	var upserts, deletes []*row
	for _, email := range order {
		if r := last[email]; r.account == accountUpsert {
			upserts = append(upserts, r)
		} else {
			deletes = append(deletes, r)
		}
	}
	for start := 0; start < len(upserts); start += rowsPerInsert {
		chunk := upserts[start:min(start+rowsPerInsert, len(upserts))]
		var q strings.Builder
		args := make([]any, 0, 6*len(chunk))
		cols := "v.column1, v.column2, v.column3, v.column4, v.column5"
		tuple, email, occurred := `(?,?,?,?,?,?)`, "v.column1", "v.column6"
		if s.dialect == Postgres {
			cols = "v.email, v.user_id, v.first_name, v.last_name, v.verified_at"
			tuple, email, occurred = `(?,?,?,?,?::timestamptz,?::timestamptz)`, "v.email", "v.occurred_at"
		}
		q.WriteString(`INSERT INTO accounts (email, user_id, first_name, last_name, verified_at) SELECT ` + cols + ` FROM (VALUES `)
		for i, r := range chunk {
			if i > 0 {
				q.WriteByte(',')
			}
			q.WriteString(tuple)
			args = append(args, r.email, r.userID, r.firstName, r.lastName, s.timeArg(r.verifiedAt), s.timeArg(r.occurredAt))
		}
		q.WriteString(`) AS v`)
		if s.dialect == Postgres {
			q.WriteString(`(email, user_id, first_name, last_name, verified_at, occurred_at)`)
		}
		if s.dialect == Postgres {
			// LATERAL … LIMIT 1: one index probe per row. As NOT EXISTS the
			// planner chose a hash anti-join over all of audit_events,
			// which grew slower with the table.
			q.WriteString(` LEFT JOIN LATERAL (SELECT 1 AS hit FROM audit_events d WHERE d.email = v.email AND d.event_type = '` +
				TopicUserAccountDeleted + `' AND d.occurred_at > v.occurred_at LIMIT 1) later ON true WHERE later.hit IS NULL`)
		} else {
			q.WriteString(` WHERE NOT EXISTS (SELECT 1 FROM audit_events d WHERE d.email = ` + email +
				` AND d.event_type = '` + TopicUserAccountDeleted + `' AND d.occurred_at > ` + occurred + `)`)
		}
		q.WriteString(` ON CONFLICT (email) DO UPDATE SET user_id = excluded.user_id, first_name = excluded.first_name,` +
			` last_name = excluded.last_name, verified_at = excluded.verified_at WHERE accounts.verified_at <= excluded.verified_at`)
		if _, err := tx.ExecContext(ctx, s.bind(q.String()), args...); err != nil {
			return fmt.Errorf("write batch: upsert accounts: %w", err)
		}
	}
	for _, r := range deletes {
		if _, err := tx.ExecContext(ctx, s.bind(`DELETE FROM accounts WHERE email = ? AND verified_at <= ?`), r.email, s.timeArg(r.occurredAt)); err != nil {
			return fmt.Errorf("write batch: delete accounts: %w", err)
		}
	}
	return nil
}

func (s *Store) storeOffsets(ctx context.Context, tx execer, group string, next map[kafka.Partition]int64, topicIDs map[string]string) error {
	if len(next) == 0 {
		return nil
	}
	now := s.timeArg(time.Now())
	var q strings.Builder
	q.WriteString(`INSERT INTO audit_offsets (group_id, topic, kafka_partition, next_offset, updated_at, topic_id) VALUES `)
	args := make([]any, 0, 6*len(next))
	i := 0
	for p, off := range next {
		if i > 0 {
			q.WriteByte(',')
		}
		i++
		q.WriteString(`(?,?,?,?,?,?)`)
		args = append(args, group, p.Topic, p.Partition, off, now, topicIDs[p.Topic])
	}
	q.WriteString(` ON CONFLICT (group_id, topic, kafka_partition) DO UPDATE SET next_offset = excluded.next_offset, updated_at = excluded.updated_at, topic_id = excluded.topic_id`)
	if _, err := tx.ExecContext(ctx, s.bind(q.String()), args...); err != nil {
		return fmt.Errorf("write batch: store offsets: %w", err)
	}
	return nil
}
