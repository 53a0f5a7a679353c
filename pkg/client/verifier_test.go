package client_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	. "github.com/onsi/gomega"
	clocktesting "k8s.io/utils/clock/testing"

	"rotor.dev/rotor/pkg/client"
)

// testKey is a signing key and the JWK rotor would publish for it.
type testKey struct {
	kid    string
	method jwt.SigningMethod
	priv   crypto.Signer
}

func (k testKey) jwk() map[string]any {
	m := publicJWK(k.priv.Public())
	m["kid"], m["alg"], m["use"] = k.kid, k.method.Alg(), "sig"
	return m
}

var b64 = base64.RawURLEncoding

func publicJWK(pub crypto.PublicKey) map[string]any {
	switch p := pub.(type) {
	case *ecdsa.PublicKey:
		pt, err := p.Bytes()
		if err != nil {
			panic(err)
		}
		n := (len(pt) - 1) / 2
		crv := map[int]string{32: "P-256", 48: "P-384"}[n]
		return map[string]any{"kty": "EC", "crv": crv, "x": b64.EncodeToString(pt[1 : 1+n]), "y": b64.EncodeToString(pt[1+n:])}
	case ed25519.PublicKey:
		return map[string]any{"kty": "OKP", "crv": "Ed25519", "x": b64.EncodeToString(p)}
	case *rsa.PublicKey:
		return map[string]any{"kty": "RSA", "n": b64.EncodeToString(p.N.Bytes()), "e": b64.EncodeToString(big.NewInt(int64(p.E)).Bytes())}
	}
	panic("unsupported key")
}

// kidOf is a stand-in for rotor's thumbprint kid: unique and stable.
func kidOf(pub crypto.PublicKey) string {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		panic(err)
	}
	sum := sha256.Sum256(der)
	return b64.EncodeToString(sum[:8])
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func newKey(method jwt.SigningMethod, priv crypto.Signer) testKey {
	return testKey{kid: kidOf(priv.Public()), method: method, priv: priv}
}

// Keys are made once: RSA generation is slow on two cores.
var testKeys = sync.OnceValue(func() map[string]testKey {
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	return map[string]testKey{
		"es":    newKey(jwt.SigningMethodES256, must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))),
		"ed":    newKey(jwt.SigningMethodEdDSA, ed),
		"rs":    newKey(jwt.SigningMethodRS256, must(rsa.GenerateKey(rand.Reader, 2048))),
		"es2":   newKey(jwt.SigningMethodES256, must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))),
		"es3":   newKey(jwt.SigningMethodES256, must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))),
		"p384":  newKey(jwt.SigningMethodES384, must(ecdsa.GenerateKey(elliptic.P384(), rand.Reader))),
		"rs1k":  newKey(jwt.SigningMethodRS256, must(rsa.GenerateKey(rand.Reader, 1024))),
		"other": newKey(jwt.SigningMethodES256, must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))),
	}
})

// keyIssuer serves discovery and a JWKS that tests can change.
type keyIssuer struct {
	*httptest.Server
	mu        sync.Mutex
	issuer    string // discovery's issuer; the server URL when empty
	jwks      []map[string]any
	jwksHits  int
	jwksFails bool
	delay     time.Duration // before answering /keys
}

func newKeyIssuer(t *testing.T, keys ...testKey) *keyIssuer {
	k := &keyIssuer{}
	for _, key := range keys {
		k.jwks = append(k.jwks, key.jwk())
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		k.mu.Lock()
		iss := k.issuer
		k.mu.Unlock()
		if iss == "" {
			iss = k.URL
		}
		writeJSON(w, http.StatusOK, map[string]any{"issuer": iss, "jwks_uri": k.URL + "/keys"})
	})
	mux.HandleFunc("GET /keys", func(w http.ResponseWriter, r *http.Request) {
		k.mu.Lock()
		k.jwksHits++
		delay := k.delay
		k.mu.Unlock()
		if delay > 0 {
			select {
			case <-time.After(delay):
			case <-r.Context().Done():
				return
			}
		}
		k.mu.Lock()
		defer k.mu.Unlock()
		if k.jwksFails {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"keys": k.jwks})
	})
	k.Server = httptest.NewServer(mux)
	t.Cleanup(k.Close)
	return k
}

