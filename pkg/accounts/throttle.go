package accounts

import (
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"

	"rotor.dev/rotor/pkg/ratelimit"
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
// Buckets exist only while they are not full (pkg/ratelimit): a throttled or
// successful attempt creates none, and a bucket that has refilled is
// forgotten. Memory is bounded by maxTracked per map; at that size the
// buckets nearest to refilled are dropped first, never one an attacker just
// emptied.
type throttle struct {
	mu sync.Mutex
	// pair, user and addr budgets: burst and refill rate (tokens/second).
	pair, user, addr    ratelimit.Limits
	pairs, users, addrs *ratelimit.Buckets
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
		pair:     ratelimit.Limits{Burst: float64(burst), Rate: r},
		user:     ratelimit.Limits{Burst: float64(burst * userBurstFactor), Rate: r},
		addr:     ratelimit.Limits{Burst: float64(burst * addrBurstFactor), Rate: r * addrRateFactor},
		pairs:    ratelimit.NewBuckets(size),
		users:    ratelimit.NewBuckets(size),
		addrs:    ratelimit.NewBuckets(size),
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
	clean := t.available(t.addrs, t.addr, at.addr, now) >= t.addr.Burst
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
	t.pairs.Spend(at.pair, t.pair, now)
	t.users.Spend(at.user, t.user, now)
	t.addrs.Spend(at.addr, t.addr, now)
}

func (t *throttle) available(b *ratelimit.Buckets, l ratelimit.Limits, key string, now time.Time) float64 {
	return b.Tokens(key, l, now) - float64(t.inflight[key])
}

func (t *throttle) isKnown(pair string, now time.Time) bool {
	at, ok := t.known.Get(pair)
	return ok && now.Sub(at) < knownFor
}
