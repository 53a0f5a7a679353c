package v1alpha1

import (
	"errors"
	"fmt"
	"time"
)

// EndsAt is when the session can no longer be refreshed unless it is
// refreshed first: the earlier of the sliding and the absolute expiry.
func (s *RefreshTokenSpec) EndsAt() time.Time {
	if s.AbsoluteExpiresAt.Before(&s.ExpiresAt) {
		return s.AbsoluteExpiresAt.Time
	}
	return s.ExpiresAt.Time
}

// Limits of a session's fields, checked by Validate.
const (
	MaxSubjectLength  = 339
	MaxClientIDLength = 253
	MaxGroups         = 64
	MaxGroupLength    = 256
	MaxAudiences      = 16
	MaxAudienceLength = 512
	// MaxScopeLength is an OAuthClient's 64 scopes of 256 characters and
	// their separators.
	MaxScopeLength = 64*256 + 63
)

// Validate checks what the API server does not (RefreshTokenSpec): every
// field's shape. It names fields, never their values, since a hash is one.
// A session written by rotor always passes; one that fails was edited by
// hand and is refused.
func (s *RefreshTokenSpec) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("spec.%s: "+format, append([]any{field}, args...)...))
	}
	if n := len(s.Subject); n < 1 || n > MaxSubjectLength {
		bad("subject", "length %d is not in [1, %d]", n, MaxSubjectLength)
	}
	if n := len(s.ClientID); n < 1 || n > MaxClientIDLength {
		bad("clientID", "length %d is not in [1, %d]", n, MaxClientIDLength)
	}
	checkSet := func(field string, values []string, lo, hi, maxLen int) {
		if n := len(values); n < lo || n > hi {
			bad(field, "%d values, not in [%d, %d]", n, lo, hi)
			return
		}
		for i, v := range values {
			if n := len(v); n < 1 || n > maxLen {
				bad(fmt.Sprintf("%s[%d]", field, i), "length %d is not in [1, %d]", n, maxLen)
			}
			for _, w := range values[:i] {
				if w == v {
					bad(fmt.Sprintf("%s[%d]", field, i), "duplicate value")
					break
				}
			}
		}
	}
	checkSet("session.groups", s.Groups, 0, MaxGroups, MaxGroupLength)
	checkSet("session.audience", s.Audience, 1, MaxAudiences, MaxAudienceLength)
	if !validScope(s.Scope) {
		bad("session.scope", "not scope-tokens separated by single spaces, at most %d characters (RFC 6749 section 3.3)", MaxScopeLength)
	}
	switch s.Method {
	case AuthMethodPassword, AuthMethodServiceAccount:
	default:
		bad("session.method", "not Password or ServiceAccount")
	}
	if !validHash(s.SecretHash) {
		bad("session.secretHash", "not a base64url SHA-256 (43 characters)")
	}
	if s.PreviousSecretHash != "" && !validHash(s.PreviousSecretHash) {
		bad("session.previousSecretHash", "not a base64url SHA-256 (43 characters)")
	}
	switch s.State {
	case SessionActive, SessionRevoked:
	default:
		bad("session.state", "not Active or Revoked")
	}
	for field, t := range map[string]time.Time{
		"session.expiresAt": s.ExpiresAt.Time, "session.absoluteExpiresAt": s.AbsoluteExpiresAt.Time, "session.lastUsedAt": s.LastUsedAt.Time,
	} {
		if t.IsZero() {
			bad(field, "missing")
		}
	}
	if s.Rotations < 0 {
		bad("session.rotations", "negative")
	}
	switch s.RevocationReason {
	case "", RevocationRevoked, RevocationReuse, RevocationAccountDisabled:
	default:
		bad("session.revocationReason", "not Revoked, Reuse or AccountDisabled")
	}
	return errors.Join(errs...)
}

// validHash reports whether h is 43 base64url characters: the unpadded
// encoding of 32 bytes.
func validHash(h string) bool {
	if len(h) != 43 {
		return false
	}
	for i := range len(h) {
		switch c := h[i]; {
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_':
		default:
			return false
		}
	}
	return true
}

// validScope reports whether s is empty or scope-tokens (%x21 / %x23-5B /
// %x5D-7E) separated by single spaces, within MaxScopeLength.
func validScope(s string) bool {
	if len(s) > MaxScopeLength {
		return false
	}
	prev := byte(' ')
	for i := range len(s) {
		c := s[i]
		switch {
		case c == ' ':
			if prev == ' ' {
				return false
			}
		case c < 0x21 || c == '"' || c == '\\' || c > 0x7e:
			return false
		}
		prev = c
	}
	return s == "" || prev != ' '
}
