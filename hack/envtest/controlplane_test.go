package envtest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// root is the module root: tests run in hack/envtest.
func root(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "go.mod")); err != nil {
		t.Fatalf("no go.mod in %s: these tests must run from hack/envtest", dir)
	}
	return dir
}

// match returns the first submatch of re in file, failing the test if none.
func match(t *testing.T, file, re string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(re).FindSubmatch(b)
	if m == nil {
		t.Fatalf("%s: no match for %s", file, re)
	}
	return string(m[1])
}

// pins are the versions the script pins, read from it.
type pins struct{ kube, etcd string }

func scriptPins(t *testing.T) pins {
	script := filepath.Join(root(t), "hack", "build-control-plane.sh")
	return pins{
		kube: match(t, script, `(?m)^KUBE_VERSION=(v\S+)$`),
		etcd: match(t, script, `(?m)^ETCD_VERSION=(v\S+)$`),
	}
}

// setupEnvtest is $SETUP_ENVTEST (the Makefile exports it), else
// bin/setup-envtest-$(ENVTEST_VERSION).
func setupEnvtest(t *testing.T) string {
	t.Helper()
	path := os.Getenv("SETUP_ENVTEST")
	if path == "" {
		v := match(t, filepath.Join(root(t), "Makefile"), `(?m)^ENVTEST_VERSION \?= (v\S+)$`)
		path = filepath.Join(root(t), "bin", "setup-envtest-"+v)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("setup-envtest not found at %s: run 'make setup-envtest' or set SETUP_ENVTEST", path)
	}
	return path
}

// TestEnvtestVersionFollowsControllerRuntime: the Makefile's setup-envtest is
// of the controller-runtime minor in go.mod (kubebuilder takes the
// release-X.Y branch; the module proxy serves tags only).
func TestEnvtestVersionFollowsControllerRuntime(t *testing.T) {
	minor := regexp.MustCompile(`^v(\d+\.\d+)\.`)
	envtest := match(t, filepath.Join(root(t), "Makefile"), `(?m)^ENVTEST_VERSION \?= (v\S+)$`)
	cr := match(t, filepath.Join(root(t), "go.mod"), `(?m)^\s*sigs\.k8s\.io/controller-runtime (v\S+)`)
	a, b := minor.FindStringSubmatch(envtest), minor.FindStringSubmatch(cr)
	if a == nil || b == nil || a[1] != b[1] {
		t.Errorf("ENVTEST_VERSION %s is not of controller-runtime %s (go.mod): pin the newest setup-envtest tag of that minor", envtest, cr)
	}
}

// standIn is a shell script that prints version when run with --version,
// then, like etcd, more lines a moment later: a version check that stops
// reading at the match would kill it with SIGPIPE.
func standIn(version string) []byte {
	return fmt.Appendf(nil, "#!/bin/sh\n# stand-in for a control-plane binary\necho '%s'\nsleep 0.05\necho 'Go Version: stand-in'\n", version)
}

// archive is an envtest release archive in setup-envtest's layout
// (controller-tools/envtest/<binary>, what controller-tools publishes).
func archive(t *testing.T, files map[string][]byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, name := range []string{"controller-tools/", "controller-tools/envtest/"} {
		if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: 0o755}); err != nil {
			t.Fatal(err)
		}
	}
	for name, body := range files {
		h := &tar.Header{Name: "controller-tools/envtest/" + name, Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(body)), ModTime: time.Now()}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// release serves an envtest release index (the shape of controller-tools'
// envtest-releases.yaml) and one archive from 127.0.0.1, counting archive
// downloads.
type release struct {
	srv       *httptest.Server
	downloads atomic.Int32
}

func serveRelease(t *testing.T, kubeVersion string, tarball []byte) *release {
	sum := sha512.Sum512(tarball)
	return serveReleaseWithHash(t, kubeVersion, tarball, hex.EncodeToString(sum[:]))
}

