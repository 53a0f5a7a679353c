// Package sessions keeps refresh-token sessions as RefreshToken objects:
// the wire format, hashing, an LRU of recently used sessions, conditional
// writes and watch-driven eviction.
//
// Correctness never depends on the cache: every decision that accepts a
// token ends in a write with the object's resourceVersion as precondition,
// so the API server refuses anything a stale entry would have allowed.
package sessions

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/hashicorp/golang-lru/v2/expirable"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/resourceversion"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	identityv1alpha1 "rotor.dev/rotor/api/v1alpha1"
)

// Garbage collection reads sessions as metadata only, so every write puts
// what it needs into labels, in unix seconds: the effective expiry (the
// earlier of the sliding and the absolute one) and, once revoked, the
// revocation time. Labels rather than annotations: a session already has
// labels, and the API server holds every session decoded in its watch
// cache, where an annotation map of its own cost about 380 bytes a session
// (12% of a decoded session).
const (
	ExpiresAtLabel = "identity.rotor.dev/expires-at"
	RevokedAtLabel = "identity.rotor.dev/revoked-at"
)

// Sessions written before the labels carry the same times in annotations,
// RFC 3339; the collector still reads them, and rotor's next write of such a
// session removes them.
const (
	ExpiresAtAnnotation = "identity.rotor.dev/expires-at"
	RevokedAtAnnotation = "identity.rotor.dev/revoked-at"
)

// Event reasons on RefreshToken objects.
const (
	ReasonReuseDetected    = "RefreshTokenReuse"
	ReasonRevokedAtRefresh = "RefreshTokenRevoked"
	ReasonRaceLostRefused  = "RefreshTokenRaceLost"
)

// Reason says why a refresh token was refused. Every reason is an OAuth
// invalid_grant to the client; they differ in metrics and logs only.
type Reason string

const (
	ReasonMalformed      Reason = "malformed"
	ReasonUnknown        Reason = "unknown"
	ReasonMismatch       Reason = "mismatch"
	ReasonExpired        Reason = "expired"
	ReasonRevoked        Reason = "revoked"
	ReasonReuse          Reason = "reuse"
	ReasonRaceLost       Reason = "race_lost"
	ReasonClientMismatch Reason = "client_mismatch"
	ReasonNotAllowed     Reason = "not_allowed"
	// ReasonClientNotAllowed: the session's OAuth client was deleted, is not
	// Ready, lost the refresh_token grant or the session's audience.
	ReasonClientNotAllowed Reason = "client_not_allowed"
	// ReasonAccountDisabled refused the refresh and revoked the session.
	ReasonAccountDisabled Reason = "account_disabled"
)

// RefusedError is a refresh token that must not be honoured.
type RefusedError struct{ Reason Reason }

func (e *RefusedError) Error() string { return "refresh token refused: " + string(e.Reason) }

func refused(r Reason) error { return &RefusedError{Reason: r} }

// Refused returns a RefusedError, for Prepare functions.
func Refused(r Reason) error { return refused(r) }

// ReasonOf returns the reason of a RefusedError, or "".
func ReasonOf(err error) Reason {
	var r *RefusedError
	if errors.As(err, &r) {
		return r.Reason
	}
	return ""
}

// ErrUnavailable means the API server could not be reached or did not
// answer in time; nothing was handed out. Clients retry later.
var ErrUnavailable = errors.New("session storage unavailable")

// Config configures a Store.
type Config struct {
	Namespace string
	// RefreshTTL is the sliding lifetime of a refresh token.
	RefreshTTL time.Duration
	// MaxLifetime caps a session however often it is refreshed.
	MaxLifetime time.Duration
	// ReuseGrace treats a replay of the immediately previous token within
	// this long after its rotation as a client racing itself: refused, but
	// the session is kept. Zero is strict.
	ReuseGrace time.Duration
	// CacheSize is the number of sessions the LRU holds.
	CacheSize int
	// Timeout bounds each API request, so an outage answers quickly. It
	// must be set: the server's --api-timeout owns the default.
	Timeout  time.Duration
	Clock    clock.PassiveClock
	Recorder events.EventRecorder
	// Writes, when set (NewWriter), makes the store's creates and updates,
	// answered with the session's metadata alone (see write); rotor serve
	// sets it. Nil: they go through the client, whole (the fuzz tests' fake
	// client, the fault tests' interceptors).
	Writes rest.Interface
}