func (k *keyIssuer) hits() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.jwksHits
}

func (k *keyIssuer) publish(jwk map[string]any) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.jwks = append(k.jwks, jwk)
}

// tokenSpec is an access token before signing.
type tokenSpec struct {
	method jwt.SigningMethod
	key    any // what SignedString gets
	header map[string]any
	claims jwt.MapClaims
}

// validToken is what rotor would issue for alice, signed with k.
func validToken(k testKey, issuer string, now time.Time) tokenSpec {
	return tokenSpec{
		method: k.method,
		key:    k.priv,
		header: map[string]any{"typ": "at+jwt", "kid": k.kid},
		claims: jwt.MapClaims{
			"iss":       issuer,
			"sub":       "alice",
			"aud":       []string{"api"},
			"exp":       now.Add(20 * time.Minute).Unix(),
			"iat":       now.Unix(),
			"jti":       "jti-1",
			"client_id": "rotor",
			"groups":    []string{"dev", "ops"},
		},
	}
}

func (s tokenSpec) sign(t *testing.T) string {
	t.Helper()
	tok := jwt.NewWithClaims(s.method, s.claims)
	for k, v := range s.header {
		if v == nil {
			delete(tok.Header, k)
		} else {
			tok.Header[k] = v
		}
	}
	signed, err := tok.SignedString(s.key)
	if err != nil {
		t.Fatal(err)
	}
	return signed
}

