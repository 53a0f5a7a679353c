package issuer

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"time"

	"rotor.dev/rotor/api/v1alpha1"
	"rotor.dev/rotor/pkg/accounts"
	"rotor.dev/rotor/pkg/oauthclients"
	"rotor.dev/rotor/pkg/sessions"
	"rotor.dev/rotor/pkg/tokens"
	"rotor.dev/rotor/pkg/workload"
)

// Grant types (RFC 6749 sections 4.3 and 6, RFC 8693).
const (
	GrantPassword      = "password"
	GrantRefreshToken  = "refresh_token"
	GrantTokenExchange = "urn:ietf:params:oauth:grant-type:token-exchange"
	// GrantClientCredentials is RFC 6749 section 4.4.
	GrantClientCredentials = "client_credentials"

	// TokenTypeJWT is the subject_token_type of a Kubernetes ServiceAccount token.
	TokenTypeJWT = "urn:ietf:params:oauth:token-type:jwt"
	// TokenTypeAccessToken is the issued_token_type of an exchange.
	TokenTypeAccessToken = "urn:ietf:params:oauth:token-type:access_token"
)

// tokenResponse is RFC 6749 section 5.1.
type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in"`
	RefreshToken string `json:"refresh_token,omitempty"`
	// Scope is the granted scope; RFC 6749 section 5.1 requires it when it
	// differs from the requested one, and rotor always sends a non-empty one.
	Scope string `json:"scope,omitempty"`
	// IssuedTokenType is set for token exchange (RFC 8693 section 2.2.1).
	IssuedTokenType string `json:"issued_token_type,omitempty"`
}

// token is POST /token. Every grant is made to a registered OAuth client
// (pkg/oauthclients): it is authenticated first, then its registration
// decides the grant types, audiences, scopes and lifetimes it gets.
func (i *Issuer) token(w http.ResponseWriter, r *http.Request) {
	f, oerr := readForm(w, r)
	if oerr != nil {
		writeError(w, oerr)
		return
	}
	grant := f.get("grant_type")
	resp, clientID, oerr := i.grant(r, f, grant)
	if oerr != nil {
		grantFailures.WithLabelValues(grantLabel(grant), oerr.code).Inc()
		writeError(w, oerr)
		return
	}
	tokensIssued.WithLabelValues(grantLabel(grant), clientID).Inc()
	writeJSON(w, http.StatusOK, resp)
}

// grant answers a token request with grant type grant, and names the
// client it was issued to.
func (i *Issuer) grant(r *http.Request, f form, grant string) (*tokenResponse, string, *oauthError) {
	switch grant {
	case "":
		return nil, "", newError(http.StatusBadRequest, errInvalidRequest, "missing parameter grant_type")
	case GrantPassword:
		if !i.cfg.PasswordGrant {
			return nil, "", newError(http.StatusBadRequest, errUnsupportedGrantType, "the password grant is disabled")
		}
	case GrantTokenExchange:
		if len(i.cfg.ExchangePolicy) == 0 {
			return nil, "", newError(http.StatusBadRequest, errUnsupportedGrantType, "token exchange is disabled")
		}
	case GrantRefreshToken, GrantClientCredentials:
	default:
		return nil, "", newError(http.StatusBadRequest, errUnsupportedGrantType, "unsupported grant_type")
	}
	creds, err := oauthclients.ClientCredentials(r.Header, url.Values(f))
	if err != nil {
		return nil, "", i.clientError(r, "", err)
	}
	if grant == GrantRefreshToken {
		return i.refreshGrant(r, f, creds)
	}
	c, oerr := i.client(r, creds, grant)
	if oerr != nil {
		return nil, "", oerr
	}
	p, oerr := i.policy(r, c, f)
	if oerr != nil {
		return nil, c.ID, oerr
	}
	var resp *tokenResponse
	switch grant {
	case GrantPassword:
		resp, oerr = i.passwordGrant(r, f, p)
	case GrantTokenExchange:
		resp, oerr = i.exchangeGrant(r, f, p)
	case GrantClientCredentials:
		resp, oerr = i.clientCredentialsGrant(r, p)
	}
	return resp, c.ID, oerr
}

