package issuer_test

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	identityv1alpha1 "rotor.dev/rotor/api/v1alpha1"
	"rotor.dev/rotor/pkg/sessions"
)

// sessionLimits sets --max-sessions-per-subject and the per-subject budget
// of new sessions.
func sessionLimits(maxPerSubject, burst int, perMinute float64) replicaOption {
	return func(o *replicaOptions) {
		o.MaxSessionsPerSubject, o.SessionsPerSubjectBurst, o.SessionsPerSubjectPerMinute = maxPerSubject, burst, perMinute
	}
}

// liveOf lists the live sessions of subject by its label, as an operator
// would (kubectl get rt -l identity.rotor.dev/subject=...), sorted by name.
func liveOf(t testing.TB, ns, subject string) []string {
	t.Helper()
	list := &identityv1alpha1.RefreshTokenList{}
	if err := env.Client.List(context.Background(), list, client.InNamespace(ns),
		client.MatchingLabels{identityv1alpha1.SubjectLabel: sessions.LabelValue(subject)}); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range list.Items {
		if s.Spec.State == identityv1alpha1.SessionActive {
			names = append(names, s.Name)
		}
	}
	slices.Sort(names)
	return names
}

func sessionNames(replies ...*tokenReply) []string {
	var names []string
	for _, r := range replies {
		names = append(names, sessionName(r.RefreshToken))
	}
	slices.Sort(names)
	return names
}

// peakSampler records the most live sessions of subject seen at once.
type peakSampler struct {
	peak atomic.Int64
	stop chan struct{}
	wg   sync.WaitGroup
}

