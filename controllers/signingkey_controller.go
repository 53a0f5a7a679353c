package controllers

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"rotor.dev/rotor/pkg/keys"
)

// Event reasons of the signing-key controller.
const (
	ReasonKeyGenerated     = "KeyGenerated"
	ReasonKeyAdopted       = "KeyAdopted"
	ReasonKeyActivated     = "KeyActivated"
	ReasonKeyRetired       = "KeyRetired"
	ReasonKeyDeleted       = "KeyDeleted"
	ReasonKeyInvalid       = "KeyInvalid"       // Warning
	ReasonActiveKeyMissing = "ActiveKeyMissing" // Warning: a key was activated without its prepublish period
)

// GeneratedKeyPrefix names generated keys: GeneratedKeyPrefix + n, n one above
// the highest existing. Replicas that race to create the same key compute the
// same name, so one gets AlreadyExists instead of both creating a key.
const GeneratedKeyPrefix = "rotor-signing-key-"

// keySetRequest is the one request every signing-key Secret event maps to:
// the whole key set is reconciled at once.
const keySetRequest = "signing-keys"

// SigningKeyReconciler keeps rotor's signing keys rotating: exactly one active
// key, a next key published at least Prepublish before it signs, retired keys
// published for RetireAfter, then deleted.
//
// Every write is conditional (resourceVersion, UID preconditions, or a
// deterministic name for creates): leader election gives no fencing, so two
// replicas may reconcile at once and must still converge to one active key.
type SigningKeyReconciler struct {
	// Client reads from the manager cache, restricted with keys.CacheByObject.
	Client client.Client
	// Recorder defaults to the manager's events.k8s.io recorder.
	Recorder events.EventRecorder
	// Clock defaults to the real clock.
	Clock     clock.PassiveClock
	Namespace string
	// Algorithm of generated keys.
	Algorithm keys.Algorithm
	// RotationPeriod is how long a key signs before the next one takes over.
	RotationPeriod time.Duration
	// Prepublish is the least time a next key is published before it signs:
	// at least the verifiers' JWKS cache time. Must be below RotationPeriod.
	Prepublish time.Duration
	// RetireAfter is how long a retired key stays published: the longest
	// access-token lifetime plus clock skew (plus verifiers' JWKS cache time).
	RetireAfter time.Duration
}

// +kubebuilder:rbac:groups="",namespace=rotor-system,resources=secrets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=events.k8s.io,namespace=rotor-system,resources=events,verbs=create;patch

// SetupWithManager registers the controller. The manager's cache must restrict
// Secrets with keys.CacheByObject(r.Namespace).
func (r *SigningKeyReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Recorder == nil {
		r.Recorder = mgr.GetEventRecorder("rotor-signing-keys")
	}
	if r.Clock == nil {
		r.Clock = clock.RealClock{}
	}
	if err := r.validate(); err != nil {
		return err
	}
	req := reconcile.Request{NamespacedName: types.NamespacedName{Namespace: r.Namespace, Name: keySetRequest}}
	toKeySet := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		return []reconcile.Request{req}
	})
	isSigningKey := predicate.NewPredicateFuncs(func(o client.Object) bool {
		s, ok := o.(*corev1.Secret)
		return ok && s.Namespace == r.Namespace && s.Type == keys.SecretType
	})
	err := ctrl.NewControllerManagedBy(mgr).
		Named("signingkey").
		Watches(&corev1.Secret{}, toKeySet, builder.WithPredicates(isSigningKey)).
		// With no key at all there is no event: start with one reconcile.
		WatchesRawSource(source.Func(func(_ context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
			q.Add(req)
			return nil
		})).
		Complete(r)
	if err != nil {
		return fmt.Errorf("setting up the signing-key controller: %w", err)
	}
	return nil
}

