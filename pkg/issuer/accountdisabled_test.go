package issuer_test

import (
	"context"
	"net/http"
	"testing"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	identityv1alpha1 "rotor.dev/rotor/api/v1alpha1"
	"rotor.dev/rotor/pkg/accounts"
	"rotor.dev/rotor/pkg/sessions"
)

// A refresh that finds the session's account disabled or deleted revokes
// the session (reason AccountDisabled) instead of merely refusing it: the
// session stays dead even if the account comes back.
func TestARefreshRevokesTheSessionOfADisabledOrDeletedAccount(t *testing.T) {
	ns := env.Namespace(t)
	r := startReplica(t, ns, newClock(), func(o *replicaOptions) { o.IntrospectionAllow = []string{ns + "/api"} })
	caller := serviceAccountToken(t, ns, "api", "rotor")

	for _, tt := range []struct {
		name     string
		username string
		end      func(g Gomega, secret *corev1.Secret)
	}{
		{"a disabled account", "dora", func(g Gomega, secret *corev1.Secret) {
			secret.Data[accounts.KeyDisabled] = []byte("true")
			g.Expect(env.Client.Update(context.Background(), secret)).To(Succeed())
		}},
		{"a deleted account Secret", "dean", func(g Gomega, secret *corev1.Secret) {
			g.Expect(env.Client.Delete(context.Background(), secret)).To(Succeed())
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			const password = "pw-12345-abcde"
			createAccount(t, ns, tt.username, password)
			waitForAccount(g, r, tt.username)
			login := r.login(t, tt.username, password)
			g.Expect(login.Status).To(Equal(http.StatusOK))
			current := r.refresh(t, login.RefreshToken)
			g.Expect(current.Status).To(Equal(http.StatusOK), "the session works while the account does")

			secret := &corev1.Secret{}
			g.Expect(env.Client.Get(context.Background(), keyOf(ns, accounts.SecretName(tt.username)), secret)).To(Succeed())
			tt.end(g, secret)
			g.Eventually(func() bool {
				_, ok := r.Server.Accounts.Lookup(tt.username)
				return ok
			}).Should(BeFalse(), "the replica's account cache sees the change")

			_, body := introspect(t, r, caller, current.RefreshToken)
			g.Expect(body).To(Equal(map[string]any{"active": false}), "inactive as soon as a refresh would fail")

			revokedBefore := revokedSessions(g, identityv1alpha1.RevocationAccountDisabled)
			writes := r.Requests.writes.Load()
			reply := r.refresh(t, current.RefreshToken)
			g.Expect(reply.Status).To(Equal(http.StatusBadRequest))
			g.Expect(reply.Error).To(Equal("invalid_grant"))
			g.Expect(reply.RefreshToken).To(BeEmpty())
			g.Expect(r.Requests.writes.Load()-writes).To(BeEquivalentTo(1), "one conditional write: the revocation")

			rt := &identityv1alpha1.RefreshToken{}
			g.Expect(env.Client.Get(context.Background(), keyOf(ns, sessionName(current.RefreshToken)), rt)).To(Succeed())
			g.Expect(rt.Spec.State).To(Equal(identityv1alpha1.SessionRevoked))
			g.Expect(rt.Spec.Session.RevocationReason).To(Equal(identityv1alpha1.RevocationAccountDisabled))
			g.Expect(rt.Spec.Session.RevokedAt).NotTo(BeNil())
			g.Expect(rt.Labels).To(HaveKey(sessions.RevokedAtLabel), "garbage collection sees the revocation")
			g.Expect(revokedSessions(g, identityv1alpha1.RevocationAccountDisabled)).To(Equal(revokedBefore + 1))
			g.Eventually(func() []eventsv1.Event { return eventsAbout(g, ns, rt.Name) }).Should(ContainElement(And(
				HaveField("Reason", sessions.ReasonRevokedAtRefresh),
				HaveField("Type", corev1.EventTypeNormal),
			)))

			writes = r.Requests.writes.Load()
			again := r.refresh(t, current.RefreshToken)
			g.Expect(again.Status).To(Equal(http.StatusBadRequest))
			g.Expect(again.Error).To(Equal("invalid_grant"))
			g.Expect(r.Requests.writes.Load()).To(Equal(writes), "a revoked session is refused without another write")

			_, body = introspect(t, r, caller, current.RefreshToken)
			g.Expect(body).To(Equal(map[string]any{"active": false}), "a revoked refresh token")
			g.Expect(r.Logs.String()).NotTo(ContainSubstring(current.RefreshToken))
			g.Expect(r.Logs.String()).NotTo(ContainSubstring(password))
		})
	}

	t.Run("the session stays revoked when the account is enabled again", func(t *testing.T) {
		g := NewWithT(t)
		const password = "pw-67890-fghij"
		createAccount(t, ns, "eve", password)
		waitForAccount(g, r, "eve")
		login := r.login(t, "eve", password)
		g.Expect(login.Status).To(Equal(http.StatusOK))
		key := keyOf(ns, accounts.SecretName("eve"))
		setDisabled := func(v string) {
			secret := &corev1.Secret{}
			g.Expect(env.Client.Get(context.Background(), key, secret)).To(Succeed())
			secret.Data[accounts.KeyDisabled] = []byte(v)
			g.Expect(env.Client.Update(context.Background(), secret)).To(Succeed())
			g.Eventually(func() bool { _, ok := r.Server.Accounts.Lookup("eve"); return ok }).Should(Equal(v == "false"))
		}
		setDisabled("true")
		g.Expect(r.refresh(t, login.RefreshToken).Error).To(Equal("invalid_grant"))
		setDisabled("false")
		g.Expect(r.refresh(t, login.RefreshToken).Error).To(Equal("invalid_grant"))
		g.Expect(r.login(t, "eve", password).Status).To(Equal(http.StatusOK), "a new login starts a new session")
	})
}

