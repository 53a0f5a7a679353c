package issuer

// The per-address limit of unauthenticated requests and the client address
// it is keyed by, tested without a control plane.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"rotor.dev/rotor/pkg/accounts"
	"rotor.dev/rotor/pkg/ratelimit"
	"rotor.dev/rotor/pkg/workload"
)

func prefixes(s ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(s))
	for i, p := range s {
		out[i] = netip.MustParsePrefix(p)
	}
	return out
}

func TestClientIP(t *testing.T) {
	// The proxies: an ingress tier in 10.0.0.0/8 and a load balancer at
	// 192.0.2.10; IPv6 proxies in fd00::/8.
	trusted := prefixes("10.0.0.0/8", "192.0.2.10/32", "fd00::/8")
	for _, tt := range []struct {
		name    string
		peer    string
		xff     []string
		trusted []netip.Prefix
		want    string // "" for ok == false
	}{
		// Without trusted proxies, or from an untrusted peer, the header is ignored.
		{name: "no trusted proxies: the peer, whatever the header says", peer: "10.1.2.3:5555", xff: []string{"198.51.100.7"}, want: "10.1.2.3"},
		{name: "a spoofed header from an untrusted peer is ignored", peer: "203.0.113.5:40000", xff: []string{"198.51.100.7"}, trusted: trusted, want: "203.0.113.5"},
		{name: "a spoofed trusted address from an untrusted peer is ignored", peer: "203.0.113.5:40000", xff: []string{"10.0.0.1"}, trusted: trusted, want: "203.0.113.5"},
		{name: "a trusted peer without the header is the client", peer: "10.0.0.1:1234", trusted: trusted, want: "10.0.0.1"},
		{name: "a trusted peer with an empty header is the client", peer: "10.0.0.1:1234", xff: []string{""}, trusted: trusted, want: "10.0.0.1"},
		{name: "a header of spaces adds no hop", peer: "10.0.0.1:1234", xff: []string{"  "}, trusted: trusted, want: "10.0.0.1"},

		// Through trusted proxies.
		{name: "one trusted proxy: the address it appended", peer: "10.0.0.1:1234", xff: []string{"198.51.100.7"}, trusted: trusted, want: "198.51.100.7"},
		{name: "a chain of trusted proxies is walked to the first untrusted hop", peer: "192.0.2.10:443", xff: []string{"198.51.100.7, 10.9.8.7, 10.0.0.2"}, trusted: trusted, want: "198.51.100.7"},
		{name: "what the client wrote left of its own address is ignored", peer: "10.0.0.1:1234", xff: []string{"1.1.1.1, 10.0.0.5, 198.51.100.7"}, trusted: trusted, want: "198.51.100.7"},
		{name: "a client claiming to be a trusted proxy is still itself", peer: "10.0.0.1:1234", xff: []string{"10.0.0.9, 198.51.100.7"}, trusted: trusted, want: "198.51.100.7"},
		{name: "only trusted hops: the farthest of them", peer: "10.0.0.1:1234", xff: []string{"10.0.0.3, 10.0.0.2"}, trusted: trusted, want: "10.0.0.3"},
		{name: "several header lines are one list, in order", peer: "10.0.0.1:1234", xff: []string{"1.1.1.1, 198.51.100.7", "10.0.0.2"}, trusted: trusted, want: "198.51.100.7"},
		{name: "an empty header line between others adds no hop", peer: "10.0.0.1:1234", xff: []string{"198.51.100.7", "", "10.0.0.2"}, trusted: trusted, want: "198.51.100.7"},
		{name: "spaces and tabs around entries are trimmed", peer: "10.0.0.1:1234", xff: []string{" 198.51.100.7 ,\t10.0.0.2\t"}, trusted: trusted, want: "198.51.100.7"},
		{name: "an entry with a port", peer: "10.0.0.1:1234", xff: []string{"198.51.100.7:61000"}, trusted: trusted, want: "198.51.100.7"},

		// Malformed entries: never the client's choice.
		{name: "a malformed right-most entry: the peer", peer: "10.0.0.1:1234", xff: []string{"198.51.100.7, garbage"}, trusted: trusted, want: "10.0.0.1"},
		{name: "a malformed entry behind a trusted hop: that hop", peer: "10.0.0.1:1234", xff: []string{"198.51.100.7, unknown, 10.0.0.2"}, trusted: trusted, want: "10.0.0.2"},
		{name: "an empty entry is malformed", peer: "10.0.0.1:1234", xff: []string{"198.51.100.7,,10.0.0.2"}, trusted: trusted, want: "10.0.0.2"},
		{name: "a trailing comma is an empty entry", peer: "10.0.0.1:1234", xff: []string{"198.51.100.7,"}, trusted: trusted, want: "10.0.0.1"},
		{name: "a CIDR is not an address", peer: "10.0.0.1:1234", xff: []string{"198.51.100.0/24"}, trusted: trusted, want: "10.0.0.1"},
		{name: "a hostname is not an address", peer: "10.0.0.1:1234", xff: []string{"client.example.com"}, trusted: trusted, want: "10.0.0.1"},
		{name: "an RFC 7239 Forwarded value is not an address", peer: "10.0.0.1:1234", xff: []string{"for=198.51.100.7"}, trusted: trusted, want: "10.0.0.1"},
		{name: "a long run of junk is one malformed entry", peer: "10.0.0.1:1234", xff: []string{strings.Repeat("x", 8000)}, trusted: trusted, want: "10.0.0.1"},
		{name: "junk left of the client is never read", peer: "10.0.0.1:1234", xff: []string{strings.Repeat("x,", 4000) + "198.51.100.7"}, trusted: trusted, want: "198.51.100.7"},

		// IPv6.
		{name: "an IPv6 client through an IPv6 proxy", peer: "[fd00::1]:443", xff: []string{"2001:db8::42"}, trusted: trusted, want: "2001:db8::42"},
		{name: "an IPv6 entry with brackets and a port", peer: "[fd00::1]:443", xff: []string{"[2001:db8::42]:61000"}, trusted: trusted, want: "2001:db8::42"},
		{name: "an IPv6 entry with a zone loses it", peer: "[fd00::1]:443", xff: []string{"fe80::1%eth0"}, trusted: trusted, want: "fe80::1"},
		{name: "an IPv4 client through an IPv6 proxy", peer: "[fd00::1]:443", xff: []string{"198.51.100.7"}, trusted: trusted, want: "198.51.100.7"},
		{name: "an IPv4-mapped trusted peer is its IPv4 address", peer: "[::ffff:10.0.0.1]:443", xff: []string{"198.51.100.7"}, trusted: trusted, want: "198.51.100.7"},
		{name: "an IPv4-mapped entry is its IPv4 address", peer: "10.0.0.1:1234", xff: []string{"::ffff:198.51.100.7"}, trusted: trusted, want: "198.51.100.7"},
		{name: "an untrusted IPv6 peer's header is ignored", peer: "[2001:db8::1]:443", xff: []string{"198.51.100.7"}, trusted: trusted, want: "2001:db8::1"},

		// A peer that does not parse (not over TCP).
		{name: "a peer that is not an address", peer: "@", xff: []string{"198.51.100.7"}, trusted: trusted, want: ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := clientIP(tt.peer, tt.xff, tt.trusted)
			if tt.want == "" {
				if ok {
					t.Fatalf("clientIP = %v, want none", got)
				}
				return
			}
			if !ok || got != netip.MustParseAddr(tt.want) {
				t.Fatalf("clientIP = %v, %v; want %s", got, ok, tt.want)
			}
		})
	}
}

