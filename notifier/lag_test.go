package notifier_test

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/countersign/countersign/events/eventstest"
	"github.com/countersign/countersign/events/kafka"
	"github.com/countersign/countersign/notifier"
)

// gaugeSum sums a gauge's series of one consumer group, and counts them.
func gaugeSum(t *testing.T, reg *prometheus.Registry, name, group string) (sum float64, series int) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "group" && l.GetValue() == group {
					sum += m.GetGauge().GetValue()
					series++
				}
			}
		}
	}
	return sum, series
}

// The notifier exports the kit's lag on its registry: it grows while the
// SMTP server is down and the mails are held back, and returns to 0 once
// they have gone out and the offsets are committed.
func TestLagGrowsWhileSMTPIsDownAndReturnsToZero(t *testing.T) {
	h := newHarness(t)
	h.smtp.SetFailing(421)
	r := h.start(t, notifier.Config{WorkerConfig: kafka.WorkerConfig{InitialBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond, MaxAttempts: 2}})
	var addrs []string
	for range 5 {
		a := eventstest.UniqueEmail(t)
		addrs = append(addrs, a)
		h.publishCreated(t, a, "121212")
	}
	eventstest.Eventually(t, 90*time.Second, func() bool {
		lag, _ := gaugeSum(t, r.registry, kafka.MetricConsumerLag, r.group)
		held, _ := gaugeSum(t, r.registry, kafka.MetricConsumerHeldBack, r.group)
		return lag >= 5 && held == 1
	})
	h.smtp.ClearFailing()
	for _, a := range addrs {
		h.smtp.WaitFor(t, a, 1, 60*time.Second)
	}
	eventstest.Eventually(t, 60*time.Second, func() bool {
		held, _ := gaugeSum(t, r.registry, kafka.MetricConsumerHeldBack, r.group)
		return held == 0
	})
	if eventstest.RealBroker() {
		// On a shared cluster the other test packages keep publishing to
		// the same topics, so this group's lag has no moment it must be 0;
		// the kit's own test (events/kafka) checks that on a topic of its own.
		return
	}
	eventstest.Eventually(t, 60*time.Second, func() bool {
		lag, series := gaugeSum(t, r.registry, kafka.MetricConsumerLag, r.group)
		return lag == 0 && series == len(notifier.Topics)*h.kafka.Partitions // every topic's partitions
	})
}
