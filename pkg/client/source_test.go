package client_test

import (
	"context"
	"errors"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/types"
	"golang.org/x/oauth2"

	"rotor.dev/rotor/pkg/client"
)

// passwordSource logs alice in against f with a fake clock.
func passwordSource(f *fakeIssuer, clk client.Config) *client.Source {
	cfg := clk
	cfg.IssuerURL = f.URL
	return client.PasswordSource(context.Background(), cfg, "alice", "s3cret")
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestLoginRequests(t *testing.T) {
	for name, tc := range map[string]struct {
		cfg  client.Config
		sa   bool
		want url.Values
	}{
		"a password login sends the credentials, client_id and audience": {
			cfg: client.Config{ClientID: "cli", Audience: "api"},
			want: url.Values{
				"grant_type": {"password"}, "username": {"alice"}, "password": {"s3cret"},
				"client_id": {"cli"}, "audience": {"api"},
			},
		},
		"a password login without client_id or audience sends neither": {
			want: url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {"s3cret"}},
		},
		"an exchange sends the file's ServiceAccount token as a JWT subject token": {
			cfg: client.Config{Audience: "api"},
			sa:  true,
			want: url.Values{
				"grant_type":         {"urn:ietf:params:oauth:grant-type:token-exchange"},
				"subject_token":      {"sa-token-1"},
				"subject_token_type": {"urn:ietf:params:oauth:token-type:jwt"},
				"audience":           {"api"},
			},
		},
	} {
		t.Run(name, func(t *testing.T) {
			g := NewWithT(t)
			f := newFakeIssuer(t)
			cfg := tc.cfg
			cfg.IssuerURL = f.URL
			cfg.Clock = newClock()
			var src *client.Source
			if tc.sa {
				file := filepath.Join(t.TempDir(), "token")
				writeFile(t, file, "sa-token-1\n") // the kubelet's trailing newline is trimmed
				src = client.ServiceAccountSource(context.Background(), cfg, file)
			} else {
				src = client.PasswordSource(context.Background(), cfg, "alice", "s3cret")
			}
			tok, err := src.Token()
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(tok.AccessToken).To(Equal("at-1"))
			g.Expect(tok.TokenType).To(Equal("Bearer"))
			g.Expect(f.lastForm()).To(Equal(tc.want))
		})
	}
}

func TestTokensCarryNoRefreshToken(t *testing.T) {
	g := NewWithT(t)
	f := newFakeIssuer(t)
	clk := newClock()
	src := passwordSource(f, client.Config{Clock: clk})
	tok, err := src.Token()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(tok.RefreshToken).To(BeEmpty(), "only the Source may use the refresh token")
	g.Expect(tok.Extra("refresh_token")).To(BeNil())
	g.Expect(tok.Extra("expires_in")).To(BeEquivalentTo(1200))
	g.Expect(tok.Expiry).To(Equal(clk.Now().Add(20 * time.Minute)))
}

func TestAccessTokenIsReusedUntilTheRefreshMargin(t *testing.T) {
	g := NewWithT(t)
	f := newFakeIssuer(t)
	clk := newClock()
	src := passwordSource(f, client.Config{Clock: clk}) // default margin: 1 minute

	tok, err := src.Token()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(tok.AccessToken).To(Equal("at-1"))

	clk.Step(19*time.Minute - time.Second)
	tok, err = src.Token()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(tok.AccessToken).To(Equal("at-1"))
	g.Expect(f.totalHits()).To(Equal(1), "no request before the margin")

	clk.Step(time.Second)
	// The first call in the margin starts the refresh and still gets the
	// working token; the refresh lands shortly after.
	tok, err = src.Token()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(tok.AccessToken).To(Equal("at-1"))
	g.Eventually(func() string {
		tok, _ := src.Token()
		return tok.AccessToken
	}).Should(Equal("at-2"))
	g.Expect(f.hitsOf(client.GrantRefreshToken)).To(Equal(1))
	g.Expect(f.refreshTokensSent()).To(Equal([]string{"rt-1"}))
}