// client authenticates the request's client (RFC 6749 section 2.3): the
// one it names, or --default-client-id's when it names none, which must be
// Public (a request without credentials cannot authenticate anything else).
// The client must be allowed grant.
func (i *Issuer) client(r *http.Request, creds oauthclients.Credentials, grant string) (*oauthclients.Client, *oauthError) {
	if creds.ID == "" {
		creds.ID = i.cfg.DefaultClientID
	}
	c, err := i.clients.Authenticate(r.Context(), creds, clientAddr(r))
	if err != nil {
		return nil, i.clientError(r, creds.ID, err)
	}
	if !c.AllowsGrant(grant) {
		return nil, i.clientError(r, c.ID, c.UnauthorizedGrant())
	}
	return c, nil
}

// granted is what a client gets for one request: the audience and scope it
// asked for, if its registration allows them, and its lifetimes.
type granted struct {
	client    *oauthclients.Client
	audience  []string
	scope     string
	lifetimes oauthclients.Lifetimes
}

// policy applies the client's registration to the request's audience and
// scope parameters.
func (i *Issuer) policy(r *http.Request, c *oauthclients.Client, f form) (granted, *oauthError) {
	aud, err := c.Audience(f.get("audience"))
	if err != nil {
		return granted{}, i.clientError(r, c.ID, err)
	}
	scope, err := c.Scope(f.get("scope"))
	if err != nil {
		return granted{}, i.clientError(r, c.ID, err)
	}
	return granted{client: c, audience: aud, scope: scope, lifetimes: c.Lifetimes(i.cfg.Lifetimes)}, nil
}

func (i *Issuer) passwordGrant(r *http.Request, f form, p granted) (*tokenResponse, *oauthError) {
	username, oerr := f.require("username")
	if oerr != nil {
		return nil, oerr
	}
	password, oerr := f.require("password")
	if oerr != nil {
		return nil, oerr
	}
	acct, err := i.accounts.Authenticate(r.Context(), username, password, clientAddr(r))
	switch {
	case errors.Is(err, accounts.ErrThrottled):
		e := newError(http.StatusTooManyRequests, errInvalidGrant, "too many failed logins; retry later")
		e.retryAfter = time.Minute
		return nil, e
	case errors.Is(err, accounts.ErrInvalidCredentials):
		return nil, newError(http.StatusBadRequest, errInvalidGrant, "invalid username or password")
	case err != nil:
		return nil, i.internal(r, "authenticating", err)
	}
	return i.issue(r, GrantPassword, p, sessions.Grant{
		Subject: acct.Username, Groups: acct.Groups, Method: v1alpha1.AuthMethodPassword,
	})
}

// issue answers a login (password or exchange): an access token and, when
// the client may refresh, a new session holding g. A client without the
// refresh_token grant gets no refresh token and costs no API write.
func (i *Issuer) issue(r *http.Request, grant string, p granted, g sessions.Grant) (*tokenResponse, *oauthError) {
	g.ClientID, g.Audience, g.Scope = p.client.ID, p.audience, p.scope
	g.RefreshTTL, g.MaxLifetime = p.lifetimes.RefreshToken, p.lifetimes.SessionMax
	refreshable := p.client.AllowsGrant(GrantRefreshToken)
	var admitted *admission
	if refreshable {
		var oerr *oauthError
		if admitted, oerr = i.admitSession(r, grant, g.Subject); oerr != nil {
			return nil, oerr
		}
	}
	created := false
	defer func() { sessionCreated(admitted, created) }()
	// Sign before writing: a session is stored only when its tokens exist.
	access, _, err := i.minter.Mint(tokens.Subject{
		Subject: g.Subject, ClientID: g.ClientID, Audience: g.Audience, Groups: g.Groups, Scope: g.Scope, TTL: p.lifetimes.AccessToken,
	})
	if err != nil {
		return nil, i.internal(r, "minting access token", err)
	}
	resp := response(access, p.lifetimes.AccessToken, g.Scope)
	if !refreshable {
		return resp, nil
	}
	if resp.RefreshToken, _, err = i.sessions.Create(r.Context(), g); err != nil {
		return nil, i.internal(r, "creating session", err)
	}
	created = true
	return resp, nil
}

