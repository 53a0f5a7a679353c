package oauthclients_test

import (
	"encoding/base64"
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"rotor.dev/rotor/pkg/oauthclients"
)

func TestGenerateGives256RandomBitsAndTheirHash(t *testing.T) {
	g := NewWithT(t)
	seen := map[string]bool{}
	for range 1000 {
		secret, hash := oauthclients.Generate()
		g.Expect(secret).To(HaveLen(oauthclients.SecretLength))
		raw, err := base64.RawURLEncoding.Strict().DecodeString(secret)
		g.Expect(err).NotTo(HaveOccurred(), "base64url without padding")
		g.Expect(raw).To(HaveLen(32), "256 bits")
		g.Expect(hash).To(Equal(oauthclients.Hash(secret)))
		g.Expect(oauthclients.ValidHash(hash)).To(BeTrue())
		g.Expect(seen).NotTo(HaveKey(secret))
		seen[secret] = true
	}
	// Every bit position takes both values over the run (a stuck bit would
	// be a broken generator, not bad luck: 2^-999).
	var or, and [32]byte
	for i := range and {
		and[i] = 0xff
	}
	for s := range seen {
		raw, _ := base64.RawURLEncoding.DecodeString(s)
		for i, b := range raw {
			or[i] |= b
			and[i] &= b
		}
	}
	for i := range or {
		g.Expect(or[i]).To(Equal(byte(0xff)), "byte %d", i)
		g.Expect(and[i]).To(Equal(byte(0)), "byte %d", i)
	}
}

func TestHashIsBase64URLSHA256(t *testing.T) {
	g := NewWithT(t)
	// SHA-256 of "" and of "abc" (FIPS 180-2), base64url without padding.
	g.Expect(oauthclients.Hash("")).To(Equal("47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"))
	g.Expect(oauthclients.Hash("abc")).To(Equal("ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0"))
	g.Expect(oauthclients.Hash("abc")).To(HaveLen(oauthclients.HashLength))

	for _, tc := range []struct {
		name string
		hash string
		want bool
	}{
		{"a SHA-256 in base64url is a hash", oauthclients.Hash("x"), true},
		{"padding is not", oauthclients.Hash("x") + "=", false},
		{"standard base64 is not", strings.NewReplacer("-", "+", "_", "/").Replace("47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"), false},
		{"a plaintext secret is not", "correct horse battery staple", false},
		{"hex is not", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", false},
		{"an empty string is not", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			NewWithT(t).Expect(oauthclients.ValidHash(tc.hash)).To(Equal(tc.want))
		})
	}
}

func TestVerify(t *testing.T) {
	current, currentHash := oauthclients.Generate()
	previous, previousHash := oauthclients.Generate()
	other, _ := oauthclients.Generate()
	const chosen = "password1234" // someone hashed a password of their own by hand
	for _, tc := range []struct {
		name   string
		secret string
		hashes []string
		want   bool
	}{
		{"the secret of the only hash is valid", current, []string{currentHash}, true},
		{"another secret is not", other, []string{currentHash}, false},
		{"with two hashes, the current secret is valid", current, []string{currentHash, previousHash}, true},
		{"with two hashes, the previous secret is valid", previous, []string{currentHash, previousHash}, true},
		{"with two hashes, another secret is not", other, []string{currentHash, previousHash}, false},
		{"without hashes nothing is valid", current, nil, false},
		{"the hash itself is not the secret", currentHash, []string{currentHash}, false},
		{"the secret with a trailing newline is not", current + "\n", []string{currentHash}, false},
		{"a prefix of the secret is not", current[:42], []string{currentHash}, false},
		{"an empty secret is not, even beside a hash of the empty string", "", []string{oauthclients.Hash("")}, false},
		{"a chosen password is not, though its hash is stored", chosen, []string{oauthclients.Hash(chosen)}, false},
		{"a secret of the right length but not base64url is not, though its hash is stored",
			strings.Repeat("!", 43), []string{oauthclients.Hash(strings.Repeat("!", 43))}, false},
		{"a malformed stored hash matches nothing and spoils nothing", current, []string{"junk", currentHash}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			NewWithT(t).Expect(oauthclients.Verify(tc.secret, tc.hashes)).To(Equal(tc.want))
		})
	}
}

