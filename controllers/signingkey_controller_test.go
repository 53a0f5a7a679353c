package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
	"github.com/golang-jwt/jwt/v5"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"rotor.dev/rotor/pkg/keys"
)

const (
	period      = 24 * time.Hour
	prepublish  = time.Hour
	retireAfter = 2 * time.Hour
)

var t0 = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

// ts is how the controller stores t0+d.
func ts(d time.Duration) string { return keys.FormatTime(t0.Add(d)) }

func keyName(n int) string { return fmt.Sprintf("%s%d", GeneratedKeyPrefix, n) }

// eventLog records events as "secret Type Reason".
type eventLog struct {
	mu     sync.Mutex
	events []string
	notes  []string
}

var _ events.EventRecorder = &eventLog{}

func (l *eventLog) Eventf(regarding, _ runtime.Object, eventtype, reason, _, note string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, regarding.(client.Object).GetName()+" "+eventtype+" "+reason)
	l.notes = append(l.notes, fmt.Sprintf(note, args...))
}

// take returns the events recorded since the last take.
func (l *eventLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.events
	l.events, l.notes = nil, nil
	return out
}

func (l *eventLog) count(reason string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, e := range l.events {
		if strings.HasSuffix(e, " "+reason) {
			n++
		}
	}
	return n
}

func newReconciler(c client.Client, ns string, clk clock.PassiveClock, rec events.EventRecorder) *SigningKeyReconciler {
	return &SigningKeyReconciler{
		Client: c, Recorder: rec, Clock: clk, Namespace: ns,
		Algorithm: keys.ES256, RotationPeriod: period, Prepublish: prepublish, RetireAfter: retireAfter,
	}
}

var req = ctrl.Request{NamespacedName: types.NamespacedName{Name: keySetRequest}}

// keyView is a key Secret as kubectl shows it.
type keyView struct {
	State                         string
	Published, Activated, Retired string
	Rotate                        bool
}

// secretsIn reads the signing-key Secrets from the API server.
func secretsIn(g Gomega, ns string) map[string]corev1.Secret {
	var list corev1.SecretList
	g.Expect(env.Client.List(context.Background(), &list, client.InNamespace(ns))).To(Succeed())
	out := map[string]corev1.Secret{}
	for _, s := range list.Items {
		if s.Type == keys.SecretType {
			out[s.Name] = s
		}
	}
	return out
}

func viewOf(s corev1.Secret) keyView {
	_, rotate := s.Annotations[keys.RotateAnnotation]
	return keyView{
		State:     s.Labels[keys.StateLabel],
		Published: s.Annotations[keys.PublishedAtAnnotation],
		Activated: s.Annotations[keys.ActivatedAtAnnotation],
		Retired:   s.Annotations[keys.RetiredAtAnnotation],
		Rotate:    rotate,
	}
}

func viewIn(g Gomega, ns string) map[string]keyView {
	out := map[string]keyView{}
	for n, s := range secretsIn(g, ns) {
		out[n] = viewOf(s)
	}
	return out
}

func kidOf(g Gomega, s corev1.Secret) string {
	k, err := keys.FromSecret(&s)
	g.Expect(err).NotTo(HaveOccurred())
	return k.KID
}

// handMade stores a key Secret as an operator (or an earlier rotor) would.
type handMade struct {
	name          string
	state         keys.State
	pub, act, ret time.Duration // after t0; 0 = no annotation
	corrupt       bool
}

func (h handMade) create(t *testing.T, ns string) {
	t.Helper()
	k, err := keys.Generate(keys.ES256)
	if err != nil {
		t.Fatal(err)
	}
	k.State = h.state
	for _, f := range []struct {
		d  time.Duration
		to *time.Time
	}{{h.pub, &k.PublishedAt}, {h.act, &k.ActivatedAt}, {h.ret, &k.RetiredAt}} {
		if f.d != 0 {
			*f.to = t0.Add(f.d)
		}
	}
	sec, err := keys.NewSecret(ns, h.name, k)
	if err != nil {
		t.Fatal(err)
	}
	if h.state == keys.StateNew {
		sec.Annotations = nil // a platform team's Secret: type and data only
	}
	if h.corrupt {
		sec.Data[keys.DataKey] = []byte("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")
	}
	if err := env.Client.Create(context.Background(), sec); err != nil {
		t.Fatal(err)
	}
}

