// Package issuer holds rotor's HTTP handlers: the OAuth 2.0 token,
// revocation and userinfo endpoints, JWKS and discovery. It decodes
// requests and encodes answers; sessions, tokens, keys and accounts do the
// work.
package issuer

import (
	"context"
	"net/http"
	"net/netip"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/utils/clock"

	"rotor.dev/rotor/pkg/accounts"
	"rotor.dev/rotor/pkg/keys"
	"rotor.dev/rotor/pkg/oauthclients"
	"rotor.dev/rotor/pkg/sessions"
	"rotor.dev/rotor/pkg/tokens"
	"rotor.dev/rotor/pkg/workload"
)

// Config is the issuer's behavior.
type Config struct {
	// URL is the issuer identifier: the iss claim and the base of every
	// endpoint in discovery. It must be what clients dial.
	URL string
	// DefaultClientID is the client whose requests may omit client_id; it
	// must be Public. Empty: every request names its client.
	DefaultClientID string
	// Lifetimes are the server's; a client's own are bounded by them.
	Lifetimes oauthclients.Lifetimes
	// PasswordGrant enables grant_type=password.
	PasswordGrant bool
	// JWKSMaxAge is the Cache-Control max-age of the JWKS; it must be
	// shorter than the key pre-publication period.
	JWKSMaxAge time.Duration
	// ExchangePolicy says which ServiceAccounts may exchange their tokens
	// (RFC 8693); empty disables the grant.
	ExchangePolicy workload.Policy
	// IntrospectionPolicy says which ServiceAccounts may call /introspect.
	IntrospectionPolicy workload.Policy
	// UnauthenticatedBurst and UnauthenticatedPerSecond are each client
	// address's budget of failed requests that could cost an API request
	// before proving anything: refresh and exchange grants, revocations,
	// introspections (see limit). A burst of 0 disables the limit.
	UnauthenticatedBurst     int
	UnauthenticatedPerSecond float64
	// TrustedProxies are the reverse proxies whose X-Forwarded-For names the
	// client (see clientIP); empty trusts none.
	TrustedProxies []netip.Prefix
	// Clock refills the budgets; nil is the real clock.
	Clock clock.PassiveClock
	// SessionsPerSubjectBurst and SessionsPerSubjectPerMinute are each
	// subject's budget of new sessions (successful logins and exchanges) on
	// this replica (see subjectlimit.go). A burst of 0 disables the limit.
	SessionsPerSubjectBurst     int
	SessionsPerSubjectPerMinute float64
}

// Reviewer authenticates ServiceAccount tokens.
type Reviewer interface {
	Review(ctx context.Context, token string) (workload.Identity, error)
}

// Accounts authenticates password logins.
type Accounts interface {
	Authenticate(ctx context.Context, username, password, clientAddr string) (accounts.Account, error)
	Lookup(username string) (accounts.Account, bool)
}

// Clients authenticates and resolves registered OAuth clients
// (oauthclients.Registry), from caches.
type Clients interface {
	Authenticate(ctx context.Context, creds oauthclients.Credentials, clientAddr string) (*oauthclients.Client, error)
	Lookup(ctx context.Context, id string) (c *oauthclients.Client, found bool, err error)
	Scopes(ctx context.Context) ([]string, error)
}

// Issuer serves the endpoints.
type Issuer struct {
	cfg      Config
	keys     *keys.Set
	minter   *tokens.Minter
	verifier *tokens.Verifier
	sessions *sessions.Store
	accounts Accounts
	clients  Clients
	// exchange reviews subject tokens; introspectors authenticates callers
	// of /introspect (cached).
	exchange      Reviewer
	introspectors Reviewer
	log           logr.Logger
	// limiter bounds failed unauthenticated requests per address; nil when
	// disabled.
	limiter *limiter
	// subjects bounds new sessions per subject; nil when disabled.
	subjects *limiter
}

// Deps are what the handlers call.
type Deps struct {
	Keys     *keys.Set
	Minter   *tokens.Minter
	Verifier *tokens.Verifier
	Sessions *sessions.Store
	Accounts Accounts
	Clients  Clients
	// Exchange reviews subject tokens of the token-exchange grant.
	Exchange Reviewer
	// Introspectors authenticates callers of /introspect; cache it.
	Introspectors Reviewer
	Log           logr.Logger
}

// New returns an Issuer.
func New(cfg Config, d Deps) *Issuer {
	return &Issuer{cfg: cfg, keys: d.Keys, minter: d.Minter, verifier: d.Verifier, sessions: d.Sessions,
		accounts: d.Accounts, clients: d.Clients, exchange: d.Exchange, introspectors: d.Introspectors, log: d.Log,
		limiter: newLimiter(cfg.UnauthenticatedBurst, cfg.UnauthenticatedPerSecond, cfg.Clock), subjects: newSubjectLimiter(cfg)}
}

// Paths of the endpoints, relative to the issuer URL.
const (
	PathDiscovery  = "/.well-known/openid-configuration"
	PathJWKS       = "/keys"
	PathToken      = "/token"
	PathRevoke     = "/revoke"
	PathUserinfo   = "/userinfo"
	PathIntrospect = "/introspect"
)

// Handler routes the endpoints. The client's address is settled first
// (trusted proxies); the endpoints that can cost an API request before the
// client has proved anything are rate-limited per address.
func (i *Issuer) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle(PathDiscovery, instrument("discovery", http.HandlerFunc(i.discovery)))
	mux.Handle(PathJWKS, instrument("jwks", http.HandlerFunc(i.jwks)))
	mux.Handle(PathToken, instrument("token", i.limit(endpointToken, http.HandlerFunc(i.token))))
	mux.Handle(PathRevoke, instrument("revoke", i.limit(endpointRevoke, http.HandlerFunc(i.revoke))))
	mux.Handle(PathUserinfo, instrument("userinfo", http.HandlerFunc(i.userinfo)))
	mux.Handle(PathIntrospect, instrument("introspect", i.limit(endpointIntrospect, http.HandlerFunc(i.introspect))))
	return i.fromClient(mux)
}