func TestRefreshMarginIsConfigurableAndCappedAtHalfTheLifetime(t *testing.T) {
	for name, tc := range map[string]struct {
		expiresIn int64
		margin    time.Duration
		refreshAt time.Duration // after login
	}{
		"a 5 minute margin on a 20 minute token refreshes after 15 minutes": {1200, 5 * time.Minute, 15 * time.Minute},
		"the default margin on a 1 minute token refreshes after 30 seconds": {60, 0, 30 * time.Second},
	} {
		t.Run(name, func(t *testing.T) {
			g := NewWithT(t)
			f := newFakeIssuer(t)
			f.set(func(f *fakeIssuer) { f.expiresIn = tc.expiresIn })
			clk := newClock()
			src := passwordSource(f, client.Config{Clock: clk, RefreshMargin: tc.margin})
			_, err := src.Token()
			g.Expect(err).NotTo(HaveOccurred())

			src.Invalidate(&oauth2.Token{AccessToken: "not-the-current-one"}) // a stale invalidation changes nothing
			clk.Step(tc.refreshAt - time.Second)
			tok, err := src.Token()
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(tok.AccessToken).To(Equal("at-1"))
			g.Expect(f.totalHits()).To(Equal(1))

			clk.Step(time.Second)
			g.Eventually(func() string {
				tok, _ := src.Token()
				return tok.AccessToken
			}).Should(Equal("at-2"))
			g.Expect(f.hitsOf(client.GrantRefreshToken)).To(Equal(1))
		})
	}
}

func TestTwentyGoroutinesShareOneRefresh(t *testing.T) {
	g := NewWithT(t)
	f := newFakeIssuer(t)
	clk := newClock()
	src := passwordSource(f, client.Config{Clock: clk})
	_, err := src.Token()
	g.Expect(err).NotTo(HaveOccurred())

	clk.Step(20 * time.Minute) // expired: nobody may use at-1 any more
	gate, entered := make(chan struct{}), make(chan struct{}, 100)
	f.set(func(f *fakeIssuer) { f.gate, f.entered = gate, entered })

	var wg sync.WaitGroup
	var started sync.WaitGroup
	results := make([]string, 20)
	errs := make([]error, 20)
	for i := range 20 {
		wg.Add(1)
		started.Add(1)
		go func() {
			defer wg.Done()
			started.Done()
			tok, err := src.Token()
			errs[i] = err
			if tok != nil {
				results[i] = tok.AccessToken
			}
		}()
	}
	started.Wait()
	<-entered                         // the one refresh is on the wire
	time.Sleep(50 * time.Millisecond) // let the others pile up behind it
	close(gate)
	wg.Wait()

	for i := range 20 {
		g.Expect(errs[i]).NotTo(HaveOccurred())
		g.Expect(results[i]).To(Equal("at-2"))
	}
	g.Expect(f.hitsOf(client.GrantRefreshToken)).To(Equal(1))
	g.Expect(f.hitsOf(client.GrantPassword)).To(Equal(1), "the first login only")
	g.Expect(entered).To(BeEmpty(), "no second request reached the issuer")
}

func TestRotatedRefreshTokenIsKept(t *testing.T) {
	g := NewWithT(t)
	f := newFakeIssuer(t)
	clk := newClock()
	src := passwordSource(f, client.Config{Clock: clk})
	for _, want := range []string{"at-1", "at-2", "at-3", "at-4"} {
		tok, err := src.Token()
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(tok.AccessToken).To(Equal(want))
		clk.Step(20 * time.Minute)
	}
	g.Expect(f.refreshTokensSent()).To(Equal([]string{"rt-1", "rt-2", "rt-3"}))
	g.Expect(f.hitsOf(client.GrantPassword)).To(Equal(1))
	g.Expect(f.replayCount()).To(BeZero())
}

