package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"k8s.io/utils/clock"
)

// DefaultLeeway is the clock skew tolerated on exp, nbf and iat.
const DefaultLeeway = time.Minute

// DefaultRefetchInterval is the least time between two JWKS fetches caused
// by unknown kids, so that tokens with made-up kids cannot make the
// verifier hammer the issuer.
const DefaultRefetchInterval = 10 * time.Second

// DefaultKeySetMaxAge is how long a fetched key set is trusted before it
// is fetched again: a key the issuer withdraws (deleted by hand after a
// compromise) stops verifying here within this time.
const DefaultKeySetMaxAge = 5 * time.Minute

// accessTokenType is the typ header of RFC 9068 access tokens.
const accessTokenType = "at+jwt"

// ErrInvalidToken wraps every reason Verify refuses a token. An API answers
// it with 401 invalid_token (Middleware does).
var ErrInvalidToken = errors.New("invalid access token")

// Claims are the verified claims of a rotor access token.
type Claims struct {
	Issuer    string
	Subject   string
	Audience  []string
	ClientID  string
	Groups    []string
	Scope     string
	ID        string // jti
	ExpiresAt time.Time
	IssuedAt  time.Time // zero when absent
	NotBefore time.Time // zero when absent
}

// Verifier checks rotor access tokens for one API (one audience). It is safe
// for concurrent use.
type Verifier struct {
	issuer          string
	audience        string
	httpClient      *http.Client
	clock           clock.PassiveClock
	leeway          time.Duration
	refetchInterval time.Duration
	keySetMaxAge    time.Duration
	realm           string
	jwksURI         string
	parser          *jwt.Parser

	mu   sync.RWMutex
	keys map[string]verificationKey
	// keysFetched is when keys were fetched.
	keysFetched time.Time

	// fetchMu serialises JWKS fetches; lastFetch is guarded by it.
	fetchMu   sync.Mutex
	lastFetch time.Time
}

// VerifierOption changes a Verifier's defaults.
type VerifierOption func(*Verifier)

// WithHTTPClient sets the client that fetches discovery and keys (default:
// one with a 30s timeout).
func WithHTTPClient(c *http.Client) VerifierOption {
	return func(v *Verifier) { v.httpClient = c }
}

// WithClock sets the clock used for exp, nbf, iat and the refetch limit.
func WithClock(c clock.PassiveClock) VerifierOption {
	return func(v *Verifier) { v.clock = c }
}

// WithLeeway sets the clock skew tolerated on exp, nbf and iat (default
// DefaultLeeway).
func WithLeeway(d time.Duration) VerifierOption {
	return func(v *Verifier) { v.leeway = d }
}

// WithRefetchInterval sets the least time between JWKS fetches caused by
// unknown kids (default DefaultRefetchInterval).
func WithRefetchInterval(d time.Duration) VerifierOption {
	return func(v *Verifier) { v.refetchInterval = d }
}

// WithKeySetMaxAge sets how long a fetched key set is used before it is
// fetched again (default DefaultKeySetMaxAge).
func WithKeySetMaxAge(d time.Duration) VerifierOption {
	return func(v *Verifier) { v.keySetMaxAge = d }
}

// WithRealm sets the realm of Middleware's WWW-Authenticate challenges
// (default "rotor").
func WithRealm(realm string) VerifierOption {
	return func(v *Verifier) { v.realm = printable(realm) }
}

// NewVerifier fetches rotor's discovery document from issuerURL (which must
// equal the document's issuer exactly, as tokens' iss must) and its JWKS,
// and returns a Verifier accepting tokens whose aud contains audience. ctx
// bounds these first fetches only.
func NewVerifier(ctx context.Context, issuerURL, audience string, opts ...VerifierOption) (*Verifier, error) {
	if audience == "" {
		return nil, errors.New("verifier: audience is required")
	}
	base, err := issuerBase(issuerURL)
	if err != nil {
		return nil, fmt.Errorf("verifier: %w", err)
	}
	v := &Verifier{
		issuer:          issuerURL,
		audience:        audience,
		clock:           clock.RealClock{},
		leeway:          DefaultLeeway,
		refetchInterval: DefaultRefetchInterval,
		keySetMaxAge:    DefaultKeySetMaxAge,
		realm:           "rotor",
	}
	for _, o := range opts {
		o(v)
	}
	if v.httpClient == nil {
		v.httpClient = &http.Client{Timeout: defaultTimeout}
	}
	v.parser = jwt.NewParser(
		// An allow-list: never none, never HMAC (RFC 8725 §3.1, §3.2).
		jwt.WithValidMethods([]string{AlgES256, AlgEdDSA, AlgRS256}),
		jwt.WithIssuer(v.issuer),
		jwt.WithAudience(v.audience),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(v.leeway),
		jwt.WithTimeFunc(v.clock.Now),
	)

	var doc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	body, err := v.get(ctx, base+"/.well-known/openid-configuration")
	if err != nil {
		return nil, fmt.Errorf("verifier: fetching discovery: %w", err)
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, fmt.Errorf("verifier: decoding discovery: %w", err)
	}
	// RFC 8414 §3.3: a document for another issuer must not be used.
	if doc.Issuer != issuerURL {
		return nil, fmt.Errorf("verifier: discovery issuer %q is not %q", printable(doc.Issuer), issuerURL)
	}
	u, err := url.Parse(doc.JWKSURI)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("verifier: discovery jwks_uri %q is not an absolute http(s) URL", printable(doc.JWKSURI))
	}
	v.jwksURI = doc.JWKSURI

	v.fetchMu.Lock()
	defer v.fetchMu.Unlock()
	if err := v.fetchKeysLocked(ctx); err != nil {
		return nil, fmt.Errorf("verifier: %w", err)
	}
	return v, nil
}

