package notifier_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/countersign/countersign/events"
	"github.com/countersign/countersign/events/eventstest"
	"github.com/countersign/countersign/events/kafka"
	"github.com/countersign/countersign/mail"
	"github.com/countersign/countersign/mail/smtptest"
	"github.com/countersign/countersign/notifier"
	"github.com/countersign/countersign/templates"
)

// BenchmarkNotifierThroughput measures one notifier process (one consumer,
// the SMTP sender's one reused connection) mailing verification codes to a
// local SMTP server over the broker (embedded, or KAFKA_TEST_BROKERS).
//
// b.N user_account_created events are published before the notifier starts,
// so the notifier always has work and nothing else competes for the CPU. The
// clock starts at the first mail (the group join and the SMTP dial are
// behind it) and stops at the last; mails/s is the figure the goal
// (≥ 1,000 mails/s) is about. Run:
//
//	go test -run '^$' -bench NotifierThroughput -benchtime 5000x ./notifier/
func BenchmarkNotifierThroughput(b *testing.B) {
	brokers := eventstest.Brokers(b)
	kcfg := eventstest.Config(b, brokers)
	srv := smtptest.Start(b)
	keys, err := events.NewRandomKeyring()
	if err != nil {
		b.Fatal(err)
	}
	tpl, err := templates.Load("")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := kafka.EnsureTopics(ctx, kcfg, events.Topics...); err != nil {
		b.Fatal(err)
	}
	group := eventstest.UniqueGroup(b)
	// A real cluster has history: the group starts after it.
	if err := kafka.StartAtEnd(ctx, kcfg, group, events.Topics...); err != nil {
		b.Fatal(err)
	}
	publishCreated(b, kcfg, keys, b.N)

	sender, err := mail.NewSMTPSender(mail.SMTPConfig{
		Host: srv.Host(), Port: srv.Port(), TLS: mail.TLSNone, From: "Countersign <no-reply@countersign.test>",
	}, eventstest.Logger(b))
	if err != nil {
		b.Fatal(err)
	}
	defer sender.Close()
	n, err := notifier.New(notifier.Config{WorkerConfig: kafka.WorkerConfig{GroupID: group}}, notifier.Deps{
		Kafka: kcfg, Keyring: keys, Templates: tpl, Sender: sender, Logger: eventstest.Logger(b),
	})
	if err != nil {
		b.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(runCtx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			b.Error(err)
		}
	}()

	timeout := 30*time.Second + time.Duration(b.N)*5*time.Millisecond
	if _, err := srv.WaitForMessages(1, timeout); err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	b.ResetTimer()
	if _, err := srv.WaitForMessages(b.N, timeout); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	if b.N > 1 {
		b.ReportMetric(float64(b.N-1)/time.Since(start).Seconds(), "mails/s")
	}
}

// publishCreated publishes n user_account_created events for distinct
// addresses, 64 at a time, as the user API's concurrent requests would.
func publishCreated(b *testing.B, kcfg kafka.Config, keys *events.Keyring, n int) {
	b.Helper()
	p, err := kafka.NewProducer(kcfg)
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = p.Close(ctx)
	}()
	suffix := eventstest.Suffix()
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	next := make(chan int)
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				email := fmt.Sprintf("bench-%s-%d@example.com", suffix, i)
				userID := fmt.Sprintf("00000000-0000-4000-8000-%012d", i)
				cd := events.UserAccountCreated{
					UserID: userID, Email: email, FirstName: "Ada", LastName: "Lovelace",
					ExpiresAt: time.Now().Add(time.Hour),
				}
				sealed, err := keys.Seal("123456", cd)
				if err != nil {
					errs <- err
					return
				}
				cd.EncryptedCode = sealed
				e, err := events.NewUserAccountCreated(cd)
				if err == nil {
					ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
					err = p.Publish(ctx, e)
					cancel()
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		select {
		case next <- i:
		case err := <-errs:
			close(next)
			wg.Wait()
			b.Fatal(err)
		}
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
}
