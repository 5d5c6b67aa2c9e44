package userapi

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkMemoryStoreSweepPause is go-cache's minute sweep over a million
// live pending records: max-ms/op is the longest any one cache's lock is
// held (every register of its addresses waits that long), sum-ms/op the
// sweep's whole work.
func BenchmarkMemoryStoreSweepPause(b *testing.B) {
	m := NewMemoryStore()
	now := time.Now()
	for i := range 1_000_000 {
		email := fmt.Sprintf("user%d@example.com", i)
		m.put(email, toRecord(Pending{Email: email, UserID: "0b0e5f3c-9a4e-4b43-8d4e-1c2f3a4b5c6d", FirstName: "Ada",
			MAC: make([]byte, 32), ExpiresAt: now.Add(time.Hour)}), now)
	}
	b.ResetTimer()
	var worst, sum time.Duration
	for range b.N {
		for _, c := range m.c.shards {
			t0 := time.Now()
			c.DeleteExpired()
			d := time.Since(t0)
			worst, sum = max(worst, d), sum+d
		}
	}
	b.ReportMetric(float64(worst.Microseconds())/1000, "max-ms/op")
	b.ReportMetric(float64(sum.Microseconds())/1000/float64(b.N), "sum-ms/op")
}