var t0 = time.Unix(1_800_000_000, 0)

// fail admits a request from key and ends it as a failure; it reports
// whether it was admitted.
func fail(l *limiter, key string) bool {
	a, _ := l.admit(key)
	if a == nil {
		return false
	}
	a.done(true)
	return true
}

func TestLimiterBudget(t *testing.T) {
	clk := clocktesting.NewFakePassiveClock(t0)
	l := newLimiter(5, 2, clk)

	// Successes spend nothing, however many.
	for range 100 {
		a, _ := l.admit("a")
		if a == nil {
			t.Fatal("a success was refused")
		}
		a.prove()
		a.done(false)
	}
	if n := l.tracked(); n != 0 {
		t.Fatalf("successes created %d buckets", n)
	}
	// The burst of failures, then refusals with Retry-After.
	for i := range 5 {
		if !fail(l, "a") {
			t.Fatalf("failure %d of the burst refused", i+1)
		}
	}
	a, wait := l.admit("a")
	if a != nil || wait != time.Second {
		t.Fatalf("over the burst: admitted %v, Retry-After %v; want refused, 1s", a != nil, wait)
	}
	// A refused request creates no state and other addresses are unaffected.
	if n := l.tracked(); n != 1 {
		t.Fatalf("%d buckets, want 1", n)
	}
	if !fail(l, "b") {
		t.Fatal("another address was refused")
	}
	// 2/s: half a second later one more failure fits, then none.
	clk.SetTime(t0.Add(500 * time.Millisecond))
	if !fail(l, "a") || fail(l, "a") {
		t.Fatal("want exactly one failure after half a second")
	}
	// A success still passes once a token is there, and costs nothing.
	clk.SetTime(t0.Add(time.Second))
	a, _ = l.admit("a")
	if a == nil {
		t.Fatal("refused with a token available")
	}
	a.prove()
	a.done(false)
	if !fail(l, "a") {
		t.Fatal("the success spent the token")
	}
	// Full again after burst/rate; the bucket is then forgotten when room
	// is needed.
	clk.SetTime(t0.Add(time.Second + 2500*time.Millisecond))
	for i := range 5 {
		if !fail(l, "a") {
			t.Fatalf("refilled burst: failure %d refused", i+1)
		}
	}
}

