package controllers

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/yaml"

	identityv1alpha1 "rotor.dev/rotor/api/v1alpha1"
	"rotor.dev/rotor/pkg/keys"
	"rotor.dev/rotor/pkg/oauthclients"
)

const (
	grantPassword = identityv1alpha1.GrantPassword
	grantRefresh  = identityv1alpha1.GrantRefreshToken
	clientCreds   = identityv1alpha1.GrantClientCredentials
	grantExchange = identityv1alpha1.GrantTokenExchange
	accountType   = corev1.SecretType("identity.rotor.dev/account")
)

func newPublicClient(ns, name string, grants ...identityv1alpha1.GrantType) *identityv1alpha1.OAuthClient {
	return &identityv1alpha1.OAuthClient{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: identityv1alpha1.OAuthClientSpec{
			Type:       identityv1alpha1.ClientTypePublic,
			GrantTypes: grants,
			Audiences:  []string{"api"},
		},
	}
}

func newConfidentialClient(ns, name string, grants ...identityv1alpha1.GrantType) *identityv1alpha1.OAuthClient {
	c := newPublicClient(ns, name, grants...)
	c.Spec.Type = identityv1alpha1.ClientTypeConfidential
	c.Spec.SecretRef = &identityv1alpha1.ClientSecretReference{Name: oauthclients.SecretName(name)}
	return c
}

// secretFor is the Secret a client's secretRef names, of type typ, with data.
func secretFor(c *identityv1alpha1.OAuthClient, typ corev1.SecretType, data map[string]string) *corev1.Secret {
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: c.Namespace, Name: c.Spec.SecretRef.Name},
		Type:       typ,
		Data:       map[string][]byte{},
	}
	for k, v := range data {
		s.Data[k] = []byte(v)
	}
	return s
}

// startSecretCache starts the client-secret cache of ns, as the manager
// would.
func startSecretCache(t *testing.T, ctx context.Context, ns string) *oauthclients.SecretCache {
	t.Helper()
	c, err := oauthclients.NewSecretCache(env.Config, env.Scheme, ns)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = c.Start(ctx) }()
	NewWithT(t).Eventually(func() error { return c.ReadyCheck(nil) }).Should(Succeed())
	return c
}

// cached waits until the cache holds sec at its current resourceVersion, or
// holds no Secret of its name if it was deleted.
func cached(g Gomega, c cache.Cache, key types.NamespacedName) {
	onServer := &corev1.Secret{}
	err := env.Client.Get(context.Background(), key, onServer)
	gone := apierrors.IsNotFound(err)
	g.Expect(gone || err == nil).To(BeTrue(), "%v", err)
	g.Eventually(func(g Gomega) {
		inCache := &corev1.Secret{}
		err := c.Get(context.Background(), key, inCache)
		if gone || onServer.Type != oauthclients.SecretType {
			g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "%v", err)
			return
		}
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(inCache.ResourceVersion).To(Equal(onServer.ResourceVersion))
	}).WithTimeout(10 * time.Second).Should(Succeed())
}

func newOAuthClientReconciler(secrets cache.Cache, clk *clocktesting.FakePassiveClock, ev *eventLog) *OAuthClientReconciler {
	return &OAuthClientReconciler{Client: env.Client, Secrets: secrets, APIReader: env.Client, Recorder: ev, Clock: clk}
}

func requestFor(c *identityv1alpha1.OAuthClient) ctrl.Request {
	return ctrl.Request{NamespacedName: client.ObjectKeyFromObject(c)}
}

// readyView is an OAuthClient's status as kubectl shows it.
type readyView struct {
	Status     metav1.ConditionStatus
	Reason     string
	Since      time.Duration // lastTransitionTime - t0
	Generation int64         // the condition's observedGeneration, which must be the status's
}

func readyOf(g Gomega, key types.NamespacedName) (readyView, *identityv1alpha1.OAuthClient) {
	c := &identityv1alpha1.OAuthClient{}
	g.Expect(env.Client.Get(context.Background(), key, c)).To(Succeed())
	cond := apimeta.FindStatusCondition(c.Status.Conditions, identityv1alpha1.ConditionReady)
	if cond == nil {
		return readyView{}, c
	}
	g.Expect(c.Status.Conditions).To(HaveLen(1))
	g.Expect(c.Status.ObservedGeneration).To(Equal(cond.ObservedGeneration))
	return readyView{
		Status: cond.Status, Reason: cond.Reason,
		Since: cond.LastTransitionTime.Sub(t0), Generation: cond.ObservedGeneration,
	}, c
}

