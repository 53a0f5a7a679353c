package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// The client_credentials measurement: rotor's token endpoint against a
// bare net/http handler doing the work any issuer must do for that grant,
// on the same machine in the same process, with the same load generator.
//
// A client_credentials request (RFC 6749 section 4.4) makes no API request:
// rotor authenticates the client from its informer caches and signs a
// token. So its limit is not the API server but that work itself: read the
// form and the Basic credentials, hash the presented secret and compare it
// in constant time, sign one ES256 JWT, encode the JSON answer. The bare
// handler does exactly that and nothing else, behind an http.Server with
// rotor's settings.

// ccTTL is the bare handler's token lifetime, rotor's default
// --access-token-ttl (the bench's client overrides nothing).
const ccTTL = 20 * time.Minute

// bareIssuer is the limit: the client_credentials grant and nothing more.
type bareIssuer struct {
	issuer   string
	clientID string
	// hash is the SHA-256 of the client's secret.
	hash     [32]byte
	audience []string
	key      *ecdsa.PrivateKey
	// header is the encoded JOSE header, the same for every token (rotor's
	// Minter caches it per key too).
	header string
}

// bareClaims are the claims rotor's client_credentials tokens carry
// (pkg/tokens, RFC 9068): iss, sub, aud, exp, iat, jti, client_id, and
// scope when one is granted.
type bareClaims struct {
	Issuer    string   `json:"iss"`
	Subject   string   `json:"sub"`
	Audience  []string `json:"aud"`
	ExpiresAt int64    `json:"exp"`
	IssuedAt  int64    `json:"iat"`
	ID        string   `json:"jti"`
	ClientID  string   `json:"client_id"`
	Scope     string   `json:"scope,omitempty"`
}

type bareResponse struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int64  `json:"expires_in"`
	Scope       string `json:"scope,omitempty"`
}

func newBareIssuer(issuer, clientID, secret string) (*bareIssuer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	// A kid of a JWK thumbprint's length, as rotor's.
	kid := make([]byte, 32)
	_, _ = rand.Read(kid)
	header, err := json.Marshal(map[string]string{"alg": "ES256", "kid": base64.RawURLEncoding.EncodeToString(kid), "typ": "at+jwt"})
	if err != nil {
		return nil, err
	}
	return &bareIssuer{
		issuer: issuer, clientID: clientID, hash: sha256.Sum256([]byte(secret)), audience: []string{benchAudience},
		key: key, header: base64.RawURLEncoding.EncodeToString(header),
	}, nil
}

func (b *bareIssuer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, `{"error":"invalid_request"}`, http.StatusMethodNotAllowed)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		http.Error(w, `{"error":"invalid_request"}`, http.StatusBadRequest)
		return
	}
	if r.PostForm.Get("grant_type") != "client_credentials" {
		http.Error(w, `{"error":"unsupported_grant_type"}`, http.StatusBadRequest)
		return
	}
	user, pass, ok := r.BasicAuth()
	id, err1 := url.QueryUnescape(user)
	secret, err2 := url.QueryUnescape(pass)
	if !ok || err1 != nil || err2 != nil {
		http.Error(w, `{"error":"invalid_client"}`, http.StatusUnauthorized)
		return
	}
	sum := sha256.Sum256([]byte(secret))
	if subtle.ConstantTimeCompare(sum[:], b.hash[:]) != 1 || id != b.clientID {
		http.Error(w, `{"error":"invalid_client"}`, http.StatusUnauthorized)
		return
	}
	now := time.Now().Truncate(time.Second)
	var jti [16]byte
	_, _ = rand.Read(jti[:])
	payload, err := json.Marshal(bareClaims{
		Issuer: b.issuer, Subject: "client:" + id, Audience: b.audience,
		ExpiresAt: now.Add(ccTTL).Unix(), IssuedAt: now.Unix(), ID: base64.RawURLEncoding.EncodeToString(jti[:]), ClientID: id,
	})
	if err != nil {
		http.Error(w, `{"error":"server_error"}`, http.StatusInternalServerError)
		return
	}
	signing := b.header + "." + base64.RawURLEncoding.EncodeToString(payload)
	sig, err := jwt.SigningMethodES256.Sign(signing, b.key)
	if err != nil {
		http.Error(w, `{"error":"server_error"}`, http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	_ = json.NewEncoder(w).Encode(bareResponse{
		AccessToken: signing + "." + base64.RawURLEncoding.EncodeToString(sig), TokenType: "Bearer", ExpiresIn: int64(ccTTL / time.Second),
	})
}

// startBare serves b on a loopback port with the http.Server settings of
// rotor's issuer (pkg/server), and returns its URL and a stop function.
func startBare(b *bareIssuer) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/token", b)
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      15 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    16 << 10,
	}
	go func() { _ = srv.Serve(ln) }()
	stop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}
	return "http://" + ln.Addr().String(), stop, nil
}

