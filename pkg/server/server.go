// Package server is what `rotor serve` runs: the controller manager (signing
// keys, session GC, leader election, probes, metrics) and the embedded issuer
// that every replica serves.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/go-logr/logr"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/flowcontrol"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/certwatcher"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	identityv1alpha1 "rotor.dev/rotor/api/v1alpha1"
	"rotor.dev/rotor/controllers"
	"rotor.dev/rotor/pkg/accounts"
	"rotor.dev/rotor/pkg/issuer"
	"rotor.dev/rotor/pkg/keys"
	"rotor.dev/rotor/pkg/oauthclients"
	"rotor.dev/rotor/pkg/scheme"
	"rotor.dev/rotor/pkg/sessions"
	"rotor.dev/rotor/pkg/tokens"
	"rotor.dev/rotor/pkg/workload"
)

// Server is a configured rotor: call Start to run it.
type Server struct {
	Manager  manager.Manager
	Keys     *keys.Set
	Sessions *sessions.Store
	Accounts *accounts.Store
	Clients  *oauthclients.Registry
	Evictor  *sessions.Evictor
	Issuer   *issuer.Issuer

	listener net.Listener
}

// Leader election uses a Lease in rotor's namespace and records core Events.
// +kubebuilder:rbac:groups=coordination.k8s.io,namespace=rotor-system,resources=leases,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",namespace=rotor-system,resources=events,verbs=create;patch

// New builds everything rotor runs and opens the issuer's listener, so that
// Addr is known before Start. Each step adds what it builds to the manager,
// which starts and stops it; a failed step closes the listener if it is open.
func New(cfg *rest.Config, o Options, log logr.Logger) (*Server, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	w := &wiring{cfg: cfg, o: o, log: log}
	steps := []struct {
		name string
		run  func() error
	}{
		{"creating the manager", w.manager},
		{"setting up signing keys", w.signingKeys},
		{"setting up accounts", w.accounts},
		{"setting up OAuth clients", w.oauthClients},
		{"setting up the session store", w.sessions},
		{"setting up the session collector", w.collector},
		{"setting up the issuer", w.issuer},
		{"adding probes", w.probes},
		{"checking the namespace", w.namespaceCheck},
		{"opening the listener", w.listen},
	}
	for _, step := range steps {
		if err := step.run(); err != nil {
			if w.ln != nil {
				_ = w.ln.Close()
			}
			return nil, fmt.Errorf("%s: %w", step.name, err)
		}
	}
	return &Server{Manager: w.mgr, Keys: w.keys, Sessions: w.store, Accounts: w.accts, Clients: w.clients, Evictor: w.evictor, Issuer: w.iss, listener: w.ln}, nil
}

// wiring holds what the steps of New have built so far.
type wiring struct {
	cfg *rest.Config
	o   Options
	log logr.Logger

	mgr     manager.Manager
	keys    *keys.Set
	accts   *accounts.Store
	clients *oauthclients.Registry
	secrets *oauthclients.SecretCache
	// clientsSynced reports the OAuthClient informer synced.
	clientsSynced func() bool
	apiCfg        *rest.Config // the token path's own rate limit and user agent
	api           client.Client
	meta          metadata.Interface
	store         *sessions.Store
	evictor       *sessions.Evictor
	reviewer      *workload.Reviewer
	iss           *issuer.Issuer
	ln            net.Listener
}

func (w *wiring) manager() error {
	o := w.o
	mgr, err := ctrl.NewManager(w.cfg, ctrl.Options{
		Scheme: scheme.Scheme,
		Logger: w.log,
		// Tests and benchmarks run several managers in one process.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
		Cache: cache.Options{
			DefaultNamespaces: map[string]cache.Config{o.Namespace: {}},
			// Only signing-key Secrets: never cache every Secret of the cluster.
			ByObject: map[client.Object]cache.ByObject{&corev1.Secret{}: keys.CacheByObject(o.Namespace)},
		},
		Metrics:                       metricsOptions(o),
		HealthProbeBindAddress:        o.ProbeAddress,
		LeaderElection:                o.LeaderElect,
		LeaderElectionID:              "rotor-controllers",
		LeaderElectionNamespace:       o.Namespace,
		LeaderElectionReleaseOnCancel: true,
		LeaseDuration:                 durationOrNil(o.LeaseDuration),
		RenewDeadline:                 durationOrNil(o.RenewDeadline),
		RetryPeriod:                   durationOrNil(o.RetryPeriod),
	})
	w.mgr = mgr
	return err
}

