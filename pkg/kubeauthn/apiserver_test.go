package kubeauthn_test

// These tests run a real kube-apiserver started with an authentication
// config trusting a real rotor over HTTPS, and drive the real kubectl
// through `rotor login` (the rotor binary, built once per run).

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	. "github.com/onsi/gomega"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	clientauthv1 "k8s.io/client-go/pkg/apis/clientauthentication/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/yaml"

	identityv1alpha1 "rotor.dev/rotor/api/v1alpha1"
	"rotor.dev/rotor/pkg/accounts"
	"rotor.dev/rotor/pkg/dev/controlplane"
	"rotor.dev/rotor/pkg/dev/devcert"
	"rotor.dev/rotor/pkg/dev/testenv"
	"rotor.dev/rotor/pkg/keys"
	"rotor.dev/rotor/pkg/kubeauthn"
	"rotor.dev/rotor/pkg/server"
)

var (
	env *testenv.Env
	// issuerURL is where the package's rotor listens, and what the API
	// server trusts; tlsFiles are its certificates.
	issuerURL string
	tlsFiles  devcert.Files
	// authnConfig is the file the API server was started with.
	authnConfig []byte
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "rotor-kubeauthn-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if tlsFiles, err = devcert.Generate(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	issuerURL = "https://" + ln.Addr().String()
	_ = ln.Close()
	ca, err := os.ReadFile(tlsFiles.CA)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	cfg, err := kubeauthn.Config(kubeauthn.Options{
		IssuerURL: issuerURL, CAPEM: ca, Audiences: []string{kubeauthn.DefaultAudience}, Prefix: kubeauthn.DefaultPrefix,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if authnConfig, err = kubeauthn.YAML(cfg); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	testenv.MainWith(m, &env, controlplane.Options{AuthenticationConfig: authnConfig})
}

// accessTTL is the kubectl client's access-token lifetime: short, so that
// the tests see tokens expire.
const accessTTL = 10 * time.Second

// cluster is the package's one rotor (the API server trusts one issuer URL
// and caches its keys), started by the first test that needs it.
type cluster struct {
	ns       string
	rotorBin string
	srv      *server.Server
	// trustDelay is how long after rotor started the API server first
	// accepted one of its tokens.
	trustDelay time.Duration
}

var (
	shared     *cluster
	sharedErr  error
	sharedOnce sync.Once
)

// passwords of the accounts the tests use; groups as created.
var users = map[string]struct {
	password string
	groups   []string
}{
	"alice": {"alice-pw-1234", []string{"dev"}},
	"bob":   {"bob-pw-1234", nil},
	"carol": {"carol-pw-1234", []string{"dev"}},
	"dave":  {"dave-pw-1234", []string{"dev"}},
	"erin":  {"erin-pw-1234", []string{"dev"}},
}

func rotorCluster(t *testing.T) *cluster {
	t.Helper()
	sharedOnce.Do(func() { shared, sharedErr = startCluster() })
	if sharedErr != nil {
		t.Fatal(sharedErr)
	}
	return shared
}

func startCluster() (*cluster, error) {
	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "rotor-"}}
	if err := env.Client.Create(ctx, ns); err != nil {
		return nil, err
	}
	c := &cluster{ns: ns.Name}
	for name, u := range users {
		m, err := accounts.Manifest(name, c.ns, u.groups, []byte(u.password))
		if err != nil {
			return nil, err
		}
		sec := &corev1.Secret{}
		if err := yaml.UnmarshalStrict(m, sec); err != nil {
			return nil, err
		}
		if err := env.Client.Create(ctx, sec); err != nil {
			return nil, err
		}
	}
	public := func(name string, aud string, ttl time.Duration) *identityv1alpha1.OAuthClient {
		return &identityv1alpha1.OAuthClient{
			ObjectMeta: metav1.ObjectMeta{Namespace: c.ns, Name: name},
			Spec: identityv1alpha1.OAuthClientSpec{
				Type:           identityv1alpha1.ClientTypePublic,
				GrantTypes:     []identityv1alpha1.GrantType{identityv1alpha1.GrantPassword, identityv1alpha1.GrantRefreshToken},
				Audiences:      []string{aud},
				TokenLifetimes: &identityv1alpha1.TokenLifetimes{AccessToken: &metav1.Duration{Duration: ttl}},
			},
		}
	}
	for _, oc := range []*identityv1alpha1.OAuthClient{
		public("kubectl", kubeauthn.DefaultAudience, accessTTL),
		public("other", "other-api", time.Minute),
	} {
		if err := env.Client.Create(ctx, oc); err != nil {
			return nil, err
		}
	}

	bin, err := buildRotor()
	if err != nil {
		return nil, err
	}
	c.rotorBin = bin

	o := server.DefaultOptions()
	o.Namespace = c.ns
	o.IssuerURL = issuerURL
	o.ListenAddress = strings.TrimPrefix(issuerURL, "https://")
	o.TLSCertFile, o.TLSKeyFile = tlsFiles.Cert, tlsFiles.Key
	o.MetricsAddress, o.ProbeAddress = "0", "0"
	o.LeaderElect = false
	o.DefaultClientID = ""
	// A rotation within a test: keys published 5s (over the JWKS max-age of
	// 2s) before they sign.
	o.JWKSMaxAge, o.KeyPrepublish, o.KeyRotationPeriod = 2*time.Second, 5*time.Second, time.Hour
	started := time.Now()
	srv, err := server.New(env.Config, o, zap.New(zap.WriteTo(&testenv.LogBuffer{})))
	if err != nil {
		return nil, err
	}
	c.srv = srv
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Start(runCtx) }()
	env.AtStop(func() {
		stop()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
		}
	})
	if err := c.waitReady(ctx); err != nil {
		return nil, err
	}

	// How long until the API server trusts a freshly started rotor: it
	// retries discovery every 10s until rotor answers.
	token, err := passwordToken("kubectl", "alice")
	if err != nil {
		return nil, err
	}
	for {
		if _, err := whoami(token); err == nil {
			break
		} else if time.Since(started) > 2*time.Minute {
			return nil, fmt.Errorf("the API server did not trust rotor within 2 minutes: %w", err)
		}
		time.Sleep(200 * time.Millisecond)
		if token, err = passwordToken("kubectl", "alice"); err != nil {
			return nil, err
		}
	}
	c.trustDelay = time.Since(started)
	return c, nil
}

