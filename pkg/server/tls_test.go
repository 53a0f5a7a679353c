package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"sigs.k8s.io/controller-runtime/pkg/certwatcher"
)

// tlsTestCA signs the serving certificates of the watcher tests.
type tlsTestCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTLSTestCA(t *testing.T) *tlsTestCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "rotor test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &tlsTestCA{cert: cert, key: key, pool: pool}
}

// issue returns a PEM certificate and key for rotor.test with the serial.
func (ca *tlsTestCA) issue(t *testing.T, serial int64) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: "rotor.test"},
		DNSNames:     []string{"rotor.test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
}

// tlsTestSecretVolume lays files out the way the kubelet mounts a Secret
// volume and updates them the way it does: each version in a timestamped
// directory, ..data a symlink to the current one, swapped by an atomic
// rename, and the visible files symlinks through ..data.
type tlsTestSecretVolume struct {
	dir     string
	version int
	current string
}

func (v *tlsTestSecretVolume) write(t *testing.T, files map[string][]byte) {
	t.Helper()
	v.version++
	versionDir := fmt.Sprintf("..2026_01_01_00_00_%02d.%d", v.version, os.Getpid())
	if err := os.Mkdir(filepath.Join(v.dir, versionDir), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(v.dir, versionDir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tmp := filepath.Join(v.dir, "..data_tmp")
	if err := os.Symlink(versionDir, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(v.dir, "..data")); err != nil {
		t.Fatal(err)
	}
	for name := range files {
		link := filepath.Join(v.dir, name)
		if _, err := os.Lstat(link); os.IsNotExist(err) {
			if err := os.Symlink(filepath.Join("..data", name), link); err != nil {
				t.Fatal(err)
			}
		}
	}
	if v.current != "" {
		if err := os.RemoveAll(filepath.Join(v.dir, v.current)); err != nil {
			t.Fatal(err)
		}
	}
	v.current = versionDir
}

// startCertWatcher runs the certificate watcher New uses until the test ends,
// polling every 200ms besides its file events so the tests stay short.
func startCertWatcher(t *testing.T, dir string) *certwatcher.CertWatcher {
	t.Helper()
	w, err := newCertWatcher(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"))
	if err != nil {
		t.Fatal(err)
	}
	w.WithWatchInterval(200 * time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = w.Start(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return w
}

// serveReloadingTLS serves HTTPS on loopback the way New does: a TLS
// listener whose certificate comes from the watcher.
func serveReloadingTLS(t *testing.T, w *certwatcher.CertWatcher) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tlsLn := tls.NewListener(ln, tlsConfig(w))
	srv := &http.Server{
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }),
		ReadHeaderTimeout: 5 * time.Second,
	}
	go func() { _ = srv.Serve(tlsLn) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

// servedSerial makes a fresh, verified HTTPS request for rotor.test and
// returns the serial of the certificate the server presented.
func servedSerial(addr string, roots *x509.CertPool) (int64, error) {
	client := &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			DisableKeepAlives: true, // a new handshake every time
			TLSClientConfig:   &tls.Config{RootCAs: roots, ServerName: "rotor.test", MinVersion: tls.VersionTLS12},
		},
	}
	resp, err := client.Get("https://" + addr + "/")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != http.StatusOK || string(body) != "ok" {
		return 0, fmt.Errorf("got %d %q", resp.StatusCode, body)
	}
	return resp.TLS.PeerCertificates[0].SerialNumber.Int64(), nil
}

func TestCertWatcherServesReplacedCertificateWithoutRestart(t *testing.T) {
	g := NewWithT(t)
	ca := newTLSTestCA(t)
	vol := &tlsTestSecretVolume{dir: t.TempDir()}
	cert1, key1 := ca.issue(t, 1001)
	vol.write(t, map[string][]byte{"tls.crt": cert1, "tls.key": key1})

	addr := serveReloadingTLS(t, startCertWatcher(t, vol.dir))
	g.Expect(servedSerial(addr, ca.pool)).To(Equal(int64(1001)))

	// cert-manager renews: the kubelet swaps the Secret volume's files.
	cert2, key2 := ca.issue(t, 1002)
	vol.write(t, map[string][]byte{"tls.crt": cert2, "tls.key": key2})
	g.Eventually(func() (int64, error) { return servedSerial(addr, ca.pool) }).
		WithTimeout(5 * time.Second).WithPolling(200 * time.Millisecond).Should(Equal(int64(1002)))
	g.Consistently(func() (int64, error) { return servedSerial(addr, ca.pool) }).
		WithTimeout(1500 * time.Millisecond).WithPolling(300 * time.Millisecond).Should(Equal(int64(1002)))
}

func TestCertWatcherKeepsLastGoodCertificate(t *testing.T) {
	g := NewWithT(t)
	ca := newTLSTestCA(t)
	vol := &tlsTestSecretVolume{dir: t.TempDir()}
	cert1, key1 := ca.issue(t, 2001)
	vol.write(t, map[string][]byte{"tls.crt": cert1, "tls.key": key1})
	addr := serveReloadingTLS(t, startCertWatcher(t, vol.dir))
	g.Expect(servedSerial(addr, ca.pool)).To(Equal(int64(2001)))

	// A certificate whose key does not match (a half-updated pair): the
	// last good certificate keeps being served, past several re-reads.
	cert2, _ := ca.issue(t, 2002)
	_, otherKey := ca.issue(t, 2003)
	vol.write(t, map[string][]byte{"tls.crt": cert2, "tls.key": otherKey})
	g.Consistently(func() (int64, error) { return servedSerial(addr, ca.pool) }).
		WithTimeout(2500 * time.Millisecond).WithPolling(250 * time.Millisecond).Should(Equal(int64(2001)))

	// The completed pair is picked up.
	cert3, key3 := ca.issue(t, 2004)
	vol.write(t, map[string][]byte{"tls.crt": cert3, "tls.key": key3})
	g.Eventually(func() (int64, error) { return servedSerial(addr, ca.pool) }).
		WithTimeout(5 * time.Second).WithPolling(200 * time.Millisecond).Should(Equal(int64(2004)))
}

func TestCertWatcherRequiresCertificateAtStart(t *testing.T) {
	g := NewWithT(t)
	dir := t.TempDir()
	_, err := newCertWatcher(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"))
	g.Expect(errors.Is(err, fs.ErrNotExist)).To(BeTrue(), "missing files: %v", err)

	garbage := filepath.Join(dir, "garbage.pem")
	g.Expect(os.WriteFile(garbage, []byte("not a certificate"), 0o600)).To(Succeed())
	_, err = newCertWatcher(garbage, garbage)
	g.Expect(err).To(MatchError(ContainSubstring("loading TLS certificate " + garbage)))
}
