package audit_test

import (
	"context"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/events/kafka"
)

func TestParseDatabaseURL(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want audit.Dialect
		ok   bool
	}{
		{"sqlite://./countersign-audit.db", audit.SQLite, true},
		{"sqlite:///var/lib/audit.db", audit.SQLite, true},
		{"postgres://app:secret@db:5432/audit?sslmode=require", audit.Postgres, true},
		{"postgresql://app@db/audit", audit.Postgres, true},
		{"sqlite://", "", false},
		{"mysql://db/audit", "", false},
		{"", "", false},
	} {
		d, _, err := audit.ParseDatabaseURL(tc.in)
		if (err == nil) != tc.ok || d != tc.want {
			t.Errorf("ParseDatabaseURL(%q) = %q, %v; want %q, ok %v", tc.in, d, err, tc.want, tc.ok)
		}
	}
}

// schema lists the tables and columns of the database.
func schema(t *testing.T, s *audit.Store) []string {
	t.Helper()
	q := `SELECT table_name || '.' || column_name || ' ' || data_type FROM information_schema.columns
	      WHERE table_schema = 'public' ORDER BY table_name, ordinal_position`
	if s.Dialect() == audit.SQLite {
		q = `SELECT m.name || '.' || p.name || ' ' || p.type FROM sqlite_master m, pragma_table_info(m.name) p
		     WHERE m.type = 'table' ORDER BY m.name, p.cid`
	}
	rows, err := s.DB().Query(q)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var c string
		if err := rows.Scan(&c); err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	return out
}

// Migrations run twice (one after the other, then two at once) change
// nothing and record each version once.
func TestMigrationsTwice(t *testing.T) {
	forEachBackend(t, func(t *testing.T, url string) {
		s := openStore(t, url)
		before := schema(t, s)
		mustf(t, len(before) > 10, "schema after the first migration: %v", before)
		if err := s.Migrate(context.Background()); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make(chan error, 2)
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s2, err := audit.Open(context.Background(), url)
				if err != nil {
					errs <- err
					return
				}
				s2.Close()
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("concurrent open: %v", err)
		}
		after := schema(t, s)
		mustf(t, len(after) == len(before), "schema changed:\nbefore %v\nafter  %v", before, after)
		for i := range before {
			mustf(t, before[i] == after[i], "schema changed:\nbefore %v\nafter  %v", before, after)
		}
		mustf(t, count(t, s, `SELECT count(*) FROM audit_schema_migrations`) == 2, "audit_schema_migrations rows: want 2, one per version")
	})
}

// Two instances migrating a fresh database at the same moment.
func TestMigrationsConcurrentFresh(t *testing.T) {
	forEachBackend(t, func(t *testing.T, url string) {
		var wg sync.WaitGroup
		errs := make(chan error, 3)
		for range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s, err := audit.Open(context.Background(), url)
				if err != nil {
					errs <- err
					return
				}
				s.Close()
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("concurrent open of a fresh database: %v", err)
		}
		s := openStore(t, url)
		mustf(t, count(t, s, `SELECT count(*) FROM audit_schema_migrations`) == 2, "audit_schema_migrations rows: want 2, one per version")
	})
}

