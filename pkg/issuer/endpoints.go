package issuer

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"rotor.dev/rotor/api/v1alpha1"
	"rotor.dev/rotor/pkg/oauthclients"
)

// discovery is GET /.well-known/openid-configuration (RFC 8414, OpenID
// Connect Discovery). issuer is exactly the configured URL.
func (i *Issuer) discovery(w http.ResponseWriter, r *http.Request) {
	if !allowGet(w, r) {
		return
	}
	if !i.keysLoaded(w) {
		return
	}
	u := strings.TrimSuffix(i.cfg.URL, "/")
	algs := i.keys.Algorithms()
	grants := []string{GrantRefreshToken, GrantClientCredentials}
	if i.cfg.PasswordGrant {
		grants = append([]string{GrantPassword}, grants...)
	}
	if len(i.cfg.ExchangePolicy) > 0 {
		grants = append(grants, GrantTokenExchange)
	}
	// What the registered clients may request, read from the cache; a
	// cache not loaded yet leaves the RECOMMENDED field out rather than
	// claiming no scopes.
	scopes, err := i.clients.Scopes(r.Context())
	if err != nil {
		i.log.V(1).Info("discovery without scopes_supported", "error", err.Error())
	}
	authMethods := []string{string(oauthclients.MethodBasic), string(oauthclients.MethodPost), string(oauthclients.MethodNone)}
	doc := map[string]any{
		"issuer":                                     u,
		"jwks_uri":                                   u + PathJWKS,
		"token_endpoint":                             u + PathToken,
		"revocation_endpoint":                        u + PathRevoke,
		"userinfo_endpoint":                          u + PathUserinfo,
		"grant_types_supported":                      grants,
		"response_types_supported":                   []string{"token"},
		"subject_types_supported":                    []string{"public"},
		"token_endpoint_auth_methods_supported":      authMethods,
		"revocation_endpoint_auth_methods_supported": authMethods,
		"id_token_signing_alg_values_supported":      algs,
		"access_token_signing_alg_values_supported":  algs,
		"claims_supported":                           []string{"iss", "sub", "aud", "exp", "iat", "jti", "client_id", "scope", "groups"},
	}
	if err == nil && len(scopes) > 0 {
		doc["scopes_supported"] = scopes
	}
	if len(i.cfg.IntrospectionPolicy) > 0 {
		doc["introspection_endpoint"] = u + PathIntrospect
		doc["introspection_endpoint_auth_methods_supported"] = []string{"bearer"}
	}
	w.Header().Set("Cache-Control", "public, max-age=300")
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(doc)
}

// jwks is GET of the jwks_uri (RFC 7517): public keys only, with a max-age
// shorter than the pre-publication of the next key, so every verifier has
// fetched a key before the issuer signs with it.
func (i *Issuer) jwks(w http.ResponseWriter, r *http.Request) {
	if !allowGet(w, r) {
		return
	}
	if !i.keysLoaded(w) {
		return
	}
	body, etag := i.keys.JWKS()
	w.Header().Set("Cache-Control", fmt.Sprintf("public, max-age=%d", int(i.cfg.JWKSMaxAge.Seconds())))
	w.Header().Set("ETag", etag)
	w.Header().Set("Content-Type", "application/jwk-set+json")
	if match := r.Header.Get("If-None-Match"); match != "" && match == etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	_, _ = w.Write(body)
}

// keysLoaded answers 503 with Retry-After, never cached, until the signing
// keys are loaded: an empty key set or a discovery document without
// algorithms, served with a max-age, would make verifiers that honour
// Cache-Control (the Kubernetes API server among them) refuse every token
// for that long.
func (i *Issuer) keysLoaded(w http.ResponseWriter) bool {
	if _, ok := i.keys.Active(); ok {
		return true
	}
	e := newError(http.StatusServiceUnavailable, errTemporarilyUnavail, "the signing keys are not loaded yet; retry shortly")
	e.retryAfter = time.Second
	writeError(w, e)
	return false
}

