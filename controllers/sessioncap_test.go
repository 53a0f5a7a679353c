package controllers

import (
	"context"
	"crypto/rand"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/apimachinery/pkg/watch"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	identityv1alpha1 "rotor.dev/rotor/api/v1alpha1"
	"rotor.dev/rotor/pkg/sessions"
)

func TestSessionLimitChoosesAsALoginWould(t *testing.T) {
	// m builds members in creation order: "a1@web" is session a1 of client web.
	m := func(specs ...string) []capMember {
		var out []capMember
		for i, s := range specs {
			name, c, _ := strings.Cut(s, "@")
			out = append(out, capMember{name: name, gcEntry: gcEntry{created: 1000, rv: uint64(100 + i), client: uint32(len(c)) + uint32(c[0])<<8}})
		}
		// The collector finds them in map order.
		slices.Reverse(out)
		return out
	}
	names := func(ms []capMember) []string {
		var out []string
		for _, v := range ms {
			out = append(out, v.name)
		}
		return out
	}
	for _, c := range []struct {
		name    string
		limit   int
		members []capMember
		want    []string
	}{
		{"within the limit", 3, m("a@web", "b@web", "c@web"), nil},
		{"disabled", 0, m("a@web", "b@web", "c@web"), nil},
		{"a new device of a client replaces that client's oldest", 2, m("m1@mobile", "w1@web", "w2@web"), []string{"w1"}},
		{"a client with no older session takes the subject's oldest", 2, m("w1@web", "w2@web", "m1@mobile"), []string{"w1"}},
		{"a client under the limit keeps its session while another churns", 3,
			m("m1@mobile", "w1@web", "w2@web", "w3@web", "w4@web", "w5@web"), []string{"w1", "w2", "w3"}},
		{"then a third client takes the subject's oldest, and replaces its own", 3,
			m("m1@mobile", "w4@web", "w5@web", "t1@tv", "t2@tv"), []string{"m1", "t1"}},
		{"limit 1 keeps the newest", 1, m("a@web", "b@mobile", "c@tv"), []string{"a", "b"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			NewWithT(t).Expect(names(overLimit(c.members, c.limit))).To(Equal(c.want))
		})
	}

	t.Run("creation time first, then resourceVersion", func(t *testing.T) {
		g := NewWithT(t)
		ms := []capMember{
			{name: "late-low-rv", gcEntry: gcEntry{created: 2000, rv: 1}},
			{name: "early-high-rv", gcEntry: gcEntry{created: 1000, rv: 9}},
			{name: "early-low-rv", gcEntry: gcEntry{created: 1000, rv: 5}},
		}
		g.Expect(names(overLimit(ms, 1))).To(Equal([]string{"early-low-rv", "early-high-rv"}))
	})
}

// capFixture is a session store and a collector with a session limit.
type capFixture struct {
	*gcFixture
}

func newCapFixture(t *testing.T, limit int) *capFixture {
	f := newGCFixture(t, 500)
	f.collector.MaxSessionsPerSubject = limit
	return &capFixture{f}
}

func (f *capFixture) loginAs(t testing.TB, subject, clientID string) string {
	t.Helper()
	token, _, err := f.store.Create(context.Background(), sessions.Grant{
		Subject: subject, ClientID: clientID, Audience: []string{"api"}, Method: identityv1alpha1.AuthMethodPassword,
	})
	if err != nil {
		t.Fatal(err)
	}
	return token
}

// live lists the sessions of subject that are not revoked, by the subject
// label as an operator would.
func (f *capFixture) live(g Gomega, subject string) []string {
	list := &identityv1alpha1.RefreshTokenList{}
	g.Expect(env.Client.List(context.Background(), list, client.InNamespace(f.ns),
		client.MatchingLabels{identityv1alpha1.SubjectLabel: sessions.LabelValue(subject)})).To(Succeed())
	var names []string
	for _, s := range list.Items {
		if s.Spec.State == identityv1alpha1.SessionActive {
			names = append(names, s.Name)
		}
	}
	slices.Sort(names)
	return names
}

