package controllers

import (
	"cmp"
	"context"
	"encoding/base32"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
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

// EvictReasonSessionLimit is the reason label of rotor_sessions_evicted_total
// for sessions deleted because their subject had more than
// MaxSessionsPerSubject live sessions.
const EvictReasonSessionLimit = "session_limit"

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
	sessionsEvicted = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rotor_sessions_evicted_total",
		Help: "Live sessions deleted before their expiry to bound the sessions of one subject (reason session_limit: the subject had more than --max-sessions-per-subject).",
	}, []string{"reason"})
)

func init() {
	metrics.Registry.MustRegister(gcDeleted, gcPassDuration, gcOldestExpired, gcTracked, sessionsEvicted)
	sessionsEvicted.WithLabelValues(EvictReasonSessionLimit) // present at zero
}

// SessionCollector deletes RefreshToken sessions whose sliding or absolute
// expiry has passed, and revoked ones once RevokedRetention has passed. It
// also bounds the live sessions of each subject (MaxSessionsPerSubject).
//
// It does not cache RefreshTokens (Dex was OOM-killed holding every refresh
// token): a metadata-only Reflector feeds a compact index of name →
// (resourceVersion, collection time, creation time, subject and client
// label digests), and the collector sleeps until the earliest collection
// time. The index holds no pointers (names in rotor's form are kept as
// their 16 bytes, in a keyTable of 40-byte slots): measured with
// BenchmarkSessionIndexMemory and
// TestKeyTableHoldsAMillionSessionsInUnder70BytesEach, about 60 bytes a
// session at 200,000 and 58 at 1,000,000 as the watch delivers them (53
// when the list sized the table), plus about 50 bytes for each subject under
// a session limit; in a Go map it was 100 and 156 (the map's load factor
// varies with its size), and before the entries were compacted 200 and 264.
//
// Deletes carry a resourceVersion precondition, so a session
// refreshed at the moment it expires is never deleted: the failed
// precondition is followed by the watch event carrying its new expiry.
//
// Session limit: a login is one create and must stay so (no list per
// login), so the limit is enforced here, after the fact. The index counts
// the live (not revoked) sessions of each subject by the digest in the
// subject label; when a subject has more than MaxSessionsPerSubject, the
// collector wakes and deletes sessions as if the limit had been checked at
// each login, in creation order: a new session displaces the oldest session
// of the same subject and client, or the subject's oldest when that client
// has no older one. A subject may therefore briefly exceed the limit by
// what it creates before the watch delivers it and the deletes land (see
// TestSessionLimitBurst). Sessions without the label (created before rotor
// set it, or by hand) are not counted.
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
	// PageSize bounds each list request while catching up on an API server
	// that does not serve streaming lists.
	PageSize int64
	// Workers delete in parallel.
	Workers int
	// DeleteRate bounds the deletes of sessions that ended, per second (0:
	// no bound). An ended session is already refused, so it can wait;
	// the API server's capacity is the live clients'. Measured with a
	// million sessions stored on 2 cores, 8 unbounded workers deleted 143
	// a second and cut the refreshes of 8 clients from 455 to 151 a
	// second (p99 65 to 292 ms): at that size a delete cost the API server
	// about two refreshes; paced at 50 a second, deletes still cost live
	// refreshes a third of their rate (p99 2.2-2.4x); rotor serve's default
	// is 25. Evictions over the session limit are not
	// bounded by it: they keep the limit and follow logins, which have
	// limits of their own.
	DeleteRate float64
	limiter    *rate.Limiter
	// MaxSessionsPerSubject bounds the live sessions of one subject; 0
	// disables the limit (and the per-subject counts).
	MaxSessionsPerSubject int
	Log                   logr.Logger

	mu    sync.Mutex
	index *gcIndex
	// next is the collection time the loop sleeps until (unix seconds, 0
	// for none); only an earlier one needs to wake it.
	next int64
	wake chan struct{}
	// listed is the index the last list built, for the Replace that
	// follows it.
	listed *gcIndex
}

// gcEntry is what the index keeps of a session (packed in a keySlot): no
// pointers (the resourceVersion parsed from its canonical form). The delete's
// precondition is the resourceVersion alone: a session recreated under the
// same name has another.
type gcEntry struct {
	rv uint64
	// due is when the session may be deleted (unix seconds); 0 means the
	// labels were missing and the spec must be read.
	due int64
	// created is the creationTimestamp (unix seconds).
	created uint32
	// subject is the subject's id in the index (0: not counted); client is
	// the first 4 bytes of the client label's digest, which only has to
	// tell the clients of one subject apart.
	subject uint32
	client  uint32
	flags   uint8
}

