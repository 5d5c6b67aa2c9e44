package kafka

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/prometheus/client_golang/prometheus"
)

// Metric names the kit exports through SubscriberConfig.Registerer (and the
// WithRegisterer worker option). They are contracts: dashboards and alert
// rules in deploy/ name them.
const (
	MetricConsumerLag          = "countersign_consumer_lag_records"
	MetricConsumerHeldBack     = "countersign_consumer_held_back"
	MetricConsumerHeldBackRecs = "countersign_consumer_held_back_records_total"
	MetricConsumerDeadLettered = "countersign_consumer_dead_lettered_total"
)

// DefaultLagInterval is how often the lag is measured when
// SubscriberConfig.LagInterval is zero.
const DefaultLagInterval = 5 * time.Second

// WithRegisterer makes the worker export the kit's metrics on reg: the
// consumer lag per assigned partition and the records held back for an
// unavailable dependency (see SubscriberConfig.Registerer). A nil reg
// registers nowhere. The platform's services pass their own Registerer, so
// a worker's METRICS_ADDR serves them.
func WithRegisterer(reg prometheus.Registerer) WorkerOption {
	return func(o *workerOptions) { o.registerer = reg }
}

// kitMetrics are the collectors one Registerer holds for every subscriber
// registered on it; the group label tells the subscribers apart.
type kitMetrics struct {
	lag          *prometheus.GaugeVec
	heldBack     *prometheus.GaugeVec
	heldBackRecs *prometheus.CounterVec
	deadLettered *prometheus.CounterVec
}

// newKitMetrics registers the kit's collectors on reg, or takes the ones a
// subscriber of the same process registered before (countersign dev runs
// the notifier and the recommender on one registry).
func newKitMetrics(reg prometheus.Registerer) (*kitMetrics, error) {
	m := &kitMetrics{
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: MetricConsumerLag,
			Help: "Records not yet committed by the consumer group: the partition's high watermark minus the group's committed offset (the earliest offset when the group has committed none). Reported for the partitions assigned to this member, refreshed every few seconds, also while a handler is stuck.",
		}, []string{"group", "topic", "partition"}),
		heldBack: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: MetricConsumerHeldBack,
			Help: "1 while the consumer holds records back because its handler reports a dependency (the SMTP server) unavailable, 0 otherwise.",
		}, []string{"group"}),
		heldBackRecs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricConsumerHeldBackRecs,
			Help: "Records held back (rewound and paused, to be tried again) because the handler reported a dependency unavailable, by topic.",
		}, []string{"group", "topic"}),
		deadLettered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricConsumerDeadLettered,
			Help: "Records written to the group's dead-letter topic, by the topic they came from.",
		}, []string{"group", "topic"}),
	}
	var err error
	if m.lag, err = register(reg, m.lag); err != nil {
		return nil, err
	}
	if m.heldBack, err = register(reg, m.heldBack); err != nil {
		return nil, err
	}
	if m.heldBackRecs, err = register(reg, m.heldBackRecs); err != nil {
		return nil, err
	}
	if m.deadLettered, err = register(reg, m.deadLettered); err != nil {
		return nil, err
	}
	return m, nil
}

func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		return c, err
	}
	return c, nil
}

// lagReporter measures the lag of this member's assigned partitions on a
// goroutine of its own, so it goes on while a handler is stuck. It asks the
// broker for the committed offsets of all assigned partitions in one
// request and for each partition's watermarks, every interval: the cost does
// not grow with the records handled.
//
// librdkafka's rd_kafka_committed, rd_kafka_query_watermark_offsets are
// thread-safe and may run while the consuming goroutine polls; what is not
// safe is any call after Close, so Run stops the reporter before closing the
// consumer. The cached GetWatermarkOffsets is not used: it is only refreshed
// by fetches, which stop while partitions are paused or the fetch queue is
// full (a stuck handler), exactly when the lag matters.
type lagReporter struct {
	group    string
	metrics  *kitMetrics
	interval time.Duration
	timeout  time.Duration

	// mu guards assigned, and orders a measurement's update after a
	// revocation: a partition revoked while it was being measured is not
	// reported again.
	mu       sync.Mutex
	assigned map[partitionKey]struct{}
}

func newLagReporter(group string, m *kitMetrics, interval time.Duration) *lagReporter {
	return &lagReporter{group: group, metrics: m, interval: interval,
		timeout: min(max(interval, time.Second), 5*time.Second), assigned: map[partitionKey]struct{}{}}
}

// assign and revoke follow the rebalances (called from Subscriber.rebalance,
// on the consuming goroutine). A revoked partition's series is deleted.
func (l *lagReporter) assign(tps []ckafka.TopicPartition) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, tp := range tps {
		if tp.Topic != nil {
			l.assigned[partitionKey{*tp.Topic, tp.Partition}] = struct{}{}
		}
	}
}

func (l *lagReporter) revoke(tps []ckafka.TopicPartition) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, tp := range tps {
		if tp.Topic == nil {
			continue
		}
		k := partitionKey{*tp.Topic, tp.Partition}
		delete(l.assigned, k)
		l.metrics.lag.DeleteLabelValues(l.group, k.topic, strconv.Itoa(int(k.partition)))
	}
}

