package userapi

import (
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"
)

func TestIPLimiter(t *testing.T) {
	l := newIPLimiter(60, 3)
	now := time.Now()
	a, b := netip.MustParsePrefix("192.0.2.1/32"), netip.MustParsePrefix("192.0.2.2/32")
	for i := 0; i < 3; i++ {
		if ok, _ := l.allow(a, now); !ok {
			t.Fatalf("request %d within the burst refused", i+1)
		}
	}
	ok, wait := l.allow(a, now)
	if ok || wait <= 0 || wait > time.Second {
		t.Fatalf("4th request: allowed %v, wait %v; want refused for up to 1s at 60/min", ok, wait)
	}
	if ok, _ := l.allow(b, now); !ok {
		t.Error("another client was limited by the first one's requests")
	}
	if ok, _ := l.allow(a, now.Add(time.Second)); !ok {
		t.Error("no token after a second at 60/min")
	}
	// A refused request does not spend a token.
	if ok, _ := l.allow(a, now.Add(time.Second)); ok {
		t.Error("more than one token refilled in a second")
	}
	if ok, _ := l.allow(a, now.Add(2*time.Second)); !ok {
		t.Error("the refusal spent the next token")
	}
}

func TestIPLimiterForgetsIdleClients(t *testing.T) {
	l := newIPLimiter(60, 3)
	now := time.Now()
	for i := 0; i < 100; i++ {
		l.allow(netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), 32), now)
	}
	if l.len() != 100 {
		t.Fatalf("len %d", l.len())
	}
	// After the refill time, a new client triggers a sweep of the others.
	l.allow(netip.MustParsePrefix("10.1.0.0/32"), now.Add(l.idle+time.Second))
	if l.len() != 1 {
		t.Errorf("%d limiters after every other one went idle, want 1", l.len())
	}
}

func TestClientKey(t *testing.T) {
	for _, tc := range []struct {
		remote, xff string
		trust       bool
		want        string
	}{
		{"192.0.2.7:5555", "", false, "192.0.2.7/32"},
		{"192.0.2.7:5555", "203.0.113.9", false, "192.0.2.7/32"},
		{"192.0.2.7:5555", "198.51.100.1, 203.0.113.9", true, "203.0.113.9/32"},
		{"192.0.2.7:5555", "not-an-ip", true, "192.0.2.7/32"},
		{"[2001:db8:1:2:3:4:5:6]:443", "", false, "2001:db8:1:2::/64"},
		{"[2001:db8:1:2:ffff::1]:443", "", false, "2001:db8:1:2::/64"},
		{"[::ffff:192.0.2.7]:80", "", false, "192.0.2.7/32"},
		{"[fe80::1%eth0]:80", "", false, "fe80::/64"},
	} {
		r := httptest.NewRequest("POST", "/api/register", nil)
		r.RemoteAddr = tc.remote
		if tc.xff != "" {
			r.Header.Set("X-Forwarded-For", tc.xff)
		}
		if got := clientKey(r, tc.trust).String(); got != tc.want {
			t.Errorf("remote %s xff %q trust %v: key %s, want %s", tc.remote, tc.xff, tc.trust, got, tc.want)
		}
	}
}
