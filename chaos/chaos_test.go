package chaos

import (
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/countersign/countersign/events"
	"github.com/countersign/countersign/events/eventstest"
)

// profile is how long and how hard one run pushes.
type profile struct {
	rate       float64       // registrations per second offered
	clients    int           // requests in flight at most
	before     time.Duration // load before the fault
	after      time.Duration // load after the dependency's return
	brokerDown time.Duration // broker dead before the restart command
	redisDown  time.Duration // Redis stopped before it starts again
	smtpDown   time.Duration // SMTP refusing connections
	settle     time.Duration // longest wait for the last mails
	straggle   time.Duration // wait for late duplicates once every mail is in
	read       time.Duration // how long the topic is read back
}

var profiles = map[string]profile{
	// The figures of docs/reliability.md.
	"full": {rate: 40, clients: 16, before: 15 * time.Second, after: 30 * time.Second,
		brokerDown: 8 * time.Second, redisDown: 5 * time.Second, smtpDown: 60 * time.Second, settle: 5 * time.Minute,
		straggle: 3 * time.Second, read: 5 * time.Second},
	// CI: every scenario, briefly.
	"short": {rate: 15, clients: 8, before: 4 * time.Second, after: 6 * time.Second,
		brokerDown: 3 * time.Second, redisDown: 2 * time.Second, smtpDown: 10 * time.Second, settle: 2 * time.Minute,
		straggle: time.Second, read: 3 * time.Second},
}

// commitEvery is the notifier's NOTIFIER_COMMIT_EVERY in the suite (the
// default): a notifier crash re-sends fewer than 2× this many mails.
const commitEvery = 5

// result is one line of the table.
type result struct {
	name                                string
	acked, refused, events, mails       int
	lost, lostEvents, duplicates, dupOK int
	down, recover                       time.Duration
	recoverOf                           string
	firstAck, firstMail                 time.Duration // after the return; -1: none
}

func secs(d time.Duration) string {
	if d < 0 {
		return "never"
	}
	return fmt.Sprintf("%.1f", d.Seconds())
}

func (r result) line() string {
	return fmt.Sprintf("| %-16s | %5d | %6d | %5d | %4d | %4d (≤ %d) | %9s | %7s | %8s | %6.1f | %7d |",
		r.name, r.acked, r.events, r.mails, r.lost, r.duplicates, r.dupOK, secs(r.recover),
		secs(r.firstAck), secs(r.firstMail), r.down.Seconds(), r.refused)
}

const tableHeader = "| scenario         | acked | events | mails | lost | duplicates | recover s | 1st 202 | 1st mail | down s | not 202 |\n" +
	"|------------------|-------|--------|-------|------|------------|-----------|---------|----------|--------|---------|"

// suite is the platform one run drives: one broker for every scenario,
// the notifier's group carried from one scenario to the next.
type suite struct {
	t       *testing.T
	prof    profile
	dir     string
	bin     string
	broker  *broker
	key     string
	sink    *sink
	results []result
}

