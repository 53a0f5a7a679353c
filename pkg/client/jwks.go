package client

// The key set is parsed here rather than with go-jose: pkg/client is imported
// by rotor's users, and a JOSE library would be its largest dependency for
// the three key shapes rotor publishes. jwks_test.go checks this parser
// against go-jose's output, and verifier_test.go verifies tokens signed by
// the issuer's own code.

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
)

// The algorithms rotor signs with, and the only ones a Verifier accepts.
const (
	AlgES256 = "ES256"
	AlgEdDSA = "EdDSA"
	AlgRS256 = "RS256"
)

// minRSABits is the smallest RSA modulus accepted, as rotor's own minimum.
const minRSABits = 2048

// verificationKey is a published key and the one algorithm it may verify
// (RFC 8725 §3.1).
type verificationKey struct {
	alg string
	pub crypto.PublicKey
}

type jsonWebKey struct {
	Kty string `json:"kty"`
	Use string `json:"use"`
	Alg string `json:"alg"`
	Kid string `json:"kid"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
	N   string `json:"n"`
	E   string `json:"e"`
}

// parseJWKS reads an RFC 7517 key set into usable keys by kid. Keys not for
// signatures, of unknown types, without kid, malformed or too weak are
// skipped, so one odd key does not stop verification with the others.
func parseJWKS(body []byte) (map[string]verificationKey, error) {
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &set); err != nil {
		return nil, fmt.Errorf("decoding JWKS: %w", err)
	}
	if set.Keys == nil {
		return nil, errors.New("decoding JWKS: no keys member")
	}
	keys := make(map[string]verificationKey, len(set.Keys))
	for _, raw := range set.Keys {
		var j jsonWebKey
		if json.Unmarshal(raw, &j) != nil || j.Kid == "" || (j.Use != "" && j.Use != "sig") {
			continue
		}
		if k, err := parseJWK(j); err == nil {
			keys[j.Kid] = k
		}
	}
	return keys, nil
}

// parseJWK accepts exactly the key shapes rotor publishes. An absent alg is
// inferred, which is unambiguous because each key type allows one
// algorithm; a present alg must be that one.
func parseJWK(j jsonWebKey) (verificationKey, error) {
	var alg string
	var pub crypto.PublicKey
	var err error
	switch j.Kty {
	case "EC":
		alg = AlgES256
		pub, err = parseEC(j)
	case "OKP":
		alg = AlgEdDSA
		pub, err = parseOKP(j)
	case "RSA":
		alg = AlgRS256
		pub, err = parseRSA(j)
	default:
		return verificationKey{}, fmt.Errorf("unsupported kty %q", j.Kty)
	}
	if err != nil {
		return verificationKey{}, err
	}
	if j.Alg != "" && j.Alg != alg {
		return verificationKey{}, fmt.Errorf("alg %q does not fit kty %s", j.Alg, j.Kty)
	}
	return verificationKey{alg: alg, pub: pub}, nil
}

var b64 = base64.RawURLEncoding

func parseEC(j jsonWebKey) (*ecdsa.PublicKey, error) {
	if j.Crv != "P-256" {
		return nil, fmt.Errorf("unsupported EC curve %q", j.Crv)
	}
	x, errX := b64.DecodeString(j.X)
	y, errY := b64.DecodeString(j.Y)
	if errX != nil || errY != nil || len(x) != 32 || len(y) != 32 {
		return nil, errors.New("malformed P-256 coordinates")
	}
	// ParseUncompressedPublicKey also checks the point is on the curve.
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, x...), y...))
	if err != nil {
		return nil, fmt.Errorf("P-256 key: %w", err)
	}
	return pub, nil
}

func parseOKP(j jsonWebKey) (ed25519.PublicKey, error) {
	if j.Crv != "Ed25519" {
		return nil, fmt.Errorf("unsupported OKP curve %q", j.Crv)
	}
	x, err := b64.DecodeString(j.X)
	if err != nil || len(x) != ed25519.PublicKeySize {
		return nil, errors.New("malformed Ed25519 key")
	}
	return ed25519.PublicKey(x), nil
}

func parseRSA(j jsonWebKey) (*rsa.PublicKey, error) {
	n, errN := b64.DecodeString(j.N)
	e, errE := b64.DecodeString(j.E)
	if errN != nil || errE != nil || len(n) == 0 || len(e) == 0 || len(e) > 4 {
		return nil, errors.New("malformed RSA key")
	}
	pub := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
	if bits := pub.N.BitLen(); bits < minRSABits {
		return nil, fmt.Errorf("RSA key of %d bits is too weak", bits)
	}
	if pub.E < 3 || pub.E%2 == 0 {
		return nil, fmt.Errorf("RSA exponent %d is invalid", pub.E)
	}
	return pub, nil
}
