package tokens_test

import (
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	clocktesting "k8s.io/utils/clock/testing"

	"rotor.dev/rotor/pkg/keys"
	"rotor.dev/rotor/pkg/tokens"
)

const (
	testIssuer   = "https://issuer.test"
	testAudience = "rotor"
	testLeeway   = 2 * time.Minute
	testTTL      = 20 * time.Minute
)

// t0 is "now" for every test: tokens are minted and verified at t0
// unless a test moves a clock.
var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// testKey is a key with the Secret that stores it.
type testKey struct {
	*keys.Key
	Secret corev1.Secret
}

// newTestKey generates a key of alg in state, stored as a Secret named name.
func newTestKey(t testing.TB, name string, alg keys.Algorithm, state keys.State) testKey {
	t.Helper()
	k, err := keys.Generate(alg)
	if err != nil {
		t.Fatal(err)
	}
	return keyInState(t, name, k, state)
}

// keyInState stores k in a Secret named name with the given state and
// plausible lifecycle times.
func keyInState(t testing.TB, name string, k *keys.Key, state keys.State) testKey {
	t.Helper()
	k.State = state
	switch state {
	case keys.StateNext:
		k.PublishedAt = t0.Add(-time.Hour)
	case keys.StateActive:
		k.PublishedAt, k.ActivatedAt = t0.Add(-2*time.Hour), t0.Add(-time.Hour)
	case keys.StateRetired:
		k.PublishedAt, k.ActivatedAt, k.RetiredAt = t0.Add(-3*time.Hour), t0.Add(-2*time.Hour), t0.Add(-time.Hour)
	}
	sec, err := keys.NewSecret("rotor-system", name, k)
	if err != nil {
		t.Fatal(err)
	}
	return testKey{Key: k, Secret: *sec}
}

func newSet(ks ...testKey) *keys.Set {
	set := keys.NewSet()
	updateSet(set, ks...)
	return set
}

func updateSet(set *keys.Set, ks ...testKey) {
	secrets := make([]corev1.Secret, 0, len(ks))
	for _, k := range ks {
		secrets = append(secrets, k.Secret)
	}
	set.Update(secrets)
}

func newVerifier(set *keys.Set, clock *clocktesting.FakeClock) *tokens.Verifier {
	return &tokens.Verifier{Issuer: testIssuer, Audience: testAudience, Keys: set, Leeway: testLeeway, Clock: clock}
}

func newMinter(set tokens.ActiveKeys, clock *clocktesting.FakeClock) *tokens.Minter {
	return &tokens.Minter{Issuer: testIssuer, TTL: testTTL, Keys: set, Clock: clock}
}

// goodClaims are the claims rotor puts in an access token issued at t0.
func goodClaims() jwt.MapClaims {
	return jwt.MapClaims{
		"iss":       testIssuer,
		"sub":       "alice",
		"aud":       []string{testAudience},
		"exp":       t0.Add(testTTL).Unix(),
		"iat":       t0.Unix(),
		"jti":       "jti-0123456789",
		"client_id": "rotor",
		"groups":    []string{"dev"},
	}
}

// sign signs claims with method and key. header entries override the
// default header (alg, typ JWT); a nil value removes the entry.
func sign(t testing.TB, method jwt.SigningMethod, key any, header map[string]any, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, claims)
	for k, v := range header {
		if v == nil {
			delete(tok.Header, k)
		} else {
			tok.Header[k] = v
		}
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatalf("signing: %v", err)
	}
	return s
}

// compact assembles a JWS from raw parts, for headers no library signs.
func compact(t testing.TB, header map[string]any, claims jwt.MapClaims, signature []byte) string {
	t.Helper()
	h, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	c, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding
	return enc.EncodeToString(h) + "." + enc.EncodeToString(c) + "." + enc.EncodeToString(signature)
}

func methodOf(alg keys.Algorithm) jwt.SigningMethod {
	switch alg {
	case keys.ES256:
		return jwt.SigningMethodES256
	case keys.EdDSA:
		return jwt.SigningMethodEdDSA
	}
	return jwt.SigningMethodRS256
}

