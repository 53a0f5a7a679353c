package issuer

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"time"

	"rotor.dev/rotor/api/v1alpha1"
	"rotor.dev/rotor/pkg/accounts"
	"rotor.dev/rotor/pkg/sessions"
	"rotor.dev/rotor/pkg/tokens"
	"rotor.dev/rotor/pkg/workload"
)

// Grant types (RFC 6749 sections 4.3 and 6, RFC 8693).
const (
	GrantPassword      = "password"
	GrantRefreshToken  = "refresh_token"
	GrantTokenExchange = "urn:ietf:params:oauth:grant-type:token-exchange"

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
	// IssuedTokenType is set for token exchange (RFC 8693 section 2.2.1).
	IssuedTokenType string `json:"issued_token_type,omitempty"`
}

// token is POST /token.
func (i *Issuer) token(w http.ResponseWriter, r *http.Request) {
	f, oerr := readForm(w, r)
	if oerr != nil {
		writeError(w, oerr)
		return
	}
	grant := f.get("grant_type")
	var resp *tokenResponse
	switch grant {
	case "":
		oerr = newError(http.StatusBadRequest, errInvalidRequest, "missing parameter grant_type")
	case GrantPassword:
		if !i.cfg.PasswordGrant {
			oerr = newError(http.StatusBadRequest, errUnsupportedGrantType, "the password grant is disabled")
			break
		}
		resp, oerr = i.passwordGrant(r, f)
	case GrantRefreshToken:
		resp, oerr = i.refreshGrant(r, f)
	case GrantTokenExchange:
		if len(i.cfg.ExchangePolicy) == 0 {
			oerr = newError(http.StatusBadRequest, errUnsupportedGrantType, "token exchange is disabled")
			break
		}
		resp, oerr = i.exchangeGrant(r, f)
	default:
		oerr = newError(http.StatusBadRequest, errUnsupportedGrantType, "unsupported grant_type")
	}
	if oerr != nil {
		grantFailures.WithLabelValues(grantLabel(grant), oerr.code).Inc()
		writeError(w, oerr)
		return
	}
	tokensIssued.WithLabelValues(grantLabel(grant)).Inc()
	writeJSON(w, http.StatusOK, resp)
}

func (i *Issuer) passwordGrant(r *http.Request, f form) (*tokenResponse, *oauthError) {
	username, oerr := f.require("username")
	if oerr != nil {
		return nil, oerr
	}
	password, oerr := f.require("password")
	if oerr != nil {
		return nil, oerr
	}
	aud, oerr := i.audience(f)
	if oerr != nil {
		return nil, oerr
	}
	clientID, oerr := i.clientID(f)
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
	admitted, oerr := i.admitSession(r, GrantPassword, acct.Username)
	if oerr != nil {
		return nil, oerr
	}
	created := false
	defer func() { sessionCreated(admitted, created) }()
	subject := tokens.Subject{Subject: acct.Username, ClientID: clientID, Audience: aud, Groups: acct.Groups}
	// Sign before writing: a session is stored only when its tokens exist.
	access, _, err := i.minter.Mint(subject)
	if err != nil {
		return nil, i.internal(r, "minting access token", err)
	}
	refresh, _, err := i.sessions.Create(r.Context(), sessions.Grant{
		Subject: acct.Username, Groups: acct.Groups, ClientID: clientID, Audience: aud, Method: v1alpha1.AuthMethodPassword,
	})
	if err != nil {
		return nil, i.internal(r, "creating session", err)
	}
	created = true
	return i.response(access, refresh), nil
}

func (i *Issuer) refreshGrant(r *http.Request, f form) (*tokenResponse, *oauthError) {
	token, oerr := f.require("refresh_token")
	if oerr != nil {
		return nil, oerr
	}
	var access string
	// The access token is minted from the session before the rotation is
	// written, so a stored rotation always comes with tokens to hand out.
	prepare := func(s *v1alpha1.RefreshTokenSpec) error {
		groups, err := i.recheck(s)
		if err != nil {
			return err
		}
		access, _, err = i.minter.Mint(tokens.Subject{Subject: s.Subject, ClientID: s.ClientID, Audience: s.Audience, Groups: groups})
		return err
	}
	// client_id, when sent, must be the session's (RFC 6749 section 6).
	refresh, _, err := i.sessions.Rotate(r.Context(), token, f.get("client_id"), prepare)
	if reason := sessions.ReasonOf(err); reason != "" {
		refreshFailures.WithLabelValues(string(reason)).Inc()
		return nil, newError(http.StatusBadRequest, errInvalidGrant, "the refresh token is invalid, expired, revoked or already used")
	}
	if err != nil {
		return nil, i.internal(r, "rotating session", err)
	}
	return i.response(access, refresh), nil
}