func (r *SigningKeyReconciler) validate() error {
	var errs []error
	if r.Client == nil || r.Recorder == nil || r.Clock == nil {
		errs = append(errs, errors.New("client, recorder and clock are required"))
	}
	if r.Namespace == "" {
		errs = append(errs, errors.New("namespace is required"))
	}
	if _, err := keys.ParseAlgorithm(string(r.Algorithm)); err != nil {
		errs = append(errs, err)
	}
	if r.RotationPeriod <= 0 || r.RetireAfter <= 0 {
		errs = append(errs, fmt.Errorf("rotation period (%v) and retire-after (%v) must be positive", r.RotationPeriod, r.RetireAfter))
	}
	if r.Prepublish < 0 || r.Prepublish >= r.RotationPeriod {
		errs = append(errs, fmt.Errorf("prepublish (%v) must be at least 0 and below the rotation period (%v)", r.Prepublish, r.RotationPeriod))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("signing-key controller: %w", err)
	}
	return nil
}

// keySet is one reconcile's view of the signing-key Secrets. Helpers update
// it after each successful write, so later steps see their effect.
type keySet struct {
	entries []*entry // usable keys
	// maxIndex is the highest n of the GeneratedKeyPrefix+n names in use,
	// valid or not.
	maxIndex int
}

type entry struct {
	secret *corev1.Secret
	key    *keys.Key
}

func (ks *keySet) keys() []*keys.Key {
	out := make([]*keys.Key, len(ks.entries))
	for i, e := range ks.entries {
		out[i] = e.key
	}
	return out
}

func (ks *keySet) entryOf(k *keys.Key) *entry {
	for _, e := range ks.entries {
		if e.key == k {
			return e
		}
	}
	return nil
}

func (ks *keySet) withState(s keys.State) []*entry {
	var out []*entry
	for _, e := range ks.entries {
		if e.key.State == s {
			out = append(out, e)
		}
	}
	return out
}

// Reconcile brings the key set to its invariants. It reads everything it
// needs each time (no state is kept between reconciles) and requeues for the
// next deadline: a rotation, a promotion becoming allowed, or a deletion.
func (r *SigningKeyReconciler) Reconcile(ctx context.Context, _ ctrl.Request) (ctrl.Result, error) {
	now := r.Clock.Now()
	ks, err := r.load(ctx)
	if err != nil {
		return ctrl.Result{}, err
	}
	for _, step := range []func(context.Context, *keySet, time.Time) error{
		r.adopt,
		r.ensureActive,
		r.rotate,
		r.retireSuperseded,
		r.ensureNext,
		r.deleteExpired,
	} {
		if err := step(ctx, ks, now); err != nil {
			if lostWriteRace(err) {
				// Another reconcile (another replica, or this one before the
				// cache saw its own create) wrote first. Expected, so not an
				// error: decide again from a fresh read shortly.
				log.FromContext(ctx).V(1).Info("lost a write race; reconciling again", "error", err.Error())
				return ctrl.Result{RequeueAfter: lostRaceRetry}, nil
			}
			return ctrl.Result{}, err
		}
	}
	return ctrl.Result{RequeueAfter: r.nextDeadline(ks, now).Sub(now)}, nil
}

// lostRaceRetry is how soon a reconcile that lost a write race runs again;
// the winner's watch event usually triggers it sooner.
const lostRaceRetry = 200 * time.Millisecond

// lostWriteRace: a create found the name taken, an update found a newer
// version, or an update or delete found the Secret gone.
func lostWriteRace(err error) bool {
	return apierrors.IsAlreadyExists(err) || apierrors.IsConflict(err) || apierrors.IsNotFound(err)
}

