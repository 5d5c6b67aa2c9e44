package main_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/events"
	"github.com/countersign/countersign/events/eventstest"
	"github.com/countersign/countersign/events/kafka"
	"github.com/countersign/countersign/mail/smtptest"
)

// TestReplayDLQ: a mail the SMTP server rejects with 550 lands in the
// service group's dead-letter topic; `countersign replay-dlq <service>`, run
// once the mailbox exists, sends it, reports it and exits by itself; a second
// run finds nothing left, since the first committed. Unique group ids and a
// filter on the recipient keep it valid on a shared cluster
// (KAFKA_TEST_BROKERS).
func TestReplayDLQ(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	t.Run("notifier", func(t *testing.T) {
		testReplayDLQ(t, "notifier", "NOTIFIER_GROUP_ID", ".verification", func(keys *events.Keyring, email string) (events.Event, error) {
			userID := "u-" + eventstest.Suffix()
			cd := events.UserAccountCreated{
				UserID: userID, Email: email, FirstName: "Ada", LastName: "Lovelace",
				ExpiresAt: time.Now().Add(15 * time.Minute),
			}
			sealed, err := keys.Seal("123456", cd)
			if err != nil {
				return events.Event{}, err
			}
			cd.EncryptedCode = sealed
			return events.NewUserAccountCreated(cd)
		})
	})
	t.Run("recommender", func(t *testing.T) {
		testReplayDLQ(t, "recommender", "RECOMMENDER_GROUP_ID", ".getting_started", func(_ *events.Keyring, email string) (events.Event, error) {
			return events.NewUserAccountVerified(events.UserAccountVerified{
				UserID: "u-" + eventstest.Suffix(), Email: email, FirstName: "Ada", LastName: "Lovelace", VerifiedAt: time.Now(),
			})
		})
	})
}

// testReplayDLQ runs service, dead-letters the mail of one event and replays
// it; the replayed mail's Message-ID is the event id plus idSuffix.
func testReplayDLQ(t *testing.T, service, groupEnv, idSuffix string, newEvent func(*events.Keyring, string) (events.Event, error)) {
	brokers := eventstest.Brokers(t)
	smtp := smtptest.Start(t)
	entry, keys := newKey(t)
	group := eventstest.UniqueGroup(t)
	kcfg := eventstest.Config(t, brokers)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := kafka.EnsureTopics(ctx, kcfg, events.Topics...); err != nil {
		t.Fatal(err)
	}
	// The new group starts at the topics' ends, not at the history other
	// tests left on a shared cluster.
	eventstest.GroupAtEnd(t, brokers, group)
	producer, err := kafka.NewProducer(kcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = producer.Close(ctx)
	})

	env := []string{
		"KAFKA_BROKERS=" + brokers,
		"CODE_ENCRYPTION_KEYS=" + entry,
		groupEnv + "=" + group,
		"SMTP_HOST=127.0.0.1", "SMTP_PORT=" + strconv.Itoa(smtp.Port()), "SMTP_TLS=none",
		"METRICS_ADDR=off",
	}
	start(t, t.TempDir(), env, service)

	email := eventstest.UniqueEmail(t)
	smtp.FailNextFor(email, 1, 550, "5.1.1 mailbox unavailable")
	e, err := newEvent(keys, email)
	if err != nil {
		t.Fatal(err)
	}
	if err := producer.Publish(ctx, e); err != nil {
		t.Fatal(err)
	}
	eventstest.ReadTopic(t, brokers, kafka.DeadLetterTopic(group), 1, 60*time.Second, eventstest.ByKey(email))
	if n := smtp.RejectedFor(email); n != 1 {
		t.Fatalf("the SMTP server rejected %d mails to the address, want 1", n)
	}
	if got := mailsTo(smtp, email); len(got) != 0 {
		t.Fatalf("%d mails to the address accepted before the replay, want 0", len(got))
	}

	// The mailbox exists now: replay.
	out, code := runWithin(t, 90*time.Second, env, "replay-dlq", service)
	if code != 0 {
		t.Fatalf("replay-dlq %s: exit %d\n%s", service, code, out)
	}
	want := "replay of " + kafka.DeadLetterTopic(group) + " as group " + group + ".replay: 1 replayed, 1 handled, 0 failed again"
	if eventstest.RealBroker() {
		// On a shared cluster, other packages' tests publish while this one
		// runs; events between groupAtEnd and the notifier's start land in
		// this group's dead letters too (sealed with other keys). The summary
		// then counts them: only its form and our mail are this test's.
		want = "replay of " + kafka.DeadLetterTopic(group) + " as group " + group + ".replay: "
	}
	if !strings.Contains(out, want) {
		t.Errorf("replay-dlq %s does not report %q:\n%s", service, want, out)
	}
	got := mailsTo(smtp, email)
	if len(got) != 1 {
		t.Fatalf("%d mails to the address after the replay, want 1", len(got))
	}
	if !strings.Contains(got[0].MessageID(), e.ID+idSuffix) {
		t.Errorf("replayed mail has Message-ID %q, want the original event's", got[0].MessageID())
	}
	if strings.Contains(out, "123456") {
		t.Errorf("the code appears in the replay's output:\n%s", out)
	}

	// The replay group committed: nothing is left for a second run.
	out, code = runWithin(t, 90*time.Second, env, "replay-dlq", service)
	if code != 0 {
		t.Fatalf("second replay-dlq %s: exit %d\n%s", service, code, out)
	}
	if !eventstest.RealBroker() && !strings.Contains(out, ": 0 replayed") {
		t.Errorf("second replay-dlq %s replayed something:\n%s", service, out)
	}
	if got := mailsTo(smtp, email); len(got) != 1 {
		t.Errorf("%d mails to the address after the second replay, want still 1", len(got))
	}
}

func TestReplayDLQUsage(t *testing.T) {
	for _, args := range [][]string{{"replay-dlq"}, {"replay-dlq", "userapi"}, {"replay-dlq", "notifier", "extra"}} {
		if out, code := run(t, nil, args...); code != 2 || !strings.Contains(out, "replay-dlq") {
			t.Errorf("%v: exit %d, want 2 and a usage line\n%s", args, code, out)
		}
	}
	for svc, want := range map[string][]string{
		"notifier":    {"NOTIFIER_GROUP_ID", "CODE_ENCRYPTION_KEYS", "SMTP_HOST", "KAFKA_BROKERS"},
		"recommender": {"RECOMMENDER_GROUP_ID", "SMTP_HOST", "KAFKA_BROKERS"},
	} {
		out, code := run(t, nil, "replay-dlq", svc, "-h")
		if code != 0 {
			t.Errorf("replay-dlq %s -h: exit %d", svc, code)
		}
		for _, w := range want {
			if !strings.Contains(out, w) {
				t.Errorf("replay-dlq %s -h does not mention %s:\n%s", svc, w, out)
			}
		}
	}
}

// mailsTo returns the mails to addr the SMTP server accepted.
func mailsTo(s *smtptest.Server, addr string) []smtptest.Received {
	var out []smtptest.Received
	for _, m := range s.Messages() {
		for _, to := range m.To {
			if to == addr {
				out = append(out, m)
				break
			}
		}
	}
	return out
}

// runWithin runs the binary to completion like run, failing the test when it
// has not exited within timeout: a command that should stop by itself.
func runWithin(t *testing.T, timeout time.Duration, env []string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary(t), args...)
	cmd.Dir = t.TempDir()
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("countersign %s did not exit within %v:\n%s", strings.Join(args, " "), timeout, out)
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(out), ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), 0
}