func messageOf(c *identityv1alpha1.OAuthClient) string {
	if cond := apimeta.FindStatusCondition(c.Status.Conditions, identityv1alpha1.ConditionReady); cond != nil {
		return cond.Message
	}
	return ""
}

func TestOAuthClientConditions(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ns := env.Namespace(t)
	secrets := startSecretCache(t, ctx, ns)
	ev := &eventLog{}
	r := newOAuthClientReconciler(secrets, clocktesting.NewFakePassiveClock(t0), ev)
	hash, previous := oauthclients.Hash("current"), oauthclients.Hash("previous")

	notReady := func(reason string) readyView {
		return readyView{Status: metav1.ConditionFalse, Reason: reason, Generation: 1}
	}
	ready := readyView{Status: metav1.ConditionTrue, Reason: ReasonReady, Generation: 1}
	for name, tc := range map[string]struct {
		client  *identityv1alpha1.OAuthClient
		secret  func(*identityv1alpha1.OAuthClient) *corev1.Secret
		want    readyView
		message string
		requeue time.Duration
	}{
		"a public client logging in with a password and refreshing is Ready": {
			client:  newPublicClient(ns, "cli", grantPassword, grantRefresh),
			want:    ready,
			message: "Public client: it sends its client_id only",
		},
		"a public workload exchanging its token is Ready": {
			client: newPublicClient(ns, "workload", grantExchange, grantRefresh),
			want:   ready,
		},
		"a confidential client whose Secret holds a hash is Ready": {
			client: newConfidentialClient(ns, "service", clientCreds),
			secret: func(c *identityv1alpha1.OAuthClient) *corev1.Secret {
				return secretFor(c, oauthclients.SecretType, map[string]string{"secretHash": hash})
			},
			want:    ready,
			message: "Confidential client: Secret client-secret-service holds 1 valid secret hash(es)",
		},
		"a confidential client in the middle of a rotation, its Secret holding two hashes, is Ready": {
			client: newConfidentialClient(ns, "rotating", clientCreds, grantPassword, grantRefresh),
			secret: func(c *identityv1alpha1.OAuthClient) *corev1.Secret {
				return secretFor(c, oauthclients.SecretType, map[string]string{"secretHash": hash, "previousSecretHash": previous})
			},
			want:    ready,
			message: "holds 2 valid secret hash(es)",
		},
		"a confidential client whose Secret does not exist is not Ready, and is looked at again in a minute": {
			client:  newConfidentialClient(ns, "no-secret", clientCreds),
			want:    notReady(ReasonSecretMissing),
			message: "Secret client-secret-no-secret does not exist: create it with rotor client create, or rotor client rotate-secret",
			requeue: time.Minute,
		},
		"a confidential client whose Secret is Opaque is not Ready": {
			client: newConfidentialClient(ns, "opaque", clientCreds),
			secret: func(c *identityv1alpha1.OAuthClient) *corev1.Secret {
				return secretFor(c, corev1.SecretTypeOpaque, map[string]string{"secretHash": hash})
			},
			want:    notReady(ReasonSecretWrongType),
			message: `Secret client-secret-opaque is of type "Opaque"`,
			requeue: time.Minute,
		},
		"a confidential client whose Secret is an account's is not Ready": {
			client: newConfidentialClient(ns, "account", clientCreds),
			secret: func(c *identityv1alpha1.OAuthClient) *corev1.Secret {
				return secretFor(c, accountType, map[string]string{"username": "account", "passwordHash": "x"})
			},
			want:    notReady(ReasonSecretWrongType),
			message: `is of type "identity.rotor.dev/account"`,
			requeue: time.Minute,
		},
		"a confidential client whose Secret has no hash is not Ready": {
			client: newConfidentialClient(ns, "no-hash", clientCreds),
			secret: func(c *identityv1alpha1.OAuthClient) *corev1.Secret {
				return secretFor(c, oauthclients.SecretType, nil)
			},
			want:    notReady(ReasonNoSecretHash),
			message: "Secret client-secret-no-hash has no secretHash (create one with rotor client rotate-secret)",
		},
		"a confidential client whose Secret has only a previous hash is not Ready": {
			client: newConfidentialClient(ns, "previous-only", clientCreds),
			secret: func(c *identityv1alpha1.OAuthClient) *corev1.Secret {
				return secretFor(c, oauthclients.SecretType, map[string]string{"previousSecretHash": previous})
			},
			want: notReady(ReasonNoSecretHash),
		},
		"a confidential client whose Secret holds a plaintext secret beside its hash is not Ready": {
			client: newConfidentialClient(ns, "plaintext", clientCreds),
			secret: func(c *identityv1alpha1.OAuthClient) *corev1.Secret {
				return secretFor(c, oauthclients.SecretType, map[string]string{"secretHash": hash, "clientSecret": "current"})
			},
			want:    notReady(ReasonSecretMalformed),
			message: "has data keys clientSecret; a client-secret Secret holds only secretHash and previousSecretHash, never a plaintext secret",
		},
		"a confidential client whose Secret holds something else than a SHA-256 is not Ready": {
			client: newConfidentialClient(ns, "not-sha256", clientCreds),
			secret: func(c *identityv1alpha1.OAuthClient) *corev1.Secret {
				return secretFor(c, oauthclients.SecretType, map[string]string{"secretHash": "current"})
			},
			want:    notReady(ReasonSecretMalformed),
			message: "secretHash is not a base64url SHA-256",
		},
		"a client with refresh_token but no grant that creates sessions is not Ready": {
			client:  newPublicClient(ns, "refresh-only", grantRefresh),
			want:    notReady(ReasonGrantsInconsistent),
			message: "refresh_token without password or token exchange, the grants that create sessions, refreshes nothing",
		},
		"a confidential client with refresh_token and client_credentials only is not Ready, whatever its Secret": {
			client: newConfidentialClient(ns, "cc-refresh", clientCreds, grantRefresh),
			secret: func(c *identityv1alpha1.OAuthClient) *corev1.Secret {
				return secretFor(c, oauthclients.SecretType, map[string]string{"secretHash": hash})
			},
			want: notReady(ReasonGrantsInconsistent),
		},
	} {
		t.Run(name, func(t *testing.T) {
			g := NewWithT(t)
			g.Expect(env.Client.Create(ctx, tc.client)).To(Succeed())
			if tc.secret != nil {
				s := tc.secret(tc.client)
				g.Expect(env.Client.Create(ctx, s)).To(Succeed())
				cached(g, secrets, client.ObjectKeyFromObject(s))
			}
			res, err := r.Reconcile(ctx, requestFor(tc.client))
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(res).To(Equal(ctrl.Result{RequeueAfter: tc.requeue}))
			got, obj := readyOf(g, client.ObjectKeyFromObject(tc.client))
			g.Expect(got).To(Equal(tc.want))
			g.Expect(messageOf(obj)).To(ContainSubstring(tc.message))
			eventType := corev1.EventTypeWarning
			if tc.want.Status == metav1.ConditionTrue {
				eventType = corev1.EventTypeNormal
			}
			g.Expect(ev.take()).To(Equal([]string{tc.client.Name + " " + eventType + " " + tc.want.Reason}))
		})
	}
}

