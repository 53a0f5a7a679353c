package issuer_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	eventsv1 "k8s.io/api/events/v1"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"

	identityv1alpha1 "rotor.dev/rotor/api/v1alpha1"
)

func newClock() *clocktesting.FakeClock {
	return clocktesting.NewFakeClock(time.Now().Truncate(time.Second))
}

// The seed scenario: one user, two devices, each refreshing on its own.
func TestTwoDevicesRefreshIndependently(t *testing.T) {
	g := NewWithT(t)
	ns := env.Namespace(t)
	createAccount(t, ns, "alice", "correct horse", "dev", "ops")
	r := startReplica(t, ns, newClock())

	laptop := r.login(t, "alice", "correct horse")
	phone := r.login(t, "alice", "correct horse")
	for _, d := range []*tokenReply{laptop, phone} {
		g.Expect(d.Status).To(Equal(http.StatusOK))
		g.Expect(d.TokenType).To(Equal("Bearer"))
		g.Expect(d.ExpiresIn).To(Equal(int64(20 * 60)))
		g.Expect(d.Header.Get("Cache-Control")).To(Equal("no-store"))
		g.Expect(d.Header.Get("Pragma")).To(Equal("no-cache"))
	}
	g.Expect(sessionName(laptop.RefreshToken)).NotTo(Equal(sessionName(phone.RefreshToken)))
	g.Expect(sessionsOf(t, ns)).To(HaveLen(2))

	status, _, claims := r.userinfo(t, laptop.AccessToken)
	g.Expect(status).To(Equal(http.StatusOK))
	g.Expect(claims).To(HaveKeyWithValue("sub", "alice"))
	g.Expect(claims).To(HaveKeyWithValue("iss", r.URL))
	g.Expect(claims).To(HaveKeyWithValue("client_id", "rotor"))
	g.Expect(claims).To(HaveKeyWithValue("groups", ConsistOf("dev", "ops")))
	g.Expect(claims).To(HaveKeyWithValue("aud", ConsistOf("rotor")))

	r.Clock.Step(time.Minute) // past the reuse grace
	laptop2 := r.refresh(t, laptop.RefreshToken)
	g.Expect(laptop2.Status).To(Equal(http.StatusOK))
	g.Expect(laptop2.RefreshToken).NotTo(Equal(laptop.RefreshToken))
	g.Expect(sessionName(laptop2.RefreshToken)).To(Equal(sessionName(laptop.RefreshToken)),
		"a refresh rotates the session in place")

	phone2 := r.refresh(t, phone.RefreshToken)
	g.Expect(phone2.Status).To(Equal(http.StatusOK))
	laptop3 := r.refresh(t, laptop2.RefreshToken)
	g.Expect(laptop3.Status).To(Equal(http.StatusOK))

	// Still one object per device, rotated in place.
	items := sessionsOf(t, ns)
	g.Expect(items).To(HaveLen(2))
	rotations := map[string]int64{}
	for _, s := range items {
		rotations[s.Name] = s.Spec.Session.Rotations
	}
	g.Expect(rotations).To(Equal(map[string]int64{
		sessionName(laptop.RefreshToken): 2,
		sessionName(phone.RefreshToken):  1,
	}))

	// The phone's session is untouched by the laptop's replay below.
	r.Clock.Step(time.Minute)
	replay := r.refresh(t, laptop2.RefreshToken)
	g.Expect(replay.Status).To(Equal(http.StatusBadRequest))
	g.Expect(replay.Error).To(Equal("invalid_grant"))
	g.Expect(r.refresh(t, phone2.RefreshToken).Status).To(Equal(http.StatusOK))
}

