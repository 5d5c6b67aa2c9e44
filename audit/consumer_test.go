package audit_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/audit/pgtest"
	"github.com/countersign/countersign/events"
	"github.com/countersign/countersign/events/eventstest"
	"github.com/countersign/countersign/events/kafka"
	"github.com/countersign/countersign/internal/promtest"
)

// produce publishes events to their topics (keyed by address), waiting for
// every acknowledgement; raw records are written to topic as they are.
func produce(tb testing.TB, brokers string, evs []events.Event, raw ...[3]string) {
	tb.Helper()
	p, err := ckafka.NewProducer(&ckafka.ConfigMap{"bootstrap.servers": brokers, "enable.idempotence": true,
		"linger.ms": 5, "go.logs.channel.enable": true, "queue.buffering.max.messages": 200000})
	if err != nil {
		tb.Fatal(err)
	}
	go func() {
		for range p.Logs() {
		}
	}()
	defer p.Close()
	report := make(chan ckafka.Event, len(evs)+len(raw))
	send := func(topic string, key, value []byte) {
		for {
			err := p.Produce(&ckafka.Message{
				TopicPartition: ckafka.TopicPartition{Topic: &topic, Partition: ckafka.PartitionAny},
				Key:            key, Value: value,
				Headers: []ckafka.Header{{Key: events.HeaderContentType, Value: []byte(events.ContentType)}},
			}, report)
			var kerr ckafka.Error
			if errors.As(err, &kerr) && kerr.Code() == ckafka.ErrQueueFull {
				p.Flush(10)
				continue
			}
			if err != nil {
				tb.Fatal(err)
			}
			return
		}
	}
	for _, e := range evs {
		v, err := e.Marshal()
		if err != nil {
			tb.Fatal(err)
		}
		send(e.Type, []byte(e.Key), v)
	}
	for _, r := range raw {
		send(r[0], []byte(r[1]), []byte(r[2]))
	}
	for range len(evs) + len(raw) {
		m := (<-report).(*ckafka.Message)
		if m.TopicPartition.Error != nil {
			tb.Fatalf("produce: %v", m.TopicPartition.Error)
		}
	}
}

// history returns n events about distinct addresses ending in suffix:
// registrations, most of them verified, some of those deleted.
func history(tb testing.TB, n int, suffix string) []events.Event {
	var out []events.Event
	for i := 0; len(out) < n; i++ {
		email := fmt.Sprintf("u%d-%s", i, suffix)
		c := created(tb, email)
		out = append(out, c)
		if len(out) < n && i%4 != 0 {
			out = append(out, verified(tb, email, userID(tb, c)))
		}
		if len(out) < n && i%10 == 1 {
			out = append(out, deleted(tb, email, userID(tb, c)))
		}
		if len(out) < n && i%8 == 2 {
			// Someone registered the account again (issue 13 point 3).
			out = append(out, exists(tb, email))
		}
	}
	return out
}

// ensureTopics creates the audit's topics so events can be produced before
// an audit starts.
func ensureTopics(tb testing.TB, brokers string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := kafka.EnsureTopics(ctx, eventstest.Config(tb, brokers), audit.Topics...); err != nil {
		tb.Fatal(err)
	}
}

type running struct {
	a    *audit.Audit
	reg  *prometheus.Registry
	stop func() error
}

func startAudit(tb testing.TB, brokers string, store *audit.Store, cfg audit.Config, opts ...audit.Option) *running {
	tb.Helper()
	reg := prometheus.NewRegistry()
	a, err := audit.New(cfg, audit.Deps{Kafka: eventstest.Config(tb, brokers), Store: store, Logger: eventstest.Logger(tb), Registerer: reg}, opts...)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var stopped bool
	var runErr error
	stop := func() error {
		if !stopped {
			stopped = true
			cancel()
			runErr = <-done
		}
		return runErr
	}
	tb.Cleanup(func() { _ = stop() })
	return &running{a: a, reg: reg, stop: stop}
}