func TestLimiterReservesInFlightRequests(t *testing.T) {
	l := newLimiter(3, 1, clocktesting.NewFakePassiveClock(t0))
	var held []*admission
	for range 3 {
		a, _ := l.admit("a")
		if a == nil {
			t.Fatal("refused within the burst")
		}
		held = append(held, a)
	}
	// Three in flight: a fourth concurrent request could overspend.
	if a, wait := l.admit("a"); a != nil || wait != time.Second {
		t.Fatalf("a fourth concurrent request: admitted %v, Retry-After %v", a != nil, wait)
	}
	// Outcomes: a success and a server error release their reservation
	// and spend nothing; a failure spends.
	held[0].prove()
	held[0].done(false)
	held[1].done(false)
	held[2].done(true)
	held[2].done(true) // a second done is ignored
	admitted := 0
	for fail(l, "a") {
		admitted++
	}
	if admitted != 2 {
		t.Fatalf("%d failures admitted after one was spent, want 2", admitted)
	}
	if len(l.inflight) != 0 {
		t.Fatalf("reservations left: %v", l.inflight)
	}
}

func TestLimiterRetryAfter(t *testing.T) {
	l := newLimiter(100, 20, clocktesting.NewFakePassiveClock(t0))
	for _, tt := range []struct {
		left float64
		want time.Duration
	}{
		{0.99, time.Second}, {0, time.Second}, {-19, time.Second}, {-20, 2 * time.Second},
		{-1000, 5 * time.Second}, // never more than the time to refill the burst
	} {
		if got := l.retryAfter(tt.left); got != tt.want {
			t.Errorf("retryAfter(%v) = %v, want %v", tt.left, got, tt.want)
		}
	}
	slow := newLimiter(10, 0.1, clocktesting.NewFakePassiveClock(t0))
	if got := slow.retryAfter(0); got != 10*time.Second {
		t.Errorf("at 0.1/s: retryAfter = %v, want 10s", got)
	}
}

// An attacker cannot reset its own budget by flooding from other addresses:
// when the table is full, the bucket nearest to full goes, and a throttled
// request creates none.
func TestLimiterMemoryIsBoundedAndKeepsEmptiedBuckets(t *testing.T) {
	clk := clocktesting.NewFakePassiveClock(t0)
	l := newLimiter(3, 1, clk)
	l.buckets = ratelimit.NewBuckets(100)
	for fail(l, "attacker") {
	}
	for i := range 1000 {
		clk.SetTime(t0.Add(time.Duration(i) * time.Millisecond))
		fail(l, fmt.Sprintf("other-%d", i))
		// Throttled requests from the attacker add nothing.
		if a, _ := l.admit("attacker"); a != nil {
			t.Fatalf("the attacker got a request through after %d other addresses", i)
		}
	}
	if n := l.tracked(); n > 100 {
		t.Fatalf("%d buckets, want at most 100", n)
	}
	if !l.buckets.Has("attacker") {
		t.Fatal("the attacker's emptied bucket was dropped")
	}
}

func TestLimiterDisabled(t *testing.T) {
	if l := newLimiter(0, 20, nil); l != nil {
		t.Fatal("burst 0 must disable the limit")
	}
	i := New(Config{}, Deps{})
	if i.limiter != nil {
		t.Fatal("an issuer without a burst has a limit")
	}
	called := 0
	h := i.limit(endpointToken, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { called++ }))
	for range 10 {
		h.ServeHTTP(httptest.NewRecorder(), formRequest{method: http.MethodPost, target: "/token", contentType: formType, body: "grant_type=refresh_token&refresh_token=x"}.http())
	}
	if called != 10 {
		t.Fatalf("handler called %d times, want 10", called)
	}
}

