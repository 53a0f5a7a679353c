package oauthclients

import (
	"slices"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	identityv1alpha1 "rotor.dev/rotor/api/v1alpha1"
)

// MaxAccessTokenLifetime bounds every access token, whatever the server or
// a client asks (RFC 6750 section 5.3: an hour or less).
const MaxAccessTokenLifetime = time.Hour

// Client is an OAuthClient as the token endpoint uses it: resolved from the
// object, with sets for membership tests. Registry builds it; its methods
// are pure.
type Client struct {
	// ID is the client_id, the OAuthClient's name.
	ID   string
	Type identityv1alpha1.ClientType
	// Grants are the grant types the client may use.
	Grants map[string]struct{}
	// Audiences are the aud values it may request; the first is the default.
	Audiences []string
	// Scopes are the scope values it may request (RFC 6749 section 3.3).
	Scopes map[string]struct{}
	// Overrides are the client's own lifetimes; nil keeps the server's. A
	// field's presence matters (reuseGrace 0s is strict), hence pointers.
	Overrides *identityv1alpha1.TokenLifetimes
	// Ready is whether the issuer may serve the client (see Registry.Lookup).
	Ready bool
	// NotReady says why it may not; empty when Ready.
	NotReady string
}

// Lifetimes are the lifetimes of a client's tokens and sessions.
type Lifetimes struct {
	// AccessToken is the access tokens' lifetime.
	AccessToken time.Duration
	// RefreshToken is the sliding lifetime of refresh tokens.
	RefreshToken time.Duration
	// SessionMax is a session's absolute lifetime.
	SessionMax time.Duration
	// ReuseGrace is how long a replay of the previous refresh token is taken
	// for the client racing itself; 0 is strict.
	ReuseGrace time.Duration
}

// AllowsGrant reports whether the client may use grant (a grant_type value).
// client_credentials is refused to a public client even when listed (RFC
// 6749 section 4.4: confidential clients only). A refusal is
// unauthorized_client (RFC 6749 section 5.2), 400.
func (c *Client) AllowsGrant(grant string) bool {
	if grant == string(identityv1alpha1.GrantClientCredentials) && c.Type != identityv1alpha1.ClientTypeConfidential {
		return false
	}
	_, ok := c.Grants[grant]
	return ok
}

// UnauthorizedGrant is the *Error to answer when AllowsGrant is false.
func (c *Client) UnauthorizedGrant() *Error {
	return badRequest(CodeUnauthorizedClient, ReasonGrantNotAllowed, false, "the client may not use this grant_type")
}

// Audience is the aud of the token: the requested audience when the client
// lists it, the client's first audience when none is requested. Anything
// else is invalid_target (RFC 8707 section 2, RFC 8693 section 2.2.2), 400.
func (c *Client) Audience(requested string) ([]string, error) {
	if requested == "" {
		if len(c.Audiences) == 0 {
			return nil, badRequest(CodeInvalidTarget, ReasonAudienceNotListed, false, "the client has no audience")
		}
		return []string{c.Audiences[0]}, nil
	}
	if slices.Contains(c.Audiences, requested) {
		return []string{requested}, nil
	}
	return nil, badRequest(CodeInvalidTarget, ReasonAudienceNotListed, false, "the client may not request this audience")
}

// Scope is the scope to grant for the requested one (RFC 6749 section 3.3):
// a list of scope-tokens delimited by single spaces, whose order does not
// matter and whose duplicates count once. Every token must be one of the
// client's scopes, or the request is invalid_scope (400): rotor refuses
// rather than silently granting less, so a client never holds a token
// narrower than it believes. Empty (no scope parameter) grants no scope,
// "". The granted scope is canonical: its tokens sorted, each once, so equal
// requests give equal scope claims. An empty token (a leading, trailing or
// doubled space) is malformed, also invalid_scope.
func (c *Client) Scope(requested string) (string, error) {
	if requested == "" {
		return "", nil
	}
	tokens := strings.Split(requested, " ")
	for _, t := range tokens {
		if t == "" {
			return "", badRequest(CodeInvalidScope, ReasonScopeNotAllowed, false, "scope must be scope-tokens separated by single spaces")
		}
		if _, ok := c.Scopes[t]; !ok {
			return "", badRequest(CodeInvalidScope, ReasonScopeNotAllowed, false, "the client may not request scope "+printableScope(t))
		}
	}
	slices.Sort(tokens)
	return strings.Join(slices.Compact(tokens), " "), nil
}

