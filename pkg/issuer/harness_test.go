package issuer_test

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/yaml"

	identityv1alpha1 "rotor.dev/rotor/api/v1alpha1"
	"rotor.dev/rotor/pkg/accounts"
	"rotor.dev/rotor/pkg/dev/testenv"
	"rotor.dev/rotor/pkg/oauthclients"
	"rotor.dev/rotor/pkg/server"
)

var env *testenv.Env

func TestMain(m *testing.M) { testenv.Main(m, &env) }

// sharedIssuerURL is the iss of replicas started with sharedIssuer: replicas
// behind one load balancer share it, so a token minted by one verifies on
// another.
const sharedIssuerURL = "http://rotor.faults.test"

// replica is one rotor (manager and issuer) in a test namespace, the only way
// these tests run rotor. startReplica builds one, starts it and waits until it
// is ready; newReplica only builds it, for a test that starts it itself. The
// test may stop or crash it; it stops when the test ends in any case.
type replica struct {
	// URL is where the issuer listens; it is also the iss of its tokens
	// unless the replica was started with sharedIssuer.
	URL string
	// ProbeURL serves /healthz and /readyz.
	ProbeURL string
	Clock    *clocktesting.FakeClock
	// Logs are everything the replica logged, debug included: the secret
	// scans read them.
	Logs *testenv.LogBuffer
	// Requests counts the replica's API requests for RefreshTokens.
	Requests *requestCounter
	Server   *server.Server

	t       *testing.T
	cut     atomic.Bool            // every API request fails (crash)
	hook    atomic.Pointer[func()] // afterSessionRead
	started atomic.Bool
	crashed atomic.Bool
	ctx     context.Context
	cancel  context.CancelFunc
	done    chan struct{}
	once    sync.Once
}

// replicaOptions are rotor's own options (server.Options, embedded) and
// the harness's.
type replicaOptions struct {
	server.Options
	// apiConfig is how the replica reaches the API server (env.Config
	// unless throughAPI).
	apiConfig *rest.Config
	// issuerURL is the replica's iss; "" means its own URL.
	issuerURL string
}

// replicaOption changes a replica's options before it is built.
type replicaOption func(*replicaOptions)

// throughAPI makes the replica reach the API server with its own
// rest.Config: a proxy the test can cut, say.
func throughAPI(cfg *rest.Config) replicaOption {
	return func(o *replicaOptions) { o.apiConfig = cfg }
}

// sharedIssuer gives the replica the iss every replica started with it has.
func sharedIssuer(o *replicaOptions) { o.issuerURL = sharedIssuerURL }

// fastLeaderElection runs leader election with a 3s lease.
func fastLeaderElection(o *replicaOptions) {
	o.LeaderElect = true
	o.LeaseDuration, o.RenewDeadline, o.RetryPeriod = 3*time.Second, 2*time.Second, 500*time.Millisecond
}

// fastKeys lets a rotation happen a few fake seconds after it is asked for.
func fastKeys(o *replicaOptions) {
	o.JWKSMaxAge, o.KeyPrepublish, o.KeyRotationPeriod = time.Second, 2*time.Second, time.Hour
}

// startReplica runs rotor against the test control plane until the test
// ends, and returns once it is ready.
func startReplica(t *testing.T, ns string, clock *clocktesting.FakeClock, opts ...replicaOption) *replica {
	t.Helper()
	r := newReplica(t, ns, clock, opts...)
	r.start()
	r.waitReady()
	return r
}

