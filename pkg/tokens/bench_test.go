package tokens_test

// Signing and verification cost of access tokens next to the raw signature
// primitive on the same key and a comparable message, so that what the JWT
// layer (JSON, base64, header map, claim validation) adds is visible as a
// ratio. `make bench` (hack/bench) runs these and prints the ratios.
//
// BenchmarkSign and BenchmarkVerify give each operation's own ns/op and
// allocations. On a shared, busy machine two benchmarks run seconds apart
// can see very different load, so BenchmarkPairedSign and
// BenchmarkPairedVerify alternate small blocks of the JWT operation and the
// raw one in a single loop and report their ratio (jwt/raw): both halves
// of each pair see the same load, and that ratio is the one to judge.

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/utils/clock"

	"rotor.dev/rotor/pkg/keys"
	"rotor.dev/rotor/pkg/tokens"
)

const benchIssuer = "https://rotor.example.com"

// staticKeys is a key set of one active key: the benchmark measures the
// token code, not the Set's snapshot lookups (an atomic load and a map read).
type staticKeys struct{ key *keys.Key }

func (s staticKeys) Active() (*keys.Key, bool) { return s.key, true }

func (s staticKeys) Lookup(kid string) (*keys.Key, bool) {
	return s.key, kid == s.key.KID
}

// benchSubject is a typical session: one audience, a few groups.
var benchSubject = tokens.Subject{
	Subject:  "alice",
	ClientID: "rotor",
	Audience: []string{"rotor"},
	Groups:   []string{"dev", "ops"},
}

var benchAlgorithms = []keys.Algorithm{keys.ES256, keys.EdDSA, keys.RS256}

type benchKey struct {
	key      *keys.Key
	minter   *tokens.Minter
	verifier *tokens.Verifier
	token    string // a valid access token signed by key
	// message and sig are the token's signing input (header.claims) and
	// its raw signature: the comparable payload for the raw primitives.
	message []byte
	sig     []byte
}

func newBenchKey(b *testing.B, alg keys.Algorithm) *benchKey {
	b.Helper()
	k, err := keys.Generate(alg)
	if err != nil {
		b.Fatal(err)
	}
	ks := staticKeys{k}
	m := &tokens.Minter{Issuer: benchIssuer, TTL: 20 * time.Minute, Keys: ks, Clock: clock.RealClock{}}
	v := &tokens.Verifier{Issuer: benchIssuer, Audience: "rotor", Keys: ks, Leeway: 2 * time.Minute, Clock: clock.RealClock{}}
	tok, _, err := m.Mint(benchSubject)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := v.Verify(tok); err != nil {
		b.Fatal(err)
	}
	i := strings.LastIndexByte(tok, '.')
	bk := &benchKey{key: k, minter: m, verifier: v, token: tok, message: []byte(tok[:i])}
	bk.sig = rawSign(b, k, bk.message)
	if !rawVerify(k, bk.message, bk.sig) {
		b.Fatal("raw signature does not verify")
	}
	return bk
}

// rawSign signs message as JWS does for the key's algorithm: SHA-256 then
// ECDSA or RSASSA-PKCS1-v1_5, or Ed25519 over the message itself. The
// digest is part of the measured work because the JWT path computes it too.
func rawSign(b *testing.B, k *keys.Key, message []byte) []byte {
	var sig []byte
	var err error
	switch priv := k.Signer.(type) {
	case *ecdsa.PrivateKey:
		d := sha256.Sum256(message)
		sig, err = ecdsa.SignASN1(rand.Reader, priv, d[:])
	case ed25519.PrivateKey:
		sig = ed25519.Sign(priv, message)
	case *rsa.PrivateKey:
		d := sha256.Sum256(message)
		sig, err = rsa.SignPKCS1v15(nil, priv, crypto.SHA256, d[:])
	}
	if err != nil {
		b.Fatal(err)
	}
	return sig
}

func rawVerify(k *keys.Key, message, sig []byte) bool {
	switch pub := k.Public.(type) {
	case *ecdsa.PublicKey:
		d := sha256.Sum256(message)
		return ecdsa.VerifyASN1(pub, d[:], sig)
	case ed25519.PublicKey:
		return ed25519.Verify(pub, message, sig)
	case *rsa.PublicKey:
		d := sha256.Sum256(message)
		return rsa.VerifyPKCS1v15(pub, crypto.SHA256, d[:], sig) == nil
	}
	return false
}

