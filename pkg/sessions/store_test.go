package sessions_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/tools/events"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	identityv1alpha1 "rotor.dev/rotor/api/v1alpha1"
	"rotor.dev/rotor/pkg/dev/testenv"
	"rotor.dev/rotor/pkg/sessions"
)

var env *testenv.Env

func TestMain(m *testing.M) { testenv.Main(m, &env) }

// lostAnswer makes the next Update reach the API server and then fail as if
// the connection had dropped before the answer came back.
type lostAnswer struct {
	armed   atomic.Bool
	updates atomic.Int32
}

func (l *lostAnswer) client() client.Client {
	return interceptor.NewClient(env.Client, interceptor.Funcs{
		Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			l.updates.Add(1)
			err := c.Update(ctx, obj, opts...)
			if err == nil && l.armed.CompareAndSwap(true, false) {
				return &net.OpError{Op: "read", Net: "tcp", Err: errors.New("connection reset by peer")}
			}
			return err
		},
	})
}

func TestARotationWhoseAnswerWasLostIsHandedOutOnRetry(t *testing.T) {
	g := NewWithT(t)
	ns := env.Namespace(t)
	clock := clocktesting.NewFakeClock(time.Now().Truncate(time.Second))
	fault := &lostAnswer{}
	store, err := sessions.NewStore(fault.client(), sessions.Config{
		Namespace: ns, RefreshTTL: time.Hour, MaxLifetime: 24 * time.Hour, CacheSize: 10, Clock: clock, ReuseGrace: 0, Timeout: 5 * time.Second,
	})
	g.Expect(err).NotTo(HaveOccurred())
	ctx := context.Background()
	first, _ := passwordSession(t, store, "sam")

	fault.armed.Store(true)
	_, _, err = store.Rotate(ctx, first, sessions.Refresh{})
	g.Expect(errors.Is(err, sessions.ErrUnavailable)).To(BeTrue(), "the client is told to retry: %v", err)

	// The write landed; the client retries with the token it still has.
	clock.Step(time.Minute)
	before := fault.updates.Load()
	second, rt, err := store.Rotate(ctx, first, sessions.Refresh{})
	g.Expect(err).NotTo(HaveOccurred(), "not a replay: the client never received the new token")
	g.Expect(fault.updates.Load()).To(Equal(before), "the stored token is handed out without another write")
	g.Expect(rt.Spec.State).To(Equal(identityv1alpha1.SessionActive))
	g.Expect(rt.Spec.Session.Rotations).To(BeEquivalentTo(1))

	// Exactly once: the old token is now a replay (grace 0 revokes).
	third, _, err := store.Rotate(ctx, second, sessions.Refresh{})
	g.Expect(err).NotTo(HaveOccurred())
	_, _, err = store.Rotate(ctx, first, sessions.Refresh{})
	g.Expect(sessions.ReasonOf(err)).To(Equal(sessions.ReasonMismatch), "two rotations back is simply unknown")
	_, _, err = store.Rotate(ctx, second, sessions.Refresh{})
	g.Expect(sessions.ReasonOf(err)).To(Equal(sessions.ReasonReuse))
	_, _, err = store.Rotate(ctx, third, sessions.Refresh{})
	g.Expect(sessions.ReasonOf(err)).To(Equal(sessions.ReasonRevoked))
}

func TestARotationThatDidNotLandIsRetriedNormally(t *testing.T) {
	g := NewWithT(t)
	ns := env.Namespace(t)
	store, err := sessions.NewStore(interceptor.NewClient(env.Client, interceptor.Funcs{
		Update: func(context.Context, client.WithWatch, client.Object, ...client.UpdateOption) error {
			return &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}
		},
	}), sessions.Config{Namespace: ns, RefreshTTL: time.Hour, MaxLifetime: 24 * time.Hour, CacheSize: 10, Timeout: 5 * time.Second})
	g.Expect(err).NotTo(HaveOccurred())
	ctx := context.Background()
	first, _ := passwordSession(t, store, "sue")
	_, _, err = store.Rotate(ctx, first, sessions.Refresh{})
	g.Expect(errors.Is(err, sessions.ErrUnavailable)).To(BeTrue())

	rt := &identityv1alpha1.RefreshToken{}
	name, _, _ := sessions.ParseToken(first)
	g.Expect(env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, rt)).To(Succeed())
	g.Expect(rt.Spec.Session.Rotations).To(BeEquivalentTo(0), "nothing was written")
}