func (r formRequest) http() *http.Request {
	req := httptest.NewRequest(r.method, r.target, strings.NewReader(r.body))
	if r.contentType != "" {
		req.Header.Set("Content-Type", r.contentType)
	}
	return req
}

// statusHandler answers with the status the request's "status" parameter
// names (default 400) and counts its calls; it reads the form the way the
// real handlers do.
type statusHandler struct{ calls atomic.Int32 }

func (h *statusHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.calls.Add(1)
	f, oerr := readForm(w, r)
	if oerr != nil {
		writeError(w, oerr)
		return
	}
	status := http.StatusBadRequest
	if s := f.get("status"); s != "" {
		_, _ = fmt.Sscan(s, &status)
	}
	if f.get("prove") != "" {
		admissionOf(r).prove()
	}
	writeJSON(w, status, map[string]string{})
}

func TestLimitMiddleware(t *testing.T) {
	const refresh = "grant_type=refresh_token&refresh_token=rt-x.y"
	for _, tt := range []struct {
		name     string
		endpoint string
		// bodies are sent in order from one address; want are the
		// statuses they get (the handler answers what "status" says).
		bodies []string
		want   []int
	}{
		{
			name: "/token: failed refreshes spend the burst, then 429", endpoint: endpointToken,
			bodies: []string{refresh, refresh, refresh, refresh},
			want:   []int{400, 400, 400, 429},
		},
		{
			name: "/token: refreshes that rotate spend nothing", endpoint: endpointToken,
			bodies: []string{refresh + "&status=200", refresh + "&status=200", refresh + "&status=200", refresh + "&status=200", refresh, refresh, refresh, refresh},
			want:   []int{200, 200, 200, 200, 400, 400, 400, 429},
		},
		{
			name: "/token: server errors spend nothing (an outage does not throttle afterwards)", endpoint: endpointToken,
			bodies: []string{refresh + "&status=503", refresh + "&status=503", refresh + "&status=500", refresh + "&status=503", refresh, refresh, refresh, refresh},
			want:   []int{503, 503, 500, 503, 400, 400, 400, 429},
		},
		{
			name: "/token: token exchanges are limited", endpoint: endpointToken,
			bodies: []string{"grant_type=" + GrantTokenExchange, "grant_type=" + GrantTokenExchange, "grant_type=" + GrantTokenExchange, "grant_type=" + GrantTokenExchange},
			want:   []int{400, 400, 400, 429},
		},
		{
			name: "/token: password grants are not (the login throttle's job)", endpoint: endpointToken,
			bodies: []string{"grant_type=password", "grant_type=password", "grant_type=password", "grant_type=password", "grant_type=password"},
			want:   []int{400, 400, 400, 400, 400},
		},
		{
			name: "/token: unknown and missing grant types cost no API request and are not limited", endpoint: endpointToken,
			bodies: []string{"grant_type=client_credentials", "x=1", "grant_type=client_credentials", "x=1", "grant_type=client_credentials"},
			want:   []int{400, 400, 400, 400, 400},
		},
		{
			name: "/token: once throttled, malformed requests still get their own error", endpoint: endpointToken,
			bodies: []string{refresh, refresh, refresh, refresh, "a=1&a=2"},
			want:   []int{400, 400, 400, 429, 400},
		},
		{
			name: "/revoke: a 200 proves nothing unless the handler says so", endpoint: endpointRevoke,
			bodies: []string{"token=x&status=200", "token=x&status=200&prove=1", "token=x&status=200", "token=x&status=200", "token=x&status=200"},
			want:   []int{200, 200, 200, 200, 503},
		},
		{
			name: "/revoke: without a token there is nothing to look up", endpoint: endpointRevoke,
			bodies: []string{"x=1", "x=1", "x=1", "x=1"},
			want:   []int{400, 400, 400, 400},
		},
		{
			name: "/introspect: refused callers spend, answered ones do not", endpoint: endpointIntrospect,
			bodies: []string{"token=x&status=401", "token=x&status=200", "token=x&status=403", "token=x&status=200", "token=x&status=401", "token=x"},
			want:   []int{401, 200, 403, 200, 401, 429},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			i := New(Config{UnauthenticatedBurst: 3, UnauthenticatedPerSecond: 1, Clock: clocktesting.NewFakePassiveClock(t0)}, Deps{})
			next := &statusHandler{}
			h := i.limit(tt.endpoint, next)
			var got []int
			for _, body := range tt.bodies {
				req := formRequest{method: http.MethodPost, target: "/" + tt.endpoint, contentType: formType, body: body}.http()
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				got = append(got, rec.Code)
				if (rec.Code == 429 || rec.Code == 503) && !strings.Contains(body, "status=") {
					checkThrottled(t, rec, rec.Code)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("statuses %v, want %v", got, tt.want)
			}
			if len(i.limiter.inflight) != 0 {
				t.Fatalf("reservations left: %v", i.limiter.inflight)
			}
		})
	}
}

