package issuer_test

// Fault tests: a restart with a cold session cache, a leader
// failover, races between refresh, revocation, rotation and signing, and
// clock skew between replicas. Each asserts the exact outcome. Every
// replica here is started with sharedIssuer, as replicas behind one load
// balancer are.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
	"github.com/golang-jwt/jwt/v5"
	. "github.com/onsi/gomega"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"

	identityv1alpha1 "rotor.dev/rotor/api/v1alpha1"
	"rotor.dev/rotor/pkg/keys"
	"rotor.dev/rotor/pkg/tokens"
)

func signingKeySecrets(t testing.TB, ns string) []corev1.Secret {
	t.Helper()
	list := &corev1.SecretList{}
	if err := env.Client.List(context.Background(), list, client.InNamespace(ns),
		client.MatchingFields{"type": string(keys.SecretType)}); err != nil {
		t.Fatal(err)
	}
	return list.Items
}

func secretsInState(t testing.TB, ns string, state keys.State) []corev1.Secret {
	t.Helper()
	var out []corev1.Secret
	for _, s := range signingKeySecrets(t, ns) {
		if s.Labels[keys.StateLabel] == string(state) {
			out = append(out, s)
		}
	}
	return out
}

// requestRotation does `kubectl annotate secret <active> identity.rotor.dev/rotate=now`.
func requestRotation(t testing.TB, ns string) error {
	active := secretsInState(t, ns, keys.StateActive)
	if len(active) != 1 {
		return fmt.Errorf("%d active signing keys", len(active))
	}
	sec := &active[0]
	patch := client.MergeFrom(sec.DeepCopy())
	metav1.SetMetaDataAnnotation(&sec.ObjectMeta, keys.RotateAnnotation, "now")
	return env.Client.Patch(context.Background(), sec, patch)
}

func session(t testing.TB, ns, refreshToken string) (*identityv1alpha1.RefreshToken, error) {
	t.Helper()
	rt := &identityv1alpha1.RefreshToken{}
	err := env.Client.Get(context.Background(), keyOf(ns, sessionName(refreshToken)), rt)
	return rt, err
}

