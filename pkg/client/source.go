package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"k8s.io/utils/clock"
)

// Grant types sent to rotor's token endpoint.
const (
	GrantPassword      = "password"
	GrantRefreshToken  = "refresh_token"
	GrantTokenExchange = "urn:ietf:params:oauth:grant-type:token-exchange"
	// GrantClientCredentials is RFC 6749 §4.4, for Confidential clients.
	GrantClientCredentials = "client_credentials"
)

// TokenTypeJWT is the RFC 8693 subject_token_type of a Kubernetes
// ServiceAccount token.
const TokenTypeJWT = "urn:ietf:params:oauth:token-type:jwt"

// DefaultServiceAccountTokenFile is where a projected ServiceAccount token
// with audience rotor is conventionally mounted.
const DefaultServiceAccountTokenFile = "/var/run/secrets/tokens/rotor"

// DefaultRefreshMargin is how long before expiry the access token is renewed.
const DefaultRefreshMargin = time.Minute

const (
	// earlyRetryInterval spaces refresh attempts that failed while the
	// current access token still works, so a down issuer is not asked on
	// every call during the margin.
	earlyRetryInterval = 5 * time.Second
	// expiryDelta: an access token this close to expiry is not handed out,
	// it could expire on its way to the API.
	expiryDelta = 10 * time.Second
	// maxResponseBytes bounds what is read from the issuer.
	maxResponseBytes = 1 << 20
	// defaultTimeout bounds each request when no HTTP client is given.
	defaultTimeout = 30 * time.Second
)

// AuthStyle is how a Source authenticates a Confidential client (one with a
// Config.ClientSecret) on every request to the token and revocation
// endpoints (RFC 6749 §2.3.1).
type AuthStyle int

const (
	// AuthStyleBasic, the zero value, sends client_id and client_secret as
	// HTTP Basic credentials (client_secret_basic), each form-urlencoded
	// before they are joined: the one method every server must support.
	AuthStyleBasic AuthStyle = iota
	// AuthStylePost sends client_id and client_secret as form parameters
	// (client_secret_post), for servers that accept only that.
	AuthStylePost
)

// String is the method's RFC 8414 name.
func (a AuthStyle) String() string {
	switch a {
	case AuthStyleBasic:
		return "client_secret_basic"
	case AuthStylePost:
		return "client_secret_post"
	}
	return fmt.Sprintf("AuthStyle(%d)", int(a))
}

// Config says where and how a Source gets tokens.
type Config struct {
	// IssuerURL is rotor's --issuer-url; the token endpoint is
	// IssuerURL + "/token" and the revocation endpoint IssuerURL + "/revoke".
	IssuerURL string
	// ClientID is the OAuth client. Without ClientSecret (a Public client)
	// it is sent as client_id when set (rotor then uses its default).
	ClientID string
	// ClientSecret makes the client Confidential: every request to the
	// token and revocation endpoints then authenticates with ClientID and
	// ClientSecret as AuthStyle says. The Source never puts it in an error.
	ClientSecret string
	// AuthStyle is how ClientSecret is sent (zero: AuthStyleBasic). It is
	// ignored without a ClientSecret.
	AuthStyle AuthStyle
	// Audience is sent as audience on logins, exchanges and client
	// credentials requests when set.
	Audience string
	// Scope is sent as scope on logins, exchanges and client credentials
	// requests when set: space-separated scopes. Refreshes keep the scope
	// of the login. What the issuer granted is the token's Extra("scope").
	Scope string
	// HTTPClient makes the requests. When nil, the *http.Client stored in
	// the context under oauth2.HTTPClient is used, else a client with a 30s
	// timeout.
	HTTPClient *http.Client
	// RefreshMargin is how long before expiry the access token is renewed
	// (zero: DefaultRefreshMargin). It is capped at half the token's
	// lifetime, so short-lived tokens are not refreshed on every call.
	RefreshMargin time.Duration
	// Clock tells the time (nil: the real clock).
	Clock clock.PassiveClock
	// OnTokenRequest, when set, is called after every request to the token
	// endpoint with its grant type and outcome (nil on success). It runs on
	// the goroutine that made the request and must not block; it is meant for
	// metrics and tests. The error never contains a token.
	OnTokenRequest func(grantType string, err error)
}

