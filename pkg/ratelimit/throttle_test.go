package ratelimit

import (
	"fmt"
	"testing"
	"time"

	. "github.com/onsi/gomega"
)

// Each story is a sequence of attempts (subject, address, failed?) and what
// the next one may do. The subjects are usernames; a client_id is the same
// to the throttle. Budgets: a pair (subject, address) has burst 3 at 6/min,
// so a subject has 15, an address 30 at 60/min. t0 is ratelimit_test.go's.

type try struct {
	user, addr string
	fails      bool
}

// play admits and completes each attempt at now and returns how many were
// admitted.
func play(th *Throttle, now time.Time, tries ...try) (admitted int) {
	for _, tr := range tries {
		if at, ok := th.Admit(tr.user, tr.addr, now); ok {
			admitted++
			at.Done(tr.fails, now)
		}
	}
	return admitted
}

func repeat(n int, tr try) []try {
	out := make([]try, n)
	for i := range out {
		out[i] = tr
	}
	return out
}

func fromAddresses(n int, user string, fails bool, first int) []try {
	out := make([]try, n)
	for i := range out {
		out[i] = try{user, fmt.Sprintf("198.51.100.%d", first+i), fails}
	}
	return out
}

func newTestThrottle(t *testing.T, size int) *Throttle {
	t.Helper()
	th, err := NewThrottle(6, 3, size)
	if err != nil {
		t.Fatal(err)
	}
	return th
}

func TestThrottle(t *testing.T) {
	for _, tc := range []struct {
		name   string
		before []try
		next   try
		admit  bool
	}{
		{"one client's guesses at one account stop after the pair's burst",
			repeat(3, try{"alice", "192.0.2.1", true}), try{"alice", "192.0.2.1", false}, false},
		{"the same client may still try another account",
			repeat(3, try{"alice", "192.0.2.1", true}), try{"bob", "192.0.2.1", false}, true},
		{"guesses from ten addresses do not lock alice out of a new address",
			fromAddresses(10, "alice", true, 1), try{"alice", "192.0.2.50", false}, true},
		{"a distributed guesser that spent the username's budget is refused from a dirty address",
			append(fromAddresses(15, "alice", true, 1), try{"mallory", "198.51.100.200", true}),
			try{"alice", "198.51.100.200", true}, false},
		{"with the username's budget spent, a clean address is still admitted",
			fromAddresses(15, "alice", true, 1), try{"alice", "192.0.2.50", false}, true},
		{"with the username's budget spent, an address alice logged in from is admitted although dirty",
			append([]try{{"alice", "192.0.2.60", false}, {"bob", "192.0.2.60", true}}, fromAddresses(15, "alice", true, 1)...),
			try{"alice", "192.0.2.60", false}, true},
		{"ten failures for made-up names from one address lock nobody out behind it",
			spray("203.0.113.1", 10), try{"alice", "203.0.113.1", false}, true},
		{"spraying that spent an address's budget refuses new pairs from it",
			spray("203.0.113.1", 30), try{"carol", "203.0.113.1", false}, false},
		{"spraying that spent an address's budget still admits a user who logged in there before",
			append([]try{{"alice", "203.0.113.1", false}}, spray("203.0.113.1", 30)...), try{"alice", "203.0.113.1", false}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			th := newTestThrottle(t, 1000)
			play(th, t0, tc.before...)
			_, ok := th.Admit(tc.next.user, tc.next.addr, t0)
			NewWithT(t).Expect(ok).To(Equal(tc.admit))
		})
	}
}

func spray(addr string, n int) []try {
	out := make([]try, n)
	for i := range out {
		out[i] = try{fmt.Sprintf("made-up-%d", i), addr, true}
	}
	return out
}

func TestThrottleRefillsAtItsRate(t *testing.T) {
	g := NewWithT(t)
	th := newTestThrottle(t, 1000)
	g.Expect(play(th, t0, repeat(4, try{"alice", "192.0.2.1", true})...)).To(Equal(3))
	g.Expect(play(th, t0.Add(9*time.Second), try{"alice", "192.0.2.1", true})).To(Equal(0), "one token takes 10 s at 6/min")
	g.Expect(play(th, t0.Add(10*time.Second), try{"alice", "192.0.2.1", true})).To(Equal(1))
}

func TestThrottleSuccessesSpendNothing(t *testing.T) {
	g := NewWithT(t)
	th := newTestThrottle(t, 1000)
	g.Expect(play(th, t0, repeat(20, try{"alice", "192.0.2.1", false})...)).To(Equal(20))
	g.Expect(th.pairs.Len()).To(BeZero())
}

func TestThrottledAttemptsCreateNoState(t *testing.T) {
	g := NewWithT(t)
	th := newTestThrottle(t, 1000)
	// The address's budget is spent on 30 names; 10,000 more are refused.
	g.Expect(play(th, t0, spray("203.0.113.9", 10_030)...)).To(Equal(30))
	g.Expect(th.pairs.Len()).To(Equal(30))
	g.Expect(th.users.Len()).To(Equal(30))
	g.Expect(th.addrs.Len()).To(Equal(1))
	g.Expect(th.inflight).To(BeEmpty())
}

func TestJunkCannotEvictADrainedBucket(t *testing.T) {
	g := NewWithT(t)
	th := newTestThrottle(t, 50)
	g.Expect(play(th, t0, repeat(3, try{"alice", "192.0.2.1", true})...)).To(Equal(3))
	// Junk from many addresses, each admitted once: 500 new buckets in maps
	// of 50. Each is nearer to full than alice's, so they go first.
	for i := range 500 {
		play(th, t0, try{fmt.Sprintf("junk-%d", i), fmt.Sprintf("10.0.%d.%d", i/250, i%250), true})
	}
	_, ok := th.Admit("alice", "192.0.2.1", t0)
	g.Expect(ok).To(BeFalse(), "alice's drained pair bucket survived the junk")
	g.Expect(th.pairs.Len()).To(BeNumerically("<=", 50))
}

func TestFullBucketsAreForgotten(t *testing.T) {
	g := NewWithT(t)
	th := newTestThrottle(t, 2)
	play(th, t0, try{"alice", "192.0.2.1", true}, try{"bob", "192.0.2.2", true})
	// A minute later both have refilled; a new failure makes room by
	// dropping them, not by refusing.
	play(th, t0.Add(time.Minute), try{"carol", "192.0.2.3", true})
	g.Expect(th.pairs.Len()).To(Equal(1))
	g.Expect(th.pairs.Has("p\x00carol\x00192.0.2.3")).To(BeTrue())
}

func TestConcurrentAttemptsReserveTheBudget(t *testing.T) {
	g := NewWithT(t)
	th := newTestThrottle(t, 1000)
	var held []*Attempt
	for range 5 {
		if at, ok := th.Admit("alice", "192.0.2.1", t0); ok {
			held = append(held, at)
		}
	}
	g.Expect(held).To(HaveLen(3), "attempts in flight count against the burst")
	for _, at := range held {
		at.Done(true, t0)
	}
	_, ok := th.Admit("alice", "192.0.2.1", t0)
	g.Expect(ok).To(BeFalse())
}
