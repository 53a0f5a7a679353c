package charts_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"

	"rotor.dev/rotor/pkg/dev/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) { testenv.Main(m, &env) }

// helmVersion is the Makefile's HELM_VERSION: tests use bin/helm-<version>.
const helmVersion = "v3.22.0"

const releaseDefault = "rotor"

// root is the module root: tests run in charts/.
func root(t testing.TB) string {
	t.Helper()
	dir, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "go.mod")); err != nil {
		t.Fatalf("no go.mod in %s: the chart tests must run from charts/", dir)
	}
	return dir
}

func chartDir(t testing.TB) string { return filepath.Join(root(t), "charts", "rotor") }

func testdata(t testing.TB, name string) string {
	return filepath.Join(root(t), "charts", "testdata", name)
}

// helmBin is $HELM, else bin/helm-<version> (the Makefile's $(HELM)).
func helmBin(t testing.TB) string {
	t.Helper()
	path := os.Getenv("HELM")
	if path == "" {
		path = filepath.Join(root(t), "bin", "helm-"+helmVersion)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("helm not found at %s: run 'make helm' (builds helm %s into bin/, about 3 minutes) or set HELM to a helm v3 binary", path, helmVersion)
	}
	return path
}

// kubectlBin is $KUBEBUILDER_ASSETS/kubectl, bin/k8s/kubectl, or kubectl on PATH.
func kubectlBin(t testing.TB) string {
	t.Helper()
	candidates := []string{}
	if dir := os.Getenv("KUBEBUILDER_ASSETS"); dir != "" {
		candidates = append(candidates, filepath.Join(dir, "kubectl"))
	}
	candidates = append(candidates, filepath.Join(root(t), "bin", "k8s", "kubectl"))
	for _, c := range candidates {
		if _, err := os.Stat(c); err == nil {
			return c
		}
	}
	path, err := exec.LookPath("kubectl")
	if err != nil {
		t.Fatalf("kubectl not found in %v or on PATH", candidates)
	}
	return path
}

var (
	kubeconfigOnce  sync.Once
	kubeconfigBytes []byte
	kubeconfigErr   error
	serverVersion   string
)

// kubeconfig writes an administrator kubeconfig for the test API server into
// a directory of the test and returns its path.
func kubeconfig(t testing.TB) string {
	t.Helper()
	kubeconfigOnce.Do(func() {
		kubeconfigBytes, kubeconfigErr = env.ControlPlane.Kubeconfig("chart-test-admin")
	})
	if kubeconfigErr != nil {
		t.Fatal(kubeconfigErr)
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, kubeconfigBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// kubeVersion is the test API server's version: the chart is rendered for
// the cluster it is applied to, as `helm install` does against a live one.
func kubeVersion(t testing.TB) string {
	t.Helper()
	if serverVersion == "" {
		dc, err := discovery.NewDiscoveryClientForConfig(env.Config)
		if err != nil {
			t.Fatal(err)
		}
		v, err := dc.ServerVersion()
		if err != nil {
			t.Fatal(err)
		}
		serverVersion = v.GitVersion
	}
	return serverVersion
}

// toolEnv keeps helm's and kubectl's caches and configuration inside the test.
func toolEnv(t testing.TB) []string {
	home := t.TempDir()
	return append(os.Environ(),
		"HOME="+home,
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"),
		"KUBECONFIG=/nonexistent", // every command passes --kubeconfig explicitly
	)
}

// run runs a command and returns stdout and stderr; err is non-nil on a
// non-zero exit.
func run(t testing.TB, stdin io.Reader, name string, args ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = toolEnv(t)
	cmd.Stdin = stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		err = fmt.Errorf("%s %s: %w\n%s", filepath.Base(name), strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), stderr.String(), err
}

// helmTemplate renders the chart as release releaseDefault in namespace ns.
func helmTemplate(t testing.TB, ns string, args ...string) (string, error) {
	t.Helper()
	a := append([]string{"template", releaseDefault, chartDir(t), "--namespace", ns, "--kube-version", kubeVersion(t)}, args...)
	out, _, err := run(t, nil, helmBin(t), a...)
	return out, err
}

// mustRender renders the chart and decodes every object.
func mustRender(t testing.TB, ns string, args ...string) []*unstructured.Unstructured {
	t.Helper()
	out, err := helmTemplate(t, ns, args...)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := decodeAll(out)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

func decodeAll(manifests string) ([]*unstructured.Unstructured, error) {
	var objs []*unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(manifests), 4096)
	for {
		obj := &unstructured.Unstructured{}
		err := dec.Decode(&obj.Object)
		if errors.Is(err, io.EOF) {
			return objs, nil
		}
		if err != nil {
			return nil, err
		}
		if len(obj.Object) == 0 {
			continue
		}
		objs = append(objs, obj)
	}
}

// named returns the object of kind with the name, or fails.
func named(t testing.TB, objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	t.Helper()
	for _, o := range ofKind(objs, kind) {
		if o.GetName() == name {
			return o
		}
	}
	t.Fatalf("no %s %s rendered", kind, name)
	return nil
}

// only returns the single object of kind or fails.
func only(t testing.TB, objs []*unstructured.Unstructured, kind string) *unstructured.Unstructured {
	t.Helper()
	found := ofKind(objs, kind)
	if len(found) != 1 {
		t.Fatalf("want exactly one %s, rendered %d", kind, len(found))
	}
	return found[0]
}

func ofKind(objs []*unstructured.Unstructured, kind string) []*unstructured.Unstructured {
	var found []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == kind {
			found = append(found, o)
		}
	}
	return found
}

func kinds(objs []*unstructured.Unstructured) []string {
	var ks []string
	for _, o := range objs {
		ks = append(ks, o.GetKind()+"/"+o.GetName())
	}
	return ks
}