func (c *cluster) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		_, keyOK := c.srv.Keys.Active()
		kubectlClient, found, err := c.srv.Clients.Lookup(ctx, "kubectl")
		other, found2, err2 := c.srv.Clients.Lookup(ctx, "other")
		if keyOK && c.srv.Accounts.ReadyCheck(nil) == nil && err == nil && err2 == nil && found && found2 && kubectlClient.Ready && other.Ready {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("rotor not ready within a minute")
}

// buildRotor builds the rotor binary kubectl runs as its credential plugin.
func buildRotor() (string, error) {
	dir, err := os.MkdirTemp("", "rotor-bin-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "rotor")
	cmd := exec.Command("go", "build", "-o", bin, "rotor.dev/rotor")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building rotor: %v\n%s", err, out)
	}
	return bin, nil
}

// issuerClient trusts rotor's CA.
func issuerClient() *http.Client {
	cfg := &rest.Config{TLSClientConfig: rest.TLSClientConfig{CAFile: tlsFiles.CA}}
	tr, err := rest.TransportFor(cfg)
	if err != nil {
		panic(err)
	}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// passwordToken logs user in as client and returns the access token.
func passwordToken(clientID, user string) (string, error) {
	resp, err := issuerClient().PostForm(issuerURL+"/token", url.Values{
		"grant_type": {"password"}, "client_id": {clientID}, "username": {user}, "password": {users[user].password},
	})
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var body struct {
		AccessToken string `json:"access_token"`
		Error       string `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("login %s/%s: %d %s", clientID, user, resp.StatusCode, body.Error)
	}
	return body.AccessToken, nil
}

// whoami asks the API server who the bearer of token is.
func whoami(token string) (*authenticationv1.UserInfo, error) {
	cfg := rest.AnonymousClientConfig(env.Config)
	cfg.BearerToken = token
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	r, err := cs.AuthenticationV1().SelfSubjectReviews().Create(context.Background(), &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		return nil, err
	}
	return &r.Status.UserInfo, nil
}

// kubeconfig writes a kubeconfig whose user runs `rotor login` for user,
// with its own cache directory; withPassword adds --password-file, so that
// the plugin can log in again without a terminal.
func (c *cluster) kubeconfig(t *testing.T, user string, withPassword bool) (path, cacheDir string) {
	t.Helper()
	dir := t.TempDir()
	cacheDir = filepath.Join(dir, "cache")
	admin, err := env.ControlPlane.Kubeconfig("kubeauthn-admin")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.Load(admin)
	if err != nil {
		t.Fatal(err)
	}
	var cl *clientcmdapi.Cluster
	for _, v := range cfg.Clusters {
		cl = v
	}
	args := []string{"login", "--issuer-url", issuerURL, "--client-id", "kubectl", "--username", user,
		"--ca-file", tlsFiles.CA, "--cache-dir", cacheDir}
	if withPassword {
		pw := filepath.Join(dir, "password")
		if err := os.WriteFile(pw, []byte(users[user].password), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--password-file", pw)
	}
	out := clientcmdapi.NewConfig()
	out.Clusters["local"] = cl
	out.AuthInfos[user] = &clientcmdapi.AuthInfo{Exec: &clientcmdapi.ExecConfig{
		APIVersion: "client.authentication.k8s.io/v1", Command: c.rotorBin, Args: args,
		InteractiveMode: clientcmdapi.NeverExecInteractiveMode,
	}}
	out.Contexts["local"] = &clientcmdapi.Context{Cluster: "local", AuthInfo: user}
	out.CurrentContext = "local"
	path = filepath.Join(dir, "kubeconfig")
	if err := clientcmd.WriteToFile(*out, path); err != nil {
		t.Fatal(err)
	}
	return path, cacheDir
}

// kubectl runs the real kubectl; it returns stdout, stderr and the error.
func kubectl(kubeconfig string, args ...string) (string, string, error) {
	bin := filepath.Join(os.Getenv(controlplane.AssetsEnv), "kubectl")
	cmd := exec.Command(bin, append([]string{"--kubeconfig", kubeconfig}, args...)...)
	cmd.Env = append(os.Environ(), "KUBECACHEDIR="+filepath.Dir(kubeconfig)+"/kubecache")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

type whoamiOutput struct {
	Status struct {
		UserInfo authenticationv1.UserInfo `json:"userInfo"`
	} `json:"status"`
}

func kubectlWhoami(kubeconfig string) (*authenticationv1.UserInfo, string, error) {
	out, stderr, err := kubectl(kubeconfig, "auth", "whoami", "-o", "json")
	if err != nil {
		return nil, stderr, err
	}
	var w whoamiOutput
	if err := json.Unmarshal([]byte(out), &w); err != nil {
		return nil, stderr, err
	}
	return &w.Status.UserInfo, stderr, nil
}

// counter is a counter of the process's metrics registry (rotor runs
// in-process) with every label given.
func counter(t *testing.T, metric string, labels map[string]string) float64 {
	t.Helper()
	families, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != metric {
			continue
		}
	next:
		for _, m := range f.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue next
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

func issued(t *testing.T, grant string) float64 {
	return counter(t, "rotor_tokens_issued_total", map[string]string{"grant_type": grant, "client": "kubectl"})
}

func TestKubectlAuthenticatesThroughRotorLogin(t *testing.T) {
	g := NewWithT(t)
	c := rotorCluster(t)
	t.Logf("the API server trusted the freshly started rotor after %s", c.trustDelay.Round(100*time.Millisecond))
	ctx := context.Background()

	// What `rotor authn-config` prints for the running rotor is what the
	// API server was started with; for an EdDSA issuer it refuses.
	out, err := exec.Command(c.rotorBin, "authn-config", "--issuer-url", issuerURL, "--ca-file", tlsFiles.CA).Output()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(string(out)).To(Equal(string(authnConfig)))

	kc, _ := c.kubeconfig(t, "alice", true)
	info, stderr, err := kubectlWhoami(kc)
	g.Expect(err).NotTo(HaveOccurred(), stderr)
	g.Expect(info.Username).To(Equal("rotor:alice"))
	g.Expect(info.Groups).To(ContainElements("rotor:dev", "system:authenticated"))

	// RBAC bound to a rotor group: allowed with it, Forbidden without.
	_, stderr, err = kubectl(kc, "get", "configmaps", "-n", "default")
	g.Expect(err).To(HaveOccurred())
	g.Expect(stderr).To(ContainSubstring("Forbidden"))
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "rotor-test-configmap-reader"},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get", "list"}}},
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "rotor-test-dev-reads-configmaps"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: "Group", APIGroup: "rbac.authorization.k8s.io", Name: "rotor:dev"}},
	}
	for _, o := range []client.Object{role, binding} {
		if err := env.Client.Create(ctx, o); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	g.Eventually(func() error { _, _, err := kubectl(kc, "get", "configmaps", "-n", "default"); return err }).Should(Succeed())
	bob, _ := c.kubeconfig(t, "bob", true)
	info, stderr, err = kubectlWhoami(bob)
	g.Expect(err).NotTo(HaveOccurred(), stderr)
	g.Expect(info.Username).To(Equal("rotor:bob"))
	_, stderr, err = kubectl(bob, "get", "configmaps", "-n", "default")
	g.Expect(err).To(HaveOccurred())
	g.Expect(stderr).To(ContainSubstring("Forbidden"))
}

// Eight kubectl processes find the same expired access token at once: one
// refresh, and all eight succeed. Not parallel: the refreshes are counted
// on rotor's metric, which other tests' kubectl runs would move.
func TestConcurrentKubectlsRefreshOnce(t *testing.T) {
	g := NewWithT(t)
	c := rotorCluster(t)
	kc, cacheDir := c.kubeconfig(t, "dave", true)
	_, stderr, err := kubectlWhoami(kc) // logs in, filling the cache
	g.Expect(err).NotTo(HaveOccurred(), stderr)
	g.Expect(cacheFiles(t, cacheDir)).NotTo(BeEmpty())
	time.Sleep(accessTTL + time.Second) // the cached access token expires

	refreshes, logins := issued(t, "refresh_token"), issued(t, "password")
	var wg sync.WaitGroup
	errs := make([]error, 8)
	outs := make([]string, 8)
	for i := range errs {
		wg.Go(func() {
			var info *authenticationv1.UserInfo
			info, outs[i], errs[i] = kubectlWhoami(kc)
			if errs[i] == nil && info.Username != "rotor:dave" {
				errs[i] = fmt.Errorf("whoami says %q", info.Username)
			}
		})
	}
	wg.Wait()
	for i, err := range errs {
		g.Expect(err).NotTo(HaveOccurred(), "kubectl %d: %s", i, outs[i])
	}
	g.Expect(issued(t, "refresh_token")-refreshes).To(Equal(1.0), "exactly one refresh")
	g.Expect(issued(t, "password")-logins).To(BeZero(), "and no new login")
}

// A revoked session: the next non-interactive kubectl fails with rotor's
// message; a fresh rotor login works.
func TestRevokedSessionAtKubectl(t *testing.T) {
	t.Parallel() // each its own user; they wait on expiries, so they wait together
	g := NewWithT(t)
	ctx := context.Background()
	c := rotorCluster(t)
	withPassword, cacheDir := c.kubeconfig(t, "carol", true)
	_, stderr, err := kubectlWhoami(withPassword)
	g.Expect(err).NotTo(HaveOccurred(), stderr)
	// The same cache, without a password: kubectl is not interactive.
	cfg, err := clientcmd.LoadFromFile(withPassword)
	g.Expect(err).NotTo(HaveOccurred())
	exe := cfg.AuthInfos["carol"].Exec
	exe.Args = exe.Args[:len(exe.Args)-2] // drop --password-file FILE
	noPassword := filepath.Join(t.TempDir(), "kubeconfig")
	g.Expect(clientcmd.WriteToFile(*cfg, noPassword)).To(Succeed())

	// kubectl delete rt --field-selector spec.subject=carol
	g.Expect(env.Client.DeleteAllOf(ctx, &identityv1alpha1.RefreshToken{}, client.InNamespace(c.ns),
		client.MatchingFields{"spec.subject": "carol"})).To(Succeed())
	time.Sleep(accessTTL + time.Second)
	_, stderr, err = kubectl(noPassword, "auth", "whoami")
	g.Expect(err).To(HaveOccurred())
	g.Expect(stderr).To(ContainSubstring("rotor login"), "rotor says what to do")

	// A fresh login, here through the kubeconfig that can give a password.
	info, stderr, err := kubectlWhoami(withPassword)
	g.Expect(err).NotTo(HaveOccurred(), stderr)
	g.Expect(info.Username).To(Equal("rotor:carol"))
	g.Expect(cacheFiles(t, cacheDir)).NotTo(BeEmpty())
}

// A signing-key rotation while kubectl runs in a loop: no authentication
// failure at the API server, through the rotation and past the expiry of
// the tokens signed before it.
func TestKeyRotationWhileKubectlRuns(t *testing.T) {
	t.Parallel() // each its own user; they wait on expiries, so they wait together
	g := NewWithT(t)
	ctx := context.Background()
	c := rotorCluster(t)
	kc, _ := c.kubeconfig(t, "erin", true)
	old, ok := c.srv.Keys.Active()
	g.Expect(ok).To(BeTrue())

	var secrets corev1.SecretList
	g.Expect(env.Client.List(ctx, &secrets, client.InNamespace(c.ns), client.MatchingLabels{keys.StateLabel: "active"})).To(Succeed())
	g.Expect(secrets.Items).To(HaveLen(1))
	active := secrets.Items[0]
	if active.Annotations == nil {
		active.Annotations = map[string]string{}
	}
	active.Annotations[keys.RotateAnnotation] = "test"
	g.Expect(env.Client.Update(ctx, &active)).To(Succeed())

	var rotatedAt time.Time
	runs, failures := 0, []string{}
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		_, stderr, err := kubectlWhoami(kc)
		runs++
		if err != nil {
			failures = append(failures, stderr)
		}
		if k, _ := c.srv.Keys.Active(); rotatedAt.IsZero() && k.KID != old.KID {
			rotatedAt = time.Now()
		}
		// Past the rotation by two access-token lifetimes: kubectl has used
		// tokens signed by the new key.
		if !rotatedAt.IsZero() && time.Since(rotatedAt) > 2*accessTTL+2*time.Second {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	g.Expect(rotatedAt).NotTo(BeZero(), "the key rotated")
	t.Logf("%d kubectl runs through the rotation", runs)
	g.Expect(failures).To(BeEmpty())
}

// The API server refuses rotor tokens for another audience, expired rotor
// tokens and tokens from another issuer.
func TestAPIServerRefusesTheWrongTokens(t *testing.T) {
	t.Parallel() // each its own user; they wait on expiries, so they wait together
	g := NewWithT(t)
	rotorCluster(t)
	refused := func(token string) {
		_, err := whoami(token)
		g.Expect(apierrors.IsUnauthorized(err)).To(BeTrue(), "got %v", err)
	}

	other, err := passwordToken("other", "alice")
	g.Expect(err).NotTo(HaveOccurred())
	refused(other)

	good, err := passwordToken("kubectl", "alice")
	g.Expect(err).NotTo(HaveOccurred())
	_, err = whoami(good)
	g.Expect(err).NotTo(HaveOccurred())

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	g.Expect(err).NotTo(HaveOccurred())
	now := time.Now()
	forged, err := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{
		"iss": "https://evil.example", "sub": "alice", "aud": []string{kubeauthn.DefaultAudience},
		"iat": now.Unix(), "exp": now.Add(time.Minute).Unix(),
	}).SignedString(key)
	g.Expect(err).NotTo(HaveOccurred())
	refused(forged)

	// Expired: the good token once its lifetime is over (the API server
	// caches a success for about 10s, so this waits past that too).
	time.Sleep(accessTTL + 11*time.Second)
	refused(good)
}

// What the plugin prints is an ExecCredential and nothing else; its cache
// is private to the user.
func TestRotorLoginOutputAndCache(t *testing.T) {
	t.Parallel() // each its own user; they wait on expiries, so they wait together
	g := NewWithT(t)
	c := rotorCluster(t)
	kc, cacheDir := c.kubeconfig(t, "alice", true)
	cfg, err := clientcmd.LoadFromFile(kc)
	g.Expect(err).NotTo(HaveOccurred())
	exe := cfg.AuthInfos["alice"].Exec
	cmd := exec.Command(exe.Command, exe.Args...)
	cmd.Env = append(os.Environ(), `KUBERNETES_EXEC_INFO={"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","spec":{"interactive":false}}`)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	g.Expect(cmd.Run()).To(Succeed(), stderr.String())

	cred := &clientauthv1.ExecCredential{}
	g.Expect(yaml.UnmarshalStrict(stdout.Bytes(), cred)).To(Succeed(), "stdout is one ExecCredential: %q", stdout.String())
	g.Expect(cred.APIVersion).To(Equal("client.authentication.k8s.io/v1"))
	g.Expect(cred.Kind).To(Equal("ExecCredential"))
	g.Expect(cred.Status).NotTo(BeNil())
	g.Expect(cred.Status.Token).NotTo(BeEmpty())
	g.Expect(cred.Status.ExpirationTimestamp).NotTo(BeNil())
	claims := jwt.MapClaims{}
	_, _, err = jwt.NewParser().ParseUnverified(cred.Status.Token, claims)
	g.Expect(err).NotTo(HaveOccurred())
	exp, err := claims.GetExpirationTime()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(cred.Status.ExpirationTimestamp.Time).To(BeTemporally("<", exp.Time), "kubectl asks again before the token expires")
	g.Expect(stderr.String()).NotTo(ContainSubstring(cred.Status.Token))
	g.Expect(stderr.String()).NotTo(ContainSubstring(users["alice"].password))

	st, err := os.Stat(cacheDir)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(st.Mode().Perm()).To(Equal(os.FileMode(0o700)))
	files := cacheFiles(t, cacheDir)
	g.Expect(files).NotTo(BeEmpty())
	for _, f := range files {
		st, err := os.Stat(f)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(st.Mode().Perm()).To(Equal(os.FileMode(0o600)), f)
	}
}

// cacheFiles are the files in a plugin cache directory, at any depth.
func cacheFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	_ = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			out = append(out, path)
		}
		return nil
	})
	return out
}