const (
	// entryRevoked: collected for GCReasonRevoked, not counted as live.
	entryRevoked uint8 = 1 << iota
	// entryInexact: the resourceVersion was not in its canonical form
	// (never from kube-apiserver); the session is read before a delete.
	entryInexact
)

func (e gcEntry) revoked() bool { return e.flags&entryRevoked != 0 }

func (e gcEntry) reason() string {
	if e.revoked() {
		return GCReasonRevoked
	}
	return GCReasonExpired
}

// gcIndex is the collector's view of every session, and, with a session
// limit, the number of live sessions of each subject.
type gcIndex struct {
	// entries are the sessions named as rotor names them, by sessionKey;
	// named holds any other (made by hand).
	entries keyTable
	named   map[string]gcEntry
	// ids interns subject digests: entries hold an id (index+1 into
	// subjects), freed when no entry refers to it.
	ids      map[[labelDigestBytes]byte]uint32
	subjects []subjectCount
	free     []uint32
}

type subjectCount struct {
	key [labelDigestBytes]byte
	// live counts the entries that are not revoked, refs all of them.
	live, refs int32
}

const labelDigestBytes = sessions.LabelDigestBytes

// newGCIndex returns an index with room for about hint sessions.
func newGCIndex(hint int) *gcIndex {
	return &gcIndex{entries: newKeyTable(hint), named: map[string]gcEntry{}, ids: map[[labelDigestBytes]byte]uint32{}}
}

// sessionKey is a session name of the form rotor gives them ("rt-" and the
// base32 of 16 random bytes, see pkg/sessions), kept as those bytes: the
// index then holds no pointer for the garbage collector to scan, and no
// 29-byte string per session.
type sessionKey [16]byte

const sessionNamePrefix = "rt-"

var sessionNameEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// keyOf returns the key of a name in rotor's form, ok false for any other.
func keyOf(name string) (k sessionKey, ok bool) {
	if len(name) != len(sessionNamePrefix)+26 || !strings.HasPrefix(name, sessionNamePrefix) {
		return k, false
	}
	n, err := sessionNameEncoding.Decode(k[:], []byte(name[len(sessionNamePrefix):]))
	// Canonical only: the 2 bits beyond the 16 bytes must be zero.
	return k, err == nil && n == len(k) && sessionNameEncoding.EncodeToString(k[:]) == name[len(sessionNamePrefix):]
}

func (k sessionKey) name() string {
	return sessionNamePrefix + sessionNameEncoding.EncodeToString(k[:])
}

func (x *gcIndex) get(name string) (gcEntry, bool) {
	if k, ok := keyOf(name); ok {
		return x.entries.get(k)
	}
	e, ok := x.named[name]
	return e, ok
}

func (x *gcIndex) set(name string, e gcEntry) {
	if k, ok := keyOf(name); ok {
		x.entries.set(k, e)
	} else {
		x.named[name] = e
	}
}

func (x *gcIndex) len() int { return x.entries.len() + len(x.named) }

// each calls f for every session; name is "" for a sessionKey entry, whose
// name f builds only if it needs it.
func (x *gcIndex) each(f func(k sessionKey, name string, e gcEntry)) {
	x.entries.each(func(k sessionKey, e gcEntry) { f(k, "", e) })
	for name, e := range x.named {
		f(sessionKey{}, name, e)
	}
}

// full reports that subject has no id and none is left (keyTable slots hold
// ids up to maxSubjectID).
func (x *gcIndex) full(subject [labelDigestBytes]byte) bool {
	_, known := x.ids[subject]
	return !known && len(x.free) == 0 && len(x.subjects) >= maxSubjectID
}

// put sets a session's entry, counted under subject when that is not nil,
// and returns its subject's live sessions (0 when not counted).
func (x *gcIndex) put(name string, e gcEntry, subject *[labelDigestBytes]byte) int32 {
	x.remove(name)
	if subject == nil || x.full(*subject) {
		// Not counted; past maxSubjectID subjects (half a billion) the
		// limit is not enforced for new ones.
		e.subject = 0
		x.set(name, e)
		return 0
	}
	id, ok := x.ids[*subject]
	if !ok {
		if n := len(x.free); n > 0 {
			id, x.free = x.free[n-1], x.free[:n-1]
			x.subjects[id-1] = subjectCount{key: *subject}
		} else {
			x.subjects = append(x.subjects, subjectCount{key: *subject})
			id = uint32(len(x.subjects))
		}
		x.ids[*subject] = id
	}
	e.subject = id
	x.set(name, e)
	s := &x.subjects[id-1]
	s.refs++
	if !e.revoked() {
		s.live++
	}
	return s.live
}

