package client_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	. "github.com/onsi/gomega"
	"golang.org/x/oauth2"

	"rotor.dev/rotor/pkg/client"
)

// fakeAPI accepts the Bearer tokens in valid and records what it was sent.
type fakeAPI struct {
	mu        sync.Mutex
	valid     map[string]bool
	challenge string // WWW-Authenticate of a 401
	seen      []string
	bodies    []string
	// When hold is set, refusals wait until holdFor of them are waiting,
	// so that concurrent clients all see their 401 at once.
	hold    chan struct{}
	holdFor int
	held    int
}

func newFakeAPI(t *testing.T, valid ...string) (*fakeAPI, string) {
	a := &fakeAPI{valid: map[string]bool{}, challenge: `Bearer realm="api", error="invalid_token", error_description="the access token is invalid"`}
	for _, v := range valid {
		a.valid[v] = true
	}
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		a.mu.Lock()
		auth := r.Header.Get("Authorization")
		a.seen = append(a.seen, auth)
		a.bodies = append(a.bodies, string(body))
		ok, challenge, hold := a.valid[strings.TrimPrefix(auth, "Bearer ")], a.challenge, a.hold
		if !ok && hold != nil {
			if a.held++; a.held == a.holdFor {
				close(hold)
			}
		}
		a.mu.Unlock()
		if !ok {
			if hold != nil {
				<-hold
			}
			w.Header().Set("WWW-Authenticate", challenge)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		_, _ = io.WriteString(w, "ok "+string(body))
	})
	return a, srv.URL
}

func (a *fakeAPI) set(fn func(a *fakeAPI)) {
	a.mu.Lock()
	defer a.mu.Unlock()
	fn(a)
}

func (a *fakeAPI) requests() ([]string, []string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.seen...), append([]string(nil), a.bodies...)
}

func TestTransport(t *testing.T) {
	for name, tc := range map[string]struct {
		valid      []string
		challenge  string
		body       func() io.Reader // nil: no body
		wantStatus int
		wantAuth   []string // Authorization of each request the API saw
		wantBodies []string
		wantRT     []string // refresh tokens sent to the issuer
	}{
		"the access token is sent as a Bearer token": {
			valid:      []string{"at-1"},
			body:       func() io.Reader { return strings.NewReader("hello") },
			wantStatus: 200,
			wantAuth:   []string{"Bearer at-1"},
			wantBodies: []string{"hello"},
			wantRT:     []string{},
		},
		"a 401 invalid_token refreshes once and retries once with the same body": {
			valid:      []string{"at-2"},
			body:       func() io.Reader { return strings.NewReader("hello") },
			wantStatus: 200,
			wantAuth:   []string{"Bearer at-1", "Bearer at-2"},
			wantBodies: []string{"hello", "hello"},
			wantRT:     []string{"rt-1"},
		},
		"a 401 invalid_token on a request without a body is retried": {
			valid:      []string{"at-2"},
			wantStatus: 200,
			wantAuth:   []string{"Bearer at-1", "Bearer at-2"},
			wantBodies: []string{"", ""},
			wantRT:     []string{"rt-1"},
		},
		"a second 401 is returned, not retried again": {
			body:       func() io.Reader { return strings.NewReader("hello") },
			wantStatus: 401,
			wantAuth:   []string{"Bearer at-1", "Bearer at-2"},
			wantBodies: []string{"hello", "hello"},
			wantRT:     []string{"rt-1"},
		},
		"a 401 without an error code is returned as it is": {
			valid:      []string{"at-2"},
			challenge:  `Bearer realm="api"`,
			wantStatus: 401,
			wantAuth:   []string{"Bearer at-1"},
			wantBodies: []string{""},
			wantRT:     []string{},
		},
		"a 401 with another scheme's invalid_token is returned as it is": {
			valid:      []string{"at-2"},
			challenge:  `Basic realm="api", error="invalid_token"`,
			wantStatus: 401,
			wantAuth:   []string{"Bearer at-1"},
			wantBodies: []string{""},
			wantRT:     []string{},
		},
		"a Bearer challenge after another one is found": {
			valid:      []string{"at-2"},
			challenge:  `Basic realm="x, y", Bearer error=invalid_token, realm="api"`,
			wantStatus: 200,
			wantAuth:   []string{"Bearer at-1", "Bearer at-2"},
			wantBodies: []string{"", ""},
			wantRT:     []string{"rt-1"},
		},
		"a body that cannot be replayed is not retried": {
			valid:      []string{"at-2"},
			body:       func() io.Reader { return io.MultiReader(strings.NewReader("hello")) }, // http.NewRequest sets no GetBody for it
			wantStatus: 401,
			wantAuth:   []string{"Bearer at-1"},
			wantBodies: []string{"hello"},
			wantRT:     []string{},
		},
	} {
		t.Run(name, func(t *testing.T) {
			g := NewWithT(t)
			f := newFakeIssuer(t)
			api, apiURL := newFakeAPI(t, tc.valid...)
			if tc.challenge != "" {
				api.set(func(a *fakeAPI) { a.challenge = tc.challenge })
			}
			src := passwordSource(f, client.Config{Clock: newClock()})
			hc := &http.Client{Transport: client.NewTransport(src, nil)}

			var body io.Reader
			if tc.body != nil {
				body = tc.body()
			}
			req, err := http.NewRequest(http.MethodPost, apiURL, body)
			g.Expect(err).NotTo(HaveOccurred())
			req.Header.Set("X-Caller", "kept")
			resp, err := hc.Do(req)
			g.Expect(err).NotTo(HaveOccurred())
			defer resp.Body.Close()
			g.Expect(resp.StatusCode).To(Equal(tc.wantStatus))
			g.Expect(req.Header).NotTo(HaveKey("Authorization"), "the caller's request is not modified")

			auth, bodies := api.requests()
			g.Expect(auth).To(Equal(tc.wantAuth))
			g.Expect(bodies).To(Equal(tc.wantBodies))
			g.Expect(f.refreshTokensSent()).To(Equal(tc.wantRT))
		})
	}
}

