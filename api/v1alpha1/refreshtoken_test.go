package v1alpha1_test

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	identityv1alpha1 "rotor.dev/rotor/api/v1alpha1"
	"rotor.dev/rotor/pkg/dev/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) { testenv.Main(m, &env) }

const hashA = "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU" // SHA-256 of "", base64url

func session(ns, name, subject string) *identityv1alpha1.RefreshToken {
	now := metav1.NewTime(time.Now().Truncate(time.Second))
	return &identityv1alpha1.RefreshToken{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: identityv1alpha1.RefreshTokenSpec{
			Subject:   subject,
			ClientID:  "cli",
			State:     identityv1alpha1.SessionActive,
			ExpiresAt: metav1.NewTime(now.Add(time.Hour)),
			Session: identityv1alpha1.Session{
				Groups:            []string{"dev"},
				Audience:          []string{"api"},
				Method:            identityv1alpha1.AuthMethodPassword,
				SecretHash:        hashA,
				AbsoluteExpiresAt: metav1.NewTime(now.Add(24 * time.Hour)),
				LastUsedAt:        now,
			},
		},
	}
}

func TestRefreshTokenCreateReadList(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := env.Namespace(t)

	for _, s := range []*identityv1alpha1.RefreshToken{
		session(ns, "rt-a1", "alice"), session(ns, "rt-a2", "alice"), session(ns, "rt-b1", "bob"),
	} {
		g.Expect(env.Client.Create(ctx, s)).To(Succeed())
	}

	got := &identityv1alpha1.RefreshToken{}
	g.Expect(env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "rt-a1"}, got)).To(Succeed())
	g.Expect(got.Spec.Subject).To(Equal("alice"))
	g.Expect(got.Spec.Session.SecretHash).To(Equal(hashA))
	g.Expect(got.Spec.State).To(Equal(identityv1alpha1.SessionActive))

	all := &identityv1alpha1.RefreshTokenList{}
	g.Expect(env.Client.List(ctx, all, client.InNamespace(ns))).To(Succeed())
	g.Expect(all.Items).To(HaveLen(3))

	// The selectable field lets operators find (and delete) one subject's sessions.
	alice := &identityv1alpha1.RefreshTokenList{}
	g.Expect(env.Client.List(ctx, alice, client.InNamespace(ns),
		client.MatchingFieldsSelector{Selector: fields.OneTermEqualSelector("spec.subject", "alice")})).To(Succeed())
	g.Expect(alice.Items).To(HaveLen(2))
	for _, s := range alice.Items {
		g.Expect(s.Spec.Subject).To(Equal("alice"))
	}

	// And one OAuth client's: kubectl get rt --field-selector spec.clientID=web.
	web := session(ns, "rt-w1", "carol")
	web.Spec.ClientID = "web"
	g.Expect(env.Client.Create(ctx, web)).To(Succeed())
	ofWeb := &identityv1alpha1.RefreshTokenList{}
	g.Expect(env.Client.List(ctx, ofWeb, client.InNamespace(ns),
		client.MatchingFieldsSelector{Selector: fields.OneTermEqualSelector("spec.clientID", "web")})).To(Succeed())
	g.Expect(ofWeb.Items).To(HaveLen(1))
	g.Expect(ofWeb.Items[0].Name).To(Equal("rt-w1"))
}

// longestServiceAccountSubject is system:serviceaccount: with a 63-character
// namespace and a 253-character name: 339 characters.
func longestServiceAccountSubject() string {
	return "system:serviceaccount:" + strings.Repeat("n", 63) + ":" + strings.Repeat("s", 253)
}

func TestTheLongestServiceAccountSubjectIsAccepted(t *testing.T) {
	g := NewWithT(t)
	s := session(env.Namespace(t), "rt-longest-subject", longestServiceAccountSubject())
	g.Expect(len(s.Spec.Subject)).To(Equal(339))
	g.Expect(env.Client.Create(context.Background(), s)).To(Succeed())
}

