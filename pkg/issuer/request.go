package issuer

import (
	"context"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"unicode/utf8"
)

// What a request says, decided from the request alone: no API server, no
// keys, no clock. The handlers start with these; request_test.go tests them
// directly.

// maxFormBytes bounds request bodies: no legitimate request comes near it.
const maxFormBytes = 16 << 10

// form is a decoded application/x-www-form-urlencoded body.
type form url.Values

// readForm is parseForm on a request being served. The body goes through
// http.MaxBytesReader, so that the server also closes the connection of a
// request whose body was too large. A body is read once: when the rate
// limit in front of the handler has decoded it already (withForm), that
// decoding is the answer.
func readForm(w http.ResponseWriter, r *http.Request) (form, *oauthError) {
	if p, ok := r.Context().Value(parsedFormKey{}).(*parsedForm); ok {
		return p.f, p.err
	}
	return parseForm(r.Method, r.Header.Get("Content-Type"), http.MaxBytesReader(w, r.Body, maxFormBytes))
}

type parsedFormKey struct{}

// parsedForm is the outcome of readForm, kept for the handler.
type parsedForm struct {
	f   form
	err *oauthError
}

// withForm returns r carrying the outcome of readForm.
func withForm(r *http.Request, f form, err *oauthError) *http.Request {
	return r.WithContext(context.WithValue(r.Context(), parsedFormKey{}, &parsedForm{f: f, err: err}))
}

// parseForm decodes a request body the way RFC 6749 section 3.2 asks: POST
// only, form-encoded, at most maxFormBytes, UTF-8, each parameter at most
// once. It reads the body only: credentials do not belong in URLs, so the
// query string is never a parameter.
func parseForm(method, contentType string, body io.Reader) (form, *oauthError) {
	if method != http.MethodPost {
		return nil, newError(http.StatusMethodNotAllowed, errInvalidRequest, "use POST")
	}
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil || mt != "application/x-www-form-urlencoded" {
		return nil, newError(http.StatusUnsupportedMediaType, errInvalidRequest, "the body must be application/x-www-form-urlencoded")
	}
	// One byte more than allowed tells a body at the limit from one over it.
	raw, err := io.ReadAll(io.LimitReader(body, maxFormBytes+1))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig), err == nil && len(raw) > maxFormBytes:
		return nil, newError(http.StatusRequestEntityTooLarge, errInvalidRequest, "the body is too large")
	case err != nil:
		return nil, newError(http.StatusBadRequest, errInvalidRequest, "the body could not be read")
	}
	values, err := url.ParseQuery(string(raw))
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

// revokeToken is the token a revocation asks to revoke (RFC 7009 section
// 2.1). token_type_hint is ignored: rotor's two kinds of token cannot be
// confused.
func revokeToken(f form) (string, *oauthError) { return f.require("token") }

// bearer returns the token of an RFC 6750 section 2.1 Authorization header.
func bearer(r *http.Request) (string, bool) {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
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