// A ServiceAccount no longer allowed to exchange is refused at refresh but
// its session is not revoked: the policy may allow it again.
func TestARefreshOutsideTheExchangePolicyIsRefusedWithoutRevoking(t *testing.T) {
	g := NewWithT(t)
	ns := env.Namespace(t)
	allowing := startReplica(t, ns, newClock(), allowExchange(ns+"/worker"))
	reply := exchange(t, allowing, serviceAccountToken(t, ns, "worker", "rotor"))
	g.Expect(reply.Status).To(Equal(http.StatusOK))

	// Same sessions, a policy without the worker.
	narrowed := startReplica(t, ns, newClock(), allowExchange(ns+"/someone-else"))
	refused := narrowed.refresh(t, reply.RefreshToken)
	g.Expect(refused.Status).To(Equal(http.StatusBadRequest))
	g.Expect(refused.Error).To(Equal("invalid_grant"))

	rt := &identityv1alpha1.RefreshToken{}
	g.Expect(env.Client.Get(context.Background(), keyOf(ns, sessionName(reply.RefreshToken)), rt)).To(Succeed())
	g.Expect(rt.Spec.State).To(Equal(identityv1alpha1.SessionActive))
	g.Expect(rt.Spec.Session.Rotations).To(BeZero())
	g.Expect(allowing.refresh(t, reply.RefreshToken).Status).To(Equal(http.StatusOK), "the session still works where the policy allows it")
}

// waitForAccount waits until the replica's account cache has an account
// created after the replica started.
func waitForAccount(g Gomega, r *replica, username string) {
	g.Eventually(func() bool { _, ok := r.Server.Accounts.Lookup(username); return ok }).Should(BeTrue())
}

// revokedSessions reads rotor_sessions_revoked_total{reason} of this process.
func revokedSessions(g Gomega, reason identityv1alpha1.RevocationReason) float64 {
	families, err := metrics.Registry.Gather()
	g.Expect(err).NotTo(HaveOccurred())
	for _, f := range families {
		if f.GetName() != "rotor_sessions_revoked_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == string(reason) {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

func eventsAbout(g Gomega, ns, name string) []eventsv1.Event {
	list := &eventsv1.EventList{}
	g.Expect(env.Client.List(context.Background(), list, client.InNamespace(ns))).To(Succeed())
	var about []eventsv1.Event
	for _, e := range list.Items {
		if e.Regarding.Name == name {
			about = append(about, e)
		}
	}
	return about
}

// A group removed from an account is gone from the next access token: the
// groups come from the account at every refresh, not from the session.
func TestARefreshCarriesTheAccountsGroupsOfNow(t *testing.T) {
	g := NewWithT(t)
	ns := env.Namespace(t)
	r := startReplica(t, ns, newClock())
	createAccount(t, ns, "gina", "pw-gina-12345", "dev", "ops")
	waitForAccount(g, r, "gina")
	login := r.login(t, "gina", "pw-gina-12345")
	g.Expect(login.Status).To(Equal(http.StatusOK))
	_, _, claims := r.userinfo(t, login.AccessToken)
	g.Expect(claims).To(HaveKeyWithValue("groups", ConsistOf("dev", "ops")))

	secret := &corev1.Secret{}
	g.Expect(env.Client.Get(context.Background(), keyOf(ns, accounts.SecretName("gina")), secret)).To(Succeed())
	secret.Data[accounts.KeyGroups] = []byte("dev")
	g.Expect(env.Client.Update(context.Background(), secret)).To(Succeed())
	g.Eventually(func() []string {
		a, _ := r.Server.Accounts.Lookup("gina")
		return a.Groups
	}).Should(Equal([]string{"dev"}))

	writes := r.Requests.writes.Load()
	reads := r.Requests.reads.Load()
	refreshed := r.refresh(t, login.RefreshToken)
	g.Expect(refreshed.Status).To(Equal(http.StatusOK))
	_, _, claims = r.userinfo(t, refreshed.AccessToken)
	g.Expect(claims).To(HaveKeyWithValue("groups", ConsistOf("dev")), "ops was removed in Kubernetes")
	g.Expect(r.Requests.writes.Load()-writes).To(Equal(int64(1)), "still one write per refresh")
	g.Expect(r.Requests.reads.Load()-reads).To(BeZero(), "and no read: the account comes from the informer")
}