// serveReleaseWithHash lists the archive with hash (sha512, hex) in the index.
func serveReleaseWithHash(t *testing.T, kubeVersion string, tarball []byte, hash string) *release {
	t.Helper()
	r := &release{}
	name := fmt.Sprintf("envtest-%s-%s-%s.tar.gz", kubeVersion, runtime.GOOS, runtime.GOARCH)
	mux := http.NewServeMux()
	r.srv = httptest.NewServer(mux) // listens on 127.0.0.1
	t.Cleanup(r.srv.Close)
	mux.HandleFunc("/envtest-releases.yaml", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "releases:\n  %s:\n    %s:\n      hash: %s\n      selfLink: %s/download/%s\n",
			kubeVersion, name, hash, r.srv.URL, name)
	})
	mux.HandleFunc("/download/"+name, func(w http.ResponseWriter, _ *http.Request) {
		r.downloads.Add(1)
		_, _ = w.Write(tarball)
	})
	return r
}

func (r *release) index() string { return r.srv.URL + "/envtest-releases.yaml" }

// buildStub is a CONTROL_PLANE_BUILD that writes a stand-in reporting the
// pinned version and logs what it built, one name a line.
func buildStub(t *testing.T, p pins) (cmd, log string) {
	t.Helper()
	dir := t.TempDir()
	log = filepath.Join(dir, "built")
	cmd = filepath.Join(dir, "build")
	script := fmt.Sprintf(`#!/bin/sh
set -e
echo "$1" >> '%s'
case $1 in
  kube-apiserver) v='Kubernetes %s' ;;
  etcd) v='etcd Version: %s' ;;
  *) echo "unknown binary $1" >&2; exit 1 ;;
esac
printf '#!/bin/sh\necho "%%s"\nsleep 0.05\necho "Go Version: stand-in"\n' "$v" > "$2"
chmod +x "$2"
`, log, p.kube, strings.TrimPrefix(p.etcd, "v"))
	if err := os.WriteFile(cmd, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return cmd, log
}

func built(t *testing.T, log string) []string {
	t.Helper()
	b, err := os.ReadFile(log)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(b))
}

// run runs hack/build-control-plane.sh OUT with env on top of the test's
// environment (minus the variables the script reads).
func run(t *testing.T, out string, env ...string) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(root(t), "hack", "build-control-plane.sh"), out)
	for _, kv := range os.Environ() {
		switch strings.SplitN(kv, "=", 2)[0] {
		case "SETUP_ENVTEST", "ENVTEST_VERSION", "ENVTEST_INDEX_URL", "ENVTEST_INDEX_TIMEOUT",
			"ENVTEST_TIMEOUT", "ENVTEST_DOWNLOAD", "CONTROL_PLANE_BUILD":
			continue
		}
		cmd.Env = append(cmd.Env, kv)
	}
	cmd.Env = append(cmd.Env, env...)
	b, err := cmd.CombinedOutput()
	t.Logf("hack/build-control-plane.sh %s:\n%s", out, b)
	if err != nil {
		t.Fatalf("hack/build-control-plane.sh: %v", err)
	}
	return string(b)
}

// versionOf runs path --version and returns its first line.
func versionOf(t *testing.T, path string) string {
	t.Helper()
	b, err := exec.Command(path, "--version").Output()
	if err != nil {
		t.Fatalf("%s --version: %v", path, err)
	}
	return strings.SplitN(strings.TrimSpace(string(b)), "\n", 2)[0]
}

func wantVersion(t *testing.T, path, want string) {
	t.Helper()
	if got := versionOf(t, path); got != want {
		t.Errorf("%s --version = %q, want %q", path, got, want)
	}
}

func wantOutput(t *testing.T, out string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q", w)
		}
	}
}

