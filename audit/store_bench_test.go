package audit_test

import (
	"context"
	"testing"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/events/eventstest"
	"github.com/countersign/countersign/events/kafka"
)

// BenchmarkStoreWrite: the database alone, batches of 500 events (no Kafka).
func BenchmarkStoreWrite(b *testing.B) {
	for _, be := range benchBackends {
		b.Run(be.name, func(b *testing.B) {
			store := openStore(b, be.url(b))
			evs := history(b, 500*b.N, eventstest.Suffix()+"@example.com")
			p := kafka.Partition{Topic: "t", Partition: 0}
			b.ResetTimer()
			for i := range b.N {
				recs := make([]kafka.BatchRecord, 500)
				for j := range recs {
					recs[j] = kafka.BatchRecord{Partition: p, Offset: int64(i*500 + j), Event: evs[i*500+j]}
				}
				if err := store.Write(context.Background(), "g", kafka.Batch{Records: recs, Next: map[kafka.Partition]int64{p: int64(i*500 + 500)}}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(500*b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

var _ = audit.SQLite