func newVerifier(t *testing.T, k *keyIssuer, clk *clocktesting.FakeClock) *client.Verifier {
	t.Helper()
	v, err := client.NewVerifier(context.Background(), k.URL, "api", client.WithClock(clk))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestVerify(t *testing.T) {
	keys := testKeys()
	rsaPubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: must(x509.MarshalPKIXPublicKey(keys["rs"].priv.Public()))})
	for name, tc := range map[string]struct {
		key     string // signing key of the valid token
		mutate  func(s *tokenSpec, now time.Time)
		tamper  bool
		wantErr string // the full error; empty: accepted
		wantIs  error  // the golang-jwt reason, when there is one
	}{
		"an ES256 token is accepted": {key: "es"},
		"an EdDSA token is accepted": {key: "ed"},
		"an RS256 token is accepted": {key: "rs"},
		"typ application/at+jwt is accepted": {
			key:    "es",
			mutate: func(s *tokenSpec, _ time.Time) { s.header["typ"] = "application/at+jwt" },
		},
		"a token expired 30 seconds ago is accepted within the leeway": {
			key:    "es",
			mutate: func(s *tokenSpec, now time.Time) { s.claims["exp"] = now.Add(-30 * time.Second).Unix() },
		},
		"nbf 30 seconds ahead is accepted within the leeway": {
			key:    "es",
			mutate: func(s *tokenSpec, now time.Time) { s.claims["nbf"] = now.Add(30 * time.Second).Unix() },
		},
		"alg none is refused": {
			key: "es",
			mutate: func(s *tokenSpec, _ time.Time) {
				s.method, s.key = jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType
			},
			wantErr: "invalid access token: token signature is invalid: signing method none is invalid",
			wantIs:  jwt.ErrTokenSignatureInvalid,
		},
		"HS256 keyed with the RSA public key is refused (algorithm confusion)": {
			key:     "rs",
			mutate:  func(s *tokenSpec, _ time.Time) { s.method, s.key = jwt.SigningMethodHS256, rsaPubPEM },
			wantErr: "invalid access token: token signature is invalid: signing method HS256 is invalid",
			wantIs:  jwt.ErrTokenSignatureInvalid,
		},
		"an ES256 token naming the RSA key is refused: a key has one algorithm": {
			key:     "es",
			mutate:  func(s *tokenSpec, _ time.Time) { s.header["kid"] = keys["rs"].kid },
			wantErr: "invalid access token: token is unverifiable: error while executing keyfunc: alg ES256 does not match the key's RS256",
			wantIs:  jwt.ErrTokenUnverifiable,
		},
		"typ JWT is refused": {
			key:     "es",
			mutate:  func(s *tokenSpec, _ time.Time) { s.header["typ"] = "JWT" },
			wantErr: `invalid access token: token is unverifiable: error while executing keyfunc: typ "JWT" is not at+jwt`,
			wantIs:  jwt.ErrTokenUnverifiable,
		},
		"a token without typ is refused": {
			key:     "es",
			mutate:  func(s *tokenSpec, _ time.Time) { s.header["typ"] = nil },
			wantErr: `invalid access token: token is unverifiable: error while executing keyfunc: typ "" is not at+jwt`,
			wantIs:  jwt.ErrTokenUnverifiable,
		},
		"a token without kid is refused": {
			key:     "es",
			mutate:  func(s *tokenSpec, _ time.Time) { s.header["kid"] = nil },
			wantErr: "invalid access token: token is unverifiable: error while executing keyfunc: no kid",
			wantIs:  jwt.ErrTokenUnverifiable,
		},
		"another issuer is refused": {
			key:     "es",
			mutate:  func(s *tokenSpec, _ time.Time) { s.claims["iss"] = "https://evil.example" },
			wantErr: "invalid access token: token has invalid claims: token has invalid issuer",
			wantIs:  jwt.ErrTokenInvalidIssuer,
		},
		"the issuer with a trailing slash is refused: iss is compared exactly": {
			key:     "es",
			mutate:  func(s *tokenSpec, _ time.Time) { s.claims["iss"] = s.claims["iss"].(string) + "/" },
			wantErr: "invalid access token: token has invalid claims: token has invalid issuer",
			wantIs:  jwt.ErrTokenInvalidIssuer,
		},
		"another audience is refused": {
			key:     "es",
			mutate:  func(s *tokenSpec, _ time.Time) { s.claims["aud"] = []string{"rotor", "billing"} },
			wantErr: "invalid access token: token has invalid claims: token has invalid audience",
			wantIs:  jwt.ErrTokenInvalidAudience,
		},
		"a token without aud is refused": {
			key:     "es",
			mutate:  func(s *tokenSpec, _ time.Time) { delete(s.claims, "aud") },
			wantErr: "invalid access token: token has invalid claims: token is missing required claim: aud claim is required",
			wantIs:  jwt.ErrTokenRequiredClaimMissing,
		},
		"a token expired beyond the leeway is refused": {
			key:     "es",
			mutate:  func(s *tokenSpec, now time.Time) { s.claims["exp"] = now.Add(-61 * time.Second).Unix() },
			wantErr: "invalid access token: token has invalid claims: token is expired",
			wantIs:  jwt.ErrTokenExpired,
		},
		"a token without exp is refused": {
			key:     "es",
			mutate:  func(s *tokenSpec, _ time.Time) { delete(s.claims, "exp") },
			wantErr: "invalid access token: token has invalid claims: token is missing required claim: exp claim is required",
			wantIs:  jwt.ErrTokenRequiredClaimMissing,
		},
		"nbf in the future beyond the leeway is refused": {
			key:     "es",
			mutate:  func(s *tokenSpec, now time.Time) { s.claims["nbf"] = now.Add(2 * time.Minute).Unix() },
			wantErr: "invalid access token: token has invalid claims: token is not valid yet",
			wantIs:  jwt.ErrTokenNotValidYet,
		},
		"iat in the future beyond the leeway is refused": {
			key:     "es",
			mutate:  func(s *tokenSpec, now time.Time) { s.claims["iat"] = now.Add(2 * time.Minute).Unix() },
			wantErr: "invalid access token: token has invalid claims: token used before issued",
			wantIs:  jwt.ErrTokenUsedBeforeIssued,
		},
		"a token without sub is refused": {
			key:     "es",
			mutate:  func(s *tokenSpec, _ time.Time) { delete(s.claims, "sub") },
			wantErr: "invalid access token: no sub claim",
		},
		"a tampered payload is refused": {
			key:     "ed",
			tamper:  true,
			wantErr: "invalid access token: token signature is invalid: ed25519: verification error",
			wantIs:  jwt.ErrTokenSignatureInvalid,
		},
		"a signature by another key under a published kid is refused": {
			key:     "es",
			mutate:  func(s *tokenSpec, _ time.Time) { s.key = testKeys()["other"].priv },
			wantErr: "invalid access token: token signature is invalid: crypto/ecdsa: verification error",
			wantIs:  jwt.ErrTokenSignatureInvalid,
		},
	} {
		t.Run(name, func(t *testing.T) {
			g := NewWithT(t)
			clk := newClock()
			iss := newKeyIssuer(t, keys["es"], keys["ed"], keys["rs"])
			v := newVerifier(t, iss, clk)
			spec := validToken(keys[tc.key], iss.URL, clk.Now())
			if tc.mutate != nil {
				tc.mutate(&spec, clk.Now())
			}
			token := spec.sign(t)
			if tc.tamper {
				// Another subject under the original signature.
				parts := strings.Split(token, ".")
				spec.claims["sub"] = "mallory"
				parts[1] = b64.EncodeToString(must(json.Marshal(spec.claims)))
				token = strings.Join(parts, ".")
			}

			claims, err := v.Verify(context.Background(), token)
			if tc.wantErr == "" {
				g.Expect(err).NotTo(HaveOccurred())
				// Compare instants, not locations.
				claims.ExpiresAt, claims.IssuedAt, claims.NotBefore = claims.ExpiresAt.UTC(), claims.IssuedAt.UTC(), claims.NotBefore.UTC()
				g.Expect(*claims).To(Equal(client.Claims{
					Issuer:    iss.URL,
					Subject:   "alice",
					Audience:  []string{"api"},
					ClientID:  "rotor",
					Groups:    []string{"dev", "ops"},
					ID:        "jti-1",
					ExpiresAt: time.Unix(spec.claims["exp"].(int64), 0).UTC(),
					IssuedAt:  clk.Now(),
					NotBefore: notBefore(spec.claims),
				}))
				return
			}
			g.Expect(claims).To(BeNil())
			g.Expect(err).To(MatchError(tc.wantErr))
			g.Expect(err).To(MatchError(client.ErrInvalidToken))
			if tc.wantIs != nil {
				g.Expect(err).To(MatchError(tc.wantIs))
			}
		})
	}
}