func TestInvalidGrantFallsBackToAFreshLogin(t *testing.T) {
	for name, sa := range map[string]bool{
		"a password source logs in again":         false,
		"a ServiceAccount source exchanges again": true,
	} {
		t.Run(name, func(t *testing.T) {
			g := NewWithT(t)
			f := newFakeIssuer(t)
			clk := newClock()
			var grants []string
			var mu sync.Mutex
			cfg := client.Config{IssuerURL: f.URL, Clock: clk, OnTokenRequest: func(grant string, err error) {
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					grants = append(grants, grant+" failed")
				} else {
					grants = append(grants, grant)
				}
			}}
			src := client.PasswordSource(context.Background(), cfg, "alice", "s3cret")
			login := client.GrantPassword
			if sa {
				file := filepath.Join(t.TempDir(), "token")
				writeFile(t, file, "sa-token-1")
				src = client.ServiceAccountSource(context.Background(), cfg, file)
				login = client.GrantTokenExchange
			}
			_, err := src.Token()
			g.Expect(err).NotTo(HaveOccurred())

			// The session is revoked (kubectl delete rt): rt-1 is dead.
			f.set(func(f *fakeIssuer) { delete(f.live, "rt-1") })
			clk.Step(20 * time.Minute)
			tok, err := src.Token()
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(tok.AccessToken).To(Equal("at-2"))
			mu.Lock()
			g.Expect(grants).To(Equal([]string{login, client.GrantRefreshToken + " failed", login}))
			mu.Unlock()

			// The new session's refresh token is used next, the dead one never again.
			clk.Step(20 * time.Minute)
			_, err = src.Token()
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(f.refreshTokensSent()).To(Equal([]string{"rt-1", "rt-2"}))
		})
	}
}

func TestUnavailableIssuerKeepsTheRefreshToken(t *testing.T) {
	for name, tc := range map[string]struct {
		breakIt func(f *fakeIssuer, down *atomic.Bool)
		wantErr types.GomegaMatcher
		// what the issuer saw: a request that failed on the network never arrived
		wantRefreshes []string
	}{
		"a 503 temporarily_unavailable": {
			breakIt:       func(f *fakeIssuer, _ *atomic.Bool) { f.set(func(f *fakeIssuer) { f.unavailable = true }) },
			wantErr:       MatchError("refreshing access token: issuer answered 503 temporarily_unavailable: the issuer is temporarily unavailable; retry later"),
			wantRefreshes: []string{"rt-1", "rt-1"},
		},
		"a network error": {
			breakIt:       func(_ *fakeIssuer, down *atomic.Bool) { down.Store(true) },
			wantErr:       MatchError(HavePrefix("refreshing access token: Post ")),
			wantRefreshes: []string{"rt-1"},
		},
	} {
		t.Run(name, func(t *testing.T) {
			g := NewWithT(t)
			f := newFakeIssuer(t)
			clk := newClock()
			var down atomic.Bool
			errDown := errors.New("connection refused")
			hc := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
				if down.Load() {
					return nil, errDown
				}
				return http.DefaultTransport.RoundTrip(r)
			})}
			src := passwordSource(f, client.Config{Clock: clk, HTTPClient: hc})
			_, err := src.Token()
			g.Expect(err).NotTo(HaveOccurred())

			tc.breakIt(f, &down)
			clk.Step(20 * time.Minute)
			tok, err := src.Token()
			g.Expect(tok).To(BeNil())
			g.Expect(err).To(tc.wantErr)
			g.Expect(f.hitsOf(client.GrantPassword)).To(Equal(1), "no login instead of the refresh")

			// Back up: the kept refresh token works (after the Retry-After
			// second that rotor's 503 asks for).
			f.set(func(f *fakeIssuer) { f.unavailable = false })
			down.Store(false)
			clk.Step(time.Second)
			tok, err = src.Token()
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(tok.AccessToken).To(Equal("at-2"))
			g.Expect(f.refreshTokensSent()).To(Equal(tc.wantRefreshes))
		})
	}
}

func TestTemporarilyUnavailableIsATokenError(t *testing.T) {
	g := NewWithT(t)
	f := newFakeIssuer(t)
	f.set(func(f *fakeIssuer) { f.unavailable = true })
	_, err := passwordSource(f, client.Config{Clock: newClock()}).Token()
	var te *client.TokenError
	g.Expect(errors.As(err, &te)).To(BeTrue())
	g.Expect(*te).To(Equal(client.TokenError{StatusCode: 503, Code: "temporarily_unavailable", Description: "the issuer is temporarily unavailable; retry later", RetryAfter: time.Second}))
}

