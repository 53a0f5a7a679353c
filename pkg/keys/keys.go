// Package keys holds rotor's signing keys: their material (generation,
// PKCS#8 parsing and validation, RFC 7638 thumbprints, RFC 7517 JWKs), their
// Secret format and lifecycle, and Set, the issuer's lock-free view of the
// key set.
package keys

import (
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
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"
)

// Algorithm is a JWS signing algorithm (RFC 7518 name). One key signs with
// exactly one algorithm (RFC 8725 §3.1).
type Algorithm string

// The algorithms rotor signs with.
const (
	ES256 Algorithm = "ES256"
	EdDSA Algorithm = "EdDSA"
	RS256 Algorithm = "RS256"
)

// MinRSABits is the smallest RSA modulus accepted for RS256.
const MinRSABits = 2048

// rsaBits is the size of generated RSA keys.
const rsaBits = 2048

// ParseAlgorithm accepts exactly one of the algorithm names (surrounding
// whitespace ignored, as `kubectl create secret --from-file` keeps newlines).
func ParseAlgorithm(s string) (Algorithm, error) {
	switch a := Algorithm(strings.TrimSpace(s)); a {
	case ES256, EdDSA, RS256:
		return a, nil
	default:
		return "", fmt.Errorf("unsupported signing algorithm %q (want %s, %s or %s)", s, ES256, EdDSA, RS256)
	}
}

// State is a key's place in the rotation, from the key-state label.
type State string

// Key states. StateNew is an unlabelled Secret that rotor has not adopted yet.
const (
	StateNew     State = ""
	StateNext    State = "next"
	StateActive  State = "active"
	StateRetired State = "retired"
)

// Key is one signing key. A *Key handed out by a Set is shared and must not be
// modified.
type Key struct {
	// KID is the RFC 7638 JWK thumbprint (SHA-256, base64url without padding).
	KID       string
	Algorithm Algorithm
	// Signer is *ecdsa.PrivateKey (P-256) for ES256, ed25519.PrivateKey for
	// EdDSA, *rsa.PrivateKey (>= 2048 bits) for RS256: what golang-jwt's
	// matching SigningMethod accepts.
	Signer crypto.Signer
	Public crypto.PublicKey

	// Lifecycle, from the Secret's label and annotations (zero when absent).
	State       State
	PublishedAt time.Time
	ActivatedAt time.Time
	RetiredAt   time.Time
	SecretName  string
	// RotateRequested is set when the Secret carries the rotate annotation.
	RotateRequested bool
}

// Published reports whether verifiers may see the key (it is in the JWKS).
func (k *Key) Published() bool {
	return k.State == StateNext || k.State == StateActive || k.State == StateRetired
}

// Generate makes a new key for alg.
func Generate(alg Algorithm) (*Key, error) {
	var signer crypto.Signer
	var err error
	switch alg {
	case ES256:
		signer, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case EdDSA:
		_, signer, err = ed25519.GenerateKey(rand.Reader)
	case RS256:
		signer, err = rsa.GenerateKey(rand.Reader, rsaBits)
	default:
		return nil, fmt.Errorf("generating key: unsupported signing algorithm %q", alg)
	}
	if err != nil {
		return nil, fmt.Errorf("generating %s key: %w", alg, err)
	}
	return newKey(alg, signer)
}

// Parse reads a PKCS#8 PEM private key and checks it fits alg: a P-256 key
// for ES256, Ed25519 for EdDSA, RSA of at least MinRSABits for RS256.
func Parse(alg Algorithm, pemBytes []byte) (*Key, error) {
	if a, err := ParseAlgorithm(string(alg)); err != nil || a != alg {
		return nil, fmt.Errorf("unsupported signing algorithm %q", alg)
	}
	block, rest := pem.Decode(pemBytes)
	if block == nil {
		return nil, errors.New("no PEM block found")
	}
	if block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("PEM block is %q, want a PKCS#8 %q", block.Type, "PRIVATE KEY")
	}
	if len(strings.TrimSpace(string(rest))) != 0 {
		return nil, errors.New("unexpected data after the PEM block")
	}
	priv, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parsing PKCS#8 private key: %w", err)
	}
	signer, ok := priv.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("private key of type %T cannot sign", priv)
	}
	if err := checkKeyFits(alg, signer); err != nil {
		return nil, err
	}
	return newKey(alg, signer)
}

