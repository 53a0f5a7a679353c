package client_test

// Verification cost of the workloads' verifier next to the raw signature
// check on the same key and message; `make bench` (hack/bench) runs these
// beside pkg/tokens' and prints the ratios. The tokens and the JWKS are
// rotor's own (pkg/tokens' Minter, pkg/keys' Set), served from loopback by
// httptest so that NewVerifier fetches them as it would from rotor; after
// that first fetch Verify makes no request. Self-contained on purpose: it
// uses nothing of this package's other test files.

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"

	"rotor.dev/rotor/pkg/client"
	"rotor.dev/rotor/pkg/keys"
	"rotor.dev/rotor/pkg/tokens"
)

var benchAlgorithms = []keys.Algorithm{keys.ES256, keys.EdDSA, keys.RS256}

type benchVerifier struct {
	key      *keys.Key
	verifier *client.Verifier
	token    string
	message  []byte // the token's signing input
	sig      []byte // its raw signature (JWS form)
}

func newBenchVerifier(b *testing.B, alg keys.Algorithm) *benchVerifier {
	b.Helper()
	k, err := keys.Generate(alg)
	if err != nil {
		b.Fatal(err)
	}
	k.State = keys.StateActive
	sec, err := keys.NewSecret("rotor-system", "bench-key", k)
	if err != nil {
		b.Fatal(err)
	}
	sec.UID = types.UID("bench-" + string(alg))
	set := keys.NewSet()
	set.Update([]corev1.Secret{*sec})
	mux := http.NewServeMux()
	srv := httptest.NewServer(mux)
	b.Cleanup(srv.Close)
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]string{"issuer": srv.URL, "jwks_uri": srv.URL + "/keys"})
	})
	mux.HandleFunc("GET /keys", func(w http.ResponseWriter, r *http.Request) {
		body, _ := set.JWKS()
		_, _ = w.Write(body)
	})
	m := &tokens.Minter{Issuer: srv.URL, TTL: 20 * time.Minute, Keys: set, Clock: clock.RealClock{}}
	tok, _, err := m.Mint(tokens.Subject{Subject: "alice", ClientID: "rotor", Audience: []string{"rotor"}, Groups: []string{"dev", "ops"}})
	if err != nil {
		b.Fatal(err)
	}
	v, err := client.NewVerifier(context.Background(), srv.URL, "rotor")
	if err != nil {
		b.Fatal(err)
	}
	if _, err := v.Verify(context.Background(), tok); err != nil {
		b.Fatal(err)
	}
	i := strings.LastIndexByte(tok, '.')
	bv := &benchVerifier{key: k, verifier: v, token: tok, message: []byte(tok[:i])}
	if bv.sig, err = jwsSignature(tok[i+1:], alg); err != nil {
		b.Fatal(err)
	}
	if !rawVerify(k, bv.message, bv.sig) {
		b.Fatal("raw signature does not verify")
	}
	return bv
}

// jwsSignature decodes a JWS signature; ES256's fixed r||s becomes the
// ASN.1 form ecdsa.VerifyASN1 takes.
func jwsSignature(enc string, alg keys.Algorithm) ([]byte, error) {
	sig, err := base64.RawURLEncoding.DecodeString(enc)
	if err != nil || alg != keys.ES256 {
		return sig, err
	}
	return asn1.Marshal(struct{ R, S *big.Int }{new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])})
}

// rawVerify checks sig over message as JWS does for the key's algorithm,
// SHA-256 included.
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

func rawName(alg keys.Algorithm) string {
	switch alg {
	case keys.ES256:
		return "ecdsa.VerifyASN1"
	case keys.EdDSA:
		return "ed25519.Verify"
	}
	return "rsa.VerifyPKCS1v15"
}

// BenchmarkVerify: Verifier.Verify against the bare signature check.
func BenchmarkVerify(b *testing.B) {
	ctx := context.Background()
	for _, alg := range benchAlgorithms {
		bv := newBenchVerifier(b, alg)
		b.Run(string(alg)+"/Verify", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := bv.verifier.Verify(ctx, bv.token); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(string(alg)+"/"+rawName(alg), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if !rawVerify(bv.key, bv.message, bv.sig) {
					b.Fatal("raw signature does not verify")
				}
			}
		})
	}
}

// BenchmarkPairedVerify alternates blocks of Verify and of the raw check in
// one loop and reports the median block time of each per operation and
// their ratio (jwt/raw): both see the same load on a shared machine, and a
// block that lost the CPU for a time slice does not decide the result.
func BenchmarkPairedVerify(b *testing.B) {
	const block = 8
	ctx := context.Background()
	for _, alg := range benchAlgorithms {
		bv := newBenchVerifier(b, alg)
		b.Run(string(alg), func(b *testing.B) {
			b.ReportAllocs()
			var tJWT, tRaw []time.Duration
			jwtBlock := func() {
				t := time.Now()
				for range block {
					if _, err := bv.verifier.Verify(ctx, bv.token); err != nil {
						b.Fatal(err)
					}
				}
				tJWT = append(tJWT, time.Since(t))
			}
			rawBlock := func() {
				t := time.Now()
				for range block {
					if !rawVerify(bv.key, bv.message, bv.sig) {
						b.Fatal("raw signature does not verify")
					}
				}
				tRaw = append(tRaw, time.Since(t))
			}
			for b.Loop() {
				if len(tJWT)%2 == 0 {
					jwtBlock()
					rawBlock()
				} else {
					rawBlock()
					jwtBlock()
				}
			}
			slices.Sort(tJWT)
			slices.Sort(tRaw)
			j, r := tJWT[len(tJWT)/2], tRaw[len(tRaw)/2]
			b.ReportMetric(float64(j)/block, "jwt-ns/op")
			b.ReportMetric(float64(r)/block, "raw-ns/op")
			b.ReportMetric(float64(j)/float64(r), "jwt/raw")
		})
	}
}
