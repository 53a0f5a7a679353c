package accounts

import (
	"net/netip"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
	"golang.org/x/time/rate"
)

// throttle holds one token bucket of failed logins per username and per
// client address. An attempt is admitted only if both buckets still have an
// unreserved token; the token is spent only if the attempt fails. Counting
// attempts in flight as reserved keeps concurrent guesses within the budget
// without charging successful logins.
type throttle struct {
	mu    sync.Mutex
	limit rate.Limit
	burst int
	users *simplelru.LRU[string, *bucket]
	addrs *simplelru.LRU[string, *bucket]
}

type bucket struct {
	lim      *rate.Limiter
	inflight int
}

// attempt is an admitted login; done must be called exactly once.
type attempt struct {
	t          *throttle
	user, addr *bucket
}

func newThrottle(perMinute float64, burst, size int) (*throttle, error) {
	users, err := simplelru.NewLRU[string, *bucket](size, nil)
	if err != nil {
		return nil, err
	}
	addrs, err := simplelru.NewLRU[string, *bucket](size, nil)
	if err != nil {
		return nil, err
	}
	return &throttle{limit: rate.Limit(perMinute / 60), burst: burst, users: users, addrs: addrs}, nil
}

func (t *throttle) get(m *simplelru.LRU[string, *bucket], key string) *bucket {
	if b, ok := m.Get(key); ok {
		return b
	}
	// An evicted key starts again with a full bucket: the maps' size bounds
	// memory at the price of forgetting the least recently tried keys.
	b := &bucket{lim: rate.NewLimiter(t.limit, t.burst)}
	m.Add(key, b)
	return b
}

func (b *bucket) available(now time.Time) float64 {
	return b.lim.TokensAt(now) - float64(b.inflight)
}

// admit reserves one failure of both budgets, or reports false if either
// is used up.
func (t *throttle) admit(userKey, addrKey string, now time.Time) (*attempt, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	u, a := t.get(t.users, userKey), t.get(t.addrs, addrKey)
	if u.available(now) < 1 || a.available(now) < 1 {
		return nil, false
	}
	u.inflight++
	a.inflight++
	return &attempt{t: t, user: u, addr: a}, true
}

// done releases the reservation and, for a failed login, spends it.
func (at *attempt) done(failed bool, now time.Time) {
	at.t.mu.Lock()
	defer at.t.mu.Unlock()
	for _, b := range []*bucket{at.user, at.addr} {
		b.inflight--
		if failed {
			b.lim.AllowN(now, 1)
		}
	}
}

// maxAddrKey bounds the key kept for an address that does not parse.
const maxAddrKey = 64

// addressKey normalises a client address ("ip" or "ip:port") so one client
// maps to one bucket: IPv4-mapped IPv6 becomes IPv4, and IPv6 is grouped by
// /64, the block a single host or site usually controls. An empty address is
// a key like any other, so a caller that forgets to pass one fails closed.
func addressKey(addr string) string {
	ip, err := netip.ParseAddr(addr)
	if err != nil {
		ap, perr := netip.ParseAddrPort(addr)
		if perr != nil {
			if len(addr) > maxAddrKey {
				addr = addr[:maxAddrKey]
			}
			return addr
		}
		ip = ap.Addr()
	}
	ip = ip.Unmap().WithZone("")
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.String()
	}
	return ip.String()
}