// load lists the signing-key Secrets and parses them; unusable ones get a
// Warning event and are left alone.
func (r *SigningKeyReconciler) load(ctx context.Context) (*keySet, error) {
	var list corev1.SecretList
	if err := r.Client.List(ctx, &list, client.InNamespace(r.Namespace)); err != nil {
		return nil, fmt.Errorf("listing signing-key Secrets in %s: %w", r.Namespace, err)
	}
	ks := &keySet{}
	for i := range list.Items {
		sec := &list.Items[i]
		if sec.Type != keys.SecretType {
			continue
		}
		if n, ok := generatedIndex(sec.Name); ok && n > ks.maxIndex {
			ks.maxIndex = n
		}
		k, err := keys.FromSecret(sec)
		if err != nil {
			log.FromContext(ctx).Info("ignoring unusable signing key", "secret", sec.Name, "error", err.Error())
			r.Recorder.Eventf(sec, nil, corev1.EventTypeWarning, ReasonKeyInvalid, "Validate",
				"Signing key is not usable and is ignored: %v", err)
			continue
		}
		ks.entries = append(ks.entries, &entry{secret: sec, key: k})
	}
	return ks, nil
}

func generatedIndex(name string) (int, bool) {
	s, ok := strings.CutPrefix(name, GeneratedKeyPrefix)
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	return n, err == nil && n > 0 && strconv.Itoa(n) == s
}

// adopt takes keys brought by hand (no state) into rotation as next keys, and
// fills in missing lifecycle times with now: the safe reading of an unknown
// time, as it delays promotion and deletion rather than hastening them.
func (r *SigningKeyReconciler) adopt(ctx context.Context, ks *keySet, now time.Time) error {
	stamp := keys.CeilTime(now)
	for _, e := range ks.entries {
		k := e.key
		adopting := k.State == keys.StateNew
		needed := adopting || e.secret.Annotations[keys.KIDAnnotation] != k.KID ||
			(k.State == keys.StateNext && k.PublishedAt.IsZero()) ||
			(k.State == keys.StateActive && k.ActivatedAt.IsZero()) ||
			(k.State == keys.StateRetired && k.RetiredAt.IsZero())
		if !needed {
			continue
		}
		err := r.update(ctx, e, func(k *keys.Key) {
			if adopting {
				k.State, k.PublishedAt, k.ActivatedAt, k.RetiredAt = keys.StateNext, stamp, time.Time{}, time.Time{}
			}
			if k.PublishedAt.IsZero() {
				k.PublishedAt = stamp
			}
			if k.State == keys.StateActive && k.ActivatedAt.IsZero() {
				k.ActivatedAt = stamp
			}
			if k.State == keys.StateRetired && k.RetiredAt.IsZero() {
				k.RetiredAt = stamp
			}
		})
		if err != nil {
			return err
		}
		if adopting {
			r.event(e.secret, corev1.EventTypeNormal, ReasonKeyAdopted, "Adopt",
				"Adopted %s key %s as a next key", k.Algorithm, k.KID)
		}
	}
	return nil
}

// ensureActive makes sure some key signs. Without an active key (first start,
// or the active Secret was deleted) availability comes first: the oldest next
// key is promoted at once, or a new key is created active.
func (r *SigningKeyReconciler) ensureActive(ctx context.Context, ks *keySet, now time.Time) error {
	if keys.PickActive(ks.keys()) != nil {
		return nil
	}
	stamp := keys.CeilTime(now)
	if next := keys.NextKeys(ks.keys()); len(next) > 0 {
		e := ks.entryOf(next[0])
		if err := r.activate(ctx, e, stamp); err != nil {
			return err
		}
		r.event(e.secret, corev1.EventTypeWarning, ReasonActiveKeyMissing, "Activate",
			"No active signing key: promoted next key %s at once, %v after it was published", e.key.KID, now.Sub(e.key.PublishedAt).Round(time.Second))
		return nil
	}
	hadKeys := len(ks.entries) > 0
	e, err := r.create(ctx, ks, keys.StateActive, stamp)
	if err != nil {
		return err
	}
	if hadKeys {
		r.event(e.secret, corev1.EventTypeWarning, ReasonActiveKeyMissing, "Activate",
			"No active or next signing key: created key %s active, without prepublishing it", e.key.KID)
	}
	return nil
}

