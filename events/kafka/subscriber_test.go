package kafka_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/countersign/countersign/events"
	"github.com/countersign/countersign/events/eventstest"
	"github.com/countersign/countersign/events/kafka"
)

// produceRaw writes records to topic as they are, bypassing the contract, so
// tests can also send what a broken producer would.
func produceRaw(tb testing.TB, brokers, topic string, records ...[2][]byte) {
	tb.Helper()
	p, err := ckafka.NewProducer(&ckafka.ConfigMap{"bootstrap.servers": brokers, "enable.idempotence": true, "go.logs.channel.enable": true})
	if err != nil {
		tb.Fatal(err)
	}
	go func() {
		for range p.Logs() {
		}
	}()
	defer p.Close()
	report := make(chan ckafka.Event, len(records))
	for _, r := range records {
		err := p.Produce(&ckafka.Message{
			TopicPartition: ckafka.TopicPartition{Topic: &topic, Partition: ckafka.PartitionAny},
			Key:            r[0], Value: r[1],
			Headers: []ckafka.Header{{Key: events.HeaderContentType, Value: []byte(events.ContentType)}},
		}, report)
		if err != nil {
			tb.Fatal(err)
		}
	}
	for range records {
		m := (<-report).(*ckafka.Message)
		if m.TopicPartition.Error != nil {
			tb.Fatalf("produce: %v", m.TopicPartition.Error)
		}
	}
}

// validRecords returns n records holding valid user_account_verified events,
// all with one key so they keep their order in one partition.
func validRecords(tb testing.TB, n int) (recs [][2][]byte, ids []string) {
	tb.Helper()
	email := eventstest.UniqueEmail(tb)
	for i := range n {
		e, err := events.NewUserAccountVerified(events.UserAccountVerified{
			UserID: fmt.Sprintf("user-%d", i), Email: email, FirstName: "Ada", LastName: "Lovelace", VerifiedAt: time.Now(),
		})
		if err != nil {
			tb.Fatal(err)
		}
		v, err := e.Marshal()
		if err != nil {
			tb.Fatal(err)
		}
		recs = append(recs, [2][]byte{[]byte(e.Key), v})
		ids = append(ids, e.ID)
	}
	return recs, ids
}

// testTopic creates a topic of its own for one test.
func testTopic(tb testing.TB, cfg kafka.Config) string {
	tb.Helper()
	topic := eventstest.UniqueTopic(tb)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := kafka.EnsureTopics(ctx, cfg, topic); err != nil {
		tb.Fatal(err)
	}
	return topic
}

// startSubscriber runs a subscriber until the returned stop is called (or the
// test ends); stop returns Run's error.
func startSubscriber(tb testing.TB, cfg kafka.Config, sc kafka.SubscriberConfig, h events.Handler) (stop func() error) {
	tb.Helper()
	s, err := kafka.NewSubscriber(cfg, sc, h)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	var runErr error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(60 * time.Second):
				runErr = errors.New("subscriber did not stop within 60s")
			}
		})
		return runErr
	}
	tb.Cleanup(func() { _ = stop() })
	return stop
}

// recorder is a handler that remembers the ids it handled, in order.
type recorder struct {
	mu   sync.Mutex
	ids  []string
	seen chan struct{}
}

func newRecorder() *recorder { return &recorder{seen: make(chan struct{}, 1<<16)} }

func (r *recorder) handle(_ context.Context, e events.Event) error {
	r.mu.Lock()
	r.ids = append(r.ids, e.ID)
	r.mu.Unlock()
	r.seen <- struct{}{}
	return nil
}

func (r *recorder) waitFor(tb testing.TB, n int, timeout time.Duration) {
	tb.Helper()
	deadline := time.After(timeout)
	for i := 0; i < n; i++ {
		select {
		case <-r.seen:
		case <-deadline:
			tb.Fatalf("handled %d records within %v, want %d", i, timeout, n)
		}
	}
}

func (r *recorder) handled() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.ids...)
}