// revoke is POST /revoke (RFC 7009): 200 whether or not the token was known.
func (i *Issuer) revoke(w http.ResponseWriter, r *http.Request) {
	f, oerr := readForm(w, r)
	if oerr != nil {
		writeError(w, oerr)
		return
	}
	token, oerr := revokeToken(f)
	if oerr != nil {
		writeError(w, oerr)
		return
	}
	// The client authenticates as at the token endpoint (RFC 7009 section
	// 2.1), except that a request naming no client is not given the default
	// one: the session says whose it is.
	creds, err := oauthclients.ClientCredentials(r.Header, url.Values(f))
	if err != nil {
		writeError(w, i.clientError(r, "", err))
		return
	}
	var authed *oauthclients.Client
	if creds.ID != "" {
		if authed, err = i.clients.Authenticate(r.Context(), creds, clientAddr(r)); err != nil {
			writeError(w, i.clientError(r, creds.ID, err))
			return
		}
	}
	i.proveRevocation(r, token)
	// Access tokens are short-lived JWTs and cannot be revoked one by one;
	// RFC 7009 section 2.2 lets the server ignore them.
	err = i.sessions.Revoke(r.Context(), token, func(s *v1alpha1.RefreshTokenSpec) error {
		return i.mayRevoke(r, authed, s)
	})
	var oe *oauthError
	switch {
	case errors.As(err, &oe):
		writeError(w, oe)
		return
	case err != nil:
		writeError(w, i.internal(r, "revoking", err))
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
}

// mayRevoke checks that the session of a presented refresh token was issued
// to the client revoking it (RFC 7009 section 2.1): the authenticated client
// must be the session's, and a Confidential client's session is revoked only
// by that client, authenticated. A Public client's session may be revoked by
// whoever holds its refresh token, as anyone holding it could use it.
func (i *Issuer) mayRevoke(r *http.Request, authed *oauthclients.Client, s *v1alpha1.RefreshTokenSpec) error {
	if authed != nil {
		if authed.ID != s.ClientID {
			return newError(http.StatusBadRequest, errUnauthorizedClient, "the token was not issued to this client")
		}
		return nil
	}
	c, found, err := i.clients.Lookup(r.Context(), s.ClientID)
	if err != nil {
		return fmt.Errorf("resolving client %s: %w", s.ClientID, err)
	}
	if found && c.Type == v1alpha1.ClientTypeConfidential {
		return i.clientError(r, c.ID, oauthclients.MissingSecret())
	}
	return nil
}

// proveRevocation tells the rate limit whether a revocation proved
// possession of something: a refresh token that would rotate now, or a valid
// access token. Every other revocation (RFC 7009 answers 200 to all)
// spends its address's budget. Lookup reads the session into the cache that
// Revoke then reads, so this costs no API request of its own.
func (i *Issuer) proveRevocation(r *http.Request, token string) {
	a := admissionOf(r)
	if a == nil {
		return
	}
	if _, err := i.sessions.Lookup(r.Context(), token); err == nil {
		a.prove()
		return
	}
	if _, err := i.verifier.Verify(token); err == nil {
		a.prove()
	}
}

// userinfo is GET or POST /userinfo with a Bearer access token: the
// verified claims. A bad token gets 401 with the RFC 6750 challenge that
// tells a client to refresh.
func (i *Issuer) userinfo(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodPost {
		w.Header().Set("Allow", "GET, POST")
		writeError(w, newError(http.StatusMethodNotAllowed, errInvalidRequest, "use GET or POST"))
		return
	}
	token, ok := bearer(r)
	if !ok {
		w.Header().Set("WWW-Authenticate", `Bearer realm="rotor"`)
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": errInvalidRequest, "error_description": "missing bearer token"})
		return
	}
	claims, err := i.verifier.Verify(token)
	if err != nil {
		w.Header().Set("WWW-Authenticate", `Bearer realm="rotor", error="invalid_token", error_description="the access token is invalid or expired"`)
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": errInvalidToken, "error_description": "the access token is invalid or expired"})
		return
	}
	writeJSON(w, http.StatusOK, claims)
}

func allowGet(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return true
	}
	w.Header().Set("Allow", "GET, HEAD")
	http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	return false
}