// signWith signs claims as rotor does (typ at+jwt, kid) with k, then
// applies header overrides.
func signWith(t testing.TB, k testKey, header map[string]any, claims jwt.MapClaims) string {
	t.Helper()
	h := map[string]any{"typ": tokens.Type, "kid": k.KID}
	for name, v := range header {
		h[name] = v
	}
	return sign(t, methodOf(k.Algorithm), k.Signer, h, claims)
}

func with(c jwt.MapClaims, edits map[string]any) jwt.MapClaims {
	out := jwt.MapClaims{}
	for k, v := range c {
		out[k] = v
	}
	for k, v := range edits {
		if v == nil {
			delete(out, k)
		} else {
			out[k] = v
		}
	}
	return out
}

func publicPEM(t testing.TB, pub crypto.PublicKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func decodeSegment(t testing.TB, token string, i int) map[string]any {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("%q has %d parts", token, len(parts))
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[i])
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]any{}
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// replaceSegment returns token with part i replaced by the encoding of m.
func replaceSegment(t testing.TB, token string, i int, m map[string]any) string {
	t.Helper()
	raw, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(token, ".")
	parts[i] = base64.RawURLEncoding.EncodeToString(raw)
	return strings.Join(parts, ".")
}

func TestVerifierRefuses(t *testing.T) {
	es := newTestKey(t, "es", keys.ES256, keys.StateActive)
	ed := newTestKey(t, "ed", keys.EdDSA, keys.StateNext)
	rs := newTestKey(t, "rs", keys.RS256, keys.StateRetired)
	unadopted := newTestKey(t, "byo", keys.ES256, keys.StateNew)
	outsider := newTestKey(t, "outsider", keys.ES256, keys.StateActive)
	outsiderRSA := newTestKey(t, "outsider-rsa", keys.RS256, keys.StateActive)
	outsiderEd := newTestKey(t, "outsider-ed", keys.EdDSA, keys.StateActive)
	set := newSet(es, ed, rs, unadopted)
	clock := clocktesting.NewFakeClock(t0)
	v := newVerifier(set, clock)
	good := goodClaims()

	valid := signWith(t, es, nil, good)
	if _, err := v.Verify(valid); err != nil {
		t.Fatalf("the reference token is refused: %v", err)
	}
	otherValid := signWith(t, es, nil, with(good, map[string]any{"sub": "bob"}))
	validParts := strings.Split(valid, ".")

	for _, tc := range []struct {
		name string
		// why is the golang-jwt error that says why it was refused.
		why   error
		token string
	}{
		{"the empty string", jwt.ErrTokenMalformed, ""},
		{"a string that is not a JWT", jwt.ErrTokenMalformed, "not a token"},
		{"two segments", jwt.ErrTokenMalformed, validParts[0] + "." + validParts[1]},
		{"four segments", jwt.ErrTokenMalformed, valid + ".AAAA"},
		{"five segments (a JWE shape)", jwt.ErrTokenMalformed, valid + ".AAAA.AAAA"},
		{"a token with the signature cut off", jwt.ErrTokenSignatureInvalid, validParts[0] + "." + validParts[1] + "."},
		{"a token with its signature truncated", jwt.ErrTokenSignatureInvalid, valid[:len(valid)-4]},
		{"a token with padded base64 segments", jwt.ErrTokenMalformed, validParts[0] + "==." + validParts[1] + "." + validParts[2]},
		{"a token with a signature of all zeros", jwt.ErrTokenSignatureInvalid, validParts[0] + "." + validParts[1] + "." + base64.RawURLEncoding.EncodeToString(make([]byte, 64))},
		{"alg none", jwt.ErrTokenSignatureInvalid, sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, map[string]any{"typ": tokens.Type, "kid": es.KID}, good)},
		{"alg None spelled otherwise", jwt.ErrTokenUnverifiable, compact(t, map[string]any{"alg": "None", "typ": tokens.Type, "kid": es.KID}, good, nil)},
		{"alg NONE with a signature copied from a valid token", jwt.ErrTokenUnverifiable, compact(t, map[string]any{"alg": "NONE", "typ": tokens.Type, "kid": es.KID}, good, []byte("x")) + validParts[2]},
		{"alg missing", jwt.ErrTokenUnverifiable, compact(t, map[string]any{"typ": tokens.Type, "kid": es.KID}, good, []byte("sig"))},
		{"HS256 with the ES256 public key PEM as secret (algorithm confusion)", jwt.ErrTokenSignatureInvalid, sign(t, jwt.SigningMethodHS256, publicPEM(t, es.Public), map[string]any{"typ": tokens.Type, "kid": es.KID}, good)},
		{"HS256 with the RS256 public key PEM as secret (algorithm confusion)", jwt.ErrTokenSignatureInvalid, sign(t, jwt.SigningMethodHS256, publicPEM(t, rs.Public), map[string]any{"typ": tokens.Type, "kid": rs.KID}, good)},
		{"HS256 with the kid as secret", jwt.ErrTokenSignatureInvalid, sign(t, jwt.SigningMethodHS256, []byte(es.KID), map[string]any{"typ": tokens.Type, "kid": es.KID}, good)},
		{"ES384 (not an allowed algorithm)", jwt.ErrTokenSignatureInvalid, compact(t, map[string]any{"alg": "ES384", "typ": tokens.Type, "kid": es.KID}, good, make([]byte, 96))},
		{"PS256 signed with the RS256 key (one algorithm per key)", jwt.ErrTokenSignatureInvalid, sign(t, jwt.SigningMethodPS256, rs.Signer, map[string]any{"typ": tokens.Type, "kid": rs.KID}, good)},
		{"an ES256 kid with header RS256, signed by another RSA key", jwt.ErrTokenUnverifiable, sign(t, jwt.SigningMethodRS256, outsiderRSA.Signer, map[string]any{"typ": tokens.Type, "kid": es.KID}, good)},
		{"an RS256 kid with header ES256, signed by the ES256 key of the set", jwt.ErrTokenUnverifiable, sign(t, jwt.SigningMethodES256, es.Signer, map[string]any{"typ": tokens.Type, "kid": rs.KID}, good)},
		{"an EdDSA kid with header ES256, signed by the ES256 key of the set", jwt.ErrTokenUnverifiable, sign(t, jwt.SigningMethodES256, es.Signer, map[string]any{"typ": tokens.Type, "kid": ed.KID}, good)},
		{"an ES256 kid with header EdDSA, signed by another Ed25519 key", jwt.ErrTokenUnverifiable, sign(t, jwt.SigningMethodEdDSA, outsiderEd.Signer, map[string]any{"typ": tokens.Type, "kid": es.KID}, good)},
		{"an unknown kid", jwt.ErrTokenUnverifiable, signWith(t, outsider, nil, good)},
		{"a known kid on a token signed by another key", jwt.ErrTokenSignatureInvalid, signWith(t, outsider, map[string]any{"kid": es.KID}, good)},
		{"no kid", jwt.ErrTokenUnverifiable, signWith(t, es, map[string]any{"kid": nil}, good)},
		{"an empty kid", jwt.ErrTokenUnverifiable, signWith(t, es, map[string]any{"kid": ""}, good)},
		{"a kid that is a number", jwt.ErrTokenUnverifiable, signWith(t, es, map[string]any{"kid": 1}, good)},
		{"the kid of an unadopted key", jwt.ErrTokenUnverifiable, signWith(t, unadopted, nil, good)},
		{"a token carrying its own key (jwk header)", jwt.ErrTokenSignatureInvalid, signWith(t, outsider, map[string]any{"kid": es.KID, "jwk": map[string]any{"kty": "EC", "crv": "P-256"}}, good)},
		{"typ JWT", jwt.ErrTokenUnverifiable, signWith(t, es, map[string]any{"typ": "JWT"}, good)},
		{"typ missing", jwt.ErrTokenUnverifiable, signWith(t, es, map[string]any{"typ": nil}, good)},
		{"typ empty", jwt.ErrTokenUnverifiable, signWith(t, es, map[string]any{"typ": ""}, good)},
		{"typ application/jwt", jwt.ErrTokenUnverifiable, signWith(t, es, map[string]any{"typ": "application/jwt"}, good)},
		{"typ at+jwt with a trailing space", jwt.ErrTokenUnverifiable, signWith(t, es, map[string]any{"typ": "at+jwt "}, good)},
		{"typ application/at+jwt; charset=utf-8", jwt.ErrTokenUnverifiable, signWith(t, es, map[string]any{"typ": "application/at+jwt; charset=utf-8"}, good)},
		{"typ as a list", jwt.ErrTokenUnverifiable, signWith(t, es, map[string]any{"typ": []string{tokens.Type}}, good)},
		{"typ of another kind of token (logout+jwt)", jwt.ErrTokenUnverifiable, signWith(t, es, map[string]any{"typ": "logout+jwt"}, good)},
		{"a wrong iss", jwt.ErrTokenInvalidIssuer, signWith(t, es, nil, with(good, map[string]any{"iss": "https://evil.test"}))},
		{"iss with a trailing slash", jwt.ErrTokenInvalidIssuer, signWith(t, es, nil, with(good, map[string]any{"iss": testIssuer + "/"}))},
		{"iss in upper case", jwt.ErrTokenInvalidIssuer, signWith(t, es, nil, with(good, map[string]any{"iss": strings.ToUpper(testIssuer)}))},
		{"iss missing", jwt.ErrTokenRequiredClaimMissing, signWith(t, es, nil, with(good, map[string]any{"iss": nil}))},
		{"iss as a list", jwt.ErrTokenMalformed, signWith(t, es, nil, with(good, map[string]any{"iss": []string{testIssuer}}))},
		{"a wrong aud", jwt.ErrTokenInvalidAudience, signWith(t, es, nil, with(good, map[string]any{"aud": []string{"other"}}))},
		{"aud as a wrong string", jwt.ErrTokenInvalidAudience, signWith(t, es, nil, with(good, map[string]any{"aud": "other"}))},
		{"aud missing", jwt.ErrTokenRequiredClaimMissing, signWith(t, es, nil, with(good, map[string]any{"aud": nil}))},
		{"aud empty", jwt.ErrTokenRequiredClaimMissing, signWith(t, es, nil, with(good, map[string]any{"aud": []string{}}))},
		{"aud of an empty string", jwt.ErrTokenRequiredClaimMissing, signWith(t, es, nil, with(good, map[string]any{"aud": ""}))},
		{"aud differing in case", jwt.ErrTokenInvalidAudience, signWith(t, es, nil, with(good, map[string]any{"aud": []string{"Rotor"}}))},
		{"exp missing", jwt.ErrTokenRequiredClaimMissing, signWith(t, es, nil, with(good, map[string]any{"exp": nil}))},
		{"exp as a string", jwt.ErrTokenMalformed, signWith(t, es, nil, with(good, map[string]any{"exp": "2100-01-01T00:00:00Z"}))},
		{"expired one second beyond the leeway", jwt.ErrTokenExpired, signWith(t, es, nil, with(good, map[string]any{"exp": t0.Add(-testLeeway - time.Second).Unix()}))},
		{"expired exactly the leeway ago", jwt.ErrTokenExpired, signWith(t, es, nil, with(good, map[string]any{"exp": t0.Add(-testLeeway).Unix()}))},
		{"expired a day ago", jwt.ErrTokenExpired, signWith(t, es, nil, with(good, map[string]any{"exp": t0.Add(-24 * time.Hour).Unix(), "iat": t0.Add(-25 * time.Hour).Unix()}))},
		{"nbf one second beyond the leeway in the future", jwt.ErrTokenNotValidYet, signWith(t, es, nil, with(good, map[string]any{"nbf": t0.Add(testLeeway + time.Second).Unix()}))},
		{"nbf an hour in the future", jwt.ErrTokenNotValidYet, signWith(t, es, nil, with(good, map[string]any{"nbf": t0.Add(time.Hour).Unix()}))},
		{"iat one second beyond the leeway in the future", jwt.ErrTokenUsedBeforeIssued, signWith(t, es, nil, with(good, map[string]any{"iat": t0.Add(testLeeway + time.Second).Unix()}))},
		{"iat an hour in the future", jwt.ErrTokenUsedBeforeIssued, signWith(t, es, nil, with(good, map[string]any{"iat": t0.Add(time.Hour).Unix(), "exp": t0.Add(2 * time.Hour).Unix()}))},
		{"a tampered payload (sub changed)", jwt.ErrTokenSignatureInvalid, replaceSegment(t, valid, 1, with(good, map[string]any{"sub": "bob"}))},
		{"a tampered payload (exp extended)", jwt.ErrTokenSignatureInvalid, replaceSegment(t, valid, 1, with(good, map[string]any{"exp": t0.Add(100 * time.Hour).Unix()}))},
		{"a tampered payload (groups widened)", jwt.ErrTokenSignatureInvalid, replaceSegment(t, valid, 1, with(good, map[string]any{"groups": []string{"dev", "system:masters"}}))},
		{"a tampered header (typ changed to application/at+jwt)", jwt.ErrTokenSignatureInvalid, replaceSegment(t, valid, 0, map[string]any{"alg": "ES256", "typ": "application/at+jwt", "kid": es.KID})},
		{"the signature of another valid token", jwt.ErrTokenSignatureInvalid, validParts[0] + "." + validParts[1] + "." + strings.Split(otherValid, ".")[2]},
	} {
		t.Run("refuses "+tc.name, func(t *testing.T) {
			g := NewWithT(t)
			claims, err := v.Verify(tc.token)
			g.Expect(err).To(MatchError(tokens.ErrInvalidToken))
			g.Expect(err).To(MatchError(tc.why))
			g.Expect(claims).To(BeNil())
		})
	}
}

