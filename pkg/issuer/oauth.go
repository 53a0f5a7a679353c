package issuer

import (
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
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

// maxFormBytes bounds request bodies: no legitimate request comes near it.
const maxFormBytes = 16 << 10

// oauthError is an error answered as RFC 6749 section 5.2 JSON.
type oauthError struct {
	status      int
	code        string
	description string
	retryAfter  time.Duration
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
	if e.retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(e.retryAfter.Round(time.Second)/time.Second)))
	}
	writeJSON(w, e.status, struct {
		Error       string `json:"error"`
		Description string `json:"error_description,omitempty"`
	}{e.code, e.description})
}

// form is a decoded application/x-www-form-urlencoded body.
type form url.Values

// readForm decodes a POST body the way RFC 6749 section 3.2 asks: POST only,
// form-encoded, UTF-8, each parameter at most once. The query string is
// ignored: credentials do not belong in URLs.
func readForm(w http.ResponseWriter, r *http.Request) (form, *oauthError) {
	if r.Method != http.MethodPost {
		return nil, newError(http.StatusMethodNotAllowed, errInvalidRequest, "use POST")
	}
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/x-www-form-urlencoded" {
		return nil, newError(http.StatusUnsupportedMediaType, errInvalidRequest, "the body must be application/x-www-form-urlencoded")
	}
	body := http.MaxBytesReader(w, r.Body, maxFormBytes)
	buf := new(strings.Builder)
	if _, err := io.Copy(buf, body); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, newError(http.StatusRequestEntityTooLarge, errInvalidRequest, "the body is too large")
		}
		return nil, newError(http.StatusBadRequest, errInvalidRequest, "the body could not be read")
	}
	values, err := url.ParseQuery(buf.String())
	if err != nil {
		return nil, newError(http.StatusBadRequest, errInvalidRequest, "the body is not valid form encoding")
	}
	for k, vs := range values {
		if !utf8.ValidString(k) {
			return nil, newError(http.StatusBadRequest, errInvalidRequest, "parameters must be UTF-8")
		}
		if len(vs) > 1 {
			return nil, newError(http.StatusBadRequest, errInvalidRequest, "parameter "+printable(k)+" is repeated")
		}
		if !utf8.ValidString(vs[0]) {
			return nil, newError(http.StatusBadRequest, errInvalidRequest, "parameter "+printable(k)+" is not UTF-8")
		}
	}
	return form(values), nil
}

// get returns a parameter; one sent with no value is absent (RFC 6749 section 3.2).
func (f form) get(name string) string { return url.Values(f).Get(name) }

// require returns a parameter or an invalid_request error naming it.
func (f form) require(name string) (string, *oauthError) {
	if v := f.get(name); v != "" {
		return v, nil
	}
	return "", newError(http.StatusBadRequest, errInvalidRequest, "missing parameter "+name)
}

// printable keeps error descriptions within RFC 6749's allowed characters
// (%x20-21 / %x23-5B / %x5D-7E) and short.
func printable(s string) string {
	var b strings.Builder
	for _, r := range s {
		if b.Len() >= 40 {
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
