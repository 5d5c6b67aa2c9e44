package platform

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/countersign/countersign/userapi"
	"github.com/countersign/countersign/userapi/redistest"
)

func TestPendingStoreSetting(t *testing.T) {
	ctx := context.Background()
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	for _, v := range []string{"", "memory", " memory "} {
		s, err := openPendingStore(ctx, v, logger)
		if err != nil {
			t.Fatalf("PENDING_STORE=%q: %v", v, err)
		}
		if _, ok := s.Store.(*userapi.MemoryStore); !ok || s.ping != nil {
			t.Errorf("PENDING_STORE=%q: %T, want the memory store", v, s.Store)
		}
		s.close()
	}
	for _, v := range []string{"postgres://u:s3cret@db/x", "redis://:s3cret@host:port/0", "redis://:s3cret@host/notadb", "mem"} {
		_, err := openPendingStore(ctx, v, logger)
		if err == nil {
			t.Errorf("PENDING_STORE=%s accepted", v)
			continue
		}
		if !strings.Contains(err.Error(), "PENDING_STORE") || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("PENDING_STORE=%s: error %q should name the setting and hide the password", v, err)
		}
	}

	srv := redistest.Start(t, redistest.WithPassword("s3cret"))
	s, err := openPendingStore(ctx, srv.URL(), logger)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	if _, ok := s.Store.(*userapi.RedisStore); !ok {
		t.Fatalf("%T, want the Redis store", s.Store)
	}
	if err := s.ready(func(context.Context) error { return nil })(ctx); err != nil {
		t.Errorf("ready: %v", err)
	}
	if strings.Contains(s.desc, "s3cret") || !strings.Contains(s.desc, srv.Addr()) {
		t.Errorf("description %q: want the address without the password", s.desc)
	}
	srv.Stop()
	if err := s.ready(func(context.Context) error { return nil })(ctx); err == nil {
		t.Error("ready with Redis down")
	}
	if strings.Contains(logs.String(), "s3cret") {
		t.Errorf("the password is in the logs:\n%s", logs.String())
	}
}
