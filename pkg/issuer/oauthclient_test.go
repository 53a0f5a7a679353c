package issuer_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	. "github.com/onsi/gomega"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/yaml"

	identityv1alpha1 "rotor.dev/rotor/api/v1alpha1"
	"rotor.dev/rotor/pkg/oauthclients"
)

// clientRequest is a token request with client authentication.
type clientRequest struct {
	form url.Values
	// basicID and basicSecret, when basicID is set, go in an Authorization:
	// Basic header, form-urlencoded as RFC 6749 section 2.3.1 says.
	basicID, basicSecret string
}

func (r *replica) tokenAs(t testing.TB, req clientRequest) *tokenReply {
	t.Helper()
	return r.postAs(t, "/token", req)
}

func (r *replica) postAs(t testing.TB, path string, req clientRequest) *tokenReply {
	t.Helper()
	hr, err := http.NewRequest(http.MethodPost, r.URL+path, strings.NewReader(req.form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	hr.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if req.basicID != "" {
		hr.SetBasicAuth(url.QueryEscape(req.basicID), url.QueryEscape(req.basicSecret))
	}
	resp, err := http.DefaultClient.Do(hr)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	reply := &tokenReply{Status: resp.StatusCode, Header: resp.Header}
	if len(body) > 0 {
		if err := json.Unmarshal(body, reply); err != nil {
			t.Fatalf("POST %s: %d %q is not JSON: %v", path, resp.StatusCode, body, err)
		}
	}
	return reply
}

// claimsOf decodes an access token's claims without verifying it (the
// tests that verify are elsewhere).
func claimsOf(t testing.TB, token string) jwt.MapClaims {
	t.Helper()
	claims := jwt.MapClaims{}
	if _, _, err := jwt.NewParser().ParseUnverified(token, claims); err != nil {
		t.Fatalf("access token: %v", err)
	}
	return claims
}

func lifetimeOf(t testing.TB, token string) time.Duration {
	c := claimsOf(t, token)
	return time.Duration(c["exp"].(float64)-c["iat"].(float64)) * time.Second
}

func form(kv ...string) url.Values {
	v := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		v.Set(kv[i], kv[i+1])
	}
	return v
}

// The clients of these tests: a Confidential service that may also log
// users in and refresh (with its own lifetimes), and a Public CLI.
func serviceSpec() identityv1alpha1.OAuthClientSpec {
	return identityv1alpha1.OAuthClientSpec{
		GrantTypes: []identityv1alpha1.GrantType{
			identityv1alpha1.GrantClientCredentials, identityv1alpha1.GrantPassword, identityv1alpha1.GrantRefreshToken,
		},
		Audiences: []string{"billing", "reports"},
		Scopes:    []string{"read", "write"},
		TokenLifetimes: &identityv1alpha1.TokenLifetimes{
			AccessToken:  &metav1.Duration{Duration: 5 * time.Minute},
			RefreshToken: &metav1.Duration{Duration: time.Hour},
			SessionMax:   &metav1.Duration{Duration: 2 * time.Hour},
		},
	}
}

func startClientsReplica(t *testing.T) (r *replica, ns, secret string) {
	t.Helper()
	ns = env.Namespace(t)
	createAccount(t, ns, "alice", "correct horse", "dev")
	secret = createConfidentialClient(t, ns, "svc", serviceSpec())
	createClient(t, ns, "cli", identityv1alpha1.OAuthClientSpec{
		Type:       identityv1alpha1.ClientTypePublic,
		GrantTypes: []identityv1alpha1.GrantType{identityv1alpha1.GrantPassword},
		Audiences:  []string{"rotor"},
	})
	r = startReplica(t, ns, newClock())
	r.waitClientReady("svc")
	r.waitClientReady("cli")
	return r, ns, secret
}

func TestClientAuthenticationAtTheTokenEndpoint(t *testing.T) {
	r, _, secret := startClientsReplica(t)
	cc := form("grant_type", "client_credentials")
	withForm := func(base url.Values, kv ...string) url.Values {
		out := url.Values{}
		for k, v := range base {
			out[k] = v
		}
		for k, v := range form(kv...) {
			out[k] = v
		}
		return out
	}
	for _, tt := range []struct {
		name      string
		req       clientRequest
		status    int
		code      string
		challenge bool
	}{
		{name: "Basic authentication succeeds", req: clientRequest{form: cc, basicID: "svc", basicSecret: secret}, status: 200},
		{name: "client_secret_post succeeds", req: clientRequest{form: withForm(cc, "client_id", "svc", "client_secret", secret)}, status: 200},
		{name: "a wrong secret with Basic is 401 invalid_client with a challenge",
			req: clientRequest{form: cc, basicID: "svc", basicSecret: secret + "x"}, status: 401, code: "invalid_client", challenge: true},
		{name: "a wrong secret posted is 401 invalid_client",
			req: clientRequest{form: withForm(cc, "client_id", "svc", "client_secret", "nope")}, status: 401, code: "invalid_client", challenge: true},
		{name: "an unknown client is invalid_client",
			req: clientRequest{form: cc, basicID: "nobody", basicSecret: secret}, status: 401, code: "invalid_client", challenge: true},
		{name: "a confidential client without credentials is invalid_client",
			req: clientRequest{form: withForm(cc, "client_id", "svc")}, status: 401, code: "invalid_client", challenge: true},
		{name: "two authentication methods in one request are invalid_request",
			req: clientRequest{form: withForm(cc, "client_secret", secret), basicID: "svc", basicSecret: secret}, status: 400, code: "invalid_request"},
		{name: "a public client sending a secret is invalid_client",
			req:    clientRequest{form: withForm(form("grant_type", "password", "username", "alice", "password", "correct horse"), "client_id", "cli", "client_secret", "x")},
			status: 401, code: "invalid_client", challenge: true},
		{name: "a grant the client may not use is unauthorized_client",
			req: clientRequest{form: form("grant_type", "client_credentials", "client_id", "cli")}, status: 400, code: "unauthorized_client"},
		{name: "the default public client may not use client_credentials",
			req: clientRequest{form: cc}, status: 400, code: "unauthorized_client"},
		{name: "an audience the client may not request is invalid_target",
			req: clientRequest{form: withForm(cc, "audience", "rotor"), basicID: "svc", basicSecret: secret}, status: 400, code: "invalid_target"},
		{name: "a scope the client may not request is invalid_scope",
			req: clientRequest{form: withForm(cc, "scope", "read admin"), basicID: "svc", basicSecret: secret}, status: 400, code: "invalid_scope"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			rep := r.tokenAs(t, tt.req)
			g.Expect(rep.Status).To(Equal(tt.status), "%s: %s", rep.Error, rep.Description)
			g.Expect(rep.Error).To(Equal(tt.code))
			if tt.challenge {
				g.Expect(rep.Header.Get("WWW-Authenticate")).To(Equal(`Basic realm="` + r.URL + `", charset="UTF-8"`))
			} else {
				g.Expect(rep.Header.Values("WWW-Authenticate")).To(BeEmpty())
			}
			g.Expect(rep.Description).NotTo(ContainSubstring(secret))
		})
	}
	NewWithT(t).Expect(r.Logs.String()).NotTo(ContainSubstring(secret), "the secret is never logged")

	// A caller inventing client_ids cannot grow the metric: each is counted
	// as "unknown", and a registered client under its own name.
	g := NewWithT(t)
	unknown := counterValue(t, "rotor_client_authentication_failures_total", "client", "unknown")
	svc := counterValue(t, "rotor_client_authentication_failures_total", "client", "svc")
	for i := range 5 {
		rep := r.tokenAs(t, clientRequest{form: cc, basicID: fmt.Sprintf("junk-%d", i), basicSecret: "x"})
		g.Expect(rep.Error).To(Equal("invalid_client"))
		g.Expect(counterValue(t, "rotor_client_authentication_failures_total", "client", fmt.Sprintf("junk-%d", i))).To(BeZero())
	}
	g.Expect(counterValue(t, "rotor_client_authentication_failures_total", "client", "unknown") - unknown).To(Equal(5.0))
	g.Expect(r.tokenAs(t, clientRequest{form: cc, basicID: "svc", basicSecret: "wrong"}).Status).To(Equal(http.StatusUnauthorized))
	g.Expect(counterValue(t, "rotor_client_authentication_failures_total", "client", "svc") - svc).To(Equal(1.0))
}

