package issuer

import (
	"context"
	"math"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"k8s.io/utils/clock"

	"rotor.dev/rotor/pkg/ratelimit"
)

// Requests that have proved nothing yet cost the API server: a refresh or a
// revocation with a token this replica has not seen is a GET, a token
// exchange or an introspection by an unknown caller a TokenReview. Anyone
// can send them, so each client address gets a budget of failures (a token
// bucket), checked before any API request is made on the request's behalf:
//
//   - /token with grant_type refresh_token or token exchange, /revoke and
//     /introspect are limited. Password grants are not: a failed login costs
//     no API request (accounts are cached) and has its own throttle
//     (pkg/accounts), and a successful one must not be limited twice.
//   - A request that proves something spends nothing: a refresh that
//     rotated, an exchange that was granted, an introspection by an
//     authenticated and allowed caller, a revocation of a current token. So
//     a busy client behind one address is not throttled by its own success.
//   - A request that fails for the client's reasons (4xx) spends one token;
//     one that fails for the server's (5xx: the API server away or slow, or
//     rotor's own client-side limit) spends nothing, so an outage does not
//     leave honest clients throttled once it is over. A 5xx caused by
//     rotor's client-side rate limit made no API request.
//   - Admitted requests whose outcome is not known yet are reserved against
//     the budget, so concurrent requests cannot overspend it: an address
//     has at most its remaining budget in flight.
//   - Over the budget the answer is 429 (503 on /revoke, RFC 7009 section
//     2.2.1) with Retry-After, and the request creates no state.
//
// Buckets exist only while they are not full, at most maxTrackedAddresses of
// them; at that size the buckets nearest to full are dropped first, never
// one an attacker has just emptied (pkg/ratelimit).

// maxTrackedAddresses bounds the limiter's memory (about 100 bytes a
// bucket). A bucket lives until it is full again, burst/rate seconds after
// its last failure (5s with the defaults), so this is room for some 3,000
// addresses failing every second.
const maxTrackedAddresses = 16384

// Defaults of --unauthenticated-burst and --unauthenticated-per-second.
const (
	DefaultUnauthenticatedBurst     = 100
	DefaultUnauthenticatedPerSecond = 20
)

// limiter is the per-address budget of failed unauthenticated requests.
// A nil *limiter admits everything.
type limiter struct {
	clock  clock.PassiveClock
	limits ratelimit.Limits

	mu      sync.Mutex
	buckets *ratelimit.Buckets
	// inflight counts admitted requests whose outcome is not known yet,
	// per address key.
	inflight map[string]int
}

// newLimiter returns nil (no limit) when burst is not positive.
func newLimiter(burst int, perSecond float64, clk clock.PassiveClock) *limiter {
	if burst <= 0 {
		return nil
	}
	if clk == nil {
		clk = clock.RealClock{}
	}
	return &limiter{
		clock:    clk,
		limits:   ratelimit.Limits{Burst: float64(burst), Rate: max(perSecond, 0)},
		buckets:  ratelimit.NewBuckets(maxTrackedAddresses),
		inflight: map[string]int{},
	}
}

// admission is an admitted request; done must be called exactly once.
type admission struct {
	l      *limiter
	key    string
	proved bool
	ended  bool
}

// admit reserves one failure of key's budget. When none is left it returns
// nil and how long until one is, and changes nothing.
func (l *limiter) admit(key string) (*admission, time.Duration) {
	now := l.clock.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	left := l.buckets.Tokens(key, l.limits, now) - float64(l.inflight[key])
	if left < 1 {
		return nil, l.retryAfter(left)
	}
	l.inflight[key]++
	return &admission{l: l, key: key}, 0
}

// retryAfter is how long until an address with left tokens (counting
// reservations) has one again: whole seconds, at least one, at most the
// time to refill the whole burst.
func (l *limiter) retryAfter(left float64) time.Duration {
	if l.limits.Rate <= 0 {
		return time.Hour // never refills: --unauthenticated-per-second 0
	}
	s := min((1-left)/l.limits.Rate, l.limits.Burst/l.limits.Rate)
	return time.Duration(max(1, math.Ceil(s))) * time.Second
}

// prove marks the request as one that proved something: it spends nothing.
func (a *admission) prove() {
	if a != nil {
		a.proved = true
	}
}

// done releases the reservation; spend takes one token from the budget.
func (a *admission) done(spend bool) {
	if a.ended {
		return
	}
	a.ended = true
	l := a.l
	now := l.clock.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.inflight[a.key]--; l.inflight[a.key] <= 0 {
		delete(l.inflight, a.key)
	}
	if spend {
		l.buckets.Spend(a.key, l.limits, now)
	}
}

// tracked is the number of buckets held (tests).
func (l *limiter) tracked() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buckets.Len()
}

// Endpoint labels of rotor_requests_throttled_total.
const (
	endpointToken      = "token"
	endpointRevoke     = "revoke"
	endpointIntrospect = "introspect"
)

type admissionKey struct{}

// admissionOf is the request's admission, nil when it is not limited.
func admissionOf(r *http.Request) *admission {
	a, _ := r.Context().Value(admissionKey{}).(*admission)
	return a
}

