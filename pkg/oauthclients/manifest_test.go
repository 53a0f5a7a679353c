package oauthclients_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	identityv1alpha1 "rotor.dev/rotor/api/v1alpha1"
	"rotor.dev/rotor/pkg/dev/testenv"
	"rotor.dev/rotor/pkg/oauthclients"
)

var env *testenv.Env

func TestMain(m *testing.M) { testenv.Main(m, &env) }

// split cuts `rotor client create`'s output into its documents.
func split(t *testing.T, out []byte) [][]byte {
	t.Helper()
	return bytes.Split(out, []byte("---\n"))
}

func TestManifestsOfAConfidentialClientApplyAndItsSecretVerifies(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := env.Namespace(t)
	spec := identityv1alpha1.OAuthClientSpec{
		Type:       identityv1alpha1.ClientTypeConfidential,
		GrantTypes: []identityv1alpha1.GrantType{identityv1alpha1.GrantClientCredentials},
		Audiences:  []string{"billing-api", "reports"},
		Scopes:     []string{"billing.read", "billing:write"},
		TokenLifetimes: &identityv1alpha1.TokenLifetimes{
			AccessToken: &metav1.Duration{Duration: 5 * time.Minute},
		},
	}
	m, err := oauthclients.Manifests("billing.example.com", ns, spec)
	g.Expect(err).NotTo(HaveOccurred())

	docs := split(t, m.YAML())
	g.Expect(docs).To(HaveLen(2))
	g.Expect(docs[0]).To(Equal(m.Client))
	g.Expect(docs[1]).To(Equal(m.Secret))
	for _, d := range docs {
		g.Expect(string(d)).NotTo(ContainSubstring(m.PlaintextSecret), "the plaintext secret is never in a manifest")
		g.Expect(string(d)).NotTo(ContainSubstring("creationTimestamp"))
		g.Expect(string(d)).NotTo(ContainSubstring("status"))
	}

	// Strictly the types' fields, nothing more.
	oac := &identityv1alpha1.OAuthClient{}
	g.Expect(yaml.UnmarshalStrict(m.Client, oac)).To(Succeed())
	g.Expect(oac.APIVersion).To(Equal("identity.rotor.dev/v1alpha1"))
	g.Expect(oac.Kind).To(Equal("OAuthClient"))
	g.Expect(oac.Name).To(Equal("billing.example.com"))
	g.Expect(oac.Namespace).To(Equal(ns))
	want := spec
	want.SecretRef = &identityv1alpha1.ClientSecretReference{Name: "client-secret-billing.example.com"}
	g.Expect(oac.Spec).To(Equal(want))

	sec := &corev1.Secret{}
	g.Expect(yaml.UnmarshalStrict(m.Secret, sec)).To(Succeed())
	g.Expect(sec.APIVersion).To(Equal("v1"))
	g.Expect(sec.Kind).To(Equal("Secret"))
	g.Expect(sec.Name).To(Equal("client-secret-billing.example.com"))
	g.Expect(sec.Namespace).To(Equal(ns))
	g.Expect(sec.Type).To(Equal(oauthclients.SecretType))
	g.Expect(sec.Data).To(HaveLen(1))
	g.Expect(string(sec.Data[oauthclients.KeySecretHash])).To(Equal(oauthclients.Hash(m.PlaintextSecret)))
	g.Expect(m.PlaintextSecret).To(HaveLen(oauthclients.SecretLength))

	// The real API server takes both.
	g.Expect(env.Client.Create(ctx, oac)).To(Succeed())
	g.Expect(env.Client.Create(ctx, sec)).To(Succeed())
	stored := &corev1.Secret{}
	g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(sec), stored)).To(Succeed())
	hashes, err := oauthclients.ParseSecret(stored)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(oauthclients.Verify(m.PlaintextSecret, hashes)).To(BeTrue())
	storedClient := &identityv1alpha1.OAuthClient{}
	g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(oac), storedClient)).To(Succeed())
	g.Expect(storedClient.Spec).To(Equal(want))
}

