package main_test

import (
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/countersign/countersign/events"
	"github.com/countersign/countersign/events/eventstest"
)

// TestUserAPIRestartRemembersAccounts: a memory-store `countersign userapi`
// verifies an address, is stopped and started again with an empty memory;
// it rebuilds the accounts from Kafka before it is ready, and then refuses
// a second account for the address. `countersign forget` then makes the
// address new again, for the running process, with a user_account_deleted
// event for subscribers.
func TestUserAPIRestartRemembersAccounts(t *testing.T) {
	if testing.Short() {
		t.Skip("runs user API processes")
	}
	brokers := eventstest.Brokers(t)
	entry, keys := newKey(t)
	addr := freeAddr(t)
	env := []string{
		"KAFKA_BROKERS=" + brokers,
		"CODE_ENCRYPTION_KEYS=" + entry,
		"HTTP_ADDR=" + addr,
		"RATE_LIMIT_PER_IP=0",
		"RESEND_INTERVAL=1s",
		"PUBLIC_URL=http://" + addr,
		"METRICS_ADDR=off",
	}
	dir := t.TempDir()
	base := "http://" + addr
	api := newAPIClient(t)
	email := eventstest.UniqueEmail(t)

	first := start(t, dir, env, "userapi")
	waitHTTP(t, first, base+"/readyz", 90*time.Second)
	if st, _ := api.post(base+"/api/register", registerBody(email)); st != http.StatusAccepted {
		t.Fatalf("register: %d", st)
	}
	code := codeFromEvent(t, brokers, keys, email, 1)
	if st, _ := api.post(base+"/api/verify", verifyBody(email, code)); st != http.StatusOK {
		t.Fatalf("verify: %d", st)
	}
	if err := first.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-first.done:
		first.done <- err // for the cleanup, which waits for it too
	case <-time.After(30 * time.Second):
		t.Fatal("the user API did not stop on SIGTERM")
	}

	second := start(t, dir, env, "userapi")
	waitHTTP(t, second, base+"/readyz", 90*time.Second)
	if !strings.Contains(second.output(), "verified addresses loaded from the accounts log") {
		t.Errorf("the restarted user API does not say it loaded the accounts:\n%s", second.output())
	}
	time.Sleep(1100 * time.Millisecond)
	if st, _ := api.post(base+"/api/register", fmt.Sprintf(`{"email":%q,"first_name":"Mallory","last_name":"Evil"}`, email)); st != http.StatusAccepted {
		t.Fatalf("register of the account after the restart: %d, want 202", st)
	}
	if st, _ := api.post(base+"/api/verify", verifyBody(email, code)); st != http.StatusBadRequest {
		t.Errorf("the old code after the restart: %d, want 400", st)
	}
	if n := len(eventstest.CountTopic(t, brokers, events.TopicUserAccountCreated, 2*time.Second, eventstest.ByKey(email))); n != 1 {
		t.Errorf("%d user_account_created events, want 1: the restarted user API sent a code to an account", n)
	}

	// forget: a tombstone the running process follows, and the event.
	out, code2 := run(t, []string{"KAFKA_BROKERS=" + brokers}, "forget", strings.ToUpper(email))
	if code2 != 0 || !strings.Contains(out, "forgot "+email) {
		t.Fatalf("forget exited %d:\n%s", code2, out)
	}
	deleted := eventstest.ReadTopic(t, brokers, events.TopicUserAccountDeleted, 1, 30*time.Second, eventstest.ByKey(email))
	d, err := eventstest.Decode(t, deleted[0]).UserAccountDeleted()
	if err != nil || d.Email != email || d.UserID == "" {
		t.Errorf("user_account_deleted %+v, %v: want the address and its user id", d, err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		st, _ := api.post(base+"/api/register", registerBody(email))
		if st != http.StatusAccepted {
			t.Fatalf("register after forget: %d", st)
		}
		if n := len(eventstest.CountTopic(t, brokers, events.TopicUserAccountCreated, 2*time.Second, eventstest.ByKey(email))); n >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the address did not register as new after forget")
		}
		time.Sleep(1100 * time.Millisecond) // RESEND_INTERVAL, should a register land first
	}
	if st, _ := api.post(base+"/api/verify", verifyBody(email, codeFromEvent(t, brokers, keys, email, 2))); st != http.StatusOK {
		t.Errorf("verify after forget: %d, want 200", st)
	}
}

func TestForgetUsage(t *testing.T) {
	for _, args := range [][]string{{"forget"}, {"forget", "a@example.com", "b@example.com"}, {"forget", "--all"}} {
		out, code := run(t, nil, args...)
		if code != 2 || !strings.Contains(out, "Usage: countersign forget <address>") {
			t.Errorf("%v: exit %d, output %q; want 2 and the usage", args, code, out)
		}
	}
	out, code := run(t, nil, "forget", "-h")
	if code != 0 || !strings.Contains(out, "KAFKA_BROKERS") {
		t.Errorf("forget -h: exit %d:\n%s", code, out)
	}
	out, code = run(t, []string{"KAFKA_BROKERS=127.0.0.1:1"}, "forget", "not-an-address")
	if code != 2 || !strings.Contains(out, "not an e-mail address") {
		t.Errorf("forget not-an-address: exit %d:\n%s", code, out)
	}
}
