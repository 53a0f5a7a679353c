package sessions

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/metadata"
	"k8s.io/utils/ptr"

	identityv1alpha1 "rotor.dev/rotor/api/v1alpha1"
)

// GroupVersionResource of RefreshToken.
var GroupVersionResource = schema.GroupVersionResource{
	Group: identityv1alpha1.GroupVersion.Group, Version: identityv1alpha1.GroupVersion.Version, Resource: "refreshtokens",
}

// MetadataWatch lists and then watches RefreshToken metadata until its
// context ends, resuming after errors and listing again whenever the watch
// cannot resume. It holds no objects itself: the cache evictor (every
// replica) and the garbage collector (leader) keep what they need.
type MetadataWatch struct {
	Resource metadata.ResourceInterface
	// List (re)builds the caller's state and returns the resourceVersion to
	// watch from.
	List func(context.Context) (string, error)
	// Event is called for every change.
	Event func(watch.EventType, *metav1.PartialObjectMetadata)
	// Watching, if set, learns when a watch opens (true) and closes (false).
	Watching func(bool)
	Log      logr.Logger
}

// Run lists and watches until ctx ends.
func (m *MetadataWatch) Run(ctx context.Context) {
	backoff := time.Second
	wait := func(what string, err error) {
		if ctx.Err() == nil {
			m.Log.Error(err, what)
		}
		sleep(ctx, backoff)
		backoff = min(2*backoff, 30*time.Second)
	}
	for ctx.Err() == nil {
		rv, err := m.List(ctx)
		if err != nil {
			wait("listing sessions", err)
			continue
		}
		for ctx.Err() == nil {
			w, err := m.Resource.Watch(ctx, metav1.ListOptions{ResourceVersion: rv, AllowWatchBookmarks: true, TimeoutSeconds: ptr.To[int64](300)})
			if apierrors.IsResourceExpired(err) || apierrors.IsGone(err) {
				break
			}
			if err != nil {
				m.watching(false)
				wait("watching sessions", err)
				continue
			}
			m.watching(true)
			backoff = time.Second
			var gone bool
			rv, gone = m.drain(w, rv)
			w.Stop()
			if gone {
				break
			}
		}
		m.watching(false)
	}
}

func (m *MetadataWatch) watching(open bool) {
	if m.Watching != nil {
		m.Watching(open)
	}
}

// drain hands every event on and returns the last resourceVersion seen;
// gone reports that the watch can no longer resume from it.
func (m *MetadataWatch) drain(w watch.Interface, rv string) (string, bool) {
	for ev := range w.ResultChan() {
		if ev.Type == watch.Error {
			status := apierrors.FromObject(ev.Object)
			return rv, apierrors.IsResourceExpired(status) || apierrors.IsGone(status)
		}
		obj, ok := ev.Object.(*metav1.PartialObjectMetadata)
		if !ok {
			continue
		}
		rv = obj.ResourceVersion
		if ev.Type != watch.Bookmark {
			m.Event(ev.Type, obj)
		}
	}
	return rv, false
}

// Evictor watches RefreshTokens (metadata only, nothing kept) and evicts
// cache entries that changed elsewhere: a revocation on another replica or a
// `kubectl delete rt` takes effect here within the watch's latency.
type Evictor struct {
	Store     *Store
	Metadata  metadata.Interface
	Namespace string
	Log       logr.Logger

	watching atomic.Bool
}

// NeedLeaderElection is false: every replica serves tokens.
func (e *Evictor) NeedLeaderElection() bool { return false }

// Synced reports whether the watch is established, so changes made
// elsewhere are being seen.
func (e *Evictor) Synced() bool { return e.watching.Load() }

// Start watches until ctx ends.
func (e *Evictor) Start(ctx context.Context) error {
	res := e.Metadata.Resource(GroupVersionResource).Namespace(e.Namespace)
	(&MetadataWatch{
		Resource: res,
		Log:      e.Log,
		List: func(ctx context.Context) (string, error) {
			// Whatever happened while not watching is unknown.
			e.Store.Purge()
			list, err := res.List(ctx, metav1.ListOptions{Limit: 1})
			if err != nil {
				return "", err
			}
			return list.ResourceVersion, nil
		},
		Event: func(t watch.EventType, m *metav1.PartialObjectMetadata) {
			if t == watch.Deleted {
				e.Store.Evict(m.Name, "")
			} else {
				e.Store.Evict(m.Name, m.ResourceVersion)
			}
		},
		Watching: e.watching.Store,
	}).Run(ctx)
	return nil
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