func notBefore(c jwt.MapClaims) time.Time {
	if nbf, ok := c["nbf"].(int64); ok {
		return time.Unix(nbf, 0).UTC()
	}
	return time.Time{}.UTC()
}

func TestUnknownKidRefetchIsRateLimited(t *testing.T) {
	g := NewWithT(t)
	keys := testKeys()
	clk := newClock()
	iss := newKeyIssuer(t, keys["es"])
	v := newVerifier(t, iss, clk)
	g.Expect(iss.hits()).To(Equal(1))

	// es2 is rotor's next key, not yet seen by this verifier.
	iss.publish(keys["es2"].jwk())
	token := func() string { return validToken(keys["es2"], iss.URL, clk.Now()).sign(t) }
	unknown := `invalid access token: token is unverifiable: error while executing keyfunc: unknown kid "` + keys["es2"].kid + `"`

	_, err := v.Verify(context.Background(), token())
	g.Expect(err).To(MatchError(unknown), "the JWKS was fetched less than 10s ago")
	g.Expect(iss.hits()).To(Equal(1))

	clk.Step(10 * time.Second)
	claims, err := v.Verify(context.Background(), token())
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(claims.Subject).To(Equal("alice"))
	g.Expect(iss.hits()).To(Equal(2))

	// Made-up kids: one refetch per 10s at most, however many tokens.
	bogus := validToken(keys["es3"], iss.URL, clk.Now())
	clk.Step(10 * time.Second)
	for range 5 {
		_, err = v.Verify(context.Background(), bogus.sign(t))
		g.Expect(err).To(MatchError(`invalid access token: token is unverifiable: error while executing keyfunc: unknown kid "` + keys["es3"].kid + `"`))
	}
	g.Expect(iss.hits()).To(Equal(3))
	clk.Step(9 * time.Second)
	_, err = v.Verify(context.Background(), bogus.sign(t))
	g.Expect(err).To(HaveOccurred())
	g.Expect(iss.hits()).To(Equal(3))

	// Known kids never cause a fetch.
	_, err = v.Verify(context.Background(), validToken(keys["es"], iss.URL, clk.Now()).sign(t))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(iss.hits()).To(Equal(3))
}