func TestFailedEarlyRefreshKeepsServingTheCurrentToken(t *testing.T) {
	g := NewWithT(t)
	f := newFakeIssuer(t)
	clk := newClock()
	src := passwordSource(f, client.Config{Clock: clk})
	_, err := src.Token()
	g.Expect(err).NotTo(HaveOccurred())

	f.set(func(f *fakeIssuer) { f.unavailable = true })
	clk.Step(19*time.Minute + 10*time.Second) // in the margin, 50s before expiry
	tok, err := src.Token()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(tok.AccessToken).To(Equal("at-1"))
	g.Eventually(f.refreshTokensSent).Should(Equal([]string{"rt-1"}))

	// The attempt failed; for 5 seconds nobody asks again.
	g.Consistently(func() int {
		tok, err := src.Token()
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(tok.AccessToken).To(Equal("at-1"))
		return f.totalHits()
	}, 100*time.Millisecond).Should(Equal(2))

	clk.Step(5 * time.Second)
	f.set(func(f *fakeIssuer) { f.unavailable = false })
	_, _ = src.Token()
	g.Eventually(func() string { tok, _ := src.Token(); return tok.AccessToken }).Should(Equal("at-2"))
	g.Expect(f.refreshTokensSent()).To(Equal([]string{"rt-1", "rt-1"}))
}

func TestWrongPasswordIsAnInvalidGrantError(t *testing.T) {
	g := NewWithT(t)
	f := newFakeIssuer(t)
	src := client.PasswordSource(context.Background(), client.Config{IssuerURL: f.URL, Clock: newClock()}, "alice", "wrong")
	tok, err := src.Token()
	g.Expect(tok).To(BeNil())
	g.Expect(err).To(MatchError("logging in: issuer answered 400 invalid_grant: invalid username or password"))
	var te *client.TokenError
	g.Expect(errors.As(err, &te)).To(BeTrue())
	g.Expect(te.Code).To(Equal("invalid_grant"))
}

func TestThrottledLoginIsNotRetriedBeforeRetryAfter(t *testing.T) {
	g := NewWithT(t)
	clk := newClock()
	var hits atomic.Int32
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("Retry-After", "30")
		writeJSON(w, http.StatusTooManyRequests, map[string]string{"error": "invalid_grant", "error_description": "too many failed logins"})
	})
	src := client.PasswordSource(context.Background(), client.Config{IssuerURL: srv.URL, Clock: clk}, "alice", "s3cret")
	_, err := src.Token()
	var te *client.TokenError
	g.Expect(errors.As(err, &te)).To(BeTrue())
	g.Expect(*te).To(Equal(client.TokenError{StatusCode: 429, Code: "invalid_grant", Description: "too many failed logins", RetryAfter: 30 * time.Second}))

	_, err2 := src.Token()
	g.Expect(err2).To(BeIdenticalTo(err), "the same answer, without asking")
	g.Expect(hits.Load()).To(BeEquivalentTo(1))

	clk.Step(30 * time.Second)
	_, _ = src.Token()
	g.Expect(hits.Load()).To(BeEquivalentTo(2))
}

func TestServiceAccountTokenFileIsReadOnEveryExchange(t *testing.T) {
	g := NewWithT(t)
	f := newFakeIssuer(t)
	f.set(func(f *fakeIssuer) { f.exchangeRefresh = false }) // every renewal is an exchange
	clk := newClock()
	file := filepath.Join(t.TempDir(), "token")
	writeFile(t, file, "sa-token-1")
	src := client.ServiceAccountSource(context.Background(), client.Config{IssuerURL: f.URL, Clock: clk}, file)

	tok, err := src.Token()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(tok.Extra("issued_token_type")).To(Equal("urn:ietf:params:oauth:token-type:access_token"))
	g.Expect(f.lastForm().Get("subject_token")).To(Equal("sa-token-1"))

	// The kubelet rotates the projected token.
	writeFile(t, file, "sa-token-2")
	f.set(func(f *fakeIssuer) { f.saToken = "sa-token-2" })
	clk.Step(20 * time.Minute)
	tok, err = src.Token()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(tok.AccessToken).To(Equal("at-2"))
	g.Expect(f.lastForm().Get("subject_token")).To(Equal("sa-token-2"))
	g.Expect(f.hitsOf(client.GrantTokenExchange)).To(Equal(2))
	g.Expect(f.hitsOf(client.GrantRefreshToken)).To(BeZero())
}