// forgetAll deletes every series of this group: Run has stopped.
func (l *lagReporter) forgetAll() {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.assigned = map[partitionKey]struct{}{}
	l.metrics.lag.DeletePartialMatch(prometheus.Labels{"group": l.group})
	l.metrics.heldBack.DeleteLabelValues(l.group)
}

// start measures on a goroutine of its own until the returned stop is
// called; stop waits for it and deletes the group's series. Call stop
// before closing c. A nil reporter starts nothing.
func (l *lagReporter) start(c *ckafka.Consumer) (stop func()) {
	if l == nil {
		return func() {}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); l.run(ctx, c) }()
	return func() { cancel(); <-done; l.forgetAll() }
}

// run measures every interval until ctx ends.
func (l *lagReporter) run(ctx context.Context, c *ckafka.Consumer) {
	t := time.NewTicker(l.interval)
	defer t.Stop()
	for {
		l.measure(ctx, c)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// measure updates the lag of the partitions assigned now. A partition whose
// offsets cannot be had (the broker is down) keeps its last value.
//
// It asks three requests whatever the number of partitions: the committed
// offsets, then the latest and the earliest offsets of all partitions at
// once (ListOffsets with the timestamps -1 and -2, through OffsetsForTimes).
// A broker answers a connection's requests in order, so each request can
// wait behind the consumer's long-poll fetch (up to fetch.wait.max.ms): two
// watermark queries per partition, one after another, made a measurement
// of the audit's twelve partitions last seconds, and a shutdown waited for
// it. ctx ending stops it between requests.
func (l *lagReporter) measure(ctx context.Context, c *ckafka.Consumer) {
	l.mu.Lock()
	tps := make([]ckafka.TopicPartition, 0, len(l.assigned))
	for k := range l.assigned {
		topic := k.topic
		tps = append(tps, ckafka.TopicPartition{Topic: &topic, Partition: k.partition})
	}
	l.mu.Unlock()
	if len(tps) == 0 {
		return
	}
	timeoutMs := int(l.timeout.Milliseconds())
	committed, err := c.Committed(tps, timeoutMs)
	if err != nil || ctx.Err() != nil {
		return
	}
	ends := func(at ckafka.Offset) map[partitionKey]int64 {
		q := make([]ckafka.TopicPartition, len(tps))
		for i, tp := range tps {
			q[i] = ckafka.TopicPartition{Topic: tp.Topic, Partition: tp.Partition, Offset: at}
		}
		res, err := c.OffsetsForTimes(q, timeoutMs)
		if err != nil {
			return nil
		}
		out := make(map[partitionKey]int64, len(res))
		for _, tp := range res {
			if tp.Topic != nil && tp.Error == nil && tp.Offset >= 0 {
				out[partitionKey{*tp.Topic, tp.Partition}] = int64(tp.Offset)
			}
		}
		return out
	}
	highs := ends(ckafka.OffsetEnd) // timestamp -1: the latest offset
	if highs == nil || ctx.Err() != nil {
		return
	}
	lows := ends(ckafka.OffsetBeginning) // timestamp -2: the earliest
	if lows == nil {
		return
	}
	lags := make(map[partitionKey]int64, len(committed))
	for _, tp := range committed {
		if tp.Topic == nil || tp.Error != nil {
			continue
		}
		k := partitionKey{*tp.Topic, tp.Partition}
		high, okH := highs[k]
		low, okL := lows[k]
		if okH && okL {
			lags[k] = lag(int64(tp.Offset), low, high)
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for k, v := range lags {
		if _, ok := l.assigned[k]; ok {
			l.metrics.lag.WithLabelValues(l.group, k.topic, strconv.Itoa(int(k.partition))).Set(float64(v))
		}
	}
}

// lag is high minus the committed offset. Without a committed offset
// (negative: OffsetInvalid), or one below the earliest retained offset, the
// group reads from the earliest (auto.offset.reset=earliest), so the lag
// counts from there.
func lag(committed, low, high int64) int64 {
	from := max(committed, low)
	if committed < 0 {
		from = low
	}
	return max(high-from, 0)
}

// start makes every series of the group exist from the start, at 0, so
// that increase() in an alert rule sees the first dead letter.
func (m *kitMetrics) start(group string, topics []string) {
	if m == nil {
		return
	}
	m.setHeldBack(group, false)
	for _, t := range topics {
		m.heldBackRecs.WithLabelValues(group, t)
		m.deadLettered.WithLabelValues(group, t)
	}
}

// setHeldBack reports, for the gauge, whether records are held back now.
func (m *kitMetrics) setHeldBack(group string, on bool) {
	if m == nil {
		return
	}
	v := 0.0
	if on {
		v = 1
	}
	m.heldBack.WithLabelValues(group).Set(v)
}

func (m *kitMetrics) countHeldBack(group, topic string) {
	if m == nil {
		return
	}
	m.heldBackRecs.WithLabelValues(group, topic).Inc()
}

func (m *kitMetrics) countDeadLettered(group, topic string) {
	if m == nil {
		return
	}
	m.deadLettered.WithLabelValues(group, topic).Inc()
}
