package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/crypto/bcrypt"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	identityv1alpha1 "rotor.dev/rotor/api/v1alpha1"
	"rotor.dev/rotor/pkg/dev/controlplane"
	rotorscheme "rotor.dev/rotor/pkg/scheme"
	"rotor.dev/rotor/pkg/server"
	"rotor.dev/rotor/pkg/sessions"
)

const (
	refreshNamespace = "bench-refresh"
	benchUser        = "bench"
)

// run is the outcome of one bounded run: how many operations succeeded in
// how long, each one's latency, and the first error if any failed.
type run struct {
	ops      int
	elapsed  time.Duration
	lat      []time.Duration
	errs     int
	firstErr error
}

// add records one worker's latencies and the error that stopped it (nil:
// none); the caller holds the lock the workers share.
func (r *run) add(lat []time.Duration, err error) {
	r.lat = append(r.lat, lat...)
	if err != nil {
		r.errs++
		if r.firstErr == nil {
			r.firstErr = err
		}
	}
}

func (r *run) merge(o run) {
	r.ops += o.ops
	r.elapsed += o.elapsed
	r.lat = append(r.lat, o.lat...)
	r.errs += o.errs
	if r.firstErr == nil {
		r.firstErr = o.firstErr
	}
}

func (r *run) rate() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(r.ops) / r.elapsed.Seconds()
}

func (r *run) String() string {
	s := sortedCopy(r.lat)
	out := fmt.Sprintf("**%.0f/s**, p50 %s, p99 %s (%s ops)", r.rate(), ms(percentile(s, 0.5)), ms(percentile(s, 0.99)), thousands(r.ops))
	if r.errs > 0 {
		out += fmt.Sprintf(", %d FAILED (first: %s)", r.errs, oneLine(r.firstErr.Error()))
	}
	return out
}

// parallel runs n workers that share total operations evenly, op(worker)
// each, and times the whole: the rate is operations over wall-clock time.
func parallel(n, total int, op func(worker int) error) run {
	var mu sync.Mutex
	res := run{}
	var wg sync.WaitGroup
	start := time.Now()
	for w := range n {
		wg.Add(1)
		per := total / n
		if w < total%n {
			per++
		}
		go func() {
			defer wg.Done()
			lat := make([]time.Duration, 0, per)
			var err error
			for range per {
				t := time.Now()
				if err = op(w); err != nil {
					// A failed refresh may leave the client without a
					// valid token: this worker stops.
					break
				}
				lat = append(lat, time.Since(t))
			}
			mu.Lock()
			res.add(lat, err)
			mu.Unlock()
		}()
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	res.ops = len(res.lat)
	return res
}

// issuerClient posts to the in-process rotor over loopback HTTP, keeping a
// connection per client alive (the default of 2 idle connections per host
// would make 8 clients reconnect all the time). With id set, every request
// authenticates the client with HTTP Basic (client_secret_basic).
type issuerClient struct {
	url        string
	hc         *http.Client
	id, secret string

	wiresOnce sync.Once
	wires     *wires // refreshes' connections (wire.go), made on first use
}

// loadClient is the HTTP client of every load generator: keep-alive
// connections enough for every worker, no compression.
func loadClient() *http.Client {
	return &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{MaxIdleConns: 64, MaxIdleConnsPerHost: 64, DisableCompression: true},
	}
}

type tokenReply struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in"`
	RefreshToken string `json:"refresh_token"`
	Error        string `json:"error"`
	Description  string `json:"error_description"`
}

// token posts form and requires an access token and a refresh token.
func (ic *issuerClient) token(ctx context.Context, form url.Values) (*tokenReply, error) {
	reply, err := ic.post(ctx, form)
	if err == nil && reply.RefreshToken == "" {
		err = errors.New("no refresh token")
	}
	return reply, err
}

// post posts form to /token and requires an access token.
func (ic *issuerClient) post(ctx context.Context, form url.Values) (*tokenReply, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ic.url+"/token", strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if ic.id != "" {
		basicAuth(req, ic.id, ic.secret)
	}
	resp, err := ic.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	reply := &tokenReply{}
	if err := json.Unmarshal(body, reply); err != nil {
		return nil, fmt.Errorf("%s: %q is not JSON", resp.Status, body)
	}
	if resp.StatusCode != http.StatusOK || reply.AccessToken == "" {
		return nil, fmt.Errorf("%s: %s: %s", resp.Status, reply.Error, reply.Description)
	}
	return reply, nil
}

