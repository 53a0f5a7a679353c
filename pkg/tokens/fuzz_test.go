package tokens_test

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"
	. "github.com/onsi/gomega"
	clocktesting "k8s.io/utils/clock/testing"

	"rotor.dev/rotor/pkg/keys"
	"rotor.dev/rotor/pkg/tokens"
)

// fuzzKeyPEMs are fixed keys (generated for these tests only, never used
// anywhere else), so that the committed seed corpus can hold valid tokens.
var fuzzKeyPEMs = map[keys.Algorithm]string{
	keys.ES256: `-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgWFgZUyx2+dW1JcnD
c5+DzKHgXQ/0I9xOXfzB6gvh5KmhRANCAASO7lmzdZ94aDYyE/g3H3XqUItIxdfb
m40M1RNOKfVNgWepoza61INSADppC5/luvoIpQU8iZMlBO8Xvib6F6Be
-----END PRIVATE KEY-----
`,
	keys.EdDSA: `-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIKksI8hUoUptdLkZo4BFUv/QlcSF8RBqUjbiZiEQYH80
-----END PRIVATE KEY-----
`,
	keys.RS256: `-----BEGIN PRIVATE KEY-----
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDIYrDo+SLacId6
1Vs+dmpVbSC1r0jGkoIIQA2lsmCFcKJ8eut2Fo56kkmaO20fBWhks/2tLqVVpcpe
Yh0/+BzoXN6yjERWT1U4y50APdU2nprfzywbCRgz+OXwPLVXRg9BEwFz4GOQFNP4
fVQIZzOZxY7Jm8WmIJOclTjvcVrhnJDi3PFdlJ+E3b+qEUimq90SRgSQcjhubPHt
uI2EBC3okSLT1NyVLWyD9KgV8jA1kPLCwWi1YuOFSpD6kdJVrjpPUb5AmDrFYJmT
XxkSNW98GSkQflOUCJgndYABDwlKfhX+T891IFGsXfyopvMAo7lczR52ofzxaIri
M84cBWw5AgMBAAECggEAYvthAMujvDwOqA3A8wNCNi1gFW7ep3vSMGoXc6w/glqn
YI7FRYER4xjks4M8PTEKJohEO+oJMFvjMSkM4r7X5K2PMaoYzXuFkLb/OBHTApZo
0ToAQuCErJN7XWZXeyM3wMC3HHqQI6kuJZYezsHPmtsb05mXEZ8Q2y1YwOoA5uT0
ZeAchto09XVecvkvZsc2r4okSuoU6i8ZGMV0Tbg4uROu1HLVda54rkxG/JU+oMuF
4DOTeC0X3hErI6fdApGjfQjw13tfcdpOktsVhQeJnZUUuxbah+3Po2m5/LoQMsru
GJdhDE+HIP5Wx0zkW4Fg3Ju3FDBkdveXVdpCn+jcYwKBgQDgWCemdMBuuv0vL46w
0SWORepq9ws3h/tBxW6Yj0I2MS4hjI1YkJd6a/IPyRLXTQwmnND6Wr4ZfcO2+N+8
Apk0Q9jIFjSF8wNSKTc6NOC2BjWq78xGT05Vvd3b2yH3DMWURL+WnYmdIO+jrjyC
sLuKDP4CUlar3xBNF6R3PAaWEwKBgQDkqRYjV6Ugv/1boYjnlgTa4a/ZP/Xkv+6q
wuCB/CrPyGbEFfC9EtknBwc0+0XA58Yx387VMunnf0G6Ai2SiwibkSARv8XZNlq6
rv5AhNcwSMvFM/dtYyeXF8sqjU5mHizHNTZTzYNsFX8C7D1LgmW4dpzae5wqk67D
huUS02TuAwKBgB7cIYAlOT9CG4e9G/y4mFjsxyU1nGZkHyzZ8q+rrSj1NOpKgjr3
kM63QJHpT90r7Qr2sUxu5Q1unlhx/ZzIIrjsyEolu83dMsy/fKhWE78WNZWw7MGT
MSxcNMOEbjSknh0aI9ydCQwDNtOmKQ61Lub7iIlbOC7mPUDNisMYD7PfAoGAaCwE
Muu+BfKRmUo5VdBJu/Ivq9jwzFsIf3Ey2OUqF+ljsBeSyoCov5f7F48WEzFEYPpm
f0inuViHeBd/7ZA7xqvSIWPt3exeX0hT+s7KPmwbsWbgZUxUAAjN/T/NJMbAfazn
aDxrkDUm3Q0FS75HW0dmZD8GQXtwlhGBkRcPl0MCgYEAlmonMr8lH7t89DPP8ihg
ovxyoofAR/MuM2upShxubtir8UEhIOHTjXspXzZF50z1mPts5oyaZ8KefuVN5QTf
VT4ztgFTTPDfXenkFUB3eLsIugH4NDDPLIDa7M2Xn8500LDkWnrs1lxZdMzee9ic
vBytoltFkKvpWzbzbhJJgUg=
-----END PRIVATE KEY-----
`,
}

