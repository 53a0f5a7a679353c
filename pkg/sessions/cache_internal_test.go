package sessions

import (
	"strconv"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	identityv1alpha1 "rotor.dev/rotor/api/v1alpha1"
)

// The watch event of this replica's own write can arrive while the write is
// being cached; the eviction must never remove the entry it describes.
func TestEvictRacingRememberKeepsTheEntryItDescribes(t *testing.T) {
	s, err := NewStore(nil, Config{CacheSize: 10, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	version := func(rv int) *identityv1alpha1.RefreshToken {
		return &identityv1alpha1.RefreshToken{ObjectMeta: metav1.ObjectMeta{Name: "s", ResourceVersion: strconv.Itoa(rv)}}
	}
	s.remember("s", version(1))
	lost := 0
	for rv := 2; rv < 20000; rv++ {
		start := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); <-start; s.remember("s", version(rv)) }()
		go func() { defer wg.Done(); <-start; s.Evict("s", strconv.Itoa(rv)) }()
		close(start)
		wg.Wait()
		if _, ok := s.cache.Peek("s"); !ok {
			lost++
			s.remember("s", version(rv))
		}
	}
	if lost > 0 {
		t.Fatalf("the event of a write removed the entry of that write %d times in 19,998", lost)
	}
}
