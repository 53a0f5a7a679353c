package oauthclients

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// CacheByObject restricts a cache's Secrets to client secrets in namespace:
// the API server filters by type, so no other Secret reaches rotor.
//
// The manager's cache cannot hold them as well: it already restricts Secrets
// to signing keys with a field selector on type, a cache has one selector per
// kind, and field selectors have no "type in (a, b)" (only =, == and !=,
// ANDed). A label on rotor's Secrets could select both, but Secrets brought
// by hand (keys, and these) would be silently ignored without it. So client
// secrets get a cache of their own, as accounts do: NewSecretCache.
func CacheByObject(namespace string) cache.ByObject {
	return cache.ByObject{
		Namespaces: map[string]cache.Config{namespace: {}},
		Field:      fields.OneTermEqualSelector("type", string(SecretType)),
		Transform:  trimSecret,
	}
}

// trimSecret drops what no reader of client secrets needs: managedFields and
// kubectl's last-applied annotation (a second copy of the hashes). Every data
// key is kept, so that a Secret holding more than hashes is seen and refused.
func trimSecret(obj any) (any, error) {
	s, ok := obj.(*corev1.Secret)
	if !ok {
		return obj, nil // e.g. a deletion tombstone
	}
	s.ManagedFields = nil
	if _, ok := s.Annotations[lastApplied]; ok {
		s.Annotations = maps.Clone(s.Annotations)
		delete(s.Annotations, lastApplied)
	}
	return s, nil
}

// SecretCache is an informer cache of the client-secret Secrets of one
// namespace. Add it to the manager: it runs on every replica (the issuer
// authenticates clients from it, with no API request) and serves a
// controller's watch (source.Kind) and reads (Get, List). Reading any other
// kind through it is an error, not a new informer.
type SecretCache struct {
	cache.Cache
	informer cache.Informer
}

// NewSecretCache builds the cache; the manager starts it.
func NewSecretCache(cfg *rest.Config, scheme *runtime.Scheme, namespace string) (*SecretCache, error) {
	if namespace == "" {
		return nil, errors.New("client secrets: namespace is required")
	}
	c, err := cache.New(cfg, cache.Options{
		Scheme:                      scheme,
		DefaultNamespaces:           map[string]cache.Config{namespace: {}},
		ByObject:                    map[client.Object]cache.ByObject{&corev1.Secret{}: CacheByObject(namespace)},
		ReaderFailOnMissingInformer: true,
	})
	if err != nil {
		return nil, fmt.Errorf("client secrets: creating cache: %w", err)
	}
	inf, err := c.GetInformer(context.Background(), &corev1.Secret{}, cache.BlockUntilSynced(false))
	if err != nil {
		return nil, fmt.Errorf("client secrets: informer: %w", err)
	}
	return &SecretCache{Cache: c, informer: inf}, nil
}

// Informer is the Secrets' informer, for handlers of their changes.
func (c *SecretCache) Informer() cache.Informer { return c.informer }

// NeedLeaderElection is false: every replica authenticates clients.
func (c *SecretCache) NeedLeaderElection() bool { return false }

// errNotSynced is ReadyCheck's answer before the first list completed.
var errNotSynced = errors.New("client-secret cache has not synced yet")

// ReadyCheck is a healthz.Checker: ready once the informer has synced.
func (c *SecretCache) ReadyCheck(*http.Request) error {
	if !c.informer.HasSynced() {
		return errNotSynced
	}
	return nil
}