// Grant is what a login establishes.
type Grant struct {
	Subject  string
	Groups   []string
	ClientID string
	Audience []string
	Method   identityv1alpha1.AuthMethod
	// Scope is the granted scope, "" for none.
	Scope string
	// NotAfter, when set, ends the session then at the latest: the expiry
	// of the credential the session was exchanged for.
	NotAfter time.Time
	// RefreshTTL and MaxLifetime are the client's lifetimes; zero keeps the
	// store's. The caller bounds them by the store's (oauthclients.Lifetimes).
	RefreshTTL  time.Duration
	MaxLifetime time.Duration
}

// Refresh is a refresh request as the store judges it.
type Refresh struct {
	// ClientID is the client the request authenticated as (or, for a public
	// client, named); "" when it named none. A session is refreshed only by
	// its own client (RFC 6749 section 6).
	ClientID string
	// Client, when set, resolves the policy of the session's client now,
	// from its spec, before anything is decided: its error is returned
	// unchanged and nothing is written (return Refused to refuse with
	// invalid_grant). nil keeps the store's lifetimes.
	Client func(*identityv1alpha1.RefreshTokenSpec) (ClientPolicy, error)
	// Prepare, when set, runs once the token is accepted (see Prepare).
	Prepare Prepare
}

// ClientPolicy is what a session's client allows, resolved at each refresh
// so that an edit of the client applies to its sessions at their next
// refresh.
type ClientPolicy struct {
	// RefreshTTL is the sliding lifetime a rotation gives the session.
	RefreshTTL time.Duration
	// ReuseGrace is the client's reuse grace, at most the store's (whose
	// successor cache is sized by it); 0 is strict.
	ReuseGrace time.Duration
}

// The issuer reads, creates and conditionally updates sessions, watches
// them for eviction, and records reuse events.
// +kubebuilder:rbac:groups=identity.rotor.dev,namespace=rotor-system,resources=refreshtokens,verbs=get;list;watch;create;update
// +kubebuilder:rbac:groups=events.k8s.io,namespace=rotor-system,resources=events,verbs=create;patch

// Store reads and writes sessions.
type Store struct {
	cfg    Config
	client client.Client
	// cache maps a session name to the last object this replica wrote or
	// read. Entries are never mutated, only replaced.
	cache *lru.Cache[string, *identityv1alpha1.RefreshToken]
	// unknown remembers names the API server did not know, apart from the
	// sessions: junk tokens must not push real sessions out of the cache.
	unknown *lru.Cache[string, struct{}]
	// cacheMu makes Evict's compare-then-remove atomic with respect to
	// remember: otherwise the watch event of this replica's own write can
	// remove the entry that write has just cached, and the next refresh
	// pays a read.
	cacheMu sync.Mutex
	locks   sessionLocks
	// pending remembers rotations whose write had an unknown outcome (the
	// API server went away mid-request). If the write did land, the client
	// never saw the new token and will present the old one again: it gets
	// the stored new token instead of being treated as a replay.
	pending *lru.Cache[string, pendingRotation]
	// successors keeps the last rotation of each session for the reuse
	// grace (in memory only, never stored), so that a second use of one
	// token within the grace gets the same successor. Nil when the grace is
	// zero.
	successors *expirable.LRU[string, pendingRotation]
}

// pendingRotation is a rotation this replica made: from the presented
// secret's hash to the stored one, and the new secret itself.
type pendingRotation struct {
	from, to, secret string
}

// maxUnknown bounds the names remembered as unknown: enough for a client
// retrying a dead token, too few to matter to memory.
const maxUnknown = 4096

// maxSuccessors bounds the successors kept for the grace: at a few hundred
// refreshes a second and a grace of seconds, a few thousand are live.
const maxSuccessors = 16384