func TestEvictKeepsANewerEntry(t *testing.T) {
	g := NewWithT(t)
	ns := env.Namespace(t)
	counter := &atomic.Int32{}
	store, err := sessions.NewStore(interceptor.NewClient(env.Client, interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			counter.Add(1)
			return c.Get(ctx, key, obj, opts...)
		},
	}), sessions.Config{Namespace: ns, RefreshTTL: time.Hour, MaxLifetime: 24 * time.Hour, CacheSize: 10, Timeout: 5 * time.Second})
	g.Expect(err).NotTo(HaveOccurred())
	ctx := context.Background()
	tok, created := passwordSession(t, store, "vic")
	tok, _, err = store.Rotate(ctx, tok, sessions.Refresh{})
	g.Expect(err).NotTo(HaveOccurred())

	// The create's watch event arrives late, after the rotation was cached.
	store.Evict(created.Name, created.ResourceVersion)
	tok, _, err = store.Rotate(ctx, tok, sessions.Refresh{})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(counter.Load()).To(BeZero(), "a late event does not evict a newer entry")

	// A deletion always evicts: the next refresh reads.
	store.Evict(created.Name, "")
	_, _, err = store.Rotate(ctx, tok, sessions.Refresh{})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(counter.Load()).To(BeEquivalentTo(1))
}

// A Prepare that asks for a revocation (the account is gone) ends the
// session with one conditional write; later refreshes are refused as
// revoked without another.
func TestAPrepareThatAsksForARevocationRevokesTheSession(t *testing.T) {
	g := NewWithT(t)
	ns := env.Namespace(t)
	counter := &atomic.Int32{}
	recorder := events.NewFakeRecorder(10)
	store, err := sessions.NewStore(interceptor.NewClient(env.Client, interceptor.Funcs{
		Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			counter.Add(1)
			return c.Update(ctx, obj, opts...)
		},
	}), sessions.Config{Namespace: ns, RefreshTTL: time.Hour, MaxLifetime: 24 * time.Hour, CacheSize: 10, Timeout: 5 * time.Second, Recorder: recorder})
	g.Expect(err).NotTo(HaveOccurred())
	ctx := context.Background()
	tok, created := passwordSession(t, store, "wes")

	gone := func(*identityv1alpha1.RefreshTokenSpec) error {
		return &sessions.RevokeError{Reason: identityv1alpha1.RevocationAccountDisabled}
	}
	_, _, err = store.Rotate(ctx, tok, sessions.Refresh{Prepare: gone})
	g.Expect(sessions.ReasonOf(err)).To(Equal(sessions.ReasonAccountDisabled))
	g.Expect(counter.Load()).To(BeEquivalentTo(1))
	rt := &identityv1alpha1.RefreshToken{}
	g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(created), rt)).To(Succeed())
	g.Expect(rt.Spec.State).To(Equal(identityv1alpha1.SessionRevoked))
	g.Expect(rt.Spec.Session.RevocationReason).To(Equal(identityv1alpha1.RevocationAccountDisabled))
	g.Expect(rt.Spec.Session.Rotations).To(BeZero(), "nothing was rotated")
	g.Expect(recorder.Events).To(Receive(ContainSubstring(sessions.ReasonRevokedAtRefresh)))

	_, _, err = store.Rotate(ctx, tok, sessions.Refresh{})
	g.Expect(sessions.ReasonOf(err)).To(Equal(sessions.ReasonRevoked))
	_, err = store.Lookup(ctx, tok)
	g.Expect(sessions.ReasonOf(err)).To(Equal(sessions.ReasonRevoked))
	g.Expect(counter.Load()).To(BeEquivalentTo(1), "no further write")
}

