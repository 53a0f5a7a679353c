package issuer_test

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/gomega"
)

// outageClient refreshes its session in a loop and remembers the last
// refresh token rotor successfully returned to it.
type outageClient struct {
	last     string
	replaced string
	statuses map[int]int
	codes    map[string]int
	slowest  time.Duration
	// recovered is set by the first success after the outage.
	recovered bool
}

// An API server outage mid-load: rotor answers quickly with 503
// temporarily_unavailable, never 500 and never a hang, never hands out a
// refresh token it did not persist, and recovers by itself; afterwards every
// client's last returned refresh token is accepted exactly once.
func TestAPIServerOutageMidLoad(t *testing.T) {
	g := NewWithT(t)
	ns := env.Namespace(t)
	createAccount(t, ns, "olga", "pw-olga-1234")
	proxy, cfg := env.NewProxy(t, env.Config)
	r := startReplica(t, ns, newClock(), throughAPI(cfg), func(o *replicaOptions) { o.APITimeout = 2 * time.Second })

	const n = 8
	clients := make([]*outageClient, n)
	for i := range clients {
		login := r.login(t, "olga", "pw-olga-1234")
		g.Expect(login.Status).To(Equal(http.StatusOK), "%+v\n%s", login, r.Logs.String())
		clients[i] = &outageClient{last: login.RefreshToken, statuses: map[int]int{}, codes: map[string]int{}}
	}

	var phase atomic.Int32 // 0 before, 1 during, 2 after the outage
	var recovered atomic.Int32
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				start := time.Now()
				reply := r.refresh(t, c.last)
				c.slowest = max(c.slowest, time.Since(start))
				c.statuses[reply.Status]++
				c.codes[reply.Error]++
				if reply.Status == http.StatusOK {
					c.replaced, c.last = c.last, reply.RefreshToken
					if phase.Load() == 2 && !c.recovered {
						c.recovered = true
						recovered.Add(1)
					}
				}
				if phase.Load() == 1 {
					time.Sleep(20 * time.Millisecond) // a client backing off
				}
			}
		}()
	}
	time.Sleep(time.Second)
	phase.Store(1)
	proxy.Cut()
	time.Sleep(3 * time.Second)
	proxy.Restore()
	phase.Store(2)
	// Recovery, by itself: every client succeeds again after the outage.
	g.Eventually(recovered.Load, "30s").Should(BeEquivalentTo(n))
	stop()
	wg.Wait()

	unavailable := 0
	for i, c := range clients {
		g.Expect(c.statuses).To(HaveKey(http.StatusOK), "client %d", i)
		for status := range c.statuses {
			g.Expect(status).To(BeElementOf(http.StatusOK, http.StatusServiceUnavailable),
				"client %d: only 200 and 503, never 500", i)
		}
		for code := range c.codes {
			g.Expect(code).To(BeElementOf("", "temporarily_unavailable"), "client %d", i)
		}
		unavailable += c.statuses[http.StatusServiceUnavailable]
		g.Expect(c.slowest).To(BeNumerically("<", 10*time.Second),
			"client %d: bounded by --api-timeout, never a hang", i)
	}
	g.Expect(unavailable).To(BeNumerically(">", 0), "the outage was seen")

	// Every session that existed before works again: the last token each
	// client was given is accepted, and used again within the reuse grace
	// it gets the same successor (no fork).
	r.Clock.Step(time.Minute) // past the reuse grace
	for i, c := range clients {
		next := r.refresh(t, c.last)
		g.Expect(next.Status).To(Equal(http.StatusOK), "client %d: its last token works", i)
		g.Expect(r.refresh(t, c.last).RefreshToken).To(Equal(next.RefreshToken), "client %d: one successor", i)
		if c.replaced != "" {
			g.Expect(r.refresh(t, c.replaced).Error).To(Equal("invalid_grant"), "client %d: older tokens stay dead", i)
		}
		g.Expect(r.refresh(t, next.RefreshToken).Status).To(Equal(http.StatusOK), "client %d: the session is alive", i)
	}
	g.Expect(sessionsOf(t, ns)).To(HaveLen(n), "no session lost, none forked")
}
