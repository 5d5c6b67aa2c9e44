package main_test

import (
	"context"
	"errors"
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
	"github.com/countersign/countersign/events/kafka"
	"github.com/countersign/countersign/mail/smtptest"
	"github.com/countersign/countersign/notifier"
)

// EnvSASLBrokers names a broker started by `scripts/kafka-local start
// --sasl` (SASL/SCRAM, ACLs, its fixed users): set, the least-privilege test
// runs on it and fails when it cannot reach it; unset, the test is skipped
// (.ci/run starts such a broker and sets it).
const EnvSASLBrokers = "KAFKA_SASL_TEST_BROKERS"

// saslConfig is the client configuration of one of kafka-local's users
// (password: the name followed by -secret).
func saslConfig(t *testing.T, brokers, user string) kafka.Config {
	return kafka.Config{Brokers: brokers, Logger: eventstest.Logger(t), Client: map[string]string{
		"security.protocol": "sasl_plaintext", "sasl.mechanisms": "SCRAM-SHA-512",
		"sasl.username": user, "sasl.password": user + "-secret",
	}}
}

func saslEnv(brokers, user string) []string {
	return []string{"KAFKA_BROKERS=" + brokers, "KAFKA_SECURITY_PROTOCOL=sasl_plaintext", "KAFKA_SASL_MECHANISMS=SCRAM-SHA-512",
		"KAFKA_SASL_USERNAME=" + user, "KAFKA_SASL_PASSWORD=" + user + "-secret"}
}