// The metrics endpoint authenticates and authorizes its callers with the
// API server (a Prometheus ServiceAccount bound to GET /metrics).
// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create

func metricsOptions(o Options) metricsserver.Options {
	m := metricsserver.Options{BindAddress: o.MetricsAddress}
	if o.MetricsSecure {
		// No CertDir: controller-runtime serves a self-signed certificate,
		// as kubebuilder projects do; scrapers skip its verification.
		m.SecureServing = true
		m.FilterProvider = metricsAuth
	}
	return m
}

// signingKeys: the key set every replica signs and verifies with, fed by the
// Secret informer, and the controller (leader only) that rotates the keys.
func (w *wiring) signingKeys() error {
	o := w.o
	w.keys = keys.NewSet()
	if err := w.mgr.Add(everyReplica(func(ctx context.Context) error {
		if err := w.keys.Watch(ctx, w.mgr.GetCache(), o.Namespace); err != nil {
			return fmt.Errorf("watching signing keys: %w", err)
		}
		<-ctx.Done()
		return nil
	})); err != nil {
		return err
	}
	alg, err := keys.ParseAlgorithm(o.KeyAlgorithm)
	if err != nil {
		return err
	}
	return (&controllers.SigningKeyReconciler{
		Client:         w.mgr.GetClient(),
		Recorder:       w.mgr.GetEventRecorder("rotor-signing-keys"),
		Clock:          o.Clock,
		Namespace:      o.Namespace,
		Algorithm:      alg,
		RotationPeriod: o.KeyRotationPeriod,
		Prepublish:     o.KeyPrepublish,
		// A retired key stays published while tokens it signed may be
		// valid, and while verifiers may still hold it in a cached JWKS.
		RetireAfter: o.AccessTokenTTL + o.ClockSkew + o.JWKSMaxAge,
	}).SetupWithManager(w.mgr)
}

// accounts: the account Secrets, through their own filtered informer.
func (w *wiring) accounts() error {
	accts, err := accounts.NewStore(w.cfg, accounts.Options{
		Namespace:         w.o.Namespace,
		FailuresPerMinute: w.o.LoginFailuresPerMinute,
		Burst:             w.o.LoginFailureBurst,
		Clock:             w.o.Clock,
	})
	if err != nil {
		return err
	}
	w.accts = accts
	return w.mgr.Add(accts)
}

// oauthClients: the client-secret Secrets, through their own filtered cache
// (every replica), and the reconciler (leader only) that reports whether
// each OAuthClient is usable.
func (w *wiring) oauthClients() error {
	secrets, err := oauthclients.NewSecretCache(w.cfg, scheme.Scheme, w.o.Namespace)
	if err != nil {
		return err
	}
	if err := w.mgr.Add(secrets); err != nil {
		return err
	}
	// Every replica resolves clients on each token request: start the
	// OAuthClient informer with the manager rather than on the first
	// request, and report ready only once it has synced.
	informer, err := w.mgr.GetCache().GetInformer(context.Background(), &identityv1alpha1.OAuthClient{})
	if err != nil {
		return fmt.Errorf("watching OAuthClients: %w", err)
	}
	w.clientsSynced = informer.HasSynced
	w.secrets = secrets
	w.clients, err = oauthclients.NewRegistry(w.mgr.GetCache(), secrets, oauthclients.RegistryOptions{
		Namespace:         w.o.Namespace,
		FailuresPerMinute: w.o.LoginFailuresPerMinute,
		Burst:             w.o.LoginFailureBurst,
		Clock:             w.o.Clock,
	})
	if err != nil {
		return err
	}
	if err := w.clients.InvalidateOn(informer, secrets.Informer()); err != nil {
		return err
	}
	return (&controllers.OAuthClientReconciler{
		Client:   w.mgr.GetClient(),
		Secrets:  secrets,
		Recorder: w.mgr.GetEventRecorder("rotor-oauth-clients"),
		Clock:    w.o.Clock,
	}).SetupWithManager(w.mgr)
}