func TestVerifierRefusesATokenOfADeletedKey(t *testing.T) {
	g := NewWithT(t)
	old := newTestKey(t, "old", keys.ES256, keys.StateRetired)
	active := newTestKey(t, "active", keys.ES256, keys.StateActive)
	set := newSet(old, active)
	v := newVerifier(set, clocktesting.NewFakeClock(t0))
	token := signWith(t, old, nil, goodClaims())
	_, err := v.Verify(token)
	g.Expect(err).NotTo(HaveOccurred(), "a retired key still verifies")

	updateSet(set, active) // the controller deleted the retired key's Secret
	claims, err := v.Verify(token)
	g.Expect(err).To(MatchError(tokens.ErrInvalidToken))
	g.Expect(claims).To(BeNil())
	_, err = v.Verify(signWith(t, active, nil, goodClaims()))
	g.Expect(err).NotTo(HaveOccurred())
}

func TestVerifierRefusesAKeyDemotedToUnpublished(t *testing.T) {
	g := NewWithT(t)
	k := newTestKey(t, "k", keys.ES256, keys.StateActive)
	set := newSet(k)
	v := newVerifier(set, clocktesting.NewFakeClock(t0))
	token := signWith(t, k, nil, goodClaims())
	_, err := v.Verify(token)
	g.Expect(err).NotTo(HaveOccurred())
	// The same Secret with its state label removed (not adopted) is not published.
	sec := k.Secret.DeepCopy()
	delete(sec.Labels, keys.StateLabel)
	sec.ResourceVersion = "2"
	set.Update([]corev1.Secret{*sec})
	_, err = v.Verify(token)
	g.Expect(err).To(MatchError(tokens.ErrInvalidToken))
}