// What the schema refuses never reaches the reconciler; a client stored
// before a rule existed (an older CRD, ratcheting) still gets a reason.
func TestOAuthClientsTheSchemaRefuses(t *testing.T) {
	ns := env.Namespace(t)
	for name, tc := range map[string]struct {
		client *identityv1alpha1.OAuthClient
		schema string
		reason string
	}{
		"a public client with client_credentials": {
			client: newPublicClient(ns, "public-cc", clientCreds),
			schema: "a Public client cannot use client_credentials (RFC 6749 section 4.4: confidential clients only)",
			reason: ReasonPublicClientCredentials,
		},
		"a confidential client without secretRef": {
			client: func() *identityv1alpha1.OAuthClient {
				c := newConfidentialClient(ns, "no-ref", clientCreds)
				c.Spec.SecretRef = nil
				return c
			}(),
			schema: "a Confidential client needs secretRef",
			reason: ReasonSecretRefInconsistent,
		},
		"a public client with secretRef": {
			client: func() *identityv1alpha1.OAuthClient {
				c := newPublicClient(ns, "public-ref", grantPassword)
				c.Spec.SecretRef = &identityv1alpha1.ClientSecretReference{Name: "x"}
				return c
			}(),
			schema: "a Public client has no secret: remove secretRef",
			reason: ReasonSecretRefInconsistent,
		},
		"a client with an unknown grant": {
			client: newPublicClient(ns, "implicit", "implicit"),
			schema: `spec.grantTypes[0]: Unsupported value: "implicit"`,
			reason: ReasonSpecInvalid,
		},
	} {
		t.Run(name+" is refused by the API server, and would not be Ready", func(t *testing.T) {
			g := NewWithT(t)
			err := env.Client.Create(context.Background(), tc.client)
			g.Expect(apierrors.IsInvalid(err)).To(BeTrue(), "want Invalid, got %v", err)
			g.Expect(err.Error()).To(ContainSubstring(tc.schema))

			v, bad := judgeSpec(&tc.client.Spec)
			g.Expect(bad).To(BeTrue())
			g.Expect(v.ready).To(BeFalse())
			g.Expect(v.reason).To(Equal(tc.reason))
		})
	}
}