func TestManifestsOfAPublicClientHaveNoSecret(t *testing.T) {
	g := NewWithT(t)
	ns := env.Namespace(t)
	spec := identityv1alpha1.OAuthClientSpec{
		Type:       identityv1alpha1.ClientTypePublic,
		GrantTypes: []identityv1alpha1.GrantType{identityv1alpha1.GrantPassword, identityv1alpha1.GrantRefreshToken},
		Audiences:  []string{"rotor"},
	}
	m, err := oauthclients.Manifests("cli", ns, spec)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(m.Secret).To(BeNil())
	g.Expect(m.PlaintextSecret).To(BeEmpty())
	g.Expect(m.YAML()).To(Equal(m.Client))
	oac := &identityv1alpha1.OAuthClient{}
	g.Expect(yaml.UnmarshalStrict(m.Client, oac)).To(Succeed())
	g.Expect(oac.Spec).To(Equal(spec))
	g.Expect(env.Client.Create(context.Background(), oac)).To(Succeed())
}

func TestManifestsRefuse(t *testing.T) {
	ok := identityv1alpha1.OAuthClientSpec{
		Type:       identityv1alpha1.ClientTypeConfidential,
		GrantTypes: []identityv1alpha1.GrantType{identityv1alpha1.GrantClientCredentials},
		Audiences:  []string{"api"},
	}
	for _, tc := range []struct {
		name      string
		client    string
		namespace string
		mutate    func(*identityv1alpha1.OAuthClientSpec)
		want      string
	}{
		{"a client_id that is not a DNS subdomain", "My_App", "rotor", nil, `client name "My_App" (the client_id): a lowercase RFC 1123 subdomain`},
		{"a namespace that is not a label", "app", "Rotor", nil, `namespace "Rotor": a lowercase RFC 1123 label`},
		{"a client_id too long for its Secret's name", strings.Repeat("a", 250), "rotor", nil, "is too long for its Secret's name"},
		{"a public client with client credentials", "app", "rotor", func(s *identityv1alpha1.OAuthClientSpec) { s.Type = identityv1alpha1.ClientTypePublic },
			"a Public client cannot use client_credentials (RFC 6749 section 4.4): make it Confidential or remove the grant"},
		{"a scope that is not a scope-token", "app", "rotor", func(s *identityv1alpha1.OAuthClientSpec) { s.Scopes = []string{"a b"} }, "is not an RFC 6749 scope-token"},
		{"no audience", "app", "rotor", func(s *identityv1alpha1.OAuthClientSpec) { s.Audiences = nil }, "no audiences"},
	} {
		t.Run("Manifests refuses "+tc.name, func(t *testing.T) {
			g := NewWithT(t)
			spec := ok
			if tc.mutate != nil {
				tc.mutate(&spec)
			}
			m, err := oauthclients.Manifests(tc.client, tc.namespace, spec)
			g.Expect(err).To(HaveOccurred())
			g.Expect(err.Error()).To(ContainSubstring(tc.want))
			g.Expect(m).To(BeNil())
		})
	}
}