// runInProcess starts rotor in this process (as the tests do), with the
// OAuth clients it serves registered first, and measures logins, refreshes
// and raw conditional updates against one control plane, then the
// client_credentials grant beside a bare handler doing the same work.
func runInProcess(ctx context.Context, c config, cp *controlplane.ControlPlane, log logr.Logger, r *report) error {
	scheme := rotorscheme.Scheme
	// The raw side has no client-side rate limit (QPS < 0): it measures
	// what the API server does, which is the limit rotor is held to.
	rawCfg := rest.CopyConfig(cp.Config)
	rawCfg.QPS, rawCfg.UserAgent = -1, "rotor-bench-raw"
	kc, err := client.New(rawCfg, client.Options{Scheme: scheme})
	if err != nil {
		return err
	}
	if err := kc.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: refreshNamespace}}); err != nil {
		return err
	}
	password, err := createAccount(ctx, kc, refreshNamespace)
	if err != nil {
		return err
	}
	// The clients, before rotor starts: the default (Public) one, the
	// Confidential one of the logins and refreshes, and the Confidential
	// one of client_credentials.
	if _, err := createClient(ctx, kc, refreshNamespace, defaultClientID, publicClientSpec()); err != nil {
		return err
	}
	refreshSecret, err := createClient(ctx, kc, refreshNamespace, refreshClientID,
		confidentialClientSpec(identityv1alpha1.GrantPassword, identityv1alpha1.GrantRefreshToken))
	if err != nil {
		return err
	}
	serviceSecret, err := createClient(ctx, kc, refreshNamespace, serviceClientID,
		confidentialClientSpec(identityv1alpha1.GrantClientCredentials))
	if err != nil {
		return err
	}

	progress("starting rotor in-process (default options, --default-client-id=%s, plain HTTP on 127.0.0.1)", defaultClientID)
	tally := &requestTally{}
	srv, issuerURL, stop, err := startInProcess(ctx, tally.config(cp.Config), c.rotorAPIQPS, log)
	if err != nil {
		return err
	}
	defer stop()
	if err := awaitServed(ctx, srv, defaultClientID, refreshClientID, serviceClientID); err != nil {
		return err
	}
	progress("OAuth clients %s (Public, default), %s and %s (Confidential) are Ready", defaultClientID, refreshClientID, serviceClientID)
	// What the API server saw of every resource rotor touches: a warm
	// refresh must be one write whatever else it reads (clients, Secrets).
	counter, err := newAPICounter(cp.Config, rotorResources...)
	if err != nil {
		return err
	}
	if !c.skipRefresh {
		// A request without client_id is the default client's.
		if _, err := (&issuerClient{url: issuerURL, hc: loadClient()}).token(ctx,
			url.Values{"grant_type": {"password"}, "username": {benchUser}, "password": {password}}); err != nil {
			return fmt.Errorf("login without client_id (the default client %s): %w", defaultClientID, err)
		}
		t := time.Now()
		ic := &issuerClient{url: issuerURL, hc: loadClient(), id: refreshClientID, secret: refreshSecret}
		if err := runRefresh(ctx, c, cp, ic, kc, counter, password, r); err != nil {
			return err
		}
		r.spent("logins and refreshes", time.Since(t))
	}
	if c.ccRequests > 0 {
		t := time.Now()
		if err := runClientCredentials(ctx, c, issuerURL, serviceSecret, counter, tally, r); err != nil {
			return fmt.Errorf("client_credentials measurement: %w", err)
		}
		r.spent("client_credentials", time.Since(t))
	}
	return nil
}

