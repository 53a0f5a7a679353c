package sessions

import (
	"time"

	identityv1alpha1 "rotor.dev/rotor/api/v1alpha1"
)

// attempt is everything a refresh token is judged on. It is a struct so
// that new checks (the OAuth client's registration, say) add fields rather
// than parameters; the zero value of a new field must mean "no check".
type attempt struct {
	// Session is the stored session, nil when the API server has none of
	// the token's name.
	Session *identityv1alpha1.RefreshToken
	// Fresh says Session was read from the API server for this request.
	// Otherwise it came from the cache and may predate a rotation made by
	// another replica.
	Fresh bool
	// Hash is the hash of the presented secret.
	Hash string
	// ClientID is the client_id the request sent; empty when it sent none.
	ClientID string
	// Pending is a rotation this replica wrote for the session whose
	// answer was lost, if any.
	Pending *pendingRotation
	// Successor is the last rotation this replica made of the session, kept
	// in memory for the reuse grace only: a client racing itself within the
	// grace gets the same successor instead of a refusal.
	Successor *pendingRotation
	// ReuseGrace is Config.ReuseGrace.
	ReuseGrace time.Duration
	Now        time.Time
}

// outcome is what to do with a refresh token.
type outcome int

const (
	// refuse answers invalid_grant and writes nothing. It is the zero
	// value, so a decision left unset refuses.
	refuse outcome = iota
	// rotate swaps in a new secret (one conditional update).
	rotate
	// handOutPending gives the client the token of a rotation this replica
	// stored but could not answer, without another write.
	handOutPending
	// handOutSuccessor gives a use within the reuse grace the successor
	// this replica handed out for the same token, without a write.
	handOutSuccessor
	// revokeReplay ends the session: a rotated token was presented again.
	revokeReplay
	// reread decides again from the API server: the cached copy may be
	// older than the presented token.
	reread
)

func (o outcome) String() string {
	switch o {
	case refuse:
		return "refuse"
	case rotate:
		return "rotate"
	case handOutPending:
		return "hand out pending rotation"
	case handOutSuccessor:
		return "hand out the successor again"
	case revokeReplay:
		return "revoke as replay"
	case reread:
		return "re-read"
	}
	return "invalid"
}

// decision is decide's answer. Reason says why for refuse, and is what the
// client is refused with after revokeReplay.
type decision struct {
	Outcome outcome
	Reason  Reason
}

// succeeds reports whether p rotated the presented hash into the stored one.
func (p *pendingRotation) succeeds(presented, stored string) bool {
	return p != nil && hashEqual(p.from, presented) && hashEqual(p.to, stored)
}

// decide judges a refresh token against its session. It is pure: the
// caller performs the outcome, with writes conditional on the session's
// resourceVersion, and decides again when one of them finds it stale.
func decide(a attempt) decision {
	rt := a.Session
	if rt == nil {
		return decision{Outcome: refuse, Reason: ReasonUnknown}
	}
	s := &rt.Spec
	switch {
	case s.State != identityv1alpha1.SessionActive:
		return decision{Outcome: refuse, Reason: ReasonRevoked}
	case !a.Now.Before(s.EndsAt()):
		return decision{Outcome: refuse, Reason: ReasonExpired}
	}
	switch {
	case hashEqual(a.Hash, s.Session.SecretHash):
		// RFC 6749 section 6: a refresh token is bound to its client.
		if a.ClientID != "" && a.ClientID != s.ClientID {
			return decision{Outcome: refuse, Reason: ReasonClientMismatch}
		}
		return decision{Outcome: rotate}
	case s.Session.PreviousSecretHash != "" && hashEqual(a.Hash, s.Session.PreviousSecretHash):
		if p := a.Pending; p.succeeds(a.Hash, s.Session.SecretHash) {
			if a.ClientID != "" && a.ClientID != s.ClientID {
				return decision{Outcome: refuse, Reason: ReasonClientMismatch}
			}
			// This replica's own rotation landed but the client never saw it.
			return decision{Outcome: handOutPending}
		}
		if a.Now.Sub(s.Session.LastUsedAt.Time) < a.ReuseGrace {
			if a.ClientID != "" && a.ClientID != s.ClientID {
				return decision{Outcome: refuse, Reason: ReasonClientMismatch}
			}
			if a.Successor.succeeds(a.Hash, s.Session.SecretHash) {
				// Two uses of one token within the grace (a client racing
				// itself, or a thief racing the owner) hold the same
				// successor, so the next use by either after the grace is
				// detected as a replay.
				return decision{Outcome: handOutSuccessor}
			}
			// Another replica rotated: refuse, keep the session.
			return decision{Outcome: refuse, Reason: ReasonRaceLost}
		}
		return decision{Outcome: revokeReplay, Reason: ReasonReuse}
	case !a.Fresh:
		return decision{Outcome: reread}
	}
	return decision{Outcome: refuse, Reason: ReasonMismatch}
}