func TestRefreshTokenSchemaRejectsBadObjects(t *testing.T) {
	ns := env.Namespace(t)
	tests := []struct {
		name   string
		mutate func(*identityv1alpha1.RefreshToken)
		want   string
	}{
		{"an empty subject is refused", func(s *identityv1alpha1.RefreshToken) { s.Spec.Subject = "" }, "spec.subject"},
		{"an empty client is refused", func(s *identityv1alpha1.RefreshToken) { s.Spec.ClientID = "" }, "spec.clientID"},
		{"a subject one longer than the longest ServiceAccount's is refused", func(s *identityv1alpha1.RefreshToken) {
			s.Spec.Subject = longestServiceAccountSubject() + "x"
		}, "spec.subject"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			s := session(ns, "rt-bad-"+string(rune('a'+i)), "alice")
			tt.mutate(s)
			err := env.Client.Create(context.Background(), s)
			g.Expect(apierrors.IsInvalid(err)).To(BeTrue(), "want Invalid, got %v", err)
			g.Expect(err.Error()).To(ContainSubstring(tt.want))
		})
	}
}

// The API server stores spec.session unvalidated: rotor checks it on read.
func TestTheAPIServerStoresASessionItDoesNotValidate(t *testing.T) {
	g := NewWithT(t)
	ns := env.Namespace(t)
	s := session(ns, "rt-unchecked", "alice")
	s.Spec.Session.SecretHash = "plaintext-secret"
	g.Expect(env.Client.Create(context.Background(), s)).To(Succeed())
	g.Expect(s.Spec.Validate()).To(MatchError(ContainSubstring("spec.session.secretHash")))

	// As stored: one JSON string, which reads back as the session.
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(identityv1alpha1.GroupVersion.WithKind("RefreshToken"))
	g.Expect(env.Client.Get(context.Background(), client.ObjectKeyFromObject(s), u)).To(Succeed())
	stored, ok, err := unstructured.NestedString(u.Object, "spec", "session")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(ok).To(BeTrue(), "spec.session is a string")
	var fields map[string]any
	g.Expect(json.Unmarshal([]byte(stored), &fields)).To(Succeed())
	g.Expect(fields).To(HaveKeyWithValue("secretHash", "plaintext-secret"))
	g.Expect(fields).To(HaveKeyWithValue("audience", []any{"api"}))
	got := &identityv1alpha1.RefreshToken{}
	g.Expect(runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, got)).To(Succeed())
	g.Expect(equality.Semantic.DeepEqual(got.Spec, s.Spec)).To(BeTrue(), "%+v", got.Spec)

	// An earlier rotor's shape (session an object, state and expiry in it)
	// is still accepted: the two versions overlap during an upgrade.
	legacy := u.DeepCopy()
	legacy.SetName("rt-legacy")
	legacy.SetResourceVersion("")
	legacy.SetUID("")
	unstructured.RemoveNestedField(legacy.Object, "spec", "state")
	unstructured.RemoveNestedField(legacy.Object, "spec", "expiresAt")
	fields["state"], fields["expiresAt"] = "Active", "2030-01-01T00:00:00Z"
	g.Expect(unstructured.SetNestedField(legacy.Object, fields, "spec", "session")).To(Succeed())
	g.Expect(env.Client.Create(context.Background(), legacy)).To(Succeed())
}

func TestTheAPIServerValidatesWhatKubectlPrints(t *testing.T) {
	ns := env.Namespace(t)
	for name, edit := range map[string]func(*unstructured.Unstructured){
		"an unknown state": func(u *unstructured.Unstructured) {
			_ = unstructured.SetNestedField(u.Object, "Paused", "spec", "state")
		},
		"an expiry that is no time": func(u *unstructured.Unstructured) {
			_ = unstructured.SetNestedField(u.Object, "tomorrow", "spec", "expiresAt")
		},
	} {
		t.Run(name, func(t *testing.T) {
			g := NewWithT(t)
			obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(session(ns, "rt-invalid", "alice"))
			g.Expect(err).NotTo(HaveOccurred())
			u := &unstructured.Unstructured{Object: obj}
			u.SetGroupVersionKind(identityv1alpha1.GroupVersion.WithKind("RefreshToken"))
			edit(u)
			g.Expect(apierrors.IsInvalid(env.Client.Create(context.Background(), u))).To(BeTrue())
		})
	}
}