// RFC 6749 section 4.4: an access token for the client itself, no refresh
// token, and nothing stored: not one API request.
func TestClientCredentialsGrantMakesNoAPIRequest(t *testing.T) {
	g := NewWithT(t)
	r, ns, secret := startClientsReplica(t)
	before := r.settled(t)
	var rep *tokenReply
	for range 20 {
		rep = r.tokenAs(t, clientRequest{form: form("grant_type", "client_credentials", "scope", "write read write"), basicID: "svc", basicSecret: secret})
		g.Expect(rep.Status).To(Equal(http.StatusOK), rep.Description)
	}
	g.Expect(r.Requests.all.Load()-before).To(BeZero(), "client_credentials costs no API request")
	g.Expect(rep.RefreshToken).To(BeEmpty())
	g.Expect(rep.Scope).To(Equal("read write"), "the granted scope, canonical")
	g.Expect(rep.ExpiresIn).To(Equal(int64(300)), "the client's access-token lifetime")
	claims := claimsOf(t, rep.AccessToken)
	g.Expect(claims).To(HaveKeyWithValue("sub", "client:svc"))
	g.Expect(claims).To(HaveKeyWithValue("client_id", "svc"))
	g.Expect(claims).To(HaveKeyWithValue("scope", "read write"))
	g.Expect(claims).To(HaveKeyWithValue("aud", ConsistOf("billing")), "the client's first audience")
	g.Expect(lifetimeOf(t, rep.AccessToken)).To(Equal(5 * time.Minute))
	g.Expect(sessionsOf(t, ns)).To(BeEmpty())
}

