package accounts

import (
	"context"
	"encoding/base64"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	. "github.com/onsi/gomega"
	"golang.org/x/crypto/bcrypt"
	corev1 "k8s.io/api/core/v1"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/yaml"

	"rotor.dev/rotor/pkg/dev/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) { testenv.Main(m, &env) }

// testCost keeps hashing out of the tests' running time.
const testCost = bcrypt.MinCost

// logSink keeps every line at every verbosity, so tests can check what was
// logged and that no password or hash ever was.
type logSink struct {
	mu    sync.Mutex
	lines []string
}

func (l *logSink) logger() logr.Logger {
	return funcr.New(func(prefix, args string) {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.lines = append(l.lines, prefix+" "+args)
	}, funcr.Options{Verbosity: 10})
}

// since returns the lines logged after the first n.
func (l *logSink) since(n int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines[n:], "\n")
}

func (l *logSink) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.lines)
}

// harness is a Store on a fresh namespace of the real API server, with its
// bcrypt comparisons counted and its clock under the test's control.
type harness struct {
	t        *testing.T
	ns       string
	store    *Store
	compares atomic.Int64
	// gate, when set, holds every comparison until it is closed.
	gate  chan struct{}
	clock *clocktesting.FakeClock
	logs  *logSink
	// secrets must never appear in the log.
	mu      sync.Mutex
	secrets []string
}

// newHarness builds the store without starting it; it accepts hashes of
// testCost only.
func newHarness(t *testing.T, opts Options) *harness {
	t.Helper()
	return newHarnessWithCost(t, opts, testCost)
}

// newHarnessWithCost builds a store that accepts hashes of the given cost.
func newHarnessWithCost(t *testing.T, opts Options, cost int) *harness {
	t.Helper()
	g := NewWithT(t)
	h := &harness{t: t, ns: env.Namespace(t), clock: clocktesting.NewFakeClock(time.Unix(1_800_000_000, 0)), logs: &logSink{}}
	opts.Namespace = h.ns
	opts.Log = h.logs.logger()
	opts.Clock = h.clock
	s, err := newStore(env.Config, opts, hooks{
		compare: func(hash, password []byte) error {
			h.compares.Add(1)
			if h.gate != nil {
				<-h.gate
			}
			return bcrypt.CompareHashAndPassword(hash, password)
		},
		dummyCost: cost,
	})
	g.Expect(err).NotTo(HaveOccurred())
	h.store = s
	t.Cleanup(func() {
		logs := h.logs.since(0)
		h.mu.Lock()
		defer h.mu.Unlock()
		for _, secret := range h.secrets {
			if strings.Contains(logs, secret) {
				t.Errorf("the log contains a password or hash")
			}
		}
	})
	return h
}

// start runs the store until the test ends and waits for it to be ready.
func (h *harness) start() {
	h.t.Helper()
	g := NewWithT(h.t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.store.Start(ctx) }()
	h.t.Cleanup(func() {
		cancel()
		g.Expect(<-done).To(Succeed())
	})
	g.Eventually(func() error { return h.store.ReadyCheck(nil) }).Should(Succeed())
}

// startHarness is newHarness followed by start.
func startHarness(t *testing.T, opts Options) *harness {
	t.Helper()
	h := newHarness(t, opts)
	h.start()
	return h
}

func (h *harness) noLeak(password string, hash []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.secrets = append(h.secrets, password)
	if len(hash) > 0 {
		h.secrets = append(h.secrets, string(hash), base64.StdEncoding.EncodeToString(hash))
	}
}

// accountSecret decodes Manifest's output (at test cost) into a Secret for
// h's namespace, then lets edit change it.
func (h *harness) accountSecret(username, password string, groups []string, edit func(*corev1.Secret)) *corev1.Secret {
	h.t.Helper()
	g := NewWithT(h.t)
	out, err := manifest(username, h.ns, groups, []byte(password), testCost)
	g.Expect(err).NotTo(HaveOccurred())
	sec := &corev1.Secret{}
	g.Expect(yaml.UnmarshalStrict(out, sec)).To(Succeed())
	h.noLeak(password, sec.Data[KeyPasswordHash])
	if edit != nil {
		edit(sec)
	}
	return sec
}

// create creates sec through the API and waits until the store's cache
// holds that version of it.
func (h *harness) create(sec *corev1.Secret) *corev1.Secret {
	h.t.Helper()
	NewWithT(h.t).Expect(env.Client.Create(context.Background(), sec)).To(Succeed())
	h.waitFor(sec)
	return sec
}

func (h *harness) update(sec *corev1.Secret) {
	h.t.Helper()
	NewWithT(h.t).Expect(env.Client.Update(context.Background(), sec)).To(Succeed())
	h.waitFor(sec)
}

func (h *harness) delete(sec *corev1.Secret) {
	h.t.Helper()
	g := NewWithT(h.t)
	g.Expect(env.Client.Delete(context.Background(), sec)).To(Succeed())
	g.Eventually(func() (bool, error) {
		_, exists, err := h.store.informer.GetIndexer().GetByKey(sec.Namespace + "/" + sec.Name)
		return exists, err
	}).Should(BeFalse())
}

func (h *harness) waitFor(sec *corev1.Secret) {
	h.t.Helper()
	NewWithT(h.t).Eventually(func() string {
		obj, _, _ := h.store.informer.GetIndexer().GetByKey(sec.Namespace + "/" + sec.Name)
		if got, ok := obj.(*corev1.Secret); ok {
			return got.ResourceVersion
		}
		return ""
	}).Should(Equal(sec.ResourceVersion))
}

// outcome is everything a login observably does.
type outcome struct {
	Account Account
	Err     error
	// Compares counts bcrypt comparisons.
	Compares int64
}

func (h *harness) login(username, password, addr string) outcome {
	before := h.compares.Load()
	acct, err := h.store.Authenticate(context.Background(), username, password, addr)
	return outcome{Account: acct, Err: err, Compares: h.compares.Load() - before}
}

var (
	invalid   = outcome{Err: ErrInvalidCredentials, Compares: 1}
	throttled = outcome{Err: ErrThrottled, Compares: 0}
)

func ok(a Account) outcome { return outcome{Account: a, Compares: 1} }