// Any other Prepare error is returned unchanged and writes nothing.
func TestAPrepareErrorWritesNothing(t *testing.T) {
	g := NewWithT(t)
	ns := env.Namespace(t)
	store := plainStore(t, ns)
	ctx := context.Background()
	tok, created := passwordSession(t, store, "xan")
	boom := errors.New("no signing key")
	_, _, err := store.Rotate(ctx, tok, sessions.Refresh{Prepare: func(*identityv1alpha1.RefreshTokenSpec) error { return boom }})
	g.Expect(err).To(BeIdenticalTo(boom))
	_, _, err = store.Rotate(ctx, tok, sessions.Refresh{Prepare: func(*identityv1alpha1.RefreshTokenSpec) error { return sessions.Refused(sessions.ReasonNotAllowed) }})
	g.Expect(sessions.ReasonOf(err)).To(Equal(sessions.ReasonNotAllowed))
	rt := &identityv1alpha1.RefreshToken{}
	g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(created), rt)).To(Succeed())
	g.Expect(rt.ResourceVersion).To(Equal(created.ResourceVersion))
	_, err = store.Lookup(ctx, tok)
	g.Expect(err).NotTo(HaveOccurred(), "the token is still current")
}

// Sessions created before rotor labelled them gain the labels at their next
// rotation, and from then on count against their subject's limit; the
// legacy expiry annotation goes.
func TestARotationLabelsAnUnlabelledSession(t *testing.T) {
	g := NewWithT(t)
	ns := env.Namespace(t)
	store := plainStore(t, ns)
	ctx := context.Background()
	tok, created := passwordSession(t, store, "old-timer")
	want := sessions.Labels("old-timer", "cli")
	want[sessions.ExpiresAtLabel] = strconv.FormatInt(created.Spec.EndsAt().Unix(), 10)
	g.Expect(created.Labels).To(Equal(want))
	g.Expect(created.Annotations).To(BeEmpty())

	// As an older rotor wrote it: no labels, the expiry in an annotation.
	rt := &identityv1alpha1.RefreshToken{}
	g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(created), rt)).To(Succeed())
	rt.Labels = nil
	rt.Annotations = map[string]string{sessions.ExpiresAtAnnotation: created.Spec.EndsAt().UTC().Format(time.RFC3339)}
	g.Expect(env.Client.Update(ctx, rt)).To(Succeed())
	store.Evict(rt.Name, "")

	_, rotated, err := store.Rotate(ctx, tok, sessions.Refresh{})
	g.Expect(err).NotTo(HaveOccurred())
	want[sessions.ExpiresAtLabel] = strconv.FormatInt(rotated.Spec.EndsAt().Unix(), 10)
	g.Expect(rotated.Labels).To(Equal(want))
	g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(created), rt)).To(Succeed())
	g.Expect(rt.Labels).To(Equal(want))
	g.Expect(rt.Annotations).To(BeEmpty(), "the legacy annotation is gone")
}