// limit puts the per-address budget in front of an endpoint. It decodes the
// form first (the handler gets the same decoding, see readForm), so that it
// can tell which grant a /token request is: requests that are malformed, or
// that cannot cost an API request, pass unlimited and are refused by the
// handler as before. On /token and /introspect a 200 proves the request;
// /revoke answers 200 for any token, so its handler says what was proved.
func (i *Issuer) limit(endpoint string, h http.Handler) http.Handler {
	if i.limiter == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f, oerr := readForm(w, r)
		r = withForm(r, f, oerr)
		if oerr != nil || !limited(endpoint, f) {
			h.ServeHTTP(w, r)
			return
		}
		a, wait := i.limiter.admit(ratelimit.AddressKey(r.RemoteAddr))
		if a == nil {
			requestsThrottled.WithLabelValues(endpoint).Inc()
			writeError(w, throttledError(endpoint, wait))
			return
		}
		rec := &statusRecorder{ResponseWriter: w}
		// A panicking handler (net/http recovers it) releases its
		// reservation and spends nothing.
		spend := false
		defer func() { a.done(spend) }()
		h.ServeHTTP(rec, r.WithContext(context.WithValue(r.Context(), admissionKey{}, a)))
		if endpoint != endpointRevoke && rec.status() == http.StatusOK {
			a.prove()
		}
		spend = !a.proved && rec.status() < http.StatusInternalServerError
	})
}

// limited reports whether a well-formed request to endpoint can cost an API
// request on behalf of a client that has proved nothing.
func limited(endpoint string, f form) bool {
	switch endpoint {
	case endpointToken:
		g := f.get("grant_type")
		return g == GrantRefreshToken || g == GrantTokenExchange
	case endpointRevoke:
		return f.get("token") != ""
	}
	return true
}

// throttledError is the answer over the budget. The code is
// temporarily_unavailable, not invalid_grant: the token was not even looked
// at, and clients (pkg/client, and many built on x/oauth2, which hands the
// code to its caller) drop a refresh token on invalid_grant and log in
// again, which would turn throttling into lost sessions and more load.
// invalid_request would tell them their request is malformed, which it is
// not. /revoke answers 503, the one status RFC 7009 section 2.2.1 gives
// meaning to ("the client must assume the token still exists and may retry
// after a reasonable delay", with Retry-After); the other endpoints answer
// 429 (RFC 6585, as RFC 9126 section 2.3 does for OAuth).
func throttledError(endpoint string, wait time.Duration) *oauthError {
	status := http.StatusTooManyRequests
	if endpoint == endpointRevoke {
		status = http.StatusServiceUnavailable
	}
	e := newError(status, errTemporarilyUnavail, "too many failed requests from this address; retry later")
	e.retryAfter = wait
	return e
}

// statusRecorder remembers the status a handler answered.
type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.code == 0 {
		s.code = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.code == 0 {
		s.code = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func (s *statusRecorder) status() int {
	if s.code == 0 {
		return http.StatusOK
	}
	return s.code
}

// fromClient makes r.RemoteAddr the client's address when the TCP peer is a
// trusted proxy (see clientIP), so that this limiter and the login throttle
// (clientAddr) see the client, not the proxy. Without trusted proxies it
// changes nothing.
func (i *Issuer) fromClient(h http.Handler) http.Handler {
	if len(i.cfg.TrustedProxies) == 0 {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if addr, ok := clientIP(r.RemoteAddr, r.Header.Values("X-Forwarded-For"), i.cfg.TrustedProxies); ok {
			if s := netip.AddrPortFrom(addr, 0).String(); s != r.RemoteAddr {
				r = r.WithContext(r.Context()) // a shallow copy
				r.RemoteAddr = s
			}
		}
		h.ServeHTTP(w, r)
	})
}

// clientIP is the address a request comes from. It is the TCP peer, unless
// the peer is inside one of the trusted proxies' prefixes: then it is the
// right-most X-Forwarded-For entry that is not a trusted proxy, reading the
// header lines in order as one list. Entries left of that one were written
// by the client and are ignored. A malformed entry reached while walking
// left (written by a trusted proxy: misconfiguration, or a proxy that passes
// on what it was given) stops the walk at the trusted hop right of it, so
// such requests share that hop's address rather than choose their own. A
// chain of trusted proxies only yields its left-most one. ok is false when
// the peer itself does not parse.
func clientIP(remoteAddr string, xff []string, trusted []netip.Prefix) (netip.Addr, bool) {
	peer, ok := ratelimit.ParseIP(remoteAddr)
	if !ok {
		return netip.Addr{}, false
	}
	addr := peer
	if !inAny(addr, trusted) {
		return addr, true
	}
	for line := len(xff) - 1; line >= 0; line-- {
		if strings.TrimSpace(xff[line]) == "" {
			continue // an empty header line adds no hop
		}
		entries := strings.Split(xff[line], ",")
		for e := len(entries) - 1; e >= 0; e-- {
			ip, ok := ratelimit.ParseIP(strings.TrimSpace(entries[e]))
			if !ok {
				return addr, true
			}
			if addr = ip; !inAny(addr, trusted) {
				return addr, true
			}
		}
	}
	return addr, true
}

func inAny(ip netip.Addr, prefixes []netip.Prefix) bool {
	for _, p := range prefixes {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}
