package issuer_test

// A flood of junk (random refresh tokens, revocations, token exchanges and
// introspection callers, each of which would cost an API request) at several
// times --api-qps, against one replica and the real API server, while
// legitimate clients refresh. Loopback has one address, so the replica
// trusts 127.0.0.0/8 as a proxy and every client names its address in
// X-Forwarded-For.

import (
	"crypto/rand"
	"encoding/base32"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	clocktesting "k8s.io/utils/clock/testing"
)

// floodSetup is the replica's and the flood's shape.
type floodSetup struct {
	apiQPS, apiBurst int
	// burst and perSecond are --unauthenticated-*; burst 0 is no limit.
	burst     int
	perSecond float64
	// junkPerSecond is the flood's rate, for floodFor or maxJunk requests.
	junkPerSecond int
	floodFor      time.Duration
	maxJunk       int
	// baselineFor is how long the legitimate clients refresh alone first.
	baselineFor time.Duration
	legit       int
	legitPause  time.Duration
}

// floodResult is what a flood did.
type floodResult struct {
	baseline, during legitRun
	// junk counts answers by attacker address, then by status ("429",
	// "400", "503 throttled", ...).
	junk map[string]map[string]int
	// junkSent is the number of junk requests sent; floodTook the time
	// from the first to the last answer of the flood phase.
	junkSent  int
	floodTook time.Duration
	// apiDuring counts the issuer's API requests during the flood phase.
	apiDuring int64
	// badThrottled counts throttled answers missing Retry-After or the
	// temporarily_unavailable JSON error.
	badThrottled int
}

type legitRun struct {
	ok       int
	failures []string
	latency  []time.Duration
}

func (l legitRun) percentile(p float64) time.Duration {
	if len(l.latency) == 0 {
		return 0
	}
	s := slices.Clone(l.latency)
	slices.Sort(s)
	return s[min(len(s)-1, int(p*float64(len(s))))]
}

// The lone flooder sends half of the junk from one address; the pool
// spreads the other half over four.
const loneAttacker = "203.0.113.66"

var attackerPool = []string{"198.51.100.1", "198.51.100.2", "198.51.100.3", "198.51.100.4"}

func TestJunkFloodLeavesLegitimateRefreshesWorking(t *testing.T) {
	s := floodSetup{
		apiQPS: 20, apiBurst: 20,
		burst: 4, perSecond: 1,
		junkPerSecond: 100, floodFor: 3 * time.Second, maxJunk: 300,
		baselineFor: 2 * time.Second,
		legit:       4, legitPause: 500 * time.Millisecond,
	}
	res := runFlood(t, s)

	t.Logf("legitimate refreshes without the flood: %d, p50 %v, p99 %v", res.baseline.ok, res.baseline.percentile(0.5), res.baseline.percentile(0.99))
	t.Logf("legitimate refreshes during the flood:  %d, p50 %v, p99 %v, %d failed", res.during.ok, res.during.percentile(0.5), res.during.percentile(0.99), len(res.during.failures))
	t.Logf("junk: %d requests in %v (%.0f/s, %.1fx --api-qps); answers by address: %v",
		res.junkSent, res.floodTook.Round(time.Millisecond), float64(res.junkSent)/res.floodTook.Seconds(),
		float64(res.junkSent)/res.floodTook.Seconds()/float64(s.apiQPS), res.junk)
	t.Logf("issuer API requests during the flood: %d (--api-qps %d x %v + --api-burst %d = %.0f)",
		res.apiDuring, s.apiQPS, res.floodTook.Round(time.Millisecond), s.apiBurst, float64(s.apiQPS)*res.floodTook.Seconds()+float64(s.apiBurst))

	if len(res.baseline.failures) > 0 {
		t.Errorf("refreshes failed without a flood: %v", res.baseline.failures)
	}
	if len(res.during.failures) > 0 {
		t.Errorf("%d of %d legitimate refreshes failed during the flood: %v", len(res.during.failures), res.during.ok+len(res.during.failures), res.during.failures)
	}
	if min := s.legit * int(s.floodFor/(2*s.legitPause)); res.during.ok < min {
		t.Errorf("%d legitimate refreshes during the flood, want at least %d", res.during.ok, min)
	}
	if res.junkSent < s.junkPerSecond*int(s.floodFor/time.Second)*3/4 {
		t.Errorf("only %d junk requests were sent: the flood did not happen", res.junkSent)
	}
	// Each attacker address got its budget and 429s (503 on /revoke) after.
	admitted := 0
	for _, addr := range append([]string{loneAttacker}, attackerPool...) {
		answers := res.junk[addr]
		throttled := answers["429"] + answers["503 throttled"]
		if throttled == 0 {
			t.Errorf("%s was never throttled: %v", addr, answers)
		}
		for status, n := range answers {
			if status != "429" && status != "503 throttled" {
				admitted += n
			}
		}
	}
	if res.badThrottled > 0 {
		t.Errorf("%d throttled answers without Retry-After and a temporarily_unavailable error", res.badThrottled)
	}
	// At most the burst and the refill of each address got through (the
	// replica's clock follows real time; +1 for rounding).
	budget := (1 + len(attackerPool)) * (s.burst + int(s.perSecond*res.floodTook.Seconds()) + 1)
	if admitted > budget {
		t.Errorf("%d junk requests admitted, want at most %d", admitted, budget)
	}
	// The API server saw no more than --api-qps allows over the flood (+2
	// for requests straddling the window): the junk built no queue. (The
	// client-side limit itself is per resource kind, so it alone would let
	// RefreshToken reads and TokenReviews through at twice that.)
	if limit := int64(float64(s.apiQPS)*res.floodTook.Seconds()) + int64(s.apiBurst) + 2; res.apiDuring > limit {
		t.Errorf("%d issuer API requests during the flood, want at most %d", res.apiDuring, limit)
	}
}

