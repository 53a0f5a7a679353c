package client_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
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
// can tell: opaque access tokens at-N, refresh tokens rt-N that work once
// and only for the client that logged in, invalid_grant for anything else,
// 503 when unavailable. It authenticates clients as rotor does (RFC 6749
// §2.3.1): HTTP Basic with form-urlencoded id and secret, or client_id and
// client_secret in the form, never both; a client in clients must present
// its secret, any other client_id is public and must present none.
type fakeIssuer struct {
	*httptest.Server

	mu sync.Mutex
	// configuration
	expiresIn       int64
	password        string
	saToken         string            // the subject_token an exchange must present
	exchangeRefresh bool              // whether exchanges hand out a refresh token
	clients         map[string]string // Confidential clients: client_id to secret
	refreshNoScope  bool              // refresh answers leave scope out (RFC 6749 §5.1)
	unavailable     bool              // answer 503 temporarily_unavailable
	gate            chan struct{}
	entered         chan struct{}
	// observations
	hits    map[string]int
	forms   []url.Values
	seen    []seenRequest // every request to /token and /revoke, in order
	session map[string]session
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
		clients:         map[string]string{},
		hits:            map[string]int{},
		session:         map[string]session{},
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

// seenRequest is what a client sent to the fake issuer.
type seenRequest struct {
	Path          string
	Authorization string // the header as sent
	Form          url.Values
}

// session is what a refresh token was issued to.
type session struct{ client, scope string }

// authenticate reads and checks the client's credentials as rotor does,
// answering the error itself when they fail; f.mu is held.
func (f *fakeIssuer) authenticate(w http.ResponseWriter, r *http.Request) (id string, confidential, ok bool) {
	form := r.PostForm
	formID, formSecret := form.Get("client_id"), form.Get("client_secret")
	var secret string
	basic := r.Header.Get("Authorization") != ""
	refuse := func(status int, code, desc string) (string, bool, bool) {
		if status == http.StatusUnauthorized {
			// rotor challenges on every 401; RFC 6749 §5.2 requires it
			// when the client used Basic.
			w.Header().Set("WWW-Authenticate", `Basic realm="rotor", charset="UTF-8"`)
		}
		writeJSON(w, status, map[string]string{"error": code, "error_description": desc})
		return "", false, false
	}
	switch {
	case basic:
		user, pass, isBasic := r.BasicAuth()
		var err1, err2 error
		id, err1 = url.QueryUnescape(user)
		secret, err2 = url.QueryUnescape(pass)
		if !isBasic || err1 != nil || err2 != nil || id == "" {
			return refuse(http.StatusUnauthorized, "invalid_client", "the Authorization header is malformed")
		}
		if formSecret != "" {
			return refuse(http.StatusBadRequest, "invalid_request", "use one client authentication method: HTTP Basic or client_secret, not both")
		}
		if formID != "" && formID != id {
			return refuse(http.StatusBadRequest, "invalid_request", "client_id differs from the client of the Authorization header")
		}
	case formSecret != "":
		if formID == "" {
			return refuse(http.StatusBadRequest, "invalid_request", "client_secret without client_id")
		}
		id, secret = formID, formSecret
	default:
		id = formID
	}
	want, confidential := f.clients[id]
	if secret != want {
		return refuse(http.StatusUnauthorized, "invalid_client", "client authentication failed")
	}
	return id, confidential, true
}

func (f *fakeIssuer) record(path string, r *http.Request) {
	f.seen = append(f.seen, seenRequest{Path: path, Authorization: r.Header.Get("Authorization"), Form: r.PostForm})
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
	f.record("/token", r)
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
	id, confidential, ok := f.authenticate(w, r)
	if !ok {
		return
	}
	invalidGrant := func(desc string) {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_grant", "error_description": desc})
	}
	login := session{client: id, scope: strings.Join(strings.Fields(form.Get("scope")), " ")}
	switch grant {
	case client.GrantPassword:
		if form.Get("username") != "alice" || form.Get("password") != f.password {
			invalidGrant("invalid username or password")
			return
		}
		f.issue(w, login, true, nil)
	case client.GrantRefreshToken:
		rt := form.Get("refresh_token")
		if !f.live[rt] {
			if f.used[rt] {
				f.replays++
			}
			invalidGrant("the refresh token is invalid")
			return
		}
		sess := f.session[rt]
		if sess.client != id {
			invalidGrant("the refresh token was issued to another client")
			return
		}
		delete(f.live, rt)
		f.used[rt] = true
		var extra map[string]any
		if f.refreshNoScope {
			extra = map[string]any{"scope": nil} // deleted below
		}
		f.issue(w, sess, true, extra)
	case client.GrantTokenExchange:
		if form.Get("subject_token_type") != client.TokenTypeJWT || form.Get("subject_token") != f.saToken {
			invalidGrant("the subject token is invalid")
			return
		}
		f.issue(w, login, f.exchangeRefresh, map[string]any{"issued_token_type": "urn:ietf:params:oauth:token-type:access_token"})
	case client.GrantClientCredentials:
		if !confidential {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "unauthorized_client", "error_description": "a Public client cannot use client_credentials"})
			return
		}
		f.issue(w, login, false, nil) // RFC 6749 §4.4.3: no refresh token
	default:
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "unsupported_grant_type"})
	}
}

// issue answers with at-N and, when withRefresh, rt-N bound to sess, with
// sess's scope when it has one; an extra key with a nil value is left out.
// f.mu is held.
func (f *fakeIssuer) issue(w http.ResponseWriter, sess session, withRefresh bool, extra map[string]any) {
	f.seq++
	body := map[string]any{"access_token": fmt.Sprintf("at-%d", f.seq), "token_type": "Bearer", "expires_in": f.expiresIn}
	if withRefresh {
		rt := fmt.Sprintf("rt-%d", f.seq)
		f.live[rt] = true
		f.session[rt] = sess
		body["refresh_token"] = rt
	}
	if sess.scope != "" {
		body["scope"] = sess.scope
	}
	for k, v := range extra {
		if v == nil {
			delete(body, k)
		} else {
			body[k] = v
		}
	}
	writeJSON(w, http.StatusOK, body)
}

func (f *fakeIssuer) revoke(w http.ResponseWriter, r *http.Request) {
	_ = r.ParseForm()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("/revoke", r)
	if _, _, ok := f.authenticate(w, r); !ok {
		return
	}
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

// requests lists every request to /token and /revoke, in order.
func (f *fakeIssuer) requests() []seenRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]seenRequest(nil), f.seen...)
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