// NewStore returns a Store that talks to the API server through c, which
// must not be a cached client.
func NewStore(c client.Client, cfg Config) (*Store, error) {
	if cfg.CacheSize <= 0 {
		return nil, fmt.Errorf("session cache size must be positive, got %d", cfg.CacheSize)
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	if cfg.Timeout <= 0 {
		return nil, fmt.Errorf("session API timeout must be positive, got %s", cfg.Timeout)
	}
	cache, err := lru.New[string, *identityv1alpha1.RefreshToken](cfg.CacheSize)
	if err != nil {
		return nil, err
	}
	pending, err := lru.New[string, pendingRotation](1024)
	if err != nil {
		return nil, err
	}
	unknown, err := lru.New[string, struct{}](maxUnknown)
	if err != nil {
		return nil, err
	}
	st := &Store{cfg: cfg, client: c, cache: cache, unknown: unknown, pending: pending}
	if cfg.ReuseGrace > 0 {
		// The TTL only bounds how long a secret stays in memory; whether a
		// successor may be handed out is decided by the store's clock.
		st.successors = expirable.NewLRU[string, pendingRotation](maxSuccessors, nil, cfg.ReuseGrace+time.Second)
	}
	return st, nil
}

func (s *Store) now() time.Time { return s.cfg.Clock.Now().Truncate(time.Second) }

// Create starts a session: one API write. It returns the wire token.
func (s *Store) Create(ctx context.Context, g Grant) (string, *identityv1alpha1.RefreshToken, error) {
	now := s.now()
	secret, hash := newSecret()
	abs := now.Add(cmp.Or(g.MaxLifetime, s.cfg.MaxLifetime))
	if !g.NotAfter.IsZero() {
		abs = minTime(abs, g.NotAfter.Truncate(time.Second))
	}
	rt := &identityv1alpha1.RefreshToken{
		ObjectMeta: metav1.ObjectMeta{Namespace: s.cfg.Namespace, Name: newName(), Labels: Labels(g.Subject, g.ClientID)},
		Spec: identityv1alpha1.RefreshTokenSpec{
			Subject:   g.Subject,
			ClientID:  g.ClientID,
			State:     identityv1alpha1.SessionActive,
			ExpiresAt: metav1.NewTime(minTime(now.Add(cmp.Or(g.RefreshTTL, s.cfg.RefreshTTL)), abs)),
			Session: identityv1alpha1.Session{
				Groups:            g.Groups,
				Audience:          g.Audience,
				Scope:             g.Scope,
				Method:            g.Method,
				SecretHash:        hash,
				AbsoluteExpiresAt: metav1.NewTime(abs),
				LastUsedAt:        metav1.NewTime(now),
			},
		},
	}
	setCollectionLabels(rt)
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	if err := s.write(ctx, rt, true); err != nil {
		if isQuotaExceeded(err) {
			// The namespace's ResourceQuota (the chart's sessions.quota) is
			// full: no session can be stored until some are collected.
			err = fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		return "", nil, s.apiError("creating session", err)
	}
	s.remember(rt.Name, rt)
	return formatToken(rt.Name, secret), rt, nil
}

// Labels are the labels of a new session: the digests of its subject and
// client (see identityv1alpha1.SubjectLabel), which the session collector
// counts sessions by without reading their spec.
func Labels(subject, clientID string) map[string]string {
	return map[string]string{
		identityv1alpha1.SubjectLabel: LabelValue(subject),
		identityv1alpha1.ClientLabel:  LabelValue(clientID),
	}
}

// LabelValue is the value of the subject and client labels for s: the first
// 16 bytes of its SHA-256, 32 lowercase hex characters (a label value may
// have 63; a subject up to 339). `printf %s "$s" | sha256sum | cut -c1-32`.
func LabelValue(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:LabelDigestBytes])
}

// LabelDigestBytes is the length of the digest in a label value.
const LabelDigestBytes = 16

// isQuotaExceeded reports the ResourceQuota admission refusing a create.
func isQuotaExceeded(err error) bool {
	return apierrors.IsForbidden(err) && strings.Contains(err.Error(), "exceeded quota")
}

// Prepare runs after a refresh token has been accepted and before its
// rotation is written: a last check (such as "the account still exists")
// and the place to mint the access token, so nothing is written that cannot
// be handed out. Its error is returned unchanged and nothing is written,
// except for a *RevokeError, which ends the session.
type Prepare func(*identityv1alpha1.RefreshTokenSpec) error

// RevokeError, returned by a Prepare function, refuses the refresh and
// revokes the session with Reason: for sessions that must never be
// refreshed again, such as those of a deleted account.
type RevokeError struct {
	Reason identityv1alpha1.RevocationReason
}

func (e *RevokeError) Error() string { return "session must be revoked: " + string(e.Reason) }