// runRefresh measures logins, refreshes, raw conditional updates of the
// same sessions and of the floor (Blobs as large as a stored session), the
// client (ic) authenticating on each login and refresh, and what each write
// costs the API server and etcd in CPU.
func runRefresh(ctx context.Context, c config, cp *controlplane.ControlPlane, ic *issuerClient, kc client.Client, counter *apiCounter, password string, r *report) error {
	authn := fmt.Sprintf("client authentication on: Confidential client %s, HTTP Basic", ic.id)
	// Logins: password throughput, the sessions the refresh clients hold,
	// and the API requests of a login.
	progress("%d password logins at concurrency %d (%s)", c.logins, c.loginConc, authn)
	tokens := make([]string, c.logins)
	var next atomic.Int64
	before, err := counter.snapshot(ctx)
	if err != nil {
		return err
	}
	logins := parallel(c.loginConc, c.logins, func(int) error {
		i := next.Add(1) - 1
		reply, err := ic.token(ctx, url.Values{"grant_type": {"password"}, "username": {benchUser}, "password": {password}})
		if err != nil {
			return err
		}
		tokens[i] = reply.RefreshToken
		return nil
	})
	after, err := counter.snapshot(ctx)
	if err != nil {
		return err
	}
	if logins.errs > 0 {
		return fmt.Errorf("logins failed: %w", logins.firstErr)
	}
	bound := bcryptBound()
	r.add("password grant", fmt.Sprintf("logins at concurrency %d (%s)", c.loginConc, authn), logins.String(),
		fmt.Sprintf("bounded by bcrypt cost 10 by design (%s per compare here: ≤ %.0f/s on %d cores)", ms(bound), float64(min(c.loginConc, nproc()))/bound.Seconds(), nproc()), "")
	apiLogin := after.minus(before)
	r.add("API requests", fmt.Sprintf("per login, %s (%d logins; apiserver_request_total of %s)", authn, c.logins, strings.Join(rotorResources, ", ")),
		apiLogin.perOp(c.logins, "POST", "GET"), "1 create (POST), 0 GET", check(exactly(apiLogin, c.logins, "POST")))

	// Refreshes, raw updates and floor updates, alternating in rounds.
	meter := newCPUMeter(cp)
	if meter.err != nil {
		progress("CPU per write not measured: %v", meter.err)
	}
	etcd := newEtcdSeeder(cp.EtcdURL())
	type level struct {
		rotor, raw, floor measured
		api               requestCounts
		// rtRatios and rotRatios are each round's RefreshToken PUT ÷ floor
		// and rotor refresh ÷ floor.
		rtRatios, rotRatios []float64
	}
	byLevel := map[int]*level{}
	// idle is the control plane's CPU while nothing of ours runs: the
	// background in every CPU-per-write figure.
	var idle measured
	// quiet waits a second with nothing of ours running, the control
	// plane's idle CPU sampled meanwhile; it also lets the eviction watch
	// deliver what an earlier run changed (a late event would evict the
	// entry a warm-up refresh writes).
	quiet := func() {
		q, _ := timed(meter, func() (run, error) {
			t := time.Now()
			time.Sleep(time.Second)
			return run{elapsed: time.Since(t)}, nil
		})
		idle.merge(q)
	}
	// warm refreshes every session of n clients once outside any
	// measurement, so that each measured refresh is warm.
	warm := func(n int) error {
		if w := parallel(n, n, func(w int) error { return refresh(ctx, ic, tokens, w) }); w.errs > 0 {
			return fmt.Errorf("warm-up refresh: %w", w.firstErr)
		}
		return nil
	}
	// A session as rotor leaves it after a refresh, and the floor sized to
	// match it.
	quiet()
	if err := warm(slices.Max(c.clients)); err != nil {
		return err
	}
	raw, err := etcd.get(ctx, sessionKey(tokens[0]))
	if err != nil {
		return fmt.Errorf("reading a stored session: %w", err)
	}
	session, err := measureStored(raw)
	if err != nil {
		return err
	}
	progress("a stored session is %d bytes; creating %d Blobs as large", session.total, slices.Max(c.clients))
	fl, err := newFloor(ctx, cp.Config, kc, etcd, refreshNamespace, slices.Max(c.clients), session.total)
	if err != nil {
		return fmt.Errorf("floor: %w", err)
	}
	kinds := []string{"rotor", "raw", "floor"}
	for round := range c.rounds {
		for _, n := range c.clients {
			lv := byLevel[n]
			if lv == nil {
				lv = &level{api: requestCounts{}}
				byLevel[n] = lv
			}
			per := max(1, c.refreshes/(c.rounds*n))
			// Each round starts with another kind, so that no kind always
			// follows the same one (the API server may still be busy with
			// the run before: garbage collection, watch delivery).
			order := append(slices.Clone(kinds[round%3:]), kinds[:round%3]...)
			progress("round %d/%d, %d clients: %d each of %s", round+1, c.rounds, n, per*n, strings.Join(order, ", "))
			var this struct{ rotor, raw, floor measured }
			for _, kind := range order {
				// Every run starts alike, whatever its kind: a quiet
				// second, one unmeasured operation of its own kind per
				// client (rotor's warms its cache; the raw side reads its
				// objects first), then 200 ms for the watches to deliver
				// what that wrote. A run that alone started after an idle
				// second, or alone without a warm-up, would pay for it:
				// measured, the API server's CPU per write rises right
				// after a pause.
				quiet()
				var rawOp func(int) error
				switch kind {
				case "rotor":
					err = warm(n)
				case "raw":
					if rawOp, err = rawUpdater(ctx, kc, tokens[:n]); err == nil {
						_, err = checked("raw warm-up", parallel(n, n, rawOp))
					}
				case "floor":
					_, err = checked("floor warm-up", parallel(n, n, func(w int) error { return fl.update(ctx, w) }))
				}
				if err != nil {
					return err
				}
				time.Sleep(200 * time.Millisecond)
				stopProfile, err := startProfile(c.refreshProfile, fmt.Sprintf("%s-%d-%d.pprof", kind, n, round+1))
				if err != nil {
					return err
				}
				switch kind {
				case "rotor":
					before, err := counter.snapshot(ctx)
					if err != nil {
						return err
					}
					this.rotor, _ = timed(meter, func() (run, error) {
						return parallel(n, per*n, func(w int) error { return refresh(ctx, ic, tokens, w) }), nil
					})
					after, err := counter.snapshot(ctx)
					if err != nil {
						return err
					}
					lv.api.add(after.minus(before))
				case "raw":
					if this.raw, err = timed(meter, func() (run, error) { return checked("raw updates", parallel(n, per*n, rawOp)) }); err != nil {
						return err
					}
				case "floor":
					if this.floor, err = timed(meter, func() (run, error) {
						return checked("floor updates", parallel(n, per*n, func(w int) error { return fl.update(ctx, w) }))
					}); err != nil {
						return err
					}
				}
				stopProfile()
			}
			lv.rotor.merge(this.rotor)
			lv.raw.merge(this.raw)
			lv.floor.merge(this.floor)
			lv.rtRatios = append(lv.rtRatios, this.raw.rate()/this.floor.rate())
			lv.rotRatios = append(lv.rotRatios, this.rotor.rate()/this.floor.rate())
		}
	}
	for _, n := range c.clients {
		lv := byLevel[n]
		area := fmt.Sprintf("refresh, %d client%s", n, map[bool]string{true: "s", false: ""}[n > 1])
		note := ""
		if lv.rotor.rate() > 0.9*c.rotorAPIQPS {
			// Past the burst, the session client's token bucket decides.
			note = fmt.Sprintf(" (at the session client's --api-qps %.0f)", c.rotorAPIQPS)
		}
		r.add(area, fmt.Sprintf("rotor: POST /token grant_type=refresh_token, %s (loopback HTTP, --api-qps %.0f)", authn, c.rotorAPIQPS), lv.rotor.String()+note, "", "")
		r.add(area, "limit: raw conditional Update of the same RefreshTokens (client-go, no client rate limit)", lv.raw.String(), "", "")
		ratio := lv.rotor.rate() / lv.raw.rate()
		target, verdict := "", ""
		if n == 8 {
			target, verdict = "≥ 0.7 at 8 clients", check(ratio >= 0.7)
		}
		r.add(area, "rotor ÷ limit", fmt.Sprintf("**%.2f**", ratio), target, verdict)
		r.add(area, fmt.Sprintf("floor: raw conditional Update of a minimal custom resource (%s.%s: one string field, no validation but its type, no CEL, defaults, annotations or labels) stored in as many bytes as a session (%d B)", floorKind, floorGroup, fl.size),
			lv.floor.String(), "", "")
		// The verdicts go by the median of the rounds' ratios: a burst of
		// load from elsewhere on a shared machine hits one round, and within
		// a round all three kinds ran back to back.
		rtRatio, rotRatio := median(lv.rtRatios), median(lv.rotRatios)
		rounds := fmt.Sprintf("median of %d rounds' ratios, the kinds' order rotating each round", len(lv.rtRatios))
		r.add(area, fmt.Sprintf("RefreshToken PUT ÷ floor (throughput, %s; in brackets the rounds' range, the ratio of the merged rates, and the floor's API-server CPU per write ÷ the RefreshToken PUT's)", rounds),
			fmt.Sprintf("**%.2f** (rounds %s; merged %.2f; CPU %s)", rtRatio, spread(lv.rtRatios), lv.raw.rate()/lv.floor.rate(), cpuRatio(lv.floor, lv.raw)), "≥ 0.9", check(rtRatio >= 0.9))
		target, verdict = "", ""
		if n == 8 {
			target, verdict = "≥ 0.85 at 8 clients", check(rotRatio >= 0.85)
		}
		r.add(area, fmt.Sprintf("rotor refresh ÷ floor (throughput, %s; in brackets as above, CPU the floor's ÷ the refresh's)", rounds),
			fmt.Sprintf("**%.2f** (rounds %s; merged %.2f; CPU %s)", rotRatio, spread(lv.rotRatios), lv.rotor.rate()/lv.floor.rate(), cpuRatio(lv.floor, lv.rotor)), target, verdict)
		r.add("API requests", fmt.Sprintf("per warm refresh, %d client%s, %s (apiserver_request_total of %s)", n, map[bool]string{true: "s", false: ""}[n > 1], authn, strings.Join(rotorResources, ", ")),
			lv.api.perOp(lv.rotor.ops, "PUT", "GET"), "1 update (PUT), 0 GET", check(exactly(lv.api, lv.rotor.ops, "PUT")))
	}
	r.add("stored session", "size of a refreshed session as the API server stores it in etcd (JSON, managedFields included)", fmt.Sprintf("**%d B**", session.total), "≤ 1024 B", check(session.total <= 1024))
	r.add("stored session", "where its bytes go", session.String(), "", "")
	r.add("stored session", "the floor's Blob as stored, for comparison", fmt.Sprintf("%d B: %s", fl.stored.total, fl.stored), "", "")
	if live, err := decodedSize(session.raw); err == nil {
		r.add("stored session", "a refreshed session decoded as the API server's watch cache holds it (unstructured, Go heap per object)", fmt.Sprintf("**%d B** (the floor's Blob: %s; rotor's Go type, as an API server of its own would hold it: %s)", live, orNA(decodedSize(fl.stored.raw)), orNA(typedSize(session.raw))), "", "")
	}
	if idle.elapsed > 0 {
		r.add("control plane", "CPU while idle between phases (included in every CPU per write above)",
			fmt.Sprintf("API server %.1f%%, etcd %.1f%% of a core (%s sampled)", 100*idle.cpu.api.Seconds()/idle.elapsed.Seconds(), 100*idle.cpu.etcd.Seconds()/idle.elapsed.Seconds(), idle.elapsed.Round(time.Second)), "", "")
	}
	if c.apiProfile != "" {
		if err := profileAPIServer(ctx, c, cp, meter, ic, kc, tokens, fl, r); err != nil {
			return fmt.Errorf("profiling the API server: %w", err)
		}
	}
	return nil
}