func TestReuseOfARotatedTokenRevokesTheSession(t *testing.T) {
	g := NewWithT(t)
	ns := env.Namespace(t)
	createAccount(t, ns, "bob", "pw-bob-123")
	r := startReplica(t, ns, newClock())

	first := r.login(t, "bob", "pw-bob-123")
	second := r.refresh(t, first.RefreshToken)
	g.Expect(second.Status).To(Equal(http.StatusOK))

	t.Run("within the grace period a replay gets the same successor and the session is kept", func(t *testing.T) {
		g := NewWithT(t)
		r.Clock.Step(2 * time.Second)
		again := r.refresh(t, first.RefreshToken)
		g.Expect(again.Status).To(Equal(http.StatusOK))
		g.Expect(again.RefreshToken).To(Equal(second.RefreshToken))
		rt := &identityv1alpha1.RefreshToken{}
		g.Expect(env.Client.Get(context.Background(), keyOf(ns, sessionName(first.RefreshToken)), rt)).To(Succeed())
		g.Expect(rt.Spec.State).To(Equal(identityv1alpha1.SessionActive))
	})

	r.Clock.Step(time.Minute)
	replay := r.refresh(t, first.RefreshToken)
	g.Expect(replay.Status).To(Equal(http.StatusBadRequest))
	g.Expect(replay.Error).To(Equal("invalid_grant"))

	rt := &identityv1alpha1.RefreshToken{}
	g.Expect(env.Client.Get(context.Background(), keyOf(ns, sessionName(first.RefreshToken)), rt)).To(Succeed())
	g.Expect(rt.Spec.State).To(Equal(identityv1alpha1.SessionRevoked))
	g.Expect(rt.Spec.Session.RevocationReason).To(Equal(identityv1alpha1.RevocationReuse))
	// The thief cannot be told from the owner: the current token dies too.
	g.Expect(r.refresh(t, second.RefreshToken).Error).To(Equal("invalid_grant"))
}

func TestConcurrentRefreshesOfOneToken(t *testing.T) {
	for _, tt := range []struct {
		name  string
		grace time.Duration
		// winners is how many of the 50 refreshes succeed; they all hold
		// the same successor.
		winners     int
		winnerWorks bool
	}{
		{"with the default grace every racer gets the same successor, which keeps working", 5 * time.Second, 50, true},
		{"with grace 0 one wins and the losers' replays revoke the session", 0, 1, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			ns := env.Namespace(t)
			createAccount(t, ns, "carol", "pw-carol-123")
			r := startReplica(t, ns, newClock(), func(o *replicaOptions) { o.RefreshReuseGrace = tt.grace })
			login := r.login(t, "carol", "pw-carol-123")
			g.Expect(login.Status).To(Equal(http.StatusOK))
			writesBefore := r.Requests.writes.Load()

			const n = 50
			replies := make([]*tokenReply, n)
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i := range n {
				wg.Go(func() {
					<-start
					replies[i] = r.refresh(t, login.RefreshToken)
				})
			}
			close(start)
			wg.Wait()

			successors := map[string]bool{}
			for _, rep := range replies {
				if rep.Status == http.StatusOK {
					successors[rep.RefreshToken] = true
				} else {
					g.Expect(rep.Status).To(Equal(http.StatusBadRequest))
					g.Expect(rep.Error).To(Equal("invalid_grant"))
				}
			}
			g.Expect(len(successors)).To(Equal(1), "one successor, never a fork")
			won := 0
			for _, rep := range replies {
				if rep.Status == http.StatusOK {
					won++
				}
			}
			g.Expect(won).To(Equal(tt.winners))
			g.Expect(sessionsOf(t, ns)).To(HaveLen(1), "the session is never forked")
			if tt.grace > 0 {
				g.Expect(r.Requests.writes.Load()-writesBefore).To(Equal(int64(1)), "one rotation written for 50 racers")
			}

			var winner string
			for tok := range successors {
				winner = tok
			}
			next := r.refresh(t, winner)
			if tt.winnerWorks {
				g.Expect(next.Status).To(Equal(http.StatusOK))
			} else {
				g.Expect(next.Error).To(Equal("invalid_grant"))
				g.Expect(sessionsOf(t, ns)[0].Spec.State).To(Equal(identityv1alpha1.SessionRevoked))
			}
		})
	}
}

