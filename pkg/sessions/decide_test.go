package sessions

import (
	"context"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	identityv1alpha1 "rotor.dev/rotor/api/v1alpha1"
)

var (
	t0           = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	currentHash  = hashSecret([]byte("current"))
	previousHash = hashSecret([]byte("previous"))
	strangerHash = hashSecret([]byte("stranger"))
	laterHash    = hashSecret([]byte("later"))
)

// session is an active session of client "cli", rotated once at t0 from
// previousHash to currentHash, sliding until t0+1h, ending at t0+24h.
func session(edits ...func(*identityv1alpha1.RefreshTokenSpec)) *identityv1alpha1.RefreshToken {
	rt := &identityv1alpha1.RefreshToken{
		ObjectMeta: metav1.ObjectMeta{Name: "rt-test", ResourceVersion: "7"},
		Spec: identityv1alpha1.RefreshTokenSpec{
			Subject: "alice", ClientID: "cli", State: identityv1alpha1.SessionActive, ExpiresAt: metav1.NewTime(t0.Add(time.Hour)),
			Session: identityv1alpha1.Session{
				Audience: []string{"api"}, Method: identityv1alpha1.AuthMethodPassword,
				SecretHash: currentHash, PreviousSecretHash: previousHash, AbsoluteExpiresAt: metav1.NewTime(t0.Add(24 * time.Hour)),
				LastUsedAt: metav1.NewTime(t0), Rotations: 1,
			},
		},
	}
	for _, edit := range edits {
		edit(&rt.Spec)
	}
	return rt
}

func revoked(s *identityv1alpha1.RefreshTokenSpec) {
	t := metav1.NewTime(t0)
	s.State, s.Session.RevokedAt, s.Session.RevocationReason = identityv1alpha1.SessionRevoked, &t, identityv1alpha1.RevocationRevoked
}

func neverRotated(s *identityv1alpha1.RefreshTokenSpec) {
	s.Session.PreviousSecretHash, s.Session.Rotations = "", 0
}

// lostAnswer is what this replica remembers after its rotation from
// previousHash to currentHash had an unknown outcome.
var lostAnswer = &pendingRotation{from: previousHash, to: currentHash, secret: "the-stored-secret"}

const grace = 5 * time.Second

// firstUse is the successor this replica handed out when it rotated
// previousHash into currentHash.
var firstUse = &pendingRotation{from: previousHash, to: currentHash, secret: "the-successor"}