// Sessions record their client: the client's lifetimes apply, a refresh
// comes from the same client (authenticated, since it is confidential), and
// it still costs one write and no read.
func TestClientSessionsRefreshOnlyForTheirClient(t *testing.T) {
	g := NewWithT(t)
	r, ns, secret := startClientsReplica(t)
	login := r.tokenAs(t, clientRequest{
		form:    form("grant_type", "password", "username", "alice", "password", "correct horse", "scope", "read", "audience", "reports"),
		basicID: "svc", basicSecret: secret,
	})
	g.Expect(login.Status).To(Equal(http.StatusOK), login.Description)
	g.Expect(login.Scope).To(Equal("read"))
	g.Expect(lifetimeOf(t, login.AccessToken)).To(Equal(5 * time.Minute))
	g.Expect(claimsOf(t, login.AccessToken)).To(HaveKeyWithValue("aud", ConsistOf("reports")))
	items := sessionsOf(t, ns)
	g.Expect(items).To(HaveLen(1))
	s := items[0].Spec
	g.Expect(s.ClientID).To(Equal("svc"))
	g.Expect(s.Session.Scope).To(Equal("read"))
	g.Expect(s.ExpiresAt.Sub(s.Session.LastUsedAt.Time)).To(Equal(time.Hour), "the client's refresh-token lifetime")
	g.Expect(s.Session.AbsoluteExpiresAt.Sub(s.Session.LastUsedAt.Time)).To(Equal(2*time.Hour), "the client's session maximum")

	refresh := func(req clientRequest) *tokenReply { return r.tokenAs(t, req) }
	// Another client, or none, may not refresh it; the session is kept.
	other := refresh(clientRequest{form: form("grant_type", "refresh_token", "refresh_token", login.RefreshToken, "client_id", "rotor")})
	g.Expect(other.Status).To(Equal(http.StatusBadRequest))
	g.Expect(other.Error).To(Equal("invalid_grant"))
	anonymous := refresh(clientRequest{form: form("grant_type", "refresh_token", "refresh_token", login.RefreshToken)})
	g.Expect(anonymous.Status).To(Equal(http.StatusUnauthorized), "a confidential client's session needs the client's authentication")
	g.Expect(anonymous.Error).To(Equal("invalid_client"))
	g.Expect(sessionsOf(t, ns)[0].Spec.State).To(Equal(identityv1alpha1.SessionActive))

	// Its own client refreshes it: one write, no read.
	r.Clock.Step(10 * time.Minute)
	writes, reads := r.Requests.writes.Load(), r.Requests.reads.Load()
	next := refresh(clientRequest{form: form("grant_type", "refresh_token", "refresh_token", login.RefreshToken), basicID: "svc", basicSecret: secret})
	g.Expect(next.Status).To(Equal(http.StatusOK), next.Description)
	g.Expect(r.Requests.writes.Load() - writes).To(Equal(int64(1)))
	g.Expect(r.Requests.reads.Load() - reads).To(BeZero())
	g.Expect(next.Scope).To(Equal("read"), "the session's scope")
	g.Expect(lifetimeOf(t, next.AccessToken)).To(Equal(5 * time.Minute))
	s = sessionsOf(t, ns)[0].Spec
	g.Expect(s.ExpiresAt.Sub(s.Session.LastUsedAt.Time)).To(Equal(time.Hour), "the client's lifetime at each rotation")

	// A refresh may narrow the scope but never widen it.
	wider := refresh(clientRequest{form: form("grant_type", "refresh_token", "refresh_token", next.RefreshToken, "scope", "read write"), basicID: "svc", basicSecret: secret})
	g.Expect(wider.Error).To(Equal("invalid_scope"))

	// Revocation by another client is refused; by its own, it ends the session.
	rev := r.postAs(t, "/revoke", clientRequest{form: form("token", next.RefreshToken, "client_id", "rotor")})
	g.Expect(rev.Status).To(Equal(http.StatusBadRequest))
	g.Expect(rev.Error).To(Equal("unauthorized_client"))
	rev = r.postAs(t, "/revoke", clientRequest{form: form("token", next.RefreshToken)})
	g.Expect(rev.Status).To(Equal(http.StatusUnauthorized), "a confidential client's session is revoked by that client only")
	g.Expect(sessionsOf(t, ns)[0].Spec.State).To(Equal(identityv1alpha1.SessionActive))
	rev = r.postAs(t, "/revoke", clientRequest{form: form("token", next.RefreshToken), basicID: "svc", basicSecret: secret})
	g.Expect(rev.Status).To(Equal(http.StatusOK))
	g.Expect(sessionsOf(t, ns)[0].Spec.State).To(Equal(identityv1alpha1.SessionRevoked))

	// A client without the refresh_token grant gets no refresh token and
	// stores nothing.
	cli := r.tokenAs(t, clientRequest{form: form("grant_type", "password", "username", "alice", "password", "correct horse", "client_id", "cli")})
	g.Expect(cli.Status).To(Equal(http.StatusOK), cli.Description)
	g.Expect(cli.RefreshToken).To(BeEmpty())
	g.Expect(sessionsOf(t, ns)).To(HaveLen(1))
}

