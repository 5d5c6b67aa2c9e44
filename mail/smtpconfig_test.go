package mail_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/mail"
)

func TestSMTPConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  mail.SMTPConfig
		// wantErr are substrings of the error; none means valid.
		wantErr []string
	}{
		{name: "zero value selects the outbox", cfg: mail.SMTPConfig{}},
		{name: "host only", cfg: mail.SMTPConfig{Host: "smtp.example.com"}},
		{name: "full", cfg: mail.SMTPConfig{
			Host: "smtp.example.com", Port: 2525, Username: "u", Password: "p",
			TLS: mail.TLSMandatory, From: "A <a@example.com>", Timeout: time.Second,
		}},
		{name: "ipv6 loopback", cfg: mail.SMTPConfig{Host: "::1"}},
		{name: "host with port", cfg: mail.SMTPConfig{Host: "smtp.example.com:25"}, wantErr: []string{"SMTP_HOST", "SMTP_PORT"}},
		{name: "host with scheme", cfg: mail.SMTPConfig{Host: "smtp://smtp.example.com"}, wantErr: []string{"SMTP_HOST"}},
		{name: "port", cfg: mail.SMTPConfig{Host: "h", Port: 70000}, wantErr: []string{"SMTP_PORT", "70000"}},
		{name: "tls", cfg: mail.SMTPConfig{Host: "h", TLS: "starttls"},
			wantErr: []string{"SMTP_TLS", "mandatory, opportunistic, none", `"starttls"`}},
		{name: "password without user", cfg: mail.SMTPConfig{Host: "h", Password: "p"}, wantErr: []string{"SMTP_USERNAME"}},
		{name: "user without password", cfg: mail.SMTPConfig{Host: "h", Username: "u"}, wantErr: []string{"SMTP_PASSWORD"}},
		{name: "credentials in clear text", cfg: mail.SMTPConfig{Host: "smtp.example.com", Username: "u", Password: "p", TLS: mail.TLSNone},
			wantErr: []string{"SMTP_TLS=none"}},
		{name: "credentials in clear text to loopback", cfg: mail.SMTPConfig{Host: "localhost", Username: "u", Password: "p", TLS: mail.TLSNone}},
		{name: "from", cfg: mail.SMTPConfig{From: "countersign"}, wantErr: []string{"MAIL_FROM"}},
		{name: "timeout", cfg: mail.SMTPConfig{Timeout: -time.Second}, wantErr: []string{"SMTP_TIMEOUT"}},
		{name: "all problems at once", cfg: mail.SMTPConfig{Host: "h", Port: -1, TLS: "x", From: "y"},
			wantErr: []string{"SMTP_PORT", "SMTP_TLS", "MAIL_FROM"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate() = nil, want an error")
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestSMTPConfigNeverShowsPassword(t *testing.T) {
	cfg := mail.SMTPConfig{Host: "smtp.example.com", Username: "mailer", Password: testPassword}

	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("config", slog.Any("smtp", cfg))
	for _, out := range []string{buf.String(), fmt.Sprintf("%v", cfg), fmt.Sprintf("%+v", cfg), fmt.Sprint(&cfg)} {
		if strings.Contains(out, testPassword) {
			t.Errorf("password printed: %s", out)
		}
		if !strings.Contains(out, "smtp.example.com") || !strings.Contains(out, "[redacted]") {
			t.Errorf("config not shown with the password redacted: %s", out)
		}
	}
}
