// Package eventstest gives tests a Kafka broker and ways to read topics back.
//
// Brokers returns KAFKA_TEST_BROKERS when it is set (a real cluster, as CI
// runs with scripts/kafka-local) and otherwise starts an embedded broker for
// the test. Tests that share a real cluster must not assume a topic holds
// only their records: filter by key (UniqueEmail) and use UniqueGroup.
package eventstest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/countersign/countersign/events"
	"github.com/countersign/countersign/events/embedded"
	"github.com/countersign/countersign/events/kafka"
)

// EnvBrokers names the variable that points the tests at a real cluster.
const EnvBrokers = "KAFKA_TEST_BROKERS"

// RealBroker reports whether the tests run against an outside cluster.
func RealBroker() bool { return os.Getenv(EnvBrokers) != "" }

// Brokers returns a bootstrap address for the test.
func Brokers(tb testing.TB) string {
	tb.Helper()
	if b := os.Getenv(EnvBrokers); b != "" {
		return b
	}
	return StartEmbedded(tb).Addr()
}

// StartEmbedded starts an embedded broker on a free loopback port, closed
// when the test ends.
func StartEmbedded(tb testing.TB) *embedded.Broker {
	tb.Helper()
	b, err := embedded.Start("127.0.0.1:0")
	if err != nil {
		tb.Fatalf("start embedded kafka: %v", err)
	}
	tb.Cleanup(b.Close)
	return b
}

// Config returns an kafka.Config for brokers that logs warnings and errors
// to the test log.
func Config(tb testing.TB, brokers string) kafka.Config {
	return kafka.Config{Brokers: brokers, Partitions: 3, Logger: Logger(tb)}
}

// Logger returns a logger writing to tb.Log, warnings and above.
func Logger(tb testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tbWriter{tb}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type tbWriter struct{ tb testing.TB }

func (w tbWriter) Write(p []byte) (int, error) {
	w.tb.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// Suffix returns a short random string for names unique to one test.
func Suffix() string {
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// UniqueGroup returns a consumer group id no other test uses.
func UniqueGroup(tb testing.TB) string {
	return "test-" + sanitize(tb.Name()) + "-" + Suffix()
}

// FreshGroup returns a group of the test's own (UniqueGroup) for a service
// that reads the platform's topics (events.Topics). On a real cluster,
// shared by every test package of the run, it starts at the topics' ends
// (GroupAtEnd): the history other packages left there, thousands of events
// sealed with keys this test does not hold, is not this test's, and reading
// it first took longer than tests wait for their own mail. Call it before
// the service starts and before the test publishes.
func FreshGroup(tb testing.TB, brokers string) string {
	tb.Helper()
	g := UniqueGroup(tb)
	if RealBroker() {
		GroupAtEnd(tb, brokers, g)
	}
	return g
}

// GroupAtEnd commits the current ends of the platform's topics for group,
// which has not run yet (kafka.StartAtEnd).
func GroupAtEnd(tb testing.TB, brokers, group string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := kafka.StartAtEnd(ctx, kafka.Config{Brokers: brokers, Logger: Logger(tb)}, group, events.Topics...); err != nil {
		tb.Fatal(err)
	}
}

// UniqueTopic returns a topic name no other test uses.
func UniqueTopic(tb testing.TB) string {
	return "test." + sanitize(tb.Name()) + "." + Suffix()
}

// UniqueEmail returns an address no other test uses.
func UniqueEmail(tb testing.TB) string {
	return strings.ToLower(sanitize(tb.Name())) + "-" + Suffix() + "@example.com"
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-':
			return r
		}
		return '-'
	}, s)
}

// ReadTopic reads topic from the beginning (no consumer group) until it has
// seen want records for which keep returns true (nil keeps all), or timeout.
// It fails the test on timeout, reporting what it found.
func ReadTopic(tb testing.TB, brokers, topic string, want int, timeout time.Duration, keep func(*ckafka.Message) bool) []*ckafka.Message {
	tb.Helper()
	got, err := readTopic(brokers, topic, want, timeout, keep)
	if err != nil {
		tb.Fatalf("read %s: %v", topic, err)
	}
	if len(got) < want {
		tb.Fatalf("read %s: %d records within %v, want %d", topic, len(got), timeout, want)
	}
	return got
}