func TestSigningKeyFirstStart(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := env.Namespace(t)
	ev := &eventLog{}
	r := newReconciler(env.Client, ns, clocktesting.NewFakePassiveClock(t0), ev)

	res, err := r.Reconcile(ctx, req)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(res).To(Equal(ctrl.Result{RequeueAfter: period}))
	g.Expect(viewIn(g, ns)).To(Equal(map[string]keyView{
		keyName(1): {State: "active", Published: ts(0), Activated: ts(0)},
		keyName(2): {State: "next", Published: ts(0)},
	}))
	secs := secretsIn(g, ns)
	kid1, kid2 := kidOf(g, secs[keyName(1)]), kidOf(g, secs[keyName(2)])
	g.Expect(secs[keyName(1)].Annotations[keys.KIDAnnotation]).To(Equal(kid1))
	g.Expect(secs[keyName(2)].Annotations[keys.KIDAnnotation]).To(Equal(kid2))
	g.Expect(string(secs[keyName(1)].Data[keys.DataAlgorithm])).To(Equal("ES256"))
	g.Expect(ev.notes).To(Equal([]string{
		"Generated ES256 key " + kid1 + " as active",
		"Signing key " + kid1 + " is now active",
		"Generated ES256 key " + kid2 + " as next",
	}))
	g.Expect(ev.take()).To(Equal([]string{
		keyName(1) + " Normal KeyGenerated",
		keyName(1) + " Normal KeyActivated",
		keyName(2) + " Normal KeyGenerated",
	}))

	// Idempotent: a second reconcile writes nothing.
	res, err = r.Reconcile(ctx, req)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(res).To(Equal(ctrl.Result{RequeueAfter: period}))
	again := secretsIn(g, ns)
	for n, s := range secs {
		g.Expect(again[n].ResourceVersion).To(Equal(s.ResourceVersion), n)
	}
	g.Expect(again).To(HaveLen(2))
	g.Expect(ev.take()).To(BeEmpty())
}