// spread is the range of v.
func spread(v []float64) string {
	return fmt.Sprintf("%.2f–%.2f", slices.Min(v), slices.Max(v))
}

// cpuRatio is a's API-server CPU per write over b's.
func cpuRatio(a, b measured) string {
	if a.apiCPU() == 0 || b.apiCPU() == 0 {
		return "not measured"
	}
	return fmt.Sprintf("%.2f", float64(a.apiCPU())/float64(b.apiCPU()))
}

// checked turns a run with failures into an error.
func checked(what string, res run) (run, error) {
	if res.errs > 0 {
		return res, fmt.Errorf("%s: %w", what, res.firstErr)
	}
	return res, nil
}

// profileAPIServer takes a CPU profile of the API server during each kind
// of write from the most clients: rotor's refresh, the raw RefreshToken
// PUT and the floor's Blob PUT, each load running for as long as the
// profile.
func profileAPIServer(ctx context.Context, c config, cp *controlplane.ControlPlane, meter *cpuMeter, ic *issuerClient, kc client.Client, tokens []string, fl *floor, r *report) error {
	p, err := newAPIProfiler(cp.Config, c.apiProfile, c.apiProfileSeconds)
	if err != nil {
		return err
	}
	n := slices.Max(c.clients)
	// As before a measured refresh: let the eviction watch deliver the raw
	// updates, then warm every session.
	time.Sleep(time.Second)
	if warm := parallel(n, n, func(w int) error { return refresh(ctx, ic, tokens, w) }); warm.errs > 0 {
		return fmt.Errorf("warm-up refresh: %w", warm.firstErr)
	}
	time.Sleep(200 * time.Millisecond)
	for _, ph := range []struct {
		name, what string
		// op is made when the phase starts: the raw updater reads the
		// sessions as the refreshes before it left them.
		op func() (func(int) error, error)
	}{
		{"refresh", "rotor refresh", func() (func(int) error, error) {
			return func(w int) error { return refresh(ctx, ic, tokens, w) }, nil
		}},
		{"refreshtoken-put", "raw RefreshToken PUT", func() (func(int) error, error) { return rawUpdater(ctx, kc, tokens[:n]) }},
		{"floor-put", "floor (Blob) PUT", func() (func(int) error, error) {
			return func(w int) error { return fl.update(ctx, w) }, nil
		}},
	} {
		op, err := ph.op()
		if err != nil {
			return err
		}
		progress("%s from %d clients for %ds under a CPU profile of the API server", ph.what, n, p.seconds)
		m, path, err := p.profile(ctx, ph.name, n, meter, op)
		if err != nil {
			return err
		}
		r.add("API server CPU profile", fmt.Sprintf("%s, %d clients, %ds: go tool pprof -top bin/k8s/kube-apiserver %s", ph.what, n, p.seconds, path), m.String(), "", "")
	}
	return nil
}

