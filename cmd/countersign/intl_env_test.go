package main

import (
	"strings"
	"testing"
)

// ALLOW_UTF8_LOCAL_PART reaches both the user API (which refuses such
// addresses when false) and the mail senders (which, while it is true, warn
// about a relay without SMTPUTF8).
func TestAllowUTF8LocalPart(t *testing.T) {
	for v, asciiOnly := range map[string]bool{"": false, "true": false, "false": true, "0": true} {
		c, err := parseSettings(concat(userapiSettings, mailSettings), map[string]string{"ALLOW_UTF8_LOCAL_PART": v})
		if err != nil {
			t.Fatalf("%q: %v", v, err)
		}
		if c.UserAPI.ASCIILocalPartOnly != asciiOnly || c.SMTP.ASCIILocalPartOnly != asciiOnly {
			t.Errorf("ALLOW_UTF8_LOCAL_PART=%q: user API %v, mail %v, want both %v", v, c.UserAPI.ASCIILocalPartOnly, c.SMTP.ASCIILocalPartOnly, asciiOnly)
		}
	}
	_, err := parseSettings(userapiSettings, map[string]string{"ALLOW_UTF8_LOCAL_PART": "maybe"})
	if err == nil || !strings.Contains(err.Error(), `ALLOW_UTF8_LOCAL_PART="maybe": want true or false`) {
		t.Errorf("error %v does not name ALLOW_UTF8_LOCAL_PART", err)
	}
}