// errStale says that what a decision was made on has changed (a write
// conflicted or found the session deleted): decide again from a fresh read.
var errStale = errors.New("session changed")

// Rotate redeems a refresh token: it checks the token against the session
// and swaps in a new secret with one conditional update. With the session
// cached, that update is the only API request.
func (s *Store) Rotate(ctx context.Context, token string, req Refresh) (string, *identityv1alpha1.RefreshToken, error) {
	name, hash, ok := ParseToken(token)
	if !ok {
		return "", nil, refused(ReasonMalformed)
	}
	defer s.locks.lock(name)()
	rt, fresh, err := s.get(ctx, name)
	for rereads := 0; err == nil; rereads++ {
		var out string
		var stored *identityv1alpha1.RefreshToken
		out, stored, err = s.redeem(ctx, rt, fresh, hash, req)
		if !errors.Is(err, errStale) {
			return out, stored, err
		}
		rt, err = s.reread(ctx, name, rereads)
		fresh = true
	}
	return "", nil, err
}

// redeem decides on one copy of the session and carries the decision out.
func (s *Store) redeem(ctx context.Context, rt *identityv1alpha1.RefreshToken, fresh bool, hash string, req Refresh) (string, *identityv1alpha1.RefreshToken, error) {
	now := s.now()
	policy := ClientPolicy{RefreshTTL: s.cfg.RefreshTTL, ReuseGrace: s.cfg.ReuseGrace}
	if rt != nil && req.Client != nil {
		var err error
		if policy, err = req.Client(&rt.Spec); err != nil {
			return "", nil, err
		}
		policy.ReuseGrace = min(policy.ReuseGrace, s.cfg.ReuseGrace)
	}
	prepare := req.Prepare
	a := attempt{Session: rt, Fresh: fresh, Hash: hash, ClientID: req.ClientID, ReuseGrace: policy.ReuseGrace, Now: now}
	if rt != nil {
		if p, ok := s.pending.Peek(rt.Name); ok {
			a.Pending = &p
		}
		if s.successors != nil {
			if p, ok := s.successors.Peek(rt.Name); ok {
				a.Successor = &p
			}
		}
	}
	d := decide(a)
	switch d.Outcome {
	case rotate:
		if err := s.runPrepare(ctx, rt, prepare, now); err != nil {
			return "", nil, err
		}
		next, secret := s.rotated(rt, now, policy.RefreshTTL)
		if err := s.update(ctx, next); err != nil {
			if isUnavailable(err) {
				// The write may have landed: remember it for the retry.
				s.pending.Add(rt.Name, pendingRotation{from: hash, to: next.Spec.Session.SecretHash, secret: secret})
			}
			return "", nil, s.writeError("rotating session "+rt.Name, err)
		}
		s.pending.Remove(rt.Name)
		if s.successors != nil {
			s.successors.Add(rt.Name, pendingRotation{from: hash, to: next.Spec.Session.SecretHash, secret: secret})
		}
		return formatToken(rt.Name, secret), next, nil
	case handOutPending:
		if err := s.runPrepare(ctx, rt, prepare, now); err != nil {
			return "", nil, err
		}
		s.pending.Remove(rt.Name)
		return formatToken(rt.Name, a.Pending.secret), rt, nil
	case handOutSuccessor:
		if err := s.runPrepare(ctx, rt, prepare, now); err != nil {
			return "", nil, err
		}
		successorsHandedOut.Inc()
		return formatToken(rt.Name, a.Successor.secret), rt, nil
	case revokeReplay:
		if err := s.revoke(ctx, rt, identityv1alpha1.RevocationReuse, now); err != nil {
			return "", nil, s.writeError("revoking replayed session "+rt.Name, err)
		}
		reuseDetected.Inc()
		s.event(rt, corev1.EventTypeWarning, ReasonReuseDetected, "a rotated refresh token was presented again; the session is revoked")
		return "", nil, refused(d.Reason)
	case reread:
		return "", nil, errStale
	}
	if d.Reason == ReasonRaceLost {
		// Refused without revoking: maybe the owner racing a thief. Leave a
		// trace on the session for whoever investigates.
		raceLostRefused.Inc()
		s.event(rt, corev1.EventTypeWarning, ReasonRaceLostRefused,
			"a rotated refresh token was presented again within the reuse grace and refused; the session is kept")
	}
	return "", nil, refused(d.Reason)
}