func TestTransportReturnsTheRefreshErrorAfterA401(t *testing.T) {
	g := NewWithT(t)
	f := newFakeIssuer(t)
	_, apiURL := newFakeAPI(t) // refuses everything
	src := passwordSource(f, client.Config{Clock: newClock()})
	_, err := src.Token()
	g.Expect(err).NotTo(HaveOccurred())
	f.set(func(f *fakeIssuer) { f.unavailable = true })

	hc := &http.Client{Transport: client.NewTransport(src, nil)}
	resp, err := hc.Get(apiURL)
	g.Expect(resp).To(BeNil())
	var te *client.TokenError
	g.Expect(errors.As(err, &te)).To(BeTrue())
	g.Expect(te.Code).To(Equal("temporarily_unavailable"))
	g.Expect(err).To(MatchError(ContainSubstring("getting a new access token after 401: refreshing access token: issuer answered 503")))
}

func TestTwentyRequestsRefusedTogetherCauseOneRefresh(t *testing.T) {
	g := NewWithT(t)
	f := newFakeIssuer(t)
	api, apiURL := newFakeAPI(t, "at-2")
	api.set(func(a *fakeAPI) { a.hold, a.holdFor = make(chan struct{}), 20 })
	src := passwordSource(f, client.Config{Clock: newClock()})
	_, err := src.Token()
	g.Expect(err).NotTo(HaveOccurred())

	hc := &http.Client{Transport: client.NewTransport(src, nil)}
	var wg sync.WaitGroup
	status := make([]int, 20)
	for i := range 20 {
		wg.Go(func() {
			resp, err := hc.Get(apiURL)
			if err != nil {
				return
			}
			status[i] = resp.StatusCode
			resp.Body.Close()
		})
	}
	wg.Wait()
	for i := range 20 {
		g.Expect(status[i]).To(Equal(200))
	}
	g.Expect(f.refreshTokensSent()).To(Equal([]string{"rt-1"}))
	auth, _ := api.requests()
	counts := map[string]int{}
	for _, a := range auth {
		counts[a]++
	}
	g.Expect(counts).To(Equal(map[string]int{"Bearer at-1": 20, "Bearer at-2": 20}), "each request: refused once, retried once")
}

// A plain oauth2.TokenSource cannot be invalidated: the 401 comes back.
func TestTransportWithAStaticSource(t *testing.T) {
	g := NewWithT(t)
	api, apiURL := newFakeAPI(t)
	hc := &http.Client{Transport: client.NewTransport(oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "static"}), nil)}
	resp, err := hc.Get(apiURL)
	g.Expect(err).NotTo(HaveOccurred())
	resp.Body.Close()
	g.Expect(resp.StatusCode).To(Equal(401))
	auth, _ := api.requests()
	g.Expect(auth).To(Equal([]string{"Bearer static"}))
}

func TestTransportClosesTheBodyWhenNoTokenCanBeHad(t *testing.T) {
	g := NewWithT(t)
	f := newFakeIssuer(t)
	src := client.PasswordSource(context.Background(), client.Config{IssuerURL: f.URL}, "alice", "wrong")
	body := &closeRecorder{Reader: strings.NewReader("hello")}
	req, err := http.NewRequest(http.MethodPost, "http://api.invalid/", body)
	g.Expect(err).NotTo(HaveOccurred())
	resp, err := client.NewTransport(src, nil).RoundTrip(req)
	g.Expect(resp).To(BeNil())
	g.Expect(err).To(MatchError("getting access token: logging in: issuer answered 400 invalid_grant: invalid username or password"))
	g.Expect(body.closed).To(BeTrue())
}

type closeRecorder struct {
	io.Reader
	closed bool
}

func (c *closeRecorder) Close() error { c.closed = true; return nil }

// A redirect to another host must not carry the token: an API that
// redirects to a CDN or a compromised host would otherwise receive it.
func TestTransportSendsTheTokenOnlyToTheOriginalHost(t *testing.T) {
	g := NewWithT(t)
	var mu sync.Mutex
	seen := map[string]string{} // server -> Authorization it saw
	record := func(name string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			seen[name+" "+r.URL.Path] = r.Header.Get("Authorization")
			mu.Unlock()
			_, _ = io.WriteString(w, "ok")
		}
	}
	other := httptest.NewServer(record("other"))
	defer other.Close()
	mux := http.NewServeMux()
	mux.HandleFunc("/away", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.URL+"/landed", http.StatusFound)
	})
	mux.HandleFunc("/here", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/landed", http.StatusFound)
	})
	mux.HandleFunc("/landed", record("api"))
	api := httptest.NewServer(mux)
	defer api.Close()

	hc := &http.Client{Transport: client.NewTransport(oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "t0ken"}), nil)}
	for _, path := range []string{"/away", "/here"} {
		resp, err := hc.Get(api.URL + path)
		g.Expect(err).NotTo(HaveOccurred())
		_ = resp.Body.Close()
	}
	g.Expect(seen).To(Equal(map[string]string{
		"other /landed": "",
		"api /landed":   "Bearer t0ken",
	}))
}