// Verify returns the claims of a valid access token, or an error wrapping
// ErrInvalidToken. ctx bounds a JWKS refetch for an unknown kid.
func (v *Verifier) Verify(ctx context.Context, token string) (*Claims, error) {
	var c accessTokenClaims
	_, err := v.parser.ParseWithClaims(token, &c, func(t *jwt.Token) (any, error) {
		return v.keyFor(ctx, t)
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	if c.Subject == "" {
		return nil, fmt.Errorf("%w: no sub claim", ErrInvalidToken)
	}
	out := &Claims{
		Issuer:   c.Issuer,
		Subject:  c.Subject,
		Audience: []string(c.Audience),
		ClientID: c.ClientID,
		Groups:   c.Groups,
		Scope:    c.Scope,
		ID:       c.ID,
	}
	out.ExpiresAt = c.ExpiresAt.Time // required, so never nil here
	if c.IssuedAt != nil {
		out.IssuedAt = c.IssuedAt.Time
	}
	if c.NotBefore != nil {
		out.NotBefore = c.NotBefore.Time
	}
	return out, nil
}

type accessTokenClaims struct {
	jwt.RegisteredClaims
	ClientID string   `json:"client_id"`
	Groups   []string `json:"groups"`
	Scope    string   `json:"scope"`
}

// keyFor checks the header and finds the key, which must be of the token's
// algorithm: a key is never used with another one.
func (v *Verifier) keyFor(ctx context.Context, t *jwt.Token) (any, error) {
	// RFC 8725 §3.11, RFC 9068 §4: only access tokens, not other JWTs
	// signed by the same keys. Media types compare case-insensitively.
	typ, _ := t.Header["typ"].(string)
	if lower := strings.ToLower(typ); lower != accessTokenType && lower != "application/"+accessTokenType {
		return nil, fmt.Errorf("typ %q is not %s", printable(typ), accessTokenType)
	}
	kid, _ := t.Header["kid"].(string)
	if kid == "" {
		return nil, errors.New("no kid")
	}
	key, ok := v.lookup(ctx, kid)
	if !ok {
		return nil, fmt.Errorf("unknown kid %q", printable(kid))
	}
	if t.Method.Alg() != key.alg {
		return nil, fmt.Errorf("alg %s does not match the key's %s", t.Method.Alg(), key.alg)
	}
	return key.pub, nil
}

// lookup finds kid, refetching the JWKS once when it is unknown and the last
// fetch is at least the refetch interval ago: the issuer publishes a new key
// before signing with it, so an unknown kid usually means a stale cache.
func (v *Verifier) lookup(ctx context.Context, kid string) (verificationKey, bool) {
	k, ok, fetched := v.key(kid)
	if ok {
		if v.clock.Since(fetched) >= v.keySetMaxAge && v.refreshStale(ctx) {
			k, ok, _ = v.key(kid)
		}
		return k, ok
	}
	v.fetchMu.Lock()
	defer v.fetchMu.Unlock()
	// Another request may have fetched while this one waited.
	if k, ok, _ = v.key(kid); ok || v.clock.Since(v.lastFetch) < v.refetchInterval {
		return k, ok
	}
	// A failed fetch keeps the old keys; the error is the caller's "unknown kid".
	_ = v.fetchKeysLocked(ctx)
	k, ok, _ = v.key(kid)
	return k, ok
}

// key returns kid's key from the current set and when the set was fetched.
func (v *Verifier) key(kid string) (verificationKey, bool, time.Time) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	k, ok := v.keys[kid]
	return k, ok, v.keysFetched
}

// refreshStale fetches a key set older than its maximum age and reports
// whether it did. One request fetches while the others go on with the keys
// they have; a fetch by another request meanwhile, or a failed one within
// the refetch interval, means no fetch now (failed fetches keep the keys).
func (v *Verifier) refreshStale(ctx context.Context) bool {
	if !v.fetchMu.TryLock() {
		return false
	}
	defer v.fetchMu.Unlock()
	if v.clock.Since(v.lastFetch) < v.refetchInterval {
		return false
	}
	return v.fetchKeysLocked(ctx) == nil
}

// fetchKeysLocked replaces the key set with the JWKS; fetchMu must be held.
func (v *Verifier) fetchKeysLocked(ctx context.Context) error {
	// Every fetch counts against the limit, also one whose caller gives up
	// on the way: otherwise requests cancelled mid-fetch would each get one.
	v.lastFetch = v.clock.Now()
	body, err := v.get(ctx, v.jwksURI)
	if err != nil {
		return fmt.Errorf("fetching JWKS: %w", err)
	}
	keys, err := parseJWKS(body)
	if err != nil {
		return err
	}
	v.mu.Lock()
	v.keys, v.keysFetched = keys, v.clock.Now()
	v.mu.Unlock()
	return nil
}

func (v *Verifier) get(ctx context.Context, u string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("building request: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := v.httpClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", u, err)
	}
	return body, nil
}
