package keys

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
)

// CacheByObject restricts the manager cache's Secrets to signing keys in
// namespace, so rotor never caches (or needs RBAC to list) every Secret:
//
//	cache.Options{ByObject: map[client.Object]cache.ByObject{&corev1.Secret{}: keys.CacheByObject(ns)}}
//
// Other Secrets are then invisible to the manager's cached client.
func CacheByObject(namespace string) cache.ByObject {
	return cache.ByObject{
		Namespaces: map[string]cache.Config{namespace: {}},
		Field:      fields.OneTermEqualSelector("type", string(SecretType)),
	}
}

// Set is the issuer's view of the key set, rebuilt from the signing-key
// Secrets. Reads never lock: each rebuild publishes an immutable snapshot.
type Set struct {
	snap atomic.Pointer[snapshot]

	mu sync.Mutex // serialises Update and guards parsed
	// parsed caches parse results by Secret UID and resourceVersion: a
	// rebuild then only parses Secrets that changed.
	parsed map[types.UID]parsedSecret
}

type parsedSecret struct {
	resourceVersion string
	key             *Key
	err             error
}

type snapshot struct {
	active *Key
	byKID  map[string]*Key
	algs   []Algorithm
	jwks   []byte
	etag   string
}

// NewSet returns an empty Set: no active key, an empty JWKS.
func NewSet() *Set {
	s := &Set{parsed: map[types.UID]parsedSecret{}}
	snap, err := newSnapshot(nil)
	if err != nil {
		panic(err) // an empty key list always encodes
	}
	s.snap.Store(snap)
	return s
}

// Active is the key that signs new tokens.
func (s *Set) Active() (*Key, bool) {
	k := s.snap.Load().active
	return k, k != nil
}

// Lookup finds a published key (next, active or retired) by kid.
func (s *Set) Lookup(kid string) (*Key, bool) {
	k, ok := s.snap.Load().byKID[kid]
	return k, ok
}

// JWKS is the RFC 7517 key set of the published keys (public parts, kid, alg,
// use "sig"), and its strong ETag (quoted). The body is shared: do not modify.
func (s *Set) JWKS() (body []byte, etag string) {
	snap := s.snap.Load()
	return snap.jwks, snap.etag
}

// Algorithms lists the algorithms of the published keys, sorted.
func (s *Set) Algorithms() []Algorithm {
	return slices.Clone(s.snap.Load().algs)
}

// ReadyCheck fails until an active key is known (a healthz.Checker).
func (s *Set) ReadyCheck(*http.Request) error {
	if _, ok := s.Active(); !ok {
		return errors.New("no active signing key yet")
	}
	return nil
}

// Watch keeps the Set in step with the signing-key Secrets of namespace in c:
// every add, update or delete of a Secret rebuilds it from c. It works before
// or after c starts; the handler is removed when ctx ends.
func (s *Set) Watch(ctx context.Context, c cache.Cache, namespace string) error {
	inf, err := c.GetInformer(ctx, &corev1.Secret{})
	if err != nil {
		return fmt.Errorf("getting the Secret informer: %w", err)
	}
	logger := log.FromContext(ctx).WithName("keyset")
	refresh := func() {
		// The informer updates its store before it calls handlers, so the
		// list includes the event's change.
		var list corev1.SecretList
		if err := c.List(ctx, &list, client.InNamespace(namespace)); err != nil {
			logger.Error(err, "listing signing-key Secrets")
			return
		}
		s.update(logger, list.Items)
	}
	reg, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { refresh() },
		UpdateFunc: func(any, any) { refresh() },
		DeleteFunc: func(any) { refresh() },
	})
	if err != nil {
		return fmt.Errorf("watching signing-key Secrets: %w", err)
	}
	go func() {
		<-ctx.Done()
		_ = inf.RemoveEventHandler(reg)
	}()
	return nil
}

// Update rebuilds the Set from secrets (those not of SecretType are
// skipped; unreadable or weak keys are left out).
func (s *Set) Update(secrets []corev1.Secret) {
	s.update(logr.Discard(), secrets)
}

func (s *Set) update(logger logr.Logger, secrets []corev1.Secret) {
	s.mu.Lock()
	defer s.mu.Unlock()
	seen := make(map[types.UID]bool, len(secrets))
	var ks []*Key
	for i := range secrets {
		sec := &secrets[i]
		if sec.Type != SecretType {
			continue
		}
		seen[sec.UID] = true
		p, ok := s.parsed[sec.UID]
		if !ok || sec.UID == "" || p.resourceVersion != sec.ResourceVersion {
			k, err := FromSecret(sec)
			p = parsedSecret{resourceVersion: sec.ResourceVersion, key: k, err: err}
			if err != nil {
				// Logged once per version; the controller records an event.
				logger.Info("ignoring unusable signing key", "secret", sec.Name, "error", err.Error())
			}
			if sec.UID != "" {
				s.parsed[sec.UID] = p
			}
		}
		if p.err == nil && p.key.Published() {
			ks = append(ks, p.key)
		}
	}
	for uid := range s.parsed {
		if !seen[uid] {
			delete(s.parsed, uid)
		}
	}
	snap, err := newSnapshot(ks)
	if err != nil {
		// Keeping the last good snapshot is safer than serving a broken one.
		logger.Error(err, "building the JWKS; keeping the previous key set")
		return
	}
	s.snap.Store(snap)
}

func newSnapshot(ks []*Key) (*snapshot, error) {
	snap := &snapshot{active: PickActive(ks), byKID: make(map[string]*Key, len(ks))}
	// Sorting by kid makes the JWKS (and ETag) the same on every replica.
	slices.SortFunc(ks, func(a, b *Key) int { return cmp.Compare(a.KID, b.KID) })
	jwks := struct {
		Keys []jwk `json:"keys"`
	}{Keys: []jwk{}}
	for _, k := range ks {
		if _, dup := snap.byKID[k.KID]; dup {
			// The same key in two Secrets: publish it once; Lookup finds
			// the signing copy.
			if k == snap.active {
				snap.byKID[k.KID] = k
			}
			continue
		}
		snap.byKID[k.KID] = k
		j, err := k.jwk()
		if err != nil {
			return nil, err
		}
		jwks.Keys = append(jwks.Keys, j)
		if !slices.Contains(snap.algs, k.Algorithm) {
			snap.algs = append(snap.algs, k.Algorithm)
		}
	}
	slices.Sort(snap.algs)
	body, err := json.Marshal(jwks)
	if err != nil {
		return nil, fmt.Errorf("encoding JWKS: %w", err)
	}
	sum := sha256.Sum256(body)
	snap.jwks, snap.etag = body, `"`+base64.RawURLEncoding.EncodeToString(sum[:16])+`"`
	return snap, nil
}
