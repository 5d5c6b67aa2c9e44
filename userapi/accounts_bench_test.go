package userapi_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/countersign/countersign/events"
	"github.com/countersign/countersign/events/eventstest"
	"github.com/countersign/countersign/events/kafka"
	"github.com/countersign/countersign/userapi"
)

// BenchmarkMemoryStoreBytesPerAccount measures the heap one remembered
// (verified) address costs the memory store, over max(b.N, 1,000,000)
// addresses of 28 bytes. The goal is at most 64 B. Run:
//
//	go test -run '^$' -bench BytesPerAccount ./userapi/
func BenchmarkMemoryStoreBytesPerAccount(b *testing.B) {
	n := max(b.N, 1_000_000)
	ctx := context.Background()
	s := userapi.NewMemoryStore()
	before := heapInUse()
	b.ResetTimer()
	batch := make([]userapi.AccountChange, 0, 4096)
	for j := 0; j < n; j++ {
		batch = append(batch, userapi.AccountChange{Email: fmt.Sprintf("user%07d@example.com", j)})
		if len(batch) == cap(batch) || j == n-1 {
			if err := s.ApplyAccounts(ctx, batch); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	b.StopTimer()
	after := heapInUse()
	if got := s.Accounts(); got != n {
		b.Fatalf("Accounts = %d, want %d", got, n)
	}
	runtime.KeepAlive(s)
	b.ReportMetric(float64(after-before)/float64(n), "B/account")
}

// BenchmarkRebuildAccounts is the start-up of a user API on the memory
// store: reading the accounts log (user_account_verified, real events of
// about 250 bytes with their content-type header, lz4 as the producer
// sends them) from the start and
// filling the store, until FollowTopic says it caught up. The callback does
// what the user API's (cmd/internal/platform accountChanges) does: the key
// through events.NormalizeEmail, a tombstone forgets.
// REBUILD_ACCOUNTS (default 1,000,000) sets the number of addresses; the
// log is written once, before the timer starts. The goal is at
// most 10 s for a million. Run:
//
//	go test -run '^$' -bench RebuildAccounts -benchtime 1x ./userapi/
//
// s/rebuild is the wall time to "caught up" (closing the consumer is not
// counted); cpu-s/rebuild is the process's CPU time (user+system) over it,
// which includes the embedded broker's unless KAFKA_TEST_BROKERS is set.
func BenchmarkRebuildAccounts(b *testing.B) {
	n := 1_000_000
	if v := os.Getenv("REBUILD_ACCOUNTS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil {
			b.Fatalf("REBUILD_ACCOUNTS=%q: %v", v, err)
		}
	}
	brokers := eventstest.Brokers(b)
	cfg := eventstest.Config(b, brokers)
	topic := eventstest.UniqueTopic(b)
	ctx := context.Background()
	if err := kafka.EnsureTopics(ctx, cfg, topic); err != nil {
		b.Fatal(err)
	}
	produceAccounts(b, brokers, topic, n)
	b.ResetTimer()
	for range b.N {
		s := userapi.NewMemoryStore()
		var took, cpu time.Duration
		start, cpu0 := time.Now(), processCPU()
		fctx, cancel := context.WithCancel(ctx)
		err := kafka.FollowTopic(fctx, cfg, topic, func(ctx context.Context, recs []kafka.Record) error {
			changes := make([]userapi.AccountChange, 0, len(recs))
			for _, r := range recs {
				if len(r.Key) == 0 {
					continue
				}
				changes = append(changes, userapi.AccountChange{Email: events.NormalizeEmail(string(r.Key)), Forgets: r.Tombstone()})
			}
			return s.ApplyAccounts(ctx, changes)
		}, func() {
			took, cpu = time.Since(start), processCPU()-cpu0
			cancel()
		})
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		if got := s.Accounts(); got != n {
			b.Fatalf("rebuilt %d accounts, want %d", got, n)
		}
		b.ReportMetric(took.Seconds(), "s/rebuild")
		b.ReportMetric(cpu.Seconds(), "cpu-s/rebuild")
		b.ReportMetric(float64(n)/took.Seconds(), "accounts/s")
	}
}

// processCPU is the CPU time (user and system) this process used so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// produceAccounts writes n user_account_verified events of n addresses, as
// kafka.Producer writes them (structured mode: a content-type header).
func produceAccounts(b *testing.B, brokers, topic string, n int) {
	b.Helper()
	p, err := ckafka.NewProducer(&ckafka.ConfigMap{
		"bootstrap.servers": brokers, "enable.idempotence": true, "linger.ms": 20,
		"compression.type": "lz4", "go.logs.channel.enable": true, "go.delivery.report.fields": "none",
	})
	if err != nil {
		b.Fatal(err)
	}
	go func() {
		for range p.Logs() {
		}
	}()
	defer p.Close()
	failed := make(chan error, 1)
	go func() {
		for ev := range p.Events() {
			if m, ok := ev.(*ckafka.Message); ok && m.TopicPartition.Error != nil {
				select {
				case failed <- m.TopicPartition.Error:
				default:
				}
			}
		}
	}()
	now := time.Now()
	for i := range n {
		email := fmt.Sprintf("user%07d@example.com", i)
		e, err := events.NewUserAccountVerified(events.UserAccountVerified{
			UserID: "6f1c2a9e-3b7d-4f8a-9c21-5d4e3b2a1f00", Email: email, FirstName: "Ada", LastName: "Lovelace", VerifiedAt: now,
		})
		if err != nil {
			b.Fatal(err)
		}
		v, _ := e.Marshal()
		for {
			err = p.Produce(&ckafka.Message{TopicPartition: ckafka.TopicPartition{Topic: &topic, Partition: ckafka.PartitionAny}, Key: []byte(email), Value: v,
				Headers: []ckafka.Header{{Key: events.HeaderContentType, Value: []byte(events.ContentType)}}}, nil)
			if err == nil {
				break
			}
			if kerr, ok := err.(ckafka.Error); ok && kerr.Code() == ckafka.ErrQueueFull {
				p.Flush(100)
				continue
			}
			b.Fatal(err)
		}
	}
	for p.Flush(1000) > 0 {
	}
	select {
	case err := <-failed:
		b.Fatal(err)
	default:
	}
}
