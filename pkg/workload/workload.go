// Package workload authenticates Kubernetes workloads by their
// ServiceAccount tokens (the TokenReview API) and decides which of them may
// exchange their token for rotor tokens or call introspection.
package workload

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	lru "github.com/hashicorp/golang-lru/v2"
	authenticationv1 "k8s.io/api/authentication/v1"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// ServiceAccountPrefix starts the username of every ServiceAccount.
const ServiceAccountPrefix = "system:serviceaccount:"

// ErrNotAuthenticated means the token is not a valid ServiceAccount token
// for rotor's audience (expired, another audience, a deleted pod, not a
// ServiceAccount at all).
var ErrNotAuthenticated = errors.New("not an authenticated ServiceAccount token for this audience")

// ErrUnavailable means the TokenReview could not be made.
var ErrUnavailable = errors.New("token review unavailable")

// Identity is an authenticated ServiceAccount.
type Identity struct {
	Namespace string
	Name      string
	// Username is system:serviceaccount:<namespace>:<name>.
	Username string
	Groups   []string
	// ExpiresAt is the reviewed token's exp: what rotor may grant on its
	// strength must not outlive it.
	ExpiresAt time.Time
}

// Reviewer checks ServiceAccount tokens with the TokenReview API.
type Reviewer struct {
	// Client creates TokenReviews; it needs create on tokenreviews, nothing else.
	Client client.Client
	// Audience is the audience tokens must have been minted for, so a token
	// meant for another service cannot be replayed to rotor.
	Audience string
	// Timeout bounds each review; zero means the caller's context alone.
	Timeout time.Duration
}

// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create

// Review returns the identity of a valid ServiceAccount token.
func (r *Reviewer) Review(ctx context.Context, token string) (Identity, error) {
	if r.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, r.Timeout)
		defer cancel()
	}
	tr := &authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{Token: token, Audiences: []string{r.Audience}}}
	if err := r.Client.Create(ctx, tr); err != nil {
		return Identity{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	st := tr.Status
	// The API server returns the audiences the token was valid for; it must
	// include ours (an authenticator that ignores audiences returns none).
	if !st.Authenticated || st.Error != "" || !slices.Contains(st.Audiences, r.Audience) {
		return Identity{}, ErrNotAuthenticated
	}
	ns, name, ok := SubjectFromUsername(st.User.Username)
	if !ok {
		return Identity{}, ErrNotAuthenticated
	}
	exp, ok := expiry(token)
	if !ok {
		// Tokens for an audience are bound tokens, which always expire; one
		// that does not is not what rotor grants sessions on.
		return Identity{}, ErrNotAuthenticated
	}
	return Identity{Namespace: ns, Name: name, Username: st.User.Username, Groups: st.User.Groups, ExpiresAt: exp}, nil
}

// expiry reads the exp claim of a token the API server has just accepted;
// the signature was checked there, so it is not checked again here.
func expiry(token string) (time.Time, bool) {
	var claims jwt.RegisteredClaims
	if _, _, err := jwt.NewParser().ParseUnverified(token, &claims); err != nil || claims.ExpiresAt == nil {
		return time.Time{}, false
	}
	return claims.ExpiresAt.Time, true
}

// SubjectFromUsername parses system:serviceaccount:<ns>:<name>.
func SubjectFromUsername(u string) (ns, name string, ok bool) {
	rest, found := strings.CutPrefix(u, ServiceAccountPrefix)
	if !found {
		return "", "", false
	}
	ns, name, ok = strings.Cut(rest, ":")
	return ns, name, ok && ns != "" && name != "" && !strings.Contains(name, ":")
}

// Policy says which ServiceAccounts may do something: a list of
// "<namespace>/<serviceaccount>" patterns where either part may be a
// path.Match pattern such as "*" or "team-*". An empty policy allows none.
type Policy []string

// ParsePolicy validates patterns.
func ParsePolicy(patterns []string) (Policy, error) {
	for _, p := range patterns {
		ns, sa, ok := strings.Cut(p, "/")
		if !ok || ns == "" || sa == "" || strings.Contains(sa, "/") {
			return nil, fmt.Errorf("pattern %q is not <namespace>/<serviceaccount>", p)
		}
		if _, err := path.Match(ns, ""); err != nil {
			return nil, fmt.Errorf("pattern %q: %w", p, err)
		}
		if _, err := path.Match(sa, ""); err != nil {
			return nil, fmt.Errorf("pattern %q: %w", p, err)
		}
	}
	return Policy(patterns), nil
}

// Allows reports whether the ServiceAccount matches a pattern.
func (p Policy) Allows(namespace, name string) bool {
	for _, pat := range p {
		pns, psa, _ := strings.Cut(pat, "/")
		if m, _ := path.Match(pns, namespace); !m {
			continue
		}
		if m, _ := path.Match(psa, name); m {
			return true
		}
	}
	return false
}

// CachedReviewer remembers reviews for a short while, keyed by the SHA-256
// of the token (never the token itself): successful ones for TTL, so a
// caller that introspects often costs one TokenReview per TTL, and refused
// ones for NegativeTTL in a cache of their own, so a junk token presented
// again and again costs the API server nothing and cannot push valid
// callers out. A review the API server did not answer is never cached.
type CachedReviewer struct {
	Reviewer    *Reviewer
	TTL         time.Duration
	NegativeTTL time.Duration
	Clock       clock.PassiveClock
	ok          *lru.Cache[[sha256.Size]byte, cachedIdentity]
	refused     *lru.Cache[[sha256.Size]byte, time.Time]
}

type cachedIdentity struct {
	id      Identity
	expires time.Time
}

// NewCachedReviewer caches up to size identities for ttl and up to size
// refusals for negativeTTL; a zero duration caches nothing of that kind.
func NewCachedReviewer(r *Reviewer, ttl, negativeTTL time.Duration, size int, clk clock.PassiveClock) (*CachedReviewer, error) {
	ok, err := lru.New[[sha256.Size]byte, cachedIdentity](size)
	if err != nil {
		return nil, err
	}
	refused, err := lru.New[[sha256.Size]byte, time.Time](size)
	if err != nil {
		return nil, err
	}
	return &CachedReviewer{Reviewer: r, TTL: ttl, NegativeTTL: negativeTTL, Clock: clk, ok: ok, refused: refused}, nil
}

// Review is Reviewer.Review with the caches in front.
func (c *CachedReviewer) Review(ctx context.Context, token string) (Identity, error) {
	key := sha256.Sum256([]byte(token))
	now := c.Clock.Now()
	if e, ok := c.ok.Get(key); ok && now.Before(e.expires) {
		return e.id, nil
	}
	if until, ok := c.refused.Get(key); ok && now.Before(until) {
		return Identity{}, ErrNotAuthenticated
	}
	id, err := c.Reviewer.Review(ctx, token)
	switch {
	case errors.Is(err, ErrNotAuthenticated):
		if c.NegativeTTL > 0 {
			c.refused.Add(key, now.Add(c.NegativeTTL))
		}
		return Identity{}, err
	case err != nil:
		return Identity{}, err
	}
	if c.TTL > 0 {
		c.ok.Add(key, cachedIdentity{id: id, expires: now.Add(c.TTL)})
	}
	return id, nil
}