func TestWriteBatch(t *testing.T) {
	forEachBackend(t, func(t *testing.T, url string) {
		s := openStore(t, url)
		ctx := context.Background()
		c1, c2 := created(t, "ada@example.com"), created(t, "bob@example.com")
		v1, v2 := verified(t, "ada@example.com", userID(t, c1)), verified(t, "bob@example.com", userID(t, c2))
		d2 := deleted(t, "bob@example.com", userID(t, c2))
		p0 := kafka.Partition{Topic: "user_account_created", Partition: 0}
		p1 := kafka.Partition{Topic: "user_account_verified", Partition: 1}
		p2 := kafka.Partition{Topic: audit.TopicUserAccountDeleted, Partition: 2}
		b := kafka.Batch{Records: []kafka.BatchRecord{
			{Partition: p0, Offset: 10, Event: c1}, {Partition: p0, Offset: 11, Event: c2},
			{Partition: p1, Offset: 5, Event: v1}, {Partition: p1, Offset: 6, Event: v2},
			{Partition: p2, Offset: 0, Event: d2},
		}, Next: map[kafka.Partition]int64{p0: 12, p1: 7, p2: 1}}
		if err := s.Write(ctx, "audit-test", b); err != nil {
			t.Fatal(err)
		}
		// Written again (as after a lost partition): no row twice.
		if err := s.Write(ctx, "audit-test", b); err != nil {
			t.Fatal(err)
		}
		rows, distinct := rowCounts(t, s)
		mustf(t, rows == 5 && distinct == 5, "audit_events: %d rows, %d distinct; want 5", rows, distinct)
		mustf(t, count(t, s, `SELECT count(*) FROM accounts`) == 1, "accounts: want only ada (bob deleted)")
		mustf(t, count(t, s, `SELECT count(*) FROM accounts WHERE email = 'ada@example.com' AND first_name = 'Ada'`) == 1, "ada's account row")
		// The sealed code stays sealed in the payload.
		var payload string
		if err := s.DB().QueryRow(`SELECT payload FROM audit_events WHERE event_id = `+placeholder(s), c1.ID).Scan(&payload); err != nil {
			t.Fatal(err)
		}
		mustf(t, strings.Contains(payload, "encrypted_code") && strings.Contains(payload, "ciphertext"), "payload keeps the sealed code: %s", payload)
		offs, err := s.Offsets(ctx, "audit-test", []kafka.Partition{p0, p1, p2, {Topic: "other", Partition: 0}})
		if err != nil {
			t.Fatal(err)
		}
		mustf(t, len(offs) == 3 && offs[p0] == 12 && offs[p1] == 7 && offs[p2] == 1, "offsets %v", offs)
		other, err := s.Offsets(ctx, "another-group", []kafka.Partition{p0})
		mustf(t, err == nil && len(other) == 0, "another group's offsets: %v %v", other, err)
		// Deleted, then verified again in a later batch: the row is back.
		v3 := verified(t, "bob@example.com", userID(t, c2))
		if err := s.Write(ctx, "audit-test", kafka.Batch{Records: []kafka.BatchRecord{{Partition: p1, Offset: 7, Event: v3}}, Next: map[kafka.Partition]int64{p1: 8}}); err != nil {
			t.Fatal(err)
		}
		mustf(t, count(t, s, `SELECT count(*) FROM accounts`) == 2, "accounts after bob verified again: want 2")

		// Verified and deleted travel on different topics: a verification
		// read after a later deletion of the address does not bring the
		// account back, in one batch or across batches.
		c4 := created(t, "cy@example.com")
		v4 := verified(t, "cy@example.com", userID(t, c4))
		d4 := deleted(t, "cy@example.com", userID(t, c4))
		if err := s.Write(ctx, "audit-test", kafka.Batch{Records: []kafka.BatchRecord{{Partition: p2, Offset: 1, Event: d4}}, Next: map[kafka.Partition]int64{p2: 2}}); err != nil {
			t.Fatal(err)
		}
		if err := s.Write(ctx, "audit-test", kafka.Batch{Records: []kafka.BatchRecord{{Partition: p1, Offset: 8, Event: v4}}, Next: map[kafka.Partition]int64{p1: 9}}); err != nil {
			t.Fatal(err)
		}
		mustf(t, count(t, s, `SELECT count(*) FROM accounts WHERE email = 'cy@example.com'`) == 0, "cy: deleted after verifying, verification read last: want no account")
		c5 := created(t, "di@example.com")
		v5 := verified(t, "di@example.com", userID(t, c5))
		d5 := deleted(t, "di@example.com", userID(t, c5))
		if err := s.Write(ctx, "audit-test", kafka.Batch{Records: []kafka.BatchRecord{{Partition: p2, Offset: 2, Event: d5}, {Partition: p1, Offset: 9, Event: v5}},
			Next: map[kafka.Partition]int64{p1: 10, p2: 3}}); err != nil {
			t.Fatal(err)
		}
		mustf(t, count(t, s, `SELECT count(*) FROM accounts WHERE email = 'di@example.com'`) == 0, "di: deletion before verification in one batch, later in time: want no account")
	})
}

func placeholder(s *audit.Store) string {
	if s.Dialect() == audit.Postgres {
		return "$1"
	}
	return "?"
}

// The ready queries of docs/audit.md run on the engine they are given for.
func TestDocQueries(t *testing.T) {
	doc, err := os.ReadFile("../docs/audit.md")
	if err != nil {
		t.Fatal(err)
	}
	type query struct{ label, sql string }
	var queries []query
	label := ""
	lines := strings.Split(string(doc), "\n")
	for i := 0; i < len(lines); i++ {
		l := strings.TrimSpace(lines[i])
		if l == "```sql" {
			var b strings.Builder
			for i++; i < len(lines) && strings.TrimSpace(lines[i]) != "```"; i++ {
				b.WriteString(lines[i] + "\n")
			}
			queries = append(queries, query{label, b.String()})
			continue
		}
		if l != "" {
			label = l
		}
	}
	mustf(t, len(queries) >= 6, "found %d queries in docs/audit.md", len(queries))
	forEachBackend(t, func(t *testing.T, url string) {
		s := openStore(t, url)
		c := created(t, "ada@example.com")
		p := kafka.Partition{Topic: "t", Partition: 0}
		if err := s.Write(context.Background(), "g", kafka.Batch{Records: []kafka.BatchRecord{
			{Partition: p, Offset: 0, Event: c}, {Partition: p, Offset: 1, Event: created(t, "bob@example.com")},
			{Partition: p, Offset: 2, Event: verified(t, "ada@example.com", userID(t, c))},
		}, Next: map[kafka.Partition]int64{p: 3}}); err != nil {
			t.Fatal(err)
		}
		for _, q := range queries {
			pgOnly, sqliteOnly := strings.HasPrefix(q.label, "PostgreSQL"), strings.HasPrefix(q.label, "SQLite")
			if (pgOnly && s.Dialect() != audit.Postgres) || (sqliteOnly && s.Dialect() != audit.SQLite) {
				continue
			}
			rows, err := s.DB().Query(q.sql)
			if err != nil {
				t.Errorf("%s\n%s: %v", q.label, q.sql, err)
				continue
			}
			n := 0
			for rows.Next() {
				n++
			}
			if err := rows.Err(); err != nil {
				t.Errorf("%s\n%s: %v", q.label, q.sql, err)
			}
			rows.Close()
			mustf(t, n > 0, "%s\n%s: no rows", q.label, q.sql)
		}
	})
}