func TestOAuthClientLifecycle(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ns := env.Namespace(t)
	secrets := startSecretCache(t, ctx, ns)
	clk := clocktesting.NewFakePassiveClock(t0)
	ev := &eventLog{}
	r := newOAuthClientReconciler(secrets, clk, ev)
	oac := newConfidentialClient(ns, "billing", clientCreds)
	key := client.ObjectKeyFromObject(oac)
	secretKey := types.NamespacedName{Namespace: ns, Name: oac.Spec.SecretRef.Name}
	first, second := oauthclients.Hash("first"), oauthclients.Hash("second")
	setSecret := func(g Gomega, data map[string]string) {
		s := &corev1.Secret{}
		g.Expect(env.Client.Get(ctx, secretKey, s)).To(Succeed())
		s.Data = map[string][]byte{}
		for k, v := range data {
			s.Data[k] = []byte(v)
		}
		g.Expect(env.Client.Update(ctx, s)).To(Succeed())
		cached(g, secrets, secretKey)
	}
	var lastVersion string

	steps := []struct {
		name      string
		at        time.Duration
		do        func(g Gomega)
		want      readyView
		requeue   time.Duration
		events    []string
		unwritten bool
	}{{
		name:    "a confidential client created before its Secret is not Ready: SecretMissing",
		do:      func(g Gomega) { g.Expect(env.Client.Create(ctx, oac)).To(Succeed()) },
		want:    readyView{Status: metav1.ConditionFalse, Reason: ReasonSecretMissing, Since: 0, Generation: 1},
		requeue: time.Minute,
		events:  []string{"billing Warning SecretMissing"},
	}, {
		name:      "a minute later, still without Secret, nothing is written and nothing recorded",
		at:        time.Minute,
		want:      readyView{Status: metav1.ConditionFalse, Reason: ReasonSecretMissing, Since: 0, Generation: 1},
		requeue:   time.Minute,
		unwritten: true,
	}, {
		name: "once the Secret is created the client is Ready",
		at:   2 * time.Minute,
		do: func(g Gomega) {
			g.Expect(env.Client.Create(ctx, secretFor(oac, oauthclients.SecretType, map[string]string{"secretHash": first}))).To(Succeed())
			cached(g, secrets, secretKey)
		},
		want:   readyView{Status: metav1.ConditionTrue, Reason: ReasonReady, Since: 2 * time.Minute, Generation: 1},
		events: []string{"billing Normal Ready"},
	}, {
		name: "a spec change is observed at its generation, without a transition",
		at:   3 * time.Minute,
		do: func(g Gomega) {
			c := &identityv1alpha1.OAuthClient{}
			g.Expect(env.Client.Get(ctx, key, c)).To(Succeed())
			c.Spec.Audiences = append(c.Spec.Audiences, "reports")
			g.Expect(env.Client.Update(ctx, c)).To(Succeed())
		},
		want: readyView{Status: metav1.ConditionTrue, Reason: ReasonReady, Since: 2 * time.Minute, Generation: 2},
	}, {
		name: "a rotation, the Secret holding two hashes, keeps it Ready",
		at:   4 * time.Minute,
		do:   func(g Gomega) { setSecret(g, map[string]string{"secretHash": second, "previousSecretHash": first}) },
		want: readyView{Status: metav1.ConditionTrue, Reason: ReasonReady, Since: 2 * time.Minute, Generation: 2},
	}, {
		name:   "a Secret emptied of its hashes makes it not Ready: NoSecretHash",
		at:     5 * time.Minute,
		do:     func(g Gomega) { setSecret(g, nil) },
		want:   readyView{Status: metav1.ConditionFalse, Reason: ReasonNoSecretHash, Since: 5 * time.Minute, Generation: 2},
		events: []string{"billing Warning NoSecretHash"},
	}, {
		name: "a deleted Secret is SecretMissing; the condition stays False since its last transition",
		at:   6 * time.Minute,
		do: func(g Gomega) {
			g.Expect(env.Client.Delete(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: secretKey.Name}})).To(Succeed())
			cached(g, secrets, secretKey)
		},
		want:    readyView{Status: metav1.ConditionFalse, Reason: ReasonSecretMissing, Since: 5 * time.Minute, Generation: 2},
		requeue: time.Minute,
		events:  []string{"billing Warning SecretMissing"},
	}}
	for _, s := range steps {
		if !t.Run(s.name, func(t *testing.T) {
			g := NewWithT(t)
			clk.SetTime(t0.Add(s.at))
			if s.do != nil {
				s.do(g)
			}
			res, err := r.Reconcile(ctx, requestFor(oac))
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(res).To(Equal(ctrl.Result{RequeueAfter: s.requeue}))
			got, obj := readyOf(g, key)
			g.Expect(got).To(Equal(s.want))
			if s.unwritten {
				g.Expect(obj.ResourceVersion).To(Equal(lastVersion), "an unchanged status is not written")
			}
			lastVersion = obj.ResourceVersion
			g.Expect(ev.take()).To(Equal(s.events))
		}) {
			break
		}
	}

	t.Run("a deleted client is forgotten", func(t *testing.T) {
		g := NewWithT(t)
		g.Expect(env.Client.Delete(ctx, &identityv1alpha1.OAuthClient{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: oac.Name}})).To(Succeed())
		res, err := r.Reconcile(ctx, requestFor(oac))
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(res).To(Equal(ctrl.Result{}))
		g.Expect(ev.take()).To(BeEmpty())
	})
}

