package v1alpha1_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	identityv1alpha1 "rotor.dev/rotor/api/v1alpha1"
)

func duration(s string) *metav1.Duration {
	d, err := time.ParseDuration(s)
	if err != nil {
		panic(err)
	}
	return &metav1.Duration{Duration: d}
}

// confidentialClient is a client with every field set, valid.
func confidentialClient(ns, name string) *identityv1alpha1.OAuthClient {
	return &identityv1alpha1.OAuthClient{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: identityv1alpha1.OAuthClientSpec{
			Type: identityv1alpha1.ClientTypeConfidential,
			GrantTypes: []identityv1alpha1.GrantType{
				identityv1alpha1.GrantPassword, identityv1alpha1.GrantRefreshToken,
				identityv1alpha1.GrantClientCredentials, identityv1alpha1.GrantTokenExchange,
			},
			Audiences: []string{"api", "https://kubernetes.default.svc"},
			Scopes:    []string{"openid", "read:billing", "https://api.example.com/x.y", "!#[]~"},
			TokenLifetimes: &identityv1alpha1.TokenLifetimes{
				AccessToken:  duration("1h"),
				RefreshToken: duration("12h"),
				SessionMax:   duration("720h"),
				ReuseGrace:   duration("0s"),
			},
			SecretRef: &identityv1alpha1.ClientSecretReference{Name: "client-secret-" + name},
		},
	}
}

func publicClient(ns, name string) *identityv1alpha1.OAuthClient {
	return &identityv1alpha1.OAuthClient{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: identityv1alpha1.OAuthClientSpec{
			Type:       identityv1alpha1.ClientTypePublic,
			GrantTypes: []identityv1alpha1.GrantType{identityv1alpha1.GrantPassword, identityv1alpha1.GrantRefreshToken},
			Audiences:  []string{"rotor"},
		},
	}
}

func TestOAuthClientCreateReadAndStatus(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := env.Namespace(t)

	c := confidentialClient(ns, "billing.example.com")
	g.Expect(env.Client.Create(ctx, c)).To(Succeed())
	g.Expect(env.Client.Create(ctx, publicClient(ns, "cli"))).To(Succeed())
	got := &identityv1alpha1.OAuthClient{}
	g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(c), got)).To(Succeed())
	g.Expect(got.Spec).To(Equal(c.Spec))
	g.Expect(got.Spec.DefaultAudience()).To(Equal("api"))
	g.Expect(got.Spec.Allows(identityv1alpha1.GrantClientCredentials)).To(BeTrue())
	g.Expect(got.Generation).To(Equal(int64(1)))

	// The status is a subresource: writing it leaves the generation alone,
	// and a spec written with it is ignored.
	got.Status.ObservedGeneration = 1
	got.Status.Conditions = []metav1.Condition{{
		Type: identityv1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: "Ready", Message: "ok",
		ObservedGeneration: 1, LastTransitionTime: metav1.Now(),
	}}
	got.Spec.Audiences = []string{"changed"}
	g.Expect(env.Client.Status().Update(ctx, got)).To(Succeed())
	g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(c), got)).To(Succeed())
	g.Expect(got.Generation).To(Equal(int64(1)))
	g.Expect(got.Spec.Audiences).To(Equal(c.Spec.Audiences))
	g.Expect(got.Status.Conditions).To(HaveLen(1))

	// A spec change is a new generation.
	got.Spec.Audiences = []string{"api"}
	g.Expect(env.Client.Update(ctx, got)).To(Succeed())
	g.Expect(got.Generation).To(Equal(int64(2)))

	list := &identityv1alpha1.OAuthClientList{}
	g.Expect(env.Client.List(ctx, list, client.InNamespace(ns))).To(Succeed())
	g.Expect(list.Items).To(HaveLen(2))
}

