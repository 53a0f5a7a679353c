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
	"sigs.k8s.io/yaml"

	identityv1alpha1 "rotor.dev/rotor/api/v1alpha1"
	"rotor.dev/rotor/pkg/accounts"
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
			var errs int
			var first error
			for range per {
				t := time.Now()
				if err := op(w); err != nil {
					errs++
					if first == nil {
						first = err
					}
					// A failed refresh may leave the client without a
					// valid token: this worker stops.
					break
				}
				lat = append(lat, time.Since(t))
			}
			mu.Lock()
			res.lat = append(res.lat, lat...)
			res.errs += errs
			if res.firstErr == nil {
				res.firstErr = first
			}
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
	password := rand.Text()
	manifest, err := accounts.Manifest(benchUser, refreshNamespace, []string{"bench"}, []byte(password))
	if err != nil {
		return err
	}
	secret := &corev1.Secret{}
	if err := yaml.UnmarshalStrict(manifest, secret); err != nil {
		return err
	}
	if err := kc.Create(ctx, secret); err != nil {
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
	srv, issuerURL, stop, err := startInProcess(ctx, tally.config(cp.Config), log)
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
		if err := runRefresh(ctx, c, ic, kc, counter, password, r); err != nil {
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

// runRefresh measures logins, refreshes and raw conditional updates, the
// client (ic) authenticating on each login and refresh.
func runRefresh(ctx context.Context, c config, ic *issuerClient, kc client.Client, counter *apiCounter, password string, r *report) error {
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

	// Refreshes and raw updates, alternating in rounds.
	byLevel := map[int]*struct {
		rotor, raw run
		api        requestCounts
	}{}
	for round := range c.rounds {
		for _, n := range c.clients {
			lv := byLevel[n]
			if lv == nil {
				lv = &struct {
					rotor, raw run
					api        requestCounts
				}{api: requestCounts{}}
				byLevel[n] = lv
			}
			per := max(1, c.refreshes/(c.rounds*n))
			progress("round %d/%d, %d clients: %d rotor refreshes, then %d raw updates", round+1, c.rounds, n, per*n, per*n)

			// The raw updates of the previous run changed these objects;
			// give the eviction watch time to deliver them all (a late one
			// would evict the entry the warm-up writes), then refresh once
			// outside the window so every measured refresh is warm.
			time.Sleep(time.Second)
			warm := parallel(n, n, func(w int) error { return refresh(ctx, ic, tokens, w) })
			if warm.errs > 0 {
				return fmt.Errorf("warm-up refresh: %w", warm.firstErr)
			}
			time.Sleep(200 * time.Millisecond)
			before, err := counter.snapshot(ctx)
			if err != nil {
				return err
			}
			rot := parallel(n, per*n, func(w int) error { return refresh(ctx, ic, tokens, w) })
			after, err := counter.snapshot(ctx)
			if err != nil {
				return err
			}
			lv.rotor.merge(rot)
			lv.api.add(after.minus(before))

			raw, err := rawUpdates(ctx, kc, tokens[:n], per)
			if err != nil {
				return err
			}
			lv.raw.merge(raw)
		}
	}
	for _, n := range c.clients {
		lv := byLevel[n]
		area := fmt.Sprintf("refresh, %d client%s", n, map[bool]string{true: "s", false: ""}[n > 1])
		note := ""
		if lv.rotor.rate() > 0.9*server.DefaultOptions().APIQPS {
			// Past the burst, the session client's token bucket decides.
			note = fmt.Sprintf(" (at the session client's --api-qps %.0f)", server.DefaultOptions().APIQPS)
		}
		r.add(area, fmt.Sprintf("rotor: POST /token grant_type=refresh_token, %s (loopback HTTP)", authn), lv.rotor.String()+note, "", "")
		r.add(area, "limit: raw conditional Update of the same RefreshTokens (client-go, no client rate limit)", lv.raw.String(), "", "")
		ratio := lv.rotor.rate() / lv.raw.rate()
		target, verdict := "", ""
		if n == 8 {
			target, verdict = "≥ 0.7 at 8 clients", check(ratio >= 0.7)
		}
		r.add(area, "rotor ÷ limit", fmt.Sprintf("**%.2f**", ratio), target, verdict)
		r.add("API requests", fmt.Sprintf("per warm refresh, %d client%s, %s (apiserver_request_total of %s)", n, map[bool]string{true: "s", false: ""}[n > 1], authn, strings.Join(rotorResources, ", ")),
			lv.api.perOp(lv.rotor.ops, "PUT", "GET"), "1 update (PUT), 0 GET", check(exactly(lv.api, lv.rotor.ops, "PUT")))
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
	reply, err := ic.token(ctx, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tokens[w]}})
	if err != nil {
		return err
	}
	tokens[w] = reply.RefreshToken
	return nil
}

// rawUpdates does what a refresh writes, straight through the API: each
// worker reads its session once, then updates it per times, each update
// conditional on the resourceVersion the previous one returned. The write
// has the size and shape of a rotation (a new 43-byte hash, rotations,
// lastUsedAt, expiresAt and the expiry annotation) but keeps secretHash, so
// the client's refresh token still works in the next round.
func rawUpdates(ctx context.Context, kc client.Client, tokens []string, per int) (run, error) {
	objs := make([]*identityv1alpha1.RefreshToken, len(tokens))
	for i, tok := range tokens {
		name, _, _ := strings.Cut(tok, ".")
		objs[i] = &identityv1alpha1.RefreshToken{}
		if err := kc.Get(ctx, client.ObjectKey{Namespace: refreshNamespace, Name: name}, objs[i]); err != nil {
			return run{}, err
		}
	}
	res := parallel(len(tokens), per*len(tokens), func(w int) error {
		now := time.Now().Truncate(time.Second)
		next := objs[w].DeepCopy()
		next.Spec.PreviousSecretHash = randomHash()
		next.Spec.Rotations++
		next.Spec.LastUsedAt = metav1.NewTime(now)
		next.Spec.ExpiresAt = metav1.NewTime(minTime(now.Add(7*24*time.Hour), next.Spec.AbsoluteExpiresAt.Time))
		next.Annotations[sessions.ExpiresAtAnnotation] = next.Spec.ExpiresAt.UTC().Format(time.RFC3339)
		if err := kc.Update(ctx, next); err != nil {
			return err
		}
		objs[w] = next
		return nil
	})
	if res.errs > 0 {
		return res, fmt.Errorf("raw updates: %w", res.firstErr)
	}
	return res, nil
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
// defaultClientID, defaults otherwise) and waits until it is ready.
func startInProcess(ctx context.Context, cfg *rest.Config, log logr.Logger) (*server.Server, string, func(), error) {
	o := server.DefaultOptions()
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
