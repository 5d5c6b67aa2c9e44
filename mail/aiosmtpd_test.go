package mail_test

import (
	"testing"
	"time"

	"github.com/countersign/countersign/mail/smtptest"
)

func aiosmtpdRelay(t *testing.T, smtputf8 bool) relay {
	srv := smtptest.StartAiosmtpd(t, smtputf8)
	return relay{
		host: srv.Host(), port: srv.Port(), smtputf8: smtputf8,
		// The handler writes its file before it answers 250, so once Send
		// returned the mail is there; the deadline is only a guard.
		wait: func(t *testing.T, n int) []smtptest.Received {
			t.Helper()
			msgs, err := srv.WaitForMessages(n, 30*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			return msgs
		},
		count: func() int {
			msgs, err := srv.Messages()
			if err != nil {
				t.Fatal(err)
			}
			return len(msgs)
		},
	}
}

// The contract of issue 20 against an SMTP server written by others, in its
// strict ASCII mode (the default: "500 Error: strict ASCII mode" for any
// non-ASCII address) and with --smtputf8.
func TestInternationalAddressesAiosmtpd(t *testing.T) {
	t.Run("without SMTPUTF8", func(t *testing.T) { testInternationalAddresses(t, aiosmtpdRelay(t, false)) })
	t.Run("with SMTPUTF8", func(t *testing.T) { testInternationalAddresses(t, aiosmtpdRelay(t, true)) })
}
