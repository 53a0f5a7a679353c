package sessions

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/tools/cache"

	identityv1alpha1 "rotor.dev/rotor/api/v1alpha1"
)

// GroupVersionResource of RefreshToken.
var GroupVersionResource = schema.GroupVersionResource{
	Group: identityv1alpha1.GroupVersion.Group, Version: identityv1alpha1.GroupVersion.Version, Resource: "refreshtokens",
}

// Evictor watches RefreshTokens (metadata only, nothing kept) and evicts
// cache entries that changed elsewhere: a revocation on another replica or a
// `kubectl delete rt` takes effect here within the watch's latency.
//
// A client-go Reflector does the listing, watching, bookmarks, backoff and
// relisting; the Evictor is its store and keeps nothing.
type Evictor struct {
	Store     *Store
	Metadata  metadata.Interface
	Namespace string
	Log       logr.Logger

	// listed is set once the Reflector has handed over its first list
	// (Replace); watching while the last watch request succeeded and has
	// not reported an error.
	listed, watching atomic.Bool
}

// NeedLeaderElection is false: every replica serves tokens.
func (e *Evictor) NeedLeaderElection() bool { return false }

// Synced reports whether the watch is established, so changes made
// elsewhere are being seen: the first list is done and the current watch
// opened without error. It turns false while the API server cannot be
// watched (a failed watch request, an error event such as 410 Gone before
// the relist) and true again once a watch is open; a watch that merely times
// out is resumed from its last resourceVersion at once and loses nothing,
// so it does not count as a gap.
func (e *Evictor) Synced() bool { return e.listed.Load() && e.watching.Load() }

// Start watches until ctx ends.
func (e *Evictor) Start(ctx context.Context) error {
	defer e.watching.Store(false)
	lw := &versionListWatch{res: e.Metadata.Resource(GroupVersionResource).Namespace(e.Namespace), watching: &e.watching}
	r := cache.NewReflectorWithOptions(lw, &metav1.PartialObjectMetadata{}, evictorStore{e}, cache.ReflectorOptions{
		Name: "session-evictor", TypeDescription: "RefreshToken metadata", Logger: &e.Log,
	})
	r.RunWithContext(logr.NewContext(ctx, e.Log))
	return nil
}

// versionListWatch lists only a resourceVersion and watches from it.
//
// The Reflector's list is meant to return every object, for Replace to hold
// the full state; the Evictor holds nothing and its Replace is a Purge, so a
// list of one item (for the resourceVersion, as before the Reflector) says
// all it needs, on a million sessions as on ten. For the same reason it opts
// out of the streaming list (WatchList), which client-go v0.37 uses by
// default against kube-apiserver v1.37 (WatchListClient and the server's
// WatchList are both on): a streamed list sends every session, once at start
// and again at every relist, and the Reflector buffers them all before
// Replace (with 20,000 sessions: 11.5 MiB received and over 30 MiB of peak
// RSS, against one item here). Relists are rare (the watch resumes from its
// bookmarked resourceVersion) but each replica does one at every start.
type versionListWatch struct {
	res      metadata.ResourceInterface
	watching *atomic.Bool
}

var errNoContext = errors.New("sessions: list and watch need a context")

// ListWithContext returns an empty list at the current resourceVersion. It
// ignores the Reflector's resourceVersion, limit and continue options: the
// most recent resourceVersion is never older than the one asked for, and
// with no continue token the Reflector's pager stops after one call.
func (l *versionListWatch) ListWithContext(ctx context.Context, _ metav1.ListOptions) (runtime.Object, error) {
	list, err := l.res.List(ctx, metav1.ListOptions{Limit: 1})
	if err != nil {
		return nil, fmt.Errorf("listing sessions for a resourceVersion: %w", err)
	}
	return &metav1.PartialObjectMetadataList{ListMeta: metav1.ListMeta{ResourceVersion: list.ResourceVersion}}, nil
}

// WatchWithContext watches, recording whether the watch is established.
func (l *versionListWatch) WatchWithContext(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	w, err := l.res.Watch(ctx, opts)
	if err != nil {
		l.watching.Store(false)
		return nil, fmt.Errorf("watching sessions: %w", err)
	}
	l.watching.Store(true)
	return newErrorTrackingWatch(w, func() { l.watching.Store(false) }), nil
}

// List and Watch complete cache.ListerWatcher; the Reflector only calls
// the context-aware methods.
func (l *versionListWatch) List(metav1.ListOptions) (runtime.Object, error) { return nil, errNoContext }
func (l *versionListWatch) Watch(metav1.ListOptions) (watch.Interface, error) {
	return nil, errNoContext
}

// IsWatchListSemanticsUnSupported keeps the Reflector on list-then-watch
// (see versionListWatch).
func (l *versionListWatch) IsWatchListSemanticsUnSupported() bool { return true }

// errorTrackingWatch passes a watch's events on and calls onError at an
// error event (the Reflector then ends this watch).
type errorTrackingWatch struct {
	w       watch.Interface
	out     chan watch.Event
	stop    chan struct{}
	once    sync.Once
	onError func()
}

func newErrorTrackingWatch(w watch.Interface, onError func()) *errorTrackingWatch {
	t := &errorTrackingWatch{w: w, out: make(chan watch.Event), stop: make(chan struct{}), onError: onError}
	go t.loop()
	return t
}

func (t *errorTrackingWatch) loop() {
	defer close(t.out)
	for ev := range t.w.ResultChan() {
		if ev.Type == watch.Error {
			t.onError()
		}
		select {
		case t.out <- ev:
		case <-t.stop:
			return
		}
	}
}

func (t *errorTrackingWatch) ResultChan() <-chan watch.Event { return t.out }

func (t *errorTrackingWatch) Stop() {
	t.once.Do(func() {
		close(t.stop)
		t.w.Stop()
	})
}

// evictorStore is the Evictor's cache.ReflectorStore: it turns the
// Reflector's calls into evictions and keeps nothing.
type evictorStore struct{ e *Evictor }

var _ cache.ReflectorStore = evictorStore{}

// Add and Update evict unless the cache holds this resourceVersion or a
// newer one (this replica's own write).
func (s evictorStore) Add(obj any) error    { return s.evict(obj, true) }
func (s evictorStore) Update(obj any) error { return s.evict(obj, true) }

// Delete always evicts.
func (s evictorStore) Delete(obj any) error { return s.evict(obj, false) }

// Replace follows a (re)list: whatever happened while not watching is
// unknown, so the whole cache goes. The list is empty (versionListWatch).
func (s evictorStore) Replace(_ []any, _ string) error {
	s.e.Store.Purge()
	s.e.listed.Store(true)
	return nil
}

// Resync is never called: the Reflector has no resync period.
func (s evictorStore) Resync() error { return nil }

func (s evictorStore) evict(obj any, keepNewer bool) error {
	m, err := meta.Accessor(obj)
	if err != nil {
		return fmt.Errorf("session watch event: %w", err)
	}
	rv := ""
	if keepNewer {
		rv = m.GetResourceVersion()
	}
	s.e.Store.Evict(m.GetName(), rv)
	return nil
}
