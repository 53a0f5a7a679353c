package controllers

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/metadata"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	identityv1alpha1 "rotor.dev/rotor/api/v1alpha1"
	"rotor.dev/rotor/pkg/sessions"
)

// gcFixture is a session store and a collector sharing a fake clock.
type gcFixture struct {
	ns        string
	clock     *clocktesting.FakeClock
	store     *sessions.Store
	collector *SessionCollector
}

func newGCFixture(t *testing.T, pageSize int64) *gcFixture {
	t.Helper()
	ns := env.Namespace(t)
	clock := clocktesting.NewFakeClock(time.Now().Truncate(time.Second))
	store, err := sessions.NewStore(env.Client, sessions.Config{
		Namespace: ns, RefreshTTL: time.Hour, MaxLifetime: 3 * time.Hour, CacheSize: 100, Clock: clock, Timeout: 10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	meta, err := metadata.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	return &gcFixture{ns: ns, clock: clock, store: store, collector: &SessionCollector{
		Metadata: meta, Reader: env.Client, Namespace: ns, Clock: clock,
		RevokedRetention: 30 * time.Minute, PageSize: pageSize, Log: zap.New(zap.UseDevMode(true)),
	}}
}

func (f *gcFixture) start(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = f.collector.Start(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

// step moves the clock once the collector sleeps on it, as time would pass
// for a running collector.
func (f *gcFixture) step(g Gomega, d time.Duration) {
	g.Eventually(f.clock.HasWaiters, "5s", "5ms").Should(BeTrue(), "the collector sleeps until its next collection time")
	f.clock.Step(d)
}

func (f *gcFixture) login(t *testing.T, subject string) string {
	t.Helper()
	token, _, err := f.store.Create(context.Background(), sessions.Grant{
		Subject: subject, ClientID: "cli", Audience: []string{"api"}, Method: identityv1alpha1.AuthMethodPassword,
	})
	if err != nil {
		t.Fatal(err)
	}
	return token
}

func (f *gcFixture) names(g Gomega) []string {
	list := &identityv1alpha1.RefreshTokenList{}
	g.Expect(env.Client.List(context.Background(), list, client.InNamespace(f.ns))).To(Succeed())
	var names []string
	for _, s := range list.Items {
		names = append(names, s.Spec.Subject)
	}
	return names
}

func TestSessionCollectorDeletesWhatHasEnded(t *testing.T) {
	g := NewWithT(t)
	f := newGCFixture(t, 500) // refresh TTL 1h, absolute 3h, revoked retention 30m
	ctx := context.Background()
	names := func(g Gomega) []string { return f.names(g) }

	f.login(t, "idle")
	active := f.login(t, "active")
	g.Expect(f.store.Revoke(ctx, f.login(t, "revoked-early"), nil)).To(Succeed())
	revokedLater := f.login(t, "revoked-later")
	f.start(t)
	g.Consistently(names, "300ms").Should(HaveLen(4), "nothing is due yet")

	f.step(g, 31*time.Minute) // t=31m: revoked-early is past its retention
	g.Eventually(names, "10s").Should(ConsistOf("idle", "active", "revoked-later"))

	active = refresh(t, f, active)
	g.Expect(f.store.Revoke(ctx, revokedLater, nil)).To(Succeed())
	f.step(g, 29*time.Minute+30*time.Second) // t=60m30s: idle unused for an hour
	g.Eventually(names, "10s").Should(ConsistOf("active", "revoked-later"))

	f.step(g, time.Minute) // t=61m30s: revoked-later past its retention
	g.Eventually(names, "10s").Should(ConsistOf("active"))

	for range 2 { // refreshed every 50 minutes, the session stays (t=2h41m30s)...
		active = refresh(t, f, active)
		f.step(g, 50*time.Minute)
		g.Consistently(names, "200ms").Should(ConsistOf("active"))
	}
	refresh(t, f, active)
	f.step(g, 10*time.Minute)
	g.Consistently(names, "200ms").Should(ConsistOf("active"))
	f.step(g, 10*time.Minute) // ...until its absolute expiry at 3h, however recently used
	g.Eventually(names, "10s").Should(BeEmpty())
}

func refresh(t *testing.T, f *gcFixture, token string) string {
	t.Helper()
	next, _, err := f.store.Rotate(context.Background(), token, sessions.Refresh{})
	if err != nil {
		t.Fatalf("refresh: %v", err)
	}
	return next
}

func TestSessionCollectorNeverDeletesASessionRefreshedMeanwhile(t *testing.T) {
	g := NewWithT(t)
	f := newGCFixture(t, 500)
	token := f.login(t, "racer")
	// What the collector's Reflector does at start, without its watch.
	list, err := f.collector.listWatch().ListWithContext(context.Background(), metav1.ListOptions{})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(meta.LenList(list)).To(BeZero(), "the list goes to the index, not to the Reflector")
	g.Expect(gcStore{f.collector}.Replace(nil, "")).To(Succeed())
	g.Expect(f.collector.index.len()).To(Equal(1))
	var seen gcItem
	f.collector.index.each(func(k sessionKey, _ string, e gcEntry) { seen = gcItem{name: k.name(), gcEntry: e} })

	// The collector decided on what it saw; the session is refreshed before
	// its delete lands.
	f.clock.Step(59 * time.Minute)
	refresh(t, f, token)
	f.clock.Step(2 * time.Minute)
	g.Expect(f.collector.delete(context.Background(), seen, f.clock.Now())).To(BeTrue(), "a conflict is not an error to retry")
	g.Expect(f.names(g)).To(ConsistOf("racer"), "the precondition kept the refreshed session")
}

func TestSessionCollectorClearsABacklogInOneStreamingList(t *testing.T) {
	g := NewWithT(t)
	f := newGCFixture(t, 10)
	calls := &listRecorder{Interface: f.collector.Metadata}
	f.collector.Metadata = calls
	for i := range 35 {
		f.login(t, fmt.Sprintf("user-%02d", i))
	}
	f.clock.Step(2 * time.Hour) // as if rotor had been stopped: all expired before it starts
	f.login(t, "live")
	f.start(t)
	g.Eventually(func(g Gomega) []string { return f.names(g) }, "20s").Should(ConsistOf("live"))
	g.Expect(calls.streams.Load()).To(BeEquivalentTo(1), "one streaming list, then the Reflector's watch")
	g.Expect(calls.lists.Load()).To(BeEquivalentTo(1), "one list, of one session, sizes the index; the stream is the list")
	g.Expect(calls.wide.Load()).To(BeZero())
}

func TestSessionCollectorListsInPagesWhenTheAPIServerRefusesAStream(t *testing.T) {
	g := NewWithT(t)
	f := newGCFixture(t, 10)
	calls := &listRecorder{Interface: f.collector.Metadata, refuseStreams: true}
	f.collector.Metadata = calls
	for i := range 35 {
		f.login(t, fmt.Sprintf("user-%02d", i))
	}
	f.clock.Step(2 * time.Hour)
	f.login(t, "live")
	f.start(t)
	g.Eventually(func(g Gomega) []string { return f.names(g) }, "20s").Should(ConsistOf("live"))
	g.Expect(calls.streams.Load()).To(BeEquivalentTo(1), "the stream was tried first")
	g.Expect(calls.lists.Load()).To(BeNumerically(">=", 5), "a list of one to size the index, then 36 sessions in pages of 10")
	g.Expect(calls.wide.Load()).To(BeZero(), "no list asked for more than a page")

	mc, _ := metadata.NewForConfig(env.Config)
	list, err := mc.Resource(sessions.GroupVersionResource).Namespace(f.ns).List(context.Background(), metav1.ListOptions{})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(list.Items).To(HaveLen(1))
}

// listRecorder counts the collector's list requests, those asking for more
// than a page of 10, and its streaming lists; with refuseStreams it answers
// a streaming list as an API server without them would.
type listRecorder struct {
	metadata.Interface
	refuseStreams        bool
	lists, wide, streams atomic.Int32
}

func (p *listRecorder) Resource(gvr schema.GroupVersionResource) metadata.Getter {
	return recordedGetter{p.Interface.Resource(gvr), p}
}

type recordedGetter struct {
	metadata.Getter
	p *listRecorder
}

func (g recordedGetter) Namespace(ns string) metadata.ResourceInterface {
	return recordedResource{g.Getter.Namespace(ns), g.p}
}

type recordedResource struct {
	metadata.ResourceInterface
	p *listRecorder
}

func (r recordedResource) List(ctx context.Context, opts metav1.ListOptions) (*metav1.PartialObjectMetadataList, error) {
	r.p.lists.Add(1)
	if opts.Limit <= 0 || opts.Limit > 10 {
		r.p.wide.Add(1)
	}
	return r.ResourceInterface.List(ctx, opts)
}

func (r recordedResource) Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	if opts.SendInitialEvents != nil && *opts.SendInitialEvents {
		r.p.streams.Add(1)
		if r.p.refuseStreams {
			return nil, apierrors.NewBadRequest("sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled")
		}
	}
	return r.ResourceInterface.Watch(ctx, opts)
}

// BenchmarkSessionCollectorSync measures a collector's start: listing 2,000
// sessions into its index (go test ./controllers -run '^$' -bench Sync).
func BenchmarkSessionCollectorSync(b *testing.B) {
	const sessionCount = 2000
	ns := env.Namespace(b)
	clock := clocktesting.NewFakeClock(time.Now().Truncate(time.Second))
	store, err := sessions.NewStore(env.Client, sessions.Config{
		Namespace: ns, RefreshTTL: time.Hour, MaxLifetime: 3 * time.Hour, CacheSize: 100, Clock: clock, Timeout: 10 * time.Second,
	})
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	work := make(chan int)
	for range 8 {
		wg.Go(func() {
			for i := range work {
				if _, _, err := store.Create(context.Background(), sessions.Grant{
					Subject: fmt.Sprintf("user-%d", i), ClientID: "cli", Audience: []string{"api"}, Method: identityv1alpha1.AuthMethodPassword,
				}); err != nil {
					b.Error(err)
				}
			}
		})
	}
	for i := range sessionCount {
		work <- i
	}
	close(work)
	wg.Wait()
	mc, err := metadata.NewForConfig(env.Config)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		c := &SessionCollector{Metadata: mc, Reader: env.Client, Namespace: ns, Clock: clock, RevokedRetention: time.Hour, Log: logr.Discard()}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = c.Start(ctx) }()
		for tracked := 0; tracked < sessionCount; time.Sleep(time.Millisecond) {
			c.mu.Lock()
			tracked = c.index.len()
			c.mu.Unlock()
		}
		cancel()
		<-done
	}
}

// Collection times come from the labels rotor writes, or from the
// annotations of sessions written before them; labels win.
func TestSessionCollectionTimes(t *testing.T) {
	exp := time.Date(2026, 12, 7, 6, 0, 0, 0, time.UTC)
	rev := exp.Add(-time.Hour)
	unix := func(t time.Time) string { return strconv.FormatInt(t.Unix(), 10) }
	tests := []struct {
		name        string
		labels      map[string]string
		annotations map[string]string
		due         time.Time
		revoked     bool
	}{
		{"the expiry label", map[string]string{sessions.ExpiresAtLabel: unix(exp)}, nil, exp, false},
		{"a revoked session is due after the retention", map[string]string{sessions.ExpiresAtLabel: unix(exp), sessions.RevokedAtLabel: unix(rev)}, nil, rev.Add(30 * time.Minute), true},
		{"the legacy annotation", nil, map[string]string{sessions.ExpiresAtAnnotation: exp.Format(time.RFC3339)}, exp, false},
		{"the legacy revocation annotation", nil, map[string]string{sessions.ExpiresAtAnnotation: exp.Format(time.RFC3339), sessions.RevokedAtAnnotation: rev.Format(time.RFC3339)}, rev.Add(30 * time.Minute), true},
		{"a label wins over an annotation", map[string]string{sessions.ExpiresAtLabel: unix(exp)}, map[string]string{sessions.ExpiresAtAnnotation: rev.Format(time.RFC3339)}, exp, false},
		{"a label that is not a number leaves the spec to be read", map[string]string{sessions.ExpiresAtLabel: "soon"}, nil, time.Time{}, false},
		{"neither leaves the spec to be read", nil, nil, time.Time{}, false},
	}
	c := &SessionCollector{RevokedRetention: 30 * time.Minute}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			e, _ := c.entryOf(&metav1.ObjectMeta{Name: "rt-x", ResourceVersion: "7", Labels: tt.labels, Annotations: tt.annotations})
			want := int64(0)
			if !tt.due.IsZero() {
				want = tt.due.Unix()
			}
			g.Expect(e.due).To(Equal(want))
			g.Expect(e.revoked()).To(Equal(tt.revoked))
		})
	}
}

// DeleteRate paces the deletes of ended sessions (an ended session is
// refused already), so a backlog leaves the API server to live clients.
func TestSessionCollectorDeletesAtItsRate(t *testing.T) {
	g := NewWithT(t)
	f := newGCFixture(t, 500)
	f.collector.DeleteRate = 20 // one every 50 ms
	for i := range 30 {
		f.login(t, fmt.Sprintf("user-%02d", i))
	}
	f.clock.Step(2 * time.Hour)
	start := time.Now()
	f.start(t)
	g.Eventually(func(g Gomega) []string { return f.names(g) }, "20s", "20ms").Should(BeEmpty())
	// A lower bound only: a loaded machine can be slower, never faster.
	g.Expect(time.Since(start)).To(BeNumerically(">=", 1400*time.Millisecond), "30 deletes at 20 a second")
}
