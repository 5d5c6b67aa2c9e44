package platform

import (
	"context"
	"maps"
	"strconv"

	"github.com/countersign/countersign/events/kafka"
	"github.com/countersign/countersign/templates"
	"github.com/countersign/countersign/userapi"
)

// UserAPI is the user API with what it holds: its producer and its pending
// store. Open listens; Close drains HTTP, then flushes the producer and
// closes the store.
type UserAPI struct {
	*userapi.Server
	Producer *kafka.Producer
	// Store describes the pending store for the start-up log line, without
	// a password.
	Store    string
	store    *pendingStore
	accounts *accountsFollower
	closed   bool
	cfg      Config
}

// NewUserAPI builds the user API of cfg: a producer whose delivery timeout
// is the API's PUBLISH_TIMEOUT, the pending store PendingStore names
// (waiting up to StartTimeout for Redis), a follower of the accounts log
// (user_account_verified) that loads the verified addresses into the store
// (the server answers 503 until it has), and the server, registering its
// metrics with reg (nil: a registry of its own), countersign_ready among
// them. The topics must exist
// (EnsureTopics). deps, when given, adjust the server's dependencies before
// it is built: cmd/loadgen swaps the publisher this way.
func NewUserAPI(ctx context.Context, cfg Config, reg userapi.Registry, deps ...func(*userapi.Deps)) (*UserAPI, error) {
	// A wrong setting is reported before anything waits for Redis.
	if err := cfg.UserAPI.WithDefaults().Validate(); err != nil {
		return nil, err
	}
	if _, err := parsePendingStore(cfg.PendingStore); err != nil {
		return nil, err
	}
	pcfg := cfg.Kafka
	pcfg.Client = maps.Clone(cfg.Kafka.Client)
	alignDeliveryTimeout(&pcfg, cfg.UserAPI)
	producer, err := kafka.NewProducer(pcfg)
	if err != nil {
		return nil, err
	}
	a := &UserAPI{Producer: producer, cfg: cfg}
	if a.store, err = openPendingStore(ctx, cfg.PendingStore, cfg.logger()); err != nil {
		_ = a.Close()
		return nil, err
	}
	a.Store = a.store.desc
	// The verified addresses are loaded from the accounts log before the
	// API answers (Deps.AccountsLoaded), and followed afterwards.
	a.accounts = followAccounts(cfg.Kafka, a.store.Store, cfg.logger())
	d := userapi.Deps{
		Publisher: producer, Keyring: cfg.Keys, Store: a.store.Store, NewRateLimiter: a.store.newRateLimiter, NewMailBudget: a.store.newMailBudget,
		Ready: a.store.ready(producer.Ping), AccountsLoaded: a.accounts.loaded, Logger: cfg.logger(), Registry: reg,
	}
	if cfg.UserAPI.Pages {
		// The pages from TEMPLATES_DIR over the embedded ones, with the brand.
		brand := cfg.Brand
		brand.PublicURL = cfg.UserAPI.PublicURL
		if d.Pages, err = templates.LoadPages(cfg.TemplatesDir, brand); err != nil {
			_ = a.Close()
			return nil, err
		}
	}
	for _, f := range deps {
		f(&d)
	}
	if a.Server, err = userapi.NewServer(cfg.UserAPI, d); err != nil {
		_ = a.Close()
		return nil, err
	}
	if reg != nil {
		if err := RegisterReady(reg, d.Ready); err != nil {
			_ = a.Close()
			return nil, err
		}
	}
	return a, nil
}

// Close drains HTTP (for up to ShutdownTimeout), then flushes the producer
// (as long again) and closes the store. It returns the server's error.
func (a *UserAPI) Close() error {
	if a.closed {
		return nil
	}
	a.closed = true
	var err error
	if a.Server != nil {
		ctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
		err = a.Server.Close(ctx)
		cancel()
	}
	ctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
	defer cancel()
	if a.accounts != nil {
		a.accounts.stop()
	}
	if perr := a.Producer.Close(ctx); perr != nil {
		a.cfg.logger().Error("close producer", "err", perr)
	}
	if a.store != nil {
		a.store.close()
	}
	return err
}

// alignDeliveryTimeout makes librdkafka give up on an event when the user
// API does: a 503 after PUBLISH_TIMEOUT then means "not delivered" rather
// than "maybe delivered later" (an in-flight request can still land). An
// explicit KAFKA_MESSAGE_TIMEOUT_MS wins.
func alignDeliveryTimeout(kcfg *kafka.Config, cfg userapi.Config) {
	if _, set := kcfg.Client["message.timeout.ms"]; set {
		return
	}
	d := cfg.PublishTimeout
	if d == 0 {
		d = userapi.DefaultPublishTimeout
	}
	if kcfg.Client == nil {
		kcfg.Client = map[string]string{}
	}
	kcfg.Client["message.timeout.ms"] = strconv.FormatInt(d.Milliseconds(), 10)
}
