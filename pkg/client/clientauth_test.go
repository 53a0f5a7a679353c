package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/gomega"

	"rotor.dev/rotor/pkg/client"
)

const (
	// A client whose id and secret need escaping in HTTP Basic.
	oddID     = "my client"
	oddSecret = "p@ss:w%rd+"
	// oddBasic is the header RFC 6749 §2.3.1 asks for: "my+client" and
	// "p%40ss%3Aw%25rd%2B" (each form-urlencoded), joined by ':', base64.
	oddBasic = "Basic bXkrY2xpZW50OnAlNDBzcyUzQXclMjVyZCUyQg=="

	ccID     = "billing"
	ccSecret = "cc-s3cret-Zm9vYmFy"
)

// confidentialIssuer is a fake issuer that knows oddID and ccID as
// Confidential clients.
func confidentialIssuer(t *testing.T) *fakeIssuer {
	f := newFakeIssuer(t)
	f.set(func(f *fakeIssuer) {
		f.clients[oddID] = oddSecret
		f.clients[ccID] = ccSecret
	})
	return f
}

func TestEveryRequestAuthenticatesTheClientTheSameWay(t *testing.T) {
	for name, tc := range map[string]struct {
		cfg      client.Config
		sa       bool
		wantAuth string
		wantForm url.Values // client_id and client_secret as sent in the body
	}{
		"a secret goes in HTTP Basic by default, form-urlencoded before base64": {
			cfg:      client.Config{ClientID: oddID, ClientSecret: oddSecret},
			wantAuth: oddBasic,
			wantForm: url.Values{},
		},
		"an exchange authenticates the same way": {
			cfg:      client.Config{ClientID: oddID, ClientSecret: oddSecret},
			sa:       true,
			wantAuth: oddBasic,
			wantForm: url.Values{},
		},
		"AuthStylePost sends client_id and client_secret in the body only": {
			cfg:      client.Config{ClientID: oddID, ClientSecret: oddSecret, AuthStyle: client.AuthStylePost},
			wantForm: url.Values{"client_id": {oddID}, "client_secret": {oddSecret}},
		},
		"a public client sends client_id only": {
			cfg:      client.Config{ClientID: "cli", AuthStyle: client.AuthStylePost},
			wantForm: url.Values{"client_id": {"cli"}},
		},
	} {
		t.Run(name, func(t *testing.T) {
			g := NewWithT(t)
			f := confidentialIssuer(t)
			clk := newClock()
			cfg := tc.cfg
			cfg.IssuerURL, cfg.Clock = f.URL, clk
			src := client.PasswordSource(context.Background(), cfg, "alice", "s3cret")
			login := client.GrantPassword
			if tc.sa {
				file := filepath.Join(t.TempDir(), "token")
				writeFile(t, file, "sa-token-1")
				src = client.ServiceAccountSource(context.Background(), cfg, file)
				login = client.GrantTokenExchange
			}

			_, err := src.Token()
			g.Expect(err).NotTo(HaveOccurred())
			clk.Step(20 * time.Minute)
			tok, err := src.Token() // the fake refreshes only for the client that logged in
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(tok.AccessToken).To(Equal("at-2"))
			g.Expect(src.Revoke(context.Background())).To(Succeed())
			g.Expect(f.revokedTokens()).To(Equal([]string{"rt-2"}))

			reqs := f.requests()
			g.Expect(reqs).To(HaveLen(3))
			for i, want := range []struct{ path, grant string }{{"/token", login}, {"/token", client.GrantRefreshToken}, {"/revoke", ""}} {
				r := reqs[i]
				g.Expect(r.Path).To(Equal(want.path))
				g.Expect(r.Form.Get("grant_type")).To(Equal(want.grant))
				g.Expect(r.Authorization).To(Equal(tc.wantAuth), "request %d", i)
				got := url.Values{}
				for _, k := range []string{"client_id", "client_secret"} {
					if v, ok := r.Form[k]; ok {
						got[k] = v
					}
				}
				g.Expect(got).To(Equal(tc.wantForm), "request %d", i)
				g.Expect(r.Authorization != "" && r.Form.Has("client_secret")).To(BeFalse(), "never two methods at once")
			}
		})
	}
}