func TestMissingServiceAccountTokenFile(t *testing.T) {
	g := NewWithT(t)
	f := newFakeIssuer(t)
	src := client.ServiceAccountSource(context.Background(), client.Config{IssuerURL: f.URL}, filepath.Join(t.TempDir(), "absent"))
	_, err := src.Token()
	g.Expect(err).To(MatchError(fs.ErrNotExist))
	g.Expect(err.Error()).To(HavePrefix("urn:ietf:params:oauth:grant-type:token-exchange: reading ServiceAccount token: "))
	g.Expect(f.totalHits()).To(BeZero())
}

func TestInvalidateForcesOneRefresh(t *testing.T) {
	g := NewWithT(t)
	f := newFakeIssuer(t)
	src := passwordSource(f, client.Config{Clock: newClock()})
	first, err := src.Token()
	g.Expect(err).NotTo(HaveOccurred())

	src.Invalidate(first)
	second, err := src.Token()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(second.AccessToken).To(Equal("at-2"))

	src.Invalidate(first) // late: at-1 is no longer cached
	third, err := src.Token()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(third.AccessToken).To(Equal("at-2"))
	g.Expect(f.refreshTokensSent()).To(Equal([]string{"rt-1"}))
}

func TestRevokeLogsTheSessionOut(t *testing.T) {
	g := NewWithT(t)
	f := newFakeIssuer(t)
	src := passwordSource(f, client.Config{Clock: newClock(), ClientID: "cli"})
	_, err := src.Token()
	g.Expect(err).NotTo(HaveOccurred())

	g.Expect(src.Revoke(context.Background())).To(Succeed())
	g.Expect(f.revokedTokens()).To(Equal([]string{"rt-1"}))
	g.Expect(src.Revoke(context.Background())).To(Succeed(), "nothing left to revoke")
	g.Expect(f.revokedTokens()).To(Equal([]string{"rt-1"}))

	tok, err := src.Token()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(tok.AccessToken).To(Equal("at-2"))
	g.Expect(f.hitsOf(client.GrantPassword)).To(Equal(2))
	g.Expect(f.hitsOf(client.GrantRefreshToken)).To(BeZero())
}

func TestTokenContextStopsWaitingButTheRefreshCompletes(t *testing.T) {
	g := NewWithT(t)
	f := newFakeIssuer(t)
	clk := newClock()
	src := passwordSource(f, client.Config{Clock: clk})
	_, err := src.Token()
	g.Expect(err).NotTo(HaveOccurred())

	clk.Step(20 * time.Minute)
	gate, entered := make(chan struct{}), make(chan struct{}, 10)
	f.set(func(f *fakeIssuer) { f.gate, f.entered = gate, entered })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		_, err := src.TokenContext(ctx)
		done <- err
	}()
	<-entered
	cancel()
	g.Expect(<-done).To(MatchError(context.Canceled))

	// The refresh was not abandoned: its answer (and rt-2) is kept.
	close(gate)
	g.Eventually(func() string { tok, _ := src.Token(); return tok.AccessToken }).Should(Equal("at-2"))
	clk.Step(20 * time.Minute)
	_, err = src.Token()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(f.refreshTokensSent()).To(Equal([]string{"rt-1", "rt-2"}))
}

func TestBadConfig(t *testing.T) {
	g := NewWithT(t)
	src := client.PasswordSource(context.Background(), client.Config{IssuerURL: "rotor.example"}, "alice", "x")
	_, err := src.Token()
	g.Expect(err).To(MatchError(`issuer URL "rotor.example" is not an absolute http(s) URL`))
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