// TestLeastPrivilegeOnSASLBroker (issue 14): on a broker with SASL/SCRAM
// and ACLs, the services work with the ACLs of docs/security.md and no
// more (user API produces, notifier and recommender consume and mail, the
// notice to an account included), and
// a subscriber's principal cannot produce a user_account_verified: a forged
// "verified" event never reaches the topic.
func TestLeastPrivilegeOnSASLBroker(t *testing.T) {
	brokers := os.Getenv(EnvSASLBrokers)
	if brokers == "" {
		t.Skip(EnvSASLBrokers + " is not set: start a broker with `scripts/kafka-local start --sasl --port P` and set it to 127.0.0.1:P (.ci/run does)")
	}
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	admin := saslConfig(t, brokers, "admin")
	// Groups of this test's own, so reruns on one broker start clean.
	ntfGroup, recGroup := eventstest.UniqueGroup(t), eventstest.UniqueGroup(t)
	if err := kafka.EnsureTopics(ctx, admin, append(append([]string(nil), events.Topics...),
		kafka.DeadLetterTopic(ntfGroup), kafka.DeadLetterTopic(recGroup))...); err != nil {
		t.Fatalf("create the topics as admin on %s (%s): %v", brokers, EnvSASLBrokers, err)
	}
	var acls []ckafka.ACLBinding
	acls = append(acls, kafka.ProducerACLs("User:userapi", events.Topics...)...)
	// The accounts follower reads the verified topic directly (issue 13).
	acls = append(acls, kafka.AccountsReaderACLs("User:userapi", events.TopicUserAccountVerified)...)
	acls = append(acls, kafka.SubscriberACLs("User:notifier", ntfGroup, notifier.Topics...)...)
	acls = append(acls, kafka.SubscriberACLs("User:recommender", recGroup, events.TopicUserAccountVerified)...)
	if err := kafka.CreateACLs(ctx, admin, acls); err != nil {
		t.Fatal(err)
	}

	// A subscriber's principal cannot write a forged event.
	forged, err := events.NewUserAccountVerified(events.UserAccountVerified{
		UserID: "u-forged", Email: eventstest.UniqueEmail(t), FirstName: "Eve", LastName: "Forger", VerifiedAt: time.Now(),
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, user := range []string{"notifier", "recommender", "other"} {
		p, err := kafka.NewProducer(saslConfig(t, brokers, user))
		if err != nil {
			t.Fatal(err)
		}
		pctx, pcancel := context.WithTimeout(ctx, 20*time.Second)
		err = p.Publish(pctx, forged)
		pcancel()
		_ = p.Close(context.Background())
		var kerr ckafka.Error
		if err == nil {
			t.Errorf("%s produced a user_account_verified", user)
		} else if !errors.As(err, &kerr) || kerr.Code() != ckafka.ErrTopicAuthorizationFailed {
			// Refused either way; say how, in case it was for another reason.
			t.Logf("%s: refused with %v", user, err)
		}
	}

	// The services, each with its own principal.
	entry, err := events.GenerateKeyEntry()
	if err != nil {
		t.Fatal(err)
	}
	smtp := smtptest.Start(t)
	mailEnv := []string{"SMTP_HOST=127.0.0.1", "SMTP_PORT=" + strconv.Itoa(smtp.Port()), "SMTP_TLS=none", "LOG_LEVEL=info"}
	dir := t.TempDir()
	httpAddr, ntfOps, recOps := freeAddr(t), freeAddr(t), freeAddr(t)
	api := start(t, dir, append(saslEnv(brokers, "userapi"), "CODE_ENCRYPTION_KEYS="+entry, "HTTP_ADDR="+httpAddr, "PUBLIC_URL=http://"+httpAddr, "METRICS_ADDR=off", "LOG_LEVEL=info"), "userapi")
	ntf := start(t, dir, append(append(saslEnv(brokers, "notifier"), mailEnv...), "CODE_ENCRYPTION_KEYS="+entry, "NOTIFIER_GROUP_ID="+ntfGroup, "METRICS_ADDR="+ntfOps), "notifier")
	rec := start(t, dir, append(append(saslEnv(brokers, "recommender"), mailEnv...), "RECOMMENDER_GROUP_ID="+recGroup, "METRICS_ADDR="+recOps), "recommender")
	base := "http://" + httpAddr
	waitHTTP(t, api, base+"/readyz", 90*time.Second)
	waitHTTP(t, ntf, "http://"+ntfOps+"/readyz", 90*time.Second)
	waitHTTP(t, rec, "http://"+recOps+"/readyz", 90*time.Second)

	email := eventstest.UniqueEmail(t)
	if status, body := postJSON(t, base+"/api/register", fmt.Sprintf(`{"email":%q,"first_name":"Grace","last_name":"Hopper"}`, email)); status != http.StatusAccepted {
		t.Fatalf("register: %d %v", status, body)
	}
	text, err := waitMail(t, smtp, email, 1, 90*time.Second)[0].TextPart()
	if err != nil {
		t.Fatal(err)
	}
	m := codeRE.FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("no code in the mail:\n%s", text)
	}
	if status, body := postJSON(t, base+"/api/verify", fmt.Sprintf(`{"email":%q,"code":%q}`, email, m[1])); status != http.StatusOK {
		t.Fatalf("verify: %d %v", status, body)
	}
	// The notifier's "verified" mail and the recommender's "Getting started".
	mails := waitMail(t, smtp, email, 3, 90*time.Second)
	var subjects []string
	for _, ml := range mails {
		subjects = append(subjects, strings.ToLower(ml.Subject()))
	}
	if !strings.Contains(strings.Join(subjects, "|"), "verified") {
		t.Errorf("mails %q: no verified mail", subjects)
	}
	// Registering the account again: the user API writes
	// user_account_exists, the notifier reads it and mails the notice.
	if status, body := postJSON(t, base+"/api/register", fmt.Sprintf(`{"email":%q,"first_name":"Mallory","last_name":"Evil"}`, email)); status != http.StatusAccepted {
		t.Fatalf("register the account again: %d %v", status, body)
	}
	notice := waitMail(t, smtp, email, 4, 90*time.Second)
	found := false
	for _, ml := range notice {
		found = found || strings.Contains(strings.ToLower(ml.Subject()), "someone tried to register")
	}
	if !found {
		t.Errorf("no notice to the account among %d mails", len(notice))
	}
	for _, p := range []*proc{api, ntf, rec} {
		if out := p.output(); strings.Contains(out, "AUTHORIZATION_FAILED") || strings.Contains(out, "Authorization failed") {
			t.Errorf("a service was refused something it needs:\n%s", out)
		}
	}
}