func namesOf(tokens ...string) []string {
	var out []string
	for _, tok := range tokens {
		name, _, _ := strings.Cut(tok, ".")
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

// evicted is rotor_sessions_evicted_total{reason="session_limit"}, as scraped.
func evicted() float64 {
	families, _ := metrics.Registry.Gather()
	for _, mf := range families {
		if mf.GetName() != "rotor_sessions_evicted_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == EvictReasonSessionLimit {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

func TestSessionLimitDeletesTheOldestSessionsOfTheSubject(t *testing.T) {
	g := NewWithT(t)
	f := newCapFixture(t, 3)
	ctx := context.Background()
	before := evicted()

	// alice: one mobile session, then five web logins; bob: two sessions;
	// carol: four, two of them revoked (they do not count).
	m1 := f.loginAs(t, "alice", "mobile")
	var web []string
	for range 5 {
		web = append(web, f.loginAs(t, "alice", "web"))
	}
	bob := []string{f.loginAs(t, "bob", "web"), f.loginAs(t, "bob", "web")}
	var carol []string
	for i := range 4 {
		tok := f.loginAs(t, "carol", "web")
		if i < 2 {
			g.Expect(f.store.Revoke(ctx, tok, nil)).To(Succeed())
		}
		carol = append(carol, tok)
	}
	// A session without the labels (created before rotor set them) is not
	// counted and never evicted.
	legacy := &identityv1alpha1.RefreshToken{
		ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: "rt-legacy"},
		Spec: identityv1alpha1.RefreshTokenSpec{
			Subject: "alice", ClientID: "web",
			State:     identityv1alpha1.SessionActive,
			ExpiresAt: metav1.NewTime(f.clock.Now().Add(time.Hour)),
			Session: identityv1alpha1.Session{
				Audience: []string{"api"}, Method: identityv1alpha1.AuthMethodPassword,
				SecretHash: strings.Repeat("A", 43), AbsoluteExpiresAt: metav1.NewTime(f.clock.Now().Add(time.Hour)),
				LastUsedAt: metav1.NewTime(f.clock.Now()),
			},
		},
	}
	g.Expect(env.Client.Create(ctx, legacy)).To(Succeed())

	f.start(t)
	// web displaced its own oldest sessions; mobile, under the limit, stays.
	g.Eventually(func(g Gomega) []string { return f.live(g, "alice") }, "10s").Should(Equal(namesOf(m1, web[3], web[4])))
	g.Consistently(func(g Gomega) []string { return f.live(g, "alice") }, "300ms").Should(Equal(namesOf(m1, web[3], web[4])))
	g.Expect(f.live(g, "bob")).To(Equal(namesOf(bob...)))
	g.Expect(f.live(g, "carol")).To(Equal(namesOf(carol[2:]...)))
	g.Expect(f.names(g)).To(ContainElement("alice"), "the unlabelled session is still there")
	g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(legacy), &identityv1alpha1.RefreshToken{})).To(Succeed())
	g.Expect(evicted() - before).To(Equal(3.0))

	// The survivors refresh; the evicted are unknown.
	web[4] = refresh(t, f.gcFixture, web[4])
	for _, tok := range web[:3] {
		_, _, err := f.store.Rotate(ctx, tok, sessions.Refresh{})
		g.Expect(sessions.ReasonOf(err)).To(Equal(sessions.ReasonUnknown))
	}

	// A new client with no older session of its own takes the subject's
	// oldest (mobile); its second login replaces its first.
	tv1 := f.loginAs(t, "alice", "tv")
	g.Eventually(func(g Gomega) []string { return f.live(g, "alice") }, "10s").Should(Equal(namesOf(web[3], web[4], tv1)))
	tv2 := f.loginAs(t, "alice", "tv")
	g.Eventually(func(g Gomega) []string { return f.live(g, "alice") }, "10s").Should(Equal(namesOf(web[3], web[4], tv2)))
	g.Expect(evicted() - before).To(Equal(5.0))

	// Revoking one makes room: the next login evicts nothing.
	g.Expect(f.store.Revoke(ctx, web[3], nil)).To(Succeed())
	tv3 := f.loginAs(t, "alice", "tv")
	g.Consistently(func(g Gomega) []string { return f.live(g, "alice") }, "500ms").Should(Equal(namesOf(web[4], tv2, tv3)))
	g.Expect(evicted() - before).To(Equal(5.0))

	f.collector.mu.Lock()
	defer f.collector.mu.Unlock()
	g.Expect(f.collector.index.named).To(HaveLen(1), "only the session made by hand is kept by its name")
	g.Expect(f.collector.index.named).To(HaveKey("rt-legacy"))
	id := f.collector.index.ids[digest(sessions.LabelValue("alice"))]
	g.Expect(f.collector.index.subjects[id-1].live).To(Equal(int32(3)))
	g.Expect(f.collector.index.subjects[id-1].refs).To(Equal(int32(4)), "3 live and the revoked one")
}

func randomKey() sessionKey {
	var k sessionKey
	_, _ = rand.Read(k[:])
	return k
}

func TestSessionKeysAreRotorsNames(t *testing.T) {
	g := NewWithT(t)
	f := newCapFixture(t, 1)
	name, _, _ := strings.Cut(f.loginAs(t, "alice", "web"), ".")
	k, ok := keyOf(name)
	g.Expect(ok).To(BeTrue(), "a name pkg/sessions gave: %s", name)
	g.Expect(k.name()).To(Equal(name))
	for _, other := range []string{"rt-legacy", strings.ToUpper(name), name + "a", name[:len(name)-1], "xx" + name[2:],
		name[:len(name)-1] + "b" /* the last character carries 2 bits that must be zero */} {
		_, ok := keyOf(other)
		g.Expect(ok).To(BeFalse(), other)
	}
}

func digest(label string) [labelDigestBytes]byte {
	d, ok := parseDigest(label)
	if !ok {
		panic(label)
	}
	return d
}

func TestSessionLimitOffKeepsEverySession(t *testing.T) {
	g := NewWithT(t)
	f := newCapFixture(t, 0)
	for range 6 {
		f.loginAs(t, "alice", "web")
	}
	f.start(t)
	g.Consistently(func(g Gomega) []string { return f.live(g, "alice") }, "500ms").Should(HaveLen(6))
	f.collector.mu.Lock()
	defer f.collector.mu.Unlock()
	g.Expect(f.collector.index.subjects).To(BeEmpty(), "no counts without a limit")
}

// TestSessionLimitBurst measures how far a burst of logins of one subject
// goes over the limit before the collector catches up: the limit is
// enforced after the fact, by the leader's watch.
func TestSessionLimitBurst(t *testing.T) {
	g := NewWithT(t)
	const limit, logins, workers = 5, 200, 8
	f := newCapFixture(t, limit)
	other := f.loginAs(t, "bystander", "web")
	f.start(t)
	// Wait for the collector's first list.
	g.Eventually(func() bool {
		f.collector.mu.Lock()
		defer f.collector.mu.Unlock()
		return f.collector.index != nil && f.collector.index.len() == 1
	}, "10s").Should(BeTrue())

	// The peak is sampled from the API server while the burst runs.
	var peak atomic.Int64
	stop := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			list := &metav1.PartialObjectMetadataList{}
			list.SetGroupVersionKind(identityv1alpha1.GroupVersion.WithKind("RefreshTokenList"))
			if err := env.Client.List(context.Background(), list, client.InNamespace(f.ns),
				client.MatchingLabels{identityv1alpha1.SubjectLabel: sessions.LabelValue("attacker")}); err == nil {
				if n := int64(len(list.Items)); n > peak.Load() {
					peak.Store(n)
				}
			}
		}
	})
	start := time.Now()
	var wg sync.WaitGroup
	work := make(chan int)
	var last sync.Map
	for range workers {
		wg.Go(func() {
			for i := range work {
				last.Store(i, f.loginAs(t, "attacker", "web"))
			}
		})
	}
	for i := range logins {
		work <- i
	}
	close(work)
	wg.Wait()
	elapsed := time.Since(start)
	g.Eventually(func(g Gomega) []string { return f.live(g, "attacker") }, "20s").Should(HaveLen(limit))
	settled := time.Since(start)
	close(stop)
	sampler.Wait()
	t.Logf("%d logins of one subject in %s (%.0f/s) with %d workers, limit %d: at most %d stored at once (%d over the limit); %d left, settled after %s",
		logins, elapsed.Round(time.Millisecond), float64(logins)/elapsed.Seconds(), workers, limit, peak.Load(), peak.Load()-limit, limit, settled.Round(time.Millisecond))
	g.Expect(f.live(g, "bystander")).To(Equal(namesOf(other)))
	g.Expect(peak.Load()).To(BeNumerically("<", logins), "the collector deleted while the burst ran")
}