// A session as the previous rotor stored it (spec.session an object holding
// state and expiresAt) still refreshes, and its rotation stores it in
// today's shape.
func TestASessionInTheEarlierShapeRefreshes(t *testing.T) {
	g := NewWithT(t)
	ns := env.Namespace(t)
	store := plainStore(t, ns)
	ctx := context.Background()
	tok, created := passwordSession(t, store, "old-timer")

	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(identityv1alpha1.GroupVersion.WithKind("RefreshToken"))
	g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(created), u)).To(Succeed())
	spec, _, _ := unstructured.NestedMap(u.Object, "spec")
	fields := map[string]any{}
	g.Expect(json.Unmarshal([]byte(spec["session"].(string)), &fields)).To(Succeed())
	fields["state"], fields["expiresAt"] = spec["state"], spec["expiresAt"]
	delete(spec, "state")
	delete(spec, "expiresAt")
	spec["session"] = fields
	g.Expect(unstructured.SetNestedMap(u.Object, spec, "spec")).To(Succeed())
	g.Expect(env.Client.Update(ctx, u)).To(Succeed())

	// A replica that has not cached it reads it.
	reader := plainStore(t, ns)
	got, err := reader.Lookup(ctx, tok)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(got.Spec.ExpiresAt).To(Equal(created.Spec.ExpiresAt))
	g.Expect(got.Spec.State).To(Equal(identityv1alpha1.SessionActive))
	_, rotated, err := reader.Rotate(ctx, tok, sessions.Refresh{})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(rotated.Spec.Session.Rotations).To(BeEquivalentTo(1))

	g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(created), u)).To(Succeed())
	_, isString, _ := unstructured.NestedString(u.Object, "spec", "session")
	g.Expect(isString).To(BeTrue(), "stored as one string again")
	state, _, _ := unstructured.NestedString(u.Object, "spec", "state")
	g.Expect(state).To(Equal("Active"))
}

// The session's client decides at each refresh: its refresh-token lifetime
// and its reuse grace (never more than the store's), and its error refuses
// before anything is decided or written. Revoke asks the caller too.
func TestTheSessionsClientPolicyAppliesAtEachRefresh(t *testing.T) {
	g := NewWithT(t)
	ns := env.Namespace(t)
	clock := clocktesting.NewFakeClock(time.Now().Truncate(time.Second))
	store, err := sessions.NewStore(env.Client, sessions.Config{
		Namespace: ns, RefreshTTL: time.Hour, MaxLifetime: 24 * time.Hour, ReuseGrace: 10 * time.Second,
		CacheSize: 10, Timeout: 5 * time.Second, Clock: clock,
	})
	g.Expect(err).NotTo(HaveOccurred())
	ctx := context.Background()
	tok, created, err := store.Create(ctx, sessions.Grant{
		Subject: "yan", ClientID: "web", Audience: []string{"api"}, Method: identityv1alpha1.AuthMethodPassword,
		Scope: "read", RefreshTTL: 10 * time.Minute, MaxLifetime: 2 * time.Hour,
	})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(created.Spec.Session.Scope).To(Equal("read"))
	g.Expect(created.Spec.ExpiresAt.Sub(created.Spec.Session.LastUsedAt.Time)).To(Equal(10 * time.Minute))
	g.Expect(created.Spec.Session.AbsoluteExpiresAt.Sub(created.Spec.Session.LastUsedAt.Time)).To(Equal(2 * time.Hour))

	var asked []string
	strict := sessions.Refresh{ClientID: "web", Client: func(s *identityv1alpha1.RefreshTokenSpec) (sessions.ClientPolicy, error) {
		asked = append(asked, s.ClientID)
		return sessions.ClientPolicy{RefreshTTL: 20 * time.Minute, ReuseGrace: 0}, nil
	}}
	next, rotated, err := store.Rotate(ctx, tok, strict)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(asked).To(Equal([]string{"web"}))
	g.Expect(rotated.Spec.ExpiresAt.Sub(rotated.Spec.Session.LastUsedAt.Time)).To(Equal(20*time.Minute), "the client's lifetime at rotation")

	// With the client's grace of 0 (the store's is 10s), a replay at once is
	// a theft: the session is revoked.
	_, _, err = store.Rotate(ctx, tok, strict)
	g.Expect(sessions.ReasonOf(err)).To(Equal(sessions.ReasonReuse))
	_, _, err = store.Rotate(ctx, next, sessions.Refresh{})
	g.Expect(sessions.ReasonOf(err)).To(Equal(sessions.ReasonRevoked))

	// A client that may no longer refresh refuses before any write.
	tok, created, err = store.Create(ctx, sessions.Grant{Subject: "yan", ClientID: "gone", Audience: []string{"api"}, Method: identityv1alpha1.AuthMethodPassword})
	g.Expect(err).NotTo(HaveOccurred())
	_, _, err = store.Rotate(ctx, tok, sessions.Refresh{Client: func(*identityv1alpha1.RefreshTokenSpec) (sessions.ClientPolicy, error) {
		return sessions.ClientPolicy{}, sessions.Refused(sessions.ReasonClientNotAllowed)
	}})
	g.Expect(sessions.ReasonOf(err)).To(Equal(sessions.ReasonClientNotAllowed))
	rt := &identityv1alpha1.RefreshToken{}
	g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(created), rt)).To(Succeed())
	g.Expect(rt.ResourceVersion).To(Equal(created.ResourceVersion), "nothing written")

	// Revoke: the caller's refusal writes nothing; its consent revokes.
	notYours := errors.New("not this client's session")
	g.Expect(store.Revoke(ctx, tok, func(*identityv1alpha1.RefreshTokenSpec) error { return notYours })).To(BeIdenticalTo(notYours))
	g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(created), rt)).To(Succeed())
	g.Expect(rt.Spec.State).To(Equal(identityv1alpha1.SessionActive))
	g.Expect(store.Revoke(ctx, tok, func(*identityv1alpha1.RefreshTokenSpec) error { return nil })).To(Succeed())
	g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(created), rt)).To(Succeed())
	g.Expect(rt.Spec.State).To(Equal(identityv1alpha1.SessionRevoked))
}