// TokenError is an error answer of the token or revocation endpoint (RFC 6749
// §5.2).
type TokenError struct {
	StatusCode  int
	Code        string // e.g. invalid_grant, temporarily_unavailable; empty if the body was not an OAuth error
	Description string
	// RetryAfter is the Retry-After header (throttled logins), zero if absent.
	RetryAfter time.Duration
}

func (e *TokenError) Error() string {
	code := e.Code
	if code == "" {
		code = http.StatusText(e.StatusCode)
	}
	if e.Description == "" {
		return fmt.Sprintf("issuer answered %d %s", e.StatusCode, code)
	}
	return fmt.Sprintf("issuer answered %d %s: %s", e.StatusCode, code, e.Description)
}

// Source is an oauth2.TokenSource that logs in to rotor and keeps the access
// token fresh. It is safe for concurrent use. Tokens it returns carry no
// refresh token: the Source alone uses it, because two uses of one refresh
// token look like a replay to rotor. They carry the rest of the token
// response as Extra, e.g. Extra("scope"): the scope granted, kept across
// refreshes whose answer leaves it out (RFC 6749 §5.1: unchanged).
type Source struct {
	ctx        context.Context // for the requests; see PasswordSource
	httpClient *http.Client
	clock      clock.PassiveClock
	margin     time.Duration
	tokenURL   string
	revokeURL  string
	cfg        Config
	cfgErr     error

	loginGrant string
	// noRefresh: the grant has no session to refresh or revoke (client
	// credentials); a refresh token the issuer sends anyway is dropped.
	noRefresh bool
	// loginForm builds the form of a login or exchange; the exchange reads
	// the ServiceAccount token file here, on every call.
	loginForm func() (url.Values, error)

	mu        sync.Mutex
	access    string
	tokenType string
	expiry    time.Time // zero: the issuer gave no lifetime
	refreshAt time.Time
	extra     map[string]any
	refresh   string
	flight    *flight   // the one token request in progress
	retryAt   time.Time // no new attempt before this after a failure
	lastErr   error
}

// flight is one request for a new token; every caller that needs a token
// while it runs waits for it instead of starting another.
type flight struct {
	done chan struct{}
	tok  *oauth2.Token
	err  error
}

// PasswordSource logs in with username and password (grant_type=password).
//
// ctx is used for every request the Source makes, not only the first, as
// with oauth2.Config.TokenSource: pass a long-lived context, not a request's.
func PasswordSource(ctx context.Context, cfg Config, username, password string) *Source {
	s := newSource(ctx, cfg, GrantPassword)
	s.loginForm = func() (url.Values, error) {
		f := url.Values{"grant_type": {GrantPassword}, "username": {username}, "password": {password}}
		s.addLoginParams(f)
		return f, nil
	}
	return s
}

// ServiceAccountSource exchanges the Kubernetes ServiceAccount token in
// tokenFile (DefaultServiceAccountTokenFile when empty) for a rotor token
// (RFC 8693). The file is read on every exchange, because the kubelet
// rewrites it before the token expires. ctx is as for PasswordSource.
func ServiceAccountSource(ctx context.Context, cfg Config, tokenFile string) *Source {
	if tokenFile == "" {
		tokenFile = DefaultServiceAccountTokenFile
	}
	s := newSource(ctx, cfg, GrantTokenExchange)
	s.loginForm = func() (url.Values, error) {
		b, err := os.ReadFile(tokenFile)
		if err != nil {
			return nil, fmt.Errorf("reading ServiceAccount token: %w", err)
		}
		subject := strings.TrimSpace(string(b))
		if subject == "" {
			return nil, fmt.Errorf("ServiceAccount token file %s is empty", tokenFile)
		}
		f := url.Values{"grant_type": {GrantTokenExchange}, "subject_token": {subject}, "subject_token_type": {TokenTypeJWT}}
		s.addLoginParams(f)
		return f, nil
	}
	return s
}