// TestFakeIssuerAuthenticatesClientsLikeRotor holds the fake to rotor's
// answers, which the tests above rely on.
func TestFakeIssuerAuthenticatesClientsLikeRotor(t *testing.T) {
	f := confidentialIssuer(t)
	for name, tc := range map[string]struct {
		auth       string
		form       url.Values
		wantStatus int
		wantCode   string
		wantChal   bool
	}{
		"Basic and client_secret at once is invalid_request": {
			oddBasic, url.Values{"client_id": {oddID}, "client_secret": {oddSecret}}, 400, "invalid_request", false,
		},
		"a wrong secret in Basic is a challenged invalid_client": {
			"Basic bXkrY2xpZW50Ondyb25n", nil, 401, "invalid_client", true, // my+client:wrong
		},
		"the id and secret in Basic without form-urlencoding are refused": {
			"Basic bXkgY2xpZW50OnBAc3M6dyVyZCs=", nil, 401, "invalid_client", true, // my client:p@ss:w%rd+
		},
		"the right Basic credentials pass": {oddBasic, nil, 200, "", false},
	} {
		t.Run(name, func(t *testing.T) {
			g := NewWithT(t)
			form := url.Values{"grant_type": {client.GrantClientCredentials}}
			for k, v := range tc.form {
				form[k] = v
			}
			req, err := http.NewRequest(http.MethodPost, f.URL+"/token", strings.NewReader(form.Encode()))
			g.Expect(err).NotTo(HaveOccurred())
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.Header.Set("Authorization", tc.auth)
			resp, err := http.DefaultClient.Do(req)
			g.Expect(err).NotTo(HaveOccurred())
			defer resp.Body.Close()
			g.Expect(resp.StatusCode).To(Equal(tc.wantStatus))
			if tc.wantChal {
				g.Expect(resp.Header.Get("WWW-Authenticate")).To(HavePrefix("Basic "))
			}
			if tc.wantCode != "" {
				var body struct{ Error string }
				g.Expect(json.NewDecoder(resp.Body).Decode(&body)).To(Succeed())
				g.Expect(body.Error).To(Equal(tc.wantCode))
			}
		})
	}
}

func ccConfig(f *fakeIssuer, clk client.Config) client.Config {
	cfg := clk
	cfg.IssuerURL, cfg.ClientID, cfg.ClientSecret = f.URL, ccID, ccSecret
	return cfg
}

func TestClientCredentialsSourceRenewsWithItsCredentials(t *testing.T) {
	g := NewWithT(t)
	f := confidentialIssuer(t)
	clk := newClock()
	cfg := ccConfig(f, client.Config{Clock: clk, Audience: "orders", Scope: " orders.read  orders.write "})
	src := client.ClientCredentialsSource(context.Background(), cfg)

	tok, err := src.Token()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(tok.AccessToken).To(Equal("at-1"))
	g.Expect(tok.TokenType).To(Equal("Bearer"))
	g.Expect(tok.RefreshToken).To(BeEmpty())
	g.Expect(tok.Expiry).To(Equal(clk.Now().Add(20 * time.Minute)))
	g.Expect(tok.Extra("scope")).To(Equal("orders.read orders.write"), "the granted scope")
	g.Expect(f.lastForm()).To(Equal(url.Values{
		"grant_type": {"client_credentials"}, "audience": {"orders"}, "scope": {"orders.read orders.write"},
	}), "the credentials are in the Authorization header")

	// Reused until the margin.
	clk.Step(19*time.Minute - time.Second)
	tok, err = src.Token()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(tok.AccessToken).To(Equal("at-1"))
	g.Expect(f.totalHits()).To(Equal(1))

	// In the margin: the working token meanwhile, then a new one.
	clk.Step(time.Second)
	tok, err = src.Token()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(tok.AccessToken).To(Equal("at-1"))
	g.Eventually(func() string { tok, _ := src.Token(); return tok.AccessToken }).Should(Equal("at-2"))

	// Expired: the caller waits for the new one.
	clk.Step(20 * time.Minute)
	tok, err = src.Token()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(tok.AccessToken).To(Equal("at-3"))

	g.Expect(f.hitsOf(client.GrantClientCredentials)).To(Equal(3))
	g.Expect(f.totalHits()).To(Equal(3), "no refresh: there is no refresh token")
	for _, r := range f.requests() {
		g.Expect(r.Authorization).To(Equal("Basic YmlsbGluZzpjYy1zM2NyZXQtWm05dlltRnk=")) // billing:cc-s3cret-Zm9vYmFy
	}
}

