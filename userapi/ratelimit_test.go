package userapi

import (
	"net/http/httptest"
	"net/netip"
	"strings"
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
	proxies := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.7/32")}
	for _, tc := range []struct {
		remote, xff string
		trusted     []netip.Prefix
		want        string
	}{
		{"192.0.2.7:5555", "", nil, "192.0.2.7/32"},
		// No trusted proxies: the header is ignored.
		{"192.0.2.7:5555", "203.0.113.9", nil, "192.0.2.7/32"},
		// A peer that is not a trusted proxy: the header is ignored.
		{"198.51.100.50:5555", "203.0.113.9", proxies, "198.51.100.50/32"},
		// One trusted proxy: its entry, the rightmost, is the client.
		{"192.0.2.7:5555", "198.51.100.1, 203.0.113.9", proxies, "203.0.113.9/32"},
		// Two proxies: the inner one's own hop is skipped.
		{"10.0.0.2:5555", "203.0.113.9, 10.0.0.1", proxies, "203.0.113.9/32"},
		// The same in two header lines.
		{"10.0.0.2:5555", "203.0.113.9\n10.0.0.1", proxies, "203.0.113.9/32"},
		// Whatever the client wrote is left of what the proxy appended.
		{"192.0.2.7:5555", "10.0.0.5, 1.2.3.4, 203.0.113.9", proxies, "203.0.113.9/32"},
		// Only proxies in the header: the leftmost.
		{"10.0.0.2:5555", "10.0.0.9, 10.0.0.1", proxies, "10.0.0.9/32"},
		// Garbage appended by a proxy: the last trusted hop.
		{"192.0.2.7:5555", "not-an-ip", proxies, "192.0.2.7/32"},
		{"[2001:db8:1:2:3:4:5:6]:443", "", nil, "2001:db8:1:2::/64"},
		{"[2001:db8:1:2:ffff::1]:443", "", nil, "2001:db8:1:2::/64"},
		{"[::ffff:192.0.2.7]:80", "", nil, "192.0.2.7/32"},
		{"[::ffff:10.0.0.2]:80", "2001:db8::1", proxies, "2001:db8::/64"},
		{"[fe80::1%eth0]:80", "", nil, "fe80::/64"},
	} {
		r := httptest.NewRequest("POST", "/api/register", nil)
		r.RemoteAddr = tc.remote
		for _, v := range strings.Split(tc.xff, "\n") {
			if v != "" {
				r.Header.Add("X-Forwarded-For", v)
			}
		}
		if got := clientKey(r, tc.trusted).String(); got != tc.want {
			t.Errorf("remote %s xff %q trusted %v: key %s, want %s", tc.remote, tc.xff, tc.trusted, got, tc.want)
		}
	}
}

// TestIPLimiterBound is the flood of distinct clients: past the bound the
// least recently seen is forgotten, and a client that keeps coming back
// keeps its spent budget.
func TestIPLimiterBound(t *testing.T) {
	l := newIPLimiter(60, 3)
	l.max = 1000
	now := time.Now()
	regular := netip.MustParsePrefix("192.0.2.1/32")
	for range 3 {
		l.allow(regular, now)
	}
	for i := range 5000 {
		l.allow(netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32), now)
		if n := l.len(); n > l.max {
			t.Fatalf("%d limiters, bound %d", n, l.max)
		}
		if i%500 == 0 {
			if ok, _ := l.allow(regular, now); ok {
				t.Fatalf("after %d other clients the regular client's spent budget was forgotten", i+1)
			}
		}
	}
}

// BenchmarkIPLimiterNewClientsAtBound is a request from a new client once
// the bound's worth of clients were seen within the refill time.
func BenchmarkIPLimiterNewClientsAtBound(b *testing.B) {
	l := newIPLimiter(60, 10)
	now := time.Now()
	key := func(i int) netip.Prefix {
		return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32)
	}
	for i := range maxLimiters {
		l.allow(key(i), now)
	}
	b.ResetTimer()
	for i := range b.N {
		l.allow(key(maxLimiters+i), now)
	}
}
