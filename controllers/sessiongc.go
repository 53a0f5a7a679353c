package controllers

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	identityv1alpha1 "rotor.dev/rotor/api/v1alpha1"
	"rotor.dev/rotor/pkg/sessions"
)

// Reasons a session is collected, as metric labels.
const (
	GCReasonExpired = "expired"
	GCReasonRevoked = "revoked"
)

var (
	gcDeleted = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rotor_sessions_collected_total",
		Help: "RefreshToken sessions deleted by garbage collection, by reason.",
	}, []string{"reason"})
	gcPassDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "rotor_session_gc_pass_duration_seconds",
		Help:    "Duration of garbage-collection passes that deleted sessions.",
		Buckets: prometheus.ExponentialBuckets(0.01, 4, 9),
	})
	gcOldestExpired = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "rotor_session_gc_oldest_expired_seconds",
		Help: "Age past its collection time of the oldest session still stored (0 when none is due).",
	})
	gcTracked = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "rotor_session_gc_tracked_sessions",
		Help: "Sessions in the garbage collector's expiry index.",
	})
)

func init() {
	metrics.Registry.MustRegister(gcDeleted, gcPassDuration, gcOldestExpired, gcTracked)
}

// SessionCollector deletes RefreshToken sessions whose sliding or absolute
// expiry has passed, and revoked ones once RevokedRetention has passed.
//
// It does not cache RefreshTokens (Dex was OOM-killed holding every refresh
// token): a metadata-only Reflector feeds a compact index of name → (UID,
// resourceVersion, collection time), about 230 bytes a session (4.4 MiB for
// 20,000), and the collector sleeps until the earliest collection time.
// Deletes carry UID and resourceVersion preconditions, so a session
// refreshed at the moment it expires is never deleted: the failed
// precondition is followed by the watch event carrying its new expiry.
//
// It runs on the leader only; the preconditions keep it correct if two
// replicas briefly both lead.
type SessionCollector struct {
	Metadata metadata.Interface
	// Reader reads the rare session written without rotor's annotations.
	Reader    client.Reader
	Namespace string
	Clock     clock.Clock
	// RevokedRetention keeps revoked sessions visible (kubectl get rt) this
	// long after revocation.
	RevokedRetention time.Duration
	// PageSize bounds each list request while catching up.
	PageSize int64
	// Workers delete in parallel.
	Workers int
	Log     logr.Logger

	mu    sync.Mutex
	index map[string]gcEntry
	// next is the collection time the loop sleeps until (unix seconds, 0
	// for none); only an earlier one needs to wake it.
	next int64
	wake chan struct{}
	// listed is the index the last list built, for the Replace that
	// follows it.
	listed map[string]gcEntry
}

type gcEntry struct {
	uid types.UID
	rv  string
	// due is when the session may be deleted (unix seconds); 0 means the
	// annotations were missing and the spec must be read.
	due    int64
	reason string
}

// +kubebuilder:rbac:groups=identity.rotor.dev,namespace=rotor-system,resources=refreshtokens,verbs=list;watch;delete

// NeedLeaderElection is true: one collector at a time is enough.
func (c *SessionCollector) NeedLeaderElection() bool { return true }

// Start lists the sessions in pages, then watches them, collecting as
// their times come, until ctx ends.
func (c *SessionCollector) Start(ctx context.Context) error {
	if c.PageSize <= 0 {
		c.PageSize = 500
	}
	if c.Workers <= 0 {
		c.Workers = 8
	}
	c.mu.Lock()
	if c.index == nil {
		c.index = map[string]gcEntry{}
	}
	c.mu.Unlock()
	c.wake = make(chan struct{}, 1)
	ctx = logr.NewContext(ctx, c.Log)
	var wg sync.WaitGroup
	wg.Go(func() { c.collectLoop(ctx) })
	c.reflector().RunWithContext(ctx)
	wg.Wait()
	return nil
}

// reflector lists and watches session metadata into the index: a client-go
// Reflector does the watching, bookmarks, backoff and relisting when the
// watch cannot resume, with the collector as its store. It runs on the real
// clock whatever c.Clock is: its backoff and watch timeouts are about the
// API server, not about session expiry.
func (c *SessionCollector) reflector() *cache.Reflector {
	return cache.NewReflectorWithOptions(c.listWatch(), &metav1.PartialObjectMetadata{}, gcStore{c}, cache.ReflectorOptions{
		Name: "session-gc", TypeDescription: "RefreshToken metadata", Logger: &c.Log,
	})
}