// ClientSubjectPrefix starts the sub of client_credentials tokens: the
// client acts for itself, and "client:" followed by its client_id cannot be
// an account's username (a DNS subdomain, without ':') or a
// ServiceAccount's ("system:serviceaccount:...").
const ClientSubjectPrefix = "client:"

// clientCredentialsGrant is RFC 6749 section 4.4: an access token for the
// client itself, no refresh token (section 4.4.3), no session, and so no
// API request at all.
func (i *Issuer) clientCredentialsGrant(r *http.Request, p granted) (*tokenResponse, *oauthError) {
	access, _, err := i.minter.Mint(tokens.Subject{
		Subject: ClientSubjectPrefix + p.client.ID, ClientID: p.client.ID, Audience: p.audience, Scope: p.scope, TTL: p.lifetimes.AccessToken,
	})
	if err != nil {
		return nil, i.internal(r, "minting access token", err)
	}
	return response(access, p.lifetimes.AccessToken, p.scope), nil
}

// refreshGrant is RFC 6749 section 6. The session's client is resolved from
// the session (a public client need not name itself), and must still be
// registered, Ready, allowed to refresh and to use the session's audience;
// a request that names a client must name the session's, authenticated if
// it is confidential.
func (i *Issuer) refreshGrant(r *http.Request, f form, creds oauthclients.Credentials) (*tokenResponse, string, *oauthError) {
	token, oerr := f.require("refresh_token")
	if oerr != nil {
		return nil, "", oerr
	}
	var authed *oauthclients.Client
	if creds.ID != "" {
		// A client that is gone or not Ready refuses the grant, as it does
		// for a request that names no client: its sessions are over.
		c, found, err := i.clients.Lookup(r.Context(), creds.ID)
		if err != nil {
			return nil, "", i.internal(r, "resolving client", err)
		}
		if !found || !c.Ready {
			return nil, "", refused(sessions.ReasonClientNotAllowed)
		}
		if authed, err = i.clients.Authenticate(r.Context(), creds, clientAddr(r)); err != nil {
			return nil, "", i.clientError(r, creds.ID, err)
		}
	}
	var (
		access    string
		lifetimes oauthclients.Lifetimes
		client    *oauthclients.Client
		scope     string
	)
	policy := func(s *v1alpha1.RefreshTokenSpec) (sessions.ClientPolicy, error) {
		c := authed
		switch {
		case c != nil && c.ID != s.ClientID:
			// Refused as a client mismatch by the store (or revoked as a
			// replay). The authenticated client's lifetimes stand in.
			client, lifetimes = c, c.Lifetimes(i.cfg.Lifetimes)
			return sessions.ClientPolicy{RefreshTTL: lifetimes.RefreshToken, ReuseGrace: lifetimes.ReuseGrace}, nil
		case c == nil:
			var found bool
			var err error
			if c, found, err = i.clients.Lookup(r.Context(), s.ClientID); err != nil {
				return sessions.ClientPolicy{}, fmt.Errorf("resolving client %s: %w", s.ClientID, err)
			}
			if !found || !c.Ready {
				return sessions.ClientPolicy{}, sessions.Refused(sessions.ReasonClientNotAllowed)
			}
			if c.Type != v1alpha1.ClientTypePublic {
				return sessions.ClientPolicy{}, i.clientError(r, c.ID, oauthclients.MissingSecret())
			}
		}
		if !c.AllowsGrant(GrantRefreshToken) || !c.AllowsAudience(s.Session.Audience) {
			return sessions.ClientPolicy{}, sessions.Refused(sessions.ReasonClientNotAllowed)
		}
		client, lifetimes = c, c.Lifetimes(i.cfg.Lifetimes)
		return sessions.ClientPolicy{RefreshTTL: lifetimes.RefreshToken, ReuseGrace: lifetimes.ReuseGrace}, nil
	}
	// The access token is minted from the session before the rotation is
	// written, so a stored rotation always comes with tokens to hand out.
	prepare := func(s *v1alpha1.RefreshTokenSpec) error {
		groups, err := i.recheck(s)
		if err != nil {
			return err
		}
		if scope, err = client.RefreshScope(s.Session.Scope, f.get("scope")); err != nil {
			return i.clientError(r, client.ID, err)
		}
		access, _, err = i.minter.Mint(tokens.Subject{
			Subject: s.Subject, ClientID: s.ClientID, Audience: s.Session.Audience, Groups: groups, Scope: scope, TTL: lifetimes.AccessToken,
		})
		return err
	}
	var authedID string
	if authed != nil {
		authedID = authed.ID
	}
	refresh, _, err := i.sessions.Rotate(r.Context(), token, sessions.Refresh{ClientID: authedID, Client: policy, Prepare: prepare})
	var oe *oauthError
	switch {
	case errors.As(err, &oe):
		return nil, authedID, oe
	case sessions.ReasonOf(err) != "":
		return nil, authedID, refused(sessions.ReasonOf(err))
	case err != nil:
		return nil, authedID, i.internal(r, "rotating session", err)
	}
	resp := response(access, lifetimes.AccessToken, scope)
	resp.RefreshToken = refresh
	return resp, client.ID, nil
}