func checkKeyFits(alg Algorithm, signer crypto.Signer) error {
	switch k := signer.(type) {
	case *ecdsa.PrivateKey:
		if alg != ES256 {
			return fmt.Errorf("an ECDSA key cannot sign %s", alg)
		}
		if k.Curve != elliptic.P256() {
			return fmt.Errorf("ES256 needs a P-256 key, got %s", k.Curve.Params().Name)
		}
	case ed25519.PrivateKey:
		if alg != EdDSA {
			return fmt.Errorf("an Ed25519 key cannot sign %s", alg)
		}
	case *rsa.PrivateKey:
		if alg != RS256 {
			return fmt.Errorf("an RSA key cannot sign %s", alg)
		}
		if n := k.N.BitLen(); n < MinRSABits {
			return fmt.Errorf("RSA key of %d bits is too weak (at least %d)", n, MinRSABits)
		}
	default:
		return fmt.Errorf("unsupported private key type %T", signer)
	}
	return nil
}

func newKey(alg Algorithm, signer crypto.Signer) (*Key, error) {
	if err := checkKeyFits(alg, signer); err != nil {
		return nil, err
	}
	pub := signer.Public()
	kid, err := Thumbprint(pub)
	if err != nil {
		return nil, err
	}
	return &Key{KID: kid, Algorithm: alg, Signer: signer, Public: pub}, nil
}

// PEM encodes the private key as PKCS#8 PEM, the Secret's key.pem.
func (k *Key) PEM() ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k.Signer)
	if err != nil {
		return nil, fmt.Errorf("encoding key %s as PKCS#8: %w", k.KID, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// jwk is a public JWK (RFC 7517, 7518 §6, RFC 8037 for OKP). It has no field
// for private parameters, so none can leak into a JWKS.
type jwk struct {
	Kty string `json:"kty"`
	Use string `json:"use,omitempty"`
	Alg string `json:"alg,omitempty"`
	Kid string `json:"kid,omitempty"`
	Crv string `json:"crv,omitempty"`
	X   string `json:"x,omitempty"`
	Y   string `json:"y,omitempty"`
	N   string `json:"n,omitempty"`
	E   string `json:"e,omitempty"`
}

var b64 = base64.RawURLEncoding

// publicJWK holds the required members of pub's JWK, the ones a thumbprint
// covers.
func publicJWK(pub crypto.PublicKey) (jwk, error) {
	switch p := pub.(type) {
	case *ecdsa.PublicKey:
		if p.Curve != elliptic.P256() {
			return jwk{}, fmt.Errorf("unsupported curve %s", p.Curve.Params().Name)
		}
		pt, err := p.Bytes() // 0x04 || X || Y, fixed 32-byte coordinates
		if err != nil {
			return jwk{}, fmt.Errorf("encoding ECDSA public key: %w", err)
		}
		return jwk{Kty: "EC", Crv: "P-256", X: b64.EncodeToString(pt[1:33]), Y: b64.EncodeToString(pt[33:])}, nil
	case ed25519.PublicKey:
		return jwk{Kty: "OKP", Crv: "Ed25519", X: b64.EncodeToString(p)}, nil
	case *rsa.PublicKey:
		return jwk{Kty: "RSA", N: b64.EncodeToString(p.N.Bytes()), E: b64.EncodeToString(big.NewInt(int64(p.E)).Bytes())}, nil
	default:
		return jwk{}, fmt.Errorf("unsupported public key type %T", pub)
	}
}

// Thumbprint is the RFC 7638 JWK thumbprint of pub: SHA-256 over the required
// members in lexicographic order without whitespace, base64url, no padding.
func Thumbprint(pub crypto.PublicKey) (string, error) {
	j, err := publicJWK(pub)
	if err != nil {
		return "", fmt.Errorf("thumbprint: %w", err)
	}
	// Field order below is the lexicographic order RFC 7638 §3.2 asks for.
	var v any
	switch j.Kty {
	case "EC":
		v = struct {
			Crv string `json:"crv"`
			Kty string `json:"kty"`
			X   string `json:"x"`
			Y   string `json:"y"`
		}{j.Crv, j.Kty, j.X, j.Y}
	case "OKP":
		v = struct {
			Crv string `json:"crv"`
			Kty string `json:"kty"`
			X   string `json:"x"`
		}{j.Crv, j.Kty, j.X}
	case "RSA":
		v = struct {
			E   string `json:"e"`
			Kty string `json:"kty"`
			N   string `json:"n"`
		}{j.E, j.Kty, j.N}
	}
	b, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("thumbprint: %w", err)
	}
	sum := sha256.Sum256(b)
	return b64.EncodeToString(sum[:]), nil
}

// jwk is the key's public JWK with kid, alg and use "sig".
func (k *Key) jwk() (jwk, error) {
	j, err := publicJWK(k.Public)
	if err != nil {
		return jwk{}, fmt.Errorf("key %s: %w", k.KID, err)
	}
	j.Kid, j.Alg, j.Use = k.KID, string(k.Algorithm), "sig"
	return j, nil
}