// remove drops a session's entry, if there is one.
func (x *gcIndex) remove(name string) {
	e, ok := x.get(name)
	if !ok {
		return
	}
	if k, ok := keyOf(name); ok {
		x.entries.delete(k)
	} else {
		delete(x.named, name)
	}
	if e.subject == 0 {
		return
	}
	s := &x.subjects[e.subject-1]
	s.refs--
	if !e.revoked() {
		s.live--
	}
	if s.refs == 0 {
		delete(x.ids, s.key)
		x.free = append(x.free, e.subject)
	}
}

// overLimit returns the subjects with more than limit live sessions, each
// with an empty member list to fill.
func (x *gcIndex) overLimit(limit int) map[uint32][]capMember {
	var over map[uint32][]capMember
	for i, s := range x.subjects {
		if s.refs > 0 && int(s.live) > limit {
			if over == nil {
				over = map[uint32][]capMember{}
			}
			over[uint32(i+1)] = nil
		}
	}
	return over
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
	if c.DeleteRate > 0 {
		// No burst: evenly spaced deletes delay a refresh queued behind
		// them by one delete at most.
		c.limiter = rate.NewLimiter(rate.Limit(c.DeleteRate), 1)
	}
	c.mu.Lock()
	if c.index == nil {
		c.index = newGCIndex(0)
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
// new index as the sessions arrive and hands it to the Replace that follows
// (the list it returns to the Reflector is empty): a collector that was down
// for a week catches up holding one object at a time besides the index.
//
// The list is a watch with sendInitialEvents (a streaming list), served in
// one request from the API server's watch cache. Pages were the first
// design and fail at scale: measured with 1,000,000 sessions on
// kube-apiserver v1.37, 500-session pages came at about 1,350 sessions/s and
// slowing (each continuation costs more the more sessions there are), and
// the API server's compaction expires a continue token long before the last
// page, so the list never ended. The Reflector's own streaming list is not
// used either: it buffers every object until the end of the initial events,
// which at that size is gigabytes. Pages remain the fallback for an API
// server that refuses streaming lists.
type gcListWatch struct {
	c   *SessionCollector
	res metadata.ResourceInterface
}

var errNoContext = errors.New("session gc: list and watch need a context")

func (c *SessionCollector) listWatch() *gcListWatch {
	return &gcListWatch{c: c, res: c.Metadata.Resource(sessions.GroupVersionResource).Namespace(c.Namespace)}
}

// ListWithContext lists the sessions at the current resourceVersion (never
// older than the one the Reflector asks for) into a new index for Replace,
// and returns an empty list at that resourceVersion; with no continue token
// the Reflector's own pager stops after one call.
func (l *gcListWatch) ListWithContext(ctx context.Context, _ metav1.ListOptions) (runtime.Object, error) {
	c := l.c
	hint, err := l.count(ctx)
	if err != nil {
		return nil, err
	}
	index := newGCIndex(hint)
	rv, err := l.stream(ctx, index)
	if errors.Is(err, errNoStreamingList) {
		logr.FromContextOrDiscard(ctx).Info("the API server refused a streaming list of sessions; listing them in pages", "reason", err.Error())
		index = newGCIndex(hint)
		rv, err = l.pages(ctx, index)
	}
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.listed = index
	c.mu.Unlock()
	return &metav1.PartialObjectMetadataList{ListMeta: metav1.ListMeta{ResourceVersion: rv}}, nil
}

// count asks for one session to learn how many there are (the list's
// remainingItemCount), so that the index is built at its size instead of
// growing, and holding two copies of itself, a few dozen times on the way.
func (l *gcListWatch) count(ctx context.Context) (int, error) {
	page, err := l.res.List(ctx, metav1.ListOptions{Limit: 1})
	if err != nil {
		return 0, fmt.Errorf("counting sessions: %w", err)
	}
	n := len(page.Items)
	if r := page.RemainingItemCount; r != nil && *r > 0 {
		n += int(*r)
	}
	return n, nil
}

// errNoStreamingList marks an API server that does not serve streaming lists.
var errNoStreamingList = errors.New("streaming list refused")

// stream reads every session into index from a watch that starts with the
// current state (sendInitialEvents) and returns the resourceVersion of the
// bookmark that ends it.
func (l *gcListWatch) stream(ctx context.Context, index *gcIndex) (string, error) {
	c := l.c
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	yes := true
	w, err := l.res.Watch(ctx, metav1.ListOptions{
		SendInitialEvents:    &yes,
		ResourceVersionMatch: metav1.ResourceVersionMatchNotOlderThan,
		AllowWatchBookmarks:  true,
	})
	if apierrors.IsInvalid(err) || apierrors.IsBadRequest(err) {
		return "", fmt.Errorf("%w: %w", errNoStreamingList, err)
	}
	if err != nil {
		return "", fmt.Errorf("listing sessions: %w", err)
	}
	defer w.Stop()
	for {
		var ev watch.Event
		var ok bool
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("listing sessions (%d so far): %w", index.len(), ctx.Err())
		case ev, ok = <-w.ResultChan():
		}
		if !ok {
			return "", fmt.Errorf("listing sessions: the stream ended after %d sessions, before its last one", index.len())
		}
		switch ev.Type {
		case watch.Added, watch.Modified:
			m, err := meta.Accessor(ev.Object)
			if err != nil {
				return "", fmt.Errorf("listing sessions: %w", err)
			}
			e, subject := c.entryOf(m)
			index.put(m.GetName(), e, subject)
		case watch.Deleted:
			if m, err := meta.Accessor(ev.Object); err == nil {
				index.remove(m.GetName())
			}
		case watch.Bookmark:
			m, err := meta.Accessor(ev.Object)
			if err != nil {
				return "", fmt.Errorf("listing sessions: %w", err)
			}
			if m.GetAnnotations()[metav1.InitialEventsAnnotationKey] == "true" {
				return m.GetResourceVersion(), nil
			}
		case watch.Error:
			err := apierrors.FromObject(ev.Object)
			if apierrors.IsInvalid(err) || apierrors.IsBadRequest(err) {
				return "", fmt.Errorf("%w: %w", errNoStreamingList, err)
			}
			return "", fmt.Errorf("listing sessions (%d so far): %w", index.len(), err)
		}
	}
}

// pages lists the sessions into index in pages of PageSize and returns the
// list's resourceVersion.
func (l *gcListWatch) pages(ctx context.Context, index *gcIndex) (string, error) {
	c := l.c
	opts := metav1.ListOptions{Limit: c.PageSize}
	for {
		page, err := l.res.List(ctx, opts)
		if err != nil {
			return "", fmt.Errorf("listing sessions (%d so far): %w", index.len(), err)
		}
		for i := range page.Items {
			e, subject := c.entryOf(&page.Items[i])
			index.put(page.Items[i].Name, e, subject)
		}
		if page.Continue == "" {
			return page.ResourceVersion, nil
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
		index = newGCIndex(0)
	}
	for _, obj := range items {
		m, err := meta.Accessor(obj)
		if err != nil {
			return fmt.Errorf("session list: %w", err)
		}
		e, subject := c.entryOf(m)
		index.put(m.GetName(), e, subject)
	}
	c.mu.Lock()
	c.index = index
	gcTracked.Set(float64(index.len()))
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
		e, subject := c.entryOf(m)
		live := c.index.put(m.GetName(), e, subject)
		// A subject over its limit wakes the collector too, also on a
		// change (a delete that lost to a refresh is tried again).
		wake = c.next == 0 || e.due < c.next || (c.MaxSessionsPerSubject > 0 && int(live) > c.MaxSessionsPerSubject)
	case watch.Deleted:
		c.index.remove(m.GetName())
	}
	gcTracked.Set(float64(c.index.len()))
	c.mu.Unlock()
	if wake {
		c.poke()
	}
	return nil
}

// entryOf reads a session's collection time from the labels rotor writes
// (or the annotations of sessions written before them): revoked-at (plus
// RevokedRetention), else expires-at (the earlier of the sliding and the
// absolute expiry). Without them due is 0 and the spec is read when the
// collector gets to it. With a session limit it also returns the subject
// label's digest to count the session under (nil without a limit or a
// well-formed label).
func (c *SessionCollector) entryOf(m metav1.Object) (gcEntry, *[labelDigestBytes]byte) {
	l := m.GetLabels()
	e := gcEntry{created: uint32(max(m.GetCreationTimestamp().Unix(), 0))}
	rv, rvOK := parseRV(m.GetResourceVersion())
	e.rv = rv
	if !rvOK {
		e.flags |= entryInexact
	}
	if t, ok := collectionTime(m, sessions.RevokedAtLabel, sessions.RevokedAtAnnotation); ok {
		e.due = t + int64(c.RevokedRetention/time.Second)
		e.flags |= entryRevoked
	} else if t, ok := collectionTime(m, sessions.ExpiresAtLabel, sessions.ExpiresAtAnnotation); ok {
		e.due = t
	}
	if c.MaxSessionsPerSubject <= 0 {
		return e, nil
	}
	subject, ok := parseDigest(l[identityv1alpha1.SubjectLabel])
	if !ok {
		return e, nil
	}
	if client, ok := parseDigest(l[identityv1alpha1.ClientLabel]); ok {
		e.client = binary.BigEndian.Uint32(client[:4])
	}
	return e, &subject
}

// collectionTime reads a time in unix seconds from label, or in RFC 3339
// from the legacy annotation.
func collectionTime(m metav1.Object, label, annotation string) (int64, bool) {
	if v, ok := m.GetLabels()[label]; ok {
		t, err := strconv.ParseInt(v, 10, 64)
		return t, err == nil && t > 0
	}
	t, err := time.Parse(time.RFC3339, m.GetAnnotations()[annotation])
	return t.Unix(), err == nil
}

// parseDigest reads a label value rotor wrote (sessions.LabelValue).
func parseDigest(v string) ([labelDigestBytes]byte, bool) {
	var d [labelDigestBytes]byte
	if len(v) != 2*labelDigestBytes || strings.ToLower(v) != v {
		return d, false
	}
	_, err := hex.Decode(d[:], []byte(v))
	return d, err == nil
}

// parseRV reads a resourceVersion in its canonical decimal form (what
// kube-apiserver writes: an etcd revision).
func parseRV(s string) (uint64, bool) {
	v, err := strconv.ParseUint(s, 10, 64)
	return v, err == nil && strconv.FormatUint(v, 10) == s
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
	// evict: deleted for the session limit, not because it is due.
	evict bool
}

// capMember is a live session of a subject over the limit.
type capMember struct {
	name string
	gcEntry
}

// collect deletes the sessions over their subject's limit and every due
// session, and returns the next collection time.
func (c *SessionCollector) collect(ctx context.Context) time.Time {
	now := c.Clock.Now()
	var due, victims []gcItem
	var next time.Time
	oldest := now
	limit := c.MaxSessionsPerSubject
	c.mu.Lock()
	var over map[uint32][]capMember
	if limit > 0 {
		over = c.index.overLimit(limit)
	}
	c.index.each(func(k sessionKey, name string, e gcEntry) {
		nameOf := func() string {
			if name == "" {
				return k.name()
			}
			return name
		}
		t := time.Unix(e.due, 0)
		if e.due == 0 || !t.After(now) {
			due = append(due, gcItem{name: nameOf(), gcEntry: e})
			if e.due != 0 && t.Before(oldest) {
				oldest = t
			}
			return // being collected: not live
		} else if next.IsZero() || t.Before(next) {
			next = t
		}
		if over != nil && e.subject != 0 && !e.revoked() {
			if m, ok := over[e.subject]; ok {
				over[e.subject] = append(m, capMember{nameOf(), e})
			}
		}
	})
	for id, members := range over {
		for _, v := range overLimit(members, limit) {
			victims = append(victims, gcItem{name: v.name, gcEntry: v.gcEntry, evict: true})
			c.Log.V(1).Info("evicting session over the per-subject limit", "session", v.name,
				"subject", hex.EncodeToString(c.index.subjects[id-1].key[:]), "live", len(members), "limit", limit)
		}
	}
	c.next = next.Unix()
	if next.IsZero() {
		c.next = 0
	}
	c.mu.Unlock()
	gcOldestExpired.Set(now.Sub(oldest).Seconds())
	if len(due) == 0 && len(victims) == 0 {
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
				if c.limiter != nil && !it.evict {
					if err := c.limiter.Wait(ctx); err != nil {
						continue
					}
				}
				if !c.delete(ctx, it, now) {
					failed.Store(true)
				}
			}
		}()
	}
	// Evictions first: a backlog of expired sessions (after downtime) must
	// not hold up the limit.
	for _, it := range append(victims, due...) {
		select {
		case work <- it:
		case <-ctx.Done():
		}
	}
	close(work)
	wg.Wait()
	gcPassDuration.Observe(time.Since(start).Seconds())
	c.Log.V(1).Info("collected sessions", "due", len(due), "evicted", len(victims), "duration", time.Since(start).String())
	if retry := now.Add(gcRetryAfter); failed.Load() && (next.IsZero() || retry.Before(next)) {
		next = retry
	}
	return next
}