// rotate promotes the oldest next key that has been published for Prepublish
// once the active key has signed for RotationPeriod or a rotation was asked
// for. The old key is retired by retireSuperseded.
func (r *SigningKeyReconciler) rotate(ctx context.Context, ks *keySet, now time.Time) error {
	active := keys.PickActive(ks.keys())
	if active == nil || (!active.RotateRequested && now.Before(active.ActivatedAt.Add(r.RotationPeriod))) {
		return nil
	}
	for _, n := range keys.NextKeys(ks.keys()) {
		if now.Before(n.PublishedAt.Add(r.Prepublish)) {
			continue
		}
		// Activated strictly after the old key, so keys.CompareActive ranks
		// the new key first even if the old key's time came from a clock
		// ahead of ours.
		stamp := keys.CeilTime(now)
		if !stamp.After(active.ActivatedAt) {
			stamp = active.ActivatedAt.Add(time.Second)
		}
		return r.activate(ctx, ks.entryOf(n), stamp)
	}
	return nil // nextDeadline requeues for when a next key may be promoted
}

// activate makes a next key active, leaving the previous active key in place:
// it is retired after this, so there is never a moment without an active key.
func (r *SigningKeyReconciler) activate(ctx context.Context, e *entry, stamp time.Time) error {
	if err := r.update(ctx, e, func(k *keys.Key) {
		k.State, k.ActivatedAt = keys.StateActive, stamp
	}); err != nil {
		return err
	}
	r.event(e.secret, corev1.EventTypeNormal, ReasonKeyActivated, "Activate",
		"Signing key %s is now active", e.key.KID)
	return nil
}

// retireSuperseded retires every active key but the one keys.PickActive
// chooses (after a rotation, or when two keys claim to be active).
func (r *SigningKeyReconciler) retireSuperseded(ctx context.Context, ks *keySet, now time.Time) error {
	winner := keys.PickActive(ks.keys())
	stamp := keys.CeilTime(now)
	for _, e := range ks.withState(keys.StateActive) {
		if e.key == winner {
			continue
		}
		if err := r.update(ctx, e, func(k *keys.Key) {
			k.State, k.RetiredAt, k.RotateRequested = keys.StateRetired, stamp, false
		}); err != nil {
			return err
		}
		r.event(e.secret, corev1.EventTypeNormal, ReasonKeyRetired, "Retire",
			"Signing key %s is retired, superseded by %s; it stays published for %v", e.key.KID, winner.KID, r.RetireAfter)
	}
	return nil
}

// ensureNext creates a next key when none is waiting.
func (r *SigningKeyReconciler) ensureNext(ctx context.Context, ks *keySet, now time.Time) error {
	if len(ks.withState(keys.StateNext)) > 0 {
		return nil
	}
	_, err := r.create(ctx, ks, keys.StateNext, keys.CeilTime(now))
	return err
}

// deleteExpired deletes keys retired for RetireAfter: no unexpired token
// signed by them remains.
func (r *SigningKeyReconciler) deleteExpired(ctx context.Context, ks *keySet, now time.Time) error {
	for _, e := range ks.withState(keys.StateRetired) {
		if now.Before(e.key.RetiredAt.Add(r.RetireAfter)) {
			continue
		}
		// Preconditions: a Secret changed since we read it (re-activated by
		// hand, or replaced under the same name) is not deleted.
		uid, rv := e.secret.UID, e.secret.ResourceVersion
		if err := r.Client.Delete(ctx, e.secret, client.Preconditions{UID: &uid, ResourceVersion: &rv}); err != nil {
			return fmt.Errorf("deleting retired signing key %s: %w", e.secret.Name, err)
		}
		ks.entries = slices.DeleteFunc(ks.entries, func(x *entry) bool { return x == e })
		log.FromContext(ctx).Info("deleted retired signing key", "secret", e.secret.Name, "kid", e.key.KID)
		r.event(e.secret, corev1.EventTypeNormal, ReasonKeyDeleted, "Delete",
			"Deleted signing key %s, retired at %s", e.key.KID, keys.FormatTime(e.key.RetiredAt))
	}
	return nil
}

