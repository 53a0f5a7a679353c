package keys_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/golang-jwt/jwt/v5"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"rotor.dev/rotor/pkg/keys"
)

func b64(t *testing.T, s string) []byte {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestThumbprint(t *testing.T) {
	for name, tc := range map[string]struct {
		pub  func(t *testing.T) crypto.PublicKey
		want string
	}{
		"the RSA key of RFC 7638 section 3.1 has the thumbprint the RFC publishes": {
			pub: func(t *testing.T) crypto.PublicKey {
				n := "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
				return &rsa.PublicKey{N: new(big.Int).SetBytes(b64(t, n)), E: 65537}
			},
			want: "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs",
		},
		"the Ed25519 key of RFC 8037 appendix A.3 has the thumbprint the RFC publishes": {
			pub: func(t *testing.T) crypto.PublicKey {
				return ed25519.PublicKey(b64(t, "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"))
			},
			want: "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k",
		},
	} {
		t.Run(name, func(t *testing.T) {
			g := NewWithT(t)
			got, err := keys.Thumbprint(tc.pub(t))
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(got).To(Equal(tc.want))
		})
	}
}

func TestGeneratedKeys(t *testing.T) {
	for name, tc := range map[string]struct {
		alg    keys.Algorithm
		method jwt.SigningMethod
		jose   jose.SignatureAlgorithm
	}{
		"an ES256 key signs with golang-jwt's ES256 and has go-jose's thumbprint as kid": {keys.ES256, jwt.SigningMethodES256, jose.ES256},
		"an EdDSA key signs with golang-jwt's EdDSA and has go-jose's thumbprint as kid": {keys.EdDSA, jwt.SigningMethodEdDSA, jose.EdDSA},
		"an RS256 key signs with golang-jwt's RS256 and has go-jose's thumbprint as kid": {keys.RS256, jwt.SigningMethodRS256, jose.RS256},
	} {
		t.Run(name, func(t *testing.T) {
			g := NewWithT(t)
			k, err := keys.Generate(tc.alg)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(k.Algorithm).To(Equal(tc.alg))

			// An independent implementation computes the same kid.
			tp, err := (&jose.JSONWebKey{Key: k.Public}).Thumbprint(crypto.SHA256)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(k.KID).To(Equal(base64.RawURLEncoding.EncodeToString(tp)))

			signed, err := jwt.NewWithClaims(tc.method, jwt.MapClaims{"sub": "x"}).SignedString(k.Signer)
			g.Expect(err).NotTo(HaveOccurred())
			_, err = jwt.Parse(signed, func(*jwt.Token) (any, error) { return k.Public, nil }, jwt.WithValidMethods([]string{tc.method.Alg()}))
			g.Expect(err).NotTo(HaveOccurred())

			// The PEM round-trips to the same key.
			p, err := k.PEM()
			g.Expect(err).NotTo(HaveOccurred())
			back, err := keys.Parse(tc.alg, p)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(back.KID).To(Equal(k.KID))
			g.Expect(back.Signer).To(BeAssignableToTypeOf(k.Signer))
		})
	}
}

func pkcs8(t *testing.T, priv any) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

func must[K any](k K, err error) K {
	if err != nil {
		panic(err)
	}
	return k
}

func TestParse(t *testing.T) {
	ec256 := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
	ec384 := must(ecdsa.GenerateKey(elliptic.P384(), rand.Reader))
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsa2048 := must(rsa.GenerateKey(rand.Reader, 2048))
	rsa1024 := must(rsa.GenerateKey(rand.Reader, 1024))
	pkcs1 := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsa2048)})

	for name, tc := range map[string]struct {
		alg     keys.Algorithm
		pem     []byte
		wantErr string // empty: accepted
	}{
		"a P-256 key is accepted for ES256":             {keys.ES256, pkcs8(t, ec256), ""},
		"an Ed25519 key is accepted for EdDSA":          {keys.EdDSA, pkcs8(t, ed), ""},
		"a 2048-bit RSA key is accepted for RS256":      {keys.RS256, pkcs8(t, rsa2048), ""},
		"a 1024-bit RSA key is too weak":                {keys.RS256, pkcs8(t, rsa1024), "RSA key of 1024 bits is too weak (at least 2048)"},
		"a P-384 key is the wrong curve for ES256":      {keys.ES256, pkcs8(t, ec384), "ES256 needs a P-256 key, got P-384"},
		"an ECDSA key does not sign RS256":              {keys.RS256, pkcs8(t, ec256), "an ECDSA key cannot sign RS256"},
		"an Ed25519 key does not sign ES256":            {keys.ES256, pkcs8(t, ed), "an Ed25519 key cannot sign ES256"},
		"an RSA key does not sign EdDSA":                {keys.EdDSA, pkcs8(t, rsa2048), "an RSA key cannot sign EdDSA"},
		"garbage is no PEM":                             {keys.ES256, []byte("not a key"), "no PEM block found"},
		"a PKCS#1 block is not PKCS#8":                  {keys.RS256, pkcs1, `PEM block is "RSA PRIVATE KEY", want a PKCS#8 "PRIVATE KEY"`},
		"a PEM block of garbage is not a key":           {keys.ES256, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("junk")}), "parsing PKCS#8 private key"},
		"a second PEM block is refused":                 {keys.ES256, append(pkcs8(t, ec256), pkcs8(t, ec256)...), "unexpected data after the PEM block"},
		"HS256 is not a signing algorithm rotor uses":   {"HS256", pkcs8(t, ec256), `unsupported signing algorithm "HS256"`},
		"none is never a signing algorithm (RFC 8725)":  {"none", pkcs8(t, ec256), `unsupported signing algorithm "none"`},
		"algorithm names are case-sensitive (RFC 7518)": {"es256", pkcs8(t, ec256), `unsupported signing algorithm "es256"`},
	} {
		t.Run(name, func(t *testing.T) {
			g := NewWithT(t)
			k, err := keys.Parse(tc.alg, tc.pem)
			if tc.wantErr != "" {
				g.Expect(err).To(MatchError(ContainSubstring(tc.wantErr)))
				g.Expect(k).To(BeNil())
				return
			}
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(k.Algorithm).To(Equal(tc.alg))
			g.Expect(k.Signer.Public()).To(Equal(k.Public))
		})
	}
}

