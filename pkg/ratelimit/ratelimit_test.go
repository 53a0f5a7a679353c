package ratelimit

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestAddressKey(t *testing.T) {
	for _, tc := range []struct {
		name, addr, want string
	}{
		{"an IPv4 address is itself", "192.0.2.1", "192.0.2.1"},
		{"a port is dropped", "192.0.2.1:8443", "192.0.2.1"},
		{"IPv4-mapped IPv6 is IPv4", "::ffff:192.0.2.1", "192.0.2.1"},
		{"IPv4-mapped IPv6 with a port is IPv4", "[::ffff:198.51.100.7]:1", "198.51.100.7"},
		{"IPv6 is grouped by /64", "2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"},
		{"IPv6 with a port is grouped by /64", "[2001:db8:1:2:3:4:5:6]:443", "2001:db8:1:2::/64"},
		{"IPv6 with a port and zone is grouped by /64", "[fe80::1%eth0]:443", "fe80::/64"},
		{"an empty address is its own key", "", ""},
		{"a name is its own key", "pipe", "pipe"},
		{"a name with a port loses the port", "host:80", "host"},
		{"an unparsable address is kept, cut to 64 bytes", strings.Repeat("z", 100), strings.Repeat("z", 64)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := AddressKey(tc.addr); got != tc.want {
				t.Fatalf("AddressKey(%q) = %q, want %q", tc.addr, got, tc.want)
			}
		})
	}
}

var t0 = time.Unix(1_800_000_000, 0)

func TestBucketsRefillAndAreForgottenWhenFull(t *testing.T) {
	b := NewBuckets(10)
	l := Limits{Burst: 3, Rate: 1}
	if got := b.Tokens("k", l, t0); got != 3 || b.Len() != 0 {
		t.Fatalf("an unknown key is full and costs nothing: %v tokens, %d buckets", got, b.Len())
	}
	b.Spend("k", l, t0)
	b.Spend("k", l, t0)
	if got := b.Tokens("k", l, t0.Add(time.Second)); got != 2 {
		t.Fatalf("after 1 s at 1/s: %v tokens, want 2", got)
	}
	if got := b.Tokens("k", l, t0.Add(time.Hour)); got != 3 {
		t.Fatalf("never more than the burst: %v", got)
	}
}

func TestBucketsDropTheNearestToFullFirst(t *testing.T) {
	b := NewBuckets(32)
	l := Limits{Burst: 3, Rate: 1}
	for range 3 {
		b.Spend("drained", l, t0)
	}
	for i := range 500 {
		b.Spend(fmt.Sprintf("junk-%d", i), l, t0)
	}
	if b.Len() > 32 {
		t.Fatalf("%d buckets, want at most 32", b.Len())
	}
	if !b.Has("drained") || b.Tokens("drained", l, t0) != 0 {
		t.Fatal("the drained bucket was dropped for junk nearer to full")
	}
	// Once all have refilled, the next time room is needed they all go.
	for i := range 3 {
		b.Spend(fmt.Sprintf("late-%d", i), l, t0.Add(time.Minute))
	}
	if b.Len() > 3 || b.Has("drained") {
		t.Fatalf("refilled buckets are forgotten when room is needed: %d buckets", b.Len())
	}
}
