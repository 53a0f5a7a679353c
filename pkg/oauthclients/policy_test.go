package oauthclients_test

import (
	"errors"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	identityv1alpha1 "rotor.dev/rotor/api/v1alpha1"
	"rotor.dev/rotor/pkg/oauthclients"
)

func set(vs ...string) map[string]struct{} {
	m := map[string]struct{}{}
	for _, v := range vs {
		m[v] = struct{}{}
	}
	return m
}

func policyClient() *oauthclients.Client {
	return &oauthclients.Client{
		ID:        "app",
		Type:      identityv1alpha1.ClientTypeConfidential,
		Grants:    set("password", "refresh_token", "client_credentials"),
		Audiences: []string{"api", "billing"},
		Scopes:    set("read", "write", "admin:all"),
		Ready:     true,
	}
}

func wantError(g Gomega, err error, code string, reason oauthclients.Reason) {
	var e *oauthclients.Error
	g.Expect(errors.As(err, &e)).To(BeTrue(), "got %v", err)
	g.Expect(e.Code).To(Equal(code))
	g.Expect(e.Status).To(Equal(400))
	g.Expect(e.Reason).To(Equal(reason))
	g.Expect(e.WWWAuthenticate("rotor")).To(BeEmpty())
	g.Expect(e.Description).To(MatchRegexp(`^[\x20\x21\x23-\x5B\x5D-\x7E]+$`))
}

func TestAllowsGrant(t *testing.T) {
	public := policyClient()
	public.Type = identityv1alpha1.ClientTypePublic
	for _, tc := range []struct {
		name   string
		client *oauthclients.Client
		grant  string
		want   bool
	}{
		{"a listed grant is allowed", policyClient(), "password", true},
		{"client_credentials listed for a confidential client is allowed", policyClient(), "client_credentials", true},
		{"an unlisted grant is not", policyClient(), "urn:ietf:params:oauth:grant-type:token-exchange", false},
		{"an unknown grant is not", policyClient(), "implicit", false},
		{"no grant is not", policyClient(), "", false},
		{"client_credentials is never a public client's, even if listed", public, "client_credentials", false},
		{"a public client's listed password grant is allowed", public, "password", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			NewWithT(t).Expect(tc.client.AllowsGrant(tc.grant)).To(Equal(tc.want))
		})
	}
	wantError(NewWithT(t), policyClient().UnauthorizedGrant(), "unauthorized_client", oauthclients.ReasonGrantNotAllowed)
}

func TestAudience(t *testing.T) {
	for _, tc := range []struct {
		name      string
		audiences []string
		requested string
		want      []string
	}{
		{"no audience requested gives the first", []string{"api", "billing"}, "", []string{"api"}},
		{"the first requested is granted", []string{"api", "billing"}, "api", []string{"api"}},
		{"another listed one is granted", []string{"api", "billing"}, "billing", []string{"billing"}},
		{"an unlisted one is invalid_target", []string{"api", "billing"}, "kubernetes", nil},
		{"a prefix of a listed one is invalid_target", []string{"api", "billing"}, "bill", nil},
		{"case matters", []string{"api", "billing"}, "API", nil},
		{"a client without audiences has no default", nil, "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			c := policyClient()
			c.Audiences = tc.audiences
			got, err := c.Audience(tc.requested)
			if tc.want == nil {
				wantError(g, err, "invalid_target", oauthclients.ReasonAudienceNotListed)
				g.Expect(got).To(BeNil())
				return
			}
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(got).To(Equal(tc.want))
		})
	}
}

