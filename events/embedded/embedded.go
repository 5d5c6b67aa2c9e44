// Package embedded runs an in-process Kafka-protocol broker
// (github.com/twmb/franz-go/pkg/kfake) on a TCP address, for tests and for
// `countersign dev`. Clients, librdkafka and kcat included, talk to it over
// the real wire protocol exactly as to a cluster. It keeps everything in
// memory: it is not for production.
package embedded

import (
	"fmt"
	"net"
	"strings"

	"github.com/twmb/franz-go/pkg/kfake"
)

// Broker is a running embedded broker.
type Broker struct {
	c *kfake.Cluster
}

// Start listens on addr ("127.0.0.1:9092"; port 0 picks a free one) and
// serves a single-broker cluster with 3 partitions per auto-created topic.
func Start(addr string) (*Broker, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("embedded kafka: listen %s: %w", addr, err)
	}
	used := false
	c, err := kfake.NewCluster(
		kfake.NumBrokers(1),
		kfake.DefaultNumPartitions(3),
		kfake.AllowAutoTopicCreation(),
		kfake.ListenFn(func(network, address string) (net.Listener, error) {
			// kfake asks for one listener per broker; the one we bound
			// already is handed over so the address is known up front.
			if used {
				return nil, fmt.Errorf("embedded kafka: only one broker is supported")
			}
			used = true
			return ln, nil
		}),
	)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("embedded kafka: %w", err)
	}
	return &Broker{c: c}, nil
}

// Addr returns the bootstrap address (host:port).
func (b *Broker) Addr() string { return strings.Join(b.c.ListenAddrs(), ",") }

// Close stops the broker; its data is gone.
func (b *Broker) Close() { b.c.Close() }