// A client that is deleted, loses the refresh grant or stops being Ready
// ends its sessions: their refreshes are invalid_grant.
func TestSessionsOfAChangedClientStopRefreshing(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := env.Namespace(t)
	createAccount(t, ns, "alice", "correct horse")
	for _, id := range []string{"deleted", "narrowed", "broken"} {
		createClient(t, ns, id, publicSpec("rotor"))
	}
	r := startReplica(t, ns, newClock(), func(o *replicaOptions) { o.IntrospectionAllow = []string{ns + "/api"} })
	caller := serviceAccountToken(t, ns, "api", "rotor")
	tokens := map[string]string{}
	for _, id := range []string{"deleted", "narrowed", "broken"} {
		r.waitClientReady(id)
		rep := r.tokenAs(t, clientRequest{form: form("grant_type", "password", "username", "alice", "password", "correct horse", "client_id", id)})
		g.Expect(rep.Status).To(Equal(http.StatusOK), rep.Description)
		tokens[id] = rep.RefreshToken
		_, body := introspect(t, r, caller, rep.RefreshToken)
		g.Expect(body).To(HaveKeyWithValue("active", true))
		g.Expect(body).To(HaveKeyWithValue("client_id", id))
	}

	get := func(id string) *identityv1alpha1.OAuthClient {
		c := &identityv1alpha1.OAuthClient{}
		g.Expect(env.Client.Get(ctx, keyOf(ns, id), c)).To(Succeed())
		return c
	}
	refusedBefore := counterValue(t, "rotor_refresh_failures_total", "reason", "client_not_allowed")
	g.Expect(env.Client.Delete(ctx, get("deleted"))).To(Succeed())
	narrowed := get("narrowed")
	narrowed.Spec.GrantTypes = []identityv1alpha1.GrantType{identityv1alpha1.GrantPassword}
	g.Expect(env.Client.Update(ctx, narrowed)).To(Succeed())
	// A Public client with a secretRef breaks the CRD's rules, so "broken"
	// is made not Ready through its status, as the reconciler would for a
	// client it cannot serve.
	broken := get("broken")
	broken.Status.Conditions[0].Status = metav1.ConditionFalse
	broken.Status.Conditions[0].Reason = "Test"
	g.Expect(env.Client.Status().Update(ctx, broken)).To(Succeed())

	for _, id := range []string{"deleted", "narrowed", "broken"} {
		g.Eventually(func() string {
			// Sent with and without client_id: both are the session's client.
			rep := r.refresh(t, tokens[id])
			if rep.Status == http.StatusOK {
				tokens[id] = rep.RefreshToken
			}
			return rep.Error
		}).Should(Equal("invalid_grant"), id)
		rep := r.tokenAs(t, clientRequest{form: form("grant_type", "refresh_token", "refresh_token", tokens[id], "client_id", id)})
		g.Expect(rep.Error).To(Equal("invalid_grant"), id)
		_, body := introspect(t, r, caller, tokens[id])
		g.Expect(body).To(Equal(map[string]any{"active": false}), "inactive as soon as a refresh would fail: %s", id)
	}
	g.Expect(counterValue(t, "rotor_refresh_failures_total", "reason", "client_not_allowed")-refusedBefore).
		To(BeNumerically(">=", 6), "each refusal is counted")
}