// A thief who refreshes a stolen token first used to leave the owner
// refused (race_lost) with nothing recorded, and keep a live session. Now
// both hold the one successor, and whoever uses it second after the grace
// is a replay that ends the session.
func TestAThiefAndTheOwnerEndUpHoldingOneToken(t *testing.T) {
	g := NewWithT(t)
	ns := env.Namespace(t)
	createAccount(t, ns, "oscar", "pw-oscar-123")
	clock := newClock()
	r := startReplica(t, ns, clock)
	stolen := r.login(t, "oscar", "pw-oscar-123").RefreshToken

	thief := r.refresh(t, stolen)
	g.Expect(thief.Status).To(Equal(http.StatusOK))
	clock.Step(2 * time.Second)
	owner := r.refresh(t, stolen)
	g.Expect(owner.Status).To(Equal(http.StatusOK), "the owner, within the grace: %s", owner.Error)
	g.Expect(owner.RefreshToken).To(Equal(thief.RefreshToken), "the same successor")

	// The thief refreshes again; the owner's next refresh, after the grace,
	// is a replay: the session ends for both.
	clock.Step(time.Minute)
	g.Expect(r.refresh(t, thief.RefreshToken).Status).To(Equal(http.StatusOK))
	clock.Step(time.Minute)
	g.Expect(r.refresh(t, owner.RefreshToken).Error).To(Equal("invalid_grant"))
	rt := sessionsOf(t, ns)[0]
	g.Expect(rt.Spec.State).To(Equal(identityv1alpha1.SessionRevoked))
	g.Expect(rt.Spec.Session.RevocationReason).To(Equal(identityv1alpha1.RevocationReuse))
}

// On a replica that did not make the rotation, a second use within the
// grace is still refused, but no longer silently.
func TestARaceLostOnAnotherReplicaIsRecordedOnTheSession(t *testing.T) {
	g := NewWithT(t)
	ns := env.Namespace(t)
	createAccount(t, ns, "pat", "pw-pat-123")
	clock := newClock()
	a := startReplica(t, ns, clock)
	b := startReplica(t, ns, clock)
	login := a.login(t, "pat", "pw-pat-123").RefreshToken
	g.Expect(a.refresh(t, login).Status).To(Equal(http.StatusOK))
	clock.Step(time.Second)
	g.Expect(b.refresh(t, login).Error).To(Equal("invalid_grant"))
	g.Expect(sessionsOf(t, ns)[0].Spec.State).To(Equal(identityv1alpha1.SessionActive), "within the grace the session is kept")
	g.Eventually(func(g Gomega) {
		var list eventsv1.EventList
		g.Expect(env.Client.List(context.Background(), &list, client.InNamespace(ns))).To(Succeed())
		var reasons []string
		for _, e := range list.Items {
			reasons = append(reasons, e.Reason)
		}
		g.Expect(reasons).To(ContainElement("RefreshTokenRaceLost"))
	}).Should(Succeed())
}

func TestASecondReplicaRefusesATokenRotatedByTheFirst(t *testing.T) {
	g := NewWithT(t)
	ns := env.Namespace(t)
	createAccount(t, ns, "dave", "pw-dave-123")
	clock := newClock()
	a := startReplica(t, ns, clock)
	b := startReplica(t, ns, clock)

	login := a.login(t, "dave", "pw-dave-123")
	// Warm b's cache with the session before a rotates it.
	warm := b.refresh(t, login.RefreshToken)
	g.Expect(warm.Status).To(Equal(http.StatusOK))
	clock.Step(time.Minute)
	rotated := a.refresh(t, warm.RefreshToken)
	g.Expect(rotated.Status).To(Equal(http.StatusOK))

	clock.Step(time.Minute)
	g.Expect(b.refresh(t, warm.RefreshToken).Error).To(Equal("invalid_grant"))
	// The token a handed out is honored by b, whatever b had cached.
	rec := &identityv1alpha1.RefreshToken{}
	g.Expect(env.Client.Get(context.Background(), keyOf(ns, sessionName(login.RefreshToken)), rec)).To(Succeed())
	g.Expect(rec.Spec.State).To(Equal(identityv1alpha1.SessionRevoked), "the replay on b revoked the session")
}

func TestKubectlDeleteRevokesOnEveryReplica(t *testing.T) {
	g := NewWithT(t)
	ns := env.Namespace(t)
	createAccount(t, ns, "erin", "pw-erin-123")
	r := startReplica(t, ns, newClock())
	login := r.login(t, "erin", "pw-erin-123")
	g.Expect(login.Status).To(Equal(http.StatusOK))

	// What `kubectl delete rt --field-selector spec.subject=erin` does.
	g.Expect(env.Client.DeleteAllOf(context.Background(), &identityv1alpha1.RefreshToken{}, client.InNamespace(ns),
		client.MatchingFields{"spec.subject": "erin"})).To(Succeed())
	g.Expect(r.refresh(t, login.RefreshToken).Error).To(Equal("invalid_grant"))
	g.Expect(sessionsOf(t, ns)).To(BeEmpty(), "a refused refresh writes nothing")
}

