package controllers

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	identityv1alpha1 "rotor.dev/rotor/api/v1alpha1"
	"rotor.dev/rotor/pkg/oauthclients"
)

// Reasons of an OAuthClient's Ready condition, and of the events recorded
// when it changes: Ready (Normal) or what to fix (Warning).
const (
	ReasonReady = "Ready"
	// ReasonSecretMissing: a Confidential client's secretRef names no Secret.
	ReasonSecretMissing = "SecretMissing"
	// ReasonSecretWrongType: the Secret is not of type
	// identity.rotor.dev/client-secret.
	ReasonSecretWrongType = "SecretWrongType"
	// ReasonNoSecretHash: the Secret has no secretHash.
	ReasonNoSecretHash = "NoSecretHash"
	// ReasonSecretMalformed: a hash is not a base64url SHA-256, or the Secret
	// holds more than hashes.
	ReasonSecretMalformed = "SecretMalformed"
	// ReasonGrantsInconsistent: the grant list cannot work (refresh_token
	// without a grant that creates sessions).
	ReasonGrantsInconsistent = "GrantsInconsistent"
	// ReasonPublicClientCredentials: a Public client with client_credentials
	// (the schema refuses it; an object stored before it did is caught here).
	ReasonPublicClientCredentials = "PublicClientCredentials"
	// ReasonSecretRefInconsistent: a Confidential client without secretRef,
	// or a Public one with it (the schema refuses both, as above).
	ReasonSecretRefInconsistent = "SecretRefInconsistent"
	// ReasonSpecInvalid: anything else the schema refuses today, in an
	// object stored before it did.
	ReasonSpecInvalid = "SpecInvalid"
)

// secretRefIndex indexes OAuthClients by spec.secretRef.name in the manager
// cache, so that a Secret event finds the clients naming it.
const secretRefIndex = "spec.secretRef.name"

// recheckSecret is how often a client whose Secret is missing or of another
// type is looked at again: the client-secret cache sees no event for a Secret
// of another type (so none when one is deleted or replaced by hand).
const recheckSecret = time.Minute

// OAuthClientReconciler reports in each OAuthClient's status whether the
// issuer may serve it: a Ready condition whose reason says what to fix. It
// writes nothing but the status.
type OAuthClientReconciler struct {
	// Client reads OAuthClients from the manager cache and patches their
	// status; defaults to the manager's, which a Secret event needs (it
	// finds the clients naming the Secret through a field index of that
	// cache).
	Client client.Client
	// Secrets is the cache of client-secret Secrets (an
	// oauthclients.SecretCache, added to the manager too): the controller
	// reads and watches Secrets through it only.
	Secrets cache.Cache
	// APIReader reads a Secret the cache does not hold, to tell a missing
	// Secret from one of another type. Defaults to the manager's.
	APIReader client.Reader
	// Recorder defaults to the manager's events.k8s.io recorder.
	Recorder events.EventRecorder
	// Clock stamps condition transitions; defaults to the real clock.
	Clock clock.PassiveClock
}

// +kubebuilder:rbac:groups=identity.rotor.dev,namespace=rotor-system,resources=oauthclients,verbs=get;list;watch
// +kubebuilder:rbac:groups=identity.rotor.dev,namespace=rotor-system,resources=oauthclients/status,verbs=get;update;patch
// +kubebuilder:rbac:groups="",namespace=rotor-system,resources=secrets,verbs=get;list;watch
// +kubebuilder:rbac:groups=events.k8s.io,namespace=rotor-system,resources=events,verbs=create;patch

// SetupWithManager registers the controller, watching OAuthClients in the
// manager cache and client-secret Secrets in r.Secrets.
func (r *OAuthClientReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Client == nil {
		r.Client = mgr.GetClient()
	}
	if r.APIReader == nil {
		r.APIReader = mgr.GetAPIReader()
	}
	if r.Recorder == nil {
		r.Recorder = mgr.GetEventRecorder("rotor-oauth-clients")
	}
	if r.Clock == nil {
		r.Clock = clock.RealClock{}
	}
	if r.Secrets == nil {
		return errors.New("OAuthClient controller: the client-secret cache is required")
	}
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &identityv1alpha1.OAuthClient{}, secretRefIndex, indexSecretRef); err != nil {
		return fmt.Errorf("indexing OAuthClients by secretRef: %w", err)
	}
	err := ctrl.NewControllerManagedBy(mgr).
		Named("oauthclient").
		// Status patches (ours) change no generation and need no reconcile.
		For(&identityv1alpha1.OAuthClient{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		WatchesRawSource(source.Kind(r.Secrets, &corev1.Secret{},
			handler.TypedEnqueueRequestsFromMapFunc(r.clientsNaming))).
		Complete(r)
	if err != nil {
		return fmt.Errorf("setting up the OAuthClient controller: %w", err)
	}
	return nil
}

func indexSecretRef(o client.Object) []string {
	c, ok := o.(*identityv1alpha1.OAuthClient)
	if !ok || c.Spec.SecretRef == nil {
		return nil
	}
	return []string{c.Spec.SecretRef.Name}
}

// clientsNaming maps a Secret event to the clients whose secretRef names it.
func (r *OAuthClientReconciler) clientsNaming(ctx context.Context, sec *corev1.Secret) []reconcile.Request {
	var list identityv1alpha1.OAuthClientList
	if err := r.Client.List(ctx, &list, client.InNamespace(sec.Namespace), client.MatchingFields{secretRefIndex: sec.Name}); err != nil {
		log.FromContext(ctx).Error(err, "listing the OAuthClients of a Secret", "secret", sec.Name)
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(list.Items))
	for _, c := range list.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: c.Namespace, Name: c.Name}})
	}
	return reqs
}