func TestClientCredentialsSourceDropsARefreshTokenSentAnyway(t *testing.T) {
	g := NewWithT(t)
	var mu sync.Mutex
	var grants []string
	n := 0
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		mu.Lock()
		defer mu.Unlock()
		grants = append(grants, r.PostForm.Get("grant_type"))
		n++
		writeJSON(w, http.StatusOK, map[string]any{"access_token": "at", "token_type": "Bearer", "expires_in": 1200, "refresh_token": "rt"})
	})
	clk := newClock()
	src := client.ClientCredentialsSource(context.Background(), client.Config{IssuerURL: srv.URL, ClientID: ccID, ClientSecret: ccSecret, Clock: clk})
	for range 2 {
		_, err := src.Token()
		g.Expect(err).NotTo(HaveOccurred())
		clk.Step(20 * time.Minute)
	}
	g.Expect(src.Revoke(context.Background())).To(Succeed())
	mu.Lock()
	defer mu.Unlock()
	g.Expect(grants).To(Equal([]string{"client_credentials", "client_credentials"}), "no refresh, no revocation")
}

func TestTwentyGoroutinesShareOneClientCredentialsRequest(t *testing.T) {
	for name, warm := range map[string]bool{
		"before the first token":  false,
		"after the token expired": true,
	} {
		t.Run(name, func(t *testing.T) {
			g := NewWithT(t)
			f := confidentialIssuer(t)
			clk := newClock()
			src := client.ClientCredentialsSource(context.Background(), ccConfig(f, client.Config{Clock: clk}))
			want, before := "at-1", 0
			if warm {
				_, err := src.Token()
				g.Expect(err).NotTo(HaveOccurred())
				clk.Step(20 * time.Minute)
				want, before = "at-2", 1
			}
			gate, entered := make(chan struct{}), make(chan struct{}, 100)
			f.set(func(f *fakeIssuer) { f.gate, f.entered = gate, entered })

			var wg, started sync.WaitGroup
			results, errs := make([]string, 20), make([]error, 20)
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
			<-entered                         // the one request is on the wire
			time.Sleep(50 * time.Millisecond) // let the others pile up behind it
			close(gate)
			wg.Wait()

			for i := range 20 {
				g.Expect(errs[i]).NotTo(HaveOccurred())
				g.Expect(results[i]).To(Equal(want))
			}
			g.Expect(f.hitsOf(client.GrantClientCredentials)).To(Equal(before + 1))
			g.Expect(entered).To(BeEmpty(), "no second request reached the issuer")
		})
	}
}

