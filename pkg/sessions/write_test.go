package sessions_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	identityv1alpha1 "rotor.dev/rotor/api/v1alpha1"
	"rotor.dev/rotor/pkg/sessions"
)

// writer is a session writer over env's API server; answers, when set,
// gets the body of every answer to a write.
func writer(t *testing.T, answers *recorded) rest.Interface {
	t.Helper()
	cfg := rest.CopyConfig(env.Config)
	if answers != nil {
		cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { return answers.around(rt) })
	}
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	w, err := sessions.NewWriter(cfg, hc)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// recorded keeps the bodies of the answers to POSTs and PUTs.
type recorded struct {
	mu     sync.Mutex
	bodies []string
}

func (r *recorded) around(next http.RoundTripper) http.RoundTripper {
	return roundTripFunc(func(req *http.Request) (*http.Response, error) {
		resp, err := next.RoundTrip(req)
		if err != nil || (req.Method != http.MethodPost && req.Method != http.MethodPut) {
			return resp, err
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return nil, err
		}
		resp.Body = io.NopCloser(bytes.NewReader(body))
		r.mu.Lock()
		r.bodies = append(r.bodies, string(body))
		r.mu.Unlock()
		return resp, nil
	})
}

func (r *recorded) all() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.bodies...)
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// A write is answered with the session's metadata alone, and what the store
// caches from it is what the API server stored: the same resourceVersion
// and metadata, and the spec it sent.
func TestWritesAreAnsweredWithMetadataAndCacheWhatWasStored(t *testing.T) {
	g := NewWithT(t)
	ns := env.Namespace(t)
	answers := &recorded{}
	store, err := sessions.NewStore(env.Client, sessions.Config{
		Namespace: ns, RefreshTTL: time.Hour, MaxLifetime: 24 * time.Hour, CacheSize: 10, Timeout: 5 * time.Second, Writes: writer(t, answers),
	})
	g.Expect(err).NotTo(HaveOccurred())
	ctx := context.Background()
	matchesStored := func(cached *identityv1alpha1.RefreshToken) {
		t.Helper()
		stored := &identityv1alpha1.RefreshToken{}
		g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(cached), stored)).To(Succeed())
		g.Expect(cached.ResourceVersion).To(Equal(stored.ResourceVersion))
		g.Expect(cached.UID).To(Equal(stored.UID))
		g.Expect(cached.Labels).To(Equal(stored.Labels))
		g.Expect(cached.ManagedFields).To(Equal(stored.ManagedFields))
		g.Expect(cached.Spec).To(Equal(stored.Spec), "the spec sent is the spec stored")
	}

	tok, created := passwordSession(t, store, "max")
	matchesStored(created)
	next, rotated, err := store.Rotate(ctx, tok, sessions.Refresh{})
	g.Expect(err).NotTo(HaveOccurred())
	matchesStored(rotated)
	g.Expect(rotated.ManagedFields).To(BeEmpty(), "cleared by the update")

	bodies := answers.all()
	g.Expect(bodies).To(HaveLen(2), "one create, one update")
	for _, b := range bodies {
		g.Expect(b).To(ContainSubstring(`"kind":"PartialObjectMetadata"`))
		g.Expect(b).NotTo(ContainSubstring(`"spec"`))
	}

	// Changed elsewhere: the cached copy is stale, the conditional update
	// conflicts (a Status decoded as such), and the store reads the session
	// again and rotates it, keeping the other writer's change.
	elsewhere := rotated.DeepCopy()
	elsewhere.Labels["team"] = "blue"
	g.Expect(env.Client.Update(ctx, elsewhere)).To(Succeed())
	third, again, err := store.Rotate(ctx, next, sessions.Refresh{})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(again.Labels).To(HaveKeyWithValue("team", "blue"))
	matchesStored(again)
	g.Expect(answers.all()[2]).To(ContainSubstring(`"reason":"Conflict"`))

	// Deleted elsewhere: refused as unknown, not an outage.
	g.Expect(env.Client.Delete(ctx, again)).To(Succeed())
	_, _, err = store.Rotate(ctx, third, sessions.Refresh{})
	g.Expect(sessions.ReasonOf(err)).NotTo(BeEmpty(), "refused: %v", err)
	g.Expect(err).NotTo(MatchError(sessions.ErrUnavailable))
}
