// Package promtest reads metrics back in tests: the services' tests share it
// rather than each writing its own Gather loop.
package promtest

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// Counter returns the value of the counter name whose label values are
// labels, in the order the metric declares its labels (none for an unlabelled
// counter); it fails tb when there is no such series.
func Counter(tb testing.TB, g prometheus.Gatherer, name string, labels ...string) float64 {
	tb.Helper()
	mfs, err := g.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) != len(labels) {
				continue
			}
			for i, l := range m.GetLabel() {
				if l.GetValue() != labels[i] {
					continue series
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	tb.Fatalf("metric %s%q not found", name, labels)
	return 0
}