// asKubectlPrints is a Secret as `kubectl get secret -o yaml` prints it after
// a `kubectl apply`: server fields and the last-applied annotation included.
func asKubectlPrints(t *testing.T, sec *corev1.Secret) []byte {
	t.Helper()
	c := sec.DeepCopy()
	c.APIVersion, c.Kind = "v1", "Secret"
	out, err := yaml.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestRotateSecretKeepsTheCurrentSecretUntilTheNextRotation(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := env.Namespace(t)
	m, err := oauthclients.Manifests("app", ns, confidentialSpec(identityv1alpha1.GrantClientCredentials))
	g.Expect(err).NotTo(HaveOccurred())
	sec := &corev1.Secret{}
	g.Expect(yaml.UnmarshalStrict(m.Secret, sec)).To(Succeed())
	sec.Annotations = map[string]string{
		"kubectl.kubernetes.io/last-applied-configuration": `{"data":{"secretHash":"…"}}`,
		"team": "billing",
	}
	sec.Labels = map[string]string{"app": "billing"}
	g.Expect(env.Client.Create(ctx, sec)).To(Succeed())

	// apply writes a rotation's output as `kubectl apply -f -` would, and
	// returns the Secret's hashes as stored.
	apply := func(g Gomega, out []byte) []string {
		next := &corev1.Secret{}
		g.Expect(yaml.UnmarshalStrict(out, next)).To(Succeed())
		g.Expect(next.ResourceVersion).To(BeEmpty(), "no server fields")
		g.Expect(next.UID).To(BeEmpty())
		g.Expect(next.ManagedFields).To(BeEmpty())
		g.Expect(next.Annotations).To(Equal(map[string]string{"team": "billing"}), "kubectl's last-applied copy is dropped, the rest kept")
		g.Expect(next.Labels).To(Equal(map[string]string{"app": "billing"}))
		current := &corev1.Secret{}
		g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(next), current)).To(Succeed())
		next.ResourceVersion = current.ResourceVersion
		g.Expect(env.Client.Update(ctx, next)).To(Succeed())
		g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(next), current)).To(Succeed())
		hashes, err := oauthclients.ParseSecret(current)
		g.Expect(err).NotTo(HaveOccurred())
		return hashes
	}
	get := func() []byte {
		s := &corev1.Secret{}
		g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(sec), s)).To(Succeed())
		return asKubectlPrints(t, s)
	}

	first := m.PlaintextSecret
	r1, err := oauthclients.RotateSecret(get(), "app", ns)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(string(r1.Secret)).NotTo(ContainSubstring(r1.PlaintextSecret))
	hashes := apply(g, r1.Secret)
	g.Expect(hashes).To(HaveLen(2))
	g.Expect(oauthclients.Verify(r1.PlaintextSecret, hashes)).To(BeTrue(), "the new secret works")
	g.Expect(oauthclients.Verify(first, hashes)).To(BeTrue(), "the current secret still works")
	g.Expect(hashes[0]).To(Equal(oauthclients.Hash(r1.PlaintextSecret)), "the new one is secretHash")

	// A second rotation drops the oldest: a Secret holds two hashes at most.
	r2, err := oauthclients.RotateSecret(get(), "client-secret-app", ns) // the Secret's name works too
	g.Expect(err).NotTo(HaveOccurred())
	hashes = apply(g, r2.Secret)
	g.Expect(hashes).To(HaveLen(2))
	g.Expect(oauthclients.Verify(r2.PlaintextSecret, hashes)).To(BeTrue())
	g.Expect(oauthclients.Verify(r1.PlaintextSecret, hashes)).To(BeTrue())
	g.Expect(oauthclients.Verify(first, hashes)).To(BeFalse(), "the oldest is gone")

	// Ending the rotation leaves the newest only.
	d, err := oauthclients.DropPrevious(get(), "app", ns)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(d.PlaintextSecret).To(BeEmpty())
	hashes = apply(g, d.Secret)
	g.Expect(hashes).To(Equal([]string{oauthclients.Hash(r2.PlaintextSecret)}))
	g.Expect(oauthclients.Verify(r1.PlaintextSecret, hashes)).To(BeFalse())
}