func samplePeak(t *testing.T, ns, subject string) *peakSampler {
	p := &peakSampler{stop: make(chan struct{})}
	p.wg.Go(func() {
		for {
			select {
			case <-p.stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			if n := int64(len(liveOf(t, ns, subject))); n > p.peak.Load() {
				p.peak.Store(n)
			}
		}
	})
	t.Cleanup(p.done)
	return p
}

func (p *peakSampler) done() {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	p.wg.Wait()
}

func (r *replica) loginWithClient(t testing.TB, username, password, clientID string) *tokenReply {
	t.Helper()
	return post(t, r.URL+"/token", url.Values{
		"grant_type": {"password"}, "username": {username}, "password": {password}, "client_id": {clientID},
	})
}

// The attack of the issue: one account logging in again and again, each
// login a RefreshToken. With --max-sessions-per-subject 5 it ends with 5.
func TestSessionLimitBoundsTheLoginsOfOneAccount(t *testing.T) {
	g := NewWithT(t)
	ns := env.Namespace(t)
	createAccount(t, ns, "alice", "correct horse")
	createAccount(t, ns, "bob", "battery staple")
	const limit, logins = 5, 40
	r := startReplica(t, ns, newClock(), sessionLimits(limit, 1000, 6000))
	createClient(t, ns, "phone", publicSpec("rotor"))
	r.waitClientReady("phone")

	// bob is under the limit: his logins are one create each, no read.
	writes, reads := r.Requests.writes.Load(), r.Requests.reads.Load()
	bob := []*tokenReply{r.login(t, "bob", "battery staple"), r.login(t, "bob", "battery staple")}
	g.Expect(r.Requests.writes.Load() - writes).To(Equal(int64(2)))
	g.Expect(r.Requests.reads.Load() - reads).To(BeZero())
	// alice's phone logs in twice with its own client_id.
	phone := []*tokenReply{r.loginWithClient(t, "alice", "correct horse", "phone"), r.loginWithClient(t, "alice", "correct horse", "phone")}

	peak := samplePeak(t, ns, "alice")
	var web []*tokenReply
	for range logins {
		reply := r.login(t, "alice", "correct horse")
		g.Expect(reply.Status).To(Equal(http.StatusOK), "%+v", reply)
		web = append(web, reply)
	}
	// The newest web sessions remain, and the phone's: that client is
	// under the limit, and web had older sessions of its own to give up.
	survivors := append([]*tokenReply{phone[0], phone[1]}, web[logins-3:]...)
	g.Eventually(func() []string { return liveOf(t, ns, "alice") }, "20s").Should(Equal(sessionNames(survivors...)))
	peak.done()
	t.Logf("alice: %d sessions created (2 phone, %d web), %d remain (limit %d); at most %d live at once (%d over the limit)",
		logins+2, logins, len(liveOf(t, ns, "alice")), limit, peak.peak.Load(), peak.peak.Load()-limit)

	// The survivors refresh; the evicted get invalid_grant.
	for _, s := range web[logins-3:] {
		g.Expect(r.refresh(t, s.RefreshToken).Status).To(Equal(http.StatusOK))
	}
	for _, s := range phone {
		reply := post(t, r.URL+"/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {s.RefreshToken}, "client_id": {"phone"}})
		g.Expect(reply.Status).To(Equal(http.StatusOK), "%+v", reply)
	}
	for _, s := range web[:logins-3] {
		reply := r.refresh(t, s.RefreshToken)
		g.Expect(reply.Status).To(Equal(http.StatusBadRequest))
		g.Expect(reply.Error).To(Equal("invalid_grant"))
	}
	// bob's sessions were never touched.
	g.Expect(liveOf(t, ns, "bob")).To(Equal(sessionNames(bob...)))
	for _, s := range bob {
		g.Expect(r.refresh(t, s.RefreshToken).Status).To(Equal(http.StatusOK))
	}
}

// The same attack by token exchange: one ServiceAccount exchanging its
// token again and again.
func TestSessionLimitBoundsTheExchangesOfOneServiceAccount(t *testing.T) {
	g := NewWithT(t)
	ns := env.Namespace(t)
	const limit, exchanges = 5, 40
	r := startReplica(t, ns, newClock(), allowExchange(ns+"/*"), sessionLimits(limit, 1000, 6000))
	worker := "system:serviceaccount:" + ns + ":worker"
	other := exchange(t, r, serviceAccountToken(t, ns, "other", "rotor"))
	g.Expect(other.Status).To(Equal(http.StatusOK))

	token := serviceAccountToken(t, ns, "worker", "rotor")
	peak := samplePeak(t, ns, worker)
	var replies []*tokenReply
	var mu sync.Mutex
	var wg sync.WaitGroup
	work := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			for range work {
				reply := exchange(t, r, token)
				mu.Lock()
				replies = append(replies, reply)
				mu.Unlock()
			}
		})
	}
	start := time.Now()
	for range exchanges {
		work <- struct{}{}
	}
	close(work)
	wg.Wait()
	elapsed := time.Since(start)
	for _, reply := range replies {
		g.Expect(reply.Status).To(Equal(http.StatusOK), "%+v", reply)
	}
	g.Eventually(func() []string { return liveOf(t, ns, worker) }, "20s").Should(HaveLen(limit))
	peak.done()
	t.Logf("%s: %d exchanges in %s at concurrency 4, %d remain (limit %d); at most %d live at once (%d over the limit)",
		worker, exchanges, elapsed.Round(time.Millisecond), limit, limit, peak.peak.Load(), peak.peak.Load()-limit)

	live := liveOf(t, ns, worker)
	var kept, evicted int
	for _, s := range replies {
		reply := r.refresh(t, s.RefreshToken)
		if slices.Contains(live, sessionName(s.RefreshToken)) {
			g.Expect(reply.Status).To(Equal(http.StatusOK), "a surviving session refreshes")
			kept++
		} else {
			g.Expect(reply.Status).To(Equal(http.StatusBadRequest))
			g.Expect(reply.Error).To(Equal("invalid_grant"))
			evicted++
		}
	}
	g.Expect([]int{kept, evicted}).To(Equal([]int{limit, exchanges - limit}))
	g.Expect(liveOf(t, ns, "system:serviceaccount:"+ns+":other")).To(Equal(sessionNames(other)))
	g.Expect(r.refresh(t, other.RefreshToken).Status).To(Equal(http.StatusOK))
}

