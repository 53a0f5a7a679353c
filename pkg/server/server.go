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
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
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
	"rotor.dev/rotor/pkg/sessions"
	"rotor.dev/rotor/pkg/tokens"
	"rotor.dev/rotor/pkg/workload"
)

// Scheme knows the built-in kinds and rotor's.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilRuntimeMust(clientgoscheme.AddToScheme(s))
	utilRuntimeMust(identityv1alpha1.AddToScheme(s))
	return s
}

func utilRuntimeMust(err error) {
	if err != nil {
		panic(err)
	}
}

// Server is a configured rotor: call Start to run it.
type Server struct {
	Manager  manager.Manager
	Keys     *keys.Set
	Sessions *sessions.Store
	Accounts *accounts.Store
	Evictor  *sessions.Evictor
	Issuer   *issuer.Issuer

	listener net.Listener
}

// Leader election uses a Lease in rotor's namespace and records core Events.
// +kubebuilder:rbac:groups=coordination.k8s.io,namespace=rotor-system,resources=leases,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",namespace=rotor-system,resources=events,verbs=create;patch

// New builds the manager and the issuer and opens the issuer's listener,
// so that Addr is known before Start.
func New(cfg *rest.Config, o Options, log logr.Logger) (*Server, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	alg, _ := keys.ParseAlgorithm(o.KeyAlgorithm)
	scheme := Scheme()

	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme: scheme,
		Logger: log,
		// Tests and benchmarks run several managers in one process.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
		Cache: cache.Options{
			DefaultNamespaces: map[string]cache.Config{o.Namespace: {}},
			// Only signing-key Secrets: never cache every Secret of the cluster.
			ByObject: map[client.Object]cache.ByObject{&corev1.Secret{}: keys.CacheByObject(o.Namespace)},
		},
		Metrics:                       metricsserver.Options{BindAddress: o.MetricsAddress},
		HealthProbeBindAddress:        o.ProbeAddress,
		LeaderElection:                o.LeaderElect,
		LeaderElectionID:              "rotor-controllers",
		LeaderElectionNamespace:       o.Namespace,
		LeaderElectionReleaseOnCancel: true,
		LeaseDuration:                 durationOrNil(o.LeaseDuration),
		RenewDeadline:                 durationOrNil(o.RenewDeadline),
		RetryPeriod:                   durationOrNil(o.RetryPeriod),
	})
	if err != nil {
		return nil, fmt.Errorf("creating manager: %w", err)
	}

	set := keys.NewSet()
	if err := set.Watch(context.Background(), mgr.GetCache(), o.Namespace); err != nil {
		return nil, fmt.Errorf("watching signing keys: %w", err)
	}
	if err := (&controllers.SigningKeyReconciler{
		Client:         mgr.GetClient(),
		Recorder:       mgr.GetEventRecorder("rotor-signing-keys"),
		Clock:          o.Clock,
		Namespace:      o.Namespace,
		Algorithm:      alg,
		RotationPeriod: o.KeyRotationPeriod,
		Prepublish:     o.KeyPrepublish,
		// A retired key stays published while tokens it signed may be
		// valid, and while verifiers may still hold it in a cached JWKS.
		RetireAfter: o.AccessTokenTTL + o.ClockSkew + o.JWKSMaxAge,
	}).SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("setting up signing-key controller: %w", err)
	}

	accts, err := accounts.NewStore(cfg, scheme, accounts.Options{
		Namespace:         o.Namespace,
		FailuresPerMinute: o.LoginFailuresPerMinute,
		Burst:             o.LoginFailureBurst,
	})
	if err != nil {
		return nil, fmt.Errorf("creating account store: %w", err)
	}
	if err := mgr.Add(accts); err != nil {
		return nil, err
	}

	// The refresh path has its own client: uncached (the store is the
	// cache) and with a rate limit fit for one write per refresh.
	apiCfg := rest.CopyConfig(cfg)
	apiCfg.QPS, apiCfg.Burst = float32(o.APIQPS), o.APIBurst
	apiCfg.UserAgent = "rotor-issuer"
	sessionClient, err := client.New(apiCfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("creating session client: %w", err)
	}
	// Learn the REST mappings now, not on the first login (discovery is
	// several requests); if the API server is not there yet, the first
	// request will learn them.
	for _, gvk := range []schema.GroupVersionKind{
		identityv1alpha1.GroupVersion.WithKind("RefreshToken"),
		authenticationv1.SchemeGroupVersion.WithKind("TokenReview"),
	} {
		if _, err := sessionClient.RESTMapper().RESTMapping(gvk.GroupKind(), gvk.Version); err != nil {
			log.Info("could not warm the REST mapping; the first request will", "kind", gvk.Kind, "error", err.Error())
		}
	}
	store, err := sessions.NewStore(sessionClient, sessions.Config{
		Namespace:   o.Namespace,
		RefreshTTL:  o.RefreshTokenTTL,
		MaxLifetime: o.SessionMaxLifetime,
		ReuseGrace:  o.RefreshReuseGrace,
		CacheSize:   o.SessionCacheSize,
		Timeout:     o.APITimeout,
		Clock:       o.Clock,
		Recorder:    mgr.GetEventRecorder("rotor-issuer"),
	})
	if err != nil {
		return nil, err
	}
	meta, err := metadata.NewForConfig(apiCfg)
	if err != nil {
		return nil, err
	}
	evictor := &sessions.Evictor{Store: store, Metadata: meta, Namespace: o.Namespace, Log: log.WithName("session-evictor")}
	if err := mgr.Add(evictor); err != nil {
		return nil, err
	}
	if err := mgr.Add(&controllers.SessionCollector{
		Metadata:         meta,
		Reader:           mgr.GetAPIReader(),
		Namespace:        o.Namespace,
		Clock:            o.Clock,
		RevokedRetention: o.RevokedRetention,
		Log:              log.WithName("session-gc"),
	}); err != nil {
		return nil, err
	}

	reviewer := &workload.Reviewer{Client: sessionClient, Audience: o.ServiceAccountAudience, Timeout: o.APITimeout}
	// Callers of /introspect present the same token again and again.
	callers, err := workload.NewCachedReviewer(reviewer, time.Minute, 1024, o.Clock)
	if err != nil {
		return nil, err
	}
	iss := issuer.New(issuer.Config{
		URL:                 o.IssuerURL,
		Audience:            o.Audience,
		AllowedAudiences:    o.AllowedAudiences,
		DefaultClientID:     o.DefaultClientID,
		PasswordGrant:       o.PasswordGrant,
		JWKSMaxAge:          o.JWKSMaxAge,
		ExchangePolicy:      workload.Policy(o.TokenExchangeAllow),
		IntrospectionPolicy: workload.Policy(o.IntrospectionAllow),
	}, issuer.Deps{
		Keys:          set,
		Minter:        &tokens.Minter{Issuer: o.IssuerURL, TTL: o.AccessTokenTTL, Keys: set, Clock: o.Clock},
		Verifier:      &tokens.Verifier{Issuer: o.IssuerURL, Audience: o.Audience, Keys: set, Leeway: o.ClockSkew, Clock: o.Clock},
		Sessions:      store,
		Accounts:      accts,
		Exchange:      reviewer,
		Introspectors: callers,
		Log:           log.WithName("issuer"),
	})

	for name, check := range map[string]healthz.Checker{
		"signing-keys": set.ReadyCheck,
		"accounts":     accts.ReadyCheck,
		"sessions": func(*http.Request) error {
			if !evictor.Synced() {
				return errors.New("session watch not established")
			}
			return nil
		},
	} {
		if err := mgr.AddReadyzCheck(name, check); err != nil {
			return nil, err
		}
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return nil, err
	}

	ln, err := net.Listen("tcp", o.ListenAddress)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", o.ListenAddress, err)
	}
	srv := &http.Server{
		Handler:           iss.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      15 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    16 << 10,
	}
	if !o.InsecureHTTP {
		certs, err := newCertReloader(o.TLSCertFile, o.TLSKeyFile)
		if err != nil {
			_ = ln.Close()
			return nil, err
		}
		srv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: certs.GetCertificate}
		ln = tls.NewListener(ln, srv.TLSConfig)
	}
	if err := mgr.Add(&httpRunnable{srv: srv, ln: ln}); err != nil {
		return nil, err
	}
	return &Server{Manager: mgr, Keys: set, Sessions: store, Accounts: accts, Evictor: evictor, Issuer: iss, listener: ln}, nil
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
