package oauthclients_test

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	identityv1alpha1 "rotor.dev/rotor/api/v1alpha1"
	"rotor.dev/rotor/pkg/oauthclients"
)

// apiCounter counts the requests made through a rest.Config that are not
// watches: the reads a Registry must not make per call.
type apiCounter struct{ reads atomic.Int64 }

func (c *apiCounter) config() *rest.Config {
	cfg := rest.CopyConfig(env.Config)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			if r.URL.Query().Get("watch") != "true" {
				c.reads.Add(1)
			}
			return rt.RoundTrip(r)
		})
	})
	return cfg
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// startRegistry starts, as the manager would, a cache of ns's OAuthClients
// and the SecretCache, and returns a Registry over them configured by o
// (Namespace is set to ns).
func startRegistry(t *testing.T, ctx context.Context, ns string, counter *apiCounter, o oauthclients.RegistryOptions) *oauthclients.Registry {
	t.Helper()
	g := NewWithT(t)
	cfg := counter.config()
	clients, err := cache.New(cfg, cache.Options{
		Scheme:            env.Scheme,
		DefaultNamespaces: map[string]cache.Config{ns: {}},
	})
	g.Expect(err).NotTo(HaveOccurred())
	informer, err := clients.GetInformer(ctx, &identityv1alpha1.OAuthClient{})
	g.Expect(err).NotTo(HaveOccurred())
	secrets, err := oauthclients.NewSecretCache(cfg, env.Scheme, ns)
	g.Expect(err).NotTo(HaveOccurred())
	go func() { _ = clients.Start(ctx) }()
	go func() { _ = secrets.Start(ctx) }()
	g.Expect(clients.WaitForCacheSync(ctx)).To(BeTrue())
	g.Eventually(func() error { return secrets.ReadyCheck(nil) }).Should(Succeed())
	o.Namespace = ns
	reg, err := oauthclients.NewRegistry(clients, secrets, o)
	g.Expect(err).NotTo(HaveOccurred())
	// As rotor serve wires it: resolved clients are remembered until a
	// change, so every test below also proves that changes are seen.
	g.Expect(reg.InvalidateOn(informer, secrets.Informer())).To(Succeed())
	return reg
}

// addr is the client address of the tests that do not exercise the
// throttle.
const addr = "192.0.2.1"

// createClient creates an OAuthClient and sets its Ready condition as the
// reconciler would (status "" leaves it without one).
func createClient(t *testing.T, ctx context.Context, ns, name string, spec identityv1alpha1.OAuthClientSpec, ready metav1.ConditionStatus) {
	t.Helper()
	g := NewWithT(t)
	oac := &identityv1alpha1.OAuthClient{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: spec}
	g.Expect(env.Client.Create(ctx, oac)).To(Succeed())
	if ready == "" {
		return
	}
	oac.Status.Conditions = []metav1.Condition{{
		Type: identityv1alpha1.ConditionReady, Status: ready, Reason: "Test", Message: "set by the test",
		ObservedGeneration: oac.Generation, LastTransitionTime: metav1.Now(),
	}}
	g.Expect(env.Client.Status().Update(ctx, oac)).To(Succeed())
}

func createSecret(t *testing.T, ctx context.Context, ns, name string, data map[string]string) *corev1.Secret {
	t.Helper()
	s := clientSecret(data)
	s.Namespace, s.Name = ns, name
	NewWithT(t).Expect(env.Client.Create(ctx, s)).To(Succeed())
	return s
}

func confidential(secretName string, grants ...identityv1alpha1.GrantType) identityv1alpha1.OAuthClientSpec {
	s := confidentialSpec(grants...)
	s.SecretRef = &identityv1alpha1.ClientSecretReference{Name: secretName}
	return s
}

