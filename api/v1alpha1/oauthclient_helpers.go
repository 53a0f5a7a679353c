package v1alpha1

import "slices"

// Allows reports whether the client may use grant g.
func (s *OAuthClientSpec) Allows(g GrantType) bool {
	return slices.Contains(s.GrantTypes, g)
}

// DefaultAudience is the aud of tokens whose request names none: the first
// of audiences.
func (s *OAuthClientSpec) DefaultAudience() string {
	if len(s.Audiences) == 0 {
		return ""
	}
	return s.Audiences[0]
}
