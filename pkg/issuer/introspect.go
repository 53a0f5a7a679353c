package issuer

import (
	"errors"
	"net/http"

	"rotor.dev/rotor/pkg/sessions"
	"rotor.dev/rotor/pkg/workload"
)

// introspection is an RFC 7662 section 2.2 answer.
type introspection struct {
	Active    bool     `json:"active"`
	TokenType string   `json:"token_type,omitempty"`
	Subject   string   `json:"sub,omitempty"`
	Audience  []string `json:"aud,omitempty"`
	ClientID  string   `json:"client_id,omitempty"`
	Scope     string   `json:"scope,omitempty"`
	Issuer    string   `json:"iss,omitempty"`
	Expiry    int64    `json:"exp,omitempty"`
	IssuedAt  int64    `json:"iat,omitempty"`
	JTI       string   `json:"jti,omitempty"`
	Groups    []string `json:"groups,omitempty"`
	Username  string   `json:"username,omitempty"`
}

var inactive = introspection{Active: false}

// introspect is POST /introspect (RFC 7662). The caller authenticates with
// its own ServiceAccount token as a Bearer token (TokenReview, cached by
// hash) and must be allowed by the introspection policy. Any token that is
// not valid now answers exactly {"active": false}.
func (i *Issuer) introspect(w http.ResponseWriter, r *http.Request) {
	f, oerr := readForm(w, r)
	if oerr != nil {
		writeError(w, oerr)
		return
	}
	if len(i.cfg.IntrospectionPolicy) == 0 {
		writeJSON(w, http.StatusForbidden, map[string]string{"error": "insufficient_scope", "error_description": "introspection is disabled"})
		return
	}
	caller, ok := bearer(r)
	if !ok {
		w.Header().Set("WWW-Authenticate", `Bearer realm="rotor"`)
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": errInvalidRequest, "error_description": "authenticate with a ServiceAccount bearer token"})
		return
	}
	id, err := i.introspectors.Review(r.Context(), caller)
	switch {
	case errors.Is(err, workload.ErrNotAuthenticated):
		w.Header().Set("WWW-Authenticate", `Bearer realm="rotor", error="invalid_token", error_description="the caller's token is not a valid ServiceAccount token for this issuer"`)
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": errInvalidToken})
		return
	case err != nil:
		writeError(w, i.internal(r, "reviewing caller", errors.Join(sessions.ErrUnavailable, err)))
		return
	}
	if !i.cfg.IntrospectionPolicy.Allows(id.Namespace, id.Name) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="rotor", error="insufficient_scope"`)
		writeJSON(w, http.StatusForbidden, map[string]string{"error": "insufficient_scope", "error_description": "this ServiceAccount may not introspect"})
		return
	}
	token, oerr := f.require("token")
	if oerr != nil {
		writeError(w, oerr)
		return
	}
	// The hint only orders the attempts (RFC 7662 section 2.1); rotor's two
	// kinds of token cannot be confused: refresh tokens are not JWTs.
	if _, _, isRefresh := sessions.ParseToken(token); isRefresh {
		i.introspectRefresh(w, r, token)
		return
	}
	claims, err := i.verifier.Verify(token)
	if err != nil {
		writeJSON(w, http.StatusOK, inactive)
		return
	}
	resp := introspection{
		Active: true, TokenType: "Bearer", Subject: claims.Subject, Audience: claims.Audience,
		ClientID: claims.ClientID, Scope: claims.Scope, Issuer: claims.Issuer, JTI: claims.ID, Groups: claims.Groups,
		Username: claims.Subject,
	}
	if claims.ExpiresAt != nil {
		resp.Expiry = claims.ExpiresAt.Unix()
	}
	if claims.IssuedAt != nil {
		resp.IssuedAt = claims.IssuedAt.Unix()
	}
	writeJSON(w, http.StatusOK, resp)
}

func (i *Issuer) introspectRefresh(w http.ResponseWriter, r *http.Request, token string) {
	rt, err := i.sessions.Lookup(r.Context(), token)
	if sessions.ReasonOf(err) != "" {
		writeJSON(w, http.StatusOK, inactive)
		return
	}
	if err != nil {
		writeError(w, i.internal(r, "introspecting", err))
		return
	}
	s := &rt.Spec
	// What a refresh would re-check, without its consequences: a token whose
	// account is gone is inactive even before a refresh revokes it.
	if _, err := i.recheck(s); err != nil {
		writeJSON(w, http.StatusOK, inactive)
		return
	}
	// And its client: a refresh for a client that is gone, not Ready or no
	// longer allowed to refresh this session is refused.
	c, found, err := i.clients.Lookup(r.Context(), s.ClientID)
	if err != nil {
		writeError(w, i.internal(r, "introspecting", err))
		return
	}
	if !found || !c.Ready || !c.AllowsGrant(GrantRefreshToken) || !c.AllowsAudience(s.Session.Audience) {
		writeJSON(w, http.StatusOK, inactive)
		return
	}
	writeJSON(w, http.StatusOK, introspection{
		Active: true, TokenType: "refresh_token", Subject: s.Subject, Audience: s.Session.Audience, ClientID: s.ClientID, Scope: s.Session.Scope,
		Issuer: i.cfg.URL, Expiry: s.EndsAt().Unix(), IssuedAt: s.Session.LastUsedAt.Unix(), Groups: s.Session.Groups, Username: s.Subject,
	})
}
