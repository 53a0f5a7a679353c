package kubeauthn_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	. "github.com/onsi/gomega"
	apiserverv1 "k8s.io/apiserver/pkg/apis/apiserver/v1"
	"sigs.k8s.io/yaml"

	"rotor.dev/rotor/pkg/kubeauthn"
)

func TestConfigTrustsRotorWithPrefixedNames(t *testing.T) {
	g := NewWithT(t)
	cfg, err := kubeauthn.Config(kubeauthn.Options{
		IssuerURL: "https://rotor.example:8443", CAPEM: []byte("-----BEGIN CERTIFICATE-----\n...\n"),
		Audiences: []string{"kubernetes"}, Prefix: "rotor:",
	})
	g.Expect(err).NotTo(HaveOccurred())
	out, err := kubeauthn.YAML(cfg)
	g.Expect(err).NotTo(HaveOccurred())
	back := &apiserverv1.AuthenticationConfiguration{}
	g.Expect(yaml.UnmarshalStrict(out, back)).To(Succeed())
	g.Expect(back.APIVersion).To(Equal("apiserver.config.k8s.io/v1"))
	g.Expect(back.Kind).To(Equal("AuthenticationConfiguration"))
	g.Expect(back.JWT).To(HaveLen(1))
	j := back.JWT[0]
	g.Expect(j.Issuer.URL).To(Equal("https://rotor.example:8443"))
	g.Expect(j.Issuer.Audiences).To(Equal([]string{"kubernetes"}))
	g.Expect(j.Issuer.AudienceMatchPolicy).To(BeEmpty(), "one audience is matched exactly")
	g.Expect(j.Issuer.CertificateAuthority).To(HavePrefix("-----BEGIN CERTIFICATE-----"))
	g.Expect(j.ClaimMappings.Username.Claim).To(Equal("sub"))
	g.Expect(*j.ClaimMappings.Username.Prefix).To(Equal("rotor:"))
	g.Expect(j.ClaimMappings.Groups.Claim).To(Equal("groups"))
	g.Expect(*j.ClaimMappings.Groups.Prefix).To(Equal("rotor:"))
	g.Expect(j.UserValidationRules).To(HaveLen(1))
	g.Expect(j.UserValidationRules[0].Expression).To(ContainSubstring(`"rotor:system:"`))

	two, err := kubeauthn.Config(kubeauthn.Options{IssuerURL: "https://rotor.example", Audiences: []string{"a", "b"}})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(two.JWT[0].Issuer.AudienceMatchPolicy).To(Equal(apiserverv1.AudienceMatchPolicyMatchAny), "required for several")
	g.Expect(*two.JWT[0].ClaimMappings.Username.Prefix).To(BeEmpty(), "an empty prefix is explicit, not the API server's default")
}

func TestConfigRefusesWhatTheAPIServerWould(t *testing.T) {
	for name, o := range map[string]kubeauthn.Options{
		"an http issuer":           {IssuerURL: "http://rotor.example", Audiences: []string{"k"}},
		"an issuer with a query":   {IssuerURL: "https://rotor.example?x=1", Audiences: []string{"k"}},
		"an issuer with a user":    {IssuerURL: "https://u@rotor.example", Audiences: []string{"k"}},
		"no audience":              {IssuerURL: "https://rotor.example"},
		"an issuer that is no URL": {IssuerURL: "https://rotor example/%zz", Audiences: []string{"k"}},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := kubeauthn.Config(o)
			NewWithT(t).Expect(err).To(HaveOccurred())
		})
	}
}

func TestCheckAlgorithmsRefusesAnEdDSAIssuer(t *testing.T) {
	g := NewWithT(t)
	g.Expect(kubeauthn.CheckAlgorithms([]string{"ES256"})).To(Succeed())
	g.Expect(kubeauthn.CheckAlgorithms([]string{"EdDSA", "RS256"})).To(Succeed(), "one accepted algorithm is enough")
	err := kubeauthn.CheckAlgorithms([]string{"EdDSA"})
	g.Expect(errors.Is(err, kubeauthn.ErrAlgorithm)).To(BeTrue())
	g.Expect(err.Error()).To(ContainSubstring("--key-algorithm ES256"))
	g.Expect(kubeauthn.CheckAlgorithms(nil)).To(MatchError(kubeauthn.ErrAlgorithm))
}

func TestDiscoverReadsAlgorithmsAndChecksTheIssuer(t *testing.T) {
	g := NewWithT(t)
	var issuer string
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.Expect(r.URL.Path).To(Equal("/.well-known/openid-configuration"))
		_, _ = w.Write([]byte(`{"issuer":"` + issuer + `","access_token_signing_alg_values_supported":["EdDSA"]}`))
	}))
	defer srv.Close()
	issuer = srv.URL
	algs, err := kubeauthn.Discover(context.Background(), srv.Client(), srv.URL)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(algs).To(Equal([]string{"EdDSA"}))

	issuer = srv.URL + "/"
	_, err = kubeauthn.Discover(context.Background(), srv.Client(), srv.URL)
	g.Expect(err).To(MatchError(ContainSubstring("the API server would refuse it")))
}