// A secret is rotated without downtime: both work while the Secret holds
// two hashes, then only the new one.
func TestClientSecretRotationAtTheTokenEndpoint(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	r, ns, old := startClientsReplica(t)
	works := func(secret string) func() int {
		return func() int {
			return r.tokenAs(t, clientRequest{form: form("grant_type", "client_credentials"), basicID: "svc", basicSecret: secret}).Status
		}
	}
	sec := &corev1.Secret{}
	g.Expect(env.Client.Get(ctx, keyOf(ns, oauthclients.SecretName("svc")), sec)).To(Succeed())
	sec.APIVersion, sec.Kind = "v1", "Secret" // as kubectl get -o json prints it
	raw, err := json.Marshal(sec)
	g.Expect(err).NotTo(HaveOccurred())
	rot, err := oauthclients.RotateSecret(raw, "svc", ns)
	g.Expect(err).NotTo(HaveOccurred())
	applySecret := func(manifest []byte) {
		next := &corev1.Secret{}
		g.Expect(yaml.Unmarshal(manifest, next)).To(Succeed())
		cur := &corev1.Secret{}
		g.Expect(env.Client.Get(ctx, keyOf(ns, next.Name), cur)).To(Succeed())
		cur.Data, cur.StringData = next.Data, next.StringData
		g.Expect(env.Client.Update(ctx, cur)).To(Succeed())
	}
	applySecret(rot.Secret)
	g.Eventually(works(rot.PlaintextSecret)).Should(Equal(http.StatusOK))
	g.Expect(works(old)()).To(Equal(http.StatusOK), "the previous secret works during the rotation")

	g.Expect(env.Client.Get(ctx, keyOf(ns, oauthclients.SecretName("svc")), sec)).To(Succeed())
	sec.APIVersion, sec.Kind = "v1", "Secret"
	raw, err = json.Marshal(sec)
	g.Expect(err).NotTo(HaveOccurred())
	drop, err := oauthclients.DropPrevious(raw, "svc", ns)
	g.Expect(err).NotTo(HaveOccurred())
	applySecret(drop.Secret)
	g.Eventually(works(old)).Should(Equal(http.StatusUnauthorized))
	g.Expect(works(rot.PlaintextSecret)()).To(Equal(http.StatusOK))
}