// runPrepare runs the caller's Prepare on an accepted session; when it asks
// for a revocation, it writes it and refuses.
func (s *Store) runPrepare(ctx context.Context, rt *identityv1alpha1.RefreshToken, prepare Prepare, now time.Time) error {
	if prepare == nil {
		return nil
	}
	err := prepare(&rt.Spec)
	var revoke *RevokeError
	if !errors.As(err, &revoke) {
		return err
	}
	if err := s.revoke(ctx, rt, revoke.Reason, now); err != nil {
		return s.writeError("revoking session "+rt.Name, err)
	}
	s.event(rt, corev1.EventTypeNormal, ReasonRevokedAtRefresh, "a refresh found the session's "+revocationCause(revoke.Reason)+"; the session is revoked")
	return refused(refusalOf(revoke.Reason))
}

// refusalOf is what a client is refused with when its refresh revoked the
// session.
func refusalOf(r identityv1alpha1.RevocationReason) Reason {
	switch r {
	case identityv1alpha1.RevocationAccountDisabled:
		return ReasonAccountDisabled
	case identityv1alpha1.RevocationReuse:
		return ReasonReuse
	}
	return ReasonRevoked
}

func revocationCause(r identityv1alpha1.RevocationReason) string {
	if r == identityv1alpha1.RevocationAccountDisabled {
		return "account disabled or deleted"
	}
	return "revocation reason " + string(r)
}

func (s *Store) event(rt *identityv1alpha1.RefreshToken, typ, reason, note string) {
	if s.cfg.Recorder != nil {
		s.cfg.Recorder.Eventf(rt, nil, typ, reason, "Revoke", "%s", note)
	}
}

// writeError maps a failed conditional write: a conflict or a deletion
// means the decision was made on a stale copy.
func (s *Store) writeError(what string, err error) error {
	if isStale(err) {
		return errStale
	}
	return s.apiError(what, err)
}

// maxRereads bounds how often one request re-reads a session that keeps
// changing under it; each re-read follows a lost write race.
const maxRereads = 3

func (s *Store) reread(ctx context.Context, name string, done int) (*identityv1alpha1.RefreshToken, error) {
	if done >= maxRereads {
		return nil, fmt.Errorf("session %s changed under %d consecutive writes: %w", name, maxRereads, ErrUnavailable)
	}
	s.cache.Remove(name)
	return s.read(ctx, name)
}

// Revoke ends the session a refresh token belongs to (RFC 7009). Tokens
// that name no session, or whose secret is neither the current nor the
// previous one, are ignored: revocation must not become an oracle. allow,
// when set, runs once the token matched, before the write: its error (the
// request's client is not the session's, RFC 7009 section 2.1) is returned
// unchanged and nothing is written.
func (s *Store) Revoke(ctx context.Context, token string, allow func(*identityv1alpha1.RefreshTokenSpec) error) error {
	name, hash, ok := ParseToken(token)
	if !ok {
		return nil
	}
	defer s.locks.lock(name)()
	rt, fresh, err := s.get(ctx, name)
loop:
	for rereads := 0; err == nil && rt != nil && rt.Spec.State == identityv1alpha1.SessionActive; rereads++ {
		matches := hashEqual(hash, rt.Spec.Session.SecretHash) || hashEqual(hash, rt.Spec.Session.PreviousSecretHash)
		switch {
		case !matches && fresh:
			return nil
		case matches:
			if allow != nil {
				if err := allow(&rt.Spec); err != nil {
					return err
				}
				allow = nil // a session's client never changes
			}
			if err = s.revoke(ctx, rt, identityv1alpha1.RevocationRevoked, s.now()); err == nil || !isStale(err) {
				break loop
			}
		}
		rt, err = s.reread(ctx, name, rereads)
		fresh = true
	}
	if err != nil {
		return s.apiError("revoking session "+name, err)
	}
	return nil
}