// runFlood starts a replica shaped by s, measures the legitimate clients
// alone, then during the flood.
func runFlood(t *testing.T, s floodSetup) floodResult {
	ns := env.Namespace(t)
	const password = "pw-flood-12345"
	createAccount(t, ns, "flo", password)
	calls := &issuerCalls{}
	cfg := rest.CopyConfig(env.Config)
	cfg.Wrap(calls.wrap)
	clk := newClock()
	r := startReplica(t, ns, clk, throughAPI(cfg), func(o *replicaOptions) {
		o.APIQPS, o.APIBurst = float64(s.apiQPS), s.apiBurst
		o.UnauthenticatedBurst, o.UnauthenticatedPerSecond = s.burst, s.perSecond
		o.TrustedProxies = []string{"127.0.0.0/8"}
		o.TokenExchangeAllow = []string{ns + "/*"}
		o.IntrospectionAllow = []string{ns + "/*"}
	})
	// The budgets refill with the replica's clock: let it follow real time.
	defer followRealTime(clk)()

	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: 30 * time.Second}
	defer hc.CloseIdleConnections()

	// Each legitimate client logs in once, from its own address.
	tokens := make([]string, s.legit)
	for i := range tokens {
		rep := sendFrom(hc, r.URL+"/token", legitAddr(i), url.Values{"grant_type": {"password"}, "username": {"flo"}, "password": {password}}, "")
		if rep.status != http.StatusOK {
			t.Fatalf("login: %d %s", rep.status, rep.body)
		}
		tokens[i] = rep.refreshToken
	}

	var res floodResult
	res.baseline = refreshLoop(hc, r.URL, tokens, s, func() bool { return false }, s.baselineFor)

	// The flood: a dispatcher at junkPerSecond hands requests to workers,
	// so that slow answers do not slow the flood down.
	type job struct {
		addr string
		kind int
	}
	jobs := make(chan job, 64)
	var mu sync.Mutex
	res.junk = map[string]map[string]int{}
	var badThrottled atomic.Int32
	var workers sync.WaitGroup
	for range 128 {
		workers.Add(1)
		go func() {
			defer workers.Done()
			for j := range jobs {
				status := sendJunk(hc, r.URL, j.addr, j.kind, &badThrottled)
				mu.Lock()
				if res.junk[j.addr] == nil {
					res.junk[j.addr] = map[string]int{}
				}
				res.junk[j.addr][status]++
				mu.Unlock()
			}
		}()
	}
	apiBefore := calls.n.Load()
	start := time.Now()
	var floodDone atomic.Bool
	var legitDone = make(chan legitRun)
	go func() { legitDone <- refreshLoop(hc, r.URL, tokens, s, floodDone.Load, 0) }()
	tick := time.NewTicker(time.Second / time.Duration(s.junkPerSecond))
	for n := 0; n < s.maxJunk && time.Since(start) < s.floodFor; n++ {
		addr := loneAttacker
		if n%2 == 1 {
			addr = attackerPool[(n/2)%len(attackerPool)]
		}
		// The lone attacker cycles through the kinds; each pool address
		// does too, more slowly.
		kind := n / 2 % 4
		if n%2 == 1 {
			kind = n / 2 / len(attackerPool) % 4
		}
		jobs <- job{addr: addr, kind: kind}
		res.junkSent++
		<-tick.C
	}
	tick.Stop()
	close(jobs)
	workers.Wait()
	floodDone.Store(true)
	res.during = <-legitDone
	res.floodTook = time.Since(start)
	res.apiDuring = calls.n.Load() - apiBefore
	res.badThrottled = int(badThrottled.Load())
	return res
}