func TestParseAlgorithm(t *testing.T) {
	for in, want := range map[string]keys.Algorithm{"ES256": keys.ES256, "EdDSA": keys.EdDSA, "RS256\n": keys.RS256, "HS256": "", "": "", "RS512": ""} {
		t.Run("parsing "+in, func(t *testing.T) {
			g := NewWithT(t)
			got, err := keys.ParseAlgorithm(in)
			if want == "" {
				g.Expect(err).To(MatchError(ContainSubstring("unsupported signing algorithm")))
				return
			}
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(got).To(Equal(want))
		})
	}
}

// secret stores a fresh key of alg in a Secret named name, with state and
// lifecycle times.
func secret(t *testing.T, name string, alg keys.Algorithm, state keys.State, published, activated, retired time.Time) (*corev1.Secret, *keys.Key) {
	t.Helper()
	k, err := keys.Generate(alg)
	if err != nil {
		t.Fatal(err)
	}
	k.State, k.PublishedAt, k.ActivatedAt, k.RetiredAt, k.SecretName = state, published, activated, retired, name
	sec, err := keys.NewSecret("rotor-system", name, k)
	if err != nil {
		t.Fatal(err)
	}
	sec.UID = types.UID("uid-" + name)
	sec.ResourceVersion = "1"
	return sec, k
}