// sessions: the store on the token path and the watch that evicts its cache
// entries changed elsewhere.
func (w *wiring) sessions() error {
	o := w.o
	// The token path has its own client: uncached (the store is the cache)
	// and with a rate limit fit for one write per refresh.
	w.apiCfg = rest.CopyConfig(w.cfg)
	w.apiCfg.QPS, w.apiCfg.Burst = float32(o.APIQPS), o.APIBurst
	// One limiter for every kind the token path touches: controller-runtime
	// builds a REST client (and so a limiter) per kind, which would give
	// RefreshTokens and TokenReviews each the whole --api-qps.
	w.apiCfg.RateLimiter = flowcontrol.NewTokenBucketRateLimiter(float32(o.APIQPS), o.APIBurst)
	w.apiCfg.UserAgent = "rotor-issuer"
	hc, err := rest.HTTPClientFor(w.apiCfg)
	if err != nil {
		return fmt.Errorf("creating the session client: %w", err)
	}
	api, err := client.New(w.apiCfg, client.Options{Scheme: scheme.Scheme, HTTPClient: hc})
	if err != nil {
		return fmt.Errorf("creating the session client: %w", err)
	}
	writes, err := sessions.NewWriter(w.apiCfg, hc)
	if err != nil {
		return err
	}
	w.api = api
	// Learn the REST mappings now, not on the first login (discovery is
	// several requests); if the API server is not there yet, the first
	// request will learn them.
	for _, gvk := range []schema.GroupVersionKind{
		identityv1alpha1.GroupVersion.WithKind("RefreshToken"),
		authenticationv1.SchemeGroupVersion.WithKind("TokenReview"),
	} {
		if _, err := api.RESTMapper().RESTMapping(gvk.GroupKind(), gvk.Version); err != nil {
			w.log.Info("could not warm the REST mapping; the first request will", "kind", gvk.Kind, "error", err.Error())
		}
	}
	w.store, err = sessions.NewStore(api, sessions.Config{
		Namespace:   o.Namespace,
		RefreshTTL:  o.RefreshTokenTTL,
		MaxLifetime: o.SessionMaxLifetime,
		ReuseGrace:  o.RefreshReuseGrace,
		CacheSize:   o.SessionCacheSize,
		Timeout:     o.APITimeout,
		Clock:       o.Clock,
		Recorder:    w.mgr.GetEventRecorder("rotor-issuer"),
		Writes:      writes,
	})
	if err != nil {
		return err
	}
	if w.meta, err = metadata.NewForConfig(w.apiCfg); err != nil {
		return err
	}
	w.evictor = &sessions.Evictor{Store: w.store, Metadata: w.meta, Namespace: o.Namespace, Log: w.log.WithName("session-evictor")}
	return w.mgr.Add(w.evictor)
}

// collector: garbage collection of ended sessions (leader only).
func (w *wiring) collector() error {
	return w.mgr.Add(&controllers.SessionCollector{
		Metadata:         w.meta,
		Reader:           w.mgr.GetAPIReader(),
		Namespace:        w.o.Namespace,
		Clock:            w.o.Clock,
		RevokedRetention: w.o.RevokedRetention,
		DeleteRate:       w.o.SessionGCRate,
		Log:              w.log.WithName("session-gc"),

		MaxSessionsPerSubject: w.o.MaxSessionsPerSubject,
	})
}