// overLimit returns the sessions to delete so that a subject's live
// sessions are at most limit, as if the limit had been checked at every
// login: in creation order, each session beyond the limit displaces the
// oldest remaining session of its own client, or the subject's oldest
// remaining session when its client has no older one. Creation order is
// creationTimestamp, then resourceVersion (a session's creation revision
// until it is first refreshed), then name.
func overLimit(members []capMember, limit int) []capMember {
	if limit <= 0 || len(members) <= limit {
		return nil
	}
	slices.SortFunc(members, func(a, b capMember) int {
		return cmp.Or(cmp.Compare(a.created, b.created), cmp.Compare(a.rv, b.rv), strings.Compare(a.name, b.name))
	})
	byClient := map[uint32][]int{}
	for i, m := range members {
		byClient[m.client] = append(byClient[m.client], i)
	}
	gone := make([]bool, len(members))
	var victims []capMember
	oldest, live := 0, 0
	for i, m := range members {
		if live++; live <= limit {
			continue
		}
		// The client's queue holds i itself, so the loop stops.
		q := byClient[m.client]
		for gone[q[0]] {
			q = q[1:]
		}
		byClient[m.client] = q
		v := q[0]
		if v == i {
			// No older session of this client: the subject's oldest,
			// which is older than i since live > limit >= 1.
			for gone[oldest] {
				oldest++
			}
			v = oldest
		}
		gone[v] = true
		live--
		victims = append(victims, members[v])
	}
	return victims
}

