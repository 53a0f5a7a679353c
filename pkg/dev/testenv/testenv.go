// Package testenv runs tests against a real control plane: one kube-apiserver
// and etcd per test package (started by Main from TestMain) and a fresh
// namespace per test.
package testenv

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/onsi/gomega"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	identityv1alpha1 "rotor.dev/rotor/api/v1alpha1"
	"rotor.dev/rotor/pkg/dev/controlplane"
	rotorscheme "rotor.dev/rotor/pkg/scheme"
)

// Env is the package's control plane.
type Env struct {
	ControlPlane *controlplane.ControlPlane
	// Config authenticates as a cluster administrator.
	Config *rest.Config
	Scheme *runtime.Scheme
	// Client is an uncached administrator client.
	Client client.WithWatch

	atStop []func()
}

// AtStop runs f when the package's tests are over, before the control plane
// stops: a component that outlives the tests (one rotor for the package)
// stops first, so the API server need not wait for its connections.
func (e *Env) AtStop(f func()) { e.atStop = append(e.atStop, f) }

// Main starts the control plane, stores it in *env, runs the package's tests
// and stops it. Call it from TestMain.
func Main(m *testing.M, env **Env) { MainWith(m, env, controlplane.Options{}) }

// MainWith is Main with a control plane started with opts: one that trusts
// a rotor (opts.AuthenticationConfig), say.
func MainWith(m *testing.M, env **Env, opts controlplane.Options) {
	// go test -fuzz runs TestMain in each fuzz worker too; fuzz targets do
	// not use the control plane, and a worker's etcd would outlive it.
	for _, a := range os.Args[1:] {
		if a == "-test.fuzzworker" || strings.HasPrefix(a, "-test.fuzzworker=") {
			os.Exit(m.Run())
		}
	}
	// CI machines are shared and noisy: Eventually waits up to 30s (not
	// gomega's 1s) unless a test says otherwise, and still returns as soon
	// as its condition holds.
	gomega.SetDefaultEventuallyTimeout(EventuallyTimeout)
	e, err := StartWith(opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	*env = e
	code := m.Run()
	for _, f := range e.atStop {
		f()
	}
	if err := e.ControlPlane.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "stopping control plane:", err)
	}
	os.Exit(code)
}

// EventuallyTimeout is the default timeout of gomega's Eventually in
// packages whose TestMain is Main.
const EventuallyTimeout = 30 * time.Second

// Start starts a control plane outside of TestMain.
func Start() (*Env, error) { return StartWith(controlplane.Options{}) }

// StartWith starts a control plane with opts outside of TestMain.
func StartWith(opts controlplane.Options) (*Env, error) {
	cp, err := controlplane.Start(opts)
	if err != nil {
		return nil, err
	}
	scheme := rotorscheme.Scheme
	cfg := rest.CopyConfig(cp.Config)
	cfg.QPS, cfg.Burst = 500, 1000
	c, err := client.NewWithWatch(cfg, client.Options{Scheme: scheme})
	if err != nil {
		_ = cp.Stop()
		return nil, err
	}
	if err := warmUp(c); err != nil {
		_ = cp.Stop()
		return nil, err
	}
	return &Env{ControlPlane: cp, Config: cfg, Scheme: scheme, Client: c}, nil
}

// warmUp makes the API server build its RefreshToken storage and compile
// the CRD's validation rules now (about two seconds on two cores), so that
// the first test to write a session does not pay for it inside a timeout.
func warmUp(c client.Client) error {
	now := metav1.Now()
	rt := &identityv1alpha1.RefreshToken{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "warm-up"},
		Spec: identityv1alpha1.RefreshTokenSpec{
			Subject: "warm-up", ClientID: "warm-up", State: identityv1alpha1.SessionActive, ExpiresAt: now,
			Session: identityv1alpha1.Session{
				Audience: []string{"warm-up"}, Method: identityv1alpha1.AuthMethodPassword, SecretHash: "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU",
				AbsoluteExpiresAt: now, LastUsedAt: now,
			},
		},
	}
	if err := c.Create(context.Background(), rt, client.DryRunAll); err != nil {
		return fmt.Errorf("warming up the API server: %w", err)
	}
	return nil
}

// Namespace creates a namespace for one test and deletes it when the test ends.
func (e *Env) Namespace(t testing.TB) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "test-"}}
	if err := e.Client.Create(context.Background(), ns); err != nil {
		t.Fatalf("creating namespace: %v", err)
	}
	t.Cleanup(func() {
		// No namespace controller runs in envtest, so objects stay; the
		// namespace name is unique, which is all isolation needs.
		_ = e.Client.Delete(context.Background(), ns)
	})
	return ns.Name
}

// LogBuffer collects a component's logs for a test to read (a secret scan,
// an expected warning) while the component keeps writing.
type LogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *LogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