// gcListWatch is the collector's cache.ListerWatcher. Its list builds the
// new index page by page and hands it to the Replace that follows (the list
// it returns to the Reflector is empty): a collector that was down for a
// week catches up without holding more than one page of objects.
//
// It opts out of the streaming list (WatchList), which client-go v0.37 uses
// by default against kube-apiserver v1.37: the Reflector buffers every
// streamed object until the end of the initial events and only then calls
// Replace. Measured with 20,000 sessions, streaming (each object stripped to
// what the index needs as it arrived) took 0.9-1.4 s and 31 MiB of peak RSS,
// these pages 0.6 s and 12 MiB; the index kept is 4.4 MiB either way. Pages
// cost more requests (one per PageSize sessions), which v1.37 serves from
// its watch cache as it would the stream (consistent reads, continuations
// from cache snapshots); older servers read them from etcd, as before.
type gcListWatch struct {
	c   *SessionCollector
	res metadata.ResourceInterface
}

var errNoContext = errors.New("session gc: list and watch need a context")

func (c *SessionCollector) listWatch() *gcListWatch {
	return &gcListWatch{c: c, res: c.Metadata.Resource(sessions.GroupVersionResource).Namespace(c.Namespace)}
}

// ListWithContext lists the sessions in pages of PageSize at the current
// resourceVersion (never older than the one the Reflector asks for) into a
// new index for Replace, and returns an empty list at that resourceVersion;
// with no continue token the Reflector's own pager stops after one call.
func (l *gcListWatch) ListWithContext(ctx context.Context, _ metav1.ListOptions) (runtime.Object, error) {
	c := l.c
	index := map[string]gcEntry{}
	opts := metav1.ListOptions{Limit: c.PageSize}
	for {
		page, err := l.res.List(ctx, opts)
		if err != nil {
			return nil, fmt.Errorf("listing sessions (%d so far): %w", len(index), err)
		}
		for i := range page.Items {
			index[page.Items[i].Name] = c.entryOf(&page.Items[i])
		}
		if page.Continue == "" {
			c.mu.Lock()
			c.listed = index
			c.mu.Unlock()
			return &metav1.PartialObjectMetadataList{ListMeta: metav1.ListMeta{ResourceVersion: page.ResourceVersion}}, nil
		}
		opts.Continue = page.Continue
	}
}

// WatchWithContext watches session metadata.
func (l *gcListWatch) WatchWithContext(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	w, err := l.res.Watch(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("watching sessions: %w", err)
	}
	return w, nil
}

// List and Watch complete cache.ListerWatcher; the Reflector only calls
// the context-aware methods.
func (l *gcListWatch) List(metav1.ListOptions) (runtime.Object, error)   { return nil, errNoContext }
func (l *gcListWatch) Watch(metav1.ListOptions) (watch.Interface, error) { return nil, errNoContext }

// IsWatchListSemanticsUnSupported keeps the Reflector on list-then-watch
// (see gcListWatch).
func (l *gcListWatch) IsWatchListSemanticsUnSupported() bool { return true }

// gcStore is the collector's cache.ReflectorStore: it keeps the index.
type gcStore struct{ c *SessionCollector }

var _ cache.ReflectorStore = gcStore{}

func (s gcStore) Add(obj any) error    { return s.c.apply(watch.Added, obj) }
func (s gcStore) Update(obj any) error { return s.c.apply(watch.Modified, obj) }
func (s gcStore) Delete(obj any) error { return s.c.apply(watch.Deleted, obj) }

// Replace installs the index built by the list just made (gcListWatch);
// items, empty from that list, are added to it.
func (s gcStore) Replace(items []any, _ string) error {
	c := s.c
	c.mu.Lock()
	index := c.listed
	c.listed = nil
	c.mu.Unlock()
	if index == nil {
		index = make(map[string]gcEntry, len(items))
	}
	for _, obj := range items {
		m, err := meta.Accessor(obj)
		if err != nil {
			return fmt.Errorf("session list: %w", err)
		}
		index[m.GetName()] = c.entryOf(m)
	}
	c.mu.Lock()
	c.index = index
	gcTracked.Set(float64(len(index)))
	c.mu.Unlock()
	c.poke()
	return nil
}

// Resync is never called: the Reflector has no resync period.
func (s gcStore) Resync() error { return nil }

// apply keeps the index current and wakes the collector for an earlier
// collection time.
func (c *SessionCollector) apply(t watch.EventType, obj any) error {
	m, err := meta.Accessor(obj)
	if err != nil {
		return fmt.Errorf("session watch event: %w", err)
	}
	wake := false
	c.mu.Lock()
	switch t {
	case watch.Added, watch.Modified:
		e := c.entryOf(m)
		c.index[m.GetName()] = e
		wake = c.next == 0 || e.due < c.next
	case watch.Deleted:
		delete(c.index, m.GetName())
	}
	gcTracked.Set(float64(len(c.index)))
	c.mu.Unlock()
	if wake {
		c.poke()
	}
	return nil
}

// entryOf reads a session's collection time from the annotations rotor
// writes: revoked-at (plus RevokedRetention), else expires-at (the earlier
// of the sliding and the absolute expiry). Without them due is 0 and the
// spec is read when the collector gets to it.
func (c *SessionCollector) entryOf(m metav1.Object) gcEntry {
	a := m.GetAnnotations()
	e := gcEntry{uid: m.GetUID(), rv: m.GetResourceVersion(), reason: GCReasonExpired}
	if t, err := time.Parse(time.RFC3339, a[sessions.RevokedAtAnnotation]); err == nil {
		e.due, e.reason = t.Add(c.RevokedRetention).Unix(), GCReasonRevoked
	} else if t, err := time.Parse(time.RFC3339, a[sessions.ExpiresAtAnnotation]); err == nil {
		e.due = t.Unix()
	}
	return e
}

