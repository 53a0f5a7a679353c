package workload

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	. "github.com/onsi/gomega"
	authenticationv1 "k8s.io/api/authentication/v1"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"rotor.dev/rotor/pkg/scheme"
)

// fakeAPI answers TokenReviews: good (and noExpiry) are valid ServiceAccount
// tokens for the audience, "down" finds the API server unreachable, anything
// else is refused. It counts the reviews it was asked for.
type fakeAPI struct{ reviews atomic.Int64 }

func (f *fakeAPI) client() client.Client {
	return fake.NewClientBuilder().WithScheme(scheme.Scheme).WithInterceptorFuncs(interceptor.Funcs{
		Create: func(_ context.Context, _ client.WithWatch, obj client.Object, _ ...client.CreateOption) error {
			f.reviews.Add(1)
			tr := obj.(*authenticationv1.TokenReview)
			switch tr.Spec.Token {
			case "down":
				return errors.New("connection refused")
			case good, noExpiry:
				tr.Status = authenticationv1.TokenReviewStatus{
					Authenticated: true, Audiences: []string{"rotor"},
					User: authenticationv1.UserInfo{Username: "system:serviceaccount:team-a:builder"},
				}
			}
			return nil
		},
	}).Build()
}

var (
	goodExpiry = time.Unix(1_800_000_600, 0)
	good       = signed(jwt.MapClaims{"sub": "system:serviceaccount:team-a:builder", "exp": goodExpiry.Unix()})
	noExpiry   = signed(jwt.MapClaims{"sub": "system:serviceaccount:team-a:builder"})
)

// signed is a JWT in shape; the fake API server is what "validates" it.
func signed(c jwt.MapClaims) string {
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString([]byte("test"))
	if err != nil {
		panic(err)
	}
	return s
}

func TestReviewReadsTheTokensExpiry(t *testing.T) {
	g := NewWithT(t)
	r := &Reviewer{Client: (&fakeAPI{}).client(), Audience: "rotor"}
	id, err := r.Review(context.Background(), good)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(id.ExpiresAt).To(BeTemporally("==", goodExpiry))
	_, err = r.Review(context.Background(), noExpiry)
	g.Expect(err).To(MatchError(ErrNotAuthenticated), "a token that never expires grants nothing")
}

func TestCachedReviewer(t *testing.T) {
	for _, tc := range []struct {
		name       string
		ttl        time.Duration
		token      string
		wantErr    error
		after      time.Duration // between the two reviews
		wantAPIHit int64         // TokenReviews for both
	}{
		{"a refused token presented again within the negative TTL costs one review", time.Minute, "junk", ErrNotAuthenticated, 9 * time.Second, 1},
		{"a refused token is asked about again once the negative TTL has passed", time.Minute, "junk", ErrNotAuthenticated, 10 * time.Second, 2},
		{"an unreachable API server is never cached", time.Minute, "down", ErrUnavailable, 0, 2},
		{"a valid token is cached for the TTL", time.Minute, good, nil, 59 * time.Second, 1},
		{"a valid token is reviewed again after the TTL", time.Minute, good, nil, time.Minute, 2},
		{"a valid token is reviewed each time with a TTL of zero", 0, good, nil, 0, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			api := &fakeAPI{}
			clk := clocktesting.NewFakePassiveClock(time.Unix(1_800_000_000, 0))
			c, err := NewCachedReviewer(&Reviewer{Client: api.client(), Audience: "rotor"}, tc.ttl, 10*time.Second, 16, clk)
			g.Expect(err).NotTo(HaveOccurred())
			for i := range 2 {
				id, err := c.Review(context.Background(), tc.token)
				if tc.wantErr != nil {
					g.Expect(err).To(MatchError(tc.wantErr), "review %d", i)
				} else {
					g.Expect(err).NotTo(HaveOccurred())
					g.Expect(id.Namespace + "/" + id.Name).To(Equal("team-a/builder"))
				}
				clk.SetTime(clk.Now().Add(tc.after))
			}
			g.Expect(api.reviews.Load()).To(Equal(tc.wantAPIHit))
		})
	}
}
