package eventstest

import (
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
)

// Restartable is a one-broker embedded cluster that a test can stop and
// start again on the same port, to play a broker outage: clients notice the
// connections go down and, after Start, reconnect to the same address. Its
// data does not survive a restart (topics are created again on first use).
// It is always the embedded broker, also when KAFKA_TEST_BROKERS is set:
// an outside cluster cannot be stopped from a test.
type Restartable struct {
	tb   testing.TB
	port int

	mu sync.Mutex
	c  *kfake.Cluster
}

// StartRestartable starts a Restartable on a free loopback port; it is
// closed when the test ends.
func StartRestartable(tb testing.TB) *Restartable {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	b := &Restartable{tb: tb, port: port}
	b.Start()
	tb.Cleanup(b.Stop)
	return b
}

// Addr is the bootstrap address; it stays the same across restarts.
func (b *Restartable) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(b.port)) }

// Cluster is the running cluster, for fault injection (ControlKey); nil
// while stopped.
func (b *Restartable) Cluster() *kfake.Cluster {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.c
}

// Start starts the broker again after Stop (retrying while the port is
// still being released).
func (b *Restartable) Start() {
	b.tb.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.c != nil {
		return
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(b.port), kfake.DefaultNumPartitions(3), kfake.AllowAutoTopicCreation())
		if err == nil {
			b.c = c
			return
		}
		if time.Now().After(deadline) {
			b.tb.Fatalf("start broker on port %d: %v", b.port, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Stop closes every connection and stops listening, like a killed broker.
func (b *Restartable) Stop() {
	b.mu.Lock()
	c := b.c
	b.c = nil
	b.mu.Unlock()
	if c != nil {
		c.Close()
	}
}
