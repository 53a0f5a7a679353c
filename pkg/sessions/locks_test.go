package sessions

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/gomega"
)

func TestSessionLocks(t *testing.T) {
	t.Run("a session being worked on holds up no other session", func(t *testing.T) {
		g := NewWithT(t)
		var l sessionLocks
		unlock := l.lock("held")
		done := make(chan struct{})
		go func() {
			defer close(done)
			// Far more names than the 64 stripes this replaced: some
			// would have shared one with "held" and waited forever.
			for i := range 1000 {
				l.lock(fmt.Sprintf("session-%d", i))()
			}
		}()
		g.Eventually(done, 10*time.Second).Should(BeClosed())
		unlock()
		g.Expect(l.held()).To(BeZero())
	})

	t.Run("requests on one session take turns", func(t *testing.T) {
		g := NewWithT(t)
		var l sessionLocks
		var inside, most atomic.Int32
		var wg sync.WaitGroup
		for range 16 {
			wg.Go(func() {
				for range 20 {
					unlock := l.lock("one")
					n := inside.Add(1)
					for {
						m := most.Load()
						if n <= m || most.CompareAndSwap(m, n) {
							break
						}
					}
					time.Sleep(50 * time.Microsecond)
					inside.Add(-1)
					unlock()
				}
			})
		}
		wg.Wait()
		g.Expect(most.Load()).To(Equal(int32(1)))
		g.Expect(l.held()).To(BeZero(), "nothing is kept once every request is done")
	})
}