// golang.org/x/oauth2, unmodified, in both of its authentication styles,
// and its clientcredentials package.
func TestStandardOAuth2LibrariesWorkUnmodified(t *testing.T) {
	r, _, secret := startClientsReplica(t)
	for _, style := range []oauth2.AuthStyle{oauth2.AuthStyleInHeader, oauth2.AuthStyleInParams, oauth2.AuthStyleAutoDetect} {
		t.Run("clientcredentials with style "+styleName(style), func(t *testing.T) {
			g := NewWithT(t)
			cfg := clientcredentials.Config{
				ClientID: "svc", ClientSecret: secret, TokenURL: r.URL + "/token",
				Scopes: []string{"read"}, AuthStyle: style, EndpointParams: url.Values{"audience": {"reports"}},
			}
			tok, err := cfg.Token(context.Background())
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(tok.RefreshToken).To(BeEmpty())
			g.Expect(tok.Extra("scope")).To(Equal("read"))
			g.Expect(claimsOf(t, tok.AccessToken)).To(HaveKeyWithValue("aud", ConsistOf("reports")))

			bad := cfg
			bad.ClientSecret = "wrong"
			_, err = bad.Token(context.Background())
			var re *oauth2.RetrieveError
			g.Expect(err).To(BeAssignableToTypeOf(re))
			g.Expect(err.(*oauth2.RetrieveError).ErrorCode).To(Equal("invalid_client"))
		})
		t.Run("password and refresh with style "+styleName(style), func(t *testing.T) {
			g := NewWithT(t)
			cfg := oauth2.Config{ClientID: "svc", ClientSecret: secret, Endpoint: oauth2.Endpoint{TokenURL: r.URL + "/token", AuthStyle: style}}
			tok, err := cfg.PasswordCredentialsToken(context.Background(), "alice", "correct horse")
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(tok.RefreshToken).NotTo(BeEmpty())
			tok.Expiry = time.Now().Add(-time.Minute) // make the source refresh
			next, err := cfg.TokenSource(context.Background(), tok).Token()
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(next.RefreshToken).NotTo(Equal(tok.RefreshToken))
		})
	}
	t.Run("a public client in x/oauth2's header style", func(t *testing.T) {
		// x/oauth2 sends "rotor:" (an empty password) for a public client.
		g := NewWithT(t)
		cfg := oauth2.Config{ClientID: "rotor", Endpoint: oauth2.Endpoint{TokenURL: r.URL + "/token", AuthStyle: oauth2.AuthStyleInHeader}}
		tok, err := cfg.PasswordCredentialsToken(context.Background(), "alice", "correct horse")
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(tok.RefreshToken).NotTo(BeEmpty())
	})
}

func styleName(s oauth2.AuthStyle) string {
	switch s {
	case oauth2.AuthStyleInHeader:
		return "header"
	case oauth2.AuthStyleInParams:
		return "params"
	}
	return "autodetect"
}

// Discovery says how clients authenticate and which scopes exist.
func TestDiscoveryAdvertisesClientAuthenticationAndScopes(t *testing.T) {
	g := NewWithT(t)
	r, _, _ := startClientsReplica(t)
	resp, err := http.Get(r.URL + "/.well-known/openid-configuration")
	g.Expect(err).NotTo(HaveOccurred())
	defer resp.Body.Close()
	doc := map[string]any{}
	g.Expect(json.NewDecoder(resp.Body).Decode(&doc)).To(Succeed())
	g.Expect(doc).To(HaveKeyWithValue("token_endpoint_auth_methods_supported", ConsistOf("client_secret_basic", "client_secret_post", "none")))
	g.Expect(doc).To(HaveKeyWithValue("scopes_supported", ConsistOf("read", "write")))
	g.Expect(doc).To(HaveKeyWithValue("grant_types_supported", ContainElement("client_credentials")))
}

// counterValue is the sum of a counter of the process's metrics registry
// (the issuer's) over its series with the label name=value, 0 when there
// are none.
func counterValue(t testing.TB, metric, name, value string) float64 {
	t.Helper()
	families, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, f := range families {
		if f.GetName() != metric {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == name && l.GetValue() == value {
					sum += m.GetCounter().GetValue()
				}
			}
		}
	}
	return sum
}
