package accounts

import (
	"math"
	"net/netip"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// throttle bounds password guessing without letting an attacker lock out
// someone else. It keeps token buckets of failed logins:
//
//   - per (username, address): what one client may guess against one
//     account. Only this budget is spent by the user's own typos, and
//     spending it locks out nobody else.
//   - per username, summed over addresses: bounds a distributed guesser. When
//     it is spent, the account still accepts attempts from an address where
//     it logged in successfully before, and from a clean address (one with
//     no recent failures anywhere). So a targeted lockout of a real user
//     needs the attacker to keep the user's every new address dirty, and a
//     guesser gets at most one attempt per fresh address it burns.
//   - per address, summed over usernames: bounds password spraying from one
//     client. When it is spent, only (username, address) pairs that logged in
//     successfully before are admitted, so the other users behind a shared
//     address (a NAT, the chart's Ingress) who logged in before keep working.
//
// Buckets exist only while they are not full: a throttled or successful
// attempt creates none, and a bucket that has refilled is forgotten. Memory
// is bounded by maxTracked per map; at that size the bucket nearest to
// refilled is dropped first, never one an attacker just emptied.
type throttle struct {
	mu sync.Mutex
	// pair, user and addr budgets: burst and refill rate (tokens/second).
	pair, user, addr limits
	pairs, users     *buckets
	addrs            *buckets
	// known remembers (username, address) pairs that logged in, for
	// knownFor; the least recently used is forgotten first.
	known *simplelru.LRU[string, time.Time]
	// inflight counts admitted attempts whose outcome is not known yet, per
	// bucket key, so concurrent guesses cannot overspend a budget.
	inflight map[string]int
}

// knownFor is how long a successful login vouches for its address.
const knownFor = 30 * 24 * time.Hour

// Multipliers of the per-(username, address) budget for the wider budgets.
const (
	userBurstFactor = 5  // a username may fail 5x a pair's burst, at a pair's rate
	addrBurstFactor = 10 // an address may fail 10x a pair's burst, at 10x its rate
	addrRateFactor  = 10
)

type limits struct {
	burst float64
	rate  float64 // tokens per second
}

// attempt is an admitted login; done must be called exactly once.
type attempt struct {
	t                *throttle
	pair, user, addr string
}

func newThrottle(perMinute float64, burst, size int) (*throttle, error) {
	known, err := simplelru.NewLRU[string, time.Time](size, nil)
	if err != nil {
		return nil, err
	}
	r := perMinute / 60
	return &throttle{
		pair:     limits{burst: float64(burst), rate: r},
		user:     limits{burst: float64(burst * userBurstFactor), rate: r},
		addr:     limits{burst: float64(burst * addrBurstFactor), rate: r * addrRateFactor},
		pairs:    newBuckets(size),
		users:    newBuckets(size),
		addrs:    newBuckets(size),
		known:    known,
		inflight: map[string]int{},
	}, nil
}

// admit reserves one failure of each budget, or reports false (creating no
// state) if the attempt must be refused.
func (t *throttle) admit(userKey, addrKey string, now time.Time) (*attempt, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	at := &attempt{t: t, pair: "p\x00" + userKey + "\x00" + addrKey, user: "u\x00" + userKey, addr: "a\x00" + addrKey}
	if t.available(t.pairs, t.pair, at.pair, now) < 1 {
		return nil, false
	}
	known := t.isKnown(at.pair, now)
	if !known && t.available(t.addrs, t.addr, at.addr, now) < 1 {
		return nil, false
	}
	clean := t.available(t.addrs, t.addr, at.addr, now) >= t.addr.burst
	if !known && !clean && t.available(t.users, t.user, at.user, now) < 1 {
		return nil, false
	}
	for _, k := range []string{at.pair, at.user, at.addr} {
		t.inflight[k]++
	}
	return at, true
}

// done releases the reservation; a failed login spends it, a successful one
// makes its (username, address) pair known.
func (at *attempt) done(failed bool, now time.Time) {
	t := at.t
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, k := range []string{at.pair, at.user, at.addr} {
		if t.inflight[k]--; t.inflight[k] <= 0 {
			delete(t.inflight, k)
		}
	}
	if !failed {
		t.known.Add(at.pair, now)
		return
	}
	t.pairs.spend(at.pair, t.pair, now)
	t.users.spend(at.user, t.user, now)
	t.addrs.spend(at.addr, t.addr, now)
}

func (t *throttle) available(b *buckets, l limits, key string, now time.Time) float64 {
	return b.tokens(key, l, now) - float64(t.inflight[key])
}

func (t *throttle) isKnown(pair string, now time.Time) bool {
	at, ok := t.known.Get(pair)
	return ok && now.Sub(at) < knownFor
}

// buckets holds the token buckets that are not full, by key.
type buckets struct {
	max int
	m   map[string]*bucket
}

// bucket is a token bucket as of last; it is full again at fullAt.
type bucket struct {
	tokens float64
	last   time.Time
	fullAt time.Time
}

func newBuckets(max int) *buckets { return &buckets{max: max, m: map[string]*bucket{}} }

// tokens is what key has left at now; an absent key is full.
func (b *buckets) tokens(key string, l limits, now time.Time) float64 {
	bk, ok := b.m[key]
	if !ok {
		return l.burst
	}
	return math.Min(l.burst, bk.tokens+l.rate*now.Sub(bk.last).Seconds())
}

// spend takes one token from key's bucket, creating it if needed.
func (b *buckets) spend(key string, l limits, now time.Time) {
	left := b.tokens(key, l, now) - 1
	bk, ok := b.m[key]
	if !ok {
		if len(b.m) >= b.max {
			b.makeRoom(now)
		}
		bk = &bucket{}
		b.m[key] = bk
	}
	bk.tokens, bk.last = left, now
	if l.rate > 0 {
		bk.fullAt = now.Add(time.Duration((l.burst - left) / l.rate * float64(time.Second)))
	} else {
		bk.fullAt = time.Unix(math.MaxInt32, 0) // never refills
	}
}

// makeRoom forgets every full bucket or, if none is full, the one nearest
// to full: it has the least left to lose.
func (b *buckets) makeRoom(now time.Time) {
	var nearest string
	var nearestAt time.Time
	for k, bk := range b.m {
		if !now.Before(bk.fullAt) {
			delete(b.m, k)
			continue
		}
		if nearest == "" || bk.fullAt.Before(nearestAt) {
			nearest, nearestAt = k, bk.fullAt
		}
	}
	if len(b.m) >= b.max && nearest != "" {
		delete(b.m, nearest)
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
