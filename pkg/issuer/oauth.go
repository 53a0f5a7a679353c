package issuer

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"
)

// OAuth 2.0 error codes (RFC 6749 section 5.2, RFC 6750 section 3.1, and
// temporarily_unavailable borrowed from section 4.1.2.1 for outages).
const (
	errInvalidRequest       = "invalid_request"
	errInvalidGrant         = "invalid_grant"
	errUnsupportedGrantType = "unsupported_grant_type"
	errUnauthorizedClient   = "unauthorized_client"
	errInvalidTarget        = "invalid_target"
	errInvalidToken         = "invalid_token"
	errServerError          = "server_error"
	errTemporarilyUnavail   = "temporarily_unavailable"
)

// oauthError is an error answered as RFC 6749 section 5.2 JSON.
type oauthError struct {
	status      int
	code        string
	description string
	retryAfter  time.Duration
	// wwwAuthenticate is the challenge of a 401 invalid_client (RFC 6749
	// section 5.2).
	wwwAuthenticate string
}

func (e *oauthError) Error() string { return e.code + ": " + e.description }

func newError(status int, code, description string) *oauthError {
	return &oauthError{status: status, code: code, description: description}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	// Token responses and errors must never be cached (RFC 6749 section 5.1).
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, e *oauthError) {
	if e.status == http.StatusMethodNotAllowed && w.Header().Get("Allow") == "" {
		w.Header().Set("Allow", http.MethodPost)
	}
	if e.wwwAuthenticate != "" {
		w.Header().Set("WWW-Authenticate", e.wwwAuthenticate)
	}
	if e.retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(e.retryAfter.Round(time.Second)/time.Second)))
	}
	writeJSON(w, e.status, struct {
		Error       string `json:"error"`
		Description string `json:"error_description,omitempty"`
	}{e.code, e.description})
}