// checkThrottled checks a throttled answer: Retry-After, an RFC 6749 JSON
// error that says "retry" without condemning the token, never cached.
func checkThrottled(t *testing.T, rec *httptest.ResponseRecorder, status int) {
	t.Helper()
	if rec.Header().Get("Retry-After") != "1" {
		t.Errorf("Retry-After %q, want 1", rec.Header().Get("Retry-After"))
	}
	if rec.Header().Get("Cache-Control") != "no-store" || rec.Header().Get("Content-Type") != "application/json" {
		t.Errorf("headers %v", rec.Header())
	}
	var body map[string]string
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("body %q: %v", rec.Body, err)
	}
	want := map[string]string{"error": "temporarily_unavailable", "error_description": "too many failed requests from this address; retry later"}
	if fmt.Sprint(body) != fmt.Sprint(want) {
		t.Errorf("%d body %v, want %v", status, body, want)
	}
}

// recordingAccounts records the client address logins are throttled by.
type recordingAccounts struct{ addrs []string }

func (a *recordingAccounts) Authenticate(_ context.Context, _, _, clientAddr string) (accounts.Account, error) {
	a.addrs = append(a.addrs, clientAddr)
	return accounts.Account{}, accounts.ErrInvalidCredentials
}

func (a *recordingAccounts) Lookup(string) (accounts.Account, bool) { return accounts.Account{}, false }

// Through the real handlers: a throttled exchange makes no TokenReview, the
// budget is the client's behind a trusted proxy, and the login throttle is
// keyed by the same client address.
func TestLimitThroughTheHandlers(t *testing.T) {
	var reviews atomic.Int32
	accts := &recordingAccounts{}
	i := New(Config{
		DefaultClientID: "rotor", PasswordGrant: true,
		ExchangePolicy:       workload.Policy{"apps/*"},
		UnauthenticatedBurst: 2, UnauthenticatedPerSecond: 1,
		TrustedProxies: prefixes("10.0.0.0/8"),
		Clock:          clocktesting.NewFakePassiveClock(t0),
	}, Deps{Accounts: accts, Clients: testClients(t, publicClient("rotor", "rotor")), Exchange: strictReviewer{&reviews}, Introspectors: strictReviewer{&reviews}})
	h := i.Handler()
	send := func(peer, xff, body string) int {
		req := formRequest{method: http.MethodPost, target: PathToken, contentType: formType, body: body}.http()
		req.RemoteAddr = peer
		if xff != "" {
			req.Header.Set("X-Forwarded-For", xff)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code
	}
	exchange := "grant_type=" + GrantTokenExchange + "&subject_token=junk&subject_token_type=" + TokenTypeJWT

	// Client 198.51.100.7 through the proxy spends its budget...
	for range 2 {
		if got := send("10.0.0.1:1111", "198.51.100.7", exchange); got != 400 {
			t.Fatalf("status %d, want 400", got)
		}
	}
	if got := send("10.0.0.2:2222", "198.51.100.7", exchange); got != 429 {
		t.Fatalf("over the budget through another proxy: %d, want 429", got)
	}
	if n := reviews.Load(); n != 2 {
		t.Fatalf("%d TokenReviews, want 2: a throttled exchange makes none", n)
	}
	// ...and spoofing the header from outside the proxies does not help it...
	if got := send("198.51.100.7:3333", "203.0.113.1", exchange); got != 429 {
		t.Fatalf("spoofed header from an untrusted peer: %d, want 429", got)
	}
	// ...while another client behind the same proxy is not affected.
	if got := send("10.0.0.1:1111", "198.51.100.8", exchange); got != 400 {
		t.Fatalf("another client behind the proxy: %d, want 400", got)
	}
	// The login throttle gets the same client address.
	send("10.0.0.1:1111", "198.51.100.9", "grant_type=password&username=alice&password=pw")
	send("203.0.113.1:4444", "198.51.100.9", "grant_type=password&username=alice&password=pw")
	send("10.0.0.1:1111", "2001:db8::1", "grant_type=password&username=alice&password=pw")
	if want := []string{"198.51.100.9", "203.0.113.1", "2001:db8::1"}; fmt.Sprint(accts.addrs) != fmt.Sprint(want) {
		t.Fatalf("login throttle addresses %v, want %v", accts.addrs, want)
	}
}
