package v1alpha1_test

import (
	"context"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
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
			Subject:           subject,
			Groups:            []string{"dev"},
			ClientID:          "cli",
			Audience:          []string{"api"},
			Method:            identityv1alpha1.AuthMethodPassword,
			SecretHash:        hashA,
			State:             identityv1alpha1.SessionActive,
			ExpiresAt:         metav1.NewTime(now.Add(time.Hour)),
			AbsoluteExpiresAt: metav1.NewTime(now.Add(24 * time.Hour)),
			LastUsedAt:        now,
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
	g.Expect(got.Spec.SecretHash).To(Equal(hashA))
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
		{"a secret hash that is not a base64url SHA-256 is refused", func(s *identityv1alpha1.RefreshToken) { s.Spec.SecretHash = "plaintext-secret" }, "spec.secretHash"},
		{"an unknown method is refused", func(s *identityv1alpha1.RefreshToken) { s.Spec.Method = "Magic" }, "spec.method"},
		{"an unknown state is refused", func(s *identityv1alpha1.RefreshToken) { s.Spec.State = "Paused" }, "spec.state"},
		{"an empty audience is refused", func(s *identityv1alpha1.RefreshToken) { s.Spec.Audience = nil }, "spec.audience"},
		{"negative rotations are refused", func(s *identityv1alpha1.RefreshToken) { s.Spec.Rotations = -1 }, "spec.rotations"},
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

// What the schema no longer checks across fields (it cost the API server
// CPU on every write), rotor reads safely: a sliding expiry past the
// absolute one ends the session at the absolute one.
func TestASessionEndsAtTheEarlierExpiry(t *testing.T) {
	g := NewWithT(t)
	s := session("ns", "rt", "alice")
	g.Expect(s.Spec.EndsAt()).To(Equal(s.Spec.ExpiresAt.Time))
	s.Spec.ExpiresAt = metav1.NewTime(s.Spec.AbsoluteExpiresAt.Add(time.Hour))
	g.Expect(s.Spec.EndsAt()).To(Equal(s.Spec.AbsoluteExpiresAt.Time))
}
