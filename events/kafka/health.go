package kafka

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/countersign/countersign/events"
)

// ErrBrokersDown is what Publish and Ping return, at once, while the
// producer knows that no broker is reachable: librdkafka reported all
// broker connections down (ALL_BROKERS_DOWN) and no metadata request has
// succeeded since. The event was not handed to librdkafka, so it matches
// events.ErrNotPublished: the caller may undo what it announces.
var ErrBrokersDown error = brokersDownError{}

type brokersDownError struct{}

func (brokersDownError) Error() string { return "no Kafka broker reachable" }

// Is makes errors.Is(ErrBrokersDown, events.ErrNotPublished) true.
func (brokersDownError) Is(target error) bool { return target == events.ErrNotPublished }

// ErrBrokersLost is what Publish returns for an event it was waiting on when
// every broker connection went down. Unlike ErrBrokersDown the outcome is
// unknown: the record may have reached the broker before it went away, or
// be sent when it returns (within message.timeout.ms). It does not match
// events.ErrNotPublished.
var ErrBrokersLost = errors.New("every Kafka broker connection went down before the acknowledgement")

// How the producer finds out that the brokers are back: while they are
// down it asks for metadata every probeInterval, each request bounded by
// probeTimeout. librdkafka reconnects on its own, at most
// reconnect.backoff.max.ms apart (1 s by default here, see NewProducer), so
// the brokers' return shows within about two seconds.
const (
	probeInterval = 500 * time.Millisecond
	probeTimeout  = time.Second
)

// reachability is the producer's view of its brokers. Reads are one atomic
// load (Publish checks it on every call); changes are serialised by mu.
type reachability struct {
	mu  sync.Mutex
	cur atomic.Pointer[epoch]
	// wake tells the prober that the brokers went down.
	wake chan struct{}
}

// epoch is one stretch of "up" or "down". lost is closed when an up epoch
// ends: Publish calls waiting for an acknowledgement then stop waiting.
type epoch struct {
	down  bool
	since time.Time
	lost  chan struct{}
}

func newReachability() *reachability {
	r := &reachability{wake: make(chan struct{}, 1)}
	r.cur.Store(&epoch{since: time.Now(), lost: make(chan struct{})})
	return r
}

func (r *reachability) load() *epoch { return r.cur.Load() }

// markDown records that every broker connection is down. It reports
// whether this was news.
func (r *reachability) markDown() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	cur := r.cur.Load()
	if cur.down {
		return false
	}
	close(cur.lost)
	r.cur.Store(&epoch{down: true, since: time.Now(), lost: cur.lost})
	select {
	case r.wake <- struct{}{}:
	default:
	}
	return true
}

// markUp records that a broker answered. When this was news it returns
// how long the brokers were down.
func (r *reachability) markUp() (downFor time.Duration, changed bool) {
	if !r.cur.Load().down {
		return 0, false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	cur := r.cur.Load()
	if !cur.down {
		return 0, false
	}
	now := time.Now()
	r.cur.Store(&epoch{since: now, lost: make(chan struct{})})
	return now.Sub(cur.since), true
}

// probe runs until done is closed: each time the brokers go down it asks
// for metadata until a request succeeds, then marks them up.
func (pr *Producer) probe() {
	for {
		select {
		case <-pr.done:
			return
		case <-pr.health.wake:
		}
		for pr.health.load().down {
			if _, err := pr.p.GetMetadata(nil, false, int(probeTimeout.Milliseconds())); err == nil {
				if d, changed := pr.health.markUp(); changed {
					pr.logger.Info("kafka brokers reachable again: publishing resumes", "down_for", d.Round(time.Millisecond))
				}
				break
			}
			select {
			case <-pr.done:
				return
			case <-time.After(probeInterval):
			}
		}
	}
}

// Down returns ErrBrokersDown while the producer knows that no broker is
// reachable, and nil otherwise: the check Publish makes first, for callers
// that want to refuse work before doing any (userapi.DownReporter).
func (pr *Producer) Down() error {
	if pr.health.load().down {
		return ErrBrokersDown
	}
	return nil
}
