package platform

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// MetricReady is the readiness /readyz reports, as a metric: an alert rule
// (deploy/prometheus/alerts.yml) fires when it stays 0. Prometheus scrapes
// /metrics only, so /readyz failing is seen through it.
const MetricReady = "countersign_ready"

// RegisterReady registers countersign_ready on reg: 1 when ready answers
// nil within 2s at scrape time, 0 otherwise. It asks the same question as
// /readyz (a metadata request, a Redis ping), once per scrape.
func RegisterReady(reg prometheus.Registerer, ready func(context.Context) error) error {
	return reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: MetricReady,
		Help: "1 when the process is ready (what GET /readyz answers 200 for: the broker and the pending store reachable, the consumer running), 0 when not.",
	}, func() float64 {
		if ready == nil {
			return 1
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if ready(ctx) != nil {
			return 0
		}
		return 1
	}))
}
