package server

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"os"
	"sync"
	"time"
)

// certReloader serves the certificate from files that cert-manager (or a
// mounted kubernetes.io/tls Secret) replaces on renewal, so a renewed
// certificate is picked up without a restart. It re-reads the files at most
// once per second and compares their contents: modification times can
// repeat (coarse file-system clocks, a volume swapped within one tick).
type certReloader struct {
	certFile, keyFile string

	mu              sync.Mutex
	cert            *tls.Certificate
	certPEM, keyPEM []byte
	checked         time.Time
}

func newCertReloader(certFile, keyFile string) (*certReloader, error) {
	r := &certReloader{certFile: certFile, keyFile: keyFile}
	if _, err := r.load(time.Now()); err != nil {
		return nil, err
	}
	return r, nil
}

// GetCertificate is tls.Config.GetCertificate.
func (r *certReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return r.load(time.Now())
}

func (r *certReloader) load(now time.Time) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cert != nil && now.Sub(r.checked) < time.Second {
		return r.cert, nil
	}
	r.checked = now
	certPEM, err := os.ReadFile(r.certFile)
	var keyPEM []byte
	if err == nil {
		keyPEM, err = os.ReadFile(r.keyFile)
	}
	if err != nil {
		if r.cert != nil {
			return r.cert, nil // keep serving the last good certificate
		}
		return nil, fmt.Errorf("loading TLS certificate %s: %w", r.certFile, err)
	}
	if r.cert != nil && bytes.Equal(certPEM, r.certPEM) && bytes.Equal(keyPEM, r.keyPEM) {
		return r.cert, nil
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		if r.cert != nil {
			return r.cert, nil // a half-written pair; try again next time
		}
		return nil, fmt.Errorf("loading TLS certificate %s: %w", r.certFile, err)
	}
	r.cert, r.certPEM, r.keyPEM = &cert, certPEM, keyPEM
	return r.cert, nil
}
