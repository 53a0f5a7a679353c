// Package ratelimit holds the token buckets rotor's throttles share (failed
// logins in pkg/accounts; failed unauthenticated requests and new sessions in
// pkg/issuer) and the client-address key they count by.
//
// Buckets exist only while they are not full: a key that never failed, or
// whose bucket has refilled, costs no memory, so a throttled request need
// create no state. Memory is bounded by a maximum number of buckets; at that
// size the buckets nearest to full are dropped first, never one an attacker
// has just emptied, so flooding with other keys cannot reset a budget.
// Buckets are not safe for concurrent use: their owner holds a lock.
package ratelimit

import (
	"math"
	"net"
	"net/netip"
	"slices"
	"time"
)

// Limits are a bucket's size and refill rate.
type Limits struct {
	Burst float64
	Rate  float64 // tokens per second
}

// Buckets holds the token buckets that are not full, by key.
type Buckets struct {
	max int
	m   map[string]*bucket
}

// bucket is a token bucket as of last; it is full again at fullAt.
type bucket struct {
	tokens float64
	last   time.Time
	fullAt time.Time
}

// NewBuckets keeps at most max buckets.
func NewBuckets(max int) *Buckets { return &Buckets{max: max, m: map[string]*bucket{}} }

// Len is the number of buckets kept: keys that are not full.
func (b *Buckets) Len() int { return len(b.m) }

// Has reports whether key has a bucket (is not full).
func (b *Buckets) Has(key string) bool {
	_, ok := b.m[key]
	return ok
}

// Tokens is what key has left at now; an absent key is full.
func (b *Buckets) Tokens(key string, l Limits, now time.Time) float64 {
	bk, ok := b.m[key]
	if !ok {
		return l.Burst
	}
	return math.Min(l.Burst, bk.tokens+l.Rate*now.Sub(bk.last).Seconds())
}

// Spend takes one token from key's bucket, creating it if needed.
func (b *Buckets) Spend(key string, l Limits, now time.Time) {
	left := b.Tokens(key, l, now) - 1
	bk, ok := b.m[key]
	if !ok {
		if len(b.m) >= b.max {
			b.makeRoom(now)
		}
		bk = &bucket{}
		b.m[key] = bk
	}
	bk.tokens, bk.last = left, now
	if l.Rate > 0 {
		bk.fullAt = now.Add(time.Duration((l.Burst - left) / l.Rate * float64(time.Second)))
	} else {
		bk.fullAt = time.Unix(math.MaxInt32, 0) // never refills
	}
}

// makeRoom forgets every full bucket or, if none is full, the sixteenth of
// them nearest to full: they have the least left to lose. Dropping a batch
// pays the scan of the table once per max/16 new buckets, not for every
// failure of an attacker with many keys (0.34 ms at 16,384 buckets).
func (b *Buckets) makeRoom(now time.Time) {
	type entry struct {
		key    string
		fullAt time.Time
	}
	live := make([]entry, 0, len(b.m))
	for k, bk := range b.m {
		if !now.Before(bk.fullAt) {
			delete(b.m, k)
			continue
		}
		live = append(live, entry{k, bk.fullAt})
	}
	if len(b.m) < b.max {
		return
	}
	slices.SortFunc(live, func(x, y entry) int { return x.fullAt.Compare(y.fullAt) })
	for _, e := range live[:max(1, b.max/16)] {
		delete(b.m, e.key)
	}
}

// maxAddrKey bounds the key kept for an address that does not parse.
const maxAddrKey = 64

// AddressKey is the budget a client address ("ip" or "ip:port") spends, so
// one client maps to one bucket: IPv4-mapped IPv6 becomes IPv4, and IPv6 is
// grouped by /64, the block one host or site usually controls (an attacker
// cannot reset its budget by hopping inside it). An address that does not
// parse is its own key, bounded in length, so a caller that passes none
// fails closed.
func AddressKey(addr string) string {
	ip, ok := ParseIP(addr)
	if !ok {
		if host, _, err := net.SplitHostPort(addr); err == nil {
			addr = host
		}
		if len(addr) > maxAddrKey {
			addr = addr[:maxAddrKey]
		}
		return addr
	}
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.String()
	}
	return ip.String()
}

// ParseIP reads "ip" or "ip:port", unmapped and without zone.
func ParseIP(s string) (netip.Addr, bool) {
	ip, err := netip.ParseAddr(s)
	if err != nil {
		ap, perr := netip.ParseAddrPort(s)
		if perr != nil {
			return netip.Addr{}, false
		}
		ip = ap.Addr()
	}
	return ip.Unmap().WithZone(""), true
}