func TestRevokeEndpoint(t *testing.T) {
	g := NewWithT(t)
	ns := env.Namespace(t)
	createAccount(t, ns, "frank", "pw-frank-123")
	r := startReplica(t, ns, newClock())
	login := r.login(t, "frank", "pw-frank-123")

	g.Expect(post(t, r.URL+"/revoke", url.Values{"token": {login.RefreshToken}}).Status).To(Equal(http.StatusOK))
	g.Expect(r.refresh(t, login.RefreshToken).Error).To(Equal("invalid_grant"))
	s := sessionsOf(t, ns)
	g.Expect(s).To(HaveLen(1))
	g.Expect(s[0].Spec.State).To(Equal(identityv1alpha1.SessionRevoked))
	g.Expect(s[0].Spec.Session.RevocationReason).To(Equal(identityv1alpha1.RevocationRevoked))

	// RFC 7009: unknown and already revoked tokens are answered 200 too.
	g.Expect(post(t, r.URL+"/revoke", url.Values{"token": {login.RefreshToken}}).Status).To(Equal(http.StatusOK))
	unknown := "rt-aaaaaaaaaaaaaaaaaaaaaaaaaa.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	g.Expect(post(t, r.URL+"/revoke", url.Values{"token": {unknown}}).Status).To(Equal(http.StatusOK))
	g.Expect(post(t, r.URL+"/revoke", url.Values{"token": {"garbage"}}).Status).To(Equal(http.StatusOK))
}

func TestExpiredAccessTokenGets401WithBearerChallenge(t *testing.T) {
	g := NewWithT(t)
	ns := env.Namespace(t)
	createAccount(t, ns, "gina", "pw-gina-123")
	r := startReplica(t, ns, newClock())
	login := r.login(t, "gina", "pw-gina-123")

	status, _, _ := r.userinfo(t, login.AccessToken)
	g.Expect(status).To(Equal(http.StatusOK))

	r.Clock.Step(20*time.Minute + 2*time.Minute + time.Second) // TTL + clock-skew leeway
	status, header, body := r.userinfo(t, login.AccessToken)
	g.Expect(status).To(Equal(http.StatusUnauthorized))
	g.Expect(header.Get("WWW-Authenticate")).To(HavePrefix(`Bearer `))
	g.Expect(header.Get("WWW-Authenticate")).To(ContainSubstring(`error="invalid_token"`))
	g.Expect(header.Get("WWW-Authenticate")).To(ContainSubstring(`error_description="`))
	g.Expect(body).To(HaveKeyWithValue("error", "invalid_token"))

	// The client's answer to a 401: refresh.
	fresh := r.refresh(t, login.RefreshToken)
	g.Expect(fresh.Status).To(Equal(http.StatusOK))
	status, _, _ = r.userinfo(t, fresh.AccessToken)
	g.Expect(status).To(Equal(http.StatusOK))

	// No credentials at all: a challenge without an error code (RFC 6750 section 3.1).
	resp, err := http.Get(r.URL + "/userinfo")
	g.Expect(err).NotTo(HaveOccurred())
	resp.Body.Close()
	g.Expect(resp.StatusCode).To(Equal(http.StatusUnauthorized))
	g.Expect(resp.Header.Get("WWW-Authenticate")).NotTo(ContainSubstring("error="))
}