// CountTopic reads topic for the whole of d and returns every record keep
// accepts: for asserting that nothing more arrived.
func CountTopic(tb testing.TB, brokers, topic string, d time.Duration, keep func(*ckafka.Message) bool) []*ckafka.Message {
	tb.Helper()
	got, err := readTopic(brokers, topic, -1, d, keep)
	if err != nil {
		tb.Fatalf("read %s: %v", topic, err)
	}
	return got
}

// ByKey keeps the records with the given key.
func ByKey(key string) func(*ckafka.Message) bool {
	return func(m *ckafka.Message) bool { return string(m.Key) == key }
}

func readTopic(brokers, topic string, want int, timeout time.Duration, keep func(*ckafka.Message) bool) ([]*ckafka.Message, error) {
	c, err := ckafka.NewConsumer(&ckafka.ConfigMap{
		"bootstrap.servers":      brokers,
		"group.id":               "eventstest-reader", // required by librdkafka; never joined (Assign, no Subscribe)
		"enable.auto.commit":     false,
		"go.logs.channel.enable": true,
		"log.connection.close":   false,
	})
	if err != nil {
		return nil, err
	}
	go func() {
		for range c.Logs() {
		}
	}()
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var md *ckafka.Metadata
	for {
		md, err = c.GetMetadata(&topic, false, 5000)
		if err == nil && len(md.Topics[topic].Partitions) > 0 && md.Topics[topic].Error.Code() == ckafka.ErrNoError {
			break
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("topic metadata: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	var tps []ckafka.TopicPartition
	for _, p := range md.Topics[topic].Partitions {
		tps = append(tps, ckafka.TopicPartition{Topic: &topic, Partition: p.ID, Offset: ckafka.OffsetBeginning})
	}
	if err := c.Assign(tps); err != nil {
		return nil, err
	}
	var got []*ckafka.Message
	for ctx.Err() == nil && (want < 0 || len(got) < want) {
		switch ev := c.Poll(50).(type) {
		case *ckafka.Message:
			if keep == nil || keep(ev) {
				got = append(got, ev)
			}
		case ckafka.Error:
			if ev.IsFatal() {
				return got, ev
			}
		}
	}
	return got, nil
}

// Decode decodes a record as an event, failing the test when it is not one.
func Decode(tb testing.TB, m *ckafka.Message) events.Event {
	tb.Helper()
	e, err := events.Decode(m.Value)
	if err != nil {
		tb.Fatalf("decode record at %v: %v", m.TopicPartition, err)
	}
	e.Key = string(m.Key)
	return e
}

// Header returns the value of the first header named key.
func Header(m *ckafka.Message, key string) (string, bool) {
	for _, h := range m.Headers {
		if h.Key == key {
			return string(h.Value), true
		}
	}
	return "", false
}

// WaitGroup waits until group is stable with members members, each holding
// at least one partition and, when partitions > 0, all partitions between
// them. It returns the partitions each member holds, by member id.
func WaitGroup(tb testing.TB, brokers, group string, members, partitions int, timeout time.Duration) map[string]int {
	tb.Helper()
	a, err := ckafka.NewAdminClient(&ckafka.ConfigMap{"bootstrap.servers": brokers, "log_level": 3})
	if err != nil {
		tb.Fatal(err)
	}
	defer a.Close()
	deadline := time.Now().Add(timeout)
	var last map[string]int
	for time.Now().Before(deadline) {
		last = groupAssignment(tb, a, group)
		total, empty := 0, false
		for _, n := range last {
			total += n
			empty = empty || n == 0
		}
		if len(last) == members && (partitions <= 0 || total == partitions) && !empty {
			return last
		}
		time.Sleep(250 * time.Millisecond)
	}
	tb.Fatalf("group %s: assignment %v within %v, want %d members sharing %d partitions", group, last, timeout, members, partitions)
	return nil
}

// groupAssignment describes the consumer group: partitions held by each
// member (by member id); nil while the group is rebalancing.
func groupAssignment(tb testing.TB, a *ckafka.AdminClient, group string) map[string]int {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := a.DescribeConsumerGroups(ctx, []string{group})
	if err != nil {
		tb.Logf("describe group: %v", err)
		return nil
	}
	out := map[string]int{}
	for _, g := range res.ConsumerGroupDescriptions {
		if g.State != ckafka.ConsumerGroupStateStable {
			return nil
		}
		for _, m := range g.Members {
			out[m.ConsumerID] = len(m.Assignment.TopicPartitions)
		}
	}
	return out
}

// Producer returns a producer on cfg, after creating the platform's topics
// when missing; it is closed when the test ends.
func Producer(tb testing.TB, cfg kafka.Config) *kafka.Producer {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := kafka.EnsureTopics(ctx, cfg, events.Topics...); err != nil {
		tb.Fatal(err)
	}
	p, err := kafka.NewProducer(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = p.Close(ctx)
	})
	return p
}

// Publish publishes e and waits for the acknowledgement, failing tb.
func Publish(tb testing.TB, p events.Publisher, e events.Event) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := p.Publish(ctx, e); err != nil {
		tb.Fatal(err)
	}
}

// Runner is a service that runs until its context ends: a kafka.Worker, or a
// service built on one.
type Runner interface {
	Run(ctx context.Context) error
}

// Run runs r in the background until stop is called or the test ends.
// stop cancels Run's context, waits for it, then calls after (when set, to
// close what r used), and returns Run's error; calling it again returns the
// same. When the test ends without a stop, a Run error fails it.
func Run(tb testing.TB, r Runner, after func()) (stop func() error) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	var runErr error
	stop = func() error {
		once.Do(func() {
			cancel()
			runErr = <-done
			if after != nil {
				after()
			}
		})
		return runErr
	}
	tb.Cleanup(func() {
		if err := stop(); err != nil {
			tb.Errorf("Run: %v", err)
		}
	})
	return stop
}

