package audit_test

import (
	"context"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/audit/pgtest"
	"github.com/countersign/countersign/events/eventstest"
	"github.com/countersign/countersign/events/kafka"
)

// burst is the number of events of one benchmark run.
var burst = envInt("AUDIT_BENCH_EVENTS", 100_000)

type benchBackend struct {
	name string
	url  func(b *testing.B) string
}

// The databases as production runs them: SQLite in WAL mode (the store's
// settings), PostgreSQL with fsync and synchronous commits on.
var benchBackends = []benchBackend{
	{"sqlite", func(b *testing.B) string { return "sqlite://" + b.TempDir() + "/audit.db" }},
	{"postgres", func(b *testing.B) string { return pgtest.Start(b, pgtest.Durable()).URL() }},
}

// batchClock records when batches were written.
type batchClock struct {
	mu           sync.Mutex
	first, last  time.Time
	firstRecords int
	rows         int
}

func (c *batchClock) observe(s kafka.BatchStats) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	if c.first.IsZero() {
		c.first, c.firstRecords = now, s.Records
	}
	c.last = now
	c.rows += s.Records
}

func (c *batchClock) snapshot() (first, last time.Time, firstRecords, rows int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.first, c.last, c.firstRecords, c.rows
}

func withClock(c *batchClock) audit.Option {
	return func(bc *kafka.BatchConfig) {
		prev := bc.OnBatch
		bc.OnBatch = func(s kafka.BatchStats) { prev(s); c.observe(s) }
	}
}

// BenchmarkAuditBacklog: 100,000 events wait on the topics; the audit
// starts with the default batch (500 events, 1s) and writes them all.
// events/s counts from the first written batch to the last, so the group
// join is not in it.
func BenchmarkAuditBacklog(b *testing.B) {
	for _, be := range benchBackends {
		b.Run(be.name, func(b *testing.B) { benchBacklog(b, be) })
	}
}

// BenchmarkAuditBacklogModes: the backlog with the writer pipelined (the
// default) and sequential (each batch written before the next is read),
// one after the other in every round: run with -count 3 or more and
// compare within a round.
func BenchmarkAuditBacklogModes(b *testing.B) {
	for _, be := range benchBackends {
		for _, mode := range []struct {
			name       string
			sequential bool
		}{{"sequential", true}, {"pipelined", false}} {
			b.Run(be.name+"/"+mode.name, func(b *testing.B) {
				benchBacklog(b, be, func(bc *kafka.BatchConfig) { bc.Sequential = mode.sequential })
			})
		}
	}
}

func benchBacklog(b *testing.B, be benchBackend, opts ...audit.Option) {
	{
		{
			for range b.N {
				b.StopTimer()
				brokers := eventstest.Brokers(b)
				ensureTopics(b, brokers)
				store := openStore(b, be.url(b))
				suffix := eventstest.Suffix() + "@example.com"
				produce(b, brokers, history(b, burst, suffix))
				clock := &batchClock{}
				b.StartTimer()
				r := startAudit(b, brokers, store, audit.Config{GroupID: eventstest.UniqueGroup(b)}, append(opts, withClock(clock))...)
				waitBatches(b, clock, burst, 10*time.Minute)
				b.StopTimer()
				_ = r.stop()
				first, last, firstRecords, _ := clock.snapshot()
				b.ReportMetric(float64(burst-firstRecords)/last.Sub(first).Seconds(), "events/s")
				rows, distinct := suffixRows(b, store, suffix)
				if rows != burst || distinct != burst {
					b.Fatalf("%d rows, %d distinct; want %d", rows, distinct, burst)
				}
			}
		}
	}
}

// BenchmarkAuditBurst: the audit runs, idle; 100,000 events are published
// as fast as one producer can. lag-at-end is what was not yet in the
// database when the last event was acknowledged by the broker; drain-s is
// how long after that the database held them all.
func BenchmarkAuditBurst(b *testing.B) {
	for _, be := range benchBackends {
		b.Run(be.name, func(b *testing.B) {
			for range b.N {
				b.StopTimer()
				brokers := eventstest.Brokers(b)
				ensureTopics(b, brokers)
				store := openStore(b, be.url(b))
				suffix := eventstest.Suffix() + "@example.com"
				evs := history(b, burst, suffix)
				clock := &batchClock{}
				r := startAudit(b, brokers, store, audit.Config{GroupID: eventstest.UniqueGroup(b)}, withClock(clock))
				// Idle and assigned: a first event went through.
				warm := history(b, 1, "w"+suffix)
				produce(b, brokers, warm)
				waitBatches(b, clock, 1, 2*time.Minute)
				b.StartTimer()
				start := time.Now()
				produce(b, brokers, evs)
				acked := time.Now()
				_, _, _, rowsAtAck := clock.snapshot()
				waitBatches(b, clock, burst+1, 10*time.Minute)
				b.StopTimer()
				_, last, _, _ := clock.snapshot()
				_ = r.stop()
				b.ReportMetric(float64(burst+1-rowsAtAck), "lag-at-end")
				b.ReportMetric(last.Sub(acked).Seconds(), "drain-s")
				b.ReportMetric(acked.Sub(start).Seconds(), "publish-s")
				b.ReportMetric(float64(burst)/last.Sub(start).Seconds(), "events/s")
			}
		})
	}
}

func waitBatches(b *testing.B, c *batchClock, want int, timeout time.Duration) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		if _, _, _, rows := c.snapshot(); rows >= want {
			return
		}
		select {
		case <-ctx.Done():
			_, _, _, rows := c.snapshot()
			b.Fatalf("%d of %d events written within %v", rows, want, timeout)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}