// tryPost is post for goroutines other than the test's: a transport error
// is Status 0 with the error in Description, never t.Fatal.
func tryPost(endpoint string, form url.Values) *tokenReply {
	resp, err := http.PostForm(endpoint, form)
	if err != nil {
		return &tokenReply{Description: err.Error()}
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	reply := &tokenReply{Status: resp.StatusCode, Header: resp.Header}
	if len(body) > 0 {
		if err := json.Unmarshal(body, reply); err != nil {
			reply.Description = fmt.Sprintf("%q is not JSON: %v", body, err)
		}
	}
	return reply
}

func tryLogin(r *replica, username, password string) *tokenReply {
	return tryPost(r.URL+"/token", url.Values{
		"grant_type": {"password"}, "username": {username}, "password": {password},
	})
}

func tryRefresh(r *replica, refreshToken string) *tokenReply {
	return tryPost(r.URL+"/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {refreshToken}})
}

func tryRevoke(r *replica, token string) int {
	return tryPost(r.URL+"/revoke", url.Values{"token": {token}}).Status
}

// --- 1. Restart with a cold LRU ---------------------------------------------

func TestRestartWithAColdCacheKeepsEverySessionAndKey(t *testing.T) {
	g := NewWithT(t)
	ns := env.Namespace(t)
	users := []string{"ada", "ben", "cyd"}
	for _, u := range users {
		createAccount(t, ns, u, "pw-"+u+"-123")
	}
	clock := newClock()
	a := startReplica(t, ns, clock, sharedIssuer, fastLeaderElection)
	g.Eventually(a.elected, 10*time.Second, 50*time.Millisecond).Should(BeTrue())

	// Two devices per user; device i refreshed i%3 times: chains of 1 to 3 tokens.
	type chain []string // every refresh token of a session, oldest first
	var chains []chain
	for i, u := range users {
		for d := range 2 {
			login := a.login(t, u, "pw-"+u+"-123")
			g.Expect(login.Status).To(Equal(http.StatusOK))
			c := chain{login.RefreshToken}
			for range (2*i + d) % 3 {
				r := a.refresh(t, c[len(c)-1])
				g.Expect(r.Status).To(Equal(http.StatusOK))
				c = append(c, r.RefreshToken)
			}
			chains = append(chains, c)
		}
	}
	// One more session whose replaced token will be replayed on the new replica.
	login := a.login(t, "ada", "pw-ada-123")
	replayed := a.refresh(t, login.RefreshToken)
	g.Expect(replayed.Status).To(Equal(http.StatusOK))

	keysBefore := map[string]string{}
	for _, s := range signingKeySecrets(t, ns) {
		keysBefore[s.Name] = string(s.UID)
	}
	g.Expect(keysBefore).To(HaveLen(2), "an active and a next key")
	kidBefore := a.activeKID()
	// Past the reuse grace: a replay is now reuse, not a client racing itself.
	clock.Step(time.Minute)

	a.stop()
	b := newReplica(t, ns, clock, sharedIssuer, fastLeaderElection)

	t.Run("the new replica is not ready before its caches sync", func(t *testing.T) {
		g := NewWithT(t)
		g.Expect(b.Server.Keys.ReadyCheck(nil)).To(HaveOccurred())
		g.Expect(b.Server.Accounts.ReadyCheck(nil)).To(HaveOccurred())
		g.Expect(b.Server.Evictor.Synced()).To(BeFalse())
		_, ok := b.Server.Keys.Active()
		g.Expect(ok).To(BeFalse())
		b.start()
		g.Eventually(func(g Gomega) {
			g.Expect(b.Server.Keys.ReadyCheck(nil)).To(Succeed())
			g.Expect(b.Server.Accounts.ReadyCheck(nil)).To(Succeed())
			g.Expect(b.Server.Evictor.Synced()).To(BeTrue())
			g.Expect(b.readyz()).To(Equal(http.StatusOK))
		}, 20*time.Second, 20*time.Millisecond).Should(Succeed())
	})
	if !b.ready() {
		t.FailNow()
	}

	t.Run("the signing keys are unchanged", func(t *testing.T) {
		g := NewWithT(t)
		g.Expect(b.activeKID()).To(Equal(kidBefore))
		// b leads once a's Lease is released, and its reconciler then runs.
		g.Eventually(b.elected, 10*time.Second, 50*time.Millisecond).Should(BeTrue())
		g.Consistently(func() map[string]string {
			now := map[string]string{}
			for _, s := range signingKeySecrets(t, ns) {
				now[s.Name] = string(s.UID)
			}
			return now
		}, 1500*time.Millisecond, 100*time.Millisecond).Should(Equal(keysBefore))
		g.Expect(b.activeKID()).To(Equal(kidBefore))
	})

	t.Run("every session's latest refresh token rotates once on the new replica", func(t *testing.T) {
		g := NewWithT(t)
		readsBefore := b.Requests.sessionReads.Load()
		next := make([]string, len(chains))
		for i, c := range chains {
			r := b.refresh(t, c[len(c)-1])
			g.Expect(r.Status).To(Equal(http.StatusOK), "session %d", i)
			g.Expect(sessionName(r.RefreshToken)).To(Equal(sessionName(c[0])))
			next[i] = r.RefreshToken
		}
		g.Expect(b.Requests.sessionReads.Load()-readsBefore).To(Equal(int64(len(chains))),
			"a cold cache: one read per session")

		for i, c := range chains {
			again := b.refresh(t, c[len(c)-1])
			g.Expect(again.Status).To(Equal(http.StatusOK), "session %d: used again within the grace", i)
			g.Expect(again.RefreshToken).To(Equal(next[i]), "session %d: the same successor, no fork", i)
			for j, old := range c[:len(c)-1] {
				r := b.refresh(t, old)
				g.Expect(r.Status).To(Equal(http.StatusBadRequest), "session %d: replaced token %d", i, j)
				g.Expect(r.Error).To(Equal("invalid_grant"))
			}
			rt, err := session(t, ns, c[0])
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(rt.Spec.State).To(Equal(identityv1alpha1.SessionActive))
			g.Expect(rt.Spec.Session.Rotations).To(Equal(int64(len(c))), "the chain's rotations plus b's one")
			// The token b handed out is the session's one live token.
			g.Expect(b.refresh(t, next[i]).Status).To(Equal(http.StatusOK))
		}
		g.Expect(sessionsOf(t, ns)).To(HaveLen(len(chains) + 1))
	})

	t.Run("a replay of a replaced token on the new replica is reuse and revokes the session", func(t *testing.T) {
		g := NewWithT(t)
		r := b.refresh(t, login.RefreshToken)
		g.Expect(r.Error).To(Equal("invalid_grant"))
		rt, err := session(t, ns, login.RefreshToken)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(rt.Spec.State).To(Equal(identityv1alpha1.SessionRevoked))
		g.Expect(rt.Spec.Session.RevocationReason).To(Equal(identityv1alpha1.RevocationReuse))
		g.Expect(b.refresh(t, replayed.RefreshToken).Error).To(Equal("invalid_grant"))
	})
}

// --- 2. Leader failover ------------------------------------------------------

func TestLeaderFailoverHandsRotationAndGCToTheSurvivor(t *testing.T) {
	g := NewWithT(t)
	ns := env.Namespace(t)
	createAccount(t, ns, "fay", "pw-fay-123")
	clock := newClock()
	opts := []replicaOption{sharedIssuer, fastLeaderElection, fastKeys,
		func(o *replicaOptions) { o.RevokedRetention = time.Minute }}
	a := startReplica(t, ns, clock, opts...)
	b := startReplica(t, ns, clock, opts...)

	var leader, survivor *replica
	g.Eventually(func() bool {
		switch {
		case a.elected():
			leader, survivor = a, b
		case b.elected():
			leader, survivor = b, a
		}
		return leader != nil
	}, 10*time.Second, 20*time.Millisecond).Should(BeTrue())
	g.Consistently(survivor.elected, time.Second, 50*time.Millisecond).Should(BeFalse(), "one leader at a time")
	lease := &coordinationv1.Lease{}
	g.Expect(env.Client.Get(context.Background(), keyOf(ns, "rotor-controllers"), lease)).To(Succeed())
	g.Expect(lease.Spec.HolderIdentity).NotTo(BeNil())
	holderBefore := *lease.Spec.HolderIdentity

	// Revoked before the failover; due for GC a minute later.
	victim := survivor.login(t, "fay", "pw-fay-123")
	g.Expect(victim.Status).To(Equal(http.StatusOK))
	g.Expect(tryRevoke(survivor, victim.RefreshToken)).To(Equal(http.StatusOK))

	// Refreshes on the survivor throughout the failover.
	login := survivor.login(t, "fay", "pw-fay-123")
	g.Expect(login.Status).To(Equal(http.StatusOK))
	stopLoop := make(chan struct{})
	loopDone := make(chan struct{})
	var statuses sync.Map // status → count
	var refreshes atomic.Int64
	go func() {
		defer close(loopDone)
		token := login.RefreshToken
		for {
			select {
			case <-stopLoop:
				return
			default:
			}
			r := tryRefresh(survivor, token)
			c, _ := statuses.LoadOrStore(r.Status, new(atomic.Int64))
			c.(*atomic.Int64).Add(1)
			refreshes.Add(1)
			if r.Status == http.StatusOK {
				token = r.RefreshToken
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()

	crashed := time.Now()
	leader.crash()

	t.Run("the survivor becomes leader within the lease duration", func(t *testing.T) {
		g := NewWithT(t)
		g.Eventually(survivor.elected, 3*time.Second+3*time.Second, 20*time.Millisecond).Should(BeTrue())
		t.Logf("survivor elected %v after the leader crashed (lease 3s, retry 500ms)",
			time.Since(crashed).Round(10*time.Millisecond))
		g.Expect(env.Client.Get(context.Background(), keyOf(ns, "rotor-controllers"), lease)).To(Succeed())
		g.Expect(*lease.Spec.HolderIdentity).NotTo(Equal(holderBefore))
	})
	if !survivor.elected() {
		t.FailNow()
	}

	t.Run("the survivor takes over key rotation", func(t *testing.T) {
		g := NewWithT(t)
		before := survivor.activeKID()
		next := secretsInState(t, ns, keys.StateNext)
		g.Expect(next).To(HaveLen(1))
		nextKID := next[0].Annotations[keys.KIDAnnotation]
		clock.Step(3 * time.Second) // past the 2s prepublish of the next key
		g.Expect(requestRotation(t, ns)).To(Succeed())
		g.Eventually(survivor.activeKID, 10*time.Second, 20*time.Millisecond).Should(Equal(nextKID))
		g.Expect(nextKID).NotTo(Equal(before))
		g.Eventually(func(g Gomega) {
			g.Expect(secretsInState(t, ns, keys.StateActive)).To(HaveLen(1))
			g.Expect(secretsInState(t, ns, keys.StateNext)).To(HaveLen(1))
			retired := secretsInState(t, ns, keys.StateRetired)
			g.Expect(retired).To(HaveLen(1))
			g.Expect(retired[0].Annotations[keys.KIDAnnotation]).To(Equal(before))
			g.Expect(retired[0].Annotations).NotTo(HaveKey(keys.RotateAnnotation))
		}, 10*time.Second, 50*time.Millisecond).Should(Succeed())
		_, published := survivor.Server.Keys.Lookup(before)
		g.Expect(published).To(BeTrue(), "the retired key stays in the JWKS")
	})

	t.Run("the survivor takes over session GC", func(t *testing.T) {
		g := NewWithT(t)
		_, err := session(t, ns, victim.RefreshToken)
		g.Expect(err).NotTo(HaveOccurred(), "not due yet")
		clock.Step(time.Minute)
		g.Eventually(func() bool {
			clock.Step(time.Second) // wakes the collector's timer whenever it was set
			_, err := session(t, ns, victim.RefreshToken)
			return apierrors.IsNotFound(err)
		}, 10*time.Second, 100*time.Millisecond).Should(BeTrue())
		rt, err := session(t, ns, login.RefreshToken)
		g.Expect(err).NotTo(HaveOccurred(), "a live session is kept")
		g.Expect(rt.Spec.State).To(Equal(identityv1alpha1.SessionActive))
	})

	close(stopLoop)
	<-loopDone
	t.Run("the issuer served every refresh on the survivor during the failover", func(t *testing.T) {
		g := NewWithT(t)
		got := map[int]int64{}
		statuses.Range(func(k, v any) bool { got[k.(int)] = v.(*atomic.Int64).Load(); return true })
		g.Expect(refreshes.Load()).To(BeNumerically(">", 20))
		g.Expect(got).To(Equal(map[int]int64{http.StatusOK: refreshes.Load()}))
	})
}

// --- 3. Races ----------------------------------------------------------------

// raceRefreshAndRevoke logs in, then refreshes and revokes the login's
// refresh token at once, iterations times, and checks each outcome.
func raceRefreshAndRevoke(t *testing.T, ns string, iterations int, login, refresher, revoker *replica) {
	g := NewWithT(t)
	names := map[string]bool{}
	var refreshWon, revokeWon int
	for i := range iterations {
		l := login.login(t, "gus", "pw-gus-123")
		g.Expect(l.Status).To(Equal(http.StatusOK))
		names[sessionName(l.RefreshToken)] = true
		start := make(chan struct{})
		var wg sync.WaitGroup
		var refreshed *tokenReply
		var revoked int
		wg.Add(2)
		// A little head start, to one side or the other, varies the winner.
		lag := time.Duration(i%4) * 500 * time.Microsecond
		refreshLag, revokeLag := lag, time.Duration(0)
		if i%2 == 1 {
			refreshLag, revokeLag = 0, lag
		}
		go func() {
			defer wg.Done()
			<-start
			time.Sleep(refreshLag)
			refreshed = tryRefresh(refresher, l.RefreshToken)
		}()
		go func() {
			defer wg.Done()
			<-start
			time.Sleep(revokeLag)
			revoked = tryRevoke(revoker, l.RefreshToken)
		}()
		close(start)
		wg.Wait()

		g.Expect(revoked).To(Equal(http.StatusOK), "iteration %d: /revoke", i)
		g.Expect(refreshed.Status).To(BeElementOf(http.StatusOK, http.StatusBadRequest),
			"iteration %d: refresh answered %d %s", i, refreshed.Status, refreshed.Error)
		rt, err := session(t, ns, l.RefreshToken)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(rt.Spec.State).To(Equal(identityv1alpha1.SessionRevoked), "iteration %d", i)
		g.Expect(rt.Spec.Session.RevocationReason).To(Equal(identityv1alpha1.RevocationRevoked), "iteration %d", i)
		if refreshed.Status == http.StatusOK {
			refreshWon++
			g.Expect(rt.Spec.Session.Rotations).To(Equal(int64(1)))
			for _, r := range []*replica{refresher, revoker} {
				again := r.refresh(t, refreshed.RefreshToken)
				g.Expect(again.Error).To(Equal("invalid_grant"),
					"iteration %d: the racing refresh's token outlived the revocation", i)
			}
		} else {
			revokeWon++
			g.Expect(refreshed.Error).To(Equal("invalid_grant"))
			g.Expect(rt.Spec.Session.Rotations).To(Equal(int64(0)))
		}
		g.Expect(refresher.refresh(t, l.RefreshToken).Error).To(Equal("invalid_grant"))
	}
	t.Logf("refresh won %d, revocation won %d of %d", refreshWon, revokeWon, iterations)

	// Exactly one RefreshToken object per login, none left active.
	items := sessionsOf(t, ns)
	g.Expect(items).To(HaveLen(iterations))
	for _, rt := range items {
		g.Expect(names).To(HaveKey(rt.Name))
		g.Expect(rt.Spec.State).To(Equal(identityv1alpha1.SessionRevoked))
	}
}

func TestRaceOfRefreshAndRevocation(t *testing.T) {
	setup := func(t *testing.T) (string, *replica, *replica) {
		ns := env.Namespace(t)
		createAccount(t, ns, "gus", "pw-gus-123")
		clock := newClock()
		return ns, startReplica(t, ns, clock, sharedIssuer), startReplica(t, ns, clock, sharedIssuer)
	}
	t.Run("on one replica the revocation always wins in the end", func(t *testing.T) {
		ns, a, _ := setup(t)
		raceRefreshAndRevoke(t, ns, 16, a, a, a)
	})
	t.Run("revoked on a cold replica while the session's own replica refreshes", func(t *testing.T) {
		ns, a, b := setup(t)
		raceRefreshAndRevoke(t, ns, 16, a, a, b)
	})
	t.Run("refreshed on a cold replica while the session's own replica revokes", func(t *testing.T) {
		ns, a, b := setup(t)
		raceRefreshAndRevoke(t, ns, 16, a, b, a)
	})
}

// TestRaceLostBetweenReadAndWrite makes the race above deterministic: the
// other replica writes the session right after this replica's read of it,
// so this replica's conditional update meets a Conflict after a fresh read.
func TestRaceLostBetweenReadAndWrite(t *testing.T) {
	setup := func(t *testing.T) (string, *replica, *replica, *tokenReply) {
		ns := env.Namespace(t)
		createAccount(t, ns, "gus", "pw-gus-123")
		clock := newClock()
		a, b := startReplica(t, ns, clock, sharedIssuer), startReplica(t, ns, clock, sharedIssuer)
		l := a.login(t, "gus", "pw-gus-123") // cached on a; b's cache is cold
		NewWithT(t).Expect(l.Status).To(Equal(http.StatusOK))
		return ns, a, b, l
	}

	t.Run("a revocation overtaken by a refresh on another replica still revokes the session", func(t *testing.T) {
		g := NewWithT(t)
		ns, a, b, l := setup(t)
		var won *tokenReply
		ran := b.afterSessionRead(func() { won = tryRefresh(a, l.RefreshToken) })
		status := tryRevoke(b, l.RefreshToken)
		g.Eventually(ran).Should(BeClosed())
		g.Expect(won.Status).To(Equal(http.StatusOK), "a's refresh got in between")
		g.Expect(status).To(Equal(http.StatusOK))
		rt, err := session(t, ns, l.RefreshToken)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(rt.Spec.State).To(Equal(identityv1alpha1.SessionRevoked))
		g.Expect(a.refresh(t, won.RefreshToken).Error).To(Equal("invalid_grant"))
	})

	t.Run("a refresh overtaken by a revocation on another replica is invalid_grant", func(t *testing.T) {
		g := NewWithT(t)
		ns, a, b, l := setup(t)
		revoked := 0
		ran := b.afterSessionRead(func() { revoked = tryRevoke(a, l.RefreshToken) })
		r := tryRefresh(b, l.RefreshToken)
		g.Eventually(ran).Should(BeClosed())
		g.Expect(revoked).To(Equal(http.StatusOK))
		g.Expect(r.Status).To(Equal(http.StatusBadRequest))
		g.Expect(r.Error).To(Equal("invalid_grant"))
		rt, err := session(t, ns, l.RefreshToken)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(rt.Spec.State).To(Equal(identityv1alpha1.SessionRevoked))
	})

	t.Run("a refresh overtaken by a refresh on another replica is invalid_grant "+
		"and the winner's token works", func(t *testing.T) {
		g := NewWithT(t)
		_, a, b, l := setup(t)
		var won *tokenReply
		ran := b.afterSessionRead(func() { won = tryRefresh(a, l.RefreshToken) })
		r := tryRefresh(b, l.RefreshToken)
		g.Eventually(ran).Should(BeClosed())
		g.Expect(won.Status).To(Equal(http.StatusOK))
		g.Expect(r.Status).To(Equal(http.StatusBadRequest))
		g.Expect(r.Error).To(Equal("invalid_grant"))
		g.Expect(b.refresh(t, won.RefreshToken).Status).To(Equal(http.StatusOK))
	})
}

// verifyWithJWKS checks an access token against a JWKS body with go-jose,
// independently of rotor's own verifier.
func verifyWithJWKS(accessToken string, jwksBody []byte) error {
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(jwksBody, &set); err != nil {
		return fmt.Errorf("JWKS: %w", err)
	}
	tok, err := josejwt.ParseSigned(accessToken, []jose.SignatureAlgorithm{jose.ES256, jose.EdDSA, jose.RS256})
	if err != nil {
		return fmt.Errorf("parsing token: %w", err)
	}
	kid := tok.Headers[0].KeyID
	found := set.Key(kid)
	if len(found) != 1 {
		return fmt.Errorf("kid %q not in the JWKS (%d keys)", kid, len(set.Keys))
	}
	var claims josejwt.Claims
	if err := tok.Claims(found[0], &claims); err != nil {
		return fmt.Errorf("kid %q: %w", kid, err)
	}
	return nil
}

func fetchJWKS(r *replica) ([]byte, error) {
	resp, err := http.Get(r.URL + "/keys")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /keys: %d", resp.StatusCode)
	}
	return io.ReadAll(resp.Body)
}

func TestRaceOfKeyRotationAndSigning(t *testing.T) {
	g := NewWithT(t)
	ns := env.Namespace(t)
	createAccount(t, ns, "hal", "pw-hal-123")
	clock := newClock()
	// Both replicas reconcile keys (no leader election), as two replicas
	// briefly do after a failover.
	a := startReplica(t, ns, clock, sharedIssuer, fastKeys)
	b := startReplica(t, ns, clock, sharedIssuer, fastKeys)
	replicas := []*replica{a, b}

	ctx, stopWork := context.WithCancel(context.Background())
	defer stopWork()
	var (
		mu       sync.Mutex
		failures []string
		kids     = map[string]int{}
		issued   atomic.Int64
	)
	fail := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if len(failures) < 20 {
			failures = append(failures, fmt.Sprintf(format, args...))
		}
	}
	check := func(issuer *replica, access string) {
		issued.Add(1)
		// The issuing replica's JWKS right after, then every other one's.
		for _, r := range append([]*replica{issuer}, replicas...) {
			body, err := fetchJWKS(r)
			if err != nil {
				fail("%v", err)
				continue
			}
			if err := verifyWithJWKS(access, body); err != nil {
				fail("token from %s against JWKS of %s: %v", issuer.URL, r.URL, err)
			}
		}
		if tok, _, err := jwt.NewParser().ParseUnverified(access, jwt.MapClaims{}); err == nil {
			mu.Lock()
			kids[tok.Header["kid"].(string)]++
			mu.Unlock()
		}
	}

	var wg sync.WaitGroup
	for w := range 4 {
		issuer := replicas[w%2]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				login := tryLogin(issuer, "hal", "pw-hal-123")
				if login.Status != http.StatusOK {
					fail("login on %s: %d %s", issuer.URL, login.Status, login.Error)
					return
				}
				check(issuer, login.AccessToken)
				token := login.RefreshToken
				for range 20 {
					if ctx.Err() != nil {
						return
					}
					r := tryRefresh(issuer, token)
					if r.Status != http.StatusOK {
						fail("refresh on %s: %d %s", issuer.URL, r.Status, r.Error)
						return
					}
					check(issuer, r.AccessToken)
					token = r.RefreshToken
				}
			}
		}()
	}

	// The rotator: what an operator (or the rotation period) does, again
	// and again. Each next key is seen by every replica before it may sign,
	// as the prepublish period guarantees in real time.
	signedBy := func(kid string) int {
		mu.Lock()
		defer mu.Unlock()
		return kids[kid]
	}
	const rotations = 6
	for range rotations {
		// Let a few tokens be signed by the current key first.
		active := a.activeKID()
		g.Eventually(func() int { return signedBy(active) }, 20*time.Second, 10*time.Millisecond).
			Should(BeNumerically(">=", 3))
		var nextKID string
		g.Eventually(func(g Gomega) {
			next := secretsInState(t, ns, keys.StateNext)
			g.Expect(next).To(HaveLen(1))
			nextKID = next[0].Annotations[keys.KIDAnnotation]
			for _, n := range replicas {
				_, ok := n.Server.Keys.Lookup(nextKID)
				g.Expect(ok).To(BeTrue())
			}
		}, 10*time.Second, 20*time.Millisecond).Should(Succeed())
		clock.Step(3 * time.Second)
		g.Expect(requestRotation(t, ns)).To(Succeed())
		g.Eventually(func(g Gomega) {
			for _, n := range replicas {
				g.Expect(n.activeKID()).To(Equal(nextKID))
			}
		}, 10*time.Second, 20*time.Millisecond).Should(Succeed())
	}
	last := a.activeKID()
	g.Eventually(func() int { return signedBy(last) }, 20*time.Second, 10*time.Millisecond).
		Should(BeNumerically(">=", 3))
	stopWork()
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d rotations, %d access tokens checked, signed by %d keys: %v", rotations, issued.Load(), len(kids), kids)
	g.Expect(failures).To(BeEmpty())
	g.Expect(kids).To(HaveLen(rotations+1), "every key in turn signed tokens")
	g.Expect(secretsInState(t, ns, keys.StateActive)).To(HaveLen(1))
	g.Expect(secretsInState(t, ns, keys.StateNext)).To(HaveLen(1))
	g.Expect(secretsInState(t, ns, keys.StateRetired)).To(HaveLen(rotations))
}

// --- 4. Clock skew -----------------------------------------------------------

func TestClockSkewBetweenReplicas(t *testing.T) {
	ns := env.Namespace(t)
	createAccount(t, ns, "ivy", "pw-ivy-123")
	base := time.Now().Truncate(time.Second)
	clockA, clockB := clocktesting.NewFakeClock(base), clocktesting.NewFakeClock(base)
	a := startReplica(t, ns, clockA, sharedIssuer)
	b := startReplica(t, ns, clockB, sharedIssuer)

	skew := func(offA, offB time.Duration) {
		clockA.SetTime(base.Add(offA))
		clockB.SetTime(base.Add(offB))
	}
	userinfo := func(r *replica, access string) int {
		status, _, _ := r.userinfo(t, access)
		return status
	}

	t.Run("within the leeway tokens of either replica are accepted by the other", func(t *testing.T) {
		g := NewWithT(t)
		// 110s apart, under the 2m leeway.
		skew(55*time.Second, -55*time.Second)
		fromA, fromB := a.login(t, "ivy", "pw-ivy-123"), b.login(t, "ivy", "pw-ivy-123")
		g.Expect(fromA.Status).To(Equal(http.StatusOK))
		g.Expect(fromB.Status).To(Equal(http.StatusOK))
		g.Expect(userinfo(b, fromA.AccessToken)).To(Equal(http.StatusOK))
		g.Expect(userinfo(a, fromB.AccessToken)).To(Equal(http.StatusOK))
		onB := b.refresh(t, fromA.RefreshToken)
		g.Expect(onB.Status).To(Equal(http.StatusOK))
		onA := a.refresh(t, fromB.RefreshToken)
		g.Expect(onA.Status).To(Equal(http.StatusOK))
		g.Expect(userinfo(a, onB.AccessToken)).To(Equal(http.StatusOK))
		g.Expect(userinfo(b, onA.AccessToken)).To(Equal(http.StatusOK))
		g.Expect(a.refresh(t, onB.RefreshToken).Status).To(Equal(http.StatusOK))
	})

	t.Run("at +90s and -90s the replicas are 180s apart: the lagging one refuses the leading one's tokens, "+
		"refresh tokens still work", func(t *testing.T) {
		g := NewWithT(t)
		skew(90*time.Second, -90*time.Second)
		fromA, fromB := a.login(t, "ivy", "pw-ivy-123"), b.login(t, "ivy", "pw-ivy-123")
		g.Expect(fromA.Status).To(Equal(http.StatusOK))
		g.Expect(fromB.Status).To(Equal(http.StatusOK))
		g.Expect(userinfo(b, fromA.AccessToken)).To(Equal(http.StatusUnauthorized),
			"iat 180s ahead of b, beyond the 2m leeway")
		g.Expect(userinfo(a, fromB.AccessToken)).To(Equal(http.StatusOK))
		onB := b.refresh(t, fromA.RefreshToken)
		g.Expect(onB.Status).To(Equal(http.StatusOK), "refresh tokens carry no time claims")
		g.Expect(a.refresh(t, fromB.RefreshToken).Status).To(Equal(http.StatusOK))
		g.Expect(userinfo(b, onB.AccessToken)).To(Equal(http.StatusOK))
	})

	t.Run("beyond the leeway a token issued in the future is refused as used before issued", func(t *testing.T) {
		g := NewWithT(t)
		skew(5*time.Minute, 0)
		fromA := a.login(t, "ivy", "pw-ivy-123")
		g.Expect(fromA.Status).To(Equal(http.StatusOK))
		status, header, _ := b.userinfo(t, fromA.AccessToken)
		g.Expect(status).To(Equal(http.StatusUnauthorized))
		g.Expect(header.Get("WWW-Authenticate")).To(ContainSubstring(`error="invalid_token"`))
		g.Expect(userinfo(a, fromA.AccessToken)).To(Equal(http.StatusOK))
		// The reason, from the verifier b runs (same keys, clock and leeway).
		v := &tokens.Verifier{
			Issuer: sharedIssuerURL, Audience: "rotor", Keys: b.Server.Keys, Leeway: 2 * time.Minute, Clock: clockB,
		}
		_, err := v.Verify(fromA.AccessToken)
		g.Expect(err).To(MatchError(tokens.ErrInvalidToken))
		g.Expect(err).To(MatchError(jwt.ErrTokenUsedBeforeIssued))
		// Once b's clock is within the leeway of iat, the same token passes.
		clockB.SetTime(base.Add(3*time.Minute + time.Second))
		g.Expect(userinfo(b, fromA.AccessToken)).To(Equal(http.StatusOK))
	})
}
