package issuer_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/rest"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/yaml"

	identityv1alpha1 "rotor.dev/rotor/api/v1alpha1"
	"rotor.dev/rotor/pkg/accounts"
	"rotor.dev/rotor/pkg/dev/testenv"
	"rotor.dev/rotor/pkg/server"
)

var env *testenv.Env

func TestMain(m *testing.M) { testenv.Main(m, &env) }

// syncBuffer collects a server's logs for the secret scan.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// requestCounter counts the API requests a replica makes for RefreshTokens,
// other than the eviction watch.
type requestCounter struct {
	reads, writes atomic.Int64
}

func (c *requestCounter) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripFunc(func(r *http.Request) (*http.Response, error) {
		if strings.Contains(r.URL.Path, "/refreshtokens") && r.URL.Query().Get("watch") != "true" {
			switch r.Method {
			case http.MethodGet:
				c.reads.Add(1)
			default:
				c.writes.Add(1)
			}
		}
		return rt.RoundTrip(r)
	})
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// replica is one running rotor (manager and issuer) in a test namespace.
type replica struct {
	URL      string
	Clock    *clocktesting.FakeClock
	Logs     *syncBuffer
	Requests *requestCounter
	Server   *server.Server
}

type replicaOption func(*server.Options)

// startReplica runs rotor against the test control plane until the test ends.
func startReplica(t *testing.T, ns string, clock *clocktesting.FakeClock, opts ...replicaOption) *replica {
	t.Helper()
	return startReplicaWith(t, env.Config, ns, clock, opts...)
}

// startReplicaWith runs rotor with its own rest.Config (a proxy, say).
func startReplicaWith(t *testing.T, apiConfig *rest.Config, ns string, clock *clocktesting.FakeClock, opts ...replicaOption) *replica {
	t.Helper()
	o := server.DefaultOptions()
	o.Namespace = ns
	o.ListenAddress = "127.0.0.1:0"
	o.MetricsAddress, o.ProbeAddress = "0", "0"
	o.InsecureHTTP = true
	o.IssuerURL = "http://issuer.test" // replaced below once the port is known
	o.Clock = clock
	o.LeaderElect = false
	for _, opt := range opts {
		opt(&o)
	}
	logs := &syncBuffer{}
	log := zap.New(zap.WriteTo(logs), zap.UseDevMode(true), zap.Level(zapcore.Level(-10)))
	counter := &requestCounter{}
	cfg := rest.CopyConfig(apiConfig)
	cfg.WrapTransport = counter.wrap

	// The issuer URL must be what clients dial, so pick the port first.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	o.ListenAddress = addr
	o.IssuerURL = "http://" + addr
	srv, err := server.New(cfg, o, log)
	if err != nil {
		t.Fatalf("creating server: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Start(ctx); err != nil {
			t.Errorf("server stopped: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	r := &replica{URL: o.IssuerURL, Clock: clock, Logs: logs, Requests: counter, Server: srv}
	deadline := time.Now().Add(30 * time.Second)
	for !r.ready() {
		if time.Now().After(deadline) {
			t.Fatalf("replica not ready after 30s; logs:\n%s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return r
}

func (r *replica) ready() bool {
	_, ok := r.Server.Keys.Active()
	return ok && r.Server.Accounts.ReadyCheck(nil) == nil && r.Server.Evictor.Synced()
}

// createAccount applies the manifest `rotor account create` prints.
func createAccount(t *testing.T, ns, username, password string, groups ...string) {
	t.Helper()
	manifest, err := accounts.Manifest(username, ns, groups, []byte(password))
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

// tokenReply is a /token answer, success or error.
type tokenReply struct {
	Status       int
	Header       http.Header
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in"`
	RefreshToken string `json:"refresh_token"`
	Error        string `json:"error"`
	Description  string `json:"error_description"`
}

func post(t testing.TB, endpoint string, form url.Values) *tokenReply {
	t.Helper()
	resp, err := http.PostForm(endpoint, form)
	if err != nil {
		t.Fatalf("POST %s: %v", endpoint, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	reply := &tokenReply{Status: resp.StatusCode, Header: resp.Header}
	if len(body) > 0 {
		if err := json.Unmarshal(body, reply); err != nil {
			t.Fatalf("POST %s: %d %q is not JSON: %v", endpoint, resp.StatusCode, body, err)
		}
	}
	return reply
}

func (r *replica) login(t testing.TB, username, password string) *tokenReply {
	t.Helper()
	return post(t, r.URL+"/token", url.Values{"grant_type": {"password"}, "username": {username}, "password": {password}})
}

func (r *replica) refresh(t testing.TB, refreshToken string) *tokenReply {
	t.Helper()
	return post(t, r.URL+"/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {refreshToken}})
}

func (r *replica) userinfo(t testing.TB, accessToken string) (int, http.Header, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, r.URL+"/userinfo", nil)
	req.Header.Set("Authorization", "Bearer "+accessToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	claims := map[string]any{}
	_ = json.NewDecoder(resp.Body).Decode(&claims)
	return resp.StatusCode, resp.Header, claims
}

func sessionsOf(t testing.TB, ns string) []identityv1alpha1.RefreshToken {
	t.Helper()
	list := &identityv1alpha1.RefreshTokenList{}
	if err := env.Client.List(context.Background(), list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	return list.Items
}

func sessionName(refreshToken string) string {
	name, _, _ := strings.Cut(refreshToken, ".")
	return name
}

func keyOf(ns, name string) client.ObjectKey { return client.ObjectKey{Namespace: ns, Name: name} }

func jsonDecode(r io.Reader, v any) error { return json.NewDecoder(r).Decode(v) }