// waitRows waits until the rows about suffix's addresses reach want.
func waitRows(tb testing.TB, s *audit.Store, suffix string, want int, timeout time.Duration) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	var got int
	for time.Now().Before(deadline) {
		got = count(tb, s, `SELECT count(*) FROM audit_events WHERE email LIKE `+placeholder(s), "%"+suffix)
		if got >= want {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	rows, _ := s.DB().Query(`SELECT topic, kafka_partition, count(*), min(kafka_offset), max(kafka_offset) FROM audit_events GROUP BY topic, kafka_partition ORDER BY 1, 2`)
	for rows.Next() {
		var t string
		var p, n, lo, hi int
		_ = rows.Scan(&t, &p, &n, &lo, &hi)
		tb.Logf("%s/%d: %d rows, offsets %d..%d", t, p, n, lo, hi)
	}
	rows.Close()
	rows, _ = s.DB().Query(`SELECT topic, kafka_partition, next_offset FROM audit_offsets ORDER BY 1, 2`)
	for rows.Next() {
		var t string
		var p, n int
		_ = rows.Scan(&t, &p, &n)
		tb.Logf("%s/%d: next %d", t, p, n)
	}
	rows.Close()
	tb.Fatalf("audit_events: %d rows about *%s within %v, want %d", got, suffix, timeout, want)
}

// lagSeries counts the countersign_consumer_lag_records series of group.
func lagSeries(tb testing.TB, g prometheus.Gatherer, group string) int {
	tb.Helper()
	mfs, err := g.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	n := 0
	for _, mf := range mfs {
		if mf.GetName() != kafka.MetricConsumerLag {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "group" && l.GetValue() == group {
					n++
				}
			}
		}
	}
	return n
}

func suffixRows(tb testing.TB, s *audit.Store, suffix string) (rows, distinct int) {
	tb.Helper()
	like := "%" + suffix
	return count(tb, s, `SELECT count(*) FROM audit_events WHERE email LIKE `+placeholder(s), like),
		count(tb, s, `SELECT count(DISTINCT event_id) FROM audit_events WHERE email LIKE `+placeholder(s), like)
}

func expectedAccounts(evs []events.Event) int {
	state := map[string]bool{}
	for _, e := range evs {
		switch e.Type {
		case events.TopicUserAccountVerified:
			state[e.Key] = true
		case audit.TopicUserAccountDeleted:
			state[e.Key] = false
		}
	}
	n := 0
	for _, v := range state {
		if v {
			n++
		}
	}
	return n
}