// BenchmarkSessionIndexMemory measures what the collector's index keeps per
// session (go test ./controllers -run '^$' -bench IndexMemory -benchtime 1x):
// 200,000 sessions as the watch delivers them.
func BenchmarkSessionIndexMemory(b *testing.B) {
	for _, c := range []struct {
		name       string
		limit      int
		perSubject int
	}{
		{"limit-10-per-subject", 100, 10},
		{"limit-1-per-subject", 100, 1},
		{"no-limit", 0, 10},
	} {
		b.Run(c.name, func(b *testing.B) {
			const n = 200000
			now := time.Now().Truncate(time.Second)
			for b.Loop() {
				col := &SessionCollector{Namespace: "x", Clock: clocktesting.NewFakeClock(now), RevokedRetention: time.Hour,
					MaxSessionsPerSubject: c.limit, Log: logr.Discard(), index: newGCIndex(0), wake: make(chan struct{}, 1)}
				var ms runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&ms)
				before := ms.HeapAlloc
				for i := range n {
					_ = col.apply(watch.Added, &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{
						Name: randomKey().name(), UID: uuid.NewUUID(), ResourceVersion: fmt.Sprint(1_000_000_000 + i),
						CreationTimestamp: metav1.NewTime(now),
						Labels:            withExpiry(sessions.Labels(fmt.Sprintf("user-%d", i/c.perSubject), "web"), now.Add(time.Hour)),
					}})
				}
				runtime.GC()
				runtime.ReadMemStats(&ms)
				b.ReportMetric(float64(ms.HeapAlloc-before)/n, "B/session")
				runtime.KeepAlive(col)
			}
		})
	}
}

func withExpiry(labels map[string]string, t time.Time) map[string]string {
	labels[sessions.ExpiresAtLabel] = strconv.FormatInt(t.Unix(), 10)
	return labels
}