func TestRegistryAuthenticate(t *testing.T) {
	g := NewWithT(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ns := env.Namespace(t)
	const (
		cc       = identityv1alpha1.GrantClientCredentials
		password = identityv1alpha1.GrantPassword
		refresh  = identityv1alpha1.GrantRefreshToken
	)
	secret, hash := oauthclients.Generate()
	other, _ := oauthclients.Generate()

	pub := publicSpec(password, refresh)
	pub.Audiences = []string{"kubernetes", "api"}
	pub.Scopes = []string{"openid", "groups"}
	pub.TokenLifetimes = &identityv1alpha1.TokenLifetimes{RefreshToken: &metav1.Duration{Duration: time.Hour}}
	createClient(t, ctx, ns, "cli", pub, metav1.ConditionTrue)
	createSecret(t, ctx, ns, "client-secret-app", map[string]string{oauthclients.KeySecretHash: hash})
	createClient(t, ctx, ns, "app", confidential("client-secret-app", cc), metav1.ConditionTrue)
	// Not Ready by the reconciler's word, though its Secret is fine.
	createSecret(t, ctx, ns, "client-secret-unjudged", map[string]string{oauthclients.KeySecretHash: hash})
	createClient(t, ctx, ns, "unjudged", confidential("client-secret-unjudged", cc), "")
	createClient(t, ctx, ns, "refused", publicSpec(password), metav1.ConditionFalse)
	// Ready by a condition that no longer holds: the Secret is gone, or has
	// no hash, or the spec was broken before the schema refused it.
	createClient(t, ctx, ns, "secret-gone", confidential("client-secret-gone", cc), metav1.ConditionTrue)
	createSecret(t, ctx, ns, "client-secret-nohash", map[string]string{oauthclients.KeyPreviousSecretHash: hash})
	createClient(t, ctx, ns, "no-hash", confidential("client-secret-nohash", cc), metav1.ConditionTrue)
	createClient(t, ctx, ns, "inconsistent", publicSpec(refresh, password), metav1.ConditionTrue)
	inconsistent := &identityv1alpha1.OAuthClient{}
	g.Expect(env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "inconsistent"}, inconsistent)).To(Succeed())
	inconsistent.Spec.GrantTypes = []identityv1alpha1.GrantType{refresh} // refresh_token alone: CheckSpec refuses it
	g.Expect(env.Client.Update(ctx, inconsistent)).To(Succeed())

	createClient(t, ctx, env.Namespace(t), "elsewhere", publicSpec(password), metav1.ConditionTrue)

	counter := &apiCounter{}
	// The cases below fail 5 times for app and 4 for unknown ids, from one
	// address: within the default budget.
	reg := startRegistry(t, ctx, ns, counter, oauthclients.RegistryOptions{})
	g.Eventually(func() bool {
		_, found, err := reg.Lookup(ctx, "inconsistent")
		return err == nil && found
	}).Should(BeTrue())
	readsAfterSync := counter.reads.Load()
	g.Expect(readsAfterSync).To(BeNumerically(">", 0), "the counter sees the caches' lists")

	basic := func(id, s string) oauthclients.Credentials {
		return oauthclients.Credentials{ID: id, Secret: s, Method: oauthclients.MethodBasic}
	}
	post := func(id, s string) oauthclients.Credentials {
		return oauthclients.Credentials{ID: id, Secret: s, Method: oauthclients.MethodPost}
	}
	none := func(id string) oauthclients.Credentials {
		return oauthclients.Credentials{ID: id, Method: oauthclients.MethodNone}
	}
	for _, tc := range []struct {
		name   string
		creds  oauthclients.Credentials
		code   string // "" for success
		reason oauthclients.Reason
	}{
		{"a confidential client with its secret in Basic is authenticated", basic("app", secret), "", ""},
		{"a confidential client with its secret in the form is authenticated", post("app", secret), "", ""},
		{"a public client sending its client_id is authenticated", none("cli"), "", ""},
		{"a public client using Basic with an empty password is authenticated", basic("cli", ""), "", ""},
		{"a wrong secret with Basic is invalid_client", basic("app", other), "invalid_client", oauthclients.ReasonWrongSecret},
		{"a wrong secret in the form is invalid_client", post("app", other), "invalid_client", oauthclients.ReasonWrongSecret},
		{"the hash as the secret is invalid_client", post("app", hash), "invalid_client", oauthclients.ReasonWrongSecret},
		{"a confidential client without a secret is invalid_client", none("app"), "invalid_client", oauthclients.ReasonMissingSecret},
		{"a confidential client with Basic and an empty password is invalid_client", basic("app", ""), "invalid_client", oauthclients.ReasonMissingSecret},
		{"a public client sending a secret is invalid_client", post("cli", secret), "invalid_client", oauthclients.ReasonUnexpectedSecret},
		{"a public client sending a secret with Basic is invalid_client", basic("cli", "x"), "invalid_client", oauthclients.ReasonUnexpectedSecret},
		{"an unknown client is invalid_client", basic("nobody", secret), "invalid_client", oauthclients.ReasonUnknownClient},
		{"an unknown public client is invalid_client", none("nobody"), "invalid_client", oauthclients.ReasonUnknownClient},
		{"a client_id that is no object name is an unknown client", none("Not/A Name"), "invalid_client", oauthclients.ReasonUnknownClient},
		{"a client of another namespace is unknown", none("elsewhere"), "invalid_client", oauthclients.ReasonUnknownClient},
		{"a client without a Ready condition is invalid_client, even with its secret", basic("unjudged", secret), "invalid_client", oauthclients.ReasonNotReady},
		{"a client whose Ready condition is False is invalid_client", none("refused"), "invalid_client", oauthclients.ReasonNotReady},
		{"a Ready client whose Secret is gone is invalid_client", basic("secret-gone", secret), "invalid_client", oauthclients.ReasonNotReady},
		{"a Ready client whose Secret has no hash is invalid_client", basic("no-hash", secret), "invalid_client", oauthclients.ReasonNotReady},
		{"a Ready client whose spec CheckSpec refuses is invalid_client", none("inconsistent"), "invalid_client", oauthclients.ReasonNotReady},
		{"no client_id is invalid_request", oauthclients.Credentials{Method: oauthclients.MethodNone}, "invalid_request", oauthclients.ReasonMissingClientID},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			c, err := reg.Authenticate(ctx, tc.creds, addr)
			if tc.code == "" {
				g.Expect(err).NotTo(HaveOccurred())
				g.Expect(c.ID).To(Equal(tc.creds.ID))
				g.Expect(c.Ready).To(BeTrue())
				return
			}
			g.Expect(c).To(BeNil())
			var e *oauthclients.Error
			g.Expect(errors.As(err, &e)).To(BeTrue(), "got %v", err)
			g.Expect(e.Code).To(Equal(tc.code))
			g.Expect(e.Reason).To(Equal(tc.reason))
			g.Expect(e.Basic).To(Equal(tc.creds.Method == oauthclients.MethodBasic))
			if tc.code == "invalid_client" {
				g.Expect(e.Status).To(Equal(http.StatusUnauthorized))
				g.Expect(e.WWWAuthenticate("rotor")).To(HavePrefix("Basic "))
			} else {
				g.Expect(e.Status).To(Equal(http.StatusBadRequest))
			}
			g.Expect(e.Description).NotTo(ContainSubstring(secret))
			g.Expect(e.Description).NotTo(ContainSubstring(hash))
			g.Expect(e.Description).NotTo(ContainSubstring(other))
		})
	}

	t.Run("the resolved client is the OAuthClient's spec", func(t *testing.T) {
		g := NewWithT(t)
		c, err := reg.Authenticate(ctx, none("cli"), addr)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(c.Type).To(Equal(identityv1alpha1.ClientTypePublic))
		g.Expect(c.Grants).To(Equal(set("password", "refresh_token")))
		g.Expect(c.Audiences).To(Equal([]string{"kubernetes", "api"}))
		g.Expect(c.Scopes).To(Equal(set("openid", "groups")))
		g.Expect(c.NotReady).To(BeEmpty())
		aud, err := c.Audience("")
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(aud).To(Equal([]string{"kubernetes"}), "the first audience is the default")
		g.Expect(c.Lifetimes(oauthclients.Lifetimes{AccessToken: time.Minute, RefreshToken: 24 * time.Hour, SessionMax: 48 * time.Hour}).RefreshToken).
			To(Equal(time.Hour))
	})

	t.Run("Lookup tells an unknown client from one not Ready, for refresh", func(t *testing.T) {
		g := NewWithT(t)
		c, found, err := reg.Lookup(ctx, "nobody")
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(found).To(BeFalse())
		g.Expect(c).To(BeNil())
		c, found, err = reg.Lookup(ctx, "secret-gone")
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(found).To(BeTrue())
		g.Expect(c.Ready).To(BeFalse())
		g.Expect(c.NotReady).To(ContainSubstring("client-secret-gone is missing"))
		c, found, err = reg.Lookup(ctx, "app")
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(found).To(BeTrue())
		g.Expect(c.Ready).To(BeTrue())
	})

	g.Expect(counter.reads.Load()).To(Equal(readsAfterSync), "no API read per authentication: caches only")
}

