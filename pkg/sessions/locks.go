package sessions

import "sync"

// sessionLocks serialise work on one session within this replica, so that
// concurrent refreshes of one token cost one write, not a conflict storm.
//
// One lock per session name, held only while some request works on it, and
// never shared between sessions. The lock is held across the API write, so a
// lock shared by two sessions (the fixed stripes this replaced) made one
// wait out the other's round trip to the API server: with 64 stripes, 8
// clients refreshing their own sessions shared one in about a third of
// process starts (the stripe seed is random), and measured in one such run
// the refreshes spent 1.2 s waiting on a stripe in 1.4 s. It also let a
// caller hammering one session slow down every other session on its
// stripe. Entries exist only while held or awaited, so the map is bounded
// by the requests in flight.
type sessionLocks struct {
	mu    sync.Mutex
	locks map[string]*sessionLock
}

type sessionLock struct {
	sync.Mutex
	refs int // holders and waiters; guarded by sessionLocks.mu
}

// lock locks name's session and returns its unlock.
func (l *sessionLocks) lock(name string) func() {
	l.mu.Lock()
	if l.locks == nil {
		l.locks = map[string]*sessionLock{}
	}
	sl := l.locks[name]
	if sl == nil {
		sl = &sessionLock{}
		l.locks[name] = sl
	}
	sl.refs++
	l.mu.Unlock()
	sl.Lock()
	return func() {
		sl.Unlock()
		l.mu.Lock()
		if sl.refs--; sl.refs == 0 {
			delete(l.locks, name)
		}
		l.mu.Unlock()
	}
}

// held is how many sessions are locked or awaited (tests).
func (l *sessionLocks) held() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.locks)
}
