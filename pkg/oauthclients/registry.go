package oauthclients

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	identityv1alpha1 "rotor.dev/rotor/api/v1alpha1"
	"rotor.dev/rotor/pkg/ratelimit"
)

// Registry resolves and authenticates the OAuth clients of one namespace
// from informer caches: the manager's cache for OAuthClients and the
// SecretCache for their Secrets. It makes no API request per call. The token
// endpoint (pkg/issuer) calls it for every request, and it throttles failed
// client authentications as pkg/accounts does failed logins.
type Registry struct {
	clients   client.Reader
	secrets   *SecretCache
	namespace string
	throttle  *ratelimit.Throttle
	clock     clock.PassiveClock

	// memo holds each found client as resolved and judged, with its hashes,
	// once InvalidateOn has wired the informers whose every event clears
	// it: reading the caches costs more than the rest of a client
	// credentials grant but its signature (controller-runtime's namespaced
	// cache consults the REST mapper and deep-copies on every Get), and
	// clients change rarely. gen counts clears, so that a resolution that
	// read the caches before a change is not stored after it.
	memoMu sync.RWMutex
	memo   map[string]memoEntry
	gen    uint64
}

type memoEntry struct {
	client *Client
	hashes []string
}

// RegistryOptions configure a Registry.
type RegistryOptions struct {
	// Namespace holds the OAuthClients and their Secrets (rotor's own).
	// Required.
	Namespace string
	// FailuresPerMinute and Burst are the failed-authentication budget, as
	// for logins: per (client_id, client address), with a client_id over
	// all addresses and an address over all clients allowed multiples of it
	// (see ratelimit.Throttle). Zero means pkg/accounts' defaults, 6 and 10.
	FailuresPerMinute float64
	Burst             int
	// Clock paces the throttle; tests move it. nil means the real clock.
	Clock clock.PassiveClock
}

// Zero budgets in RegistryOptions default to pkg/accounts' own
// (DefaultFailuresPerMinute, DefaultBurst), so that a client secret is
// guessed no faster than a password.
const (
	defaultFailuresPerMinute = 6
	defaultBurst             = 10
	// throttleSize bounds each map of the throttle, as
	// accounts.DefaultMaxTracked does the login throttle's.
	throttleSize = 100000
)

// unknownClientKey is the throttle's subject for every client_id that names
// no client, so junk ids share one budget instead of flooding the table. A
// NUL is in no object name.
const unknownClientKey = "\x00unknown"

// retryAfter is what a throttled client is told to wait: the period budgets
// are counted in, not the exact refill time, which would tell a guesser its
// budget.
const retryAfter = time.Minute

// NewRegistry returns a Registry of the clients of o.Namespace. clients must
// be a cache reader (the manager's GetCache(), or its client, whose reads
// are cached): a Registry is on the path of every token request, and an
// uncached reader would make an API request for each.
func NewRegistry(clients client.Reader, secrets *SecretCache, o RegistryOptions) (*Registry, error) {
	if o.Namespace == "" {
		return nil, errors.New("oauth clients: RegistryOptions.Namespace is required")
	}
	if o.FailuresPerMinute < 0 || o.Burst < 0 {
		return nil, errors.New("oauth clients: negative rate limit options")
	}
	if o.FailuresPerMinute == 0 {
		o.FailuresPerMinute = defaultFailuresPerMinute
	}
	if o.Burst == 0 {
		o.Burst = defaultBurst
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	th, err := ratelimit.NewThrottle(o.FailuresPerMinute, o.Burst, throttleSize)
	if err != nil {
		return nil, fmt.Errorf("oauth clients: throttle: %w", err)
	}
	return &Registry{clients: clients, secrets: secrets, namespace: o.Namespace, throttle: th, clock: o.Clock}, nil
}

// Lookup resolves client id. found is false when there is no such
// OAuthClient (or id cannot name one). A client that is found but may not be
// served has Ready false and NotReady saying why: a refresh for it is
// refused (invalid_grant), an authentication invalid_client. err is the
// cache's, for the caller to answer 503/500 (such as a cache not started).
//
// Ready means all of:
//   - the reconciler's Ready condition is True (whatever generation it
//     judged, so that an edit does not take the client offline until the
//     reconciler, which runs on the leader only, catches up);
//   - the spec as it is now passes CheckSpec, so that an edit breaking the
//     client takes effect at once;
//   - for a Confidential client, its Secret is in the cache now and holds a
//     well-formed hash, so that a Secret deleted or emptied takes effect at
//     once too.
func (r *Registry) Lookup(ctx context.Context, id string) (c *Client, found bool, err error) {
	c, _, found, err = r.lookup(ctx, id)
	return c, found, err
}

// InvalidateOn makes the Registry remember resolved clients until any of
// informers (the OAuthClients' and the client Secrets') reports a change.
// The informers update their stores before they call handlers, so whatever
// is resolved after the clear sees the change.
func (r *Registry) InvalidateOn(informers ...cache.Informer) error {
	clearAll := func() {
		r.memoMu.Lock()
		defer r.memoMu.Unlock()
		r.gen++
		clear(r.memo)
	}
	handler := toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { clearAll() },
		UpdateFunc: func(any, any) { clearAll() },
		DeleteFunc: func(any) { clearAll() },
	}
	for _, inf := range informers {
		if _, err := inf.AddEventHandler(handler); err != nil {
			return fmt.Errorf("oauth clients: watching for changes: %w", err)
		}
	}
	r.memoMu.Lock()
	defer r.memoMu.Unlock()
	r.memo = map[string]memoEntry{}
	return nil
}

