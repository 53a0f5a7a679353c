package client

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/golang-jwt/jwt/v5"
)

type claimsKey struct{}

// ClaimsFromContext returns the claims Middleware verified for this request.
func ClaimsFromContext(ctx context.Context) (*Claims, bool) {
	c, ok := ctx.Value(claimsKey{}).(*Claims)
	return c, ok && c != nil
}

// Middleware lets through requests with a valid Bearer access token, with
// its claims in the request context (see ClaimsFromContext). Others get 401
// and an RFC 6750 §3 challenge: with error="invalid_token" for a bad token,
// which tells a rotor client to refresh, and without an error code when no
// Bearer credentials were sent.
func (v *Verifier) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := bearerToken(r)
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="`+v.realm+`"`)
			writeAuthError(w, "", "")
			return
		}
		claims, err := v.Verify(r.Context(), token)
		if err != nil {
			// The reason stays vague on purpose: which check failed helps
			// an attacker more than a client, who refreshes either way.
			desc := "the access token is invalid"
			if errors.Is(err, jwt.ErrTokenExpired) {
				desc = "the access token expired"
			}
			w.Header().Set("WWW-Authenticate", `Bearer realm="`+v.realm+`", error="invalid_token", error_description="`+desc+`"`)
			writeAuthError(w, "invalid_token", desc)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), claimsKey{}, claims)))
	})
}

// bearerToken returns the token of an Authorization: Bearer header (RFC 6750
// §2.1; the scheme is case-insensitive). Tokens in the query string are not
// accepted: they end up in logs.
func bearerToken(r *http.Request) (string, bool) {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

func writeAuthError(w http.ResponseWriter, code, desc string) {
	w.Header().Set("Cache-Control", "no-store")
	if code == "" {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusUnauthorized)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": desc})
}