// A rotation stores the session without managedFields, which nothing
// reads: a refreshed session is well under 1 KiB as the API server stores
// it.
func TestARotatedSessionIsStoredSmall(t *testing.T) {
	g := NewWithT(t)
	ns := env.Namespace(t)
	store := plainStore(t, ns)
	ctx := context.Background()
	tok, created, err := store.Create(ctx, sessions.Grant{
		Subject: "zoe", Groups: []string{"dev", "ops"}, ClientID: "rotor", Audience: []string{"rotor"}, Method: identityv1alpha1.AuthMethodPassword,
	})
	g.Expect(err).NotTo(HaveOccurred())
	stored := func() (*unstructured.Unstructured, int) {
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(identityv1alpha1.GroupVersion.WithKind("RefreshToken"))
		g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(created), u)).To(Succeed())
		raw, err := json.Marshal(u.Object)
		g.Expect(err).NotTo(HaveOccurred())
		return u, len(raw)
	}
	fresh, freshSize := stored()
	g.Expect(fresh.GetManagedFields()).NotTo(BeEmpty(), "the API server records a creator's fields")
	_, _, err = store.Rotate(ctx, tok, sessions.Refresh{})
	g.Expect(err).NotTo(HaveOccurred())
	rotated, size := stored()
	g.Expect(rotated.GetManagedFields()).To(BeEmpty())
	g.Expect(size).To(BeNumerically("<=", 1024), "stored bytes of a refreshed session")
	t.Logf("stored session: %d bytes after login, %d after its first rotation", freshSize, size)
}

