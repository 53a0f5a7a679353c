package ratelimit

import (
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// Throttle bounds credential guessing without letting an attacker lock out
// someone else. A credential's subject is what it claims to be: a username
// for a password login, a client_id for client authentication. Throttle
// keeps token buckets of failed attempts:
//
//   - per (subject, address): what one client may guess against one
//     subject. Only this budget is spent by a legitimate owner's own typos,
//     and spending it locks out nobody else.
//   - per subject, summed over addresses: bounds a distributed guesser. When
//     it is spent, the subject still accepts attempts from an address where
//     it authenticated successfully before, and from a clean address (one
//     with no recent failures anywhere). So a targeted lockout of a real
//     user or client needs the attacker to keep its every new address dirty,
//     and a guesser gets at most one attempt per fresh address it burns.
//   - per address, summed over subjects: bounds password spraying from one
//     client. When it is spent, only (subject, address) pairs that
//     authenticated successfully before are admitted, so the others behind a
//     shared address (a NAT, the chart's Ingress) who did keep working.
//
// Buckets exist only while they are not full (see Buckets): a throttled or
// successful attempt creates none, and a bucket that has refilled is
// forgotten. Memory is bounded by the size given to NewThrottle per map; at
// that size the buckets nearest to refilled are dropped first, never one an
// attacker just emptied.
//
// Callers map subjects that do not exist, or cannot, to one shared key, so
// junk cannot flood the subject map. A Throttle is safe for concurrent use.
type Throttle struct {
	mu sync.Mutex
	// pair, user and addr budgets: burst and refill rate (tokens/second).
	pair, user, addr    Limits
	pairs, users, addrs *Buckets
	// known remembers (subject, address) pairs that authenticated, for
	// knownFor; the least recently used is forgotten first.
	known *simplelru.LRU[string, time.Time]
	// inflight counts admitted attempts whose outcome is not known yet, per
	// bucket key, so concurrent guesses cannot overspend a budget.
	inflight map[string]int
}

// knownFor is how long a successful authentication vouches for its address.
const knownFor = 30 * 24 * time.Hour

// Multipliers of the per-(subject, address) budget for the wider budgets.
const (
	userBurstFactor = 5  // a subject may fail 5x a pair's burst, at a pair's rate
	addrBurstFactor = 10 // an address may fail 10x a pair's burst, at 10x its rate
	addrRateFactor  = 10
)

// Attempt is an admitted authentication; Done must be called exactly once.
type Attempt struct {
	t                *Throttle
	pair, user, addr string
}

// NewThrottle allows burst failures per (subject, address) in a row, then
// perMinute; the wider budgets are multiples of these (see Throttle). Each of
// its maps keeps at most size entries.
func NewThrottle(perMinute float64, burst, size int) (*Throttle, error) {
	known, err := simplelru.NewLRU[string, time.Time](size, nil)
	if err != nil {
		return nil, err
	}
	r := perMinute / 60
	return &Throttle{
		pair:     Limits{Burst: float64(burst), Rate: r},
		user:     Limits{Burst: float64(burst * userBurstFactor), Rate: r},
		addr:     Limits{Burst: float64(burst * addrBurstFactor), Rate: r * addrRateFactor},
		pairs:    NewBuckets(size),
		users:    NewBuckets(size),
		addrs:    NewBuckets(size),
		known:    known,
		inflight: map[string]int{},
	}, nil
}

// Admit reserves one failure of each budget for an attempt to authenticate
// as subjectKey from addrKey (an AddressKey), or reports false (creating no
// state) if the attempt must be refused.
func (t *Throttle) Admit(subjectKey, addrKey string, now time.Time) (*Attempt, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	at := &Attempt{t: t, pair: "p\x00" + subjectKey + "\x00" + addrKey, user: "u\x00" + subjectKey, addr: "a\x00" + addrKey}
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

// Done releases the reservation; a failed attempt spends it, a successful
// one makes its (subject, address) pair known.
func (at *Attempt) Done(failed bool, now time.Time) {
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

func (t *Throttle) available(b *Buckets, l Limits, key string, now time.Time) float64 {
	return b.Tokens(key, l, now) - float64(t.inflight[key])
}

func (t *Throttle) isKnown(pair string, now time.Time) bool {
	at, ok := t.known.Get(pair)
	return ok && now.Sub(at) < knownFor
}