// lookup is Lookup, also returning a Confidential client's hashes.
func (r *Registry) lookup(ctx context.Context, id string) (*Client, []string, bool, error) {
	r.memoMu.RLock()
	e, hit := r.memo[id]
	gen, memoOn := r.gen, r.memo != nil
	r.memoMu.RUnlock()
	if hit {
		return e.client, e.hashes, true, nil
	}
	c, hashes, found, err := r.resolveFromCaches(ctx, id)
	if found && memoOn {
		// Only clients that exist are remembered: junk ids cannot grow it.
		r.memoMu.Lock()
		if r.gen == gen {
			r.memo[id] = memoEntry{client: c, hashes: hashes}
		}
		r.memoMu.Unlock()
	}
	return c, hashes, found, err
}

// resolveFromCaches reads and judges client id.
func (r *Registry) resolveFromCaches(ctx context.Context, id string) (*Client, []string, bool, error) {
	// A client_id that is no object name names no client; asking the cache
	// for it would only risk an odd key.
	if len(validation.IsDNS1123Subdomain(id)) > 0 {
		return nil, nil, false, nil
	}
	oac := &identityv1alpha1.OAuthClient{}
	err := r.clients.Get(ctx, client.ObjectKey{Namespace: r.namespace, Name: id}, oac)
	switch {
	case apierrors.IsNotFound(err):
		return nil, nil, false, nil
	case err != nil:
		return nil, nil, false, fmt.Errorf("reading OAuthClient %s: %w", id, err)
	}
	c, hashes, err := r.judge(ctx, oac)
	if err != nil {
		return nil, nil, false, err
	}
	return c, hashes, true, nil
}

// judge resolves oac and says whether it is Ready (see Lookup), also
// returning a Ready Confidential client's hashes.
func (r *Registry) judge(ctx context.Context, oac *identityv1alpha1.OAuthClient) (*Client, []string, error) {
	c := resolve(oac)
	if cond := apimeta.FindStatusCondition(oac.Status.Conditions, identityv1alpha1.ConditionReady); cond == nil || cond.Status != metav1.ConditionTrue {
		c.NotReady = "its Ready condition is not True"
		return c, nil, nil
	}
	if err := CheckSpec(&oac.Spec); err != nil {
		c.NotReady = err.Error()
		return c, nil, nil
	}
	var hashes []string
	if c.Type == identityv1alpha1.ClientTypeConfidential {
		sec := &corev1.Secret{}
		err := r.secrets.Get(ctx, client.ObjectKey{Namespace: r.namespace, Name: oac.Spec.SecretRef.Name}, sec)
		switch {
		case apierrors.IsNotFound(err):
			c.NotReady = "its Secret " + oac.Spec.SecretRef.Name + " is missing"
			return c, nil, nil
		case err != nil:
			return nil, nil, fmt.Errorf("reading Secret %s: %w", oac.Spec.SecretRef.Name, err)
		}
		if hashes, err = ParseSecret(sec); err != nil {
			c.NotReady = err.Error()
			return c, nil, nil
		}
	}
	c.Ready = true
	return c, hashes, nil
}

// Scopes is the sorted union of the scopes of the namespace's clients that
// Lookup would say are Ready, for discovery's scopes_supported; nil when
// there are none. It lists from the cache: no API request.
func (r *Registry) Scopes(ctx context.Context) ([]string, error) {
	var list identityv1alpha1.OAuthClientList
	if err := r.clients.List(ctx, &list, client.InNamespace(r.namespace)); err != nil {
		return nil, fmt.Errorf("listing OAuthClients: %w", err)
	}
	var scopes []string
	for i := range list.Items {
		c, _, err := r.judge(ctx, &list.Items[i])
		if err != nil {
			return nil, err
		}
		if c.Ready {
			scopes = append(scopes, list.Items[i].Spec.Scopes...)
		}
	}
	slices.Sort(scopes)
	return slices.Compact(scopes), nil
}

