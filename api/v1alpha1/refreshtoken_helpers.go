package v1alpha1

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// sessionFields is Session without its JSON methods.
type sessionFields Session

// MarshalJSON writes the session as one JSON string that holds its JSON
// object, so that the API server decodes, coerces and validates one string
// per write rather than a dozen fields (see RefreshTokenSpec).
func (s Session) MarshalJSON() ([]byte, error) {
	inner, err := json.Marshal(sessionFields(s))
	if err != nil {
		return nil, err
	}
	return json.Marshal(string(inner))
}

// UnmarshalJSON reads what MarshalJSON writes, or the JSON object an earlier
// rotor stored (whose state and expiresAt RefreshTokenSpec.UnmarshalJSON
// lifts into the spec).
func (s *Session) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var inner string
		if err := json.Unmarshal(b, &inner); err != nil {
			return err
		}
		b = []byte(inner)
	}
	var f sessionFields
	if err := json.Unmarshal(b, &f); err != nil {
		return fmt.Errorf("session: %w", err)
	}
	*s = Session(f)
	return nil
}

// UnmarshalJSON decodes the spec as MarshalJSON of Session leaves it, or as
// an earlier rotor stored it: session an object holding state and
// expiresAt, which are lifted into the spec. The next rotation stores the
// session in today's shape.
func (s *RefreshTokenSpec) UnmarshalJSON(b []byte) error {
	type plain RefreshTokenSpec
	if err := json.Unmarshal(b, (*plain)(s)); err != nil {
		return err
	}
	if s.State != "" && !s.ExpiresAt.IsZero() {
		return nil
	}
	var earlier struct {
		Session struct {
			State     SessionState `json:"state"`
			ExpiresAt metav1.Time  `json:"expiresAt"`
		} `json:"session"`
	}
	// A session that is a string fails to decode here: nothing to lift.
	if json.Unmarshal(b, &earlier) == nil {
		if s.State == "" {
			s.State = earlier.Session.State
		}
		if s.ExpiresAt.IsZero() {
			s.ExpiresAt = earlier.Session.ExpiresAt
		}
	}
	return nil
}

// EndsAt is when the session can no longer be refreshed unless it is
// refreshed first: the earlier of the sliding and the absolute expiry.
func (s *RefreshTokenSpec) EndsAt() time.Time {
	if s.Session.AbsoluteExpiresAt.Before(&s.ExpiresAt) {
		return s.Session.AbsoluteExpiresAt.Time
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
	checkSet("session.groups", s.Session.Groups, 0, MaxGroups, MaxGroupLength)
	checkSet("session.audience", s.Session.Audience, 1, MaxAudiences, MaxAudienceLength)
	if !validScope(s.Session.Scope) {
		bad("session.scope", "not scope-tokens separated by single spaces, at most %d characters (RFC 6749 section 3.3)", MaxScopeLength)
	}
	switch s.Session.Method {
	case AuthMethodPassword, AuthMethodServiceAccount:
	default:
		bad("session.method", "not Password or ServiceAccount")
	}
	if !validHash(s.Session.SecretHash) {
		bad("session.secretHash", "not a base64url SHA-256 (43 characters)")
	}
	if s.Session.PreviousSecretHash != "" && !validHash(s.Session.PreviousSecretHash) {
		bad("session.previousSecretHash", "not a base64url SHA-256 (43 characters)")
	}
	switch s.State {
	case SessionActive, SessionRevoked:
	default:
		bad("state", "not Active or Revoked")
	}
	for field, t := range map[string]time.Time{
		"expiresAt": s.ExpiresAt.Time, "session.absoluteExpiresAt": s.Session.AbsoluteExpiresAt.Time, "session.lastUsedAt": s.Session.LastUsedAt.Time,
	} {
		if t.IsZero() {
			bad(field, "missing")
		}
	}
	if s.Session.Rotations < 0 {
		bad("session.rotations", "negative")
	}
	switch s.Session.RevocationReason {
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
