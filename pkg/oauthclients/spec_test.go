package oauthclients_test

import (
	"errors"
	"testing"

	. "github.com/onsi/gomega"

	identityv1alpha1 "rotor.dev/rotor/api/v1alpha1"
	"rotor.dev/rotor/pkg/oauthclients"
)

func publicSpec(grants ...identityv1alpha1.GrantType) identityv1alpha1.OAuthClientSpec {
	return identityv1alpha1.OAuthClientSpec{
		Type:       identityv1alpha1.ClientTypePublic,
		GrantTypes: grants,
		Audiences:  []string{"api"},
	}
}

func confidentialSpec(grants ...identityv1alpha1.GrantType) identityv1alpha1.OAuthClientSpec {
	s := publicSpec(grants...)
	s.Type = identityv1alpha1.ClientTypeConfidential
	s.SecretRef = &identityv1alpha1.ClientSecretReference{Name: "client-secret-app"}
	return s
}

func TestCheckSpec(t *testing.T) {
	const (
		password = identityv1alpha1.GrantPassword
		refresh  = identityv1alpha1.GrantRefreshToken
		cc       = identityv1alpha1.GrantClientCredentials
		exchange = identityv1alpha1.GrantTokenExchange
	)
	with := func(s identityv1alpha1.OAuthClientSpec, f func(*identityv1alpha1.OAuthClientSpec)) identityv1alpha1.OAuthClientSpec {
		f(&s)
		return s
	}
	for _, tc := range []struct {
		name string
		spec identityv1alpha1.OAuthClientSpec
		want error
	}{
		{"a public client logging in with a password and refreshing is fine", publicSpec(password, refresh), nil},
		{"a public workload exchanging its token and refreshing is fine", publicSpec(exchange, refresh), nil},
		{"a confidential client with client credentials is fine", confidentialSpec(cc), nil},
		{"a confidential client with every grant is fine", confidentialSpec(password, refresh, cc, exchange), nil},
		{"a client with scopes of every allowed character is fine", with(publicSpec(password), func(s *identityv1alpha1.OAuthClientSpec) {
			s.Scopes = []string{"openid", "read:billing", "https://api.example.com/x.y", "!#[]~"}
		}), nil},
		{"a public client with client credentials is refused", publicSpec(cc), oauthclients.ErrPublicClientCredentials},
		{"refresh_token alone refreshes nothing", publicSpec(refresh), oauthclients.ErrGrantsInconsistent},
		{"refresh_token with client credentials only refreshes nothing", confidentialSpec(cc, refresh), oauthclients.ErrGrantsInconsistent},
		{"a confidential client without secretRef is refused", with(confidentialSpec(cc), func(s *identityv1alpha1.OAuthClientSpec) { s.SecretRef = nil }), oauthclients.ErrSecretRef},
		{"a public client with secretRef is refused", with(publicSpec(password), func(s *identityv1alpha1.OAuthClientSpec) {
			s.SecretRef = &identityv1alpha1.ClientSecretReference{Name: "x"}
		}), oauthclients.ErrSecretRef},
		{"an unknown type is invalid", with(publicSpec(password), func(s *identityv1alpha1.OAuthClientSpec) { s.Type = "public" }), oauthclients.ErrInvalidSpec},
		{"no grant is invalid", publicSpec(), oauthclients.ErrInvalidSpec},
		{"an unknown grant is invalid", publicSpec("implicit"), oauthclients.ErrInvalidSpec},
		{"a grant listed twice is invalid", publicSpec(password, password), oauthclients.ErrInvalidSpec},
		{"no audience is invalid", with(publicSpec(password), func(s *identityv1alpha1.OAuthClientSpec) { s.Audiences = nil }), oauthclients.ErrInvalidSpec},
		{"an audience listed twice is invalid", with(publicSpec(password), func(s *identityv1alpha1.OAuthClientSpec) { s.Audiences = []string{"a", "b", "a"} }), oauthclients.ErrInvalidSpec},
		{"a scope with a space is invalid", with(publicSpec(password), func(s *identityv1alpha1.OAuthClientSpec) { s.Scopes = []string{"read write"} }), oauthclients.ErrInvalidSpec},
		{"a scope with a quote is invalid", with(publicSpec(password), func(s *identityv1alpha1.OAuthClientSpec) { s.Scopes = []string{`say"hi"`} }), oauthclients.ErrInvalidSpec},
		{"a scope with a backslash is invalid", with(publicSpec(password), func(s *identityv1alpha1.OAuthClientSpec) { s.Scopes = []string{`a\b`} }), oauthclients.ErrInvalidSpec},
		{"a scope outside ASCII is invalid", with(publicSpec(password), func(s *identityv1alpha1.OAuthClientSpec) { s.Scopes = []string{"lesen-ä"} }), oauthclients.ErrInvalidSpec},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			err := oauthclients.CheckSpec(&tc.spec)
			if tc.want == nil {
				g.Expect(err).NotTo(HaveOccurred())
				return
			}
			g.Expect(errors.Is(err, tc.want)).To(BeTrue(), "got %v", err)
		})
	}
}