// resolve is the Client view of oac, Ready false.
func resolve(oac *identityv1alpha1.OAuthClient) *Client {
	c := &Client{
		ID:        oac.Name,
		Type:      oac.Spec.Type,
		Grants:    make(map[string]struct{}, len(oac.Spec.GrantTypes)),
		Audiences: append([]string(nil), oac.Spec.Audiences...),
		Scopes:    make(map[string]struct{}, len(oac.Spec.Scopes)),
	}
	for _, g := range oac.Spec.GrantTypes {
		c.Grants[string(g)] = struct{}{}
	}
	for _, s := range oac.Spec.Scopes {
		c.Scopes[s] = struct{}{}
	}
	if oac.Spec.TokenLifetimes != nil {
		c.Overrides = oac.Spec.TokenLifetimes.DeepCopy()
	}
	return c
}

// Authenticate authenticates the client of creds (from ClientCredentials),
// sent from clientAddr (the request's IP, optionally with a port), and
// returns it, Ready. Its refusals are *Error:
//   - no client_id: invalid_request, 400 (the caller substitutes
//     --default-client-id before calling, so this is a request that had to
//     name its client and did not); it is not throttled;
//   - the client_id or clientAddr out of failure budget: invalid_client, 429
//     with RetryAfter, before the secret is checked (see RegistryOptions);
//   - an unknown client, a client that is not Ready, a Confidential client
//     without a secret or with a wrong one, a Public client sending a secret:
//     invalid_client, 401 (RFC 6749 section 5.2: "Client authentication
//     failed (e.g., unknown client, no client authentication included, or
//     unsupported authentication method)"). A client that is not Ready is
//     invalid_client and not unauthorized_client: unauthorized_client is
//     for "the authenticated client" using a grant it may not, while a
//     client that is not Ready cannot be authenticated at all (its Secret may
//     be missing or malformed) and must not be served whatever the grant.
//
// A Confidential client's secret is checked with Verify against both hashes
// of its Secret, in constant time. An empty secret is no secret, whatever the
// method: a Public client using HTTP Basic with an empty password (as
// golang.org/x/oauth2 does in its header style) is authenticated.
//
// Every invalid_client refusal but the throttle's spends the failure budget,
// as a failed login does. Any other error is the cache's (see Lookup).
// Descriptions never contain a secret or a hash.
func (r *Registry) Authenticate(ctx context.Context, creds Credentials, clientAddr string) (*Client, error) {
	basic := creds.Method == MethodBasic
	if creds.ID == "" {
		return nil, badRequest(CodeInvalidRequest, ReasonMissingClientID, basic, "missing parameter client_id")
	}
	c, hashes, found, err := r.lookup(ctx, creds.ID)
	if err != nil {
		return nil, err
	}
	key := unknownClientKey
	if found {
		key = creds.ID
	}
	at, ok := r.throttle.Admit(key, ratelimit.AddressKey(clientAddr), r.clock.Now())
	if !ok {
		return nil, &Error{
			Code: CodeInvalidClient, Status: http.StatusTooManyRequests, Reason: ReasonThrottled, Basic: basic,
			Description: "too many failed client authentications; retry later", RetryAfter: retryAfter,
		}
	}
	e := check(c, hashes, found, creds, basic)
	at.Done(e != nil, r.clock.Now())
	if e != nil {
		return nil, e
	}
	return c, nil
}

// check is Authenticate's verdict on an admitted attempt: nil or an
// invalid_client *Error.
func check(c *Client, hashes []string, found bool, creds Credentials, basic bool) *Error {
	switch {
	case !found:
		return invalidClient(ReasonUnknownClient, basic, "unknown client")
	case !c.Ready:
		return invalidClient(ReasonNotReady, basic, "the client is not ready; see its Ready condition")
	}
	// CheckSpec has passed: the type is Confidential or Public.
	if c.Type == identityv1alpha1.ClientTypeConfidential {
		if creds.Secret == "" {
			return invalidClient(ReasonMissingSecret, basic,
				"the client must authenticate with its secret (client_secret_basic or client_secret_post)")
		}
		if !Verify(creds.Secret, hashes) {
			return invalidClient(ReasonWrongSecret, basic, "client authentication failed")
		}
		return nil
	}
	if creds.Secret != "" {
		return invalidClient(ReasonUnexpectedSecret, basic, "a public client has no secret: send client_id only")
	}
	return nil
}