// issuer: the OAuth endpoints over keys, accounts, sessions and TokenReviews.
func (w *wiring) issuer() error {
	o := w.o
	w.reviewer = &workload.Reviewer{Client: w.api, Audience: o.ServiceAccountAudience, Timeout: o.APITimeout}
	// Callers of /introspect present the same token again and again. A
	// refused token is remembered briefly on both endpoints, so repeating
	// junk costs no TokenReview; a valid subject token is reviewed each time
	// it is exchanged.
	callers, err := workload.NewCachedReviewer(w.reviewer, time.Minute, refusedReviewTTL, 1024, o.Clock)
	if err != nil {
		return err
	}
	exchange, err := workload.NewCachedReviewer(w.reviewer, 0, refusedReviewTTL, 1024, o.Clock)
	if err != nil {
		return err
	}
	w.iss = issuer.New(issuer.Config{
		URL:             o.IssuerURL,
		DefaultClientID: o.DefaultClientID,
		Lifetimes: oauthclients.Lifetimes{
			AccessToken: o.AccessTokenTTL, RefreshToken: o.RefreshTokenTTL,
			SessionMax: o.SessionMaxLifetime, ReuseGrace: o.RefreshReuseGrace,
		},
		PasswordGrant:       o.PasswordGrant,
		JWKSMaxAge:          o.JWKSMaxAge,
		ExchangePolicy:      workload.Policy(o.TokenExchangeAllow),
		IntrospectionPolicy: workload.Policy(o.IntrospectionAllow),

		UnauthenticatedBurst:     o.UnauthenticatedBurst,
		UnauthenticatedPerSecond: o.UnauthenticatedPerSecond,
		TrustedProxies:           o.trustedProxies(),
		Clock:                    o.Clock,

		SessionsPerSubjectBurst:     o.SessionsPerSubjectBurst,
		SessionsPerSubjectPerMinute: o.SessionsPerSubjectPerMinute,
	}, issuer.Deps{
		Keys:          w.keys,
		Minter:        &tokens.Minter{Issuer: o.IssuerURL, TTL: o.AccessTokenTTL, Keys: w.keys, Clock: o.Clock},
		Verifier:      &tokens.Verifier{Issuer: o.IssuerURL, Audience: o.Audience, Keys: w.keys, Leeway: o.ClockSkew, Clock: o.Clock},
		Sessions:      w.store,
		Accounts:      w.accts,
		Clients:       w.clients,
		Exchange:      exchange,
		Introspectors: callers,
		Log:           w.log.WithName("issuer"),
	})
	return nil
}

// refusedReviewTTL is how long a ServiceAccount token the API server refused
// is refused without asking again.
const refusedReviewTTL = 10 * time.Second

// probes: ready once keys, accounts and the session watch are there.
func (w *wiring) probes() error {
	for name, check := range map[string]healthz.Checker{
		"signing-keys":   w.keys.ReadyCheck,
		"accounts":       w.accts.ReadyCheck,
		"client-secrets": w.secrets.ReadyCheck,
		"oauth-clients": func(*http.Request) error {
			if !w.clientsSynced() {
				return errors.New("OAuthClient cache not synced")
			}
			return nil
		},
		"sessions": func(*http.Request) error {
			if !w.evictor.Synced() {
				return errors.New("session watch not established")
			}
			return nil
		},
	} {
		if err := w.mgr.AddReadyzCheck(name, check); err != nil {
			return err
		}
	}
	return w.mgr.AddHealthzCheck("ping", healthz.Ping)
}

// ownSecretTypes are the Secrets rotor expects in its namespace: its own,
// its serving certificate, Helm's release records and image pull secrets.
var ownSecretTypes = []corev1.SecretType{
	keys.SecretType, accounts.SecretType, oauthclients.SecretType, corev1.SecretTypeTLS, "helm.sh/release.v1", corev1.SecretTypeDockerConfigJson,
}

