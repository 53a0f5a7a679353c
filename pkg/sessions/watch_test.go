package sessions_test

import (
	"context"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/metadata"
	metadatafake "k8s.io/client-go/metadata/fake"
	clienttesting "k8s.io/client-go/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	identityv1alpha1 "rotor.dev/rotor/api/v1alpha1"
	"rotor.dev/rotor/pkg/sessions"
)

// countingStore is a session store whose reads are counted: a read means
// the cache did not hold the session.
func countingStore(t *testing.T, ns string) (*sessions.Store, *atomic.Int32) {
	t.Helper()
	reads := &atomic.Int32{}
	store, err := sessions.NewStore(interceptor.NewClient(env.Client, interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			reads.Add(1)
			return c.Get(ctx, key, obj, opts...)
		},
	}), sessions.Config{Namespace: ns, RefreshTTL: time.Hour, MaxLifetime: 24 * time.Hour, CacheSize: 10, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return store, reads
}

func startEvictor(t *testing.T, e *sessions.Evictor) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = e.Start(ctx) }()
	stop = func() { cancel(); <-done }
	t.Cleanup(stop)
	return stop
}

func grant(subject string) sessions.Grant {
	return sessions.Grant{Subject: subject, ClientID: "cli", Audience: []string{"api"}, Method: identityv1alpha1.AuthMethodPassword}
}

func TestEvictorSeesChangesMadeElsewhere(t *testing.T) {
	g := NewWithT(t)
	ns := env.Namespace(t)
	ctx := context.Background()
	store, reads := countingStore(t, ns)
	elsewhere, _ := countingStore(t, ns) // another replica
	meta, err := metadata.NewForConfig(env.Config)
	g.Expect(err).NotTo(HaveOccurred())
	e := &sessions.Evictor{Store: store, Metadata: meta, Namespace: ns, Log: zap.New(zap.UseDevMode(true))}
	g.Expect(e.Synced()).To(BeFalse(), "not synced before it starts")
	stop := startEvictor(t, e)
	g.Eventually(e.Synced, "10s", "10ms").Should(BeTrue())

	revoked, _, err := store.Create(ctx, grant("rev"))
	g.Expect(err).NotTo(HaveOccurred())
	deleted, rt, err := store.Create(ctx, grant("del"))
	g.Expect(err).NotTo(HaveOccurred())
	own, _, err := store.Create(ctx, grant("own"))
	g.Expect(err).NotTo(HaveOccurred())
	for range 2 {
		own, _, err = store.Rotate(ctx, own, sessions.Refresh{})
		g.Expect(err).NotTo(HaveOccurred())
	}

	g.Expect(elsewhere.Revoke(ctx, revoked, nil)).To(Succeed())
	g.Eventually(func() sessions.Reason {
		_, err := store.Lookup(ctx, revoked)
		return sessions.ReasonOf(err)
	}, "10s", "10ms").Should(Equal(sessions.ReasonRevoked), "a revocation elsewhere is seen here")

	g.Expect(env.Client.Delete(ctx, rt)).To(Succeed()) // kubectl delete rt
	g.Eventually(func() error {
		_, err := store.Lookup(ctx, deleted)
		return err
	}, "10s", "10ms").Should(HaveOccurred(), "a deletion is seen here")

	// The events of this replica's own writes arrive too, but never evict
	// what those writes cached.
	before := reads.Load()
	_, err = store.Lookup(ctx, own)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(reads.Load()).To(Equal(before))

	stop()
	g.Expect(e.Synced()).To(BeFalse(), "not synced once stopped")
}

