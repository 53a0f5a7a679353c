package oauthclients_test

import (
	"context"
	"errors"
	"testing"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"rotor.dev/rotor/pkg/oauthclients"
)

func TestSecretCacheHoldsOnlyClientSecretsOfItsNamespace(t *testing.T) {
	g := NewWithT(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ns, other := env.Namespace(t), env.Namespace(t)
	h := oauthclients.Hash("x")
	mk := func(ns, name string, typ corev1.SecretType, annotations map[string]string) {
		g.Expect(env.Client.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: annotations},
			Type:       typ,
			Data:       map[string][]byte{oauthclients.KeySecretHash: []byte(h)},
		})).To(Succeed())
	}
	mk(ns, "client-secret-a", oauthclients.SecretType, map[string]string{
		"kubectl.kubernetes.io/last-applied-configuration": "{}", "team": "a",
	})
	mk(ns, "opaque", corev1.SecretTypeOpaque, nil)
	mk(ns, "account-alice", "identity.rotor.dev/account", nil)
	mk(ns, "signing-key", "identity.rotor.dev/signing-key", nil)
	mk(other, "client-secret-b", oauthclients.SecretType, nil)

	c, err := oauthclients.NewSecretCache(env.Config, env.Scheme, ns)
	g.Expect(err).NotTo(HaveOccurred())
	var _ cache.Cache = c
	var _ manager.LeaderElectionRunnable = c
	g.Expect(c.NeedLeaderElection()).To(BeFalse(), "every replica authenticates clients")
	g.Expect(c.ReadyCheck(nil)).To(MatchError(ContainSubstring("has not synced")))
	go func() { _ = c.Start(ctx) }()
	g.Eventually(func() error { return c.ReadyCheck(nil) }).Should(Succeed())

	var list corev1.SecretList
	g.Expect(c.List(ctx, &list)).To(Succeed())
	g.Expect(list.Items).To(HaveLen(1))
	got := list.Items[0]
	g.Expect(got.Name).To(Equal("client-secret-a"))
	g.Expect(got.ManagedFields).To(BeEmpty(), "trimmed")
	g.Expect(got.Annotations).To(Equal(map[string]string{"team": "a"}), "kubectl's copy of the hashes is trimmed")
	g.Expect(got.Data).To(HaveKey(oauthclients.KeySecretHash))

	err = c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "opaque"}, &corev1.Secret{})
	g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "another type is not there: %v", err)
	err = c.Get(ctx, client.ObjectKey{Namespace: other, Name: "client-secret-b"}, &corev1.Secret{})
	g.Expect(err).To(HaveOccurred(), "another namespace is not there")

	// Nothing else can be read through it, not even by accident.
	err = c.List(ctx, &corev1.ConfigMapList{}, client.InNamespace(ns))
	var notCached *cache.ErrResourceNotCached
	g.Expect(errors.As(err, &notCached)).To(BeTrue(), "got %v", err)
}
