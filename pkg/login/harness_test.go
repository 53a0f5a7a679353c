package login_test

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clientauthv1 "k8s.io/client-go/pkg/apis/clientauthentication/v1"
	clocktesting "k8s.io/utils/clock/testing"
	crclient "sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/yaml"

	identityv1alpha1 "rotor.dev/rotor/api/v1alpha1"
	"rotor.dev/rotor/pkg/accounts"
	"rotor.dev/rotor/pkg/client"
	"rotor.dev/rotor/pkg/dev/testenv"
	"rotor.dev/rotor/pkg/login"
	"rotor.dev/rotor/pkg/server"
)

var env *testenv.Env

func TestMain(m *testing.M) { testenv.Main(m, &env) }

const (
	username = "alice"
	password = "correct horse battery"
	audience = "kubernetes"
)

// rotor is one rotor (manager and issuer, in-process) in the test's
// namespace, behind an HTTPS proxy that counts token requests. The proxy's
// URL is rotor's issuer URL, so the plugin under test reaches rotor as a
// kubectl would: over TLS with a private CA (--ca-file).
type rotor struct {
	URL    string // the issuer URL (the proxy)
	CAFile string // the proxy's certificate, PEM
	NS     string
	Clock  *clocktesting.FakeClock
	Server *server.Server
	Logs   *testenv.LogBuffer
	HTTP   *http.Client // trusts the proxy

	mu     sync.Mutex
	grants map[string]int // token requests by grant_type
	revoke int            // revocation requests
}

// startRotor runs rotor until the test ends, with an account alice and the
// Public client "kubectl" (password and refresh_token, audience kubernetes)
// Ready. Requests must name their client: there is no default client.
func startRotor(t *testing.T, opts ...func(*server.Options, *identityv1alpha1.OAuthClientSpec)) *rotor {
	t.Helper()
	r := &rotor{
		NS:     env.Namespace(t),
		Clock:  clocktesting.NewFakeClock(time.Now().Truncate(time.Second)),
		Logs:   &testenv.LogBuffer{},
		grants: map[string]int{},
	}
	// rotor listens on a port of its own choosing; the proxy learns it once
	// rotor has opened it, before any request.
	var upstream *httputil.ReverseProxy
	proxy := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(req.Body, 1<<20))
		req.Body = io.NopCloser(bytes.NewReader(body))
		switch req.URL.Path {
		case "/token":
			form, _ := url.ParseQuery(string(body))
			r.mu.Lock()
			r.grants[form.Get("grant_type")]++
			r.mu.Unlock()
		case "/revoke":
			r.mu.Lock()
			r.revoke++
			r.mu.Unlock()
		}
		upstream.ServeHTTP(w, req)
	}))
	proxy.StartTLS()
	t.Cleanup(proxy.Close)
	r.URL, r.HTTP = proxy.URL, proxy.Client()
	r.CAFile = filepath.Join(t.TempDir(), "ca.crt")
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: proxy.Certificate().Raw})
	if err := os.WriteFile(r.CAFile, caPEM, 0o600); err != nil {
		t.Fatal(err)
	}

	o := server.DefaultOptions()
	o.Namespace = r.NS
	o.IssuerURL = r.URL
	o.ListenAddress, o.ProbeAddress, o.MetricsAddress = "127.0.0.1:0", freeAddr(t), "0"
	o.InsecureHTTP = true // TLS ends at the proxy
	o.LeaderElect = false
	o.Clock = r.Clock
	o.DefaultClientID = "" // client_id is required
	spec := identityv1alpha1.OAuthClientSpec{
		Type:       identityv1alpha1.ClientTypePublic,
		GrantTypes: []identityv1alpha1.GrantType{identityv1alpha1.GrantPassword, identityv1alpha1.GrantRefreshToken},
		Audiences:  []string{audience},
	}
	for _, opt := range opts {
		opt(&o, &spec)
	}
	log := zap.New(zap.WriteTo(r.Logs), zap.UseDevMode(true), zap.Level(zapcore.Level(-10)))
	srv, err := server.New(env.Config, o, log)
	if err != nil {
		t.Fatalf("creating server: %v", err)
	}
	upstream = httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: srv.Addr().String()})
	r.Server = srv
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Start(ctx); err != nil {
			t.Errorf("server stopped: %v", err)
		}
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Errorf("rotor did not stop within 30s")
		}
	})

	createAccount(t, r.NS, username, password)
	oac := &identityv1alpha1.OAuthClient{ObjectMeta: metav1.ObjectMeta{Namespace: r.NS, Name: login.DefaultClientID}, Spec: spec}
	if err := env.Client.Create(context.Background(), oac); err != nil {
		t.Fatalf("creating OAuthClient: %v", err)
	}
	r.waitReady(t)
	return r
}