// recheck checks at refresh time what login checked, and returns the groups
// the access token carries: for an account, its groups now (a group removed
// in Kubernetes is gone at the next refresh, read from the informer cache
// without an API request); for a ServiceAccount, those its TokenReview gave,
// which follow from its name. A disabled or deleted account ends the session
// for good (*sessions.RevokeError); a ServiceAccount outside the policy is
// only refused, since the policy can allow it again.
func (i *Issuer) recheck(s *v1alpha1.RefreshTokenSpec) ([]string, error) {
	switch s.Method {
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
			return s.Groups, nil
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
func (i *Issuer) exchangeGrant(r *http.Request, f form) (*tokenResponse, *oauthError) {
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
	aud, oerr := i.audience(f)
	if oerr != nil {
		return nil, oerr
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
	clientID, oerr := i.clientID(f)
	if oerr != nil {
		return nil, oerr
	}
	admitted, oerr := i.admitSession(r, GrantTokenExchange, id.Username)
	if oerr != nil {
		return nil, oerr
	}
	created := false
	defer func() { sessionCreated(admitted, created) }()
	access, _, err := i.minter.Mint(tokens.Subject{Subject: id.Username, ClientID: clientID, Audience: aud, Groups: id.Groups})
	if err != nil {
		return nil, i.internal(r, "minting access token", err)
	}
	// The session ends when the exchanged token does: a deleted
	// ServiceAccount or pod cannot refresh past it, and the workload, which
	// re-reads its projected token, exchanges again.
	refresh, _, err := i.sessions.Create(r.Context(), sessions.Grant{
		Subject: id.Username, Groups: id.Groups, ClientID: clientID, Audience: aud, Method: v1alpha1.AuthMethodServiceAccount,
		NotAfter: id.ExpiresAt,
	})
	if err != nil {
		return nil, i.internal(r, "creating session", err)
	}
	created = true
	resp := i.response(access, refresh)
	resp.IssuedTokenType = TokenTypeAccessToken
	return resp, nil
}

func (i *Issuer) response(access string, refresh string) *tokenResponse {
	return &tokenResponse{
		AccessToken:  access,
		TokenType:    "Bearer",
		ExpiresIn:    int64(i.minter.TTL / time.Second),
		RefreshToken: refresh,
	}
}

// audience returns the requested audience if allowed, or the default one.
func (i *Issuer) audience(f form) ([]string, *oauthError) {
	aud := f.get("audience")
	if aud == "" {
		return []string{i.cfg.Audience}, nil
	}
	if aud == i.cfg.Audience || slices.Contains(i.cfg.AllowedAudiences, aud) {
		return []string{aud}, nil
	}
	return nil, newError(http.StatusBadRequest, errInvalidTarget, "the audience is not allowed")
}

// clientID returns the request's client_id or the default one. A client_id
// is printable ASCII (RFC 6749 appendix A.1) and fits a session.
func (i *Issuer) clientID(f form) (string, *oauthError) {
	id := f.get("client_id")
	if id == "" {
		return i.cfg.DefaultClientID, nil
	}
	if len(id) > maxClientIDLength {
		return "", newError(http.StatusBadRequest, errInvalidRequest, "client_id is too long")
	}
	for i := 0; i < len(id); i++ {
		if id[i] < 0x20 || id[i] > 0x7e {
			return "", newError(http.StatusBadRequest, errInvalidRequest, "client_id must be printable ASCII")
		}
	}
	return id, nil
}

// maxClientIDLength is the RefreshToken CRD's limit on spec.clientID.
const maxClientIDLength = 253

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
	case GrantPassword, GrantRefreshToken:
		return g
	case GrantTokenExchange:
		return "token_exchange"
	case "":
		return "none"
	}
	return "other"
}