// gcRetryAfter spaces retries of deletes that failed for reasons other than
// a changed session.
const gcRetryAfter = 5 * time.Second

// delete deletes one due or evicted session; false means it should be
// retried.
func (c *SessionCollector) delete(ctx context.Context, it gcItem, now time.Time) bool {
	res := c.Metadata.Resource(sessions.GroupVersionResource).Namespace(c.Namespace)
	rv := strconv.FormatUint(it.rv, 10)
	if (it.due == 0 && !it.evict) || it.flags&entryInexact != 0 {
		// Written without rotor's annotations (by hand), or with an
		// unusual resourceVersion: judge by the object itself.
		var revoked, ok bool
		if rv, revoked, ok = c.bySpec(ctx, it, now); !ok {
			return true
		}
		if revoked {
			it.flags |= entryRevoked
		}
	}
	err := res.Delete(ctx, it.name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{ResourceVersion: &rv}})
	switch {
	case err == nil:
		if it.evict {
			sessionsEvicted.WithLabelValues(EvictReasonSessionLimit).Inc()
		} else {
			gcDeleted.WithLabelValues(it.reason()).Inc()
		}
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

// bySpec reads a session and says whether it is still to be deleted (ok):
// due by its spec, or, for an eviction, not revoked. It returns the
// resourceVersion read, for the delete's precondition.
func (c *SessionCollector) bySpec(ctx context.Context, it gcItem, now time.Time) (rv string, revoked, ok bool) {
	rt := &identityv1alpha1.RefreshToken{}
	if err := c.Reader.Get(ctx, client.ObjectKey{Namespace: c.Namespace, Name: it.name}, rt); err != nil {
		if !apierrors.IsNotFound(err) {
			c.Log.Error(err, "reading session", "session", it.name)
		}
		return "", false, false
	}
	revoked = rt.Spec.Session.RevokedAt != nil
	if it.evict {
		return rt.ResourceVersion, revoked, !revoked
	}
	due := rt.Spec.EndsAt()
	if revoked {
		due = rt.Spec.Session.RevokedAt.Add(c.RevokedRetention)
	}
	return rt.ResourceVersion, revoked, !due.After(now)
}

// forget drops an entry unless the watch has already replaced it.
func (c *SessionCollector) forget(it gcItem) {
	c.mu.Lock()
	if cur, ok := c.index.get(it.name); ok && cur.rv == it.rv {
		c.index.remove(it.name)
		gcTracked.Set(float64(c.index.len()))
	}
	c.mu.Unlock()
}
