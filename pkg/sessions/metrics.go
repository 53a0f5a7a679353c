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

	successorsHandedOut = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "rotor_refresh_token_successor_reissued_total",
		Help: "Second uses of a refresh token within the reuse grace that got the same successor as the first.",
	})

	raceLostRefused = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "rotor_refresh_token_race_lost_total",
		Help: "Second uses of a refresh token within the reuse grace refused because another replica rotated it (the session is kept).",
	})

	sessionsDamaged = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "rotor_sessions_damaged_total",
		Help: "Sessions read from the API server that rotor could not decode or that failed its checks (edited by hand); each is refused as unknown.",
	})

	sessionsRevoked = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rotor_sessions_revoked_total",
		Help: "Sessions revoked by the issuer, by revocation reason (Revoked, Reuse, AccountDisabled).",
	}, []string{"reason"})
)

func init() {
	metrics.Registry.MustRegister(cacheLookups, reuseDetected, successorsHandedOut, raceLostRefused, sessionsRevoked, sessionsDamaged)
}

func observeCache(hit bool) {
	if hit {
		cacheHits.Inc()
	} else {
		cacheMisses.Inc()
	}
}