func TestSessionExpiry(t *testing.T) {
	opts := func(o *replicaOptions) {
		o.RefreshTokenTTL = time.Hour
		o.SessionMaxLifetime = 3 * time.Hour
	}
	t.Run("an unused session expires after the sliding lifetime", func(t *testing.T) {
		g := NewWithT(t)
		ns := env.Namespace(t)
		createAccount(t, ns, "hal", "pw-hal-1234")
		r := startReplica(t, ns, newClock(), opts)
		login := r.login(t, "hal", "pw-hal-1234")
		r.Clock.Step(59 * time.Minute)
		again := r.refresh(t, login.RefreshToken)
		g.Expect(again.Status).To(Equal(http.StatusOK), "used within the hour")
		r.Clock.Step(time.Hour)
		g.Expect(r.refresh(t, again.RefreshToken).Error).To(Equal("invalid_grant"))
	})
	t.Run("a session in use ends at its absolute expiry", func(t *testing.T) {
		g := NewWithT(t)
		ns := env.Namespace(t)
		createAccount(t, ns, "ivy", "pw-ivy-1234")
		r := startReplica(t, ns, newClock(), opts)
		tok := r.login(t, "ivy", "pw-ivy-1234")
		for range 5 { // 5 × 35m = 2h55m: each refresh slides the expiry
			r.Clock.Step(35 * time.Minute)
			tok = r.refresh(t, tok.RefreshToken)
			g.Expect(tok.Status).To(Equal(http.StatusOK))
		}
		s := sessionsOf(t, ns)[0]
		g.Expect(s.Spec.ExpiresAt.Time).To(Equal(s.Spec.Session.AbsoluteExpiresAt.Time),
			"the sliding expiry never passes the absolute one")
		r.Clock.Step(5 * time.Minute)
		g.Expect(r.refresh(t, tok.RefreshToken).Error).To(Equal("invalid_grant"))
	})
}

func TestLoginAndWarmRefreshCostOneWriteAndNoRead(t *testing.T) {
	g := NewWithT(t)
	ns := env.Namespace(t)
	createAccount(t, ns, "judy", "pw-judy-123")
	r := startReplica(t, ns, newClock())
	// Let the eviction watch's start-up list pass.
	time.Sleep(200 * time.Millisecond)

	r.Requests.reads.Store(0)
	r.Requests.writes.Store(0)
	login := r.login(t, "judy", "pw-judy-123")
	g.Expect(login.Status).To(Equal(http.StatusOK))
	g.Expect(r.Requests.writes.Load()).To(BeEquivalentTo(1), "a login is one create")
	g.Expect(r.Requests.reads.Load()).To(BeEquivalentTo(0))

	tok := login
	for i := range 5 {
		r.Requests.reads.Store(0)
		r.Requests.writes.Store(0)
		tok = r.refresh(t, tok.RefreshToken)
		g.Expect(tok.Status).To(Equal(http.StatusOK))
		g.Expect(r.Requests.writes.Load()).To(BeEquivalentTo(1), "refresh %d: one conditional update", i)
		g.Expect(r.Requests.reads.Load()).To(BeEquivalentTo(0), "refresh %d: no read with the session cached", i)
	}
}

func TestLogsContainNoSecrets(t *testing.T) {
	g := NewWithT(t)
	ns := env.Namespace(t)
	const password = "pw-that-must-not-leak-42"
	createAccount(t, ns, "kim", password)
	r := startReplica(t, ns, newClock())

	var secrets []string
	login := r.login(t, "kim", password)
	secrets = append(secrets, login.AccessToken, login.RefreshToken)
	r.Clock.Step(time.Minute)
	next := r.refresh(t, login.RefreshToken)
	secrets = append(secrets, next.AccessToken, next.RefreshToken)
	r.Clock.Step(time.Minute)
	r.refresh(t, login.RefreshToken) // a replay: revokes, logs and records an event
	r.login(t, "kim", "wrong-password")
	post(t, r.URL+"/revoke", url.Values{"token": {next.RefreshToken}})

	for _, s := range sessionsOf(t, ns) {
		secrets = append(secrets, s.Spec.Session.SecretHash, s.Spec.Session.PreviousSecretHash)
	}
	logs := r.Logs.String()
	g.Expect(logs).NotTo(BeEmpty())
	for _, s := range append(secrets, password, "wrong-password") {
		if s == "" {
			continue
		}
		g.Expect(logs).NotTo(ContainSubstring(s))
		// Also no part that could be a refresh token's secret half.
		if _, secret, ok := strings.Cut(s, "."); ok && strings.HasPrefix(s, "rt-") {
			g.Expect(logs).NotTo(ContainSubstring(secret))
		}
	}
}
