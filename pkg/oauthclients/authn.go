package oauthclients

import (
	"encoding/base64"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// This file and registry.go and policy.go are the token endpoint's client
// authentication and per-client policy. The token endpoint (pkg/issuer)
// calls them in this order: ClientCredentials on the request,
// Registry.Authenticate, then Client.AllowsGrant, Client.Audience,
// Client.Scope and Client.Lifetimes for the grant.

// Method is how a client authenticated at the token endpoint, by the names
// RFC 8414 (token_endpoint_auth_methods_supported) gives them.
type Method string

const (
	// MethodNone: a public client, which sends its client_id only (RFC 6749
	// section 2.1), or no client_id at all.
	MethodNone Method = "none"
	// MethodBasic: HTTP Basic with the form-urlencoded client_id and
	// client_secret (RFC 6749 section 2.3.1).
	MethodBasic Method = "client_secret_basic"
	// MethodPost: client_id and client_secret as form parameters (RFC 6749
	// section 2.3.1, allowed but not recommended).
	MethodPost Method = "client_secret_post"
)

// Credentials are what a token request presents to identify its client.
type Credentials struct {
	// ID is the client_id; empty when the request names no client (the
	// caller substitutes --default-client-id, or refuses the request).
	ID string
	// Secret is the client secret; empty for MethodNone, and for HTTP Basic
	// with an empty password (golang.org/x/oauth2 sends "id:" for a public
	// client in its header style).
	Secret string
	// Method is how they were presented.
	Method Method
}

// OAuth 2.0 error codes this package answers with (RFC 6749 section 5.2,
// RFC 8707 section 2 for invalid_target).
const (
	CodeInvalidRequest     = "invalid_request"
	CodeInvalidClient      = "invalid_client"
	CodeUnauthorizedClient = "unauthorized_client"
	CodeInvalidScope       = "invalid_scope"
	CodeInvalidTarget      = "invalid_target"
)

// Reason is why a client was refused, for metrics and logs: a fixed set of
// values (a label never holds request data).
type Reason string

// Reasons of an *Error.
const (
	ReasonMalformed         Reason = "malformed"           // credentials that cannot be read
	ReasonMultipleMethods   Reason = "multiple_methods"    // more than one method in one request
	ReasonMissingClientID   Reason = "missing_client_id"   // no client named, no default
	ReasonUnknownClient     Reason = "unknown_client"      // no such OAuthClient
	ReasonNotReady          Reason = "not_ready"           // the client is not Ready
	ReasonMissingSecret     Reason = "missing_secret"      // a confidential client without a secret
	ReasonWrongSecret       Reason = "wrong_secret"        // the secret matches no hash
	ReasonUnexpectedSecret  Reason = "unexpected_secret"   // a public client sending a secret
	ReasonThrottled         Reason = "throttled"           // too many failed authentications
	ReasonGrantNotAllowed   Reason = "grant_not_allowed"   // unauthorized_client
	ReasonAudienceNotListed Reason = "audience_not_listed" // invalid_target
	ReasonScopeNotAllowed   Reason = "scope_not_allowed"   // invalid_scope
)

// Error is a refusal to answer as RFC 6749 section 5.2 JSON: Code as error,
// Description as error_description, with HTTP status Status. Description is
// safe to show: printable ASCII, never a secret, a hash or an Authorization
// header.
type Error struct {
	Code        string
	Status      int
	Description string
	Reason      Reason
	// Basic is true when the request used the Authorization header (HTTP
	// Basic or another scheme): RFC 6749 section 5.2 then requires a 401
	// with WWW-Authenticate for invalid_client.
	Basic bool
	// RetryAfter, when not zero, is how long the client should wait before
	// trying again: the caller sends it as a Retry-After header (RFC 9110
	// section 10.2.3, in seconds) with a 429.
	RetryAfter time.Duration
}

func (e *Error) Error() string { return e.Code + ": " + e.Description }

// WWWAuthenticate is the WWW-Authenticate header the caller must send with
// e, or "" for none: a Basic challenge for every 401 (invalid_client).
// RFC 6749 section 5.2 requires it when the client used the Authorization
// header, and RFC 9110 section 15.5.2 requires a challenge on every 401, so
// an invalid_client answer to client_secret_post or to a client that sent no
// secret carries it too (it also tells such a client which scheme to use).
func (e *Error) WWWAuthenticate(realm string) string {
	if e.Status != http.StatusUnauthorized {
		return ""
	}
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(realm)
	return `Basic realm="` + r + `", charset="UTF-8"`
}

// invalidClient is a failed client authentication: 401 (RFC 6749 section
// 5.2, and what a client library retrying with other credentials expects).
func invalidClient(reason Reason, basic bool, description string) *Error {
	return &Error{Code: CodeInvalidClient, Status: http.StatusUnauthorized, Description: description, Reason: reason, Basic: basic}
}

// MissingSecret is the *Error for a request that did not authenticate a
// Confidential client it had to (such as a refresh of its session sent
// without credentials): invalid_client, 401.
func MissingSecret() *Error {
	return invalidClient(ReasonMissingSecret, false,
		"the client must authenticate with its secret (client_secret_basic or client_secret_post)")
}

func badRequest(code string, reason Reason, basic bool, description string) *Error {
	return &Error{Code: code, Status: http.StatusBadRequest, Description: description, Reason: reason, Basic: basic}
}

// maxIDLength is the longest client_id: a Kubernetes object name (and the
// RefreshToken CRD's limit on spec.clientID).
const maxIDLength = 253

// ClientCredentials reads a token request's client credentials (RFC 6749
// section 2.3.1) from its headers and its decoded form body. It checks only
// their shape; Registry.Authenticate checks them against the client.
//
//   - Authorization: Basic: the user and password are each
//     application/x-www-form-urlencoded-decoded ("a%2Bb" is "a+b", "+" is a
//     space), as section 2.3.1 specifies. MethodBasic.
//   - client_id and client_secret in the form: MethodPost.
//   - client_id alone, or nothing: MethodNone (a public client).
//
// A form parameter with no value is absent (RFC 6749 section 3.2).
//
// Errors (*Error):
//   - an Authorization header that is not readable Basic credentials
//     (another scheme, bad base64, no colon, an empty user, bad percent
//     encoding, a client_id that is not printable ASCII): invalid_client,
//     401, Basic set. Not invalid_request: the client did attempt to
//     authenticate, through the Authorization header, and that attempt
//     failed; RFC 6749 section 5.2 names "unsupported authentication method"
//     as invalid_client and requires 401 with WWW-Authenticate when the
//     header was used, the answer from which an HTTP client knows to fix its
//     credentials (RFC 9110 section 11.6.1).
//   - more than one method in one request (Basic and client_secret in the
//     form), a client_id in the form differing from Basic's, or two
//     Authorization headers: invalid_request, 400 (RFC 6749 section 2.3: "MUST
//     NOT use more than one authentication method in each request"). A form
//     client_id equal to Basic's is allowed: section 3.2.1 lets a client
//     identify itself with client_id, which is not an authentication method.
//   - client_secret without client_id, or a form client_id that is not
//     printable ASCII or longer than 253: invalid_request, 400.
func ClientCredentials(header http.Header, form url.Values) (Credentials, error) {
	formID, formSecret := form.Get("client_id"), form.Get("client_secret")
	auth := header.Values("Authorization")
	if len(auth) > 1 {
		return Credentials{}, badRequest(CodeInvalidRequest, ReasonMultipleMethods, true, "the Authorization header is repeated")
	}
	if len(auth) == 1 && auth[0] != "" {
		id, secret, e := parseBasic(auth[0])
		if e != nil {
			return Credentials{}, e
		}
		if formSecret != "" {
			return Credentials{}, badRequest(CodeInvalidRequest, ReasonMultipleMethods, true,
				"use one client authentication method: HTTP Basic or client_secret, not both")
		}
		if formID != "" && formID != id {
			return Credentials{}, badRequest(CodeInvalidRequest, ReasonMultipleMethods, true,
				"client_id differs from the client of the Authorization header")
		}
		return Credentials{ID: id, Secret: secret, Method: MethodBasic}, nil
	}
	if formID != "" && !validID(formID) {
		return Credentials{}, badRequest(CodeInvalidRequest, ReasonMalformed, false,
			"client_id must be printable ASCII, at most 253 characters")
	}
	if formSecret != "" {
		if formID == "" {
			return Credentials{}, badRequest(CodeInvalidRequest, ReasonMalformed, false, "client_secret without client_id")
		}
		return Credentials{ID: formID, Secret: formSecret, Method: MethodPost}, nil
	}
	return Credentials{ID: formID, Method: MethodNone}, nil
}

// parseBasic reads RFC 7617 Basic credentials holding RFC 6749 section
// 2.3.1's form-urlencoded client_id and client_secret.
func parseBasic(value string) (id, secret string, e *Error) {
	malformed := func(what string) (string, string, *Error) {
		return "", "", invalidClient(ReasonMalformed, true, "the Authorization header "+what)
	}
	scheme, token, _ := strings.Cut(value, " ")
	if !strings.EqualFold(scheme, "Basic") {
		return malformed("must use the Basic scheme (client_secret_basic)")
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(token))
	if err != nil {
		return malformed("is not valid base64")
	}
	// The user is form-urlencoded, so a ':' in it is escaped: the first ':'
	// is the separator.
	user, pass, ok := strings.Cut(string(raw), ":")
	if !ok {
		return malformed("has no ':' between client_id and client_secret")
	}
	if id, err = url.QueryUnescape(user); err != nil {
		return malformed("holds a client_id that is not form-urlencoded")
	}
	if secret, err = url.QueryUnescape(pass); err != nil {
		return malformed("holds a client_secret that is not form-urlencoded")
	}
	if id == "" {
		return malformed("has an empty client_id")
	}
	if !validID(id) {
		return malformed("holds a client_id that is not printable ASCII of at most 253 characters")
	}
	return id, secret, nil
}

// validID reports whether id is an RFC 6749 appendix A.1 client_id
// (VSCHAR: printable ASCII) that fits an object name's length.
func validID(id string) bool {
	if len(id) > maxIDLength {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] < 0x20 || id[i] > 0x7e {
			return false
		}
	}
	return true
}
