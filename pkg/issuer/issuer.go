// Package issuer holds rotor's HTTP handlers: the OAuth 2.0 token,
// revocation and userinfo endpoints, JWKS and discovery. It decodes
// requests and encodes answers; sessions, tokens, keys and accounts do the
// work.
package issuer

import (
	"context"
	"net/http"
	"time"

	"github.com/go-logr/logr"

	"rotor.dev/rotor/pkg/accounts"
	"rotor.dev/rotor/pkg/keys"
	"rotor.dev/rotor/pkg/sessions"
	"rotor.dev/rotor/pkg/tokens"
)

// Config is the issuer's behaviour.
type Config struct {
	// URL is the issuer identifier: the iss claim and the base of every
	// endpoint in discovery. It must be what clients dial.
	URL string
	// Audience is the aud of access tokens when a client asks for none.
	Audience string
	// AllowedAudiences may be asked for with the audience parameter.
	AllowedAudiences []string
	// DefaultClientID is the client_id of requests that send none.
	DefaultClientID string
	// PasswordGrant enables grant_type=password.
	PasswordGrant bool
	// JWKSMaxAge is the Cache-Control max-age of the JWKS; it must be
	// shorter than the key pre-publication period.
	JWKSMaxAge time.Duration
}

// Accounts authenticates password logins.
type Accounts interface {
	Authenticate(ctx context.Context, username, password, clientAddr string) (accounts.Account, error)
	Lookup(username string) (accounts.Account, bool)
}

// Issuer serves the endpoints.
type Issuer struct {
	cfg      Config
	keys     *keys.Set
	minter   *tokens.Minter
	verifier *tokens.Verifier
	sessions *sessions.Store
	accounts Accounts
	log      logr.Logger
}

// New returns an Issuer.
func New(cfg Config, set *keys.Set, minter *tokens.Minter, verifier *tokens.Verifier, store *sessions.Store, accts Accounts, log logr.Logger) *Issuer {
	return &Issuer{cfg: cfg, keys: set, minter: minter, verifier: verifier, sessions: store, accounts: accts, log: log}
}

// Paths of the endpoints, relative to the issuer URL.
const (
	PathDiscovery = "/.well-known/openid-configuration"
	PathJWKS      = "/keys"
	PathToken     = "/token"
	PathRevoke    = "/revoke"
	PathUserinfo  = "/userinfo"
)

// Handler routes the endpoints.
func (i *Issuer) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle(PathDiscovery, instrument("discovery", http.HandlerFunc(i.discovery)))
	mux.Handle(PathJWKS, instrument("jwks", http.HandlerFunc(i.jwks)))
	mux.Handle(PathToken, instrument("token", http.HandlerFunc(i.token)))
	mux.Handle(PathRevoke, instrument("revoke", http.HandlerFunc(i.revoke)))
	mux.Handle(PathUserinfo, instrument("userinfo", http.HandlerFunc(i.userinfo)))
	return mux
}