func TestVerifierAccepts(t *testing.T) {
	for _, alg := range []keys.Algorithm{keys.ES256, keys.EdDSA, keys.RS256} {
		for _, state := range []keys.State{keys.StateActive, keys.StateNext, keys.StateRetired} {
			t.Run(string(alg)+" signed by the "+string(state)+" key", func(t *testing.T) {
				k := newTestKey(t, "k", alg, state)
				filler := newTestKey(t, "filler", keys.ES256, keys.StateActive)
				set := newSet(k, filler)
				clock := clocktesting.NewFakeClock(t0)
				v := newVerifier(set, clock)
				good := goodClaims()
				for _, tc := range []struct {
					name  string
					token string
				}{
					{"typ at+jwt", signWith(t, k, nil, good)},
					{"typ application/at+jwt", signWith(t, k, map[string]any{"typ": "application/at+jwt"}, good)},
					{"typ AT+JWT (media types are case-insensitive)", signWith(t, k, map[string]any{"typ": "AT+JWT"}, good)},
					{"aud as a string", signWith(t, k, nil, with(good, map[string]any{"aud": testAudience}))},
					{"aud listing another audience too", signWith(t, k, nil, with(good, map[string]any{"aud": []string{"other", testAudience}}))},
					{"expired less than the leeway ago", signWith(t, k, nil, with(good, map[string]any{"exp": t0.Add(-testLeeway + time.Second).Unix()}))},
					{"nbf exactly the leeway in the future", signWith(t, k, nil, with(good, map[string]any{"nbf": t0.Add(testLeeway).Unix()}))},
					{"iat exactly the leeway in the future", signWith(t, k, nil, with(good, map[string]any{"iat": t0.Add(testLeeway).Unix()}))},
				} {
					t.Run(tc.name, func(t *testing.T) {
						g := NewWithT(t)
						claims, err := v.Verify(tc.token)
						g.Expect(err).NotTo(HaveOccurred())
						g.Expect(claims.Subject).To(Equal("alice"))
						g.Expect(claims.ClientID).To(Equal("rotor"))
						g.Expect(claims.Groups).To(Equal([]string{"dev"}))
						g.Expect(claims.Issuer).To(Equal(testIssuer))
					})
				}
			})
		}
	}
}