// exactly reports whether counts are ops requests of verb, all successful,
// and no request of another verb (watches aside).
func exactly(counts requestCounts, ops int, verb string) bool {
	for k, v := range counts {
		switch {
		case k.verb == "WATCH":
		case k.verb != verb, !strings.HasPrefix(k.code, "2"):
			if v > 0 {
				return false
			}
		}
	}
	return counts.verb(verb) == float64(ops)
}

// refresh redeems worker w's refresh token and keeps the new one.
func refresh(ctx context.Context, ic *issuerClient, tokens []string, w int) error {
	ic.wiresOnce.Do(func() { ic.wires = newWires(ic) })
	var reply *tokenReply
	var err error
	if ic.wires != nil {
		reply, err = ic.wires.refresh(ctx, w, tokens[w])
	} else {
		reply, err = ic.token(ctx, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tokens[w]}})
	}
	if err != nil {
		return err
	}
	tokens[w] = reply.RefreshToken
	return nil
}

// rawFieldOwner is the field manager of the raw updates: rotor's own
// (pkg/server: the session client's user agent), so that a session written
// by both looks as rotor alone leaves it. The floor's Blobs use it too.
const rawFieldOwner = "rotor-issuer"

// rawUpdater prepares what a refresh writes, straight through the API:
// each worker reads its session once, then each op(worker) updates it,
// conditional on the resourceVersion the previous one returned. The write
// has the size and shape of a rotation (a new 43-byte hash, rotations,
// lastUsedAt, expiresAt and the expiry annotation, managedFields cleared)
// but keeps secretHash, so the client's refresh token still works in the
// next round.
func rawUpdater(ctx context.Context, kc client.Client, tokens []string) (func(w int) error, error) {
	objs := make([]*identityv1alpha1.RefreshToken, len(tokens))
	for i, tok := range tokens {
		name, _, _ := strings.Cut(tok, ".")
		objs[i] = &identityv1alpha1.RefreshToken{}
		if err := kc.Get(ctx, client.ObjectKey{Namespace: refreshNamespace, Name: name}, objs[i]); err != nil {
			return nil, err
		}
	}
	return func(w int) error {
		now := time.Now().Truncate(time.Second)
		next := objs[w].DeepCopy()
		next.Spec.Session.PreviousSecretHash = randomHash()
		next.Spec.Session.Rotations++
		next.Spec.Session.LastUsedAt = metav1.NewTime(now)
		next.Spec.ExpiresAt = metav1.NewTime(minTime(now.Add(7*24*time.Hour), next.Spec.Session.AbsoluteExpiresAt.Time))
		next.Labels[sessions.ExpiresAtLabel] = strconv.FormatInt(next.Spec.ExpiresAt.Unix(), 10)
		// As rotor's update does (sessions.Store.update): a list of one
		// empty entry clears managedFields, so the object stays as small as
		// rotor keeps it. A new slice each time: decoding the answer reuses
		// the request's.
		next.ManagedFields = []metav1.ManagedFieldsEntry{{}}
		if err := kc.Update(ctx, next, client.FieldOwner(rawFieldOwner)); err != nil {
			return err
		}
		objs[w] = next
		return nil
	}, nil
}