// newReplica builds a replica (server.New) without starting it.
func newReplica(t *testing.T, ns string, clock *clocktesting.FakeClock, opts ...replicaOption) *replica {
	t.Helper()
	o := replicaOptions{Options: server.DefaultOptions(), apiConfig: env.Config}
	o.Namespace = ns
	o.MetricsAddress = "0"
	o.InsecureHTTP = true
	o.Clock = clock
	o.LeaderElect = false
	// Requests without client_id come from the namespace's public "rotor"
	// client, as they do with the chart's default values.
	o.DefaultClientID = defaultClient
	createClient(t, ns, defaultClient, publicSpec("rotor"))
	for _, opt := range opts {
		opt(&o)
	}
	r := &replica{
		Clock:    clock,
		Logs:     &testenv.LogBuffer{},
		Requests: &requestCounter{},
		t:        t,
		done:     make(chan struct{}),
	}
	log := zap.New(zap.WriteTo(r.Logs), zap.UseDevMode(true), zap.Level(zapcore.Level(-10)))
	cfg := rest.CopyConfig(o.apiConfig)
	cfg.Wrap(r.transport)
	// The issuer URL must be what clients dial, so the port is picked first;
	// another process (tests run in parallel) may take it before rotor
	// listens, and then another is picked.
	issuerURL := o.issuerURL
	for attempt := 1; ; attempt++ {
		o.ListenAddress, o.ProbeAddress = freeAddr(t), freeAddr(t)
		o.IssuerURL = cmp.Or(issuerURL, "http://"+o.ListenAddress)
		srv, err := server.New(cfg, o.Options, log)
		if errors.Is(err, syscall.EADDRINUSE) && attempt < 5 {
			continue
		}
		if err != nil {
			t.Fatalf("creating server: %v", err)
		}
		r.Server = srv
		break
	}
	r.URL, r.ProbeURL = "http://"+o.ListenAddress, "http://"+o.ProbeAddress
	r.ctx, r.cancel = context.WithCancel(context.Background())
	t.Cleanup(r.stop)
	return r
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

// requestCounter counts the API requests a replica makes for RefreshTokens,
// other than the eviction watch.
type requestCounter struct {
	reads, writes atomic.Int64
	// sessionReads are the reads of one RefreshToken by name (reads
	// counts them too): what a cold session cache costs.
	sessionReads atomic.Int64
	// all counts every API request of any kind but watches.
	all atomic.Int64
}

// transport counts the replica's requests, fails them all once the replica
// is cut off, and runs the afterSessionRead hook.
func (r *replica) transport(rt http.RoundTripper) http.RoundTripper {
	return roundTripFunc(func(req *http.Request) (*http.Response, error) {
		if r.cut.Load() {
			return nil, errors.New("test: partitioned from the API server")
		}
		if req.URL.Query().Get("watch") != "true" {
			r.Requests.all.Add(1)
		}
		if !strings.Contains(req.URL.Path, "/refreshtokens") || req.URL.Query().Get("watch") == "true" {
			return rt.RoundTrip(req)
		}
		if req.Method != http.MethodGet {
			r.Requests.writes.Add(1)
			return rt.RoundTrip(req)
		}
		r.Requests.reads.Add(1)
		if _, name, _ := strings.Cut(req.URL.Path, "/refreshtokens/"); name == "" {
			return rt.RoundTrip(req) // a list
		}
		r.Requests.sessionReads.Add(1)
		resp, err := rt.RoundTrip(req)
		if hook := r.hook.Swap(nil); hook != nil {
			(*hook)()
		}
		return resp, err
	})
}

// settled waits until the replica has sent no API request for half a
// second (some of its start-up writes, such as events, are sent in the
// background) and returns how many it has sent.
func (r *replica) settled(t *testing.T) int64 {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	n := r.Requests.all.Load()
	for {
		time.Sleep(500 * time.Millisecond)
		m := r.Requests.all.Load()
		if m == n {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("the replica still sends API requests after 10s: %d in the last half second", m-n)
		}
		n = m
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// start runs the replica until it is stopped or crashed, or the test ends.
func (r *replica) start() {
	r.started.Store(true)
	go func() {
		defer close(r.done)
		if err := r.Server.Start(r.ctx); err != nil && !r.crashed.Load() {
			r.t.Errorf("server stopped: %v", err)
		}
	}()
}

func (r *replica) ready() bool {
	_, ok := r.Server.Keys.Active()
	if !ok || r.Server.Accounts.ReadyCheck(nil) != nil || !r.Server.Evictor.Synced() {
		return false
	}
	c, found, err := r.Server.Clients.Lookup(context.Background(), defaultClient)
	return err == nil && found && c.Ready
}

// defaultClient is the client_id of requests that send none.
const defaultClient = "rotor"

// publicSpec is a Public client that may log in, exchange and refresh, for
// audiences aud (the first is the default).
func publicSpec(aud ...string) identityv1alpha1.OAuthClientSpec {
	return identityv1alpha1.OAuthClientSpec{
		Type: identityv1alpha1.ClientTypePublic,
		GrantTypes: []identityv1alpha1.GrantType{
			identityv1alpha1.GrantPassword, identityv1alpha1.GrantRefreshToken, identityv1alpha1.GrantTokenExchange,
		},
		Audiences: aud,
	}
}

// createClient creates an OAuthClient unless one of that name exists; a
// replica's reconciler (the leader's) makes it Ready.
func createClient(t testing.TB, ns, name string, spec identityv1alpha1.OAuthClientSpec) {
	t.Helper()
	c := &identityv1alpha1.OAuthClient{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: spec}
	if err := env.Client.Create(context.Background(), c); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("creating OAuthClient %s: %v", name, err)
	}
}

// createConfidentialClient applies what `rotor client create` prints for a
// Confidential client and returns its secret.
func createConfidentialClient(t testing.TB, ns, name string, spec identityv1alpha1.OAuthClientSpec) string {
	t.Helper()
	spec.Type = identityv1alpha1.ClientTypeConfidential
	m, err := oauthclients.Manifests(name, ns, spec)
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range [][]byte{m.Client, m.Secret} {
		obj := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(doc, &obj.Object); err != nil {
			t.Fatal(err)
		}
		if err := env.Client.Create(context.Background(), obj); err != nil {
			t.Fatalf("creating %s %s: %v", obj.GetKind(), obj.GetName(), err)
		}
	}
	return m.PlaintextSecret
}

// waitClientReady waits until the replica may serve client id.
func (r *replica) waitClientReady(id string) {
	r.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, found, err := r.Server.Clients.Lookup(context.Background(), id)
		if err == nil && found && c.Ready {
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("client %s not ready after 30s (found %v, err %v)", id, found, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (r *replica) waitReady() {
	r.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !r.ready() {
		if time.Now().After(deadline) {
			r.t.Fatalf("replica not ready after 30s; logs:\n%s", r.Logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop cancels the replica's context and waits for Start to return.
func (r *replica) stop() {
	r.once.Do(func() {
		r.cancel()
		if !r.started.Load() {
			return
		}
		select {
		case <-r.done:
		case <-time.After(30 * time.Second):
			r.t.Errorf("replica did not stop within 30s")
		}
	})
}

// crash cuts the replica off from the API server, then stops it: it cannot
// release its Lease, as a replica whose node died would not.
func (r *replica) crash() {
	r.crashed.Store(true)
	r.cut.Store(true)
	r.stop()
}

// afterSessionRead runs f once, right after this replica's next read of
// a RefreshToken by name has been answered and before the answer is used.
// The channel is closed once f has returned.
func (r *replica) afterSessionRead(f func()) <-chan struct{} {
	ran := make(chan struct{})
	hook := func() { defer close(ran); f() }
	r.hook.Store(&hook)
	return ran
}

func (r *replica) elected() bool {
	select {
	case <-r.Server.Manager.Elected():
		return true
	default:
		return false
	}
}

// readyz is the status of GET /readyz, 0 when the probe cannot be reached.
func (r *replica) readyz() int {
	resp, err := http.Get(r.ProbeURL + "/readyz")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

// activeKID is the kid of the key the replica signs with, "" for none.
func (r *replica) activeKID() string {
	k, ok := r.Server.Keys.Active()
	if !ok {
		return ""
	}
	return k.KID
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
	Scope        string `json:"scope"`
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
	return post(t, r.URL+"/token", url.Values{
		"grant_type": {"password"}, "username": {username}, "password": {password},
	})
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