// waitReady waits until rotor has a signing key and its accounts, and its
// reconciler has found the kubectl client Ready, which its issuer sees.
func (r *rotor) waitReady(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, keyOK := r.Server.Keys.Active()
		oac := &identityv1alpha1.OAuthClient{}
		err := env.Client.Get(context.Background(), crclient.ObjectKey{Namespace: r.NS, Name: login.DefaultClientID}, oac)
		ready := err == nil && apimeta.IsStatusConditionTrue(oac.Status.Conditions, identityv1alpha1.ConditionReady)
		c, found, lerr := r.Server.Clients.Lookup(context.Background(), login.DefaultClientID)
		if keyOK && r.Server.Accounts.ReadyCheck(nil) == nil && ready && lerr == nil && found && c.Ready {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("rotor not ready after 30s (key %v, client Ready %v, err %v); logs:\n%s", keyOK, ready, err, r.Logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// count is the number of token requests with grant_type grant ("" for all).
func (r *rotor) count(grant string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if grant != "" {
		return r.grants[grant]
	}
	n := 0
	for _, c := range r.grants {
		n += c
	}
	return n
}

func (r *rotor) revocations() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.revoke
}

// verify checks token as an API server trusting rotor for audience
// kubernetes would, at rotor's (fake) time.
func (r *rotor) verify(t *testing.T, token string) *client.Claims {
	t.Helper()
	v, err := client.NewVerifier(context.Background(), r.URL, audience, client.WithHTTPClient(r.HTTP), client.WithClock(r.Clock))
	if err != nil {
		t.Fatalf("verifier: %v", err)
	}
	claims, err := v.Verify(context.Background(), token)
	if err != nil {
		t.Fatalf("token does not verify: %v", err)
	}
	return claims
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// createAccount applies the manifest `rotor account create` prints.
func createAccount(t *testing.T, ns, name, pw string) {
	t.Helper()
	manifest, err := accounts.Manifest(name, ns, nil, []byte(pw))
	if err != nil {
		t.Fatal(err)
	}
	secret := &corev1.Secret{}
	if err := yaml.UnmarshalStrict(manifest, secret); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Create(context.Background(), secret); err != nil {
		t.Fatal(err)
	}
}

// user is one person's machine: a cache directory and the options of the
// kubeconfig's exec entry. Every run it makes is a fresh process (its own
// streams and its own open of the lock file). It records what each run
// wrote outside stdout, for the secret scan at the end of the test.
type user struct {
	t    *testing.T
	r    *rotor
	O    login.Options
	Dir  string // the cache directory
	Exec string // KUBERNETES_EXEC_INFO

	mu      sync.Mutex
	stderrs []string
	secrets []string
}

func newUser(t *testing.T, r *rotor) *user {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "cache", "rotor") // created by the plugin
	u := &user{t: t, r: r, Dir: dir, O: login.Options{
		IssuerURL: r.URL, Username: username, CAFile: r.CAFile, CacheDir: dir,
	}}
	u.secrets = append(u.secrets, password)
	t.Cleanup(u.scan)
	return u
}

// passwordFile writes the password as a person would, newline included.
func (u *user) passwordFile() string {
	u.t.Helper()
	p := filepath.Join(u.t.TempDir(), "password")
	if err := os.WriteFile(p, []byte(password+"\n"), 0o600); err != nil {
		u.t.Fatal(err)
	}
	return p
}

// result is one run of the plugin.
type result struct {
	Err    error
	Stdout string
	Stderr string
	Cred   *clientauthv1.ExecCredential // when stdout held one
}

// run runs `rotor login` with o as one kubectl process would.
func (u *user) run(o login.Options, prompt func(string) (string, error)) result {
	var stdout, stderr bytes.Buffer
	p := login.Process{
		Stdin: strings.NewReader(""), Stdout: &stdout, Stderr: &stderr,
		Getenv: func(k string) string {
			if k == login.ExecInfoEnv {
				return u.Exec
			}
			return "" // no HOME or XDG_CACHE_HOME: --cache-dir must do
		},
		Prompt: prompt,
		Now:    u.r.Clock.Now,
	}
	res := result{Err: login.Run(context.Background(), o, p), Stdout: stdout.String(), Stderr: stderr.String()}
	u.record(res.Stderr, res.Err)
	if res.Stdout != "" {
		dec := json.NewDecoder(strings.NewReader(res.Stdout))
		dec.DisallowUnknownFields()
		res.Cred = &clientauthv1.ExecCredential{}
		// Errorf, not Fatalf: runs may be on goroutines of their own.
		if err := dec.Decode(res.Cred); err != nil {
			u.t.Errorf("stdout is not an ExecCredential: %v", err)
			res.Cred = nil
		} else if rest, _ := io.ReadAll(dec.Buffered()); strings.TrimSpace(string(rest)) != "" || strings.Count(res.Stdout, "\n") != 1 {
			u.t.Errorf("stdout holds more than one ExecCredential line: %q", res.Stdout)
		}
		if res.Cred != nil && res.Cred.Status != nil {
			u.addSecret(res.Cred.Status.Token)
		}
	}
	if e := u.entry(); e != nil {
		u.addSecret(e.RefreshToken)
		u.addSecret(e.AccessToken)
	}
	return res
}

// must runs and fails the test unless a credential was printed.
func (u *user) must(o login.Options) *clientauthv1.ExecCredential {
	u.t.Helper()
	res := u.run(o, nil)
	if res.Err != nil || res.Cred == nil {
		u.t.Fatalf("rotor login: %v (stderr %q)", res.Err, res.Stderr)
	}
	return res.Cred
}

func (u *user) record(stderr string, err error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.stderrs = append(u.stderrs, stderr)
	if err != nil {
		u.stderrs = append(u.stderrs, err.Error())
	}
}

func (u *user) addSecret(s string) {
	if s == "" {
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	u.secrets = append(u.secrets, s)
	if _, secret, ok := strings.Cut(s, "."); ok && !strings.HasPrefix(s, "eyJ") {
		u.secrets = append(u.secrets, secret) // a refresh token's secret part
	}
}

// scan fails the test if any message for a person (stderr, errors) held a
// password or a token.
func (u *user) scan() {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, out := range u.stderrs {
		for _, s := range u.secrets {
			if strings.Contains(out, s) {
				u.t.Errorf("a message holds a secret: %q", out)
			}
		}
		if strings.Contains(out, "eyJ") {
			u.t.Errorf("a message holds what looks like a JWT: %q", out)
		}
	}
}

// cacheEntry is the part of a cache file the tests read.
type cacheEntry struct {
	RefreshToken string    `json:"refreshToken"`
	AccessToken  string    `json:"accessToken"`
	Expiry       time.Time `json:"expiry"`
}

// files are the cache directory's session files (.json).
func (u *user) files() []string {
	m, _ := filepath.Glob(filepath.Join(u.Dir, "*.json"))
	return m
}

// entry is the one cached session, nil when there is none.
func (u *user) entry() *cacheEntry {
	files := u.files()
	if len(files) == 0 {
		return nil
	}
	if len(files) > 1 {
		u.t.Errorf("%d session files, want 1: %v", len(files), files)
	}
	b, err := os.ReadFile(files[0])
	if err != nil {
		u.t.Errorf("reading the cache file: %v", err)
		return nil
	}
	e := &cacheEntry{}
	if err := json.Unmarshal(b, e); err != nil {
		u.t.Errorf("cache file: %v", err)
		return nil
	}
	return e
}