// ClientCredentialsSource gets tokens for the client itself
// (grant_type=client_credentials, RFC 6749 §4.4), which needs cfg.ClientID
// and cfg.ClientSecret: a Confidential client. There is no refresh token:
// when the access token nears expiry the Source asks again with its
// credentials, with the same caching, single flight, RefreshMargin and
// Retry-After handling as the other Sources. ctx is as for PasswordSource.
//
// Revoke on this Source does nothing and returns nil: there is no session
// to log out, and the access token lapses at its expiry.
func ClientCredentialsSource(ctx context.Context, cfg Config) *Source {
	s := newSource(ctx, cfg, GrantClientCredentials)
	s.noRefresh = true
	if cfg.ClientID == "" || cfg.ClientSecret == "" {
		s.cfgErr = errors.New("client credentials grant needs Config.ClientID and Config.ClientSecret (a Confidential client)")
	}
	s.loginForm = func() (url.Values, error) {
		f := url.Values{"grant_type": {GrantClientCredentials}}
		s.addLoginParams(f)
		return f, nil
	}
	return s
}

func newSource(ctx context.Context, cfg Config, loginGrant string) *Source {
	s := &Source{ctx: ctx, cfg: cfg, loginGrant: loginGrant, httpClient: cfg.HTTPClient, clock: cfg.Clock, margin: cfg.RefreshMargin}
	if s.ctx == nil {
		s.ctx = context.Background()
	}
	if s.httpClient == nil {
		if c, ok := s.ctx.Value(oauth2.HTTPClient).(*http.Client); ok && c != nil {
			s.httpClient = c
		} else {
			s.httpClient = &http.Client{Timeout: defaultTimeout}
		}
	}
	// The token and revocation endpoints never redirect; a 307 or 308 would
	// make net/http send the body (a password, a refresh token, a client
	// secret) again to wherever it points. A copy of the caller's client
	// (its transport, timeout and cookies kept) answers the redirect as an
	// error instead.
	noRedirect := *s.httpClient
	noRedirect.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	s.httpClient = &noRedirect
	if s.clock == nil {
		s.clock = clock.RealClock{}
	}
	if s.margin <= 0 {
		s.margin = DefaultRefreshMargin
	}
	base, err := issuerBase(cfg.IssuerURL)
	switch {
	case err != nil:
		s.cfgErr = err
	case cfg.ClientSecret != "" && cfg.ClientID == "":
		s.cfgErr = errors.New("a client secret needs a client ID: Config.ClientID is empty")
	case cfg.ClientSecret != "" && cfg.AuthStyle != AuthStyleBasic && cfg.AuthStyle != AuthStylePost:
		s.cfgErr = fmt.Errorf("unknown client authentication style %v in Config.AuthStyle", cfg.AuthStyle)
	}
	s.tokenURL, s.revokeURL = base+"/token", base+"/revoke"
	return s
}

// issuerBase checks the issuer URL and returns it without a trailing slash.
func issuerBase(issuer string) (string, error) {
	u, err := url.Parse(issuer)
	if err != nil {
		return "", fmt.Errorf("issuer URL: %w", err)
	}
	if (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return "", fmt.Errorf("issuer URL %q is not an absolute http(s) URL", issuer)
	}
	return strings.TrimSuffix(issuer, "/"), nil
}

// addLoginParams adds what a request for a new grant (not a refresh) asks
// for. The client's credentials are added by postForm, to every request.
func (s *Source) addLoginParams(f url.Values) {
	if s.cfg.Audience != "" {
		f.Set("audience", s.cfg.Audience)
	}
	if scope := strings.Join(strings.Fields(s.cfg.Scope), " "); scope != "" {
		f.Set("scope", scope)
	}
}