// TestVerifyHasNoEarlyExit holds the constant-time structure of Verify, which
// a timing test on a shared machine could not: inside its loop over the
// hashes there is no return, break or goto, and each hash is compared with
// crypto/subtle. (Review note: results are combined with |, never by
// branching on them; the format check looks at every byte of the presented
// secret, which the caller knows anyway.)
func TestVerifyHasNoEarlyExit(t *testing.T) {
	g := NewWithT(t)
	f, err := parser.ParseFile(token.NewFileSet(), "secret.go", nil, 0)
	g.Expect(err).NotTo(HaveOccurred())
	var verify *ast.FuncDecl
	for _, d := range f.Decls {
		if fd, ok := d.(*ast.FuncDecl); ok && fd.Name.Name == "Verify" {
			verify = fd
		}
	}
	g.Expect(verify).NotTo(BeNil())
	loops, compares := 0, 0
	ast.Inspect(verify.Body, func(n ast.Node) bool {
		loop, ok := n.(*ast.RangeStmt)
		if !ok {
			return true
		}
		loops++
		ast.Inspect(loop.Body, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.ReturnStmt:
				t.Errorf("Verify returns inside its loop over the hashes")
			case *ast.BranchStmt:
				t.Errorf("Verify has a %s inside its loop over the hashes", n.Tok)
			case *ast.IfStmt:
				t.Errorf("Verify branches inside its loop over the hashes")
			case *ast.SelectorExpr:
				if id, ok := n.X.(*ast.Ident); ok && id.Name == "subtle" && n.Sel.Name == "ConstantTimeCompare" {
					compares++
				}
			}
			return true
		})
		return false
	})
	g.Expect(loops).To(Equal(1))
	g.Expect(compares).To(Equal(1))
}

func clientSecret(data map[string]string) *corev1.Secret {
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "client-secret-app"}, Type: oauthclients.SecretType, Data: map[string][]byte{}}
	for k, v := range data {
		s.Data[k] = []byte(v)
	}
	return s
}

func TestParseSecret(t *testing.T) {
	h1, h2 := oauthclients.Hash("one"), oauthclients.Hash("two")
	for _, tc := range []struct {
		name    string
		secret  *corev1.Secret
		want    []string
		wantErr error
		message string
	}{
		{"one hash is one hash", clientSecret(map[string]string{"secretHash": h1}), []string{h1}, nil, ""},
		{"two hashes are both, the current first", clientSecret(map[string]string{"secretHash": h1, "previousSecretHash": h2}), []string{h1, h2}, nil, ""},
		{"an Opaque Secret is of the wrong type", func() *corev1.Secret {
			s := clientSecret(map[string]string{"secretHash": h1})
			s.Type = corev1.SecretTypeOpaque
			return s
		}(), nil, oauthclients.ErrWrongType, `Secret client-secret-app is of type "Opaque"`},
		{"a Secret without type is Opaque", func() *corev1.Secret {
			s := clientSecret(map[string]string{"secretHash": h1})
			s.Type = ""
			return s
		}(), nil, oauthclients.ErrWrongType, `of type "Opaque"`},
		{"no data is no hash", clientSecret(nil), nil, oauthclients.ErrNoHash, "has no secretHash"},
		{"an empty secretHash is no hash", clientSecret(map[string]string{"secretHash": ""}), nil, oauthclients.ErrNoHash, "has no secretHash"},
		{"a previous hash alone is no hash", clientSecret(map[string]string{"previousSecretHash": h2}), nil, oauthclients.ErrNoHash, "has no secretHash"},
		{"a hash that is not a SHA-256 is malformed", clientSecret(map[string]string{"secretHash": "abc"}), nil, oauthclients.ErrMalformed, "secretHash is not a base64url SHA-256"},
		{"a malformed previous hash is malformed", clientSecret(map[string]string{"secretHash": h1, "previousSecretHash": "abc"}), nil, oauthclients.ErrMalformed, "previousSecretHash is not"},
		{"a plaintext secret beside the hash is malformed", clientSecret(map[string]string{"secretHash": h1, "secret": "s3cret", "clientSecret": "s3cret"}), nil, oauthclients.ErrMalformed,
			"has data keys clientSecret, secret; a client-secret Secret holds only secretHash and previousSecretHash, never a plaintext secret"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			got, err := oauthclients.ParseSecret(tc.secret)
			if tc.wantErr == nil {
				g.Expect(err).NotTo(HaveOccurred())
				g.Expect(got).To(Equal(tc.want))
				return
			}
			g.Expect(errors.Is(err, tc.wantErr)).To(BeTrue(), "got %v", err)
			g.Expect(err.Error()).To(ContainSubstring(tc.message))
			g.Expect(err.Error()).NotTo(ContainSubstring(h1), "errors never quote a hash")
			g.Expect(got).To(BeNil())
		})
	}
}