// namespaceCheck warns at start when rotor's namespace holds Secrets of
// other kinds: rotor may read and change every Secret there, so it needs a
// namespace of its own. One API request of at most one object.
func (w *wiring) namespaceCheck() error {
	return w.mgr.Add(everyReplica(func(ctx context.Context) error {
		sel := make([]fields.Selector, 0, len(ownSecretTypes))
		for _, t := range ownSecretTypes {
			sel = append(sel, fields.OneTermNotEqualSelector("type", string(t)))
		}
		var list corev1.SecretList
		err := w.mgr.GetAPIReader().List(ctx, &list, client.InNamespace(w.o.Namespace),
			client.MatchingFieldsSelector{Selector: fields.AndSelectors(sel...)}, client.Limit(1))
		switch {
		case err != nil:
			w.log.Info("could not check rotor's namespace for other Secrets", "namespace", w.o.Namespace, "error", err.Error())
		case len(list.Items) > 0:
			w.log.Info("WARNING: rotor's namespace holds Secrets that are not rotor's; rotor can read and change them. Run rotor in a namespace of its own.",
				"namespace", w.o.Namespace, "example", list.Items[0].Name, "type", string(list.Items[0].Type))
		}
		w.checkDefaultClient(ctx)
		return nil
	}))
}

// checkDefaultClient warns at start when --default-client-id names no
// OAuthClient, or one that is not Public: every request without client_id
// is refused with invalid_client until that is fixed.
func (w *wiring) checkDefaultClient(ctx context.Context) {
	id := w.o.DefaultClientID
	if id == "" || !w.mgr.GetCache().WaitForCacheSync(ctx) {
		return
	}
	c, found, err := w.clients.Lookup(ctx, id)
	switch {
	case err != nil:
		w.log.Info("could not check --default-client-id", "client", id, "error", err.Error())
	case !found:
		w.log.Info("WARNING: --default-client-id names no OAuthClient; token requests without client_id are refused (invalid_client) until it is created",
			"client", id, "namespace", w.o.Namespace)
	case c.Type != identityv1alpha1.ClientTypePublic:
		w.log.Info("WARNING: --default-client-id names a client that is not Public; token requests without client_id are refused (invalid_client)",
			"client", id, "type", string(c.Type))
	}
}

// listen opens the issuer's listener, with TLS from files that are reloaded
// when cert-manager or the kubelet replaces them.
func (w *wiring) listen() error {
	o := w.o
	srv := &http.Server{
		Handler:           w.iss.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      15 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    16 << 10,
	}
	var certs *certwatcher.CertWatcher
	if !o.InsecureHTTP {
		var err error
		if certs, err = newCertWatcher(o.TLSCertFile, o.TLSKeyFile); err != nil {
			return err
		}
		if err := w.mgr.Add(certs); err != nil {
			return err
		}
	}
	ln, err := net.Listen("tcp", o.ListenAddress)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", o.ListenAddress, err)
	}
	w.ln = ln
	if certs != nil {
		srv.TLSConfig = tlsConfig(certs)
		w.ln = tls.NewListener(ln, srv.TLSConfig)
	}
	return w.mgr.Add(&httpRunnable{srv: srv, ln: w.ln})
}

// newCertWatcher loads the serving certificate, which must be there at
// start. Once started, the watcher re-reads the files on every change and
// every 10 seconds, and keeps the last good pair while a new one is invalid
// (half written).
func newCertWatcher(certFile, keyFile string) (*certwatcher.CertWatcher, error) {
	w, err := certwatcher.New(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("loading TLS certificate %s: %w", certFile, err)
	}
	return w, nil
}

func tlsConfig(certs *certwatcher.CertWatcher) *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: certs.GetCertificate}
}

func durationOrNil(d time.Duration) *time.Duration {
	if d == 0 {
		return nil
	}
	return &d
}

// Addr is the issuer's listening address.
func (s *Server) Addr() net.Addr { return s.listener.Addr() }

// Start runs everything until ctx ends.
func (s *Server) Start(ctx context.Context) error { return s.Manager.Start(ctx) }

// everyReplica is a runnable that runs on every replica, leader or not.
type everyReplica func(context.Context) error

func (f everyReplica) Start(ctx context.Context) error { return f(ctx) }
func (everyReplica) NeedLeaderElection() bool          { return false }

// httpRunnable serves the issuer on every replica, leader or not.
type httpRunnable struct {
	srv *http.Server
	ln  net.Listener
}

func (h *httpRunnable) NeedLeaderElection() bool { return false }

func (h *httpRunnable) Start(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- h.srv.Serve(h.ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return h.srv.Shutdown(shutdown)
	}
}