// RefreshScope is the scope of an access token refreshed from a session
// granted sessionScope (RFC 6749 section 6): the requested scope when one
// is sent, which may narrow but never widen the session's (invalid_scope
// otherwise), the session's when none is; less any scope-token the client
// may no longer request, so that removing a scope from a client takes
// effect at its sessions' next refresh, as removing a group from an account
// does. The result is canonical, as Scope's.
func (c *Client) RefreshScope(sessionScope, requested string) (string, error) {
	granted := strings.Fields(sessionScope)
	want := granted
	if requested != "" {
		want = strings.Split(requested, " ")
		for _, t := range want {
			if t == "" {
				return "", badRequest(CodeInvalidScope, ReasonScopeNotAllowed, false, "scope must be scope-tokens separated by single spaces")
			}
			if !slices.Contains(granted, t) {
				return "", badRequest(CodeInvalidScope, ReasonScopeNotAllowed, false, "scope "+printableScope(t)+" was not granted to this session")
			}
		}
	}
	out := make([]string, 0, len(want))
	for _, t := range want {
		if _, ok := c.Scopes[t]; ok {
			out = append(out, t)
		}
	}
	slices.Sort(out)
	return strings.Join(slices.Compact(out), " "), nil
}

// AllowsAudience reports whether every value of aud (a session's audience)
// is one the client may request now.
func (c *Client) AllowsAudience(aud []string) bool {
	for _, a := range aud {
		if !slices.Contains(c.Audiences, a) {
			return false
		}
	}
	return len(aud) > 0
}

// printableScope quotes a requested scope-token in an error description:
// short, and within error_description's characters (%x20-21 / %x23-5B /
// %x5D-7E), which a scope-token's are but for the space it cannot hold.
func printableScope(t string) string {
	var b strings.Builder
	for i := 0; i < len(t) && i < 64; i++ {
		c := t[i]
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			c = '?'
		}
		b.WriteByte(c)
	}
	if len(t) > 64 {
		b.WriteString("...")
	}
	return b.String()
}

// Lifetimes are the client's lifetimes bounded by the server's: each the
// shorter of the client's (when set) and the server's, so the server's
// flags remain maximums; the access token is also at most
// MaxAccessTokenLifetime. A refresh token never outlives the session, so
// RefreshToken is at most SessionMax. Non-positive client values, which the
// schema refuses, keep the server's (reuseGrace 0 is strict, and kept).
func (c *Client) Lifetimes(server Lifetimes) Lifetimes {
	out := server
	if o := c.Overrides; o != nil {
		out.AccessToken = shorter(server.AccessToken, o.AccessToken, false)
		out.RefreshToken = shorter(server.RefreshToken, o.RefreshToken, false)
		out.SessionMax = shorter(server.SessionMax, o.SessionMax, false)
		out.ReuseGrace = shorter(server.ReuseGrace, o.ReuseGrace, true)
	}
	out.AccessToken = min(out.AccessToken, MaxAccessTokenLifetime)
	out.RefreshToken = min(out.RefreshToken, out.SessionMax)
	return out
}

// shorter is the client's d when set and usable (positive, or zero when
// zeroOK) and shorter than the server's s; s otherwise.
func shorter(s time.Duration, d *metav1.Duration, zeroOK bool) time.Duration {
	if d == nil {
		return s
	}
	v := d.Duration
	if v < 0 || (v == 0 && !zeroOK) {
		return s
	}
	return min(s, v)
}