// ccSide is one side of the comparison: its client and its runs.
type ccSide struct {
	name string
	ic   *issuerClient
	runs []run
	// mallocs and bytes are the heap allocations of this process (the
	// server side and the load generator) during the runs.
	mallocs, bytes uint64
}

var ccForm = url.Values{"grant_type": {"client_credentials"}}

// request is one client_credentials grant: an access token, no refresh
// token (RFC 6749 section 4.4.3).
func (s *ccSide) request(ctx context.Context) (string, error) {
	reply, err := s.ic.post(ctx, ccForm)
	switch {
	case err != nil:
		return "", err
	case reply.RefreshToken != "":
		return "", errors.New("a refresh token was issued to client_credentials")
	case reply.TokenType != "Bearer" || reply.ExpiresIn <= 0:
		return "", fmt.Errorf("token_type %q, expires_in %d", reply.TokenType, reply.ExpiresIn)
	}
	return reply.AccessToken, nil
}

// merged is every run's operations and latencies, at the median rate.
func (s *ccSide) merged() (run, float64, []float64) {
	var m run
	rates := make([]float64, 0, len(s.runs))
	for _, r := range s.runs {
		m.merge(r)
		rates = append(rates, r.rate())
	}
	return m, median(rates), rates
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// runClientCredentials measures grant_type=client_credentials on the
// in-process rotor (issuerURL) and on a bare handler, alternating them in
// rounds, and counts the API requests of rotor's runs.
func runClientCredentials(ctx context.Context, c config, issuerURL, secret string, counter *apiCounter, tally *requestTally, r *report) error {
	bare, err := newBareIssuer(issuerURL, serviceClientID, secret)
	if err != nil {
		return err
	}
	bareURL, stopBare, err := startBare(bare)
	if err != nil {
		return err
	}
	defer stopBare()
	if c.ccProfile != "" {
		// Sample allocations finely enough to attribute them per request.
		runtime.MemProfileRate = 4096
	}
	rotor := &ccSide{name: "rotor", ic: &issuerClient{url: issuerURL, hc: loadClient(), id: serviceClientID, secret: secret}}
	limit := &ccSide{name: "bare handler", ic: &issuerClient{url: bareURL, hc: loadClient(), id: serviceClientID, secret: secret}}

	// Warm-up, outside the measurement: connections, and a token of each
	// side to check that they are alike.
	sample := map[*ccSide]string{}
	for _, s := range []*ccSide{rotor, limit} {
		warm := parallel(c.ccConc, c.ccConc*20, func(w int) error {
			tok, err := s.request(ctx)
			if w == 0 {
				sample[s] = tok // worker 0's last one
			}
			return err
		})
		if warm.errs > 0 {
			return fmt.Errorf("warm-up (%s): %w", s.name, warm.firstErr)
		}
	}
	shape := [2]string{}
	for i, s := range []*ccSide{rotor, limit} {
		if shape[i], err = tokenShape(sample[s]); err != nil {
			return fmt.Errorf("%s's token: %w", s.name, err)
		}
	}
	if shape[0] != shape[1] {
		return fmt.Errorf("the bare handler's tokens are not shaped as rotor's: %s vs %s", shape[1], shape[0])
	}

	// Measured: rounds of rotor and bare back to back, the order swapped
	// every round (rotor, bare, bare, rotor, ...), each run from a
	// collected heap. Each round's ratio compares two runs next to each
	// other in time, so that load from elsewhere on a shared machine, which
	// comes and goes, hits both sides of a ratio alike; the median ratio
	// leaves out the rounds it hit unevenly.
	per := max(c.ccConc, c.ccRequests/c.ccRounds)
	api := requestCounts{}
	var own tallyCounts
	ratios := make([]float64, 0, c.ccRounds)
	progress("client_credentials: %d rounds of %d requests from %d clients to rotor and to the bare handler", c.ccRounds, per, c.ccConc)
	for round := range c.ccRounds {
		order := []*ccSide{rotor, limit}
		if round%2 == 1 {
			order = []*ccSide{limit, rotor}
		}
		for _, s := range order {
			runtime.GC()
			var before requestCounts
			var ownBefore tallyCounts
			if s == rotor {
				if before, err = counter.snapshot(ctx); err != nil {
					return err
				}
				ownBefore = tally.snapshot()
			}
			stopProfile, err := startProfile(c.ccProfile, fmt.Sprintf("%s-%d.pprof", strings.ReplaceAll(s.name, " ", "-"), round+1))
			if err != nil {
				return err
			}
			var m0, m1 runtime.MemStats
			runtime.ReadMemStats(&m0)
			res := parallel(c.ccConc, per, func(int) error { _, err := s.request(ctx); return err })
			runtime.ReadMemStats(&m1)
			stopProfile()
			s.mallocs += m1.Mallocs - m0.Mallocs
			s.bytes += m1.TotalAlloc - m0.TotalAlloc
			if s == rotor {
				d := tally.snapshot().minus(ownBefore)
				own.requests += d.requests
				own.watches += d.watches
				after, err := counter.snapshot(ctx)
				if err != nil {
					return err
				}
				api.add(after.minus(before))
			}
			if res.errs > 0 {
				return fmt.Errorf("%s: %w", s.name, res.firstErr)
			}
			s.runs = append(s.runs, res)
		}
		ratio := rotor.runs[round].rate() / limit.runs[round].rate()
		ratios = append(ratios, ratio)
		progress("  round %d/%d: rotor %.0f/s, bare %.0f/s, ratio %.2f", round+1, c.ccRounds, rotor.runs[round].rate(), limit.runs[round].rate(), ratio)
	}

	area := fmt.Sprintf("client_credentials, %d clients", c.ccConc)
	rot, rotRate, rotRates := rotor.merged()
	lim, limRate, limRates := limit.merged()
	describe := func(side *ccSide, m run, rate float64, rates []float64) string {
		s := sortedCopy(m.lat)
		spread := ""
		if len(rates) > 1 {
			spread = fmt.Sprintf(", rounds %.0f–%.0f/s", slices.Min(rates), slices.Max(rates))
		}
		return fmt.Sprintf("**%.0f/s** (median of %d rounds%s), p50 %s, p99 %s (%s ops); %.0f allocations, %.1f KiB per request in the bench process (server and load generator)",
			rate, len(rates), spread, ms(percentile(s, 0.5)), ms(percentile(s, 0.99)), thousands(m.ops),
			float64(side.mallocs)/float64(m.ops), float64(side.bytes)/float64(m.ops)/1024)
	}
	r.add(area, fmt.Sprintf("rotor: POST /token grant_type=client_credentials, Confidential client %s, HTTP Basic (in-process, loopback HTTP, keep-alive)", serviceClientID),
		describe(rotor, rot, rotRate, rotRates), "", "")
	r.add(area, "limit: bare net/http handler on 127.0.0.1 doing the same work (ParseForm, Basic, one SHA-256 compared with crypto/subtle, one ES256 JWT of the same claims with golang-jwt/v5, JSON answer), same client and server settings",
		describe(limit, lim, limRate, limRates), "", "")
	ratio := median(ratios)
	spread := ""
	if len(ratios) > 1 {
		spread = fmt.Sprintf(" (rounds %.2f–%.2f; ratio of the median rates %.2f)", slices.Min(ratios), slices.Max(ratios), rotRate/limRate)
	}
	r.add(area, fmt.Sprintf("rotor ÷ limit (median of %d rounds' ratios, each of two runs back to back)", len(ratios)),
		fmt.Sprintf("**%.2f**%s", ratio, spread), "≥ 0.7", check(ratio >= 0.7))
	ownNote := fmt.Sprintf("rotor's own client sent %d", own.requests)
	if own.watches > 0 {
		ownNote += fmt.Sprintf(" and restarted %d watches", own.watches)
	}
	r.add("API requests", fmt.Sprintf("during rotor's client_credentials runs (%s grants; apiserver_request_total of %s, watches aside; %s)",
		thousands(rot.ops), strings.Join(rotorResources, ", "), ownNote),
		fmt.Sprintf("%.0f", api.total())+perOpIfAny(api, rot.ops), "0", check(api.total() == 0 && own.requests == 0))
	return nil
}

// startProfile writes a CPU profile of this process (rotor, the bare
// handler and the load generator alike) to dir/name until the returned
// function is called, and the allocation profile at the start and at the
// end to dir/name with .allocs-0 and .allocs-1 (compare them with go tool
// pprof -diff_base); with no dir it does nothing.
func startProfile(dir, name string) (func(), error) {
	if dir == "" {
		return func() {}, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	allocs := func(suffix string) {
		if f, err := os.Create(filepath.Join(dir, name+suffix)); err == nil {
			_ = pprof.Lookup("allocs").WriteTo(f, 0)
			f.Close()
		}
	}
	allocs(".allocs-0")
	f, err := os.Create(filepath.Join(dir, name))
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
		allocs(".allocs-1")
	}, nil
}

// perOpIfAny details counts when there are any.
func perOpIfAny(counts requestCounts, ops int) string {
	if counts.total() == 0 {
		return ""
	}
	return " (" + counts.perOp(ops) + ")"
}

// tokenShape is a JWT's header names and values but kid, and its claim
// names, for telling whether two issuers' tokens are alike.
func tokenShape(token string) (string, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return "", errors.New("not a JWS compact serialization")
	}
	var header map[string]any
	var claims map[string]any
	for i, v := range []any{&header, &claims} {
		raw, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			return "", err
		}
		if err := json.Unmarshal(raw, v); err != nil {
			return "", err
		}
	}
	delete(header, "kid")
	var names []string
	for k := range claims {
		names = append(names, k)
	}
	slices.Sort(names)
	return fmt.Sprintf("header %v, claims %v, sub %v", header, names, claims["sub"]), nil
}