func TestDownloadsWithSetupEnvtest(t *testing.T) {
	p := scriptPins(t)
	kubeWant, etcdWant := "Kubernetes "+p.kube, "etcd Version: "+strings.TrimPrefix(p.etcd, "v")
	rel := serveRelease(t, p.kube, archive(t, map[string][]byte{
		"kube-apiserver": standIn(kubeWant),
		"etcd":           standIn(etcdWant),
		"kubectl":        standIn("Client Version: " + p.kube),
	}))
	stub, log := buildStub(t, p)
	out := filepath.Join(t.TempDir(), "k8s")
	env := []string{"SETUP_ENVTEST=" + setupEnvtest(t), "ENVTEST_INDEX_URL=" + rel.index(), "CONTROL_PLANE_BUILD=" + stub}

	start := time.Now()
	got := run(t, out, env...)
	t.Logf("download path: %s", time.Since(start))
	wantOutput(t, got,
		"control plane: kube-apiserver "+p.kube+" downloaded",
		"control plane: etcd "+p.etcd+" downloaded",
		"control plane: kube-apiserver "+p.kube+" downloaded, etcd "+p.etcd+" downloaded; in "+out)
	if b := built(t, log); len(b) > 0 {
		t.Errorf("the build ran for %v although the download succeeded", b)
	}
	if n := rel.downloads.Load(); n != 1 {
		t.Errorf("archive downloaded %d times, want 1", n)
	}
	wantVersion(t, filepath.Join(out, "kube-apiserver"), kubeWant)
	wantVersion(t, filepath.Join(out, "etcd"), etcdWant)
	if fi, err := os.Lstat(filepath.Join(out, "kubectl")); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("kubectl is not the release's (a regular file) in %s: %v", out, err)
	} else {
		wantVersion(t, filepath.Join(out, "kubectl"), "Client Version: "+p.kube)
	}
	if left, _ := filepath.Glob(out + ".envtest.*"); len(left) > 0 {
		t.Errorf("setup-envtest's scratch store left behind: %v", left)
	}

	// Present: nothing fetched, nothing built.
	got = run(t, out, env...)
	wantOutput(t, got, "control plane: kube-apiserver "+p.kube+" and etcd "+p.etcd+" present in "+out)
	if n := rel.downloads.Load(); n != 1 {
		t.Errorf("archive downloaded again (%d downloads) although the binaries were present", n)
	}
	if b := built(t, log); len(b) > 0 {
		t.Errorf("the build ran for %v although the binaries were present", b)
	}
}

// An envtest release whose etcd is another patch than the pinned one: the
// release's kube-apiserver is used, etcd is built.
func TestBuildsWhatTheReleaseDoesNotPin(t *testing.T) {
	p := scriptPins(t)
	rel := serveRelease(t, p.kube, archive(t, map[string][]byte{
		"kube-apiserver": standIn("Kubernetes " + p.kube),
		"etcd":           standIn("etcd Version: 3.0.0"),
		"kubectl":        standIn("Client Version: " + p.kube),
	}))
	stub, log := buildStub(t, p)
	out := filepath.Join(t.TempDir(), "k8s")
	got := run(t, out, "SETUP_ENVTEST="+setupEnvtest(t), "ENVTEST_INDEX_URL="+rel.index(), "CONTROL_PLANE_BUILD="+stub)
	wantOutput(t, got,
		"control plane: kube-apiserver "+p.kube+" downloaded",
		"does not report etcd "+p.etcd,
		"control plane: kube-apiserver "+p.kube+" downloaded, etcd "+p.etcd+" built by $CONTROL_PLANE_BUILD")
	if b := built(t, log); strings.Join(b, " ") != "etcd" {
		t.Errorf("built %v, want [etcd]", b)
	}
	wantVersion(t, filepath.Join(out, "etcd"), "etcd Version: "+strings.TrimPrefix(p.etcd, "v"))
}

// An archive that does not match the index's sha512 is not used.
func TestRefusesAnArchiveThatDoesNotMatchItsHash(t *testing.T) {
	p := scriptPins(t)
	tarball := archive(t, map[string][]byte{
		"kube-apiserver": standIn("Kubernetes " + p.kube),
		"etcd":           standIn("etcd Version: " + strings.TrimPrefix(p.etcd, "v")),
	})
	other := sha512.Sum512([]byte("another archive"))
	rel := serveReleaseWithHash(t, p.kube, tarball, hex.EncodeToString(other[:]))
	stub, log := buildStub(t, p)
	out := filepath.Join(t.TempDir(), "k8s")
	got := run(t, out, "SETUP_ENVTEST="+setupEnvtest(t), "ENVTEST_INDEX_URL="+rel.index(), "CONTROL_PLANE_BUILD="+stub)
	wantOutput(t, got,
		"control plane: setup-envtest could not download envtest",
		"checksum mismatch",
		"control plane: falling back to building kube-apiserver etcd from Go modules")
	if n := rel.downloads.Load(); n != 1 {
		t.Errorf("archive downloaded %d times, want 1", n)
	}
	if b := built(t, log); strings.Join(b, " ") != "kube-apiserver etcd" {
		t.Errorf("built %v, want [kube-apiserver etcd]", b)
	}
}

