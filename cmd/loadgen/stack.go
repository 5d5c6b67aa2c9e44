package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/countersign/countersign/cmd/internal/platform"
	"github.com/countersign/countersign/events"
	"github.com/countersign/countersign/events/embedded"
	"github.com/countersign/countersign/events/kafka"
	"github.com/countersign/countersign/mail"
	"github.com/countersign/countersign/notifier"
	"github.com/countersign/countersign/userapi"
)

// stack is the platform run in this process, built by the constructors
// `countersign dev` uses (package platform): a broker (embedded unless
// -brokers), the user API with its idempotent acks=all producer, its memory
// store and the rate limit off, and, when a phase needs mail, the notifier
// sending to the sink over SMTP.
type stack struct {
	logger *slog.Logger
	broker *embedded.Broker
	cfg    platform.Config
	api    *platform.UserAPI
	url    string

	notifierCancel context.CancelFunc
	notifierDone   chan error
	mail           *platform.Mail
}

func startStack(ctx context.Context, brokers string, client map[string]string, noBroker bool, logger *slog.Logger) (*stack, error) {
	s := &stack{logger: logger}
	ok := false
	defer func() {
		if !ok {
			s.close()
		}
	}()
	if brokers == "" {
		b, err := embedded.Start("127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		s.broker = b
		brokers = b.Addr()
	}
	s.cfg = platform.Config{
		Kafka:   kafka.Config{Brokers: brokers, Client: client, Logger: logger},
		UserAPI: userapi.Config{HTTPAddr: "127.0.0.1:0", RateLimitPerIP: userapi.RateLimitOff},
		Logger:  logger,
	}
	var err error
	if s.cfg.Keys, err = events.NewRandomKeyring(); err != nil {
		return nil, err
	}
	if err := platform.EnsureTopics(ctx, s.cfg.Kafka, events.Topics...); err != nil {
		return nil, err
	}
	// As cmd/countersign does (the same constructor): librdkafka gives up
	// on a record when the API does (PUBLISH_TIMEOUT, default 10s).
	s.api, err = platform.NewUserAPI(ctx, s.cfg, nil, func(d *userapi.Deps) {
		if noBroker {
			d.Publisher = marshalOnly{}
		}
	})
	if err != nil {
		return nil, err
	}
	if err := s.api.Open(); err != nil {
		return nil, err
	}
	s.url = "http://" + s.api.Addr()
	// The first publish waits for the broker connection, the idempotent
	// producer's id and, on a cluster that has just created the topics, the
	// partition leaders (seen: no register of a 300 ms phase succeeding on a
	// fresh Apache Kafka). Pay that now, not in the first measured request.
	if err := s.warmUp(ctx); err != nil {
		return nil, err
	}
	ok = true
	return s, nil
}

// warmUp publishes one event, retrying until the broker acknowledges it (at
// most 60s). Its address is in the reserved .invalid domain: no subscriber
// can deliver mail to it.
func (s *stack) warmUp(ctx context.Context) error {
	e, err := events.NewUserAccountVerified(events.UserAccountVerified{
		UserID: "loadgen-warmup", Email: "warmup@loadgen.invalid", FirstName: "Load", LastName: "Generator", VerifiedAt: time.Now(),
	})
	if err != nil {
		return err
	}
	err = platform.WaitFor(ctx, 60*time.Second, 200*time.Millisecond, func(ctx context.Context) error {
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		return s.api.Producer.Publish(pctx, e)
	})
	if err != nil {
		return fmt.Errorf("warm-up publish: %w", err)
	}
	return nil
}

// startNotifier starts the notifier in a consumer group of its own,
// mailing to the sink. The group starts at the end of the topics: mails for
// events published before (by an earlier phase) are not its business.
func (s *stack) startNotifier(ctx context.Context, cfg notifier.Config, sk *sink) error {
	if err := kafka.StartAtEnd(ctx, s.cfg.Kafka, cfg.GroupID, events.Topics...); err != nil {
		return fmt.Errorf("position notifier group: %w", err)
	}
	ncfg := s.cfg
	ncfg.Notifier = cfg
	ncfg.SMTP = mail.SMTPConfig{Host: sk.host(), Port: sk.port(), TLS: mail.TLSNone, From: "Countersign <no-reply@countersign.test>"}
	m, err := platform.NewMail(ncfg)
	if err != nil {
		return err
	}
	n, err := platform.NewNotifier(ncfg, m, nil)
	if err != nil {
		_ = m.Close()
		return err
	}
	nctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.mail, s.notifierCancel, s.notifierDone = m, cancel, make(chan error, 1)
	go func() { s.notifierDone <- n.Run(nctx) }()
	return nil
}

func (s *stack) close() {
	if s.api != nil {
		_ = s.api.Close()
	}
	if s.notifierCancel != nil {
		s.notifierCancel()
		<-s.notifierDone
		_ = s.mail.Close()
	}
	if s.broker != nil {
		s.broker.Close()
	}
}

// ceilingRequest has the fields of userapi.RegisterRequest: the ceiling
// decodes the same JSON into the same shape, and does nothing else with it.
type ceilingRequest struct {
	Email     string `json:"email"`
	FirstName string `json:"first_name"`
	LastName  string `json:"last_name"`
}

// startCeiling serves the bare handler that bounds what any register
// handler can reach on this machine with this generator: net/http, decode
// the same JSON, answer 202 with a body of the same size as the real one.
func startCeiling() (url string, stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	body := []byte(`{"status":"pending_verification","expires_at":"2026-01-01T00:00:00.000000000Z"}` + "\n")
	verified := []byte(`{"status":"verified"}` + "\n")
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/verify" {
			// The cost mode's verify workload: the same shape for verify.
			var req ceilingVerify
			if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&req); err != nil || req.Email == "" || req.Code == "" {
				http.Error(w, "bad request", http.StatusBadRequest)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write(verified)
			return
		}
		var req ceilingRequest
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&req); err != nil || req.Email == "" {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		_, _ = w.Write(body)
	})
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return "http://" + ln.Addr().String(), func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, nil
}

// marshalOnly is the -diagnose-no-broker publisher: it encodes the event as
// the producer would and acknowledges it at once. It breaks the guarantee
// the register goal is about (acks=all before the 202) and exists only to
// tell how much of a request's cost is the producer and the broker.
type marshalOnly struct{}

func (marshalOnly) Publish(_ context.Context, e events.Event) error {
	_, err := e.Marshal()
	return err
}