func TestSigningKeyLifecycle(t *testing.T) {
	ns := env.Namespace(t)
	clk := clocktesting.NewFakePassiveClock(t0)
	ev := &eventLog{}
	r := newReconciler(env.Client, ns, clk, ev)
	ctx := context.Background()

	steps := []struct {
		name    string
		at      time.Duration
		do      func(g Gomega)
		want    map[string]keyView
		requeue time.Duration
		events  []string
	}{{
		name: "a first start creates an active key and a next key",
		at:   0,
		want: map[string]keyView{
			keyName(1): {State: "active", Published: ts(0), Activated: ts(0)},
			keyName(2): {State: "next", Published: ts(0)},
		},
		requeue: period,
		events:  []string{keyName(1) + " Normal KeyGenerated", keyName(1) + " Normal KeyActivated", keyName(2) + " Normal KeyGenerated"},
	}, {
		name: "a second before the rotation period nothing changes",
		at:   period - time.Second,
		want: map[string]keyView{
			keyName(1): {State: "active", Published: ts(0), Activated: ts(0)},
			keyName(2): {State: "next", Published: ts(0)},
		},
		requeue: time.Second,
	}, {
		name: "at the rotation period the next key signs, the old one retires and a new next key is published",
		at:   period,
		want: map[string]keyView{
			keyName(1): {State: "retired", Published: ts(0), Activated: ts(0), Retired: ts(period)},
			keyName(2): {State: "active", Published: ts(0), Activated: ts(period)},
			keyName(3): {State: "next", Published: ts(period)},
		},
		requeue: retireAfter,
		events:  []string{keyName(2) + " Normal KeyActivated", keyName(1) + " Normal KeyRetired", keyName(3) + " Normal KeyGenerated"},
	}, {
		name: "a retired key stays published until retire-after has passed",
		at:   period + retireAfter - time.Second,
		want: map[string]keyView{
			keyName(1): {State: "retired", Published: ts(0), Activated: ts(0), Retired: ts(period)},
			keyName(2): {State: "active", Published: ts(0), Activated: ts(period)},
			keyName(3): {State: "next", Published: ts(period)},
		},
		requeue: time.Second,
	}, {
		name: "once retire-after has passed the retired key is deleted",
		at:   period + retireAfter,
		want: map[string]keyView{
			keyName(2): {State: "active", Published: ts(0), Activated: ts(period)},
			keyName(3): {State: "next", Published: ts(period)},
		},
		requeue: period - retireAfter,
		events:  []string{keyName(1) + " Normal KeyDeleted"},
	}, {
		name: "the next rotation comes a rotation period after the last activation",
		at:   2 * period,
		want: map[string]keyView{
			keyName(2): {State: "retired", Published: ts(0), Activated: ts(period), Retired: ts(2 * period)},
			keyName(3): {State: "active", Published: ts(period), Activated: ts(2 * period)},
			keyName(4): {State: "next", Published: ts(2 * period)},
		},
		requeue: retireAfter,
		events:  []string{keyName(3) + " Normal KeyActivated", keyName(2) + " Normal KeyRetired", keyName(4) + " Normal KeyGenerated"},
	}, {
		name: "a rotation asked for before the next key has been published for the prepublish time waits for it",
		at:   2*period + 15*time.Minute,
		do: func(g Gomega) {
			s := secretsIn(g, ns)[keyName(3)]
			s.Annotations[keys.RotateAnnotation] = "please"
			g.Expect(env.Client.Update(ctx, &s)).To(Succeed())
		},
		want: map[string]keyView{
			keyName(2): {State: "retired", Published: ts(0), Activated: ts(period), Retired: ts(2 * period)},
			keyName(3): {State: "active", Published: ts(period), Activated: ts(2 * period), Rotate: true},
			keyName(4): {State: "next", Published: ts(2 * period)},
		},
		requeue: 45 * time.Minute,
	}, {
		name: "the asked-for rotation happens once the next key may sign, and the request is removed",
		at:   2*period + prepublish,
		want: map[string]keyView{
			keyName(2): {State: "retired", Published: ts(0), Activated: ts(period), Retired: ts(2 * period)},
			keyName(3): {State: "retired", Published: ts(period), Activated: ts(2 * period), Retired: ts(2*period + prepublish)},
			keyName(4): {State: "active", Published: ts(2 * period), Activated: ts(2*period + prepublish)},
			keyName(5): {State: "next", Published: ts(2*period + prepublish)},
		},
		requeue: retireAfter - prepublish,
		events:  []string{keyName(4) + " Normal KeyActivated", keyName(3) + " Normal KeyRetired", keyName(5) + " Normal KeyGenerated"},
	}, {
		name: "retired keys are deleted each at its own time (first)",
		at:   2*period + retireAfter,
		want: map[string]keyView{
			keyName(3): {State: "retired", Published: ts(period), Activated: ts(2 * period), Retired: ts(2*period + prepublish)},
			keyName(4): {State: "active", Published: ts(2 * period), Activated: ts(2*period + prepublish)},
			keyName(5): {State: "next", Published: ts(2*period + prepublish)},
		},
		requeue: prepublish,
		events:  []string{keyName(2) + " Normal KeyDeleted"},
	}, {
		name: "retired keys are deleted each at its own time (second)",
		at:   2*period + prepublish + retireAfter,
		want: map[string]keyView{
			keyName(4): {State: "active", Published: ts(2 * period), Activated: ts(2*period + prepublish)},
			keyName(5): {State: "next", Published: ts(2*period + prepublish)},
		},
		requeue: period - retireAfter,
		events:  []string{keyName(3) + " Normal KeyDeleted"},
	}}
	for _, s := range steps {
		if !t.Run(s.name, func(t *testing.T) {
			g := NewWithT(t)
			clk.SetTime(t0.Add(s.at))
			if s.do != nil {
				s.do(g)
			}
			res, err := r.Reconcile(ctx, req)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(res).To(Equal(ctrl.Result{RequeueAfter: s.requeue}))
			g.Expect(viewIn(g, ns)).To(Equal(s.want))
			g.Expect(ev.take()).To(Equal(s.events))
		}) {
			break
		}
	}
}

