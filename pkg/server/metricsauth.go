package server

import (
	"net/http"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apiserver/pkg/apis/apiserver"
	"k8s.io/apiserver/pkg/authentication/authenticatorfactory"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	"k8s.io/apiserver/pkg/authorization/authorizerfactory"
	authenticationv1 "k8s.io/client-go/kubernetes/typed/authentication/v1"
	authorizationv1 "k8s.io/client-go/kubernetes/typed/authorization/v1"
	"k8s.io/client-go/rest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
)

// metricsAuth is a metrics FilterProvider like controller-runtime's
// filters.WithAuthenticationAndAuthorization (TokenReview, then a
// SubjectAccessReview of GET /metrics), except that a token the API server
// refuses is a 401 logged at V(1): that filter answers 500 and logs an error
// with a stack trace, which any caller could use to flood the logs.
func metricsAuth(cfg *rest.Config, hc *http.Client) (metricsserver.Filter, error) {
	authn, err := authenticationv1.NewForConfigAndClient(cfg, hc)
	if err != nil {
		return nil, err
	}
	authz, err := authorizationv1.NewForConfigAndClient(cfg, hc)
	if err != nil {
		return nil, err
	}
	backoff := &wait.Backoff{Duration: 500 * time.Millisecond, Factor: 1.5, Jitter: 0.2, Steps: 5}
	authenticator, _, err := authenticatorfactory.DelegatingAuthenticatorConfig{
		Anonymous:                &apiserver.AnonymousAuthConfig{Enabled: false},
		CacheTTL:                 time.Minute,
		TokenAccessReviewClient:  authn,
		TokenAccessReviewTimeout: 10 * time.Second,
		WebhookRetryBackoff:      backoff,
	}.New()
	if err != nil {
		return nil, err
	}
	authorize, err := authorizerfactory.DelegatingAuthorizerConfig{
		SubjectAccessReviewClient: authz,
		AllowCacheTTL:             5 * time.Minute,
		DenyCacheTTL:              30 * time.Second,
		WebhookRetryBackoff:       backoff,
	}.New()
	if err != nil {
		return nil, err
	}
	return func(log logr.Logger, next http.Handler) (http.Handler, error) {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			res, ok, err := authenticator.AuthenticateRequest(r)
			if err != nil || !ok {
				if err != nil {
					log.V(1).Info("metrics caller not authenticated", "error", err.Error())
				}
				http.Error(w, "Unauthorized", http.StatusUnauthorized)
				return
			}
			decision, _, err := authorize.Authorize(r.Context(), authorizer.AttributesRecord{
				User: res.User, Verb: strings.ToLower(r.Method), Path: r.URL.Path,
			})
			switch {
			case err != nil:
				log.Error(err, "authorizing a metrics caller", "user", res.User.GetName())
				http.Error(w, "Authorization failed", http.StatusServiceUnavailable)
			case decision != authorizer.DecisionAllow:
				log.V(1).Info("metrics caller not authorized", "user", res.User.GetName())
				http.Error(w, "Forbidden", http.StatusForbidden)
			default:
				next.ServeHTTP(w, r)
			}
		}), nil
	}, nil
}