// create generates a key in state under the next generated name.
func (r *SigningKeyReconciler) create(ctx context.Context, ks *keySet, state keys.State, stamp time.Time) (*entry, error) {
	k, err := keys.Generate(r.Algorithm)
	if err != nil {
		return nil, err
	}
	k.State, k.PublishedAt = state, stamp
	if state == keys.StateActive {
		k.ActivatedAt = stamp
	}
	name := GeneratedKeyPrefix + strconv.Itoa(ks.maxIndex+1)
	sec, err := keys.NewSecret(r.Namespace, name, k)
	if err != nil {
		return nil, err
	}
	if err := r.Client.Create(ctx, sec); err != nil {
		return nil, fmt.Errorf("creating signing key %s: %w", name, err)
	}
	k.SecretName = name
	ks.maxIndex++
	e := &entry{secret: sec, key: k}
	ks.entries = append(ks.entries, e)
	log.FromContext(ctx).Info("generated signing key", "secret", name, "kid", k.KID, "algorithm", k.Algorithm, "state", state)
	r.event(sec, corev1.EventTypeNormal, ReasonKeyGenerated, "Generate",
		"Generated %s key %s as %s", k.Algorithm, k.KID, state)
	if state == keys.StateActive {
		r.event(sec, corev1.EventTypeNormal, ReasonKeyActivated, "Activate", "Signing key %s is now active", k.KID)
	}
	return e, nil
}

// update applies mutate to a copy of e's key, writes the lifecycle onto the
// Secret conditionally on the resourceVersion read, and updates e.
func (r *SigningKeyReconciler) update(ctx context.Context, e *entry, mutate func(*keys.Key)) error {
	k := *e.key
	mutate(&k)
	sec := e.secret.DeepCopy()
	keys.SetLifecycle(sec, &k)
	// Update sends the resourceVersion read: a stale view gets a Conflict.
	if err := r.Client.Update(ctx, sec); err != nil {
		return fmt.Errorf("updating signing key %s to %s: %w", sec.Name, k.State, err)
	}
	log.FromContext(ctx).Info("updated signing key", "secret", sec.Name, "kid", k.KID, "state", k.State)
	e.secret, e.key = sec, &k
	return nil
}

func (r *SigningKeyReconciler) event(regarding *corev1.Secret, eventType, reason, action, note string, args ...any) {
	r.Recorder.Eventf(regarding, nil, eventType, reason, action, note, args...)
}

// nextDeadline is when the key set next needs attention: the active key's
// rotation (not before a next key may be promoted) or a retired key's
// deletion.
func (r *SigningKeyReconciler) nextDeadline(ks *keySet, now time.Time) time.Time {
	var deadlines []time.Time
	if a := keys.PickActive(ks.keys()); a != nil {
		due := a.ActivatedAt.Add(r.RotationPeriod)
		if a.RotateRequested {
			due = now
		}
		if next := keys.NextKeys(ks.keys()); len(next) > 0 {
			if ok := next[0].PublishedAt.Add(r.Prepublish); ok.After(due) {
				due = ok
			}
		}
		deadlines = append(deadlines, due)
	}
	for _, e := range ks.withState(keys.StateRetired) {
		deadlines = append(deadlines, e.key.RetiredAt.Add(r.RetireAfter))
	}
	if len(deadlines) == 0 {
		return now.Add(r.RotationPeriod)
	}
	d := slices.MinFunc(deadlines, time.Time.Compare)
	// A deadline already passed means a step could not act yet (e.g. it
	// lost a race): look again shortly rather than spin.
	if !d.After(now) {
		d = now.Add(time.Second)
	}
	return d
}