func TestScope(t *testing.T) {
	for _, tc := range []struct {
		name      string
		requested string
		want      string
		invalid   bool
	}{
		{"no scope requested grants none", "", "", false},
		{"one listed scope is granted", "read", "read", false},
		{"several listed scopes are granted, sorted", "write read", "read write", false},
		{"order does not matter", "read write", "read write", false},
		{"duplicates count once", "read write read", "read write", false},
		{"every listed scope may be requested", "admin:all write read", "admin:all read write", false},
		{"an unlisted scope is invalid_scope", "read delete", "", true},
		{"scope matching is case-sensitive", "READ", "", true},
		{"a leading space is malformed", " read", "", true},
		{"a trailing space is malformed", "read ", "", true},
		{"a double space is malformed", "read  write", "", true},
		{"a tab is no delimiter", "read\twrite", "", true},
		{"a lone space is malformed", " ", "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			got, err := policyClient().Scope(tc.requested)
			if tc.invalid {
				wantError(g, err, "invalid_scope", oauthclients.ReasonScopeNotAllowed)
				g.Expect(got).To(BeEmpty())
				return
			}
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(got).To(Equal(tc.want))
		})
	}
}

func TestScopeOfAClientWithoutScopes(t *testing.T) {
	g := NewWithT(t)
	c := policyClient()
	c.Scopes = nil
	got, err := c.Scope("")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(got).To(BeEmpty())
	_, err = c.Scope("read")
	wantError(g, err, "invalid_scope", oauthclients.ReasonScopeNotAllowed)
}

func TestLifetimes(t *testing.T) {
	d := func(v time.Duration) *metav1.Duration { return &metav1.Duration{Duration: v} }
	server := oauthclients.Lifetimes{AccessToken: 20 * time.Minute, RefreshToken: 7 * 24 * time.Hour, SessionMax: 30 * 24 * time.Hour, ReuseGrace: 5 * time.Second}
	for _, tc := range []struct {
		name      string
		overrides *identityv1alpha1.TokenLifetimes
		server    oauthclients.Lifetimes
		want      oauthclients.Lifetimes
	}{
		{"a client without overrides gets the server's", nil, server, server},
		{"an empty override keeps the server's", &identityv1alpha1.TokenLifetimes{}, server, server},
		{"shorter client lifetimes win", &identityv1alpha1.TokenLifetimes{
			AccessToken: d(5 * time.Minute), RefreshToken: d(time.Hour), SessionMax: d(12 * time.Hour), ReuseGrace: d(time.Second),
		}, server, oauthclients.Lifetimes{AccessToken: 5 * time.Minute, RefreshToken: time.Hour, SessionMax: 12 * time.Hour, ReuseGrace: time.Second}},
		{"longer client lifetimes are cut to the server's maximums", &identityv1alpha1.TokenLifetimes{
			AccessToken: d(time.Hour), RefreshToken: d(30 * 24 * time.Hour), SessionMax: d(90 * 24 * time.Hour), ReuseGrace: d(time.Minute),
		}, server, server},
		{"a reuse grace of 0s is strict and kept", &identityv1alpha1.TokenLifetimes{ReuseGrace: d(0)}, server,
			oauthclients.Lifetimes{AccessToken: 20 * time.Minute, RefreshToken: 7 * 24 * time.Hour, SessionMax: 30 * 24 * time.Hour}},
		{"an access token of 0s, which the schema refuses, keeps the server's", &identityv1alpha1.TokenLifetimes{AccessToken: d(0)}, server, server},
		{"a negative lifetime, which the schema refuses, keeps the server's", &identityv1alpha1.TokenLifetimes{
			RefreshToken: d(-time.Hour), ReuseGrace: d(-time.Second),
		}, server, server},
		{"the access token stays at most 1h even if the server allows more", &identityv1alpha1.TokenLifetimes{AccessToken: d(3 * time.Hour)},
			oauthclients.Lifetimes{AccessToken: 2 * time.Hour, RefreshToken: time.Hour, SessionMax: time.Hour},
			oauthclients.Lifetimes{AccessToken: time.Hour, RefreshToken: time.Hour, SessionMax: time.Hour}},
		{"a refresh token never outlives a shorter session", &identityv1alpha1.TokenLifetimes{SessionMax: d(2 * time.Hour)}, server,
			oauthclients.Lifetimes{AccessToken: 20 * time.Minute, RefreshToken: 2 * time.Hour, SessionMax: 2 * time.Hour, ReuseGrace: 5 * time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := policyClient()
			c.Overrides = tc.overrides
			NewWithT(t).Expect(c.Lifetimes(tc.server)).To(Equal(tc.want))
		})
	}
}
