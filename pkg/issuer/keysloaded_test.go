package issuer

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"

	"rotor.dev/rotor/pkg/keys"
)

// In the first moments after start, before the signing keys are loaded,
// /keys used to answer {"keys":[]} with max-age=900 and discovery listed no
// algorithm with max-age=300: a verifier honouring Cache-Control (the
// Kubernetes API server) would refuse every token for fifteen minutes.
func TestDiscoveryAndKeysAreNeverServedIncomplete(t *testing.T) {
	g := NewWithT(t)
	set := keys.NewSet()
	i := New(Config{URL: "https://rotor.example", JWKSMaxAge: 15 * time.Minute}, Deps{Keys: set, Clients: testClients(t, publicClient("rotor", "rotor"))})
	get := func(path string) *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		i.Handler().ServeHTTP(w, httptest.NewRequest(http.MethodGet, path, nil))
		return w
	}
	for _, path := range []string{PathJWKS, PathDiscovery} {
		w := get(path)
		g.Expect(w.Code).To(Equal(http.StatusServiceUnavailable), path)
		g.Expect(w.Header().Get("Retry-After")).To(Equal("1"), path)
		g.Expect(w.Header().Get("Cache-Control")).To(Equal("no-store"), path)
		g.Expect(w.Body.String()).To(ContainSubstring("temporarily_unavailable"), path)
	}

	k, err := keys.Generate(keys.ES256)
	g.Expect(err).NotTo(HaveOccurred())
	k.State, k.PublishedAt, k.ActivatedAt = keys.StateActive, time.Now(), time.Now()
	sec, err := keys.NewSecret("rotor-system", "rotor-signing-key-1", k)
	g.Expect(err).NotTo(HaveOccurred())
	set.Update([]corev1.Secret{*sec})

	w := get(PathJWKS)
	g.Expect(w.Code).To(Equal(http.StatusOK))
	g.Expect(w.Header().Get("Cache-Control")).To(Equal("public, max-age=900"))
	g.Expect(w.Body.String()).To(ContainSubstring(k.KID))
	w = get(PathDiscovery)
	g.Expect(w.Code).To(Equal(http.StatusOK))
	g.Expect(w.Body.String()).To(ContainSubstring(`"id_token_signing_alg_values_supported":["ES256"]`))
}