// The release storage accepts connections and never answers: the index
// timeout (ENVTEST_INDEX_TIMEOUT) bounds the wait.
func TestFallsBackToTheBuildWhenTheIndexHangs(t *testing.T) {
	p := scriptPins(t)
	unblock := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { <-unblock }))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(unblock) }) // runs first: lets srv.Close finish
	stub, log := buildStub(t, p)
	out := filepath.Join(t.TempDir(), "k8s")
	start := time.Now()
	got := run(t, out, "SETUP_ENVTEST="+setupEnvtest(t), "ENVTEST_INDEX_URL="+srv.URL+"/envtest-releases.yaml",
		"ENVTEST_INDEX_TIMEOUT=1", "CONTROL_PLANE_BUILD="+stub)
	if d := time.Since(start); d > 8*time.Second {
		t.Errorf("the fallback took %s with ENVTEST_INDEX_TIMEOUT=1", d)
	}
	wantOutput(t, got,
		"control plane: the envtest release index cannot be read (timeout 1s)",
		"control plane: falling back to building kube-apiserver etcd from Go modules")
	if b := built(t, log); strings.Join(b, " ") != "kube-apiserver etcd" {
		t.Errorf("built %v, want [kube-apiserver etcd]", b)
	}
}

// The release storage refuses connections (a closed port on 127.0.0.1): the
// script falls back to the build at once.
func TestFallsBackToTheBuildWhenTheIndexIsUnreachable(t *testing.T) {
	p := scriptPins(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String() + "/envtest-releases.yaml"
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	stub, log := buildStub(t, p)
	out := filepath.Join(t.TempDir(), "k8s")
	start := time.Now()
	got := run(t, out, "SETUP_ENVTEST="+setupEnvtest(t), "ENVTEST_INDEX_URL="+closed, "CONTROL_PLANE_BUILD="+stub)
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("the fallback took %s: a refused connection should fail fast", d)
	}
	wantOutput(t, got,
		"control plane: the envtest release index cannot be read",
		"connection refused",
		"control plane: falling back to building kube-apiserver etcd from Go modules",
		"control plane: kube-apiserver "+p.kube+" built by $CONTROL_PLANE_BUILD, etcd "+p.etcd+" built by $CONTROL_PLANE_BUILD")
	if b := built(t, log); strings.Join(b, " ") != "kube-apiserver etcd" {
		t.Errorf("built %v, want [kube-apiserver etcd]", b)
	}
	wantVersion(t, filepath.Join(out, "kube-apiserver"), "Kubernetes "+p.kube)
	wantVersion(t, filepath.Join(out, "etcd"), "etcd Version: "+strings.TrimPrefix(p.etcd, "v"))
}

// ENVTEST_DOWNLOAD=0 goes straight to the build without asking the index.
func TestDownloadCanBeSkipped(t *testing.T) {
	p := scriptPins(t)
	rel := serveRelease(t, p.kube, archive(t, map[string][]byte{}))
	stub, log := buildStub(t, p)
	out := filepath.Join(t.TempDir(), "k8s")
	got := run(t, out, "SETUP_ENVTEST="+setupEnvtest(t), "ENVTEST_INDEX_URL="+rel.index(), "CONTROL_PLANE_BUILD="+stub, "ENVTEST_DOWNLOAD=0")
	wantOutput(t, got, "download skipped (ENVTEST_DOWNLOAD=0)", "falling back to building")
	if b := built(t, log); strings.Join(b, " ") != "kube-apiserver etcd" {
		t.Errorf("built %v, want [kube-apiserver etcd]", b)
	}
	if n := rel.downloads.Load(); n != 0 {
		t.Errorf("archive downloaded %d times with ENVTEST_DOWNLOAD=0", n)
	}
}
