package sessions

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/base64"
	"strings"
)

// A refresh token on the wire is "<session name>.<secret>": the name says
// which RefreshToken object to read, the secret (32 random bytes, base64url)
// proves possession. Only the SHA-256 of the secret is ever stored.
const (
	namePrefix   = "rt-"
	nameRandLen  = 26 // base32 of 16 random bytes, unpadded
	secretBytes  = 32 // 256 bits, above RFC 6749 section 10.10's 2^-160
	secretLen    = 43 // base64url of 32 bytes, unpadded
	maxTokenSize = len(namePrefix) + nameRandLen + 1 + secretLen
)

var nameEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

func newName() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return namePrefix + nameEncoding.EncodeToString(b[:])
}

// newSecret returns a fresh secret and its hash.
func newSecret() (secret, hash string) {
	var b [secretBytes]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:]), hashSecret(b[:])
}

func hashSecret(raw []byte) string {
	sum := sha256.Sum256(raw)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

func formatToken(name, secret string) string { return name + "." + secret }

// ParseToken splits a wire token into its session name and the hash of its
// secret. It refuses anything rotor could not have issued without touching
// the API server.
func ParseToken(token string) (name, hash string, ok bool) {
	if len(token) != maxTokenSize {
		return "", "", false
	}
	name, secret, found := strings.Cut(token, ".")
	if !found || len(name) != len(namePrefix)+nameRandLen || !strings.HasPrefix(name, namePrefix) {
		return "", "", false
	}
	// Only what newName produces: lowercase base32 that re-encodes to itself
	// (the decoder would skip CR/LF and ignore trailing bits).
	raw, err := nameEncoding.DecodeString(name[len(namePrefix):])
	if err != nil || nameEncoding.EncodeToString(raw) != name[len(namePrefix):] {
		return "", "", false
	}
	raw, err = base64.RawURLEncoding.Strict().DecodeString(secret)
	if err != nil || len(raw) != secretBytes {
		return "", "", false
	}
	return name, hashSecret(raw), true
}

func hashEqual(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}