// verdict is what one reconcile found: the Ready condition's status, reason
// and message, and whether to look again after recheckSecret.
type verdict struct {
	ready   bool
	reason  string
	message string
	recheck bool
}

// Reconcile judges the client and its Secret, then writes the status once.
func (r *OAuthClientReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	oac := &identityv1alpha1.OAuthClient{}
	if err := r.Client.Get(ctx, req.NamespacedName, oac); err != nil {
		// Deleted: nothing to report on.
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	v, err := r.judge(ctx, oac)
	if err != nil {
		return ctrl.Result{}, err
	}
	if err := r.writeStatus(ctx, oac, v); err != nil {
		return ctrl.Result{}, err
	}
	if v.recheck {
		return ctrl.Result{RequeueAfter: recheckSecret}, nil
	}
	return ctrl.Result{}, nil
}

// judge decides the client's Ready condition. Its error is the API server's.
func (r *OAuthClientReconciler) judge(ctx context.Context, oac *identityv1alpha1.OAuthClient) (verdict, error) {
	if v, bad := judgeSpec(&oac.Spec); bad {
		return v, nil
	}
	if oac.Spec.Type != identityv1alpha1.ClientTypeConfidential {
		return verdict{ready: true, reason: ReasonReady, message: "Public client: it sends its client_id only"}, nil
	}
	name := oac.Spec.SecretRef.Name
	sec, err := r.secret(ctx, types.NamespacedName{Namespace: oac.Namespace, Name: name})
	if err != nil {
		return verdict{}, err
	}
	if sec == nil {
		return verdict{reason: ReasonSecretMissing, recheck: true,
			message: fmt.Sprintf("Secret %s does not exist: create it with rotor client create, or rotor client rotate-secret", name)}, nil
	}
	return judgeSecret(sec), nil
}

// judgeSpec maps oauthclients.CheckSpec's verdict to a reason; bad is true
// when the spec is unusable.
func judgeSpec(spec *identityv1alpha1.OAuthClientSpec) (v verdict, bad bool) {
	err := oauthclients.CheckSpec(spec)
	if err == nil {
		return verdict{}, false
	}
	reason := ReasonSpecInvalid
	switch {
	case errors.Is(err, oauthclients.ErrPublicClientCredentials):
		reason = ReasonPublicClientCredentials
	case errors.Is(err, oauthclients.ErrGrantsInconsistent):
		reason = ReasonGrantsInconsistent
	case errors.Is(err, oauthclients.ErrSecretRef):
		reason = ReasonSecretRefInconsistent
	}
	return verdict{reason: reason, message: err.Error()}, true
}

// judgeSecret maps oauthclients.ParseSecret's verdict to a reason.
func judgeSecret(sec *corev1.Secret) verdict {
	hashes, err := oauthclients.ParseSecret(sec)
	switch {
	case err == nil:
		return verdict{ready: true, reason: ReasonReady,
			message: fmt.Sprintf("Confidential client: Secret %s holds %d valid secret hash(es)", sec.Name, len(hashes))}
	case errors.Is(err, oauthclients.ErrWrongType):
		return verdict{reason: ReasonSecretWrongType, recheck: true, message: err.Error()}
	case errors.Is(err, oauthclients.ErrNoHash):
		return verdict{reason: ReasonNoSecretHash, message: err.Error()}
	default:
		return verdict{reason: ReasonSecretMalformed, message: err.Error()}
	}
}

// secret reads the named Secret from the client-secret cache, or, when the
// cache has none, from the API server (a Secret of another type is not in the
// cache). nil means there is no such Secret.
func (r *OAuthClientReconciler) secret(ctx context.Context, key types.NamespacedName) (*corev1.Secret, error) {
	sec := &corev1.Secret{}
	err := r.Secrets.Get(ctx, key, sec)
	if apierrors.IsNotFound(err) {
		err = r.APIReader.Get(ctx, key, sec)
	}
	switch {
	case apierrors.IsNotFound(err):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("reading Secret %s: %w", key, err)
	}
	return sec, nil
}

// writeStatus sets the Ready condition and observedGeneration with one merge
// patch of the status subresource, and records an event when the condition's
// status or reason changed. An unchanged status is not written.
func (r *OAuthClientReconciler) writeStatus(ctx context.Context, oac *identityv1alpha1.OAuthClient, v verdict) error {
	status := metav1.ConditionFalse
	if v.ready {
		status = metav1.ConditionTrue
	}
	before := apimeta.FindStatusCondition(oac.Status.Conditions, identityv1alpha1.ConditionReady)
	changed := before == nil || before.Status != status || before.Reason != v.reason
	updated := oac.DeepCopy()
	apimeta.SetStatusCondition(&updated.Status.Conditions, metav1.Condition{
		Type:               identityv1alpha1.ConditionReady,
		Status:             status,
		Reason:             v.reason,
		Message:            v.message,
		ObservedGeneration: oac.Generation,
		LastTransitionTime: metav1.NewTime(r.Clock.Now()),
	})
	updated.Status.ObservedGeneration = oac.Generation
	if equality.Semantic.DeepEqual(oac.Status, updated.Status) {
		return nil
	}
	if err := r.Client.Status().Patch(ctx, updated, client.MergeFrom(oac)); err != nil {
		return fmt.Errorf("patching the status of OAuthClient %s: %w", oac.Name, err)
	}
	log.FromContext(ctx).V(1).Info("OAuthClient status", "ready", status, "reason", v.reason, "generation", oac.Generation)
	if changed {
		eventType := corev1.EventTypeWarning
		if v.ready {
			eventType = corev1.EventTypeNormal
		}
		r.Recorder.Eventf(updated, nil, eventType, v.reason, "Validate", "%s", v.message)
	}
	return nil
}
