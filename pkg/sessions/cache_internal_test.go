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

// Junk refresh tokens name sessions that do not exist; remembering that
// must not push real sessions out of the cache (each would then cost a GET).
func TestUnknownNamesDoNotEvictSessions(t *testing.T) {
	s, err := NewStore(nil, Config{CacheSize: 10, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		name := "real-" + strconv.Itoa(i)
		s.remember(name, &identityv1alpha1.RefreshToken{ObjectMeta: metav1.ObjectMeta{Name: name, ResourceVersion: "1"}})
	}
	for i := range 10_000 {
		s.remember("junk-"+strconv.Itoa(i), nil)
	}
	for i := range 10 {
		if _, ok := s.cache.Peek("real-" + strconv.Itoa(i)); !ok {
			t.Fatalf("session real-%d was evicted by unknown names", i)
		}
	}
	if rt, fresh, err := s.get(t.Context(), "junk-9999"); rt != nil || fresh || err != nil {
		t.Fatalf("a remembered unknown name costs no read: got %v, %v, %v", rt, fresh, err)
	}
	if s.unknown.Len() != maxUnknown {
		t.Fatalf("unknown names kept: %d, want the bound %d", s.unknown.Len(), maxUnknown)
	}
}