// TestWorker fills a worker configuration for a test: a group of the
// test's own when none is named, and short retry waits (20ms doubling to
// 200ms) when none are set.
func TestWorker(tb testing.TB, c kafka.WorkerConfig) kafka.WorkerConfig {
	tb.Helper()
	if c.GroupID == "" {
		c.GroupID = UniqueGroup(tb)
	}
	if c.InitialBackoff == 0 {
		c.InitialBackoff, c.MaxBackoff = 20*time.Millisecond, 200*time.Millisecond
	}
	return c
}

// Created builds a user_account_created event for email whose code is
// sealed with kr (a random keyring, which no service holds, when kr is nil),
// as the user API would: a fresh user id, the names Ada Lovelace, expiring
// in 15 minutes.
func Created(tb testing.TB, kr *events.Keyring, email, code string) events.Event {
	tb.Helper()
	if kr == nil {
		var err error
		if kr, err = events.NewRandomKeyring(); err != nil {
			tb.Fatal(err)
		}
	}
	userID := "u-" + Suffix()
	cd := events.UserAccountCreated{
		UserID: userID, Email: email, FirstName: "Ada", LastName: "Lovelace",
		ExpiresAt: time.Now().Add(15 * time.Minute),
	}
	sealed, err := kr.Seal(code, cd)
	if err != nil {
		tb.Fatal(err)
	}
	cd.EncryptedCode = sealed
	e, err := events.NewUserAccountCreated(cd)
	if err != nil {
		tb.Fatal(err)
	}
	return e
}

// Eventually polls cond every 20ms until it holds, and fails tb after
// timeout. Give it a generous timeout: machines running the tests are slow
// at times, and a condition met early returns early.
func Eventually(tb testing.TB, timeout time.Duration, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("condition not met within %v", timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Traced returns a configuration for brokers whose spans go to an in-memory
// recorder (shut down when the test ends), after creating the platform's
// topics when missing: what a test of trace propagation starts from.
func Traced(tb testing.TB, brokers string) (kafka.Config, *sdktrace.TracerProvider, *tracetest.SpanRecorder) {
	tb.Helper()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	tb.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	cfg := Config(tb, brokers)
	cfg.TracerProvider = tp
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := kafka.EnsureTopics(ctx, cfg, events.Topics...); err != nil {
		tb.Fatal(err)
	}
	return cfg, tp, rec
}
