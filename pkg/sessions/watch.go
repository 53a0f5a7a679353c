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

// Start watches until ctx ends, re-establishing the watch after errors.
func (e *Evictor) Start(ctx context.Context) error {
	res := e.Metadata.Resource(GroupVersionResource).Namespace(e.Namespace)
	backoff := time.Second
	for ctx.Err() == nil {
		// A fresh start: whatever happened while not watching is unknown.
		e.Store.Purge()
		list, err := res.List(ctx, metav1.ListOptions{Limit: 1})
		if err != nil {
			e.Log.Error(err, "listing sessions to start the eviction watch")
			sleep(ctx, backoff)
			backoff = min(2*backoff, 30*time.Second)
			continue
		}
		rv := list.ResourceVersion
		for ctx.Err() == nil {
			w, err := res.Watch(ctx, metav1.ListOptions{ResourceVersion: rv, AllowWatchBookmarks: true, TimeoutSeconds: ptr.To[int64](300)})
			if err != nil {
				if apierrors.IsResourceExpired(err) || apierrors.IsGone(err) {
					break
				}
				e.watching.Store(false)
				e.Log.Error(err, "watching sessions")
				sleep(ctx, backoff)
				backoff = min(2*backoff, 30*time.Second)
				continue
			}
			e.watching.Store(true)
			backoff = time.Second
			var gone bool
			rv, gone = e.drain(w, rv)
			w.Stop()
			if gone {
				break
			}
		}
		e.watching.Store(false)
	}
	return nil
}

// drain evicts for every event and returns the last resourceVersion seen;
// gone reports that the watch can no longer resume from it.
func (e *Evictor) drain(w watch.Interface, rv string) (string, bool) {
	for ev := range w.ResultChan() {
		switch ev.Type {
		case watch.Error:
			status := apierrors.FromObject(ev.Object)
			return rv, apierrors.IsResourceExpired(status) || apierrors.IsGone(status)
		case watch.Added, watch.Modified, watch.Deleted:
			m, ok := ev.Object.(*metav1.PartialObjectMetadata)
			if !ok {
				continue
			}
			if ev.Type == watch.Deleted {
				e.Store.Evict(m.Name, "")
			} else {
				e.Store.Evict(m.Name, m.ResourceVersion)
			}
			rv = m.ResourceVersion
		case watch.Bookmark:
			if m, ok := ev.Object.(*metav1.PartialObjectMetadata); ok {
				rv = m.ResourceVersion
			}
		}
	}
	return rv, false
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