// Token returns a valid access token, logging in or refreshing when needed.
// It implements oauth2.TokenSource.
func (s *Source) Token() (*oauth2.Token, error) {
	return s.TokenContext(context.Background())
}

// TokenContext is Token, but stops waiting when ctx is done. A refresh that
// is already on the wire is never cancelled by ctx: rotor may have rotated
// the refresh token already, and losing its answer would lose the session.
func (s *Source) TokenContext(ctx context.Context) (*oauth2.Token, error) {
	if s.cfgErr != nil {
		return nil, s.cfgErr
	}
	s.mu.Lock()
	now := s.clock.Now()
	if s.fresh(now) {
		tok := s.tokenLocked()
		s.mu.Unlock()
		return tok, nil
	}
	if s.flight == nil {
		if now.Before(s.retryAt) {
			// A recent attempt failed: do not ask again yet.
			defer s.mu.Unlock()
			if s.usable(now) {
				return s.tokenLocked(), nil
			}
			return nil, s.lastErr
		}
		s.flight = &flight{done: make(chan struct{})}
		// The request runs on its own goroutine so that no caller's
		// context can cut it short (see above).
		go s.run(s.flight, s.refresh, now)
	}
	if s.usable(now) {
		// Renewing early: the current token still works meanwhile.
		tok := s.tokenLocked()
		s.mu.Unlock()
		return tok, nil
	}
	f := s.flight
	s.mu.Unlock()
	select {
	case <-f.done:
		return f.tok, f.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Invalidate drops the cached access token if it is still tok's, so that the
// next Token call refreshes. Call it when an API refused tok with
// invalid_token; NewTransport does. The refresh token is kept.
func (s *Source) Invalidate(tok *oauth2.Token) {
	if tok == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.access != "" && s.access == tok.AccessToken {
		s.access = ""
		// The failure that set retryAt was about renewing a token that has
		// now proved useless; waiting for it would only delay recovery.
		s.retryAt = time.Time{}
	}
}

// Revoke logs this session out (RFC 7009): it waits for a refresh in
// progress, forgets the tokens and revokes the refresh token at rotor. The
// Source stays usable; the next Token logs in again. The tokens are
// forgotten even when the revocation request fails.
//
// On a ClientCredentialsSource it does nothing and returns nil: there is no
// refresh token, so no session to end.
func (s *Source) Revoke(ctx context.Context) error {
	if s.noRefresh {
		return nil
	}
	if s.cfgErr != nil {
		return s.cfgErr
	}
	s.mu.Lock()
	for s.flight != nil {
		f := s.flight
		s.mu.Unlock()
		select {
		case <-f.done:
		case <-ctx.Done():
			return ctx.Err()
		}
		s.mu.Lock()
	}
	rt := s.refresh
	s.access, s.refresh, s.expiry, s.refreshAt, s.extra = "", "", time.Time{}, time.Time{}, nil
	s.retryAt, s.lastErr = time.Time{}, nil
	s.mu.Unlock()
	if rt == "" {
		return nil
	}
	f := url.Values{"token": {rt}, "token_type_hint": {"refresh_token"}}
	resp, err := s.postForm(ctx, s.revokeURL, f)
	if err != nil {
		return fmt.Errorf("revoking refresh token: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("revoking refresh token: %w", ReadTokenError(resp))
	}
	return nil
}

// fresh: the access token needs no renewal yet.
func (s *Source) fresh(now time.Time) bool {
	return s.access != "" && (s.expiry.IsZero() || now.Before(s.refreshAt))
}

// usable: the access token may be handed out while a renewal is pending.
func (s *Source) usable(now time.Time) bool {
	return s.access != "" && (s.expiry.IsZero() || now.Before(s.expiry.Add(-expiryDelta)))
}

func (s *Source) tokenLocked() *oauth2.Token {
	tok := &oauth2.Token{AccessToken: s.access, TokenType: s.tokenType, Expiry: s.expiry}
	return tok.WithExtra(s.extra)
}

// run performs flight f: a refresh with rt when there is one, a login
// otherwise or when rt is refused, then publishes the outcome.
func (s *Source) run(f *flight, rt string, started time.Time) {
	resp, refreshDead, err := s.fetch(rt)

	s.mu.Lock()
	now := s.clock.Now()
	if refreshDead && s.refresh == rt {
		s.refresh = ""
	}
	if err != nil {
		s.lastErr = err
		wait := retryAfter(err)
		if s.usable(now) && wait < earlyRetryInterval {
			wait = earlyRetryInterval
		}
		s.retryAt = now.Add(wait)
		f.err = err
	} else {
		s.apply(resp, started)
		s.retryAt, s.lastErr = time.Time{}, nil
		f.tok = s.tokenLocked()
	}
	s.flight = nil
	s.mu.Unlock()
	close(f.done)
}

// fetch gets a new token. refreshDead reports that rotor refused rt
// (invalid_grant), which must then never be sent again. Any other failure
// keeps rt: a network error or a 503 says nothing about the token.
func (s *Source) fetch(rt string) (resp *tokenResponse, refreshDead bool, err error) {
	if rt != "" {
		f := url.Values{"grant_type": {GrantRefreshToken}, "refresh_token": {rt}}
		resp, err = s.tokenRequest(GrantRefreshToken, f)
		if err == nil {
			if resp.RefreshToken == "" {
				resp.RefreshToken = rt // RFC 6749 §6: no new one means keep the old one
			}
			resp.refreshed = true
			return resp, false, nil
		}
		if !refusedGrant(err) {
			return nil, false, fmt.Errorf("refreshing access token: %w", err)
		}
		refreshDead = true
	}
	f, err := s.loginForm()
	if err != nil {
		return nil, refreshDead, fmt.Errorf("%s: %w", s.loginGrant, err)
	}
	resp, err = s.tokenRequest(s.loginGrant, f)
	if err != nil {
		what := "logging in"
		switch s.loginGrant {
		case GrantTokenExchange:
			what = "exchanging ServiceAccount token"
		case GrantClientCredentials:
			what = "requesting a client credentials token"
		}
		return nil, refreshDead, fmt.Errorf("%s: %w", what, err)
	}
	if s.noRefresh {
		// RFC 6749 §4.4.3 says none should be sent; one that is would
		// only turn the next renewal into a refresh of a session that
		// Revoke cannot end.
		resp.RefreshToken = ""
	}
	return resp, refreshDead, nil
}

// refusedGrant: rotor said the grant itself is bad (400 invalid_grant), as
// opposed to throttled (429) or unavailable.
func refusedGrant(err error) bool {
	var te *TokenError
	return errors.As(err, &te) && te.Code == "invalid_grant" && te.StatusCode == http.StatusBadRequest
}

func retryAfter(err error) time.Duration {
	var te *TokenError
	if errors.As(err, &te) {
		return te.RetryAfter
	}
	return 0
}

// apply stores a successful answer. Lifetimes count from when the request
// was sent, the conservative end.
func (s *Source) apply(r *tokenResponse, sent time.Time) {
	if r.refreshed {
		// A refresh answer without scope grants the login's scope (RFC 6749
		// §5.1, §6): keep showing it.
		if _, ok := r.raw["scope"]; !ok {
			if scope, ok := s.extra["scope"]; ok {
				r.raw["scope"] = scope
			}
		}
	}
	s.access, s.tokenType, s.refresh, s.extra = r.AccessToken, r.TokenType, r.RefreshToken, r.raw
	s.expiry, s.refreshAt = time.Time{}, time.Time{}
	if r.ExpiresIn > 0 {
		life := time.Duration(r.ExpiresIn) * time.Second
		margin := min(s.margin, life/2)
		s.expiry = sent.Add(life)
		s.refreshAt = s.expiry.Add(-margin)
	}
}

type tokenResponse struct {
	AccessToken     string `json:"access_token"`
	TokenType       string `json:"token_type"`
	ExpiresIn       int64  `json:"expires_in"`
	RefreshToken    string `json:"refresh_token"`
	IssuedTokenType string `json:"issued_token_type"`
	raw             map[string]any
	refreshed       bool // the answer to a refresh, not to a login
}

// tokenRequest posts form to the token endpoint and decodes the answer.
func (s *Source) tokenRequest(grant string, form url.Values) (*tokenResponse, error) {
	tr, err := s.doTokenRequest(form)
	if s.cfg.OnTokenRequest != nil {
		s.cfg.OnTokenRequest(grant, err)
	}
	return tr, err
}

func (s *Source) doTokenRequest(form url.Values) (*tokenResponse, error) {
	resp, err := s.postForm(s.ctx, s.tokenURL, form)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, ReadTokenError(resp)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return nil, fmt.Errorf("reading token response: %w", err)
	}
	var tr tokenResponse
	if err := json.Unmarshal(body, &tr); err != nil {
		return nil, fmt.Errorf("decoding token response: %w", err)
	}
	if err := json.Unmarshal(body, &tr.raw); err != nil {
		return nil, fmt.Errorf("decoding token response: %w", err)
	}
	delete(tr.raw, "refresh_token") // never handed out, see Source
	if tr.AccessToken == "" {
		return nil, errors.New("token response has no access_token")
	}
	if !strings.EqualFold(tr.TokenType, "bearer") {
		return nil, fmt.Errorf("token response has token_type %q, want Bearer", tr.TokenType)
	}
	tr.TokenType = "Bearer"
	return &tr, nil
}

// postForm posts form to endpoint, authenticating the client. Doing it here
// makes every request (login, refresh, revocation) authenticate the same
// way: rotor binds a session to its client and refuses a refresh or a
// revocation from another.
func (s *Source) postForm(ctx context.Context, endpoint string, form url.Values) (*http.Response, error) {
	form = maps.Clone(form) // the caller's form is left as it was built
	basic := false
	switch {
	case s.cfg.ClientSecret == "":
		if s.cfg.ClientID != "" {
			form.Set("client_id", s.cfg.ClientID)
		}
	case s.cfg.AuthStyle == AuthStylePost:
		form.Set("client_id", s.cfg.ClientID)
		form.Set("client_secret", s.cfg.ClientSecret)
	default:
		// Only the header: RFC 6749 §2.3 allows one method per request.
		basic = true
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, fmt.Errorf("building request: %w", err)
	}
	if basic {
		// RFC 6749 §2.3.1: each is form-urlencoded first, so a ':' in
		// the id cannot be taken for the separator.
		req.SetBasicAuth(url.QueryEscape(s.cfg.ClientID), url.QueryEscape(s.cfg.ClientSecret))
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	// The URL carries no secret (they are in the body or a header), so the
	// *url.Error that Do returns is safe to pass on.
	return s.httpClient.Do(req)
}

// ReadTokenError turns a non-200 answer of the token or revocation endpoint
// into a *TokenError, its text made printable and bounded. pkg/login (rotor
// login) reads rotor's answers with it too.
func ReadTokenError(resp *http.Response) *TokenError {
	te := &TokenError{StatusCode: resp.StatusCode}
	if s := resp.Header.Get("Retry-After"); s != "" {
		if n, err := strconv.Atoi(s); err == nil && n > 0 {
			te.RetryAfter = time.Duration(n) * time.Second
		}
	}
	var body struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if json.Unmarshal(b, &body) == nil {
		te.Code, te.Description = printable(body.Error), printable(body.Description)
	}
	return te
}

// printable keeps text from the network to printable ASCII and a sane length
// before it goes into an error or a header.
func printable(s string) string {
	const maxLen = 200
	var b strings.Builder
	for _, r := range s {
		if b.Len() >= maxLen {
			b.WriteString("...")
			break
		}
		if r >= 0x20 && r <= 0x7e && r != '"' && r != '\\' {
			b.WriteRune(r)
		} else {
			b.WriteByte('?')
		}
	}
	return b.String()
}