// A watch that cannot resume (410 Gone) makes the Reflector list again;
// whatever changed in between is unknown, so the cache is emptied, and the
// evictor is not synced until the new watch is open. A watch that merely
// ends resumes where it was and keeps the cache; while it cannot be
// reopened the evictor is not synced.
func TestEvictorPurgesTheCacheOnlyWhenItMustListAgain(t *testing.T) {
	g := NewWithT(t)
	ns := env.Namespace(t)
	ctx := context.Background()
	store, reads := countingStore(t, ns)
	fake := metadatafake.NewSimpleMetadataClient(metadatafake.NewTestScheme())
	var lists atomic.Int32
	fake.PrependReactor("list", "refreshtokens", func(clienttesting.Action) (bool, runtime.Object, error) {
		lists.Add(1)
		return true, &metav1.List{ListMeta: metav1.ListMeta{ResourceVersion: "10"}}, nil
	})
	watches := make(chan *watch.RaceFreeFakeWatcher, 10)
	var refuse atomic.Int32
	fake.PrependWatchReactor("refreshtokens", func(clienttesting.Action) (bool, watch.Interface, error) {
		if refuse.Add(-1) >= 0 {
			return true, nil, &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
		}
		w := watch.NewRaceFreeFake()
		watches <- w
		return true, w, nil
	})
	limits := &limitRecorder{Interface: fake}
	e := &sessions.Evictor{Store: store, Metadata: limits, Namespace: ns, Log: zap.New(zap.UseDevMode(true))}
	startEvictor(t, e)
	var w *watch.RaceFreeFakeWatcher
	g.Eventually(watches, "5s").Should(Receive(&w))
	g.Eventually(e.Synced, "5s", "5ms").Should(BeTrue())
	g.Expect(lists.Load()).To(BeEquivalentTo(1))
	g.Expect(limits.wide.Load()).To(BeZero(), "the evictor lists one item, for a resourceVersion")

	token, _, err := store.Create(ctx, grant("kept"))
	g.Expect(err).NotTo(HaveOccurred())
	before := reads.Load()
	_, err = store.Lookup(ctx, token)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(reads.Load()).To(Equal(before), "cached")

	w.Error(&apierrors.NewResourceExpired("too old resource version").ErrStatus)
	g.Eventually(e.Synced, "5s", "5ms").Should(BeFalse())
	g.Eventually(watches, "10s").Should(Receive(&w))
	g.Eventually(e.Synced, "5s", "5ms").Should(BeTrue())
	g.Expect(lists.Load()).To(BeEquivalentTo(2), "listed again")
	_, err = store.Lookup(ctx, token)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(reads.Load()).To(Equal(before+1), "the relist emptied the cache")

	// The watch ends (a timeout, a dropped connection), and the API server
	// refuses the next one for a while.
	refuse.Store(1)
	w.Action(watch.Bookmark, &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{ResourceVersion: "11"}})
	w.Stop()
	g.Eventually(e.Synced, "5s", "5ms").Should(BeFalse(), "the watch cannot be reopened")
	g.Eventually(watches, "10s").Should(Receive(&w))
	g.Eventually(e.Synced, "5s", "5ms").Should(BeTrue())
	g.Expect(lists.Load()).To(BeEquivalentTo(2), "resumed without a list")
	_, err = store.Lookup(ctx, token)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(reads.Load()).To(Equal(before+1), "the cache was kept")
}

// limitRecorder counts metadata lists asking for more than one item (the
// fake client does not record the limit).
type limitRecorder struct {
	metadata.Interface
	wide atomic.Int32
}

func (l *limitRecorder) Resource(gvr schema.GroupVersionResource) metadata.Getter {
	return limitGetter{l.Interface.Resource(gvr), l}
}

type limitGetter struct {
	metadata.Getter
	l *limitRecorder
}

func (g limitGetter) Namespace(ns string) metadata.ResourceInterface {
	return limitResource{g.Getter.Namespace(ns), g.l}
}

type limitResource struct {
	metadata.ResourceInterface
	l *limitRecorder
}

func (r limitResource) List(ctx context.Context, opts metav1.ListOptions) (*metav1.PartialObjectMetadataList, error) {
	if opts.Limit != 1 {
		r.l.wide.Add(1)
	}
	return r.ResourceInterface.List(ctx, opts)
}