func TestMinterRoundTrip(t *testing.T) {
	for _, alg := range []keys.Algorithm{keys.ES256, keys.EdDSA, keys.RS256} {
		t.Run(string(alg), func(t *testing.T) {
			g := NewWithT(t)
			k := newTestKey(t, "k", alg, keys.StateActive)
			next := newTestKey(t, "next", keys.RS256, keys.StateNext)
			set := newSet(k, next)
			clock := clocktesting.NewFakeClock(t0.Add(500 * time.Millisecond))
			m := newMinter(set, clock)
			v := newVerifier(set, clock)

			subject := tokens.Subject{Subject: "alice", ClientID: "cli", Audience: []string{testAudience, "api"}, Groups: []string{"dev", "ops"}}
			token, exp, err := m.Mint(subject)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(exp).To(Equal(t0.Add(testTTL)), "iat is truncated to the second, exp is iat+TTL")

			header := decodeSegment(t, token, 0)
			g.Expect(header).To(Equal(map[string]any{"alg": string(alg), "typ": "at+jwt", "kid": k.KID}))
			claims := decodeSegment(t, token, 1)
			g.Expect(claims).To(HaveKeyWithValue("iss", testIssuer))
			g.Expect(claims).To(HaveKeyWithValue("sub", "alice"))
			g.Expect(claims).To(HaveKeyWithValue("aud", []any{testAudience, "api"}))
			g.Expect(claims).To(HaveKeyWithValue("exp", float64(t0.Add(testTTL).Unix())))
			g.Expect(claims).To(HaveKeyWithValue("iat", float64(t0.Unix())))
			g.Expect(claims).To(HaveKeyWithValue("client_id", "cli"))
			g.Expect(claims).To(HaveKeyWithValue("groups", []any{"dev", "ops"}))
			g.Expect(claims).To(HaveKeyWithValue("jti", MatchRegexp(`^[A-Za-z0-9_-]{22}$`)))
			g.Expect(claims).NotTo(HaveKey("nbf"))
			g.Expect(claims).NotTo(HaveKey("scope"), "no scope was asked for")

			got, err := v.Verify(token)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(got.Subject).To(Equal("alice"))
			g.Expect(got.ClientID).To(Equal("cli"))
			g.Expect([]string(got.Audience)).To(Equal([]string{testAudience, "api"}))
			g.Expect(got.Groups).To(Equal([]string{"dev", "ops"}))
			g.Expect(got.ID).To(Equal(claims["jti"]))

			// Valid until TTL + leeway, not a second longer.
			clock.SetTime(t0.Add(testTTL + testLeeway - time.Second))
			_, err = v.Verify(token)
			g.Expect(err).NotTo(HaveOccurred())
			clock.SetTime(t0.Add(testTTL + testLeeway))
			_, err = v.Verify(token)
			g.Expect(err).To(MatchError(tokens.ErrInvalidToken))
			g.Expect(err).To(MatchError(jwt.ErrTokenExpired))
		})
	}
}

