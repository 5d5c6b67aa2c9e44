package userapi_test

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/countersign/countersign/events"
	"github.com/countersign/countersign/userapi"
	"github.com/countersign/countersign/userapi/storetest"
)

func TestMemoryStore(t *testing.T) {
	storetest.Run(t, func(*testing.T) userapi.Store { return userapi.NewMemoryStore() })
}

// BenchmarkMemoryStoreBytesPerPending measures the live heap one pending
// registration costs in the memory store, with realistic field sizes: a
// 25-byte address, short names, a UUID and a 32-byte MAC, each freshly
// allocated as the request decoder would. Everything the store keeps alive
// counts: the cache entry, the record, and the strings it holds on to. The
// issue's goal is at most 512 B. Run:
//
//	go test -run '^$' -bench BytesPerPending ./userapi/
func BenchmarkMemoryStoreBytesPerPending(b *testing.B) {
	// One store of max(b.N, 100k) records, measured once: a per-record
	// figure needs many records, and -benchtime must not multiply them.
	n := max(b.N, 100_000)
	ctx := context.Background()
	keyID := "k20260101-abcdef" // shared by every record, as the keyring's id is
	s := userapi.NewMemoryStore()
	before := heapInUse()
	now := time.Now()
	b.ResetTimer()
	for j := 0; j < n; j++ {
		_, err := s.Register(ctx, userapi.Pending{
			Email:     fmt.Sprintf("user%07d@example.com", j),
			UserID:    uuid.NewString(),
			FirstName: strings.Clone("Ada"),
			LastName:  strings.Clone("Lovelace"),
			MACKeyID:  keyID,
			MAC:       make([]byte, 32),
			Sealed:    events.SealedCode{KeyID: keyID, Nonce: make([]byte, 12), Ciphertext: make([]byte, 22)},
			ExpiresAt: now.Add(time.Hour),
			SentAt:    now,
		}, userapi.Limits{ResendInterval: time.Minute, MaxAttempts: 5, MaxFailuresPerDay: 10})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	after := heapInUse()
	if l, _ := s.Len(ctx); l != n {
		b.Fatalf("Len = %d, want %d", l, n)
	}
	runtime.KeepAlive(s)
	b.ReportMetric(float64(after-before)/float64(n), "B/pending")
}

func heapInUse() uint64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