// Requests that give up while their JWKS fetch is on its way (a client
// disconnecting, a short deadline) must not each be allowed a fetch, or
// unknown kids would make the issuer serve the JWKS at the caller's will.
func TestCancelledRequestsCountAgainstTheRefetchLimit(t *testing.T) {
	g := NewWithT(t)
	keys := testKeys()
	clk := newClock()
	iss := newKeyIssuer(t, keys["es"])
	v := newVerifier(t, iss, clk)
	iss.mu.Lock()
	iss.delay = time.Second
	iss.mu.Unlock()

	bogus := validToken(keys["es3"], iss.URL, clk.Now()).sign(t)
	clk.Step(10 * time.Second)
	for range 50 {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		_, err := v.Verify(ctx, bogus)
		cancel()
		g.Expect(err).To(HaveOccurred())
	}
	g.Expect(iss.hits()).To(Equal(2), "the first fetch and one refetch within the interval")
}

func TestAWithdrawnKeyStopsVerifyingWithinTheKeySetMaxAge(t *testing.T) {
	g := NewWithT(t)
	keys := testKeys()
	clk := newClock()
	iss := newKeyIssuer(t, keys["es"], keys["es2"])
	v := newVerifier(t, iss, clk)
	verify := func() error {
		_, err := v.Verify(context.Background(), validToken(keys["es2"], iss.URL, clk.Now()).sign(t))
		return err
	}
	g.Expect(verify()).To(Succeed())

	// The issuer withdraws es2 (deleted by hand after a compromise).
	iss.mu.Lock()
	iss.jwks = []map[string]any{keys["es"].jwk()}
	iss.mu.Unlock()
	clk.Step(client.DefaultKeySetMaxAge - time.Second)
	g.Expect(verify()).To(Succeed(), "the key set is still fresh: no fetch")
	g.Expect(iss.hits()).To(Equal(1))

	clk.Step(time.Second)
	g.Expect(verify()).To(MatchError(ContainSubstring("unknown kid")), "the stale key set was fetched again")
	g.Expect(iss.hits()).To(Equal(2))
	_, err := v.Verify(context.Background(), validToken(keys["es"], iss.URL, clk.Now()).sign(t))
	g.Expect(err).NotTo(HaveOccurred(), "the remaining key still verifies")

	// An issuer that cannot be reached leaves the known keys in use, and is
	// asked again no more often than the refetch interval.
	iss.mu.Lock()
	iss.jwksFails = true
	iss.mu.Unlock()
	clk.Step(client.DefaultKeySetMaxAge)
	before := iss.hits()
	for range 5 {
		_, err = v.Verify(context.Background(), validToken(keys["es"], iss.URL, clk.Now()).sign(t))
		g.Expect(err).NotTo(HaveOccurred())
	}
	g.Expect(iss.hits()).To(Equal(before+1), "one failed fetch, then the known keys")
}

func TestFailedRefetchKeepsTheKnownKeys(t *testing.T) {
	g := NewWithT(t)
	keys := testKeys()
	clk := newClock()
	iss := newKeyIssuer(t, keys["es"])
	v := newVerifier(t, iss, clk)
	iss.mu.Lock()
	iss.jwksFails = true
	iss.mu.Unlock()

	clk.Step(time.Minute)
	_, err := v.Verify(context.Background(), validToken(keys["es2"], iss.URL, clk.Now()).sign(t))
	g.Expect(err).To(MatchError(ContainSubstring("unknown kid")))
	g.Expect(iss.hits()).To(Equal(2))
	_, err = v.Verify(context.Background(), validToken(keys["es"], iss.URL, clk.Now()).sign(t))
	g.Expect(err).NotTo(HaveOccurred())
}