// The API server does not validate spec.session: a session edited by hand
// into a shape rotor never writes is refused as unknown, nothing is written
// to it, and it counts as damaged; rotor's own sessions are unaffected.
func TestASessionEditedIntoABadShapeIsRefused(t *testing.T) {
	ns := env.Namespace(t)
	// inSession edits the JSON that spec.session holds.
	inSession := func(edit func(map[string]any)) func(spec map[string]any) {
		return func(spec map[string]any) {
			fields := map[string]any{}
			if err := json.Unmarshal([]byte(spec["session"].(string)), &fields); err != nil {
				t.Fatal(err)
			}
			edit(fields)
			b, err := json.Marshal(fields)
			if err != nil {
				t.Fatal(err)
			}
			spec["session"] = string(b)
		}
	}
	tests := []struct {
		name string
		edit func(spec map[string]any)
	}{
		{"an absolute expiry that is not a time", inSession(func(s map[string]any) { s["absoluteExpiresAt"] = "tomorrow" })},
		{"groups that are not a list", inSession(func(s map[string]any) { s["groups"] = 5 })},
		{"a hash that is not a SHA-256", inSession(func(s map[string]any) { s["secretHash"] = "plaintext-secret" })},
		{"no audience", inSession(func(s map[string]any) { delete(s, "audience") })},
		{"a session that is not JSON", func(spec map[string]any) { spec["session"] = "{not json" }},
		{"a session that is a number", func(spec map[string]any) { spec["session"] = int64(5) }},
		{"no state", func(spec map[string]any) { delete(spec, "state") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			ctx := context.Background()
			store := plainStore(t, ns)
			tok, created, err := store.Create(ctx, sessions.Grant{Subject: "mallory", ClientID: "rotor", Audience: []string{"rotor"}, Method: identityv1alpha1.AuthMethodPassword})
			g.Expect(err).NotTo(HaveOccurred())

			u := &unstructured.Unstructured{}
			u.SetGroupVersionKind(identityv1alpha1.GroupVersion.WithKind("RefreshToken"))
			g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(created), u)).To(Succeed())
			spec, _, _ := unstructured.NestedMap(u.Object, "spec")
			tt.edit(spec)
			g.Expect(unstructured.SetNestedMap(u.Object, spec, "spec")).To(Succeed())
			g.Expect(env.Client.Update(ctx, u)).To(Succeed(), "the API server stores what it does not validate")
			edited := u.GetResourceVersion()

			// A replica that has not cached the session reads it.
			reader := plainStore(t, ns)
			before := damaged(t)
			_, _, err = reader.Rotate(ctx, tok, sessions.Refresh{})
			g.Expect(sessions.ReasonOf(err)).To(Equal(sessions.ReasonUnknown))
			_, err = reader.Lookup(ctx, tok)
			g.Expect(sessions.ReasonOf(err)).To(Equal(sessions.ReasonUnknown), "introspection: inactive")
			g.Expect(reader.Revoke(ctx, tok, nil)).To(Succeed(), "RFC 7009: nothing to revoke is not an error")
			g.Expect(damaged(t)).To(Equal(before+1), "one read; the refusal is cached until the session changes")

			g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(created), u)).To(Succeed())
			g.Expect(u.GetResourceVersion()).To(Equal(edited), "nothing was written to it")
		})
	}
}

// plainStore is a store in ns with an hour's sliding and a day's absolute
// lifetime, a strict reuse policy and a cache of ten, whose writes are
// answered with metadata alone, as rotor serve's are.
func plainStore(t *testing.T, ns string) *sessions.Store {
	t.Helper()
	store, err := sessions.NewStore(env.Client, sessions.Config{Namespace: ns, RefreshTTL: time.Hour, MaxLifetime: 24 * time.Hour, CacheSize: 10, Timeout: 5 * time.Second, Writes: writer(t, nil)})
	if err != nil {
		t.Fatal(err)
	}
	return store
}

// passwordSession logs subject in through store as client "cli" for the
// audience "api".
func passwordSession(t *testing.T, store *sessions.Store, subject string) (string, *identityv1alpha1.RefreshToken) {
	t.Helper()
	tok, rt, err := store.Create(context.Background(), sessions.Grant{Subject: subject, ClientID: "cli", Audience: []string{"api"}, Method: identityv1alpha1.AuthMethodPassword})
	if err != nil {
		t.Fatal(err)
	}
	return tok, rt
}

func damaged(t *testing.T) float64 {
	t.Helper()
	families, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == "rotor_sessions_damaged_total" {
			return f.GetMetric()[0].GetCounter().GetValue()
		}
	}
	return 0
}