func TestWrongClientSecretIsAnInvalidClientErrorWithoutTheSecret(t *testing.T) {
	const wrong = "wr0ng:s3cret-Zm9vYmFy"
	for name, tc := range map[string]struct {
		style    client.AuthStyle
		password bool
		wantErr  string
	}{
		"client credentials in Basic": {
			style:   client.AuthStyleBasic,
			wantErr: "requesting a client credentials token: issuer answered 401 invalid_client: client authentication failed",
		},
		"client credentials in the form": {
			style:   client.AuthStylePost,
			wantErr: "requesting a client credentials token: issuer answered 401 invalid_client: client authentication failed",
		},
		"a password login in Basic": {
			style:    client.AuthStyleBasic,
			password: true,
			wantErr:  "logging in: issuer answered 401 invalid_client: client authentication failed",
		},
	} {
		t.Run(name, func(t *testing.T) {
			g := NewWithT(t)
			f := confidentialIssuer(t)
			var challenges []string
			var mu sync.Mutex
			var hookErrs []error
			hc := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
				resp, err := http.DefaultTransport.RoundTrip(r)
				if err == nil {
					mu.Lock()
					challenges = append(challenges, resp.Header.Get("WWW-Authenticate"))
					mu.Unlock()
				}
				return resp, err
			})}
			cfg := client.Config{
				IssuerURL: f.URL, ClientID: ccID, ClientSecret: wrong, AuthStyle: tc.style,
				HTTPClient: hc, Clock: newClock(),
				OnTokenRequest: func(_ string, err error) {
					mu.Lock()
					defer mu.Unlock()
					hookErrs = append(hookErrs, err)
				},
			}
			src := client.ClientCredentialsSource(context.Background(), cfg)
			if tc.password {
				src = client.PasswordSource(context.Background(), cfg, "alice", "s3cret")
			}
			tok, err := src.Token()
			g.Expect(tok).To(BeNil())
			g.Expect(err).To(MatchError(tc.wantErr))
			var te *client.TokenError
			g.Expect(errors.As(err, &te)).To(BeTrue())
			g.Expect(te.StatusCode).To(Equal(http.StatusUnauthorized))
			g.Expect(te.Code).To(Equal("invalid_client"))
			g.Expect(err.Error()).NotTo(ContainSubstring("s3cret"))

			mu.Lock()
			defer mu.Unlock()
			g.Expect(hookErrs).To(HaveLen(1))
			g.Expect(hookErrs[0]).To(HaveOccurred())
			g.Expect(hookErrs[0].Error()).NotTo(ContainSubstring("s3cret"))
			if tc.style == client.AuthStyleBasic {
				g.Expect(challenges).To(Equal([]string{`Basic realm="rotor", charset="UTF-8"`}))
			}
		})
	}
}

func TestSecretNeverInNetworkErrors(t *testing.T) {
	g := NewWithT(t)
	var hookErr error
	hc := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		return nil, errors.New("connection refused")
	})}
	src := client.ClientCredentialsSource(context.Background(), client.Config{
		IssuerURL: "http://rotor.invalid", ClientID: ccID, ClientSecret: ccSecret, HTTPClient: hc, Clock: newClock(),
		OnTokenRequest: func(_ string, err error) { hookErr = err },
	})
	_, err := src.Token()
	g.Expect(err).To(MatchError(HavePrefix("requesting a client credentials token: Post ")))
	g.Expect(err.Error()).NotTo(ContainSubstring(ccSecret))
	g.Expect(hookErr).To(HaveOccurred())
	g.Expect(hookErr.Error()).NotTo(ContainSubstring(ccSecret))
}

func TestClientCredentialsNeedAConfidentialClient(t *testing.T) {
	for name, cfg := range map[string]client.Config{
		"no client secret": {ClientID: ccID},
		"no client id":     {ClientSecret: ccSecret},
	} {
		t.Run(name, func(t *testing.T) {
			g := NewWithT(t)
			f := confidentialIssuer(t)
			cfg.IssuerURL = f.URL
			src := client.ClientCredentialsSource(context.Background(), cfg)
			_, err := src.Token()
			g.Expect(err).To(MatchError(HavePrefix("client credentials grant needs Config.ClientID and Config.ClientSecret")))
			g.Expect(src.Revoke(context.Background())).To(Succeed())
			g.Expect(f.totalHits()).To(BeZero())
		})
	}
}

func TestClientCredentialsRevokeIsANoOp(t *testing.T) {
	g := NewWithT(t)
	f := confidentialIssuer(t)
	src := client.ClientCredentialsSource(context.Background(), ccConfig(f, client.Config{Clock: newClock()}))
	_, err := src.Token()
	g.Expect(err).NotTo(HaveOccurred())

	g.Expect(src.Revoke(context.Background())).To(Succeed())
	tok, err := src.Token()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(tok.AccessToken).To(Equal("at-1"), "nothing was forgotten")
	g.Expect(f.requests()).To(HaveLen(1), "no request to /revoke")
}