// refused is the answer to a refresh token that must not be honoured, the
// same whatever the reason, which only the metrics tell.
func refused(reason sessions.Reason) *oauthError {
	refreshFailures.WithLabelValues(string(reason)).Inc()
	return newError(http.StatusBadRequest, errInvalidGrant, "the refresh token is invalid, expired, revoked or already used")
}

// recheck checks at refresh time what login checked, and returns the groups
// the access token carries: for an account, its groups now (a group removed
// in Kubernetes is gone at the next refresh, read from the informer cache
// without an API request); for a ServiceAccount, those its TokenReview gave,
// which follow from its name. A disabled or deleted account ends the session
// for good (*sessions.RevokeError); a ServiceAccount outside the policy is
// only refused, since the policy can allow it again.
func (i *Issuer) recheck(s *v1alpha1.RefreshTokenSpec) ([]string, error) {
	switch s.Session.Method {
	case v1alpha1.AuthMethodPassword:
		if acct, ok := i.accounts.Lookup(s.Subject); ok {
			return acct.Groups, nil
		}
		if !i.accountsSynced() {
			// A cache still loading proves nothing about the account.
			return nil, sessions.Refused(sessions.ReasonNotAllowed)
		}
		return nil, &sessions.RevokeError{Reason: v1alpha1.RevocationAccountDisabled}
	case v1alpha1.AuthMethodServiceAccount:
		if ns, name, ok := workload.SubjectFromUsername(s.Subject); ok && i.cfg.ExchangePolicy.Allows(ns, name) {
			return s.Session.Groups, nil
		}
	}
	return nil, sessions.Refused(sessions.ReasonNotAllowed)
}

// accountsSynced reports whether the account cache has loaded, when the
// Accounts implementation can tell (accounts.Store can).
func (i *Issuer) accountsSynced() bool {
	r, ok := i.accounts.(interface{ ReadyCheck(*http.Request) error })
	return !ok || r.ReadyCheck(nil) == nil
}