// refreshLoop runs one goroutine per token: refresh, pause, repeat, for d
// (or until done reports true when d is 0). Every client keeps its rotated
// token.
func refreshLoop(hc *http.Client, base string, tokens []string, s floodSetup, done func() bool, d time.Duration) legitRun {
	var mu sync.Mutex
	var run legitRun
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for i := range tokens {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				if d > 0 && time.Now().After(deadline) || d == 0 && done() {
					return
				}
				start := time.Now()
				rep := sendFrom(hc, base+"/token", legitAddr(i), url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tokens[i]}}, "")
				took := time.Since(start)
				mu.Lock()
				if rep.status == http.StatusOK {
					run.ok++
					run.latency = append(run.latency, took)
					tokens[i] = rep.refreshToken
				} else {
					run.failures = append(run.failures, fmt.Sprintf("client %d: %d %s", i, rep.status, rep.body))
				}
				mu.Unlock()
				if rep.status != http.StatusOK {
					return // its token may be gone; one failure is enough to report
				}
				time.Sleep(s.legitPause)
			}
		}()
	}
	wg.Wait()
	return run
}

func legitAddr(i int) string { return fmt.Sprintf("10.0.1.%d", i+1) }

// Junk kinds: a random refresh token (a GET), a revocation of one (a GET),
// an exchange of a random JWT-shaped token and an introspection by a random
// caller (a TokenReview each).
const (
	junkRefresh = iota
	junkRevoke
	junkExchange
	junkIntrospect
)

// sendJunk sends one junk request and returns its answer's class.
func sendJunk(hc *http.Client, base, addr string, kind int, badThrottled *atomic.Int32) string {
	var rep reply
	switch kind {
	case junkRefresh:
		rep = sendFrom(hc, base+"/token", addr, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {randomRefreshToken()}}, "")
	case junkRevoke:
		rep = sendFrom(hc, base+"/revoke", addr, url.Values{"token": {randomRefreshToken()}}, "")
	case junkExchange:
		rep = sendFrom(hc, base+"/token", addr, url.Values{
			"grant_type":         {"urn:ietf:params:oauth:grant-type:token-exchange"},
			"subject_token":      {randomJWT()},
			"subject_token_type": {"urn:ietf:params:oauth:token-type:jwt"},
		}, "")
	case junkIntrospect:
		rep = sendFrom(hc, base+"/introspect", addr, url.Values{"token": {randomRefreshToken()}}, randomJWT())
	}
	throttled := rep.status == http.StatusTooManyRequests ||
		rep.status == http.StatusServiceUnavailable && strings.Contains(rep.description, "too many failed requests")
	if !throttled {
		return fmt.Sprint(rep.status)
	}
	if rep.header.Get("Retry-After") == "" || rep.code != "temporarily_unavailable" {
		badThrottled.Add(1)
	}
	if rep.status == http.StatusServiceUnavailable {
		return "503 throttled"
	}
	return "429"
}

type reply struct {
	status       int
	header       http.Header
	body         string
	code         string
	description  string
	refreshToken string
}

// sendFrom posts form as a client at addr behind the (trusted) loopback
// proxy; bearer, if set, is the Authorization.
func sendFrom(hc *http.Client, endpoint, addr string, form url.Values, bearer string) reply {
	req, err := http.NewRequest(http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return reply{body: err.Error()}
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Forwarded-For", addr)
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return reply{body: err.Error()}
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	rep := reply{status: resp.StatusCode, header: resp.Header, body: strings.TrimSpace(string(body))}
	var fields struct {
		Error        string `json:"error"`
		Description  string `json:"error_description"`
		RefreshToken string `json:"refresh_token"`
	}
	if json.Unmarshal(body, &fields) == nil {
		rep.code, rep.description, rep.refreshToken = fields.Error, fields.Description, fields.RefreshToken
	}
	return rep
}

// randomRefreshToken has the shape of a refresh token (so it passes the
// format check and costs a GET) and names no session.
func randomRefreshToken() string {
	name := make([]byte, 16)
	secret := make([]byte, 32)
	_, _ = rand.Read(name)
	_, _ = rand.Read(secret)
	return "rt-" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(name)) + "." +
		base64.RawURLEncoding.EncodeToString(secret)
}

func randomJWT() string {
	b := make([]byte, 96)
	_, _ = rand.Read(b)
	enc := base64.RawURLEncoding
	return enc.EncodeToString([]byte(`{"alg":"RS256","kid":"junk"}`)) + "." + enc.EncodeToString(b[:48]) + "." + enc.EncodeToString(b[48:])
}

// issuerCalls counts the requests of the issuer's own API client (user
// agent rotor-issuer: sessions and TokenReviews), watches aside.
type issuerCalls struct{ n atomic.Int64 }

func (c *issuerCalls) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripFunc(func(req *http.Request) (*http.Response, error) {
		if req.Header.Get("User-Agent") == "rotor-issuer" && req.URL.Query().Get("watch") != "true" {
			c.n.Add(1)
		}
		return rt.RoundTrip(req)
	})
}

// followRealTime moves clk with real time until the returned func is called.
func followRealTime(clk *clocktesting.FakeClock) func() {
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		last := time.Now()
		for {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			now := time.Now()
			clk.Step(now.Sub(last))
			last = now
		}
	}()
	return func() { close(stop); <-done }
}