// Every event into SQL, bad records dead-lettered with the usual headers,
// accounts following verifications and deletions; on both brokers (per
// KAFKA_TEST_BROKERS) and both databases.
func TestAuditWritesEveryEvent(t *testing.T) {
	forEachBackend(t, func(t *testing.T, url string) {
		brokers := eventstest.Brokers(t)
		ensureTopics(t, brokers)
		store := openStore(t, url)
		suffix := eventstest.Suffix() + "@example.com"
		evs := history(t, 300, suffix)
		badKey := "bad-" + suffix
		produce(t, brokers, evs, [3]string{events.TopicUserAccountCreated, badKey, `{"not":"an event"}`},
			[3]string{audit.TopicUserAccountDeleted, badKey, `{"specversion":"1.0","type":"user_account_deleted","id":"x","source":"s","time":"2026-01-01T00:00:00Z","data":{"email":""}}`})
		group := eventstest.UniqueGroup(t)
		r := startAudit(t, brokers, store, audit.Config{GroupID: group, BatchSize: 50, BatchInterval: 200 * time.Millisecond})
		waitRows(t, store, suffix, len(evs), 2*time.Minute)

		dl := eventstest.ReadTopic(t, brokers, kafka.DeadLetterTopic(group), 2, time.Minute, eventstest.ByKey(badKey))
		for _, m := range dl {
			g, _ := eventstest.Header(m, kafka.HeaderDLQGroup)
			a, _ := eventstest.Header(m, kafka.HeaderDLQAttempts)
			_, hasErr := eventstest.Header(m, kafka.HeaderDLQError)
			mustf(t, g == group && a == "0" && hasErr, "dead letter headers: %v", m.Headers)
		}
		// The kit's metrics, under the audit's group, as every subscriber
		// exports them: the dashboard and the lag alert read these. (At
		// least one dead letter per topic: on a shared real cluster the
		// group also reads other tests' bad records.)
		for _, topic := range []string{events.TopicUserAccountCreated, audit.TopicUserAccountDeleted} {
			eventstest.Eventually(t, time.Minute, func() bool {
				return promtest.Counter(t, r.reg, kafka.MetricConsumerDeadLettered, group, topic) >= 1
			})
		}
		eventstest.Eventually(t, time.Minute, func() bool { return lagSeries(t, r.reg, group) > 0 })
		if err := r.stop(); err != nil {
			t.Fatalf("run: %v", err)
		}
		rows, distinct := suffixRows(t, store, suffix)
		mustf(t, rows == len(evs) && distinct == len(evs), "audit_events: %d rows, %d distinct; want %d", rows, distinct, len(evs))
		acc := count(t, store, `SELECT count(*) FROM accounts WHERE email LIKE `+placeholder(store), "%"+suffix)
		mustf(t, acc == expectedAccounts(evs), "accounts: %d, want %d", acc, expectedAccounts(evs))
		if !eventstest.RealBroker() {
			// On a shared real cluster the group also reads other tests'
			// events, some of them published twice on purpose (the
			// notifier's dedupe tests); the rows above show this test's
			// events were written once.
			mustf(t, testutil.ToFloat64(r.a.Metrics().Duplicates) == 0, "duplicates skipped: want 0")
		}
		mustf(t, testutil.CollectAndCount(r.reg, "countersign_audit_batch_size") == 1, "batch size metric")
	})
}

// Two instances in one group share the partitions; every event is written
// once, and no batch brought an event the other had written (duplicates
// skipped stays 0: the offsets did it, not the unique index).
func TestTwoInstancesOneGroup(t *testing.T) {
	forEachBackend(t, func(t *testing.T, url string) {
		brokers := eventstest.Brokers(t)
		ensureTopics(t, brokers)
		suffix := eventstest.Suffix() + "@example.com"
		group := eventstest.UniqueGroup(t)
		s1, s2 := openStore(t, url), openStore(t, url)
		cfg := audit.Config{GroupID: group, BatchSize: 20, BatchInterval: 100 * time.Millisecond}
		first := history(t, 200, suffix)
		produce(t, brokers, first)
		a1 := startAudit(t, brokers, s1, cfg)
		waitRows(t, s1, suffix, 50, 2*time.Minute)
		a2 := startAudit(t, brokers, s2, cfg)
		second := history(t, 400, "b"+suffix)
		produce(t, brokers, second)
		total := len(first) + len(second)
		waitRows(t, s1, suffix, total, 2*time.Minute)
		_ = a1.stop()
		_ = a2.stop()
		rows, distinct := suffixRows(t, s1, suffix)
		mustf(t, rows == total && distinct == total, "audit_events: %d rows, %d distinct; want %d", rows, distinct, total)
		dups := testutil.ToFloat64(a1.a.Metrics().Duplicates) + testutil.ToFloat64(a2.a.Metrics().Duplicates)
		if !eventstest.RealBroker() {
			// As in TestAuditWritesEveryEvent: a shared real cluster holds
			// other tests' events published twice on purpose.
			mustf(t, dups == 0, "duplicates skipped: %v, want 0", dups)
		}
	})
}