func TestOAuthClientDurationsInEveryGoForm(t *testing.T) {
	ns := env.Namespace(t)
	for i, d := range []string{"1h", "59m59.5s", "3600s", "1h0m0s", "500ms", "1500us", "1500µs", "90000000000ns"} {
		t.Run(d+" is an access-token lifetime", func(t *testing.T) {
			g := NewWithT(t)
			c := publicClient(ns, fmt.Sprintf("durations-%d", i))
			c.Spec.TokenLifetimes = &identityv1alpha1.TokenLifetimes{AccessToken: duration(d)}
			g.Expect(env.Client.Create(context.Background(), c)).To(Succeed())
		})
	}
}

func TestOAuthClientSchemaRejectsBadObjects(t *testing.T) {
	ns := env.Namespace(t)
	type mutation func(*identityv1alpha1.OAuthClient)
	confidential := func(m mutation) func(string) *identityv1alpha1.OAuthClient {
		return func(name string) *identityv1alpha1.OAuthClient {
			c := confidentialClient(ns, name)
			m(c)
			return c
		}
	}
	public := func(m mutation) func(string) *identityv1alpha1.OAuthClient {
		return func(name string) *identityv1alpha1.OAuthClient {
			c := publicClient(ns, name)
			m(c)
			return c
		}
	}
	lifetimes := func(f func(*identityv1alpha1.TokenLifetimes)) mutation {
		return func(c *identityv1alpha1.OAuthClient) { f(c.Spec.TokenLifetimes) }
	}
	tests := []struct {
		name   string
		object func(name string) *identityv1alpha1.OAuthClient
		want   string
	}{
		{"a public client with client_credentials is refused", public(func(c *identityv1alpha1.OAuthClient) {
			c.Spec.GrantTypes = append(c.Spec.GrantTypes, identityv1alpha1.GrantClientCredentials)
		}), "a Public client cannot use client_credentials (RFC 6749 section 4.4: confidential clients only)"},
		{"a confidential client without secretRef is refused", confidential(func(c *identityv1alpha1.OAuthClient) { c.Spec.SecretRef = nil }),
			"a Confidential client needs secretRef"},
		{"a public client with secretRef is refused", public(func(c *identityv1alpha1.OAuthClient) {
			c.Spec.SecretRef = &identityv1alpha1.ClientSecretReference{Name: "s"}
		}), "a Public client has no secret: remove secretRef"},
		{"an unknown type is refused", public(func(c *identityv1alpha1.OAuthClient) { c.Spec.Type = "public" }), "spec.type"},
		{"an unknown grant is refused", public(func(c *identityv1alpha1.OAuthClient) { c.Spec.GrantTypes = []identityv1alpha1.GrantType{"implicit"} }), "spec.grantTypes[0]"},
		{"no grant is refused", public(func(c *identityv1alpha1.OAuthClient) { c.Spec.GrantTypes = nil }), "spec.grantTypes"},
		{"a grant listed twice is refused", public(func(c *identityv1alpha1.OAuthClient) {
			c.Spec.GrantTypes = []identityv1alpha1.GrantType{identityv1alpha1.GrantPassword, identityv1alpha1.GrantPassword}
		}), "Duplicate value"},
		{"no audience is refused", public(func(c *identityv1alpha1.OAuthClient) { c.Spec.Audiences = nil }), "spec.audiences"},
		{"an empty audience is refused", public(func(c *identityv1alpha1.OAuthClient) { c.Spec.Audiences = []string{""} }), "spec.audiences[0]"},
		{"an audience listed twice is refused", public(func(c *identityv1alpha1.OAuthClient) { c.Spec.Audiences = []string{"a", "b", "a"} }), "audiences must be unique"},
		{"a scope with a space is refused", confidential(func(c *identityv1alpha1.OAuthClient) { c.Spec.Scopes = []string{"read write"} }), "spec.scopes[0]"},
		{"a scope with a double quote is refused", confidential(func(c *identityv1alpha1.OAuthClient) { c.Spec.Scopes = []string{`"x"`} }), "spec.scopes[0]"},
		{"a scope with a backslash is refused", confidential(func(c *identityv1alpha1.OAuthClient) { c.Spec.Scopes = []string{"ok", `a\b`} }), "spec.scopes[1]"},
		{"a scope outside ASCII is refused", confidential(func(c *identityv1alpha1.OAuthClient) { c.Spec.Scopes = []string{"lesen-ä"} }), "spec.scopes[0]"},
		{"an access-token lifetime over 1h is refused", confidential(lifetimes(func(l *identityv1alpha1.TokenLifetimes) { l.AccessToken = duration("1h0m1s") })),
			"accessToken must be more than 0s and at most 1h"},
		{"an access-token lifetime of 0 is refused", confidential(lifetimes(func(l *identityv1alpha1.TokenLifetimes) { l.AccessToken = duration("0s") })),
			"accessToken must be more than 0s and at most 1h"},
		{"a negative refresh-token lifetime is refused", confidential(lifetimes(func(l *identityv1alpha1.TokenLifetimes) { l.RefreshToken = duration("-1h") })),
			"spec.tokenLifetimes.refreshToken"},
		{"a session maximum of 0 is refused", confidential(lifetimes(func(l *identityv1alpha1.TokenLifetimes) { l.SessionMax = duration("0s") })),
			"sessionMax must be more than 0s"},
		{"a refresh-token lifetime past the session maximum is refused", confidential(lifetimes(func(l *identityv1alpha1.TokenLifetimes) {
			l.RefreshToken, l.SessionMax = duration("25h"), duration("24h")
		})), "refreshToken must not be longer than sessionMax"},
		{"a negative reuse grace is refused", confidential(lifetimes(func(l *identityv1alpha1.TokenLifetimes) { l.ReuseGrace = duration("-1s") })),
			"spec.tokenLifetimes.reuseGrace"},
		{"a secretRef that is not a Secret name is refused", confidential(func(c *identityv1alpha1.OAuthClient) {
			c.Spec.SecretRef.Name = "Not_A_Name"
		}), "spec.secretRef.name"},
		{"a client_id that is not a DNS subdomain is refused", func(string) *identityv1alpha1.OAuthClient {
			return publicClient(ns, "My_App")
		}, "metadata.name"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			c := tt.object(fmt.Sprintf("bad-%d", i))
			err := env.Client.Create(context.Background(), c)
			g.Expect(apierrors.IsInvalid(err)).To(BeTrue(), "want Invalid, got %v", err)
			g.Expect(err.Error()).To(ContainSubstring(tt.want))
		})
	}
}

// A duration that is not Go's is refused by the schema's pattern, before any
// CEL rule has to parse it: written as JSON, since metav1.Duration cannot
// hold it.
func TestOAuthClientSchemaRejectsDurationsThatAreNotGos(t *testing.T) {
	ns := env.Namespace(t)
	for i, d := range []string{"1 day", "1d", "PT1H", "1H", "", "-5m", "5"} {
		t.Run(fmt.Sprintf("%q is refused", d), func(t *testing.T) {
			g := NewWithT(t)
			u := map[string]any{
				"apiVersion": "identity.rotor.dev/v1alpha1", "kind": "OAuthClient",
				"metadata": map[string]any{"name": fmt.Sprintf("duration-%d", i), "namespace": ns},
				"spec": map[string]any{
					"type": "Public", "grantTypes": []any{"password"}, "audiences": []any{"a"},
					"tokenLifetimes": map[string]any{"refreshToken": d},
				},
			}
			err := env.Client.Create(context.Background(), &unstructured.Unstructured{Object: u})
			g.Expect(apierrors.IsInvalid(err)).To(BeTrue(), "want Invalid, got %v", err)
			g.Expect(err.Error()).To(ContainSubstring("spec.tokenLifetimes.refreshToken"))
		})
	}
}