func TestOAuthClientReconcilerValidatesItsWiring(t *testing.T) {
	g := NewWithT(t)
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{
		Scheme:                 env.Scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
	})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect((&OAuthClientReconciler{}).SetupWithManager(mgr)).To(MatchError(ContainSubstring("the client-secret cache is required")))
}

// TestOAuthClientManagerFollowsSecrets runs the controller in a manager
// wired as rotor's: OAuthClients from the manager cache, Secrets from the
// client-secret cache. A Secret's create, update and delete reach the
// clients naming it at once (the recheck is a minute away).
func TestOAuthClientManagerFollowsSecrets(t *testing.T) {
	g := NewWithT(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ns := env.Namespace(t)

	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{
		Scheme:                 env.Scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache: cache.Options{
			DefaultNamespaces: map[string]cache.Config{ns: {}},
			ByObject:          map[client.Object]cache.ByObject{&corev1.Secret{}: keys.CacheByObject(ns)},
		},
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	g.Expect(err).NotTo(HaveOccurred())
	secrets, err := oauthclients.NewSecretCache(env.Config, env.Scheme, ns)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(mgr.Add(secrets)).To(Succeed())
	g.Expect((&OAuthClientReconciler{Secrets: secrets}).SetupWithManager(mgr)).To(Succeed())
	mgrDone := make(chan error)
	go func() { mgrDone <- mgr.Start(ctx) }()
	defer func() { cancel(); g.Expect(<-mgrDone).To(Succeed()) }()

	// What `rotor client create billing --type Confidential ...` prints.
	m, err := oauthclients.Manifests("billing", ns, identityv1alpha1.OAuthClientSpec{
		Type:       identityv1alpha1.ClientTypeConfidential,
		GrantTypes: []identityv1alpha1.GrantType{clientCreds},
		Audiences:  []string{"billing-api"},
	})
	g.Expect(err).NotTo(HaveOccurred())
	oac, sec := &identityv1alpha1.OAuthClient{}, &corev1.Secret{}
	g.Expect(yaml.UnmarshalStrict(m.Client, oac)).To(Succeed())
	g.Expect(yaml.UnmarshalStrict(m.Secret, sec)).To(Succeed())
	key := client.ObjectKeyFromObject(oac)
	eventually := func(want readyView) {
		t.Helper()
		g.Eventually(func(g Gomega) {
			got, _ := readyOf(g, key)
			got.Since = 0
			g.Expect(got).To(Equal(want))
		}).WithTimeout(20 * time.Second).Should(Succeed())
	}

	g.Expect(env.Client.Create(ctx, oac)).To(Succeed())
	eventually(readyView{Status: metav1.ConditionFalse, Reason: ReasonSecretMissing, Generation: 1})

	g.Expect(env.Client.Create(ctx, sec)).To(Succeed())
	eventually(readyView{Status: metav1.ConditionTrue, Reason: ReasonReady, Generation: 1})

	g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(sec), sec)).To(Succeed())
	sec.Data = nil
	g.Expect(env.Client.Update(ctx, sec)).To(Succeed())
	eventually(readyView{Status: metav1.ConditionFalse, Reason: ReasonNoSecretHash, Generation: 1})

	g.Expect(env.Client.Get(ctx, key, oac)).To(Succeed())
	oac.Spec.Audiences = append(oac.Spec.Audiences, "reports")
	g.Expect(env.Client.Update(ctx, oac)).To(Succeed())
	eventually(readyView{Status: metav1.ConditionFalse, Reason: ReasonNoSecretHash, Generation: 2})

	g.Expect(env.Client.Delete(ctx, sec)).To(Succeed())
	eventually(readyView{Status: metav1.ConditionFalse, Reason: ReasonSecretMissing, Generation: 2})

	// A public client needs no Secret.
	cli := newPublicClient(ns, "cli", grantPassword, grantRefresh)
	g.Expect(env.Client.Create(ctx, cli)).To(Succeed())
	g.Eventually(func(g Gomega) {
		got, _ := readyOf(g, client.ObjectKeyFromObject(cli))
		g.Expect(got.Status).To(Equal(metav1.ConditionTrue))
	}).WithTimeout(20 * time.Second).Should(Succeed())

	// Events, through the manager's events.k8s.io recorder.
	g.Eventually(func(g Gomega) {
		var list eventsv1.EventList
		g.Expect(env.Client.List(ctx, &list, client.InNamespace(ns))).To(Succeed())
		reasons := map[string]string{}
		for _, e := range list.Items {
			g.Expect(e.ReportingController).To(Equal("rotor-oauth-clients"))
			g.Expect(e.Regarding.Kind).To(Equal("OAuthClient"))
			reasons[e.Regarding.Name+" "+e.Reason] = e.Type
		}
		g.Expect(reasons).To(Equal(map[string]string{
			"billing SecretMissing": corev1.EventTypeWarning,
			"billing Ready":         corev1.EventTypeNormal,
			"billing NoSecretHash":  corev1.EventTypeWarning,
			"cli Ready":             corev1.EventTypeNormal,
		}))
	}).WithTimeout(20 * time.Second).Should(Succeed())

	// kubectl get oac: Ready is a column (Reason too, with -o wide).
	table := getTable(g, ns)
	var columns []string
	for _, c := range table.ColumnDefinitions {
		columns = append(columns, c.Name)
	}
	g.Expect(columns).To(Equal([]string{"Name", "Type", "Grants", "Audiences", "Ready", "Reason", "Age"}))
	rows := map[string][]any{}
	for _, r := range table.Rows {
		rows[r.Cells[0].(string)] = r.Cells[1:6]
	}
	g.Expect(rows).To(Equal(map[string][]any{
		"billing": {"Confidential", `["client_credentials"]`, `["billing-api","reports"]`, "False", "SecretMissing"},
		"cli":     {"Public", `["password","refresh_token"]`, `["api"]`, "True", "Ready"},
	}))
}

// getTable lists ns's OAuthClients as kubectl does: as a Table, with the
// CRD's printer columns.
func getTable(g Gomega, ns string) *metav1.Table {
	dc, err := discovery.NewDiscoveryClientForConfig(env.Config)
	g.Expect(err).NotTo(HaveOccurred())
	body, err := dc.RESTClient().Get().
		AbsPath("/apis/identity.rotor.dev/v1alpha1/namespaces", ns, "oauthclients").
		SetHeader("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io").
		DoRaw(context.Background())
	g.Expect(err).NotTo(HaveOccurred(), string(body))
	table := &metav1.Table{}
	g.Expect(json.Unmarshal(body, table)).To(Succeed())
	return table
}