// exchangeGrant is RFC 8693 token exchange of a Kubernetes ServiceAccount
// token, validated by the TokenReview API for rotor's audience.
func (i *Issuer) exchangeGrant(r *http.Request, f form, p granted) (*tokenResponse, *oauthError) {
	subjectToken, oerr := f.require("subject_token")
	if oerr != nil {
		return nil, oerr
	}
	typ, oerr := f.require("subject_token_type")
	if oerr != nil {
		return nil, oerr
	}
	if typ != TokenTypeJWT {
		return nil, newError(http.StatusBadRequest, errInvalidRequest, "subject_token_type must be "+TokenTypeJWT)
	}
	if f.get("actor_token") != "" {
		return nil, newError(http.StatusBadRequest, errInvalidRequest, "delegation (actor_token) is not supported")
	}
	if rt := f.get("requested_token_type"); rt != "" && rt != TokenTypeAccessToken {
		return nil, newError(http.StatusBadRequest, errInvalidRequest, "requested_token_type must be "+TokenTypeAccessToken)
	}
	id, err := i.exchange.Review(r.Context(), subjectToken)
	switch {
	case errors.Is(err, workload.ErrNotAuthenticated):
		return nil, newError(http.StatusBadRequest, errInvalidGrant, "the subject token is not a valid ServiceAccount token for this issuer")
	case errors.Is(err, workload.ErrUnavailable):
		return nil, i.internal(r, "reviewing subject token", fmt.Errorf("%w: %w", sessions.ErrUnavailable, err))
	case err != nil:
		return nil, i.internal(r, "reviewing subject token", err)
	}
	if !i.cfg.ExchangePolicy.Allows(id.Namespace, id.Name) {
		return nil, newError(http.StatusBadRequest, errUnauthorizedClient, "this ServiceAccount may not exchange its token")
	}
	// The session ends when the exchanged token does: a deleted
	// ServiceAccount or pod cannot refresh past it, and the workload, which
	// re-reads its projected token, exchanges again.
	resp, oerr := i.issue(r, GrantTokenExchange, p, sessions.Grant{
		Subject: id.Username, Groups: id.Groups, Method: v1alpha1.AuthMethodServiceAccount, NotAfter: id.ExpiresAt,
	})
	if oerr != nil {
		return nil, oerr
	}
	resp.IssuedTokenType = TokenTypeAccessToken
	return resp, nil
}

// response is a successful answer with an access token that lives ttl.
func response(access string, ttl time.Duration, scope string) *tokenResponse {
	return &tokenResponse{AccessToken: access, TokenType: "Bearer", ExpiresIn: int64(ttl / time.Second), Scope: scope}
}

// clientError answers a refusal from pkg/oauthclients (an *oauthclients.Error,
// counted by client and reason), or an internal error for anything else
// (the client cache failing). id is the client the request named; it labels
// the metric only when it is registered, so that junk ids cannot grow it.
func (i *Issuer) clientError(r *http.Request, id string, err error) *oauthError {
	var ce *oauthclients.Error
	if !errors.As(err, &ce) {
		return i.internal(r, "authenticating client", err)
	}
	if ce.Code == oauthclients.CodeInvalidClient {
		clientAuthFailures.WithLabelValues(i.clientLabel(r, id), string(ce.Reason)).Inc()
	}
	e := newError(ce.Status, ce.Code, ce.Description)
	e.retryAfter = ce.RetryAfter
	e.wwwAuthenticate = ce.WWWAuthenticate(i.cfg.URL)
	return e
}

// clientLabel is id as a metric label: itself when it names a registered
// client (a cache read), "unknown" otherwise, so that junk ids cannot grow
// a metric.
func (i *Issuer) clientLabel(r *http.Request, id string) string {
	if id == "" {
		return "none"
	}
	if _, found, err := i.clients.Lookup(r.Context(), id); err != nil || !found {
		return "unknown"
	}
	return id
}

// internal maps failures that are not the client's: an unreachable API
// server or no signing key yet is 503 temporarily_unavailable (retry),
// anything else 500. Details go to the log, never to the client.
func (i *Issuer) internal(r *http.Request, what string, err error) *oauthError {
	if errors.Is(err, sessions.ErrUnavailable) || errors.Is(err, tokens.ErrNoActiveKey) {
		i.log.Info("issuer temporarily unavailable", "path", r.URL.Path, "step", what, "error", err.Error())
		e := newError(http.StatusServiceUnavailable, errTemporarilyUnavail, "the issuer is temporarily unavailable; retry later")
		e.retryAfter = time.Second
		return e
	}
	i.log.Error(err, "request failed", "path", r.URL.Path, "step", what)
	return newError(http.StatusInternalServerError, errServerError, "internal error")
}

// clientAddr is the peer's IP, the key for per-address login throttling.
// Forwarded headers are not trusted: any client can set them.
func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

func grantLabel(g string) string {
	switch g {
	case GrantPassword, GrantRefreshToken, GrantClientCredentials:
		return g
	case GrantTokenExchange:
		return "token_exchange"
	case "":
		return "none"
	}
	return "other"
}