func TestDecide(t *testing.T) {
	refused := func(r Reason) decision { return decision{Outcome: refuse, Reason: r} }
	cases := map[string]struct {
		attempt attempt
		want    decision
	}{
		"a name the API server does not know is unknown": {
			attempt{Session: nil, Fresh: true, Hash: currentHash, Now: t0},
			refused(ReasonUnknown),
		},
		"a name cached as absent is unknown without a re-read (names are random, never reused)": {
			attempt{Session: nil, Fresh: false, Hash: currentHash, Now: t0},
			refused(ReasonUnknown),
		},
		"a revoked session refuses its current token": {
			attempt{Session: session(revoked), Fresh: true, Hash: currentHash, Now: t0.Add(time.Minute)},
			refused(ReasonRevoked),
		},
		"a revoked session in the cache is refused without a re-read: revocation is final": {
			attempt{Session: session(revoked), Fresh: false, Hash: strangerHash, Now: t0.Add(time.Minute)},
			refused(ReasonRevoked),
		},
		"a revoked session refuses its previous token without revoking again": {
			attempt{Session: session(revoked), Fresh: true, Hash: previousHash, Now: t0.Add(time.Hour / 2), ReuseGrace: grace},
			refused(ReasonRevoked),
		},
		"a revoked session refuses even a pending rotation's token": {
			attempt{Session: session(revoked), Fresh: true, Hash: previousHash, Pending: lostAnswer, Now: t0.Add(time.Minute)},
			refused(ReasonRevoked),
		},
		"a session past its sliding expiry is expired": {
			attempt{Session: session(), Fresh: true, Hash: currentHash, Now: t0.Add(time.Hour + time.Second)},
			refused(ReasonExpired),
		},
		"a session is expired at the very second its sliding expiry names": {
			attempt{Session: session(), Fresh: true, Hash: currentHash, Now: t0.Add(time.Hour)},
			refused(ReasonExpired),
		},
		"a session is still valid the second before its sliding expiry": {
			attempt{Session: session(), Fresh: true, Hash: currentHash, Now: t0.Add(time.Hour - time.Second)},
			decision{Outcome: rotate},
		},
		"a session past its absolute expiry is expired even though its sliding expiry is later": {
			attempt{Session: session(func(s *identityv1alpha1.RefreshTokenSpec) {
				s.Session.AbsoluteExpiresAt = metav1.NewTime(t0.Add(30 * time.Minute))
			}), Fresh: true, Hash: currentHash, Now: t0.Add(30 * time.Minute)},
			refused(ReasonExpired),
		},
		"an expired session refuses its previous token without revoking": {
			attempt{Session: session(), Fresh: true, Hash: previousHash, Now: t0.Add(2 * time.Hour)},
			refused(ReasonExpired),
		},
		"the current token sent by another client is refused": {
			attempt{Session: session(), Fresh: true, Hash: currentHash, ClientID: "other", Now: t0.Add(time.Minute)},
			refused(ReasonClientMismatch),
		},
		"the current token with the session's own client_id rotates": {
			attempt{Session: session(), Fresh: true, Hash: currentHash, ClientID: "cli", Now: t0.Add(time.Minute)},
			decision{Outcome: rotate},
		},
		"the current token with no client_id rotates": {
			attempt{Session: session(), Fresh: true, Hash: currentHash, Now: t0.Add(time.Minute)},
			decision{Outcome: rotate},
		},
		"the current token rotates straight from the cache: the conditional write catches a stale copy": {
			attempt{Session: session(), Fresh: false, Hash: currentHash, Now: t0.Add(time.Minute)},
			decision{Outcome: rotate},
		},
		"the first token of a session never rotated rotates": {
			attempt{Session: session(neverRotated), Fresh: true, Hash: currentHash, Now: t0.Add(time.Minute)},
			decision{Outcome: rotate},
		},
		"the previous token within the grace is a lost race: refused, the session kept": {
			attempt{Session: session(), Fresh: true, Hash: previousHash, ReuseGrace: grace, Now: t0.Add(grace - time.Second)},
			refused(ReasonRaceLost),
		},
		"the previous token exactly at the end of the grace is revoked as reuse": {
			attempt{Session: session(), Fresh: true, Hash: previousHash, ReuseGrace: grace, Now: t0.Add(grace)},
			decision{Outcome: revokeReplay, Reason: ReasonReuse},
		},
		"the previous token after the grace is revoked as reuse": {
			attempt{Session: session(), Fresh: true, Hash: previousHash, ReuseGrace: grace, Now: t0.Add(time.Minute)},
			decision{Outcome: revokeReplay, Reason: ReasonReuse},
		},
		"with grace 0 the previous token is revoked as reuse even in the same second": {
			attempt{Session: session(), Fresh: true, Hash: previousHash, ReuseGrace: 0, Now: t0},
			decision{Outcome: revokeReplay, Reason: ReasonReuse},
		},
		"the previous token from the cache is revoked as reuse: the conditional write catches a stale copy": {
			attempt{Session: session(), Fresh: false, Hash: previousHash, ReuseGrace: grace, Now: t0.Add(time.Minute)},
			decision{Outcome: revokeReplay, Reason: ReasonReuse},
		},
		"the previous token from another client after the grace is revoked as reuse, not a client mismatch": {
			attempt{Session: session(), Fresh: true, Hash: previousHash, ClientID: "other", ReuseGrace: grace, Now: t0.Add(time.Minute)},
			decision{Outcome: revokeReplay, Reason: ReasonReuse},
		},
		"the previous token with this replica's pending rotation to the current hash is handed the stored token": {
			attempt{Session: session(), Fresh: true, Hash: previousHash, Pending: lostAnswer, ReuseGrace: 0, Now: t0.Add(time.Minute)},
			decision{Outcome: handOutPending},
		},
		"a pending rotation is not handed out to another client": {
			attempt{Session: session(), Fresh: true, Hash: previousHash, ClientID: "other", Pending: lostAnswer, ReuseGrace: 0, Now: t0.Add(time.Minute)},
			decision{Outcome: refuse, Reason: ReasonClientMismatch},
		},
		"a pending rotation is handed out within the grace too": {
			attempt{Session: session(), Fresh: true, Hash: previousHash, Pending: lostAnswer, ReuseGrace: grace, Now: t0},
			decision{Outcome: handOutPending},
		},
		"a pending rotation that is no longer the stored one (rotated since) is not handed out: the replay is revoked": {
			attempt{Session: session(func(s *identityv1alpha1.RefreshTokenSpec) {
				s.Session.PreviousSecretHash, s.Session.SecretHash = currentHash, laterHash
			}), Fresh: true, Hash: currentHash, Pending: lostAnswer, ReuseGrace: 0, Now: t0.Add(time.Minute)},
			decision{Outcome: revokeReplay, Reason: ReasonReuse},
		},
		"a pending rotation from another token does not hand out to the previous one": {
			attempt{Session: session(), Fresh: true, Hash: previousHash, Pending: &pendingRotation{from: strangerHash, to: currentHash, secret: "x"},
				ReuseGrace: 0, Now: t0.Add(time.Minute)},
			decision{Outcome: revokeReplay, Reason: ReasonReuse},
		},
		"a second use of the token within the grace on the replica that rotated it gets the same successor": {
			attempt{Session: session(), Fresh: false, Hash: previousHash, Successor: firstUse, ReuseGrace: grace, Now: t0.Add(grace - time.Second)},
			decision{Outcome: handOutSuccessor},
		},
		"a second use after the grace is revoked as reuse although the successor is remembered": {
			attempt{Session: session(), Fresh: false, Hash: previousHash, Successor: firstUse, ReuseGrace: grace, Now: t0.Add(grace)},
			decision{Outcome: revokeReplay, Reason: ReasonReuse},
		},
		"a second use within the grace from another client gets no successor": {
			attempt{Session: session(), Fresh: true, Hash: previousHash, ClientID: "other", Successor: firstUse, ReuseGrace: grace, Now: t0},
			refused(ReasonClientMismatch),
		},
		"a successor that is no longer the stored one is not handed out: another rotation happened since": {
			attempt{Session: session(func(s *identityv1alpha1.RefreshTokenSpec) {
				s.Session.PreviousSecretHash, s.Session.SecretHash = currentHash, laterHash
			}), Fresh: true, Hash: previousHash, Successor: firstUse, ReuseGrace: grace, Now: t0},
			refused(ReasonMismatch),
		},
		"with grace 0 a remembered successor changes nothing: the replay is revoked": {
			attempt{Session: session(), Fresh: true, Hash: previousHash, Successor: firstUse, ReuseGrace: 0, Now: t0},
			decision{Outcome: revokeReplay, Reason: ReasonReuse},
		},
		"a secret that is neither current nor previous, read fresh, is a mismatch": {
			attempt{Session: session(), Fresh: true, Hash: strangerHash, Now: t0.Add(time.Minute)},
			refused(ReasonMismatch),
		},
		"a secret that matches no hash of a session never rotated, read fresh, is a mismatch": {
			attempt{Session: session(neverRotated), Fresh: true, Hash: strangerHash, Now: t0.Add(time.Minute)},
			refused(ReasonMismatch),
		},
		"a secret that matches nothing cached is re-read: another replica may have rotated": {
			attempt{Session: session(), Fresh: false, Hash: laterHash, Now: t0.Add(time.Minute)},
			decision{Outcome: reread},
		},
		"a pending rotation does not make a stranger's secret acceptable": {
			attempt{Session: session(), Fresh: true, Hash: strangerHash, Pending: lostAnswer, Now: t0.Add(time.Minute)},
			refused(ReasonMismatch),
		},
	}
	outcomes := map[outcome]bool{}
	reasons := map[Reason]bool{}
	for sentence, c := range cases {
		t.Run(sentence, func(t *testing.T) {
			before := c.attempt.Session.DeepCopy()
			got := decide(c.attempt)
			if got != c.want {
				t.Fatalf("decide = %s %q, want %s %q", got.Outcome, got.Reason, c.want.Outcome, c.want.Reason)
			}
			if !equality.Semantic.DeepEqual(c.attempt.Session, before) {
				t.Fatal("decide changed the session")
			}
		})
		outcomes[c.want.Outcome] = true
		reasons[c.want.Reason] = true
	}
	for _, o := range []outcome{refuse, rotate, handOutPending, handOutSuccessor, revokeReplay, reread} {
		if !outcomes[o] {
			t.Errorf("no case decides %s", o)
		}
	}
	for _, r := range []Reason{ReasonUnknown, ReasonRevoked, ReasonExpired, ReasonClientMismatch, ReasonRaceLost, ReasonReuse, ReasonMismatch} {
		if !reasons[r] {
			t.Errorf("no case refuses with %s", r)
		}
	}
}

// A malformed token is refused before any decision, and before any API
// request: this store has no client at all.
func TestMalformedTokensAreRefusedBeforeDeciding(t *testing.T) {
	s, err := NewStore(nil, Config{CacheSize: 1, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for _, token := range []string{"", "rt-x.y", "not a token", "rt-" + string(make([]byte, 26)) + "." + string(make([]byte, 43))} {
		if _, _, err := s.Rotate(context.Background(), token, Refresh{}); ReasonOf(err) != ReasonMalformed {
			t.Errorf("Rotate(%q) = %v, want malformed", token, err)
		}
		if _, err := s.Lookup(context.Background(), token); ReasonOf(err) != ReasonMalformed {
			t.Errorf("Lookup(%q) = %v, want malformed", token, err)
		}
	}
}

func TestNewStoreRequiresATimeout(t *testing.T) {
	for _, timeout := range []time.Duration{0, -time.Second} {
		if _, err := NewStore(nil, Config{CacheSize: 1, Timeout: timeout}); err == nil {
			t.Errorf("NewStore accepted timeout %s", timeout)
		}
	}
}