func TestChaos(t *testing.T) {
	mode := os.Getenv("CHAOS")
	if mode == "" {
		t.Skip("the chaos suite runs real processes for minutes: run scripts/chaos (CHAOS=full) or scripts/chaos --short (CHAOS=short)")
	}
	prof, ok := profiles[mode]
	if !ok {
		t.Fatalf("CHAOS=%q: want short or full", mode)
	}
	s := &suite{t: t, prof: prof, dir: t.TempDir()}
	var err error
	if s.bin, err = buildBinary(s.dir); err != nil {
		t.Fatal(err)
	}
	if s.key, err = events.GenerateKeyEntry(); err != nil {
		t.Fatal(err)
	}
	s.broker = startBroker(t)
	if s.sink, err = startSink("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.sink.stop)

	only := map[string]bool{}
	for _, name := range strings.Split(os.Getenv("CHAOS_ONLY"), ",") {
		if name = strings.TrimSpace(name); name != "" {
			only[name] = true
		}
	}
	for _, sc := range []struct {
		name     string
		run      func(t *testing.T, prefix string) result
		fullOnly bool
	}{
		{"smtp-refusing", s.smtpRefusing(nil), false},
		// The same outage with the notifier probing the SMTP server every
		// 5s instead of every 30s (the default NOTIFIER_RETRY_MAX_BACKOFF),
		// which is what bounds the recovery.
		{"smtp-refusing-5s", s.smtpRefusing([]string{"NOTIFIER_RETRY_MAX_BACKOFF=5s"}), true},
		{"notifier-sigkill", s.notifierKilled, false},
		{"redis-restart", s.redisRestarted, false},
		{"broker-sigkill", s.brokerKilled, false},
	} {
		if (len(only) > 0 && !only[sc.name]) || (len(only) == 0 && sc.fullOnly && mode != "full") {
			continue
		}
		t.Run(sc.name, func(t *testing.T) {
			r := sc.run(t, sc.name+"-"+eventstest.Suffix())
			r.name = sc.name
			s.results = append(s.results, r)
			fmt.Println(r.line())
			if r.lost > 0 {
				t.Errorf("%s: %d acknowledged registrations lost (%d without an event on the topic)", sc.name, r.lost, r.lostEvents)
			}
			if r.duplicates > r.dupOK {
				t.Errorf("%s: %d duplicate mails, above the bound of %d", sc.name, r.duplicates, r.dupOK)
			}
		})
	}
	table := tableHeader + "\n"
	for _, r := range s.results {
		table += r.line() + "\n"
	}
	fmt.Printf("\nchaos suite, CHAOS=%s, %s load at %.0f registrations/s from %d clients:\n%s", mode, time.Now().UTC().Format(time.DateTime), prof.rate, prof.clients, table)
	if out := os.Getenv("CHAOS_REPORT"); out != "" {
		if err := os.WriteFile(out, []byte(table), 0o644); err != nil {
			t.Error(err)
		}
	}
}

// extraEnv is CHAOS_EXTRA_ENV ("NAME=value,NAME=value"), given to every
// countersign process: for trying a setting under the same faults.
func extraEnv() []string {
	var out []string
	for _, kv := range strings.Split(os.Getenv("CHAOS_EXTRA_ENV"), ",") {
		if kv = strings.TrimSpace(kv); kv != "" {
			out = append(out, kv)
		}
	}
	return out
}

// userAPI starts one user API on store ("memory" or a redis:// URL).
func (s *suite) userAPI(t *testing.T, name, store string) (*proc, string) {
	addr := "127.0.0.1:" + strconv.Itoa(freePort(t, 1))
	p := startProc(t, s.dir, name, append([]string{
		"KAFKA_BROKERS=" + s.broker.addr(), "CODE_ENCRYPTION_KEYS=" + s.key, "HTTP_ADDR=" + addr,
		"PENDING_STORE=" + store, "RATE_LIMIT_PER_IP=0", "LOG_LEVEL=warn", "PUBLIC_URL=http://" + addr, "METRICS_ADDR=off",
	}, extraEnv()...), s.bin, "userapi")
	waitHTTP(t, p, "http://"+addr+"/readyz", 120*time.Second)
	return p, "http://" + addr
}

// notifier starts the notifier, sending to the sink. Every scenario's
// notifier is the same consumer group, so it starts where the last one
// committed.
func (s *suite) notifier(t *testing.T, name string, env ...string) *proc {
	metrics := "127.0.0.1:" + strconv.Itoa(freePort(t, 1))
	p := startProc(t, s.dir, name, append([]string{
		"KAFKA_BROKERS=" + s.broker.addr(), "CODE_ENCRYPTION_KEYS=" + s.key,
		"SMTP_HOST=127.0.0.1", "SMTP_PORT=" + s.sink.port(), "SMTP_TLS=none", "SMTP_TIMEOUT=5s",
		"NOTIFIER_COMMIT_EVERY=" + strconv.Itoa(commitEvery), "METRICS_ADDR=" + metrics, "LOG_LEVEL=warn",
	}, append(env, extraEnv()...)...), s.bin, "notifier")
	waitHTTP(t, p, "http://"+metrics+"/readyz", 120*time.Second)
	return p
}

// measure stops the load, waits for the mails of every acknowledged
// registration (or the settle time), and counts.
func (s *suite) measure(t *testing.T, g *loadGen, stopLoad func(), returned time.Time, recoverOf string) result {
	stopLoad()
	outs := g.outcomes()
	var r result
	acked := map[string]bool{}
	statuses := map[int]int{}
	for _, o := range outs {
		statuses[o.status]++
		if o.status == http.StatusAccepted {
			acked[o.email] = true
		} else {
			r.refused++
		}
	}
	t.Logf("answers by status (0: none): %v", statuses)
	r.acked = len(acked)
	deadline := time.Now().Add(s.prof.settle)
	var mails []received
	for {
		mails = s.sink.received(g.prefix)
		got := map[string]bool{}
		for _, m := range mails {
			got[m.to] = true
		}
		missing := 0
		for e := range acked {
			if !got[e] {
				missing++
			}
		}
		if missing == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	// A little more for duplicates still on their way.
	time.Sleep(s.prof.straggle)
	mails = s.sink.received(g.prefix)

	onTopic := map[string]bool{}
	for _, m := range eventstest.CountTopic(t, s.broker.addr(), events.TopicUserAccountCreated, s.prof.read, func(m *ckafka.Message) bool {
		e, err := events.Decode(m.Value)
		if err != nil {
			return false
		}
		d, err := e.UserAccountCreated()
		return err == nil && strings.HasPrefix(d.Email, g.prefix)
	}) {
		e, _ := events.Decode(m.Value)
		d, _ := e.UserAccountCreated()
		onTopic[d.Email] = true
		r.events++
	}
	mailed := map[string]bool{}
	ids := map[string]int{}
	for _, m := range mails {
		mailed[m.to] = true
		ids[m.messageID]++
	}
	r.mails = len(mails)
	r.duplicates = len(mails) - len(ids)
	for e := range acked {
		if !onTopic[e] {
			r.lostEvents++
		}
		if !onTopic[e] || !mailed[e] {
			r.lost++
		}
	}

	r.recover, r.recoverOf = -1, recoverOf
	var firstAck, firstMail time.Duration = -1, -1
	for _, o := range outs {
		if o.status == http.StatusAccepted && o.end.After(returned) {
			if d := o.end.Sub(returned); firstAck < 0 || d < firstAck {
				firstAck = d
			}
		}
	}
	for _, m := range mails {
		if m.at.After(returned) {
			if d := m.at.Sub(returned); firstMail < 0 || d < firstMail {
				firstMail = d
			}
		}
	}
	r.firstAck, r.firstMail = firstAck, firstMail
	switch recoverOf {
	case "api":
		r.recover = firstAck
	case "mail":
		r.recover = firstMail
	default: // both
		if firstAck >= 0 && firstMail >= 0 {
			r.recover = max(firstAck, firstMail)
		}
	}
	return r
}

// smtpRefusing: the SMTP server refuses connections for smtpDown under
// load. Records are held back, never dead-lettered; they go out when it
// returns.
func (s *suite) smtpRefusing(env []string) func(t *testing.T, prefix string) result {
	return func(t *testing.T, prefix string) result { return s.smtpRefusingWith(t, prefix, env) }
}

func (s *suite) smtpRefusingWith(t *testing.T, prefix string, env []string) result {
	api, url := s.userAPI(t, "userapi-smtp", "memory")
	defer api.stop(30 * time.Second)
	n := s.notifier(t, "notifier-smtp", env...)
	defer n.stop(30 * time.Second)
	g := newLoad(prefix, []string{url})
	stop := g.run(s.prof.rate, s.prof.clients)
	time.Sleep(s.prof.before)
	down := time.Now()
	s.sink.stop()
	time.Sleep(s.prof.smtpDown)
	if err := s.sink.start(); err != nil {
		t.Fatalf("SMTP sink back on %s: %v", s.sink.addr, err)
	}
	returned := time.Now()
	time.Sleep(s.prof.after)
	r := s.measure(t, g, stop, returned, "mail")
	r.down = returned.Sub(down)
	// A connection cut in the middle of a send may deliver a mail whose
	// success the notifier never heard of: it is sent again, with the same
	// Message-ID.
	r.dupOK = 1
	return r
}

// notifierKilled: the notifier is SIGKILLed under load and started again.
func (s *suite) notifierKilled(t *testing.T, prefix string) result {
	api, url := s.userAPI(t, "userapi-notifier", "memory")
	defer api.stop(30 * time.Second)
	n := s.notifier(t, "notifier-killed")
	g := newLoad(prefix, []string{url})
	stop := g.run(s.prof.rate, s.prof.clients)
	time.Sleep(s.prof.before)
	down := time.Now()
	n.kill()
	returned := time.Now()
	n2 := s.notifier(t, "notifier-restarted")
	defer n2.stop(30 * time.Second)
	time.Sleep(s.prof.after)
	r := s.measure(t, g, stop, returned, "mail")
	r.down = returned.Sub(down)
	r.dupOK = 2*commitEvery - 1
	return r
}

// redisRestarted: two user API replicas share Redis, which is restarted
// under load: SIGTERM, redisDown later started again on its append-only
// file.
func (s *suite) redisRestarted(t *testing.T, prefix string) result {
	rds := startRedis(t, s.dir)
	a, urlA := s.userAPI(t, "userapi-redis-a", rds.url())
	defer a.stop(30 * time.Second)
	b, urlB := s.userAPI(t, "userapi-redis-b", rds.url())
	defer b.stop(30 * time.Second)
	n := s.notifier(t, "notifier-redis")
	defer n.stop(30 * time.Second)
	g := newLoad(prefix, []string{urlA, urlB})
	stop := g.run(s.prof.rate, s.prof.clients)
	time.Sleep(s.prof.before)
	down := time.Now()
	rds.p.stop(30 * time.Second)
	time.Sleep(s.prof.redisDown)
	rds.start(t)
	returned := time.Now()
	time.Sleep(s.prof.after)
	r := s.measure(t, g, stop, returned, "api")
	r.down = returned.Sub(down)
	return r
}

// brokerKilled: Apache Kafka is SIGKILLed under load and, brokerDown
// later, started again on the same data.
func (s *suite) brokerKilled(t *testing.T, prefix string) result {
	api, url := s.userAPI(t, "userapi-broker", "memory")
	defer api.stop(30 * time.Second)
	n := s.notifier(t, "notifier-broker")
	defer n.stop(30 * time.Second)
	g := newLoad(prefix, []string{url})
	stop := g.run(s.prof.rate, s.prof.clients)
	time.Sleep(s.prof.before)
	down := time.Now()
	s.broker.sigkill(t)
	time.Sleep(s.prof.brokerDown)
	s.broker.restart(t) // returns when the broker says it has started
	returned := time.Now()
	time.Sleep(s.prof.after)
	r := s.measure(t, g, stop, returned, "api+mail")
	r.down = returned.Sub(down)
	return r
}