// Lookup returns the session a refresh token belongs to if a refresh with
// it would rotate now, for introspection. It judges the token as Rotate
// does but never writes; it may read the API server.
func (s *Store) Lookup(ctx context.Context, token string) (*identityv1alpha1.RefreshToken, error) {
	name, hash, ok := ParseToken(token)
	if !ok {
		return nil, refused(ReasonMalformed)
	}
	rt, fresh, err := s.get(ctx, name)
	for rereads := 0; err == nil; rereads++ {
		// No client_id and no pending rotation: introspection asks about
		// the token itself, and a lost answer's old token is not current.
		d := decide(attempt{Session: rt, Fresh: fresh, Hash: hash, ReuseGrace: s.cfg.ReuseGrace, Now: s.now()})
		switch d.Outcome {
		case rotate:
			return rt, nil
		case reread:
			rt, err = s.reread(ctx, name, rereads)
			fresh = true
			continue
		}
		// A replay is only reported: introspection has no side effects.
		return nil, refused(cmp.Or(d.Reason, ReasonMismatch))
	}
	return nil, err
}

func (s *Store) rotated(rt *identityv1alpha1.RefreshToken, now time.Time, ttl time.Duration) (*identityv1alpha1.RefreshToken, string) {
	next := rt.DeepCopy()
	secret, hash := newSecret()
	next.Spec.Session.PreviousSecretHash = rt.Spec.Session.SecretHash
	next.Spec.Session.SecretHash = hash
	next.Spec.Session.Rotations++
	next.Spec.Session.LastUsedAt = metav1.NewTime(now)
	next.Spec.ExpiresAt = metav1.NewTime(minTime(now.Add(cmp.Or(ttl, s.cfg.RefreshTTL)), rt.Spec.Session.AbsoluteExpiresAt.Time))
	setCollectionLabels(next) // the labels map exists from here on
	// A session from before rotor labelled sessions gains its labels with
	// the write it gets anyway, and from then on counts against its
	// subject's limit.
	if next.Labels[identityv1alpha1.SubjectLabel] == "" || next.Labels[identityv1alpha1.ClientLabel] == "" {
		maps.Copy(next.Labels, Labels(next.Spec.Subject, next.Spec.ClientID))
	}
	return next, secret
}

func (s *Store) revoke(ctx context.Context, rt *identityv1alpha1.RefreshToken, reason identityv1alpha1.RevocationReason, now time.Time) error {
	next := rt.DeepCopy()
	t := metav1.NewTime(now)
	next.Spec.State = identityv1alpha1.SessionRevoked
	next.Spec.Session.RevokedAt = &t
	next.Spec.Session.RevocationReason = reason
	setCollectionLabels(next)
	if err := s.update(ctx, next); err != nil {
		return err
	}
	sessionsRevoked.WithLabelValues(string(reason)).Inc()
	return nil
}

// update writes rt conditionally on its resourceVersion and caches the result.
//
// Every update also clears the session's managedFields (a list holding one
// empty entry is the API server's "reset"): server-side apply's bookkeeping
// is a third of a freshly created session's stored bytes, held in etcd, in
// the API server's watch cache and in every watch event, and nothing reads
// it, since rotor is the only writer of its sessions and nobody applies
// them. A session is stored with it from its create (the API server records
// a creator's fields whatever the request says) until its first rotation.
func (s *Store) update(ctx context.Context, rt *identityv1alpha1.RefreshToken) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	// A new slice each time: decoding the answer reuses the request's.
	rt.ManagedFields = []metav1.ManagedFieldsEntry{{}}
	if err := s.write(ctx, rt, false); err != nil {
		// After a conflict or an unknown outcome the entry is stale.
		s.cache.Remove(rt.Name)
		return err
	}
	s.remember(rt.Name, rt)
	return nil
}

// get returns the session from the cache, or reads it. fresh reports a read.
func (s *Store) get(ctx context.Context, name string) (*identityv1alpha1.RefreshToken, bool, error) {
	if rt, ok := s.cache.Get(name); ok {
		observeCache(true)
		return rt, false, nil
	}
	if s.unknown.Contains(name) {
		observeCache(true)
		return nil, false, nil
	}
	observeCache(false)
	rt, err := s.read(ctx, name)
	return rt, true, err
}

