package devcert_test

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"

	. "github.com/onsi/gomega"

	"rotor.dev/rotor/pkg/dev/devcert"
)

// The certificate serves loopback names under the CA, the key is private,
// and a second run keeps what clients already trust.
func TestGenerateServesLoopbackAndIsKeptAcrossRuns(t *testing.T) {
	g := NewWithT(t)
	dir := filepath.Join(t.TempDir(), "tls")
	f, err := devcert.Generate(dir)
	g.Expect(err).NotTo(HaveOccurred())

	pair, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	g.Expect(err).NotTo(HaveOccurred())
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	g.Expect(err).NotTo(HaveOccurred())
	caPEM, err := os.ReadFile(f.CA)
	g.Expect(err).NotTo(HaveOccurred())
	roots := x509.NewCertPool()
	g.Expect(roots.AppendCertsFromPEM(caPEM)).To(BeTrue())
	for _, name := range []string{"localhost", "127.0.0.1", "::1"} {
		_, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: name})
		g.Expect(err).NotTo(HaveOccurred(), name)
	}
	_, err = leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: "rotor.example.com"})
	g.Expect(err).To(HaveOccurred(), "only loopback names")

	st, err := os.Stat(f.Key)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(st.Mode().Perm()).To(Equal(os.FileMode(0o600)))
	st, err = os.Stat(dir)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(st.Mode().Perm()).To(Equal(os.FileMode(0o700)))

	again, err := devcert.Generate(dir)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(again).To(Equal(f))
	caAgain, err := os.ReadFile(f.CA)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(caAgain).To(Equal(caPEM), "a valid CA is kept")

	g.Expect(os.Remove(f.Cert)).To(Succeed())
	_, err = devcert.Generate(dir)
	g.Expect(err).NotTo(HaveOccurred())
	caNew, err := os.ReadFile(f.CA)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(caNew).NotTo(Equal(caPEM), "missing files make everything anew")
}