// The per-subject budget of new sessions: after its burst a subject gets
// 429 invalid_grant with Retry-After, creates nothing, and recovers as time
// passes; other subjects are not affected.
func TestSessionsPerSubjectRateLimit(t *testing.T) {
	g := NewWithT(t)
	ns := env.Namespace(t)
	createAccount(t, ns, "alice", "correct horse")
	createAccount(t, ns, "bob", "battery staple")
	clock := newClock()
	// 3 at once, then one every 10 seconds. The per-address budget of
	// failed requests is tiny: refused exchanges must not spend it.
	r := startReplica(t, ns, clock, allowExchange(ns+"/worker"), sessionLimits(0, 3, 6), func(o *replicaOptions) {
		o.UnauthenticatedBurst, o.UnauthenticatedPerSecond = 2, 0.001
	})

	for range 3 {
		g.Expect(r.login(t, "alice", "correct horse").Status).To(Equal(http.StatusOK))
	}
	before := len(liveOf(t, ns, "alice"))
	throttled := r.login(t, "alice", "correct horse")
	g.Expect(throttled.Status).To(Equal(http.StatusTooManyRequests))
	g.Expect(throttled.Error).To(Equal("invalid_grant"))
	g.Expect(throttled.Header.Get("Retry-After")).To(Equal("10"))
	g.Expect(liveOf(t, ns, "alice")).To(HaveLen(before), "a refused login creates nothing")
	// The limit is checked after the password: a wrong one is still just
	// wrong, so the answer tells nothing about the account's sessions.
	wrong := r.login(t, "alice", "wrong")
	g.Expect(wrong.Status).To(Equal(http.StatusBadRequest))
	g.Expect(r.login(t, "bob", "battery staple").Status).To(Equal(http.StatusOK), "another subject has its own budget")

	clock.Step(5 * time.Second)
	g.Expect(r.login(t, "alice", "correct horse").Header.Get("Retry-After")).To(Equal("5"))
	clock.Step(5 * time.Second)
	g.Expect(r.login(t, "alice", "correct horse").Status).To(Equal(http.StatusOK), "one more after 10s")
	g.Expect(r.login(t, "alice", "correct horse").Status).To(Equal(http.StatusTooManyRequests))

	// Token exchange likewise.
	token := serviceAccountToken(t, ns, "worker", "rotor")
	for range 3 {
		g.Expect(exchange(t, r, token).Status).To(Equal(http.StatusOK))
	}
	for range 5 {
		reply := exchange(t, r, token)
		g.Expect(reply.Status).To(Equal(http.StatusTooManyRequests))
		g.Expect(reply.Error).To(Equal("invalid_grant"))
		g.Expect(reply.Header.Get("Retry-After")).To(Equal("10"))
	}
	// Those 429s were authenticated requests: the address's budget of
	// failures (2) is untouched, so a bad refresh token is still looked at.
	bad := r.refresh(t, "rt-aaaaaaaaaaaaaaaaaaaaaaaaaa.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	g.Expect(bad.Status).To(Equal(http.StatusBadRequest), "%+v", bad)
	clock.Step(30 * time.Second)
	for range 3 {
		g.Expect(exchange(t, r, token).Status).To(Equal(http.StatusOK), "the budget refills")
	}
	g.Expect(exchange(t, r, token).Status).To(Equal(http.StatusTooManyRequests))
}

// The chart's sessions.quota: a ResourceQuota on RefreshTokens in rotor's
// namespace. At the quota logins get 503 temporarily_unavailable (nothing
// was stored, so nothing is handed out) and refreshes keep working.
func TestSessionQuotaRefusesNewSessionsOnly(t *testing.T) {
	g := NewWithT(t)
	ns := env.Namespace(t)
	createAccount(t, ns, "alice", "correct horse")
	ctx := context.Background()
	count := corev1.ResourceName("count/refreshtokens.identity.rotor.dev")
	quota := &corev1.ResourceQuota{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "rotor-sessions"},
		Spec:       corev1.ResourceQuotaSpec{Hard: corev1.ResourceList{count: resource.MustParse("2")}},
	}
	g.Expect(env.Client.Create(ctx, quota)).To(Succeed())
	// What kube-controller-manager's quota controller would do (the test
	// control plane has none): from then on admission keeps "used" current.
	quota.Status = corev1.ResourceQuotaStatus{Hard: quota.Spec.Hard, Used: corev1.ResourceList{count: resource.MustParse("0")}}
	g.Expect(env.Client.Status().Update(ctx, quota)).To(Succeed())

	r := startReplica(t, ns, newClock())
	first := r.login(t, "alice", "correct horse")
	g.Expect(first.Status).To(Equal(http.StatusOK), "%+v", first)
	g.Expect(r.login(t, "alice", "correct horse").Status).To(Equal(http.StatusOK))
	full := r.login(t, "alice", "correct horse")
	g.Expect(full.Status).To(Equal(http.StatusServiceUnavailable), "%+v", full)
	g.Expect(full.Error).To(Equal("temporarily_unavailable"))
	g.Expect(full.Header.Get("Retry-After")).NotTo(BeEmpty())
	g.Expect(r.Logs.String()).To(ContainSubstring("exceeded quota"))
	g.Expect(sessionsOf(t, ns)).To(HaveLen(2))

	next := r.refresh(t, first.RefreshToken)
	g.Expect(next.Status).To(Equal(http.StatusOK), "a refresh stores nothing new")
}
