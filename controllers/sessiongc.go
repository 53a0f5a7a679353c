package controllers

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/metadata"
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
// token): a metadata-only watch feeds a compact index of name → (UID,
// resourceVersion, collection time), about 150 bytes a session, and the
// collector sleeps until the earliest collection time. Deletes carry UID and
// resourceVersion preconditions, so a session refreshed at the moment it
// expires is never deleted: the failed precondition is followed by the
// watch event carrying its new expiry.
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
	c.wake = make(chan struct{}, 1)
	go c.collectLoop(ctx)
	(&sessions.MetadataWatch{
		Resource: c.Metadata.Resource(sessions.GroupVersionResource).Namespace(c.Namespace),
		List:     c.relist,
		Event:    c.apply,
		Log:      c.Log,
	}).Run(ctx)
	return nil
}

// relist rebuilds the index from paged metadata lists: a collector that was
// down for a week catches up without holding more than one page of objects.
func (c *SessionCollector) relist(ctx context.Context) (string, error) {
	res := c.Metadata.Resource(sessions.GroupVersionResource).Namespace(c.Namespace)
	index := map[string]gcEntry{}
	opts := metav1.ListOptions{Limit: c.PageSize}
	for {
		page, err := res.List(ctx, opts)
		if err != nil {
			return "", err
		}
		for i := range page.Items {
			index[page.Items[i].Name] = c.entryOf(&page.Items[i])
		}
		if page.Continue == "" {
			c.mu.Lock()
			c.index = index
			gcTracked.Set(float64(len(index)))
			c.mu.Unlock()
			c.poke()
			return page.ResourceVersion, nil
		}
		opts.Continue = page.Continue
	}
}

// apply keeps the index current and wakes the collector for an earlier
// collection time.
func (c *SessionCollector) apply(t watch.EventType, m *metav1.PartialObjectMetadata) {
	wake := false
	c.mu.Lock()
	switch t {
	case watch.Added, watch.Modified:
		e := c.entryOf(m)
		c.index[m.Name] = e
		wake = c.next == 0 || e.due < c.next
	case watch.Deleted:
		delete(c.index, m.Name)
	}
	gcTracked.Set(float64(len(c.index)))
	c.mu.Unlock()
	if wake {
		c.poke()
	}
}

func (c *SessionCollector) entryOf(m *metav1.PartialObjectMetadata) gcEntry {
	e := gcEntry{uid: m.UID, rv: m.ResourceVersion, reason: GCReasonExpired}
	if t, err := time.Parse(time.RFC3339, m.Annotations[sessions.RevokedAtAnnotation]); err == nil {
		e.due, e.reason = t.Add(c.RevokedRetention).Unix(), GCReasonRevoked
	} else if t, err := time.Parse(time.RFC3339, m.Annotations[sessions.ExpiresAtAnnotation]); err == nil {
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
	due := rt.Spec.ExpiresAt.Time
	if rt.Spec.AbsoluteExpiresAt.Before(&rt.Spec.ExpiresAt) {
		due = rt.Spec.AbsoluteExpiresAt.Time
	}
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