func TestSigningKeyRepairs(t *testing.T) {
	const now = 100 * time.Hour
	for name, tc := range map[string]struct {
		given   []handMade
		want    map[string]keyView
		requeue time.Duration
		events  []string
	}{
		"a deleted active key is replaced by the next key at once, before its prepublish time": {
			given: []handMade{
				{name: keyName(1), state: keys.StateRetired, pub: 70 * time.Hour, act: 70 * time.Hour, ret: 99 * time.Hour},
				{name: keyName(2), state: keys.StateNext, pub: now - 10*time.Minute},
			},
			want: map[string]keyView{
				keyName(1): {State: "retired", Published: ts(70 * time.Hour), Activated: ts(70 * time.Hour), Retired: ts(99 * time.Hour)},
				keyName(2): {State: "active", Published: ts(now - 10*time.Minute), Activated: ts(now)},
				keyName(3): {State: "next", Published: ts(now)},
			},
			requeue: time.Hour, // keyName(1) is deleted at 101h
			events:  []string{keyName(2) + " Normal KeyActivated", keyName(2) + " Warning ActiveKeyMissing", keyName(3) + " Normal KeyGenerated"},
		},
		"without an active or a next key, a new key signs at once": {
			given: []handMade{{name: keyName(1), state: keys.StateRetired, pub: 70 * time.Hour, act: 70 * time.Hour, ret: 99 * time.Hour}},
			want: map[string]keyView{
				keyName(1): {State: "retired", Published: ts(70 * time.Hour), Activated: ts(70 * time.Hour), Retired: ts(99 * time.Hour)},
				keyName(2): {State: "active", Published: ts(now), Activated: ts(now)},
				keyName(3): {State: "next", Published: ts(now)},
			},
			requeue: time.Hour,
			events:  []string{keyName(2) + " Normal KeyGenerated", keyName(2) + " Normal KeyActivated", keyName(2) + " Warning ActiveKeyMissing", keyName(3) + " Normal KeyGenerated"},
		},
		"of two active keys the later activation keeps signing and the other is retired": {
			given: []handMade{
				{name: keyName(1), state: keys.StateActive, pub: 90 * time.Hour, act: 95 * time.Hour},
				{name: keyName(2), state: keys.StateActive, pub: 80 * time.Hour, act: 90 * time.Hour},
				{name: keyName(3), state: keys.StateNext, pub: 95 * time.Hour},
			},
			want: map[string]keyView{
				keyName(1): {State: "active", Published: ts(90 * time.Hour), Activated: ts(95 * time.Hour)},
				keyName(2): {State: "retired", Published: ts(80 * time.Hour), Activated: ts(90 * time.Hour), Retired: ts(now)},
				keyName(3): {State: "next", Published: ts(95 * time.Hour)},
			},
			requeue: retireAfter,
			events:  []string{keyName(2) + " Normal KeyRetired"},
		},
		"of two keys activated at the same time the greater name keeps signing": {
			given: []handMade{
				{name: "a-key", state: keys.StateActive, pub: 90 * time.Hour, act: 95 * time.Hour},
				{name: "b-key", state: keys.StateActive, pub: 90 * time.Hour, act: 95 * time.Hour},
				{name: keyName(1), state: keys.StateNext, pub: 95 * time.Hour},
			},
			want: map[string]keyView{
				"a-key":    {State: "retired", Published: ts(90 * time.Hour), Activated: ts(95 * time.Hour), Retired: ts(now)},
				"b-key":    {State: "active", Published: ts(90 * time.Hour), Activated: ts(95 * time.Hour)},
				keyName(1): {State: "next", Published: ts(95 * time.Hour)},
			},
			requeue: retireAfter,
			events:  []string{"a-key Normal KeyRetired"},
		},
		"a bring-your-own key is adopted as the next key, so no other is generated": {
			given: []handMade{
				{name: keyName(1), state: keys.StateActive, pub: 99 * time.Hour, act: 99 * time.Hour},
				{name: "platform-key", state: keys.StateNew},
			},
			want: map[string]keyView{
				keyName(1):     {State: "active", Published: ts(99 * time.Hour), Activated: ts(99 * time.Hour)},
				"platform-key": {State: "next", Published: ts(now)},
			},
			requeue: 23 * time.Hour,
			events:  []string{"platform-key Normal KeyAdopted"},
		},
		"a key retired by hand without a time counts from now, so it is not deleted at once": {
			given: []handMade{
				{name: keyName(1), state: keys.StateRetired},
				{name: keyName(2), state: keys.StateActive, pub: 99 * time.Hour, act: 99 * time.Hour},
				{name: keyName(3), state: keys.StateNext, pub: 99 * time.Hour},
			},
			want: map[string]keyView{
				keyName(1): {State: "retired", Published: ts(now), Retired: ts(now)},
				keyName(2): {State: "active", Published: ts(99 * time.Hour), Activated: ts(99 * time.Hour)},
				keyName(3): {State: "next", Published: ts(99 * time.Hour)},
			},
			requeue: retireAfter,
		},
		"of two next keys the first published is promoted and none is generated": {
			given: []handMade{
				{name: keyName(1), state: keys.StateActive, pub: 70 * time.Hour, act: now - period},
				{name: keyName(2), state: keys.StateNext, pub: 90 * time.Hour},
				{name: keyName(3), state: keys.StateNext, pub: 80 * time.Hour},
			},
			want: map[string]keyView{
				keyName(1): {State: "retired", Published: ts(70 * time.Hour), Activated: ts(now - period), Retired: ts(now)},
				keyName(2): {State: "next", Published: ts(90 * time.Hour)},
				keyName(3): {State: "active", Published: ts(80 * time.Hour), Activated: ts(now)},
			},
			requeue: retireAfter,
			events:  []string{keyName(3) + " Normal KeyActivated", keyName(1) + " Normal KeyRetired"},
		},
		"a due rotation never promotes a next key published less than the prepublish time ago": {
			given: []handMade{
				{name: keyName(1), state: keys.StateActive, pub: 70 * time.Hour, act: now - period - time.Hour},
				{name: keyName(2), state: keys.StateNext, pub: now - 20*time.Minute},
			},
			want: map[string]keyView{
				keyName(1): {State: "active", Published: ts(70 * time.Hour), Activated: ts(now - period - time.Hour)},
				keyName(2): {State: "next", Published: ts(now - 20*time.Minute)},
			},
			requeue: 40 * time.Minute,
		},
		"an unusable key gets a warning, is left as it is, and still holds its generated name": {
			given: []handMade{
				{name: keyName(1), state: keys.StateActive, pub: 99 * time.Hour, act: 99 * time.Hour},
				{name: keyName(7), state: keys.StateNext, pub: 90 * time.Hour, corrupt: true},
			},
			want: map[string]keyView{
				keyName(1): {State: "active", Published: ts(99 * time.Hour), Activated: ts(99 * time.Hour)},
				keyName(7): {State: "next", Published: ts(90 * time.Hour)},
				keyName(8): {State: "next", Published: ts(now)},
			},
			requeue: 23 * time.Hour,
			events:  []string{keyName(7) + " Warning KeyInvalid", keyName(8) + " Normal KeyGenerated"},
		},
	} {
		t.Run(name, func(t *testing.T) {
			g := NewWithT(t)
			ns := env.Namespace(t)
			for _, h := range tc.given {
				h.create(t, ns)
			}
			before := secretsIn(g, ns)
			ev := &eventLog{}
			r := newReconciler(env.Client, ns, clocktesting.NewFakePassiveClock(t0.Add(now)), ev)
			res, err := r.Reconcile(context.Background(), req)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(res).To(Equal(ctrl.Result{RequeueAfter: tc.requeue}))
			after := secretsIn(g, ns)
			views := map[string]keyView{}
			for n, s := range after {
				views[n] = viewOf(s)
				if b, ok := before[n]; ok {
					g.Expect(s.UID).To(Equal(b.UID), "%s was replaced", n)
					g.Expect(s.Data).To(Equal(b.Data), "%s's key changed", n)
				}
				if k, err := keys.FromSecret(&s); err == nil {
					g.Expect(s.Annotations[keys.KIDAnnotation]).To(Equal(k.KID), n)
				}
			}
			g.Expect(views).To(Equal(tc.want))
			g.Expect(ev.take()).To(Equal(tc.events))
		})
	}
}