// rawName names the primitive a raw sub-benchmark calls.
func rawName(alg keys.Algorithm, sign bool) string {
	switch {
	case alg == keys.ES256 && sign:
		return "ecdsa.SignASN1"
	case alg == keys.ES256:
		return "ecdsa.VerifyASN1"
	case alg == keys.EdDSA && sign:
		return "ed25519.Sign"
	case alg == keys.EdDSA:
		return "ed25519.Verify"
	case sign:
		return "rsa.SignPKCS1v15"
	default:
		return "rsa.VerifyPKCS1v15"
	}
}

// BenchmarkSign: Minter.Mint (claims, JSON, base64, signature) against the
// bare signature over a message of the same length.
func BenchmarkSign(b *testing.B) {
	for _, alg := range benchAlgorithms {
		bk := newBenchKey(b, alg)
		b.Run(string(alg)+"/Mint", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := bk.minter.Mint(benchSubject); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(string(alg)+"/"+rawName(alg, true), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				rawSign(b, bk.key, bk.message)
			}
		})
	}
}

// pairedBlock is how many operations of one kind run between clock reads:
// a block is short (0.1–10 ms) next to a scheduler time slice, so most
// blocks run uninterrupted even on a busy machine, and reading the clock
// costs nothing measurable.
const pairedBlock = 8

// paired alternates blocks of jwt and raw (which goes first alternates too)
// and reports the median block time of each per operation, and their
// ratio. Medians, not sums: on a shared machine a block that loses the CPU
// for a time slice takes many times longer, and a few of those would
// decide a sum.
func paired(b *testing.B, jwt, raw func()) {
	b.ReportAllocs()
	var tJWT, tRaw []time.Duration
	timed := func(op func()) time.Duration {
		t := time.Now()
		for range pairedBlock {
			op()
		}
		return time.Since(t)
	}
	for b.Loop() {
		if len(tJWT)%2 == 0 {
			tJWT = append(tJWT, timed(jwt))
			tRaw = append(tRaw, timed(raw))
		} else {
			tRaw = append(tRaw, timed(raw))
			tJWT = append(tJWT, timed(jwt))
		}
	}
	j, r := medianOf(tJWT), medianOf(tRaw)
	b.ReportMetric(float64(j)/pairedBlock, "jwt-ns/op")
	b.ReportMetric(float64(r)/pairedBlock, "raw-ns/op")
	b.ReportMetric(float64(j)/float64(r), "jwt/raw")
}

func medianOf(d []time.Duration) time.Duration {
	slices.Sort(d)
	return d[len(d)/2]
}

// BenchmarkPairedSign: Minter.Mint against the raw signature, interleaved.
func BenchmarkPairedSign(b *testing.B) {
	for _, alg := range benchAlgorithms {
		bk := newBenchKey(b, alg)
		b.Run(string(alg), func(b *testing.B) {
			paired(b, func() {
				if _, _, err := bk.minter.Mint(benchSubject); err != nil {
					b.Fatal(err)
				}
			}, func() { rawSign(b, bk.key, bk.message) })
		})
	}
}

// BenchmarkPairedVerify: Verifier.Verify against the raw check, interleaved.
func BenchmarkPairedVerify(b *testing.B) {
	for _, alg := range benchAlgorithms {
		bk := newBenchKey(b, alg)
		b.Run(string(alg), func(b *testing.B) {
			paired(b, func() {
				if _, err := bk.verifier.Verify(bk.token); err != nil {
					b.Fatal(err)
				}
			}, func() {
				if !rawVerify(bk.key, bk.message, bk.sig) {
					b.Fatal("raw signature does not verify")
				}
			})
		})
	}
}

// BenchmarkVerify: Verifier.Verify (parse, header checks, key lookup,
// signature, claim validation) against the bare signature check.
func BenchmarkVerify(b *testing.B) {
	for _, alg := range benchAlgorithms {
		bk := newBenchKey(b, alg)
		b.Run(string(alg)+"/Verify", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := bk.verifier.Verify(bk.token); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(string(alg)+"/"+rawName(alg, false), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if !rawVerify(bk.key, bk.message, bk.sig) {
					b.Fatal("raw signature does not verify")
				}
			}
		})
	}
}