func TestMinterJTIsAreUnique(t *testing.T) {
	g := NewWithT(t)
	set := newSet(newTestKey(t, "k", keys.ES256, keys.StateActive))
	m := newMinter(set, clocktesting.NewFakeClock(t0))
	seen := map[any]bool{}
	for range 500 {
		token, _, err := m.Mint(tokens.Subject{Subject: "alice", ClientID: "rotor", Audience: []string{testAudience}})
		g.Expect(err).NotTo(HaveOccurred())
		jti := decodeSegment(t, token, 1)["jti"]
		g.Expect(seen).NotTo(HaveKey(jti))
		seen[jti] = true
	}
}

func TestMinterSignsWithTheActiveKey(t *testing.T) {
	g := NewWithT(t)
	a := newTestKey(t, "a", keys.ES256, keys.StateActive)
	b := newTestKey(t, "b", keys.EdDSA, keys.StateNext)
	set := newSet(a, b)
	m := newMinter(set, clocktesting.NewFakeClock(t0))
	subject := tokens.Subject{Subject: "alice", ClientID: "rotor", Audience: []string{testAudience}}

	token, _, err := m.Mint(subject)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(decodeSegment(t, token, 0)).To(HaveKeyWithValue("kid", a.KID))

	// Rotation: b becomes active, a retired.
	b2 := keyInState(t, "b", b.Key, keys.StateActive)
	b2.Secret.ResourceVersion = "2"
	a2 := keyInState(t, "a", a.Key, keys.StateRetired)
	a2.Secret.ResourceVersion = "2"
	updateSet(set, a2, b2)
	token, _, err = m.Mint(subject)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(decodeSegment(t, token, 0)).To(Equal(map[string]any{"alg": "EdDSA", "typ": "at+jwt", "kid": b.KID}))
}

func TestMinterWithoutAnActiveKey(t *testing.T) {
	g := NewWithT(t)
	set := newSet(newTestKey(t, "next", keys.ES256, keys.StateNext))
	token, exp, err := newMinter(set, clocktesting.NewFakeClock(t0)).Mint(tokens.Subject{Subject: "alice"})
	g.Expect(err).To(MatchError(tokens.ErrNoActiveKey))
	g.Expect(token).To(BeEmpty())
	g.Expect(exp).To(BeZero())
}

func TestVerifierRequiresTheClaimsOfRFC9068(t *testing.T) {
	es := newTestKey(t, "es", keys.ES256, keys.StateActive)
	v := newVerifier(newSet(es), clocktesting.NewFakeClock(t0))
	for _, claim := range []string{"sub", "client_id", "jti", "iat"} {
		t.Run("a token without "+claim+" is refused", func(t *testing.T) {
			g := NewWithT(t)
			claims, err := v.Verify(signWith(t, es, nil, with(goodClaims(), map[string]any{claim: nil})))
			g.Expect(err).To(MatchError(tokens.ErrInvalidToken))
			g.Expect(claims).To(BeNil())
		})
	}
}
