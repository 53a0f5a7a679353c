package sessions

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

var (
	cacheLookups = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rotor_session_cache_lookups_total",
		Help: "Session cache lookups by result (hit or miss).",
	}, []string{"result"})
	cacheHits, cacheMisses = cacheLookups.WithLabelValues("hit"), cacheLookups.WithLabelValues("miss")

	reuseDetected = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "rotor_refresh_token_reuse_detected_total",
		Help: "Replays of rotated refresh tokens that revoked their session.",
	})

	sessionsRevoked = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rotor_sessions_revoked_total",
		Help: "Sessions revoked by the issuer, by revocation reason (Revoked, Reuse, AccountDisabled).",
	}, []string{"reason"})
)

func init() {
	metrics.Registry.MustRegister(cacheLookups, reuseDetected, sessionsRevoked)
}

func observeCache(hit bool) {
	if hit {
		cacheHits.Inc()
	} else {
		cacheMisses.Inc()
	}
}