// fuzzStates puts one key in each published state.
var fuzzStates = map[keys.Algorithm]keys.State{keys.ES256: keys.StateActive, keys.EdDSA: keys.StateNext, keys.RS256: keys.StateRetired}

// seedJTI is the jti of the valid seed tokens signed by the key of alg.
func seedJTI(alg keys.Algorithm) string { return "seed-" + strings.ToLower(string(alg)) }

func fuzzKeys(tb testing.TB) map[keys.Algorithm]testKey {
	tb.Helper()
	out := map[keys.Algorithm]testKey{}
	for alg, p := range fuzzKeyPEMs {
		k, err := keys.Parse(alg, []byte(p))
		if err != nil {
			tb.Fatalf("fixed %s key: %v", alg, err)
		}
		out[alg] = keyInState(tb, "fuzz-"+strings.ToLower(string(alg)), k, fuzzStates[alg])
	}
	return out
}

// fixedActive makes a Minter sign with one given key.
type fixedActive struct{ key *keys.Key }

func (f fixedActive) Active() (*keys.Key, bool) { return f.key, true }

// FuzzVerify: Verify never panics, refuses with ErrInvalidToken and no
// claims, and accepts only tokens signed by a published key of the set:
// an accepted token carries exactly the claims of a token this test (or
// the seed corpus) signed.
func FuzzVerify(f *testing.F) {
	ks := fuzzKeys(f)
	set := newSet(ks[keys.ES256], ks[keys.EdDSA], ks[keys.RS256])
	v := newVerifier(set, clocktesting.NewFakeClock(t0))

	// signed maps the jti of every hand-signed token to its claims. The
	// Minter's jti is random and each fuzz worker process runs this setup
	// again, so its tokens are known by their claims without the jti.
	signed := map[string]jwt.MapClaims{}
	var minted jwt.MapClaims
	for alg, k := range ks {
		c := with(goodClaims(), map[string]any{"jti": seedJTI(alg)})
		signed[seedJTI(alg)] = c
		f.Add(signWith(f, k, nil, c))
		c = with(goodClaims(), map[string]any{"jti": seedJTI(alg) + "-typ"})
		signed[seedJTI(alg)+"-typ"] = c
		f.Add(signWith(f, k, map[string]any{"typ": "application/at+jwt"}, c))

		m := newMinter(fixedActive{k.Key}, clocktesting.NewFakeClock(t0))
		tok, _, err := m.Mint(tokens.Subject{Subject: "alice", ClientID: "rotor", Audience: []string{testAudience}, Groups: []string{"dev"}})
		if err != nil {
			f.Fatal(err)
		}
		var claims jwt.MapClaims
		if err := json.Unmarshal(mustSegment(f, tok, 1), &claims); err != nil {
			f.Fatal(err)
		}
		delete(claims, "jti")
		minted = claims
		f.Add(tok)
		parts := strings.Split(tok, ".")
		f.Add(parts[0] + "." + parts[1] + ".")
		f.Add(strings.Replace(tok, ".", "..", 1))
	}

	f.Fuzz(func(t *testing.T, token string) {
		g := NewWithT(t)
		claims, err := v.Verify(token)
		if err != nil {
			g.Expect(err).To(MatchError(tokens.ErrInvalidToken))
			g.Expect(claims).To(BeNil())
			return
		}
		var header struct {
			Alg string `json:"alg"`
			Typ string `json:"typ"`
			Kid string `json:"kid"`
		}
		g.Expect(json.Unmarshal(mustSegment(t, token, 0), &header)).To(Succeed())
		key, ok := set.Lookup(header.Kid)
		g.Expect(ok).To(BeTrue(), "an accepted token names a published key")
		g.Expect(header.Alg).To(Equal(string(key.Algorithm)), "an accepted token uses its key's algorithm")
		g.Expect(strings.ToLower(header.Typ)).To(BeElementOf("at+jwt", "application/at+jwt"))
		var got jwt.MapClaims
		g.Expect(json.Unmarshal(mustSegment(t, token, 1), &got)).To(Succeed())
		want, ok := signed[claims.ID]
		if !ok {
			g.Expect(claims.ID).To(MatchRegexp(`^[A-Za-z0-9_-]{22}$`), "an accepted token has the jti of a token signed here")
			delete(got, "jti")
			want = minted
		}
		wantJSON, err := json.Marshal(want)
		g.Expect(err).NotTo(HaveOccurred())
		gotJSON, err := json.Marshal(got)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(string(gotJSON)).To(Equal(string(wantJSON)), "an accepted token carries exactly the claims that were signed")
	})
}