func (c *SessionCollector) poke() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// collectLoop deletes what is due, then sleeps until the next collection
// time or until the index changes.
func (c *SessionCollector) collectLoop(ctx context.Context) {
	for ctx.Err() == nil {
		next := c.collect(ctx)
		var timer clock.Timer
		var fire <-chan time.Time
		if !next.IsZero() {
			timer = c.Clock.NewTimer(next.Sub(c.Clock.Now()))
			fire = timer.C()
			// The clock may have passed next while collect ran; a timer
			// armed in the past fires at once on a real clock but only at
			// the next step of a fake one, so collect again now.
			if !c.Clock.Now().Before(next) {
				timer.Stop()
				continue
			}
		}
		select {
		case <-ctx.Done():
		case <-c.wake:
		case <-fire:
		}
		if timer != nil {
			timer.Stop()
		}
	}
}

type gcItem struct {
	name string
	gcEntry
}

// collect deletes every due session and returns the next collection time.
func (c *SessionCollector) collect(ctx context.Context) time.Time {
	now := c.Clock.Now()
	var due []gcItem
	var next time.Time
	oldest := now
	c.mu.Lock()
	for name, e := range c.index {
		t := time.Unix(e.due, 0)
		if e.due == 0 || !t.After(now) {
			due = append(due, gcItem{name, e})
			if e.due != 0 && t.Before(oldest) {
				oldest = t
			}
		} else if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	c.next = next.Unix()
	if next.IsZero() {
		c.next = 0
	}
	c.mu.Unlock()
	gcOldestExpired.Set(now.Sub(oldest).Seconds())
	if len(due) == 0 {
		return next
	}
	start := time.Now()
	work := make(chan gcItem)
	var wg sync.WaitGroup
	var failed atomic.Bool
	for range c.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for it := range work {
				if !c.delete(ctx, it, now) {
					failed.Store(true)
				}
			}
		}()
	}
	for _, it := range due {
		select {
		case work <- it:
		case <-ctx.Done():
		}
	}
	close(work)
	wg.Wait()
	gcPassDuration.Observe(time.Since(start).Seconds())
	c.Log.V(1).Info("collected sessions", "due", len(due), "duration", time.Since(start).String())
	if retry := now.Add(gcRetryAfter); failed.Load() && (next.IsZero() || retry.Before(next)) {
		next = retry
	}
	return next
}

// gcRetryAfter spaces retries of deletes that failed for reasons other than
// a changed session.
const gcRetryAfter = 5 * time.Second

// delete deletes one due session; false means it should be retried.
func (c *SessionCollector) delete(ctx context.Context, it gcItem, now time.Time) bool {
	res := c.Metadata.Resource(sessions.GroupVersionResource).Namespace(c.Namespace)
	if it.due == 0 {
		// Written without rotor's annotations (by hand): judge by the spec.
		var ok bool
		if it, ok = c.dueBySpec(ctx, it, now); !ok {
			return true
		}
	}
	err := res.Delete(ctx, it.name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &it.uid, ResourceVersion: &it.rv}})
	switch {
	case err == nil:
		gcDeleted.WithLabelValues(it.reason).Inc()
		c.forget(it)
	case apierrors.IsNotFound(err):
		c.forget(it)
	case apierrors.IsConflict(err):
		// Changed since we saw it (a refresh at the last moment): the watch
		// brings its new collection time.
	case errors.Is(err, context.Canceled):
	default:
		c.Log.Error(err, "deleting session", "session", it.name)
		return false
	}
	return true
}

func (c *SessionCollector) dueBySpec(ctx context.Context, it gcItem, now time.Time) (gcItem, bool) {
	rt := &identityv1alpha1.RefreshToken{}
	if err := c.Reader.Get(ctx, client.ObjectKey{Namespace: c.Namespace, Name: it.name}, rt); err != nil {
		if !apierrors.IsNotFound(err) {
			c.Log.Error(err, "reading session", "session", it.name)
		}
		return it, false
	}
	it.uid, it.rv = rt.UID, rt.ResourceVersion
	due := rt.Spec.EndsAt()
	if rt.Spec.RevokedAt != nil {
		due, it.reason = rt.Spec.RevokedAt.Add(c.RevokedRetention), GCReasonRevoked
	}
	return it, !due.After(now)
}

// forget drops an entry unless the watch has already replaced it.
func (c *SessionCollector) forget(it gcItem) {
	c.mu.Lock()
	if cur, ok := c.index[it.name]; ok && cur.rv == it.rv {
		delete(c.index, it.name)
	}
	c.mu.Unlock()
}