func TestJWKSKeysThatAreNotUsed(t *testing.T) {
	keys := testKeys()
	es := keys["es"]
	withKid := func(kid string, m map[string]any) map[string]any {
		m["kid"] = kid
		return m
	}
	jwkOf := func(k testKey, extra map[string]any) map[string]any {
		m := k.jwk()
		for key, v := range extra {
			if v == nil {
				delete(m, key)
			} else {
				m[key] = v
			}
		}
		return m
	}
	for name, tc := range map[string]struct {
		jwk   map[string]any
		token tokenSpec // signed with the published key's private key, under its kid
		used  bool
	}{
		"an encryption key (use enc) is ignored": {
			jwk: withKid("k", jwkOf(es, map[string]any{"use": "enc"})),
		},
		"a key of unknown kty is ignored": {
			jwk: withKid("k", map[string]any{"kty": "oct", "k": b64.EncodeToString([]byte("secret")), "alg": "HS256", "use": "sig"}),
		},
		"an EC key published for RS256 is ignored": {
			jwk: withKid("k", jwkOf(es, map[string]any{"alg": "RS256"})),
		},
		"a P-384 key is ignored": {
			jwk: withKid("k", keys["p384"].jwk()),
		},
		"an EC point not on the curve is ignored": {
			jwk: withKid("k", jwkOf(es, map[string]any{"y": b64.EncodeToString(make([]byte, 32))})),
		},
		"a 1024-bit RSA key is ignored": {
			jwk: withKid("k", keys["rs1k"].jwk()),
		},
		"a key without kid is ignored": {
			jwk: jwkOf(es, map[string]any{"kid": nil}),
		},
		"a key without use and alg is used with its type's one algorithm": {
			jwk:  withKid("k", jwkOf(es, map[string]any{"use": nil, "alg": nil})),
			used: true,
		},
	} {
		t.Run(name, func(t *testing.T) {
			g := NewWithT(t)
			clk := newClock()
			iss := newKeyIssuer(t)
			iss.publish(tc.jwk)
			v := newVerifier(t, iss, clk)
			spec := validToken(es, iss.URL, clk.Now())
			spec.header["kid"] = "k"
			_, err := v.Verify(context.Background(), spec.sign(t))
			if tc.used {
				g.Expect(err).NotTo(HaveOccurred())
			} else {
				g.Expect(err).To(MatchError(`invalid access token: token is unverifiable: error while executing keyfunc: unknown kid "k"`))
			}
		})
	}
}

func TestNewVerifier(t *testing.T) {
	for name, tc := range map[string]struct {
		docIssuer func(url string) string
		url       func(url string) string
		audience  string
		wantErr   func(url string) string
	}{
		"discovery for another issuer is refused": {
			docIssuer: func(string) string { return "https://evil.example" },
			wantErr: func(u string) string {
				return `verifier: discovery issuer "https://evil.example" is not "` + u + `"`
			},
		},
		"the issuer URL must match discovery exactly, trailing slash included": {
			url: func(u string) string { return u + "/" },
			wantErr: func(u string) string {
				return `verifier: discovery issuer "` + u + `" is not "` + u + `/"`
			},
		},
		"an audience is required": {
			audience: "-",
			wantErr:  func(string) string { return "verifier: audience is required" },
		},
	} {
		t.Run(name, func(t *testing.T) {
			g := NewWithT(t)
			iss := newKeyIssuer(t, testKeys()["es"])
			if tc.docIssuer != nil {
				iss.issuer = tc.docIssuer(iss.URL)
			}
			u := iss.URL
			if tc.url != nil {
				u = tc.url(u)
			}
			aud := "api"
			if tc.audience == "-" {
				aud = ""
			}
			v, err := client.NewVerifier(context.Background(), u, aud)
			g.Expect(v).To(BeNil())
			g.Expect(err).To(MatchError(tc.wantErr(iss.URL)))
		})
	}
}

func TestNewVerifierNeedsTheJWKS(t *testing.T) {
	g := NewWithT(t)
	iss := newKeyIssuer(t)
	iss.jwksFails = true
	_, err := client.NewVerifier(context.Background(), iss.URL, "api")
	g.Expect(err).To(MatchError("verifier: fetching JWKS: GET " + iss.URL + "/keys: 503 Service Unavailable"))
}