// The database goes down while events arrive, then comes back: nothing is
// lost, nothing is written twice, and /readyz's check fails meanwhile.
//
// "durable" runs PostgreSQL with its default synchronous commits. "lossy"
// runs it with synchronous_commit=off, so the outage (an immediate stop)
// may also take the last committed batches with it: the consumer notices
// that the database's offsets went back and reads those events again.
//
// "sqlite-locked" is SQLite's outage: an embedded database cannot be
// stopped, but another process can hold its write lock (an operator's
// sqlite3 shell inside BEGIN EXCLUSIVE, a backup or a vacuum holding it
// too long). Each write then waits busy_timeout (30 s) and fails.
func TestDatabaseDownThenBack(t *testing.T) {
	t.Run("durable", func(t *testing.T) { testDatabaseDownThenBack(t, pgtest.Durable()) })
	t.Run("lossy", func(t *testing.T) { testDatabaseDownThenBack(t) })
	t.Run("sqlite-locked", testSQLiteLocked)
}

func testSQLiteLocked(t *testing.T) {
	sqlite3, err := exec.LookPath("sqlite3")
	if err != nil {
		t.Fatal("sqlite3 not found: install it (apt-get install sqlite3)")
	}
	brokers := eventstest.Brokers(t)
	ensureTopics(t, brokers)
	path := t.TempDir() + "/audit.db"
	store := openStore(t, "sqlite://"+path)
	suffix := eventstest.Suffix() + "@example.com"
	group := eventstest.UniqueGroup(t)
	r := startAudit(t, brokers, store, audit.Config{GroupID: group, BatchSize: 20, BatchInterval: 100 * time.Millisecond},
		func(bc *kafka.BatchConfig) { bc.MaxBackoff = time.Second; bc.WriteTimeout = 5 * time.Second })
	first := history(t, 100, suffix)
	produce(t, brokers, first)
	waitRows(t, store, suffix, len(first), 2*time.Minute)

	// Another process takes the write lock and keeps it.
	locker := exec.Command(sqlite3, path)
	stdin, err := locker.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := locker.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	locker.Stderr = os.Stderr
	if err := locker.Start(); err != nil {
		t.Fatal(err)
	}
	released := false
	release := func() {
		if !released {
			released = true
			_, _ = io.WriteString(stdin, "COMMIT;\n.quit\n")
			_ = stdin.Close()
			_ = locker.Wait()
		}
	}
	t.Cleanup(release)
	if _, err := io.WriteString(stdin, ".timeout 120000\nBEGIN EXCLUSIVE;\nSELECT 'locked';\n"); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "locked" {
		t.Fatalf("sqlite3 did not take the lock: %q, %v", line, err)
	}

	second := history(t, 200, "b"+suffix)
	produce(t, brokers, second)
	deadline := time.Now().Add(3 * time.Minute)
	for r.a.Ready(context.Background()) == nil {
		if time.Now().After(deadline) {
			t.Fatal("Ready still nil three minutes into the lock")
		}
		time.Sleep(100 * time.Millisecond)
	}
	mustf(t, testutil.ToFloat64(r.a.Metrics().DatabaseErrors) >= 1, "not ready, but no failed write")
	// Nothing of the second lot is in (the lock holder's snapshot aside,
	// readers still work in WAL mode).
	mustf(t, count(t, store, `SELECT count(*) FROM audit_events WHERE email LIKE ?`, "%b"+suffix) == 0, "rows written under another process's lock")
	release()

	total := len(first) + len(second)
	waitRows(t, store, suffix, total, 3*time.Minute)
	deadline = time.Now().Add(2 * time.Minute)
	for r.a.Ready(context.Background()) != nil {
		if time.Now().After(deadline) {
			t.Fatal("not ready two minutes after the lock was released")
		}
		time.Sleep(100 * time.Millisecond)
	}
	_ = r.stop()
	rows, distinct := suffixRows(t, store, suffix)
	mustf(t, rows == total && distinct == total, "audit_events: %d rows, %d distinct; want %d", rows, distinct, total)
}

