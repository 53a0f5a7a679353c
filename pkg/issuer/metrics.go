package issuer

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

var (
	tokensIssued = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rotor_tokens_issued_total",
		Help: "Successful token requests, by grant type and client_id.",
	}, []string{"grant_type", "client"})
	clientAuthFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rotor_client_authentication_failures_total",
		Help: "Failed client authentications (invalid_client), by client_id (\"unknown\" for an unregistered one, \"none\" when the request named none) and reason.",
	}, []string{"client", "reason"})
	grantFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rotor_token_request_failures_total",
		Help: "Refused token requests, by grant type and OAuth error code.",
	}, []string{"grant_type", "error"})
	refreshFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rotor_refresh_failures_total",
		Help: "Refused refresh grants, by reason.",
	}, []string{"reason"})
	requestsThrottled = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rotor_requests_throttled_total",
		Help: "Requests refused before any API request because their client address spent its budget of failed unauthenticated requests, by endpoint (token, revoke, introspect).",
	}, []string{"endpoint"})
	requestDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "rotor_http_request_duration_seconds",
		Help:    "Issuer request latency, by endpoint and status code.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
	}, []string{"handler", "code"})
)

func init() {
	metrics.Registry.MustRegister(tokensIssued, clientAuthFailures, grantFailures, refreshFailures, requestsThrottled, requestDuration)
	for _, e := range []string{endpointToken, endpointRevoke, endpointIntrospect} {
		requestsThrottled.WithLabelValues(e) // present at zero
	}
}

func instrument(name string, h http.Handler) http.Handler {
	return promhttp.InstrumentHandlerDuration(requestDuration.MustCurryWith(prometheus.Labels{"handler": name}), h)
}