func TestMiddleware(t *testing.T) {
	keys := testKeys()
	for name, tc := range map[string]struct {
		auth       func(t *testing.T, good, expired string) string // the Authorization header; "" sends none
		wantStatus int
		wantHeader string // WWW-Authenticate
		wantBody   string
	}{
		"no credentials get a challenge without an error code": {
			auth:       func(*testing.T, string, string) string { return "" },
			wantStatus: 401,
			wantHeader: `Bearer realm="orders"`,
			wantBody:   "",
		},
		"Basic credentials count as none": {
			auth:       func(*testing.T, string, string) string { return "Basic YWxpY2U6eA==" },
			wantStatus: 401,
			wantHeader: `Bearer realm="orders"`,
			wantBody:   "",
		},
		"a malformed token is invalid_token": {
			auth:       func(*testing.T, string, string) string { return "Bearer not.a.jwt" },
			wantStatus: 401,
			wantHeader: `Bearer realm="orders", error="invalid_token", error_description="the access token is invalid"`,
			wantBody:   `{"error":"invalid_token","error_description":"the access token is invalid"}` + "\n",
		},
		"an expired token is invalid_token and says so": {
			auth:       func(_ *testing.T, _, expired string) string { return "Bearer " + expired },
			wantStatus: 401,
			wantHeader: `Bearer realm="orders", error="invalid_token", error_description="the access token expired"`,
			wantBody:   `{"error":"invalid_token","error_description":"the access token expired"}` + "\n",
		},
		"a valid token reaches the handler with its claims": {
			auth:       func(_ *testing.T, good, _ string) string { return "Bearer " + good },
			wantStatus: 200,
			wantBody:   "alice via rotor in [dev ops]",
		},
		"the scheme is case-insensitive": {
			auth:       func(_ *testing.T, good, _ string) string { return "bearer " + good },
			wantStatus: 200,
			wantBody:   "alice via rotor in [dev ops]",
		},
	} {
		t.Run(name, func(t *testing.T) {
			g := NewWithT(t)
			clk := newClock()
			iss := newKeyIssuer(t, keys["es"])
			v, err := client.NewVerifier(context.Background(), iss.URL, "api", client.WithClock(clk), client.WithRealm("orders"))
			g.Expect(err).NotTo(HaveOccurred())
			good := validToken(keys["es"], iss.URL, clk.Now()).sign(t)
			expired := validToken(keys["es"], iss.URL, clk.Now().Add(-time.Hour)).sign(t)

			called := false
			h := v.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				called = true
				c, ok := client.ClaimsFromContext(r.Context())
				g.Expect(ok).To(BeTrue())
				_, _ = w.Write([]byte(c.Subject + " via " + c.ClientID + " in [" + strings.Join(c.Groups, " ") + "]"))
			}))
			req := httptest.NewRequest(http.MethodGet, "/orders", nil)
			if a := tc.auth(t, good, expired); a != "" {
				req.Header.Set("Authorization", a)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)

			g.Expect(rec.Code).To(Equal(tc.wantStatus))
			g.Expect(rec.Header().Get("WWW-Authenticate")).To(Equal(tc.wantHeader))
			g.Expect(rec.Body.String()).To(Equal(tc.wantBody))
			g.Expect(called).To(Equal(tc.wantStatus == 200))
		})
	}
}

func TestClaimsFromContextWithoutMiddleware(t *testing.T) {
	g := NewWithT(t)
	c, ok := client.ClaimsFromContext(context.Background())
	g.Expect(ok).To(BeFalse())
	g.Expect(c).To(BeNil())
}

// The Transport and the Middleware understand each other: a token refused
// by the API makes the client refresh and retry.
func TestTransportRecoversFromAMiddleware401(t *testing.T) {
	g := NewWithT(t)
	keys := testKeys()
	clk := newClock()
	iss := newKeyIssuer(t, keys["es"])
	v := newVerifier(t, iss, clk)
	api := httptest.NewServer(v.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _ := client.ClaimsFromContext(r.Context())
		_, _ = w.Write([]byte("hello " + c.Subject))
	})))
	t.Cleanup(api.Close)

	// A token source whose first token is signed by a key the API does not know.
	var mu sync.Mutex
	tokens := []string{
		validToken(keys["other"], iss.URL, clk.Now()).sign(t),
		validToken(keys["es"], iss.URL, clk.Now()).sign(t),
	}
	tokenServer := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		at := tokens[0]
		tokens = tokens[1:]
		writeJSON(w, http.StatusOK, map[string]any{"access_token": at, "token_type": "Bearer", "expires_in": 1200, "refresh_token": "rt"})
	})
	src := client.PasswordSource(context.Background(), client.Config{IssuerURL: tokenServer.URL, Clock: clk}, "alice", "x")
	hc := &http.Client{Transport: client.NewTransport(src, nil)}
	resp, err := hc.Get(api.URL)
	g.Expect(err).NotTo(HaveOccurred())
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(resp.StatusCode).To(Equal(200))
	g.Expect(string(body)).To(Equal("hello alice"))
	g.Expect(tokens).To(BeEmpty())
}