func TestASessionRoundTripsThroughJSON(t *testing.T) {
	g := NewWithT(t)
	s := session("ns", "rt", "alice")
	s.Spec.Session.Scope = "a&b <c>"
	revoked := metav1.NewTime(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC))
	s.Spec.Session.RevokedAt = &revoked
	b, err := json.Marshal(s.Spec)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(string(b)).To(ContainSubstring(`"session":"{\"groups\":[\"dev\"]`), "one string holding the session's JSON")
	var back identityv1alpha1.RefreshTokenSpec
	g.Expect(json.Unmarshal(b, &back)).To(Succeed())
	g.Expect(equality.Semantic.DeepEqual(back, s.Spec)).To(BeTrue(), "%+v", back)

	var fromObject identityv1alpha1.Session
	g.Expect(json.Unmarshal([]byte(`{"audience":["api"],"rotations":2}`), &fromObject)).To(Succeed(), "an earlier rotor's object")
	g.Expect(fromObject.Audience).To(Equal([]string{"api"}))
	g.Expect(fromObject.Rotations).To(BeEquivalentTo(2))
	var earlier identityv1alpha1.RefreshTokenSpec
	g.Expect(json.Unmarshal([]byte(`{"subject":"a","clientID":"c","session":{"audience":["api"],"state":"Revoked","expiresAt":"2030-01-01T00:00:00Z"}}`), &earlier)).To(Succeed())
	g.Expect(earlier.State).To(Equal(identityv1alpha1.SessionRevoked), "lifted from an earlier rotor's session")
	g.Expect(earlier.ExpiresAt.UTC()).To(Equal(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)))
	g.Expect(earlier.Session.Audience).To(Equal([]string{"api"}))
	g.Expect(json.Unmarshal([]byte(`"{not json"`), &fromObject)).NotTo(Succeed())
	g.Expect(json.Unmarshal([]byte(`5`), &fromObject)).NotTo(Succeed())
}