func testDatabaseDownThenBack(t *testing.T, opts ...pgtest.Option) {
	brokers := eventstest.Brokers(t)
	ensureTopics(t, brokers)
	pg := pgtest.Start(t, opts...)
	store := openStore(t, pg.URL())
	suffix := eventstest.Suffix() + "@example.com"
	group := eventstest.UniqueGroup(t)
	r := startAudit(t, brokers, store, audit.Config{GroupID: group, BatchSize: 20, BatchInterval: 100 * time.Millisecond},
		func(bc *kafka.BatchConfig) { bc.MaxBackoff = time.Second; bc.WriteTimeout = 5 * time.Second })
	first := history(t, 100, suffix)
	produce(t, brokers, first)
	waitRows(t, store, suffix, len(first), 2*time.Minute)

	pg.Stop()
	second := history(t, 200, "b"+suffix)
	produce(t, brokers, second)
	deadline := time.Now().Add(2 * time.Minute)
	for r.a.Ready(context.Background()) == nil {
		if time.Now().After(deadline) {
			t.Fatal("Ready still nil two minutes into the outage")
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Let the consumer hold and retry for a while.
	for testutil.ToFloat64(r.a.Metrics().DatabaseErrors) < 3 {
		if time.Now().After(deadline) {
			t.Fatal("no failed writes during the outage")
		}
		time.Sleep(100 * time.Millisecond)
	}
	pg.Restart(t)
	total := len(first) + len(second)
	waitRows(t, store, suffix, total, 2*time.Minute)
	deadline = time.Now().Add(time.Minute)
	for r.a.Ready(context.Background()) != nil {
		if time.Now().After(deadline) {
			t.Fatal("not ready a minute after the database came back")
		}
		time.Sleep(100 * time.Millisecond)
	}
	_ = r.stop()
	rows, distinct := suffixRows(t, store, suffix)
	mustf(t, rows == total && distinct == total, "audit_events: %d rows, %d distinct; want %d", rows, distinct, total)
}

// The crash test's child: an audit process run until it is killed.
const childEnv = "AUDIT_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "" {
		os.Exit(m.Run())
	}
	ctx := context.Background()
	store, err := audit.Open(ctx, os.Getenv("CHILD_DB"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "child: open:", err)
		os.Exit(1)
	}
	size, _ := strconv.Atoi(os.Getenv("CHILD_BATCH"))
	a, err := audit.New(audit.Config{GroupID: os.Getenv("CHILD_GROUP"), BatchSize: size, BatchInterval: 50 * time.Millisecond},
		audit.Deps{Kafka: kafka.Config{Brokers: os.Getenv("CHILD_BROKERS"), Partitions: 3}, Store: store},
		func(bc *kafka.BatchConfig) {
			bc.OnBatch = func(s kafka.BatchStats) { fmt.Printf("BATCH %d\n", s.Records) }
		})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(1)
	}
	if err := a.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// startChild runs an audit in a child process and returns it with a channel
// of its written batches.
func startChild(t *testing.T, brokers, db, group string, batch int) (*exec.Cmd, <-chan int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=1", "CHILD_BROKERS="+brokers, "CHILD_DB="+db, "CHILD_GROUP="+group,
		"CHILD_BATCH="+strconv.Itoa(batch))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	batches := make(chan int, 1024)
	go func() {
		defer close(batches)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if n, ok := strings.CutPrefix(sc.Text(), "BATCH "); ok {
				k, _ := strconv.Atoi(n)
				select {
				case batches <- k:
				default:
				}
			}
		}
	}()
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd, batches
}