func TestRotateSecretGivesASecretWithoutHashItsFirst(t *testing.T) {
	g := NewWithT(t)
	in := []byte("apiVersion: v1\nkind: Secret\nmetadata:\n  name: client-secret-app\ntype: identity.rotor.dev/client-secret\n")
	r, err := oauthclients.RotateSecret(in, "app", "rotor")
	g.Expect(err).NotTo(HaveOccurred())
	sec := &corev1.Secret{}
	g.Expect(yaml.UnmarshalStrict(r.Secret, sec)).To(Succeed())
	g.Expect(sec.Namespace).To(Equal("rotor"), "the namespace flag fills in a manifest without one")
	hashes, err := oauthclients.ParseSecret(sec)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(hashes).To(Equal([]string{oauthclients.Hash(r.PlaintextSecret)}))

	// JSON, as `kubectl get -o json` prints, and stringData, as a
	// hand-written manifest may hold.
	in = []byte(`{"apiVersion":"v1","kind":"Secret","metadata":{"name":"client-secret-app","namespace":"rotor"},` +
		`"type":"identity.rotor.dev/client-secret","stringData":{"secretHash":"` + hashes[0] + `"}}`)
	r2, err := oauthclients.RotateSecret(in, "app", "rotor")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(yaml.UnmarshalStrict(r2.Secret, sec)).To(Succeed())
	hashes, err = oauthclients.ParseSecret(sec)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(hashes).To(Equal([]string{oauthclients.Hash(r2.PlaintextSecret), oauthclients.Hash(r.PlaintextSecret)}))
}

func TestRotateSecretRefuses(t *testing.T) {
	secretOf := func(name, namespace string, typ corev1.SecretType, data map[string]string) []byte {
		s := clientSecret(data)
		s.Name, s.Namespace, s.Type = name, namespace, typ
		return asKubectlPrints(t, s)
	}
	h := oauthclients.Hash("x")
	for _, tc := range []struct {
		name string
		in   []byte
		want error
		msg  string
	}{
		{"an empty stdin", nil, nil, "no Secret on stdin: kubectl -n rotor get secret client-secret-app -o yaml | rotor client rotate-secret app"},
		{"a ConfigMap", []byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: client-secret-app\n"), nil, `expected one v1 Secret, got apiVersion "v1" kind "ConfigMap"`},
		{"a list of Secrets", []byte("apiVersion: v1\nkind: List\nitems: []\n"), nil, `kind "List"`},
		{"another client's Secret", secretOf("client-secret-other", "rotor", oauthclients.SecretType, map[string]string{"secretHash": h}), nil, `the Secret is "client-secret-other", not client app's (client-secret-app)`},
		{"a Secret in another namespace", secretOf("client-secret-app", "elsewhere", oauthclients.SecretType, map[string]string{"secretHash": h}), nil, `the Secret is in namespace "elsewhere", not "rotor"`},
		{"an Opaque Secret", secretOf("client-secret-app", "rotor", corev1.SecretTypeOpaque, map[string]string{"secretHash": h}), oauthclients.ErrWrongType, ""},
		{"a Secret holding a plaintext secret", secretOf("client-secret-app", "rotor", oauthclients.SecretType, map[string]string{"secretHash": h, "secret": "x"}), oauthclients.ErrMalformed, ""},
		{"a Secret with a malformed hash", secretOf("client-secret-app", "rotor", oauthclients.SecretType, map[string]string{"secretHash": "x"}), oauthclients.ErrMalformed, ""},
	} {
		t.Run("RotateSecret refuses "+tc.name, func(t *testing.T) {
			g := NewWithT(t)
			r, err := oauthclients.RotateSecret(tc.in, "app", "rotor")
			g.Expect(err).To(HaveOccurred())
			g.Expect(r).To(BeNil())
			if tc.want != nil {
				g.Expect(errors.Is(err, tc.want)).To(BeTrue(), "got %v", err)
			}
			g.Expect(err.Error()).To(ContainSubstring(tc.msg))
		})
	}
	t.Run("DropPrevious refuses a Secret without hash", func(t *testing.T) {
		g := NewWithT(t)
		_, err := oauthclients.DropPrevious(secretOf("client-secret-app", "rotor", oauthclients.SecretType, nil), "app", "rotor")
		g.Expect(errors.Is(err, oauthclients.ErrNoHash)).To(BeTrue(), "got %v", err)
	})
}