// committed sums the group's committed offsets over the topic's partitions.
func committed(tb testing.TB, brokers, group, topic string) int64 {
	tb.Helper()
	a, err := ckafka.NewAdminClient(&ckafka.ConfigMap{"bootstrap.servers": brokers})
	if err != nil {
		tb.Fatal(err)
	}
	defer a.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := a.ListConsumerGroupOffsets(ctx, []ckafka.ConsumerGroupTopicPartitions{{Group: group}})
	if err != nil {
		tb.Fatal(err)
	}
	var sum int64
	for _, g := range res.ConsumerGroupsTopicPartitions {
		for _, tp := range g.Partitions {
			if *tp.Topic == topic && tp.Offset >= 0 {
				sum += int64(tp.Offset)
			}
		}
	}
	return sum
}

func waitCommitted(tb testing.TB, brokers, group, topic string, want int64, timeout time.Duration) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	var got int64
	for time.Now().Before(deadline) {
		if got = committed(tb, brokers, group, topic); got == want {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	tb.Fatalf("committed offsets of %s on %s sum to %d, want %d", group, topic, got, want)
}

func fastRetries(sc kafka.SubscriberConfig) kafka.SubscriberConfig {
	sc.InitialBackoff = 10 * time.Millisecond
	sc.MaxBackoff = 50 * time.Millisecond
	sc.SessionTimeout = 6 * time.Second
	return sc
}

func TestSubscriberCommitsEveryNAndOnShutdown(t *testing.T) {
	brokers := eventstest.Brokers(t)
	cfg := eventstest.Config(t, brokers)
	topic := testTopic(t, cfg)
	recs, ids := validRecords(t, 12)
	produceRaw(t, brokers, topic, recs...)

	group := eventstest.UniqueGroup(t)
	rec := newRecorder()
	stop := startSubscriber(t, cfg, fastRetries(kafka.SubscriberConfig{
		GroupID: group, Topics: []string{topic}, CommitEvery: 5, CommitInterval: time.Hour,
	}), rec.handle)
	rec.waitFor(t, 12, 60*time.Second)
	// 12 handled, committed after the 5th and the 10th: 2 wait for the next commit.
	waitCommitted(t, brokers, group, topic, 10, 10*time.Second)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	waitCommitted(t, brokers, group, topic, 12, 10*time.Second)
	if got := rec.handled(); strings.Join(got, ",") != strings.Join(ids, ",") {
		t.Errorf("handled %v, want in order %v", got, ids)
	}
}

func TestSubscriberCommitsWhileIdle(t *testing.T) {
	brokers := eventstest.Brokers(t)
	cfg := eventstest.Config(t, brokers)
	topic := testTopic(t, cfg)
	recs, _ := validRecords(t, 3)
	produceRaw(t, brokers, topic, recs...)
	group := eventstest.UniqueGroup(t)
	rec := newRecorder()
	startSubscriber(t, cfg, fastRetries(kafka.SubscriberConfig{
		GroupID: group, Topics: []string{topic}, CommitEvery: 100, CommitInterval: 300 * time.Millisecond,
	}), rec.handle)
	rec.waitFor(t, 3, 60*time.Second)
	// Fewer than CommitEvery arrived; the interval commits them anyway.
	waitCommitted(t, brokers, group, topic, 3, 15*time.Second)
}

func TestLateGroupReceivesHistory(t *testing.T) {
	brokers := eventstest.Brokers(t)
	cfg := eventstest.Config(t, brokers)
	topic := testTopic(t, cfg)
	recs, ids := validRecords(t, 7)
	produceRaw(t, brokers, topic, recs...)

	first := newRecorder()
	stop := startSubscriber(t, cfg, fastRetries(kafka.SubscriberConfig{GroupID: eventstest.UniqueGroup(t), Topics: []string{topic}}), first.handle)
	first.waitFor(t, 7, 60*time.Second)
	_ = stop()

	// A group that did not exist while the records were published.
	late := newRecorder()
	startSubscriber(t, cfg, fastRetries(kafka.SubscriberConfig{GroupID: eventstest.UniqueGroup(t), Topics: []string{topic}}), late.handle)
	late.waitFor(t, 7, 60*time.Second)
	if got := late.handled(); strings.Join(got, ",") != strings.Join(ids, ",") {
		t.Errorf("late group handled %v, want %v", got, ids)
	}
}

func readDLQ(t *testing.T, brokers, group string, n int) []*ckafka.Message {
	t.Helper()
	return eventstest.ReadTopic(t, brokers, kafka.DeadLetterTopic(group), n, 30*time.Second, nil)
}

func TestSubscriberRetriesThenDeadLetters(t *testing.T) {
	brokers := eventstest.Brokers(t)
	cfg := eventstest.Config(t, brokers)
	topic := testTopic(t, cfg)
	recs, ids := validRecords(t, 2)
	produceRaw(t, brokers, topic, recs...)

	group := eventstest.UniqueGroup(t)
	var calls sync.Map // id -> *atomic.Int32
	rec := newRecorder()
	startSubscriber(t, cfg, fastRetries(kafka.SubscriberConfig{GroupID: group, Topics: []string{topic}, MaxAttempts: 3}),
		func(ctx context.Context, e events.Event) error {
			n, _ := calls.LoadOrStore(e.ID, new(atomic.Int32))
			attempt := n.(*atomic.Int32).Add(1)
			if d, ok := events.DeliveryFrom(ctx); !ok || d.Attempt != int(attempt) || d.Topic != topic {
				t.Errorf("delivery %+v, want attempt %d on %s", d, attempt, topic)
			}
			switch e.ID {
			case ids[0]:
				return errors.New("smtp: 451 try again later")
			default:
				if attempt < 3 {
					return errors.New("flaky")
				}
				return rec.handle(ctx, e)
			}
		})
	rec.waitFor(t, 1, 60*time.Second) // the second record, handled at its 3rd attempt
	dl := readDLQ(t, brokers, group, 1)[0]
	if got := eventstest.Decode(t, dl).ID; got != ids[0] {
		t.Errorf("dead-lettered %s, want %s", got, ids[0])
	}
	wantHeaders := map[string]string{
		kafka.HeaderDLQTopic: topic, kafka.HeaderDLQGroup: group, kafka.HeaderDLQAttempts: "3",
		kafka.HeaderDLQError: "smtp: 451 try again later", events.HeaderContentType: events.ContentType,
	}
	for k, want := range wantHeaders {
		if got, _ := eventstest.Header(dl, k); got != want {
			t.Errorf("header %s = %q, want %q", k, got, want)
		}
	}
	if p, _ := eventstest.Header(dl, kafka.HeaderDLQPartition); p == "" {
		t.Error("no partition header")
	}
	if o, _ := eventstest.Header(dl, kafka.HeaderDLQOffset); o != "0" {
		t.Errorf("offset header = %q, want 0 (first record of its partition)", o)
	}
	if string(dl.Key) != string(recs[0][0]) || string(dl.Value) != string(recs[0][1]) {
		t.Error("dead-lettered record is not the original key and value")
	}
	if n, _ := calls.Load(ids[0]); n.(*atomic.Int32).Load() != 3 {
		t.Errorf("failing record tried %d times, want 3", n.(*atomic.Int32).Load())
	}
}

func TestPermanentErrorAndPoisonGoStraightToDeadLetter(t *testing.T) {
	brokers := eventstest.Brokers(t)
	cfg := eventstest.Config(t, brokers)
	topic := testTopic(t, cfg)
	recs, ids := validRecords(t, 3)
	key := recs[0][0]
	// Same key: one partition, in this order.
	produceRaw(t, brokers, topic,
		[2][]byte{key, []byte(`{"specversion":"1.0","type":"user_account_created"`)}, // truncated
		recs[0], // permanent failure
		[2][]byte{key, []byte(`{"specversion":"0.3","id":"x"}`)}, // wrong version
		recs[1], recs[2])

	group := eventstest.UniqueGroup(t)
	var calls atomic.Int32
	rec := newRecorder()
	startSubscriber(t, cfg, fastRetries(kafka.SubscriberConfig{GroupID: group, Topics: []string{topic}, MaxAttempts: 5}),
		func(ctx context.Context, e events.Event) error {
			if e.ID == ids[0] {
				calls.Add(1)
				return events.Permanent(errors.New("smtp: 550 mailbox unavailable"))
			}
			return rec.handle(ctx, e)
		})
	// The consumer goes on past all three bad records.
	rec.waitFor(t, 2, 60*time.Second)
	dls := readDLQ(t, brokers, group, 3)
	attempts := []string{"0", "1", "0"}
	for i, dl := range dls {
		if a, _ := eventstest.Header(dl, kafka.HeaderDLQAttempts); a != attempts[i] {
			t.Errorf("DLQ record %d: attempts %q, want %q", i, a, attempts[i])
		}
		if o, _ := eventstest.Header(dl, kafka.HeaderDLQOffset); o != strconv.Itoa(i) {
			t.Errorf("DLQ record %d: offset %q, want %d", i, o, i)
		}
		msg, _ := eventstest.Header(dl, kafka.HeaderDLQError)
		if msg == "" {
			t.Errorf("DLQ record %d: no error header", i)
		}
	}
	if msg, _ := eventstest.Header(dls[0], kafka.HeaderDLQError); !strings.Contains(msg, "invalid event") {
		t.Errorf("poison error header %q", msg)
	}
	if calls.Load() != 1 {
		t.Errorf("permanent failure tried %d times, want 1", calls.Load())
	}
}

func TestHandlerPanicIsDeadLetteredNotFatal(t *testing.T) {
	brokers := eventstest.Brokers(t)
	cfg := eventstest.Config(t, brokers)
	topic := testTopic(t, cfg)
	recs, ids := validRecords(t, 2)
	produceRaw(t, brokers, topic, recs...)
	group := eventstest.UniqueGroup(t)
	rec := newRecorder()
	startSubscriber(t, cfg, fastRetries(kafka.SubscriberConfig{GroupID: group, Topics: []string{topic}, MaxAttempts: 2}),
		func(ctx context.Context, e events.Event) error {
			if e.ID == ids[0] {
				panic("nil map")
			}
			return rec.handle(ctx, e)
		})
	rec.waitFor(t, 1, 60*time.Second)
	dl := readDLQ(t, brokers, group, 1)[0]
	if msg, _ := eventstest.Header(dl, kafka.HeaderDLQError); !strings.Contains(msg, "panic") {
		t.Errorf("error header %q", msg)
	}
}

func TestShutdownFinishesRecordInHand(t *testing.T) {
	brokers := eventstest.Brokers(t)
	cfg := eventstest.Config(t, brokers)
	topic := testTopic(t, cfg)
	recs, _ := validRecords(t, 1)
	produceRaw(t, brokers, topic, recs...)
	group := eventstest.UniqueGroup(t)
	started := make(chan struct{})
	var finished atomic.Bool
	stop := startSubscriber(t, cfg, fastRetries(kafka.SubscriberConfig{GroupID: group, Topics: []string{topic}, CommitInterval: time.Hour}),
		func(ctx context.Context, e events.Event) error {
			close(started)
			select {
			case <-time.After(500 * time.Millisecond):
				finished.Store(true)
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	<-started
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if !finished.Load() {
		t.Fatal("shutdown cancelled the handler instead of letting it finish")
	}
	waitCommitted(t, brokers, group, topic, 1, 10*time.Second)
}

// The crash test runs a subscriber in a child process and kills it with
// SIGKILL: no shutdown, no commit, as when a machine dies.
const childEnv = "EVENTS_TEST_CRASH_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(crashChild())
	}
	os.Exit(m.Run())
}

// crashChild handles records, printing each id once handled, and hangs on
// the (stopAfter+1)th so the parent can kill it at a known point.
func crashChild() int {
	stopAfter, _ := strconv.Atoi(os.Getenv("CHILD_STOP_AFTER"))
	cfg := kafka.Config{Brokers: os.Getenv("CHILD_BROKERS")}
	var n int
	s, err := kafka.NewSubscriber(cfg, kafka.SubscriberConfig{
		GroupID: os.Getenv("CHILD_GROUP"), Topics: []string{os.Getenv("CHILD_TOPIC")},
		CommitEvery: 5, CommitInterval: time.Hour, SessionTimeout: 6 * time.Second,
	}, func(ctx context.Context, e events.Event) error {
		if n == stopAfter {
			select {} // hang until killed
		}
		n++
		fmt.Println("handled", e.ID)
		return nil
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if err := s.Run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func TestCrashRedeliversAtMostUncommitted(t *testing.T) {
	brokers := eventstest.Brokers(t)
	cfg := eventstest.Config(t, brokers)
	topic := testTopic(t, cfg)
	const total, stopAfter, commitEvery = 20, 13, 5
	recs, ids := validRecords(t, total)
	produceRaw(t, brokers, topic, recs...)
	group := eventstest.UniqueGroup(t)

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=1", "CHILD_BROKERS="+brokers, "CHILD_GROUP="+group,
		"CHILD_TOPIC="+topic, "CHILD_STOP_AFTER="+strconv.Itoa(stopAfter))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var before []string
	sc := bufio.NewScanner(out)
	for len(before) < stopAfter && sc.Scan() {
		if id, ok := strings.CutPrefix(sc.Text(), "handled "); ok {
			before = append(before, id)
		}
	}
	if len(before) != stopAfter {
		_ = cmd.Process.Kill()
		t.Fatalf("child handled %d records before ending, want %d", len(before), stopAfter)
	}
	waitCommitted(t, brokers, group, topic, 10, 10*time.Second)
	_ = cmd.Process.Kill()
	_ = cmd.Wait()

	after := newRecorder()
	startSubscriber(t, cfg, fastRetries(kafka.SubscriberConfig{GroupID: group, Topics: []string{topic}, CommitEvery: commitEvery}), after.handle)
	after.waitFor(t, total-10, 90*time.Second)
	// Nothing lost: every record handled by one of the two.
	seen := map[string]int{}
	for _, id := range append(before, after.handled()...) {
		seen[id]++
	}
	redelivered := 0
	for _, id := range ids {
		switch seen[id] {
		case 0:
			t.Errorf("record %s never handled", id)
		case 2:
			redelivered++
		}
	}
	// Handled 13, committed 10: exactly the 3 uncommitted come again.
	if redelivered != stopAfter-10 {
		t.Errorf("%d records redelivered, want %d (handled since the last commit)", redelivered, stopAfter-10)
	}
	if redelivered > commitEvery {
		t.Errorf("%d redelivered, more than the commit interval %d", redelivered, commitEvery)
	}
}

// Ready, what a worker's /readyz serves: not before Run subscribed, yes
// while it consumes, not after it stopped.
func TestSubscriberReadyFollowsRun(t *testing.T) {
	brokers := eventstest.Brokers(t)
	cfg := eventstest.Config(t, brokers)
	topic := testTopic(t, cfg)
	s, err := kafka.NewSubscriber(cfg, kafka.SubscriberConfig{GroupID: eventstest.UniqueGroup(t), Topics: []string{topic}},
		func(context.Context, events.Event) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Ready(context.Background()); !errors.Is(err, kafka.ErrNotRunning) {
		t.Fatalf("Ready before Run = %v, want ErrNotRunning", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	deadline := time.Now().Add(30 * time.Second)
	for err := s.Ready(context.Background()); err != nil; err = s.Ready(context.Background()) {
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("Ready while running: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := s.Ready(context.Background()); !errors.Is(err, kafka.ErrNotRunning) {
		t.Fatalf("Ready after Run returned = %v, want ErrNotRunning", err)
	}
}

// A dependency that stays down beyond the retry budget (an SMTP outage
// longer than the retries last): nothing is dead-lettered, nothing is
// skipped or committed past, and once it is back every record is handled,
// in order.
func TestUnavailableDependencyHoldsRecordsBackUntilItReturns(t *testing.T) {
	brokers := eventstest.Brokers(t)
	cfg := eventstest.Config(t, brokers)
	topic := testTopic(t, cfg)
	recs, ids := validRecords(t, 6)
	produceRaw(t, brokers, topic, recs...)

	group := eventstest.UniqueGroup(t)
	var down atomic.Bool
	down.Store(true)
	var failed atomic.Int32
	var mu sync.Mutex
	triedWhileDown := map[string]bool{}
	rec := newRecorder()
	startSubscriber(t, cfg, fastRetries(kafka.SubscriberConfig{
		GroupID: group, Topics: []string{topic}, MaxAttempts: 3, CommitEvery: 1,
	}), func(ctx context.Context, e events.Event) error {
		if down.Load() {
			mu.Lock()
			triedWhileDown[e.ID] = true
			mu.Unlock()
			failed.Add(1)
			return events.Unavailable(errors.New("dial tcp 127.0.0.1:25: connect: connection refused"))
		}
		return rec.handle(ctx, e)
	})
	// Many times the retry budget of 3 attempts, over several pauses.
	deadline := time.Now().Add(60 * time.Second)
	for failed.Load() < 15 {
		if time.Now().After(deadline) {
			t.Fatalf("handler ran %d times in 60s while the dependency was down", failed.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := committed(t, brokers, group, topic); got != 0 {
		t.Errorf("committed %d records while none could be handled", got)
	}
	mu.Lock()
	if len(triedWhileDown) != 1 || !triedWhileDown[ids[0]] {
		t.Errorf("records tried while down: %v; want only the first, %s (the rest wait behind it)", triedWhileDown, ids[0])
	}
	mu.Unlock()
	down.Store(false)

	rec.waitFor(t, 6, 60*time.Second)
	if got := rec.handled(); strings.Join(got, ",") != strings.Join(ids, ",") {
		t.Errorf("handled %v, want each once, in order: %v", got, ids)
	}
	waitCommitted(t, brokers, group, topic, 6, 15*time.Second)
	if dl := eventstest.CountTopic(t, brokers, kafka.DeadLetterTopic(group), 2*time.Second, nil); len(dl) != 0 {
		t.Errorf("%d records dead-lettered for an outage", len(dl))
	}
}

// During an outage the paused member keeps polling: it stays in the group,
// and a member that joins takes its share of the partitions. When the
// dependency returns, every record is handled by one of them.
func TestUnavailableDependencyKeepsMemberInGroupThroughRebalance(t *testing.T) {
	brokers := eventstest.Brokers(t)
	cfg := eventstest.Config(t, brokers)
	topic := testTopic(t, cfg)
	var all []string
	for range 4 { // four addresses: records on several partitions
		recs, ids := validRecords(t, 3)
		produceRaw(t, brokers, topic, recs...)
		all = append(all, ids...)
	}
	group := eventstest.UniqueGroup(t)
	var down atomic.Bool
	down.Store(true)
	var failed atomic.Int32
	var mu sync.Mutex
	handled := map[string]int{}
	handler := func(ctx context.Context, e events.Event) error {
		if down.Load() {
			failed.Add(1)
			return events.Unavailable(errors.New("smtp: 421 service not available"))
		}
		mu.Lock()
		handled[e.ID]++
		mu.Unlock()
		return nil
	}
	sc := fastRetries(kafka.SubscriberConfig{GroupID: group, Topics: []string{topic}, MaxAttempts: 2, CommitEvery: 1})
	startSubscriber(t, cfg, sc, handler)
	deadline := time.Now().Add(60 * time.Second)
	for failed.Load() < 5 {
		if time.Now().After(deadline) {
			t.Fatal("the first member never ran its handler")
		}
		time.Sleep(10 * time.Millisecond)
	}
	startSubscriber(t, cfg, sc, handler)
	eventstest.WaitGroup(t, brokers, group, 2, 0, 60*time.Second)
	down.Store(false)

	deadline = time.Now().Add(60 * time.Second)
	for {
		mu.Lock()
		missing := 0
		for _, id := range all {
			if handled[id] == 0 {
				missing++
			}
		}
		mu.Unlock()
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d records not handled 60s after the dependency returned", missing, len(all))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if dl := eventstest.CountTopic(t, brokers, kafka.DeadLetterTopic(group), 2*time.Second, nil); len(dl) != 0 {
		t.Errorf("%d records dead-lettered for an outage", len(dl))
	}
}
