package server_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"syscall"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"rotor.dev/rotor/pkg/dev/testenv"
	"rotor.dev/rotor/pkg/server"
)

var env *testenv.Env

func TestMain(m *testing.M) { testenv.Main(m, &env) }

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// start runs rotor serve's wiring in ns until the test ends and returns its
// metrics address and logs.
func start(t *testing.T, ns string, secureMetrics bool) (string, *testenv.LogBuffer) {
	t.Helper()
	o := server.DefaultOptions()
	o.Namespace, o.InsecureHTTP, o.LeaderElect = ns, true, false
	o.ProbeAddress, o.MetricsAddress, o.MetricsSecure = "0", freeAddr(t), secureMetrics
	logs := &testenv.LogBuffer{}
	// The issuer URL names the port, so it is picked first; another process
	// may take it before rotor listens, and then another is picked.
	var srv *server.Server
	for attempt := 1; ; attempt++ {
		o.ListenAddress = freeAddr(t)
		o.IssuerURL = "http://" + o.ListenAddress
		var err error
		srv, err = server.New(env.Config, o, zap.New(zap.WriteTo(logs)))
		if errors.Is(err, syscall.EADDRINUSE) && attempt < 5 {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		break
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("rotor stopped: %v", err)
		}
	})
	return o.MetricsAddress, logs
}

// apiToken is a token of the ServiceAccount for the API server's own
// audience, as Prometheus in the cluster presents.
func apiToken(t *testing.T, ns, name string) string {
	t.Helper()
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	if err := env.Client.Create(context.Background(), sa); err != nil {
		t.Fatal(err)
	}
	tr := &authenticationv1.TokenRequest{}
	if err := env.Client.SubResource("token").Create(context.Background(), sa, tr); err != nil {
		t.Fatalf("requesting token: %v", err)
	}
	return tr.Status.Token
}

func scrape(addr, scheme, token string) (int, string, error) {
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		// rotor's metrics certificate is self-signed, as kubebuilder's.
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // see above
	}}
	req, _ := http.NewRequest(http.MethodGet, scheme+"://"+addr+"/metrics", nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

func TestMetricsNeedAKubernetesIdentityAllowedToReadThem(t *testing.T) {
	g := NewWithT(t)
	ns := env.Namespace(t)
	addr, _ := start(t, ns, true)

	reader := "metrics-reader-" + ns
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: reader},
		Rules:      []rbacv1.PolicyRule{{NonResourceURLs: []string{"/metrics"}, Verbs: []string{"get"}}},
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: reader},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: reader},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: ns, Name: "prometheus"}},
	}
	g.Expect(env.Client.Create(context.Background(), role)).To(Succeed())
	g.Expect(env.Client.Create(context.Background(), binding)).To(Succeed())
	t.Cleanup(func() {
		_ = env.Client.Delete(context.Background(), binding)
		_ = env.Client.Delete(context.Background(), role)
	})
	prometheus := apiToken(t, ns, "prometheus")
	stranger := apiToken(t, ns, "stranger")

	g.Eventually(func() (int, error) { code, _, err := scrape(addr, "https", prometheus); return code, err }).
		Should(Equal(http.StatusOK), "a ServiceAccount bound to GET /metrics scrapes")
	_, body, err := scrape(addr, "https", prometheus)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(body).To(ContainSubstring("rotor_"))

	code, _, err := scrape(addr, "https", "")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(code).To(Equal(http.StatusUnauthorized), "no token")
	code, _, err = scrape(addr, "https", "not-a-token")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(code).To(Equal(http.StatusUnauthorized), "a token the API server does not know")
	code, _, err = scrape(addr, "https", stranger)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(code).To(Equal(http.StatusForbidden), "a ServiceAccount without the binding")
	_, _, err = scrape(addr, "http", prometheus)
	g.Expect(err).To(HaveOccurred(), "no plain HTTP")
}

func TestPlainMetricsWhenAskedFor(t *testing.T) {
	g := NewWithT(t)
	addr, _ := start(t, env.Namespace(t), false)
	g.Eventually(func() (int, error) { code, _, err := scrape(addr, "http", ""); return code, err }).Should(Equal(http.StatusOK))
}

func TestStartWarnsOfSecretsThatAreNotRotors(t *testing.T) {
	g := NewWithT(t)
	ns := env.Namespace(t)
	g.Expect(env.Client.Create(context.Background(), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "pull"}, Type: corev1.SecretTypeDockerConfigJson,
		Data: map[string][]byte{corev1.DockerConfigJsonKey: []byte(`{"auths":{}}`)},
	})).To(Succeed())
	_, quiet := start(t, ns, false)
	g.Consistently(quiet.String, 3*time.Second, 200*time.Millisecond).ShouldNot(ContainSubstring("WARNING"), "an image pull secret is expected")

	other := env.Namespace(t)
	g.Expect(env.Client.Create(context.Background(), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: other, Name: "database-password"},
		StringData: map[string]string{"password": "hunter2"},
	})).To(Succeed())
	_, logs := start(t, other, false)
	g.Eventually(logs.String).Should(ContainSubstring("WARNING: rotor's namespace holds Secrets that are not rotor's"))
	g.Expect(logs.String()).To(ContainSubstring(`"example":"database-password"`))
	g.Expect(logs.String()).NotTo(ContainSubstring("hunter2"))
}