// SIGKILL in the middle of the work, several times, then a restart: the
// row count equals the event count exactly and no event_id is there twice.
func TestKillDuringBatchThenRestart(t *testing.T) {
	forEachBackend(t, func(t *testing.T, url string) {
		brokers := eventstest.Brokers(t)
		ensureTopics(t, brokers)
		store := openStore(t, url)
		suffix := eventstest.Suffix() + "@example.com"
		group := eventstest.UniqueGroup(t)
		evs := history(t, 3000, suffix)
		produce(t, brokers, evs)
		for kill := 1; kill <= 3; kill++ {
			cmd, batches := startChild(t, brokers, url, group, 40)
			// Let it write a few batches, then kill it while it reads and
			// writes the next ones.
			for i := 0; i < 3*kill; i++ {
				select {
				case <-batches:
				case <-time.After(2 * time.Minute):
					t.Fatalf("kill %d: no batch written by the child", kill)
				}
			}
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			_ = cmd.Wait()
			rows, _ := suffixRows(t, store, suffix)
			t.Logf("kill %d: %d of %d rows written", kill, rows, len(evs))
		}
		startChild(t, brokers, url, group, 40)
		waitRows(t, store, suffix, len(evs), 3*time.Minute)
		// A moment more: anything written twice would show now.
		time.Sleep(time.Second)
		rows, distinct := suffixRows(t, store, suffix)
		mustf(t, rows == len(evs) && distinct == len(evs), "audit_events: %d rows, %d distinct; want %d", rows, distinct, len(evs))
	})
}

// dev's embedded broker keeps its topics in memory, the audit database
// stays on disk: after a restart the stored offsets point past the new
// topics' end. The audit reads the new topics from their beginning.
func TestStoredOffsetsPastTheEnd(t *testing.T) {
	store := openStore(t, "sqlite://"+t.TempDir()+"/audit.db")
	group := eventstest.UniqueGroup(t)
	cfg := audit.Config{GroupID: group, BatchSize: 20, BatchInterval: 100 * time.Millisecond}
	suffix := eventstest.Suffix() + "@example.com"
	first := eventstest.StartEmbedded(t)
	ensureTopics(t, first.Addr())
	evs := history(t, 300, suffix)
	produce(t, first.Addr(), evs)
	r := startAudit(t, first.Addr(), store, cfg)
	waitRows(t, store, suffix, len(evs), 2*time.Minute)
	_ = r.stop()
	first.Close()

	// A new, empty broker (dev's in-memory one restarted): the stored
	// offsets are past every partition's end, so the audit reads the new
	// topics from their beginning. The new events are published once it
	// has resumed: a partition that already held as many records as the
	// store's offset when the audit looked would not be told apart from
	// the old one (docs/audit.md, "A recreated topic").
	second := eventstest.StartEmbedded(t)
	ensureTopics(t, second.Addr())
	resumed := make(chan struct{})
	var once sync.Once
	r = startAudit(t, second.Addr(), store, cfg, func(bc *kafka.BatchConfig) {
		prev := bc.OnAssignment
		bc.OnAssignment = func(ps []kafka.Partition) {
			prev(ps)
			if len(ps) > 0 {
				once.Do(func() { close(resumed) })
			}
		}
	})
	select {
	case <-resumed:
	case <-time.After(2 * time.Minute):
		t.Fatal("the audit did not resume on the new broker within 2 minutes")
	}
	more := history(t, 30, "b"+suffix)
	produce(t, second.Addr(), more)
	waitRows(t, store, suffix, len(evs)+len(more), 2*time.Minute)
	_ = r.stop()

	// A third broker whose topics are already longer than the stored
	// offsets when the audit starts: no offset is past an end, but the
	// topic ids stored with the offsets are not these topics', so they are
	// read from their beginning all the same.
	third := eventstest.StartEmbedded(t)
	ensureTopics(t, third.Addr())
	longer := history(t, 400, "c"+suffix)
	produce(t, third.Addr(), longer)
	r = startAudit(t, third.Addr(), store, cfg)
	waitRows(t, store, suffix, len(evs)+len(more)+len(longer), 2*time.Minute)
	_ = r.stop()
}