func randomHash() string {
	sum := sha256.Sum256([]byte(rand.Text()))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// startInProcess runs rotor as the tests do (server.New + Start, plain
// HTTP, no leader election, metrics and probes off, the default client
// defaultClientID, --api-qps apiQPS, defaults otherwise) and waits until it
// is ready.
func startInProcess(ctx context.Context, cfg *rest.Config, apiQPS float64, log logr.Logger) (*server.Server, string, func(), error) {
	o := server.DefaultOptions()
	// The session client's limiter (default 500 a second per replica) would
	// be the ceiling of every refresh measurement on a machine whose API
	// server takes more: the bench measures rotor's own cost against the API
	// server's limit, under --rotor-api-qps.
	o.APIQPS, o.APIBurst = apiQPS, int(2*apiQPS)
	o.Namespace = refreshNamespace
	o.InsecureHTTP = true
	o.LeaderElect = false
	// `rotor serve` has no default client (client_id required); as `rotor
	// dev` does, requests without client_id are the Public client's.
	o.DefaultClientID = defaultClientID
	o.MetricsAddress, o.ProbeAddress = "0", "0"
	// The bench logs in hundreds of times as one account from one address:
	// the abuse limits would measure themselves, not the refresh path.
	o.MaxSessionsPerSubject, o.SessionsPerSubjectBurst, o.UnauthenticatedBurst = 0, 0, 0
	// The issuer URL must be what clients dial, so pick the port first.
	addr, err := freeAddr()
	if err != nil {
		return nil, "", nil, err
	}
	o.ListenAddress, o.IssuerURL = addr, "http://"+addr
	srv, err := server.New(rest.CopyConfig(cfg), o, log)
	if err != nil {
		return nil, "", nil, err
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Start(sctx) }()
	stop := func() {
		cancel()
		if err := <-done; err != nil {
			progress("in-process rotor stopped: %v", err)
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, keyOK := srv.Keys.Active()
		if keyOK && srv.Accounts.ReadyCheck(nil) == nil && srv.Evictor.Synced() {
			return srv, o.IssuerURL, stop, nil
		}
		select {
		case err := <-done:
			cancel()
			return nil, "", nil, fmt.Errorf("rotor stopped before it was ready: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			stop()
			return nil, "", nil, errors.New("rotor not ready after 60s")
		}
	}
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// bcryptBound times one bcrypt compare at cost 10, the work of a login.
func bcryptBound() time.Duration {
	hash, err := bcrypt.GenerateFromPassword([]byte("benchmark-password"), bcrypt.DefaultCost)
	if err != nil {
		return 0
	}
	best := time.Duration(1 << 62)
	for range 3 {
		t := time.Now()
		_ = bcrypt.CompareHashAndPassword(hash, []byte("benchmark-password"))
		best = min(best, time.Since(t))
	}
	return best
}