func TestRegistrySecretRotation(t *testing.T) {
	g := NewWithT(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ns := env.Namespace(t)
	old, oldHash := oauthclients.Generate()
	sec := createSecret(t, ctx, ns, "client-secret-app", map[string]string{oauthclients.KeySecretHash: oldHash})
	createClient(t, ctx, ns, "app", confidential("client-secret-app", identityv1alpha1.GrantClientCredentials), metav1.ConditionTrue)
	// Polling a secret the cache does not know yet spends the failure
	// budget: make it too large to matter here.
	reg := startRegistry(t, ctx, ns, &apiCounter{}, oauthclients.RegistryOptions{Burst: 100000})
	auth := func(s string) func() error {
		return func() error {
			_, err := reg.Authenticate(ctx, oauthclients.Credentials{ID: "app", Secret: s, Method: oauthclients.MethodBasic}, addr)
			return err
		}
	}
	g.Eventually(auth(old)).Should(Succeed())

	// rotor client rotate-secret: the new hash, the old one kept.
	updated, updatedHash := oauthclients.Generate()
	sec.Data = map[string][]byte{oauthclients.KeySecretHash: []byte(updatedHash), oauthclients.KeyPreviousSecretHash: []byte(oldHash)}
	g.Expect(env.Client.Update(ctx, sec)).To(Succeed())
	g.Eventually(auth(updated)).Should(Succeed())
	g.Expect(auth(old)()).To(Succeed(), "both secrets are valid during a rotation")

	// The rotation ends: only the new hash.
	sec.Data = map[string][]byte{oauthclients.KeySecretHash: []byte(updatedHash)}
	g.Expect(env.Client.Update(ctx, sec)).To(Succeed())
	g.Eventually(auth(old)).Should(MatchError(ContainSubstring("invalid_client")))
	g.Expect(auth(updated)()).To(Succeed())

	// The Secret deleted: the client cannot authenticate at once.
	g.Expect(env.Client.Delete(ctx, sec)).To(Succeed())
	g.Eventually(auth(updated)).Should(MatchError(ContainSubstring("not ready")))
}

func TestRegistryOverACacheNotStartedFailsWithoutAnOAuthError(t *testing.T) {
	g := NewWithT(t)
	ns := env.Namespace(t)
	clients, err := cache.New(env.Config, cache.Options{Scheme: env.Scheme, DefaultNamespaces: map[string]cache.Config{ns: {}}})
	g.Expect(err).NotTo(HaveOccurred())
	secrets, err := oauthclients.NewSecretCache(env.Config, env.Scheme, ns)
	g.Expect(err).NotTo(HaveOccurred())
	reg, err := oauthclients.NewRegistry(clients, secrets, oauthclients.RegistryOptions{Namespace: ns})
	g.Expect(err).NotTo(HaveOccurred())
	_, err = reg.Authenticate(context.Background(), oauthclients.Credentials{ID: "app", Method: oauthclients.MethodNone}, addr)
	g.Expect(err).To(HaveOccurred())
	var e *oauthclients.Error
	g.Expect(errors.As(err, &e)).To(BeFalse(), "a cache failure is the server's (500/503), not the client's: %v", err)
}

func TestRegistryThrottlesFailedAuthentications(t *testing.T) {
	g := NewWithT(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ns := env.Namespace(t)
	secret, hash := oauthclients.Generate()
	wrong, _ := oauthclients.Generate()
	createSecret(t, ctx, ns, "client-secret-app", map[string]string{oauthclients.KeySecretHash: hash})
	createClient(t, ctx, ns, "app", confidential("client-secret-app", identityv1alpha1.GrantClientCredentials), metav1.ConditionTrue)
	createClient(t, ctx, ns, "cli", publicSpec(identityv1alpha1.GrantPassword), metav1.ConditionTrue)
	// Budgets: a (client, address) pair may fail 3 times, then once per 10 s.
	clk := clocktesting.NewFakePassiveClock(time.Unix(1_800_000_000, 0))
	reg := startRegistry(t, ctx, ns, &apiCounter{}, oauthclients.RegistryOptions{FailuresPerMinute: 6, Burst: 3, Clock: clk})
	g.Eventually(func() error {
		_, err := reg.Authenticate(ctx, oauthclients.Credentials{ID: "app", Secret: secret, Method: oauthclients.MethodBasic}, "192.0.2.99")
		return err
	}).Should(Succeed())

	auth := func(id, s, from string) error {
		_, err := reg.Authenticate(ctx, oauthclients.Credentials{ID: id, Secret: s, Method: oauthclients.MethodPost}, from)
		return err
	}
	throttled := func(g Gomega, err error) {
		var e *oauthclients.Error
		g.Expect(errors.As(err, &e)).To(BeTrue(), "got %v", err)
		g.Expect(e.Code).To(Equal("invalid_client"))
		g.Expect(e.Reason).To(Equal(oauthclients.ReasonThrottled))
		g.Expect(e.Status).To(Equal(http.StatusTooManyRequests))
		g.Expect(e.RetryAfter).To(Equal(time.Minute))
		g.Expect(e.WWWAuthenticate("rotor")).To(BeEmpty(), "a 429 carries no challenge")
		g.Expect(e.Description).To(Equal("too many failed client authentications; retry later"))
	}
	reason := func(err error) oauthclients.Reason {
		var e *oauthclients.Error
		if !errors.As(err, &e) {
			return ""
		}
		return e.Reason
	}

	t.Run("a guesser's wrong secrets stop it, even with the right one, from its address only", func(t *testing.T) {
		g := NewWithT(t)
		for range 3 {
			g.Expect(reason(auth("app", wrong, "203.0.113.1:4000"))).To(Equal(oauthclients.ReasonWrongSecret))
		}
		throttled(g, auth("app", secret, "203.0.113.1:4001"))
		g.Expect(auth("app", secret, "198.51.100.1")).To(Succeed(), "another address still authenticates")
		// One failure refills in 10 s at 6/min.
		clk.SetTime(clk.Now().Add(9 * time.Second))
		throttled(g, auth("app", secret, "203.0.113.1"))
		clk.SetTime(clk.Now().Add(time.Second))
		g.Expect(auth("app", secret, "203.0.113.1")).To(Succeed(), "the budget has refilled")
	})

	t.Run("every invalid_client spends the budget", func(t *testing.T) {
		g := NewWithT(t)
		from := "203.0.113.2"
		g.Expect(reason(auth("cli", "x", from))).To(Equal(oauthclients.ReasonUnexpectedSecret))
		_, err := reg.Authenticate(ctx, oauthclients.Credentials{ID: "cli", Method: oauthclients.MethodNone}, from)
		g.Expect(err).NotTo(HaveOccurred(), "a success spends nothing")
		g.Expect(reason(auth("cli", "x", from))).To(Equal(oauthclients.ReasonUnexpectedSecret))
		g.Expect(reason(auth("cli", "x", from))).To(Equal(oauthclients.ReasonUnexpectedSecret))
		throttled(g, auth("cli", "x", from))
	})

	t.Run("unknown client_ids share one budget, so junk cannot flood the table", func(t *testing.T) {
		g := NewWithT(t)
		from := "203.0.113.3"
		for _, id := range []string{"nobody", "nobody-else", "Not/A Name"} {
			g.Expect(reason(auth(id, secret, from))).To(Equal(oauthclients.ReasonUnknownClient))
		}
		throttled(g, auth("yet-another", secret, from))
		g.Expect(auth("app", secret, from)).To(Succeed(), "a real client from that address has its own budget")
	})

	t.Run("a request naming no client is not throttled", func(t *testing.T) {
		g := NewWithT(t)
		for range 10 {
			_, err := reg.Authenticate(ctx, oauthclients.Credentials{Method: oauthclients.MethodNone}, "203.0.113.4")
			g.Expect(reason(err)).To(Equal(oauthclients.ReasonMissingClientID))
		}
		g.Expect(auth("app", secret, "203.0.113.4")).To(Succeed())
	})
}

func TestRegistryScopesAreTheUnionOfReadyClients(t *testing.T) {
	g := NewWithT(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ns := env.Namespace(t)
	_, hash := oauthclients.Generate()
	with := func(spec identityv1alpha1.OAuthClientSpec, scopes ...string) identityv1alpha1.OAuthClientSpec {
		spec.Scopes = scopes
		return spec
	}
	createClient(t, ctx, ns, "cli", with(publicSpec(identityv1alpha1.GrantPassword), "openid", "groups"), metav1.ConditionTrue)
	createSecret(t, ctx, ns, "client-secret-app", map[string]string{oauthclients.KeySecretHash: hash})
	createClient(t, ctx, ns, "app", with(confidential("client-secret-app", identityv1alpha1.GrantClientCredentials), "groups", "api:read"), metav1.ConditionTrue)
	createClient(t, ctx, ns, "none", publicSpec(identityv1alpha1.GrantPassword), metav1.ConditionTrue)
	// Not Ready: refused by the reconciler, never judged, or Ready by a
	// condition its missing Secret no longer bears out.
	createClient(t, ctx, ns, "refused", with(publicSpec(identityv1alpha1.GrantPassword), "refused-scope"), metav1.ConditionFalse)
	createClient(t, ctx, ns, "unjudged", with(publicSpec(identityv1alpha1.GrantPassword), "unjudged-scope"), "")
	createClient(t, ctx, ns, "secret-gone", with(confidential("client-secret-gone", identityv1alpha1.GrantClientCredentials), "gone-scope"), metav1.ConditionTrue)
	createClient(t, ctx, env.Namespace(t), "elsewhere", with(publicSpec(identityv1alpha1.GrantPassword), "elsewhere-scope"), metav1.ConditionTrue)

	counter := &apiCounter{}
	reg := startRegistry(t, ctx, ns, counter, oauthclients.RegistryOptions{})
	want := []string{"api:read", "groups", "openid"}
	g.Eventually(func() ([]string, error) { return reg.Scopes(ctx) }).Should(Equal(want))
	reads := counter.reads.Load()
	g.Expect(reg.Scopes(ctx)).To(Equal(want))
	g.Expect(counter.reads.Load()).To(Equal(reads), "Scopes reads the caches only")
}
