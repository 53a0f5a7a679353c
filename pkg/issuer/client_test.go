package issuer_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	rotorclient "rotor.dev/rotor/pkg/client"
	"rotor.dev/rotor/pkg/keys"
)

// A workload calls an API through pkg/client's token source and transport;
// the API verifies with pkg/client's middleware. Through access-token
// expiries and a signing-key rotation no call fails, and the source refreshes
// exactly once per expiry however many goroutines call at once.
func TestClientLibraryThroughExpiriesAndAKeyRotation(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := env.Namespace(t)
	createAccount(t, ns, "wanda", "pw-wanda-1234")
	clock := newClock()
	r := startReplica(t, ns, clock, func(o *replicaOptions) {
		o.KeyPrepublish, o.JWKSMaxAge = 30*time.Minute, 5*time.Minute
	})

	verifier, err := rotorclient.NewVerifier(ctx, r.URL, "rotor", rotorclient.WithClock(clock))
	g.Expect(err).NotTo(HaveOccurred())
	api := httptest.NewServer(verifier.Middleware(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		claims, _ := rotorclient.ClaimsFromContext(req.Context())
		_, _ = io.WriteString(w, claims.Subject)
	})))
	defer api.Close()

	var logins, refreshes, failedTokenRequests atomic.Int32
	src := rotorclient.PasswordSource(ctx, rotorclient.Config{
		IssuerURL: r.URL, Clock: clock,
		OnTokenRequest: func(grant string, err error) {
			switch {
			case err != nil:
				failedTokenRequests.Add(1)
			case grant == rotorclient.GrantPassword:
				logins.Add(1)
			case grant == rotorclient.GrantRefreshToken:
				refreshes.Add(1)
			}
		},
	}, "wanda", "pw-wanda-1234")
	httpClient := &http.Client{Transport: rotorclient.NewTransport(src, nil)}

	var failures atomic.Int32
	callConcurrently := func(n int) {
		var wg sync.WaitGroup
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				resp, err := httpClient.Get(api.URL)
				if err != nil {
					failures.Add(1)
					return
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK || string(body) != "wanda" {
					failures.Add(1)
				}
			}()
		}
		wg.Wait()
	}

	activeKID := func() string {
		k, ok := r.Server.Keys.Active()
		g.Expect(ok).To(BeTrue())
		return k.KID
	}
	firstKID := activeKID()

	const expiries = 4
	callConcurrently(20)
	for i := range expiries {
		clock.Step(20 * time.Minute) // every access token handed out so far has expired
		if i == 2 {
			// Rotate the signing key: the next key has been published for 40m.
			rotateSigningKey(t, ns)
			g.Eventually(activeKID, "10s").ShouldNot(Equal(firstKID))
		}
		callConcurrently(20)
	}

	g.Expect(failures.Load()).To(BeZero(), "no call fails")
	g.Expect(failedTokenRequests.Load()).To(BeZero())
	g.Expect(logins.Load()).To(BeEquivalentTo(1))
	g.Expect(refreshes.Load()).To(BeEquivalentTo(expiries), "one refresh per expiry, for 20 concurrent callers")
	g.Expect(sessionsOf(t, ns)).To(HaveLen(1))
	g.Expect(sessionsOf(t, ns)[0].Spec.Session.Rotations).To(BeEquivalentTo(expiries))
}

// rotateSigningKey asks the controller to rotate at once.
func rotateSigningKey(t *testing.T, ns string) {
	t.Helper()
	list := &corev1.SecretList{}
	active := client.MatchingLabels{"identity.rotor.dev/key-state": "active"}
	if err := env.Client.List(context.Background(), list, client.InNamespace(ns), active); err != nil {
		t.Fatal(err)
	}
	for i := range list.Items {
		s := &list.Items[i]
		if s.Type != keys.SecretType {
			continue
		}
		if s.Annotations == nil {
			s.Annotations = map[string]string{}
		}
		s.Annotations["identity.rotor.dev/rotate"] = "now"
		if err := env.Client.Update(context.Background(), s); err != nil {
			t.Fatal(err)
		}
	}
}