func TestValidateRefusesWhatRotorNeverWrites(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*identityv1alpha1.RefreshTokenSpec)
		want   string
	}{
		{"an empty subject", func(s *identityv1alpha1.RefreshTokenSpec) { s.Subject = "" }, "spec.subject"},
		{"a subject longer than the longest ServiceAccount's", func(s *identityv1alpha1.RefreshTokenSpec) { s.Subject = longestServiceAccountSubject() + "x" }, "spec.subject"},
		{"an empty client", func(s *identityv1alpha1.RefreshTokenSpec) { s.ClientID = "" }, "spec.clientID"},
		{"a secret hash that is not a base64url SHA-256", func(s *identityv1alpha1.RefreshTokenSpec) { s.Session.SecretHash = "plaintext-secret" }, "spec.session.secretHash"},
		{"a secret hash with a character outside base64url", func(s *identityv1alpha1.RefreshTokenSpec) { s.Session.SecretHash = "+" + hashA[1:] }, "spec.session.secretHash"},
		{"a previous hash that is not a SHA-256", func(s *identityv1alpha1.RefreshTokenSpec) { s.Session.PreviousSecretHash = "x" }, "spec.session.previousSecretHash"},
		{"an unknown method", func(s *identityv1alpha1.RefreshTokenSpec) { s.Session.Method = "Magic" }, "spec.session.method"},
		{"an unknown state", func(s *identityv1alpha1.RefreshTokenSpec) { s.State = "Paused" }, "spec.state"},
		{"no audience", func(s *identityv1alpha1.RefreshTokenSpec) { s.Session.Audience = nil }, "spec.session.audience"},
		{"an empty audience", func(s *identityv1alpha1.RefreshTokenSpec) { s.Session.Audience = []string{""} }, "spec.session.audience[0]"},
		{"an audience twice", func(s *identityv1alpha1.RefreshTokenSpec) { s.Session.Audience = []string{"api", "api"} }, "spec.session.audience[1]: duplicate"},
		{"17 audiences", func(s *identityv1alpha1.RefreshTokenSpec) { s.Session.Audience = distinct(17) }, "spec.session.audience"},
		{"65 groups", func(s *identityv1alpha1.RefreshTokenSpec) { s.Session.Groups = distinct(65) }, "spec.session.groups"},
		{"a group of 257 characters", func(s *identityv1alpha1.RefreshTokenSpec) { s.Session.Groups = []string{strings.Repeat("g", 257)} }, "spec.session.groups[0]"},
		{"a scope with a double space", func(s *identityv1alpha1.RefreshTokenSpec) { s.Session.Scope = "read  write" }, "spec.session.scope"},
		{"a scope ending in a space", func(s *identityv1alpha1.RefreshTokenSpec) { s.Session.Scope = "read " }, "spec.session.scope"},
		{"a scope with a backslash", func(s *identityv1alpha1.RefreshTokenSpec) { s.Session.Scope = `re\ad` }, "spec.session.scope"},
		{"no expiry", func(s *identityv1alpha1.RefreshTokenSpec) { s.ExpiresAt = metav1.Time{} }, "spec.expiresAt"},
		{"no absolute expiry", func(s *identityv1alpha1.RefreshTokenSpec) { s.Session.AbsoluteExpiresAt = metav1.Time{} }, "spec.session.absoluteExpiresAt"},
		{"no last use", func(s *identityv1alpha1.RefreshTokenSpec) { s.Session.LastUsedAt = metav1.Time{} }, "spec.session.lastUsedAt"},
		{"negative rotations", func(s *identityv1alpha1.RefreshTokenSpec) { s.Session.Rotations = -1 }, "spec.session.rotations"},
		{"an unknown revocation reason", func(s *identityv1alpha1.RefreshTokenSpec) { s.Session.RevocationReason = "Bored" }, "spec.session.revocationReason"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			s := session("ns", "rt", "alice")
			g.Expect(s.Spec.Validate()).To(Succeed(), "the session as rotor writes it")
			tt.mutate(&s.Spec)
			err := s.Spec.Validate()
			g.Expect(err).To(MatchError(ContainSubstring(tt.want)))
			g.Expect(err.Error()).NotTo(ContainSubstring("plaintext-secret"), "errors name fields, never values")
		})
	}
	g := NewWithT(t)
	s := session("ns", "rt", longestServiceAccountSubject())
	s.Spec.Session.Scope, s.Spec.Session.PreviousSecretHash, s.Spec.Session.Rotations = "openid read write", hashA, 3
	s.Spec.Session.Groups, s.Spec.Session.Audience = distinct(64), distinct(16)
	s.Spec.State, s.Spec.Session.RevocationReason = identityv1alpha1.SessionRevoked, identityv1alpha1.RevocationReuse
	g.Expect(s.Spec.Validate()).To(Succeed(), "every field at its limit")
}

func distinct(n int) []string {
	v := make([]string, n)
	for i := range v {
		v[i] = "v" + strconv.Itoa(i)
	}
	return v
}

// What the schema no longer checks across fields (it cost the API server
// CPU on every write), rotor reads safely: a sliding expiry past the
// absolute one ends the session at the absolute one.
func TestASessionEndsAtTheEarlierExpiry(t *testing.T) {
	g := NewWithT(t)
	s := session("ns", "rt", "alice")
	g.Expect(s.Spec.EndsAt()).To(Equal(s.Spec.ExpiresAt.Time))
	s.Spec.ExpiresAt = metav1.NewTime(s.Spec.Session.AbsoluteExpiresAt.Add(time.Hour))
	g.Expect(s.Spec.EndsAt()).To(Equal(s.Spec.Session.AbsoluteExpiresAt.Time))
}