// startCache starts a cache of ns's signing keys, as the manager's would be.
func startCache(t *testing.T, ctx context.Context, ns string) cache.Cache {
	t.Helper()
	c, err := cache.New(env.Config, cache.Options{
		Scheme:   env.Scheme,
		ByObject: map[client.Object]cache.ByObject{&corev1.Secret{}: keys.CacheByObject(ns)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetInformer(ctx, &corev1.Secret{}); err != nil {
		t.Fatal(err)
	}
	go func() { _ = c.Start(ctx) }()
	if !c.WaitForCacheSync(ctx) {
		t.Fatal("cache did not sync")
	}
	return c
}

// verify checks a JWT against a JWKS with go-jose, which rotor does not
// otherwise use, at time now.
func verify(jwksBody []byte, token string, alg keys.Algorithm, now time.Time) error {
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(jwksBody, &set); err != nil {
		return err
	}
	tok, err := josejwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.SignatureAlgorithm(alg)})
	if err != nil {
		return err
	}
	var claims josejwt.Claims
	if err := tok.Claims(set, &claims); err != nil {
		return err
	}
	return claims.ValidateWithLeeway(josejwt.Expected{Time: now}, 0)
}

func TestTokenSignedBeforeRotationVerifiesUntilItExpires(t *testing.T) {
	const (
		ttl  = 10 * time.Minute
		skew = time.Minute
	)
	for name, tc := range map[string]struct {
		alg    keys.Algorithm
		method jwt.SigningMethod
	}{
		"an ES256 token": {keys.ES256, jwt.SigningMethodES256},
		"an EdDSA token": {keys.EdDSA, jwt.SigningMethodEdDSA},
		"an RS256 token": {keys.RS256, jwt.SigningMethodRS256},
	} {
		t.Run(name+" signed just before a rotation verifies against the JWKS until it expires", func(t *testing.T) {
			g := NewWithT(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			ns := env.Namespace(t)
			clk := clocktesting.NewFakePassiveClock(t0)
			r := newReconciler(env.Client, ns, clk, &eventLog{})
			r.Algorithm, r.RetireAfter = tc.alg, ttl+skew
			set := keys.NewSet()
			g.Expect(set.Watch(ctx, startCache(t, ctx, ns), ns)).To(Succeed())
			step := func(at time.Duration) {
				clk.SetTime(t0.Add(at))
				_, err := r.Reconcile(ctx, req)
				g.Expect(err).NotTo(HaveOccurred())
			}
			activeKID := func() string {
				k, ok := set.Active()
				if !ok {
					return ""
				}
				return k.KID
			}

			step(0)
			secs := secretsIn(g, ns)
			kid1, kid2 := kidOf(g, secs[keyName(1)]), kidOf(g, secs[keyName(2)])
			g.Eventually(activeKID).WithTimeout(10 * time.Second).Should(Equal(kid1))

			// The issuer signs with the Set's active key one second before
			// the rotation.
			signedAt := t0.Add(period - time.Second)
			clk.SetTime(signedAt)
			k, _ := set.Active()
			tok := jwt.NewWithClaims(tc.method, jwt.MapClaims{
				"iss": "https://rotor.example", "sub": "alice",
				"iat": signedAt.Unix(), "exp": signedAt.Add(ttl).Unix(),
			})
			tok.Header["kid"], tok.Header["typ"] = k.KID, "at+jwt"
			signed, err := tok.SignedString(k.Signer)
			g.Expect(err).NotTo(HaveOccurred())
			body, _ := set.JWKS()
			g.Expect(verify(body, signed, tc.alg, signedAt)).To(Succeed())

			step(period)
			g.Eventually(activeKID).WithTimeout(10 * time.Second).Should(Equal(kid2))
			body, _ = set.JWKS()
			g.Expect(verify(body, signed, tc.alg, t0.Add(period))).To(Succeed())

			// The last second of the token's life: its key is still published.
			lastSecond := signedAt.Add(ttl - time.Second)
			step(lastSecond.Sub(t0))
			g.Expect(secretsIn(g, ns)).To(HaveKey(keyName(1)))
			body, _ = set.JWKS()
			g.Expect(verify(body, signed, tc.alg, lastSecond)).To(Succeed())

			// After retire-after the key is gone, and so is the token's life.
			step(period + ttl + skew)
			g.Expect(secretsIn(g, ns)).NotTo(HaveKey(keyName(1)))
			g.Eventually(func() bool { _, ok := set.Lookup(kid1); return ok }).WithTimeout(10 * time.Second).Should(BeFalse())
			body, _ = set.JWKS()
			g.Expect(verify(body, signed, tc.alg, signedAt)).To(MatchError(jose.ErrJWKSKidNotFound))
			g.Expect(signedAt.Add(ttl).Before(t0.Add(period + ttl + skew))).To(BeTrue())
		})
	}
}

func TestTwoReconcilersRacingSettleOnOneActiveKey(t *testing.T) {
	g := NewWithT(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ns := env.Namespace(t)
	clk := clocktesting.NewFakePassiveClock(t0)
	ev := &eventLog{}
	// Each racer reads from its own cache, as two replicas do, so each may
	// act on a stale view.
	racers := make([]*SigningKeyReconciler, 2)
	for i := range racers {
		c, err := client.New(env.Config, client.Options{Scheme: env.Scheme, Cache: &client.CacheOptions{Reader: startCache(t, ctx, ns)}})
		g.Expect(err).NotTo(HaveOccurred())
		racers[i] = newReconciler(c, ns, clk, ev)
		racers[i].Prepublish, racers[i].RetireAfter = 30*time.Minute, 45*time.Minute
	}
	set := keys.NewSet()
	g.Expect(set.Watch(ctx, startCache(t, ctx, ns), ns)).To(Succeed())

	// The Set must show an active key at every moment once it had one.
	var sawActive atomic.Bool
	var gaps atomic.Int64
	samplerDone := make(chan struct{})
	go func() {
		defer close(samplerDone)
		for ctx.Err() == nil {
			if _, ok := set.Active(); ok {
				sawActive.Store(true)
			} else if sawActive.Load() {
				gaps.Add(1)
			}
			time.Sleep(200 * time.Microsecond)
		}
	}()

	race := func() (conflicts int64) {
		var wg sync.WaitGroup
		var n atomic.Int64
		for _, r := range racers {
			wg.Go(func() {
				for range 4 {
					res, err := r.Reconcile(ctx, req)
					if err != nil {
						t.Errorf("a lost write race is not an error: %v", err)
					}
					if res.RequeueAfter == lostRaceRetry {
						n.Add(1)
					}
				}
			})
		}
		wg.Wait()
		return n.Load()
	}
	// settle reconciles with both racers until neither fails nor writes.
	settle := func() map[string]corev1.Secret {
		var last map[string]corev1.Secret
		g.Eventually(func(g Gomega) {
			before := secretsIn(g, ns)
			for _, r := range racers {
				_, err := r.Reconcile(ctx, req)
				g.Expect(err).NotTo(HaveOccurred())
			}
			after := secretsIn(g, ns)
			g.Expect(after).To(HaveLen(len(before)))
			for n, s := range after {
				g.Expect(s.ResourceVersion).To(Equal(before[n].ResourceVersion))
			}
			last = after
		}).WithTimeout(30 * time.Second).WithPolling(50 * time.Millisecond).Should(Succeed())
		return last
	}
	byState := func(secs map[string]corev1.Secret) map[string][]string {
		out := map[string][]string{}
		for n, s := range secs {
			st := s.Labels[keys.StateLabel]
			out[st] = append(out[st], n)
		}
		return out
	}

	var conflicts int64
	var prevActive, prevNext string
	const iterations = 12
	for i := range iterations {
		// Even iterations: the rotation period passes. Odd ones: only the
		// prepublish time, with a rotation asked for on the active key.
		at := time.Duration(i/2)*(period+time.Hour) + time.Duration(i%2)*time.Hour
		clk.SetTime(t0.Add(at))
		if i%2 == 1 {
			s := secretsIn(g, ns)[prevActive]
			s.Annotations[keys.RotateAnnotation] = ""
			g.Expect(env.Client.Update(ctx, &s)).To(Succeed())
		}
		conflicts += race()
		secs := settle()
		states := byState(secs)
		g.Expect(states["active"]).To(HaveLen(1), "iteration %d: %v", i, states)
		g.Expect(states["next"]).To(HaveLen(1), "iteration %d: %v", i, states)
		active, next := states["active"][0], states["next"][0]
		if i == 0 {
			g.Expect(states).To(HaveLen(2))
		} else {
			// The key that signed is retired, still published; the one that
			// signs now was published as next before this iteration; the key
			// retired the iteration before is gone.
			g.Expect(states).To(Equal(map[string][]string{"active": {prevNext}, "next": {next}, "retired": {prevActive}}), "iteration %d", i)
			g.Expect(secs[prevActive].Annotations).NotTo(HaveKey(keys.RotateAnnotation))
		}
		wantKIDs := []string{}
		for _, s := range secs {
			wantKIDs = append(wantKIDs, kidOf(g, s))
		}
		slices.Sort(wantKIDs)
		activeKID := kidOf(g, secs[active])
		g.Eventually(func(g Gomega) {
			k, ok := set.Active()
			g.Expect(ok).To(BeTrue())
			g.Expect(k.KID).To(Equal(activeKID))
			var jwks struct {
				Keys []struct {
					Kid string `json:"kid"`
				} `json:"keys"`
			}
			body, _ := set.JWKS()
			g.Expect(json.Unmarshal(body, &jwks)).To(Succeed())
			var kids []string
			for _, k := range jwks.Keys {
				kids = append(kids, k.Kid)
			}
			g.Expect(kids).To(Equal(wantKIDs))
		}).WithTimeout(10 * time.Second).Should(Succeed())
		prevActive, prevNext = active, next
	}
	cancel()
	<-samplerDone
	t.Logf("%d iterations, %d reconciles lost a write race", iterations, conflicts)
	g.Expect(gaps.Load()).To(BeZero(), "the Set had no active key at some moment")
	g.Expect(ev.count(ReasonActiveKeyMissing)).To(BeZero(), "a racer saw no active key")
	g.Expect(ev.count(ReasonKeyGenerated)).To(Equal(iterations + 1))
	g.Expect(ev.count(ReasonKeyActivated)).To(Equal(iterations))
	g.Expect(ev.count(ReasonKeyRetired)).To(Equal(iterations - 1))
	g.Expect(ev.count(ReasonKeyDeleted)).To(Equal(iterations - 2))
}

func TestManagerAdoptsBringYourOwnKeyAndWarnsOfACorruptOne(t *testing.T) {
	g := NewWithT(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ns := env.Namespace(t)
	clk := clocktesting.NewFakePassiveClock(t0)

	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{
		Scheme:                 env.Scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  cache.Options{ByObject: map[client.Object]cache.ByObject{&corev1.Secret{}: keys.CacheByObject(ns)}},
		// Several tests build a manager with the same controller name.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	g.Expect(err).NotTo(HaveOccurred())
	r := newReconciler(mgr.GetClient(), ns, clk, nil) // the manager's events.k8s.io recorder
	g.Expect(r.SetupWithManager(mgr)).To(Succeed())
	set := keys.NewSet()
	g.Expect(set.Watch(ctx, mgr.GetCache(), ns)).To(Succeed())
	mgrDone := make(chan error)
	go func() { mgrDone <- mgr.Start(ctx) }()
	defer func() { cancel(); g.Expect(<-mgrDone).To(Succeed()) }()

	g.Eventually(func(g Gomega) {
		g.Expect(viewIn(g, ns)).To(Equal(map[string]keyView{
			keyName(1): {State: "active", Published: ts(0), Activated: ts(0)},
			keyName(2): {State: "next", Published: ts(0)},
		}))
	}).WithTimeout(20 * time.Second).Should(Succeed())
	g.Eventually(func() error { return set.ReadyCheck(nil) }).WithTimeout(10 * time.Second).Should(Succeed())

	// A platform team brings its own key; someone stores a corrupt one.
	clk.SetTime(t0.Add(10 * time.Minute))
	handMade{name: "platform-key", state: keys.StateNew}.create(t, ns)
	handMade{name: "corrupt-key", state: keys.StateActive, pub: time.Minute, act: time.Hour, corrupt: true}.create(t, ns)
	corruptBefore := secretsIn(g, ns)["corrupt-key"]

	g.Eventually(func(g Gomega) {
		g.Expect(viewIn(g, ns)).To(HaveKeyWithValue("platform-key", keyView{State: "next", Published: ts(10 * time.Minute)}))
	}).WithTimeout(10 * time.Second).Should(Succeed())
	platformKID := kidOf(g, secretsIn(g, ns)["platform-key"])
	g.Expect(secretsIn(g, ns)["platform-key"].Annotations[keys.KIDAnnotation]).To(Equal(platformKID))

	warning := func(g Gomega) []eventsv1.Event {
		var list eventsv1.EventList
		g.Expect(env.Client.List(ctx, &list, client.InNamespace(ns))).To(Succeed())
		var out []eventsv1.Event
		for _, e := range list.Items {
			if e.Type == corev1.EventTypeWarning {
				out = append(out, e)
			}
		}
		return out
	}
	g.Eventually(func(g Gomega) {
		ws := warning(g)
		g.Expect(ws).NotTo(BeEmpty())
		for _, e := range ws {
			g.Expect(e.Reason).To(Equal(ReasonKeyInvalid))
			g.Expect(e.Regarding.Name).To(Equal("corrupt-key"))
			g.Expect(e.Regarding.Kind).To(Equal("Secret"))
			g.Expect(e.ReportingController).To(Equal("rotor-signing-keys"))
			g.Expect(e.Note).To(ContainSubstring("Signing key is not usable and is ignored"))
		}
	}).WithTimeout(10 * time.Second).Should(Succeed())

	// Rotations asked for twice, once the keys have been published long
	// enough: the next keys are promoted in the order they were published.
	rotate := func(secret string) {
		s := secretsIn(g, ns)[secret]
		s.Annotations[keys.RotateAnnotation] = "now"
		g.Expect(env.Client.Update(ctx, &s)).To(Succeed())
	}
	clk.SetTime(t0.Add(10*time.Minute + prepublish))
	rotate(keyName(1))
	g.Eventually(func(g Gomega) {
		g.Expect(viewIn(g, ns)).To(Equal(map[string]keyView{
			keyName(1):     {State: "retired", Published: ts(0), Activated: ts(0), Retired: ts(10*time.Minute + prepublish)},
			keyName(2):     {State: "active", Published: ts(0), Activated: ts(10*time.Minute + prepublish)},
			"platform-key": {State: "next", Published: ts(10 * time.Minute)},
			"corrupt-key":  viewOf(corruptBefore),
		}))
	}).WithTimeout(10 * time.Second).Should(Succeed())
	rotate(keyName(2))
	g.Eventually(func(g Gomega) {
		g.Expect(viewIn(g, ns)).To(Equal(map[string]keyView{
			keyName(1):     {State: "retired", Published: ts(0), Activated: ts(0), Retired: ts(10*time.Minute + prepublish)},
			keyName(2):     {State: "retired", Published: ts(0), Activated: ts(10*time.Minute + prepublish), Retired: ts(10*time.Minute + prepublish)},
			"platform-key": {State: "active", Published: ts(10 * time.Minute), Activated: ts(10*time.Minute + prepublish + time.Second)},
			keyName(3):     {State: "next", Published: ts(10*time.Minute + prepublish)},
			"corrupt-key":  viewOf(corruptBefore),
		}))
	}).WithTimeout(10 * time.Second).Should(Succeed())

	g.Eventually(func() string { k, _ := set.Active(); return k.KID }).WithTimeout(10 * time.Second).Should(Equal(platformKID))
	g.Expect(secretsIn(g, ns)["corrupt-key"].ResourceVersion).To(Equal(corruptBefore.ResourceVersion))
	body, _ := set.JWKS()
	var jwks struct {
		Keys []map[string]any `json:"keys"`
	}
	g.Expect(json.Unmarshal(body, &jwks)).To(Succeed())
	g.Expect(jwks.Keys).To(HaveLen(4)) // name(1..3) and platform-key; never corrupt-key
	g.Expect(set.Algorithms()).To(Equal([]keys.Algorithm{keys.ES256}))
}