// mustSegment decodes part i of a compact JWS.
func mustSegment(tb testing.TB, token string, i int) []byte {
	tb.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		tb.Fatalf("%q has %d parts", token, len(parts))
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[i])
	if err != nil {
		tb.Fatalf("segment %d of %q: %v", i, token, err)
	}
	return raw
}

// The committed seeds named valid-* and typ-application-at-jwt-* must stay
// valid tokens of the fixed keys (or FuzzVerify would explore refusals
// only), and every other seed must be refused.
func TestFuzzVerifySeedCorpus(t *testing.T) {
	g := NewWithT(t)
	ks := fuzzKeys(t)
	v := newVerifier(newSet(ks[keys.ES256], ks[keys.EdDSA], ks[keys.RS256]), clocktesting.NewFakeClock(t0))
	files, err := filepath.Glob("testdata/fuzz/FuzzVerify/*")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(files).NotTo(BeEmpty())
	valid := 0
	for _, file := range files {
		raw, err := os.ReadFile(file)
		g.Expect(err).NotTo(HaveOccurred())
		lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
		g.Expect(lines).To(HaveLen(2), file)
		g.Expect(lines[0]).To(Equal("go test fuzz v1"), file)
		arg, ok := strings.CutPrefix(lines[1], "string(")
		g.Expect(ok).To(BeTrue(), file)
		token, err := strconv.Unquote(strings.TrimSuffix(arg, ")"))
		g.Expect(err).NotTo(HaveOccurred(), file)

		name := filepath.Base(file)
		claims, err := v.Verify(token)
		if strings.HasPrefix(name, "valid-") || strings.HasPrefix(name, "typ-application-at-jwt-") {
			valid++
			g.Expect(err).NotTo(HaveOccurred(), file)
			g.Expect(claims.ID).To(HavePrefix("seed-"), file)
		} else {
			g.Expect(err).To(MatchError(tokens.ErrInvalidToken), file)
		}
	}
	g.Expect(valid).To(Equal(6), "one plain and one application/at+jwt seed per algorithm")
}