func TestClientCredentialsHonourRetryAfter(t *testing.T) {
	g := NewWithT(t)
	f := confidentialIssuer(t)
	f.set(func(f *fakeIssuer) { f.unavailable = true })
	clk := newClock()
	src := client.ClientCredentialsSource(context.Background(), ccConfig(f, client.Config{Clock: clk}))
	_, err := src.Token()
	var te *client.TokenError
	g.Expect(errors.As(err, &te)).To(BeTrue())
	g.Expect(te.StatusCode).To(Equal(http.StatusServiceUnavailable))
	g.Expect(te.RetryAfter).To(Equal(time.Second))

	f.set(func(f *fakeIssuer) { f.unavailable = false })
	_, err2 := src.Token()
	g.Expect(err2).To(BeIdenticalTo(err), "not asked again before Retry-After")
	g.Expect(f.totalHits()).To(Equal(1))

	clk.Step(time.Second)
	tok, err := src.Token()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(tok.AccessToken).To(Equal("at-1"))
	g.Expect(f.totalHits()).To(Equal(2))
}

func TestGrantedScopeIsKeptAcrossRefreshes(t *testing.T) {
	for name, omit := range map[string]bool{
		"the refresh answer repeats the scope": false,
		"the refresh answer leaves it out":     true,
	} {
		t.Run(name, func(t *testing.T) {
			g := NewWithT(t)
			f := newFakeIssuer(t)
			f.set(func(f *fakeIssuer) { f.refreshNoScope = omit })
			clk := newClock()
			src := passwordSource(f, client.Config{Clock: clk, Scope: "orders.read"})
			tok, err := src.Token()
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(f.lastForm().Get("scope")).To(Equal("orders.read"))
			g.Expect(tok.Extra("scope")).To(Equal("orders.read"))

			clk.Step(20 * time.Minute)
			tok, err = src.Token()
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(tok.AccessToken).To(Equal("at-2"))
			g.Expect(f.lastForm()).NotTo(HaveKey("scope"), "a refresh keeps the login's scope")
			g.Expect(tok.Extra("scope")).To(Equal("orders.read"))
		})
	}
}

func TestNoScopeRequestedNoneShown(t *testing.T) {
	g := NewWithT(t)
	f := newFakeIssuer(t)
	tok, err := passwordSource(f, client.Config{Clock: newClock()}).Token()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(f.lastForm()).NotTo(HaveKey("scope"))
	g.Expect(tok.Extra("scope")).To(BeNil())
}

func TestClientAuthenticationConfigErrors(t *testing.T) {
	for name, tc := range map[string]struct {
		cfg     client.Config
		wantErr string
	}{
		"a secret without a client id": {
			client.Config{ClientSecret: "x"},
			"a client secret needs a client ID: Config.ClientID is empty",
		},
		"an unknown AuthStyle": {
			client.Config{ClientID: "a", ClientSecret: "x", AuthStyle: client.AuthStyle(7)},
			"unknown client authentication style AuthStyle(7) in Config.AuthStyle",
		},
	} {
		t.Run(name, func(t *testing.T) {
			g := NewWithT(t)
			f := newFakeIssuer(t)
			cfg := tc.cfg
			cfg.IssuerURL = f.URL
			_, err := client.PasswordSource(context.Background(), cfg, "alice", "s3cret").Token()
			g.Expect(err).To(MatchError(tc.wantErr))
			g.Expect(f.totalHits()).To(BeZero())
		})
	}
}

func TestAuthStyleNames(t *testing.T) {
	g := NewWithT(t)
	g.Expect(client.AuthStyleBasic.String()).To(Equal("client_secret_basic"))
	g.Expect(client.AuthStylePost.String()).To(Equal("client_secret_post"))
	g.Expect(client.AuthStyle(0)).To(Equal(client.AuthStyleBasic), "Basic is the default")
}

// A redirect from the token endpoint is an error: the password is not sent
// again to wherever it points.
func TestSourceDoesNotFollowRedirects(t *testing.T) {
	g := NewWithT(t)
	var elsewhere atomic.Int32
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Add(1)
		w.WriteHeader(http.StatusOK)
	}))
	defer sink.Close()
	issuer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, sink.URL+"/token", http.StatusTemporaryRedirect)
	}))
	defer issuer.Close()
	src := client.PasswordSource(context.Background(), client.Config{IssuerURL: issuer.URL, HTTPClient: &http.Client{}}, "alice", "s3cret")
	_, err := src.Token()
	g.Expect(err).To(HaveOccurred())
	g.Expect(elsewhere.Load()).To(BeZero(), "the form went nowhere else")
	g.Expect(err.Error()).NotTo(ContainSubstring("s3cret"))
}
