package client_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/onsi/gomega"
	clocktesting "k8s.io/utils/clock/testing"

	"rotor.dev/rotor/pkg/client"
)

// TestMain gives Eventually 30s (not 1s) before it fails: CI machines are
// shared and noisy.
func TestMain(m *testing.M) {
	gomega.SetDefaultEventuallyTimeout(30 * time.Second)
	os.Exit(m.Run())
}

func newClock() *clocktesting.FakeClock {
	return clocktesting.NewFakeClock(time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC))
}

// fakeIssuer is a token endpoint that behaves like rotor where the Source
// can tell: opaque access tokens at-N, refresh tokens rt-N that work once,
// invalid_grant for anything else, 503 when unavailable.
type fakeIssuer struct {
	*httptest.Server

	mu sync.Mutex
	// configuration
	expiresIn       int64
	password        string
	saToken         string // the subject_token an exchange must present
	exchangeRefresh bool   // whether exchanges hand out a refresh token
	unavailable     bool   // answer 503 temporarily_unavailable
	gate            chan struct{}
	entered         chan struct{}
	// observations
	hits    map[string]int
	forms   []url.Values
	live    map[string]bool
	used    map[string]bool
	replays int
	revoked []string
	seq     int
}

func newFakeIssuer(t *testing.T) *fakeIssuer {
	f := &fakeIssuer{
		expiresIn:       1200,
		password:        "s3cret",
		saToken:         "sa-token-1",
		exchangeRefresh: true,
		hits:            map[string]int{},
		live:            map[string]bool{},
		used:            map[string]bool{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /token", f.token)
	mux.HandleFunc("POST /revoke", f.revoke)
	f.Server = httptest.NewServer(mux)
	t.Cleanup(f.Close)
	return f
}

func (f *fakeIssuer) token(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request"})
		return
	}
	form := r.PostForm
	grant := form.Get("grant_type")
	f.mu.Lock()
	f.hits[grant]++
	f.forms = append(f.forms, form)
	gate, entered := f.gate, f.entered
	f.mu.Unlock()
	if gate != nil {
		select {
		case entered <- struct{}{}:
		default: // a full channel must not hang a broken Source's test
		}
		<-gate
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	if f.unavailable {
		w.Header().Set("Retry-After", "1") // as rotor does
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "temporarily_unavailable", "error_description": "the issuer is temporarily unavailable; retry later"})
		return
	}
	invalidGrant := func(desc string) {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_grant", "error_description": desc})
	}
	switch grant {
	case client.GrantPassword:
		if form.Get("username") != "alice" || form.Get("password") != f.password {
			invalidGrant("invalid username or password")
			return
		}
		f.issue(w, true, nil)
	case client.GrantRefreshToken:
		rt := form.Get("refresh_token")
		if !f.live[rt] {
			if f.used[rt] {
				f.replays++
			}
			invalidGrant("the refresh token is invalid")
			return
		}
		delete(f.live, rt)
		f.used[rt] = true
		f.issue(w, true, nil)
	case client.GrantTokenExchange:
		if form.Get("subject_token_type") != client.TokenTypeJWT || form.Get("subject_token") != f.saToken {
			invalidGrant("the subject token is invalid")
			return
		}
		f.issue(w, f.exchangeRefresh, map[string]any{"issued_token_type": "urn:ietf:params:oauth:token-type:access_token"})
	default:
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "unsupported_grant_type"})
	}
}

// issue answers with at-N and, when withRefresh, rt-N; f.mu is held.
func (f *fakeIssuer) issue(w http.ResponseWriter, withRefresh bool, extra map[string]any) {
	f.seq++
	body := map[string]any{"access_token": fmt.Sprintf("at-%d", f.seq), "token_type": "Bearer", "expires_in": f.expiresIn}
	if withRefresh {
		rt := fmt.Sprintf("rt-%d", f.seq)
		f.live[rt] = true
		body["refresh_token"] = rt
	}
	for k, v := range extra {
		body[k] = v
	}
	writeJSON(w, http.StatusOK, body)
}

func (f *fakeIssuer) revoke(w http.ResponseWriter, r *http.Request) {
	_ = r.ParseForm()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.revoked = append(f.revoked, r.PostForm.Get("token"))
	delete(f.live, r.PostForm.Get("token"))
	w.WriteHeader(http.StatusOK)
}

func (f *fakeIssuer) hitsOf(grant string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.hits[grant]
}

func (f *fakeIssuer) totalHits() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.forms)
}

// lastForm is the body of the latest /token request.
func (f *fakeIssuer) lastForm() url.Values {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.forms[len(f.forms)-1]
}

// refreshTokensSent lists the refresh_token of every refresh, in order.
func (f *fakeIssuer) refreshTokensSent() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := []string{}
	for _, form := range f.forms {
		if form.Get("grant_type") == client.GrantRefreshToken {
			out = append(out, form.Get("refresh_token"))
		}
	}
	return out
}

func (f *fakeIssuer) set(fn func(f *fakeIssuer)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (f *fakeIssuer) replayCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.replays
}

func (f *fakeIssuer) revokedTokens() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.revoked...)
}

// newServer is an httptest server closed at the end of the test.
func newServer(t *testing.T, h http.HandlerFunc) *httptest.Server {
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}
