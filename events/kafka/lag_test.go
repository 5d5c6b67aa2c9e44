package kafka_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/countersign/countersign/events"
	"github.com/countersign/countersign/events/eventstest"
	"github.com/countersign/countersign/events/kafka"
)

// series returns the values of one metric on reg for one group, by the
// remaining labels ("topic/partition" for the lag).
func series(tb testing.TB, reg prometheus.Gatherer, name, group string) map[string]float64 {
	tb.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			if labels["group"] != group {
				continue
			}
			key := labels["topic"] + "/" + labels["partition"]
			switch {
			case m.GetGauge() != nil:
				out[key] = m.GetGauge().GetValue()
			case m.GetCounter() != nil:
				out[key] = m.GetCounter().GetValue()
			}
		}
	}
	return out
}

// waitSeries polls until ok accepts the series, or fails after timeout with
// the last ones seen.
func waitSeries(tb testing.TB, reg prometheus.Gatherer, name, group string, timeout time.Duration, what string, ok func(map[string]float64) bool) map[string]float64 {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		s := series(tb, reg, name, group)
		if ok(s) {
			return s
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s: not within %s; last seen %s = %v", what, timeout, name, s)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func sum(s map[string]float64) float64 {
	var t float64
	for _, v := range s {
		t += v
	}
	return t
}

// The lag counts what the group has not committed, moves while the handler
// is stuck (it is measured off the consuming goroutine), and returns to 0
// once the subscriber catches up.
func TestLagMovesWhileHandlerIsStuckAndReturnsToZero(t *testing.T) {
	brokers := eventstest.Brokers(t)
	cfg := eventstest.Config(t, brokers)
	topic := testTopic(t, cfg)
	const perKey, keys = 3, 4
	for range keys { // several addresses: records on several partitions
		recs, _ := validRecords(t, perKey)
		produceRaw(t, brokers, topic, recs...)
	}
	group := eventstest.UniqueGroup(t)
	reg := prometheus.NewRegistry()
	release := make(chan struct{})
	var handled atomic.Int32
	startSubscriber(t, cfg, kafka.SubscriberConfig{
		GroupID: group, Topics: []string{topic}, CommitEvery: 1, CommitInterval: 100 * time.Millisecond,
		HandlerTimeout: 2 * time.Minute, Registerer: reg, LagInterval: 100 * time.Millisecond,
	}, func(ctx context.Context, e events.Event) error {
		<-release
		handled.Add(1)
		return nil
	})

	// Stuck on the first record: nothing committed, so the lag is every
	// record, counted from the earliest offset.
	s := waitSeries(t, reg, kafka.MetricConsumerLag, group, 60*time.Second, "lag of all records while stuck", func(s map[string]float64) bool {
		return sum(s) == perKey*keys
	})
	for k := range s {
		if !strings.HasPrefix(k, topic+"/") {
			t.Errorf("lag reported for %s, which the subscriber does not read", k)
		}
	}
	// More records while stuck: the lag follows the high watermark.
	recs, _ := validRecords(t, 2)
	produceRaw(t, brokers, topic, recs...)
	waitSeries(t, reg, kafka.MetricConsumerLag, group, 60*time.Second, "lag grows while stuck", func(s map[string]float64) bool {
		return sum(s) == perKey*keys+2
	})
	if handled.Load() != 0 {
		t.Fatalf("handled %d records while the handler was stuck", handled.Load())
	}

	close(release)
	waitSeries(t, reg, kafka.MetricConsumerLag, group, 60*time.Second, "lag back to 0 on every partition after catching up", func(s map[string]float64) bool {
		return len(s) == cfg.Partitions && sum(s) == 0
	})
}

// Each member reports the partitions assigned to it, and only those: a
// partition taken away by a rebalance loses its series, and a member that
// stops removes all of its own.
func TestLagReportsOnlyAssignedPartitions(t *testing.T) {
	brokers := eventstest.Brokers(t)
	cfg := eventstest.Config(t, brokers)
	topic := testTopic(t, cfg)
	group := eventstest.UniqueGroup(t)
	sc := func(reg prometheus.Registerer) kafka.SubscriberConfig {
		return kafka.SubscriberConfig{GroupID: group, Topics: []string{topic}, CommitEvery: 1,
			CommitInterval: 100 * time.Millisecond, Registerer: reg, LagInterval: 100 * time.Millisecond}
	}
	nop := func(context.Context, events.Event) error { return nil }
	regA, regB := prometheus.NewRegistry(), prometheus.NewRegistry()
	startSubscriber(t, cfg, sc(regA), nop)
	all := func(s map[string]float64) bool { return len(s) == cfg.Partitions }
	waitSeries(t, regA, kafka.MetricConsumerLag, group, 60*time.Second, "first member reports every partition", all)

	stopB := startSubscriber(t, cfg, sc(regB), nop)
	// Polled together: both members' sets must split the partitions.
	deadline := time.Now().Add(90 * time.Second)
	for {
		a, b := series(t, regA, kafka.MetricConsumerLag, group), series(t, regB, kafka.MetricConsumerLag, group)
		union := maps.Clone(a)
		maps.Copy(union, b)
		overlap := 0
		for k := range a {
			if _, ok := b[k]; ok {
				overlap++
			}
		}
		if len(a) > 0 && len(b) > 0 && overlap == 0 && len(union) == cfg.Partitions {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the second member joined: A reports %v, B reports %v; want a split of %d partitions", keysOf(a), keysOf(b), cfg.Partitions)
		}
		time.Sleep(50 * time.Millisecond)
	}

	if err := stopB(); err != nil {
		t.Fatal(err)
	}
	if s := series(t, regB, kafka.MetricConsumerLag, group); len(s) != 0 {
		t.Errorf("a stopped member still reports %v", keysOf(s))
	}
	waitSeries(t, regA, kafka.MetricConsumerLag, group, 90*time.Second, "first member takes every partition back", all)
}

func keysOf(m map[string]float64) []string {
	k := slices.Collect(maps.Keys(m))
	sort.Strings(k)
	return k
}

// Records held back for an unavailable dependency show in the held-back
// gauge and counter, and the gauge clears when the dependency returns.
func TestHeldBackMetrics(t *testing.T) {
	brokers := eventstest.Brokers(t)
	cfg := eventstest.Config(t, brokers)
	topic := testTopic(t, cfg)
	recs, _ := validRecords(t, 2)
	produceRaw(t, brokers, topic, recs...)
	group := eventstest.UniqueGroup(t)
	reg := prometheus.NewRegistry()
	var down atomic.Bool
	down.Store(true)
	rec := newRecorder()
	startSubscriber(t, cfg, fastRetries(kafka.SubscriberConfig{
		GroupID: group, Topics: []string{topic}, MaxAttempts: 2, CommitEvery: 1, Registerer: reg,
	}), func(ctx context.Context, e events.Event) error {
		if down.Load() {
			return events.Unavailable(errors.New("smtp: connection refused"))
		}
		return rec.handle(ctx, e)
	})
	waitSeries(t, reg, kafka.MetricConsumerHeldBack, group, 60*time.Second, "held-back gauge at 1", func(s map[string]float64) bool {
		return s["/"] == 1
	})
	waitSeries(t, reg, kafka.MetricConsumerHeldBackRecs, group, 60*time.Second, "held-back records counted by topic", func(s map[string]float64) bool {
		return s[topic+"/"] >= 1
	})
	down.Store(false)
	rec.waitFor(t, 2, 60*time.Second)
	if v := series(t, reg, kafka.MetricConsumerHeldBack, group)["/"]; v != 0 {
		t.Errorf("held-back gauge = %v after the dependency returned, want 0", v)
	}
}

// Two subscribers of one process share a registry (countersign dev): the
// second takes the collectors the first registered.
func TestKitMetricsShareARegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	cfg := kafka.Config{Brokers: "127.0.0.1:1"}
	for i := range 2 {
		_, err := kafka.NewSubscriber(cfg, kafka.SubscriberConfig{GroupID: fmt.Sprintf("g%d", i), Topics: []string{"t"}, Registerer: reg},
			func(context.Context, events.Event) error { return nil })
		if err != nil {
			t.Fatalf("subscriber %d: %v", i, err)
		}
	}
}

// Dead letters are counted by the kit, for every subscriber, from a series
// that exists at 0 before the first one (so increase() sees it).
func TestDeadLettersCounted(t *testing.T) {
	brokers := eventstest.Brokers(t)
	cfg := eventstest.Config(t, brokers)
	topic := testTopic(t, cfg)
	group := eventstest.UniqueGroup(t)
	reg := prometheus.NewRegistry()
	startSubscriber(t, cfg, kafka.SubscriberConfig{GroupID: group, Topics: []string{topic}, CommitEvery: 1, Registerer: reg},
		func(context.Context, events.Event) error { return nil })
	waitSeries(t, reg, kafka.MetricConsumerDeadLettered, group, 60*time.Second, "dead-letter series at 0 from the start", func(s map[string]float64) bool {
		v, ok := s[topic+"/"]
		return ok && v == 0
	})
	produceRaw(t, brokers, topic, [2][]byte{[]byte("k"), []byte("not an event")})
	waitSeries(t, reg, kafka.MetricConsumerDeadLettered, group, 60*time.Second, "the poison record counted", func(s map[string]float64) bool {
		return s[topic+"/"] == 1
	})
}