// read gets the session from the API server and caches what it finds,
// including its absence. A session rotor cannot decode, or whose spec fails
// its checks (the API server validates only the fields it selects on and
// prints), was edited by hand: it is treated as absent, so nothing
// refreshes, revokes or introspects it, until the watch reports another
// change to it.
func (s *Store) read(ctx context.Context, name string) (*identityv1alpha1.RefreshToken, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	// Unstructured, so that a field of the wrong type is told apart from a
	// failed request.
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(identityv1alpha1.GroupVersion.WithKind("RefreshToken"))
	err := s.client.Get(ctx, client.ObjectKey{Namespace: s.cfg.Namespace, Name: name}, u)
	switch {
	case apierrors.IsNotFound(err):
		s.remember(name, nil)
		return nil, nil
	case err != nil:
		return nil, s.apiError("reading session "+name, err)
	}
	rt, err := decodeSession(u)
	if err != nil {
		sessionsDamaged.Inc()
		// The errors name fields, never their values.
		logr.FromContextOrDiscard(ctx).Error(err, "refusing a session that fails rotor's checks (edited by hand?)", "session", name)
		s.remember(name, nil)
		return nil, nil
	}
	s.remember(name, rt)
	return rt, nil
}

// decodeSession converts a session read as unstructured and checks it.
func decodeSession(u *unstructured.Unstructured) (*identityv1alpha1.RefreshToken, error) {
	rt := &identityv1alpha1.RefreshToken{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, rt); err != nil {
		return nil, fmt.Errorf("decoding session: %w", err)
	}
	if err := rt.Spec.Validate(); err != nil {
		return nil, err
	}
	return rt, nil
}

// Evict drops a session from the cache unless the cache already holds the
// given resourceVersion or a newer one (the event of a refresh can arrive
// after this replica cached the next one); the watch calls it for changes
// made elsewhere. An empty resourceVersion (a deletion) always evicts.
func (s *Store) Evict(name, resourceVersion string) {
	s.cacheMu.Lock()
	defer s.cacheMu.Unlock()
	s.unknown.Remove(name)
	if rt, ok := s.cache.Peek(name); ok && resourceVersion != "" {
		if c, err := resourceversion.CompareResourceVersion(rt.ResourceVersion, resourceVersion); err == nil && c >= 0 {
			return
		}
	}
	s.cache.Remove(name)
}

// remember caches what this replica wrote or read; nil is a name the API
// server does not know.
func (s *Store) remember(name string, rt *identityv1alpha1.RefreshToken) {
	s.cacheMu.Lock()
	defer s.cacheMu.Unlock()
	if rt == nil {
		s.cache.Remove(name)
		s.unknown.Add(name, struct{}{})
		return
	}
	s.unknown.Remove(name)
	s.cache.Add(name, rt)
}

// Purge empties the cache, when the watch lost track of changes.
func (s *Store) Purge() {
	s.cache.Purge()
	s.unknown.Purge()
}

func (s *Store) apiError(what string, err error) error {
	if errors.Is(err, ErrUnavailable) || ReasonOf(err) != "" {
		return err
	}
	if isUnavailable(err) {
		return fmt.Errorf("%s: %w: %w", what, ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

func isStale(err error) bool { return apierrors.IsConflict(err) || apierrors.IsNotFound(err) }

// isUnavailable is true for failures that say nothing about the request
// itself: timeouts, throttling, an API server that is down or overloaded.
func isUnavailable(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	if apierrors.IsTimeout(err) || apierrors.IsServerTimeout(err) || apierrors.IsTooManyRequests(err) ||
		apierrors.IsServiceUnavailable(err) || apierrors.IsInternalError(err) || apierrors.IsUnexpectedServerError(err) {
		return true
	}
	var status apierrors.APIStatus
	// Anything that is not an API status is a transport error.
	return !errors.As(err, &status)
}

// setCollectionLabels writes the times the collector reads (ExpiresAtLabel,
// RevokedAtLabel) and drops their legacy annotations.
func setCollectionLabels(rt *identityv1alpha1.RefreshToken) {
	if rt.Labels == nil {
		rt.Labels = map[string]string{}
	}
	rt.Labels[ExpiresAtLabel] = strconv.FormatInt(rt.Spec.EndsAt().Unix(), 10)
	if rt.Spec.Session.RevokedAt != nil {
		rt.Labels[RevokedAtLabel] = strconv.FormatInt(rt.Spec.Session.RevokedAt.Unix(), 10)
	}
	delete(rt.Annotations, ExpiresAtAnnotation)
	delete(rt.Annotations, RevokedAtAnnotation)
	if len(rt.Annotations) == 0 {
		rt.Annotations = nil
	}
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
