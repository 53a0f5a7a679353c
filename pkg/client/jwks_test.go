package client

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"testing"

	"github.com/go-jose/go-jose/v4"
)

// The key-set parser is hand-written (see jwks.go), so it is checked against
// go-jose, an independent implementation: key sets go-jose writes must parse
// to the same public keys, with the one algorithm each key type allows.
func TestKeySetsWrittenByAnIndependentImplementationParseToTheSameKeys(t *testing.T) {
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	edPub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	weakRSA, err := rsa.GenerateKey(rand.Reader, 1024) //nolint:gosec // the point: a key too weak to accept
	if err != nil {
		t.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
		{Key: &ecKey.PublicKey, KeyID: "ec", Algorithm: AlgES256, Use: "sig"},
		{Key: edPub, KeyID: "ed", Algorithm: AlgEdDSA, Use: "sig"},
		{Key: &rsaKey.PublicKey, KeyID: "rsa", Algorithm: AlgRS256, Use: "sig"},
		{Key: &rsaKey.PublicKey, KeyID: "rsa-no-alg", Use: "sig"},
		{Key: &rsaKey.PublicKey, KeyID: "rsa-for-encryption", Algorithm: "RSA-OAEP", Use: "enc"},
		{Key: &weakRSA.PublicKey, KeyID: "rsa-1024", Algorithm: AlgRS256, Use: "sig"},
		{Key: &p384.PublicKey, KeyID: "p384", Algorithm: "ES384", Use: "sig"},
	}}
	body, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	got, err := parseJWKS(body)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]struct {
		alg string
		pub crypto.PublicKey
	}{
		"ec":         {AlgES256, &ecKey.PublicKey},
		"ed":         {AlgEdDSA, edPub},
		"rsa":        {AlgRS256, &rsaKey.PublicKey},
		"rsa-no-alg": {AlgRS256, &rsaKey.PublicKey},
	}
	if len(got) != len(want) {
		t.Errorf("parsed kids %v, want exactly %d: encryption, weak and unsupported keys are skipped", keysOf(got), len(want))
	}
	for kid, w := range want {
		k, ok := got[kid]
		if !ok {
			t.Errorf("kid %q: not parsed", kid)
			continue
		}
		if k.alg != w.alg {
			t.Errorf("kid %q: alg %q, want %q", kid, k.alg, w.alg)
		}
		if eq, ok := w.pub.(interface{ Equal(crypto.PublicKey) bool }); !ok || !eq.Equal(k.pub) {
			t.Errorf("kid %q: parsed public key differs from the one go-jose wrote", kid)
		}
	}
}

func keysOf(m map[string]verificationKey) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