func TestFromSecret(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	good, goodKey := secret(t, "good", keys.ES256, keys.StateRetired, t0, t0.Add(time.Hour), t0.Add(2*time.Hour))

	for name, tc := range map[string]struct {
		edit    func(*corev1.Secret)
		wantErr string
	}{
		"a Secret written by NewSecret reads back with its lifecycle": {func(*corev1.Secret) {}, ""},
		"a Secret of another type is refused":                         {func(s *corev1.Secret) { s.Type = corev1.SecretTypeOpaque }, `has type "Opaque"`},
		"a Secret without algorithm is refused":                       {func(s *corev1.Secret) { delete(s.Data, keys.DataAlgorithm) }, `no "algorithm" in data`},
		"a Secret without key.pem is refused":                         {func(s *corev1.Secret) { delete(s.Data, keys.DataKey) }, `no "key.pem" in data`},
		"a Secret whose algorithm does not fit its key is refused":    {func(s *corev1.Secret) { s.Data[keys.DataAlgorithm] = []byte("RS256") }, "an ECDSA key cannot sign RS256"},
		"a Secret with an unknown state is refused":                   {func(s *corev1.Secret) { s.Labels[keys.StateLabel] = "primary" }, `unknown value "primary"`},
		"a Secret with an unreadable time is refused":                 {func(s *corev1.Secret) { s.Annotations[keys.RetiredAtAnnotation] = "yesterday" }, "annotation identity.rotor.dev/retired-at"},
	} {
		t.Run(name, func(t *testing.T) {
			g := NewWithT(t)
			sec := good.DeepCopy()
			tc.edit(sec)
			k, err := keys.FromSecret(sec)
			if tc.wantErr != "" {
				g.Expect(err).To(MatchError(ContainSubstring(tc.wantErr)))
				return
			}
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(k.KID).To(Equal(goodKey.KID))
			g.Expect(k.State).To(Equal(keys.StateRetired))
			g.Expect(k.PublishedAt).To(Equal(t0))
			g.Expect(k.ActivatedAt).To(Equal(t0.Add(time.Hour)))
			g.Expect(k.RetiredAt).To(Equal(t0.Add(2 * time.Hour)))
			g.Expect(k.SecretName).To(Equal("good"))
			g.Expect(sec.Annotations).To(Equal(map[string]string{
				keys.KIDAnnotation:         goodKey.KID,
				keys.PublishedAtAnnotation: "2026-01-02T03:04:05Z",
				keys.ActivatedAtAnnotation: "2026-01-02T04:04:05Z",
				keys.RetiredAtAnnotation:   "2026-01-02T05:04:05Z",
			}))
		})
	}
}

func TestFormatTimeNeverRoundsDown(t *testing.T) {
	g := NewWithT(t)
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	g.Expect(keys.FormatTime(t0)).To(Equal("2026-01-02T03:04:05Z"))
	g.Expect(keys.FormatTime(t0.Add(time.Millisecond))).To(Equal("2026-01-02T03:04:06Z"))
	g.Expect(keys.FormatTime(t0.In(time.FixedZone("x", 3600)))).To(Equal("2026-01-02T03:04:05Z"))
}

func TestPickActive(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	k := func(name string, state keys.State, activated time.Time) *keys.Key {
		return &keys.Key{KID: "kid-" + name, SecretName: name, State: state, ActivatedAt: activated}
	}
	for name, tc := range map[string]struct {
		keys []*keys.Key
		want string // secret name, "" for none
	}{
		"with no active key there is none":          {[]*keys.Key{k("a", keys.StateNext, time.Time{}), k("b", keys.StateRetired, t0)}, ""},
		"the later activation wins":                 {[]*keys.Key{k("b", keys.StateActive, t0.Add(time.Second)), k("a", keys.StateActive, t0)}, "b"},
		"the later activation wins whatever order":  {[]*keys.Key{k("a", keys.StateActive, t0), k("b", keys.StateActive, t0.Add(time.Second))}, "b"},
		"a tie goes to the greater name":            {[]*keys.Key{k("b", keys.StateActive, t0), k("a", keys.StateActive, t0)}, "b"},
		"a retired key never wins however recent":   {[]*keys.Key{k("a", keys.StateActive, t0), k("z", keys.StateRetired, t0.Add(time.Hour))}, "a"},
		"an active key with no time loses to any":   {[]*keys.Key{k("z", keys.StateActive, time.Time{}), k("a", keys.StateActive, t0)}, "a"},
		"one active key among others is the winner": {[]*keys.Key{k("n", keys.StateNext, t0), k("a", keys.StateActive, t0)}, "a"},
	} {
		t.Run(name, func(t *testing.T) {
			g := NewWithT(t)
			got := keys.PickActive(tc.keys)
			if tc.want == "" {
				g.Expect(got).To(BeNil())
				return
			}
			g.Expect(got).NotTo(BeNil())
			g.Expect(got.SecretName).To(Equal(tc.want))
		})
	}
}

func TestNextKeysQueueByPublication(t *testing.T) {
	g := NewWithT(t)
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	ks := []*keys.Key{
		{SecretName: "c", State: keys.StateNext, PublishedAt: t0.Add(time.Minute)},
		{SecretName: "b", State: keys.StateNext, PublishedAt: t0},
		{SecretName: "x", State: keys.StateActive, PublishedAt: t0.Add(-time.Hour)},
		{SecretName: "a", State: keys.StateNext, PublishedAt: t0},
	}
	var names []string
	for _, k := range keys.NextKeys(ks) {
		names = append(names, k.SecretName)
	}
	g.Expect(names).To(Equal([]string{"a", "b", "c"}))
}
