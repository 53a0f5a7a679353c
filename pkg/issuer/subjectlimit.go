package issuer

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Every successful login and token exchange creates a session (a
// RefreshToken object) that lives for the refresh-token lifetime, so one
// credential could fill etcd. Two bounds apply per subject (an account's
// username, or system:serviceaccount:<namespace>:<name>):
//
//   - here, a budget of new sessions (a token bucket per subject, per
//     replica): checked after the subject has authenticated and before its
//     session is created, so only someone holding the credential can spend
//     it, and a refused request creates nothing. Over it the answer is 429
//     invalid_grant with Retry-After, as for throttled logins.
//   - in the session collector (controllers), a maximum of live sessions per
//     subject: the oldest are deleted.
//
// The buckets are the per-address limiter's (ratelimit.go): reservations
// for requests in flight, so concurrent logins cannot overspend; buckets
// exist only while they are not full, at most maxTrackedAddresses of them,
// and at that size the bucket nearest to full goes first, never one just
// emptied.

// Defaults of --sessions-per-subject-burst and
// --sessions-per-subject-per-minute: a whole default session limit (100) at
// once, which a Deployment of that many replicas sharing a ServiceAccount
// needs when it starts, then one a second. A person logs in a few times a
// day; a credential used at 1,330 logins a minute gets 160 in that minute.
const (
	DefaultSessionsPerSubjectBurst     = 100
	DefaultSessionsPerSubjectPerMinute = 60
)

var sessionsThrottled = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "rotor_session_creations_throttled_total",
	Help: "Logins and token exchanges refused (429) because their subject created too many sessions recently, by grant type.",
}, []string{"grant_type"})

func init() {
	metrics.Registry.MustRegister(sessionsThrottled)
	for _, g := range []string{GrantPassword, GrantTokenExchange} {
		sessionsThrottled.WithLabelValues(grantLabel(g)) // present at zero
	}
}

// newSubjectLimiter returns nil (no limit) when burst is not positive.
func newSubjectLimiter(cfg Config) *limiter {
	return newLimiter(cfg.SessionsPerSubjectBurst, cfg.SessionsPerSubjectPerMinute/60, cfg.Clock)
}

// admitSession reserves one new session of subject's budget. The caller
// must call done on the admission it gets (nil when there is no limit),
// with true once the session is created. Over the budget it returns the
// 429 to answer.
func (i *Issuer) admitSession(r *http.Request, grant, subject string) (*admission, *oauthError) {
	if i.subjects == nil {
		return nil, nil
	}
	a, wait := i.subjects.admit(subject)
	if a != nil {
		return a, nil
	}
	sessionsThrottled.WithLabelValues(grantLabel(grant)).Inc()
	// The subject has authenticated: this is not a failure of the client
	// address's budget (ratelimit.go).
	admissionOf(r).prove()
	e := newError(http.StatusTooManyRequests, errInvalidGrant, "too many new sessions for this subject; retry later")
	e.retryAfter = wait
	return nil, e
}

// sessionCreated ends an admission from admitSession: a created session
// spends the budget, anything else gives the reservation back.
func sessionCreated(a *admission, created bool) {
	if a != nil {
		a.done(created)
	}
}
