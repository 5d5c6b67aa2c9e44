package main

import (
	"strings"
	"testing"
)

// ALLOW_UTF8_LOCAL_PART is read for the mail senders too: while it is true
// (the default), a relay without SMTPUTF8 is warned about.
func TestAllowUTF8LocalPartForTheMailSenders(t *testing.T) {
	for v, want := range map[string]bool{"": true, "true": true, "false": false, "0": false} {
		c, _, err := smtpConfigFromEnv(func(k string) string {
			if k == "ALLOW_UTF8_LOCAL_PART" {
				return v
			}
			return ""
		})
		if err != nil {
			t.Fatalf("%q: %v", v, err)
		}
		if c.WarnWithoutSMTPUTF8 != want {
			t.Errorf("ALLOW_UTF8_LOCAL_PART=%q: WarnWithoutSMTPUTF8 %v, want %v", v, c.WarnWithoutSMTPUTF8, want)
		}
	}
	_, _, err := smtpConfigFromEnv(func(k string) string {
		if k == "ALLOW_UTF8_LOCAL_PART" {
			return "maybe"
		}
		return ""
	})
	if err == nil || !strings.Contains(err.Error(), "ALLOW_UTF8_LOCAL_PART") {
		t.Errorf("error %v does not name ALLOW_UTF8_LOCAL_PART", err)
	}
}
