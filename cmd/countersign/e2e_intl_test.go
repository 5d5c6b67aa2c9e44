package main_test

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/events"
	"github.com/countersign/countersign/events/eventstest"
	"github.com/countersign/countersign/events/kafka"
	"github.com/countersign/countersign/mail/smtptest"
)

// Issue 20's "done when", in processes, against aiosmtpd (an SMTP server
// not written here) in both modes, with ALLOW_UTF8_LOCAL_PART at its
// default (true):
//   - without SMTPUTF8, li@例子.测试 receives its code (A-label envelope)
//     and verifies; josé@example.com is dead-lettered with dlq-error naming
//     SMTPUTF8, counted in countersign_notifier_undeliverable_total, and the
//     notifier warned at start, naming ALLOW_UTF8_LOCAL_PART;
//   - with SMTPUTF8, both receive their codes.
//
// And with ALLOW_UTF8_LOCAL_PART=false, the user API refuses josé@… with 400.
func TestInternationalAddressesEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	brokers := eventstest.Brokers(t)
	entry, err := events.GenerateKeyEntry()
	if err != nil {
		t.Fatal(err)
	}
	httpAddr := freeAddr(t)
	common := []string{"KAFKA_BROKERS=" + brokers, "CODE_ENCRYPTION_KEYS=" + entry, "LOG_LEVEL=info", "PUBLIC_URL=http://" + httpAddr}
	dir := t.TempDir()
	api := start(t, dir, append([]string{"HTTP_ADDR=" + httpAddr, "METRICS_ADDR=off"}, common...), "userapi")
	base := "http://" + httpAddr
	waitHTTP(t, api, base+"/readyz", 90*time.Second)

	for _, smtputf8 := range []bool{false, true} {
		t.Run(fmt.Sprintf("smtputf8=%v", smtputf8), func(t *testing.T) {
			relay := smtptest.StartAiosmtpd(t, smtputf8)
			group := eventstest.UniqueGroup(t)
			eventstest.GroupAtEnd(t, brokers, group)
			opsAddr := freeAddr(t)
			ntf := start(t, dir, append([]string{
				"NOTIFIER_GROUP_ID=" + group,
				"SMTP_HOST=127.0.0.1", "SMTP_PORT=" + strconv.Itoa(relay.Port()), "SMTP_TLS=none",
				"METRICS_ADDR=" + opsAddr,
			}, common...), "notifier")
			waitHTTP(t, ntf, "http://"+opsAddr+"/readyz", 90*time.Second)

			local := strings.Split(eventstest.UniqueEmail(t), "@")[0]
			li, liASCII := local+"@例子.测试", local+"@xn--fsqu00a.xn--0zwm56d"
			jose := "josé-" + local + "@example.com"
			for _, a := range []string{li, jose} {
				if status, body := postJSON(t, base+"/api/register", fmt.Sprintf(`{"email":%q,"first_name":"李","last_name":"雷"}`, a)); status != http.StatusAccepted {
					t.Fatalf("register: %d %v", status, body)
				}
			}

			liRcpt := liASCII
			if smtputf8 {
				liRcpt = li
			}
			code := codeIn(t, aiosmtpdMail(t, relay, liRcpt))
			if status, body := postJSON(t, base+"/api/verify", fmt.Sprintf(`{"email":%q,"code":%q}`, li, code)); status != http.StatusOK {
				t.Fatalf("verify the IDN address with its mailed code: %d %v", status, body)
			}

			if smtputf8 {
				m := aiosmtpdMail(t, relay, jose)
				if !m.SMTPUTF8 {
					t.Error("the mail to a non-ASCII local part went without SMTPUTF8")
				}
				codeIn(t, m)
				if strings.Contains(ntf.output(), "does not announce SMTPUTF8") {
					t.Error("the notifier warned about a relay that has SMTPUTF8")
				}
				return
			}
			dl := eventstest.ReadTopic(t, brokers, kafka.DeadLetterTopic(group), 1, 60*time.Second, eventstest.ByKey(jose))[0]
			if reason, _ := eventstest.Header(dl, kafka.HeaderDLQError); !strings.Contains(reason, "SMTPUTF8") || strings.Contains(reason, "jos") {
				t.Errorf("dlq-error %q: want SMTPUTF8 named, and no address", reason)
			}
			if v := metricLine(t, "http://"+opsAddr+"/metrics", `countersign_notifier_undeliverable_total{reason="smtputf8"}`); v != "1" {
				t.Errorf("countersign_notifier_undeliverable_total{reason=\"smtputf8\"} = %q, want 1", v)
			}
			out := ntf.output()
			if !strings.Contains(out, "does not announce SMTPUTF8") || !strings.Contains(out, "ALLOW_UTF8_LOCAL_PART") {
				t.Errorf("the notifier did not warn about the relay naming ALLOW_UTF8_LOCAL_PART:\n%s", out)
			}
			if strings.Contains(out, "jos") || strings.Contains(out, local) {
				t.Error("the notifier's output names an address")
			}
		})
	}

	t.Run("ALLOW_UTF8_LOCAL_PART=false", func(t *testing.T) {
		strictAddr := freeAddr(t)
		strict := start(t, dir, append([]string{"HTTP_ADDR=" + strictAddr, "METRICS_ADDR=off", "ALLOW_UTF8_LOCAL_PART=false"}, common...), "userapi")
		waitHTTP(t, strict, "http://"+strictAddr+"/readyz", 90*time.Second)
		local := strings.Split(eventstest.UniqueEmail(t), "@")[0]
		status, body := postJSON(t, "http://"+strictAddr+"/api/register", fmt.Sprintf(`{"email":%q,"first_name":"José","last_name":"L"}`, "josé-"+local+"@example.com"))
		if detail, _ := body["detail"].(string); status != http.StatusBadRequest || !strings.Contains(detail, "non-ASCII characters before the @ cannot receive mail here") {
			t.Errorf("register josé@… with ALLOW_UTF8_LOCAL_PART=false: %d %v", status, body)
		}
		if status, body := postJSON(t, "http://"+strictAddr+"/api/register", fmt.Sprintf(`{"email":%q,"first_name":"李","last_name":"雷"}`, local+"@例子.测试")); status != http.StatusAccepted {
			t.Errorf("register an IDN domain with ALLOW_UTF8_LOCAL_PART=false: %d %v", status, body)
		}
	})
}

// aiosmtpdMail waits for the mail whose envelope recipient is rcpt.
func aiosmtpdMail(t *testing.T, relay *smtptest.Aiosmtpd, rcpt string) smtptest.Received {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		msgs, err := relay.Messages()
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			if len(m.To) == 1 && m.To[0] == rcpt {
				return m
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no mail to %s after 60s (%d mails)", rcpt, len(msgs))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func codeIn(t *testing.T, m smtptest.Received) string {
	t.Helper()
	text, err := m.TextPart()
	if err != nil {
		t.Fatal(err)
	}
	c := codeRE.FindStringSubmatch(text)
	if c == nil {
		t.Fatalf("no code in the mail:\n%s", text)
	}
	return c[1]
}

// metricLine polls a /metrics page until the sample named series appears
// with a value other than 0, and returns its value.
func metricLine(t *testing.T, url, series string) string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	last := ""
	for time.Now().Before(deadline) {
		resp, err := http.Get(url)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			for _, line := range strings.Split(string(b), "\n") {
				if v, ok := strings.CutPrefix(line, series+" "); ok {
					last = v
				}
			}
			if last != "" && last != "0" {
				return last
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return last
}
