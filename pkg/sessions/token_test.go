package sessions

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"regexp"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
)

// The documented shapes: a session name is "rt-" and 26 characters of
// lowercase unpadded base32; a secret hash is base64url without padding of
// a SHA-256 (the CRD's secretHash pattern).
var (
	namePattern = regexp.MustCompile(`^rt-[a-z2-7]{26}$`)
	hashPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{43}$`)
)

// A fixed token: 16 bytes 0x00..0x0f name the session, 32 bytes 0x20..0x3f
// are the secret.
var (
	fixedNameBytes   = seq(0x00, 16)
	fixedSecretBytes = seq(0x20, 32)
	fixedName        = namePrefix + nameEncoding.EncodeToString(fixedNameBytes)
	fixedSecret      = base64.RawURLEncoding.EncodeToString(fixedSecretBytes)
	fixedToken       = fixedName + "." + fixedSecret
)

func seq(from byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = from + byte(i)
	}
	return b
}

func sha256URL(b []byte) string {
	sum := sha256.Sum256(b)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// replaceAt returns s with s[i:i+len(repl)] replaced by repl.
func replaceAt(s string, i int, repl string) string {
	return s[:i] + repl + s[i+len(repl):]
}

func TestParseTokenTable(t *testing.T) {
	g := NewWithT(t)
	// The fixture itself: 3 + 26 + 1 + 43 characters.
	g.Expect(fixedToken).To(HaveLen(73))
	g.Expect(fixedName).To(MatchRegexp(namePattern.String()))
	nameEnd := len(fixedName) // index of the dot

	for _, tc := range []struct {
		name  string
		token string
		ok    bool
	}{
		{name: "a token of the documented shape is accepted", token: fixedToken, ok: true},
		{name: "a token of all-zero bytes is accepted", token: "rt-" + strings.Repeat("a", 26) + "." + strings.Repeat("A", 43), ok: true},
		{name: "the empty string is refused", token: ""},
		{name: "a token one character short is refused", token: fixedToken[:72]},
		{name: "a token one character long is refused", token: fixedToken + "A"},
		{name: "a token with a trailing newline is refused", token: fixedToken + "\n"},
		{name: "a token with a leading space is refused", token: " " + fixedToken[1:]},
		{name: "a token of twice the length is refused", token: fixedToken + fixedToken},
		{name: "a token without the dot is refused", token: replaceAt(fixedToken, nameEnd, "a")},
		{name: "a token with the dot one place early is refused", token: fixedToken[:nameEnd-1] + "." + "a" + fixedToken[nameEnd+1:]},
		{name: "a token with the dot one place late is refused", token: fixedToken[:nameEnd] + "A." + fixedToken[nameEnd+2:]},
		{name: "a token with a second dot in the secret is refused", token: replaceAt(fixedToken, nameEnd+5, ".")},
		{name: "a token with prefix rx- is refused", token: replaceAt(fixedToken, 0, "rx-")},
		{name: "a token with prefix RT- is refused", token: replaceAt(fixedToken, 0, "RT-")},
		{name: "a token with prefix rt_ is refused", token: replaceAt(fixedToken, 0, "rt_")},
		{name: "a token without prefix is refused", token: "aaa" + fixedToken[3:]},
		{name: "a name with the digit 1 (not base32) is refused", token: replaceAt(fixedToken, 10, "1")},
		{name: "a name with the digit 0 is refused", token: replaceAt(fixedToken, 10, "0")},
		{name: "a name with the digit 8 is refused", token: replaceAt(fixedToken, 10, "8")},
		{name: "a name with a hyphen is refused", token: replaceAt(fixedToken, 10, "-")},
		{name: "a name with base32 padding is refused", token: replaceAt(fixedToken, nameEnd-1, "=")},
		{name: "an uppercase name is refused", token: "rt-" + strings.ToUpper(fixedName[3:]) + fixedToken[nameEnd:]},
		{name: "a name with one uppercase letter is refused", token: replaceAt(fixedToken, 3, strings.ToUpper(fixedToken[3:4]))},
		{name: "a secret with standard base64 '+' is refused", token: replaceAt(fixedToken, nameEnd+1, "+")},
		{name: "a secret with standard base64 '/' is refused", token: replaceAt(fixedToken, nameEnd+1, "/")},
		{name: "a secret with '!' is refused", token: replaceAt(fixedToken, nameEnd+1, "!")},
		{name: "a secret ending in padding is refused", token: fixedToken[:72] + "="},
		{name: "a secret ending in double padding is refused", token: fixedToken[:71] + "=="},
		{name: "a secret with non-canonical trailing bits is refused", token: fixedToken[:72] + nextB64(fixedToken[72:])},
		{name: "a secret of 31 bytes padded with a space is refused", token: fixedName + "." + base64.RawURLEncoding.EncodeToString(fixedSecretBytes[:31]) + " "},
		{name: "a secret with a NUL byte is refused", token: replaceAt(fixedToken, nameEnd+1, "\x00")},
		{name: "a name with a non-ASCII letter is refused", token: replaceAt(fixedToken, 3, "é")},
		{name: "a secret with a non-ASCII letter is refused", token: replaceAt(fixedToken, nameEnd+1, "é")},
		{name: "a token with invalid UTF-8 is refused", token: replaceAt(fixedToken, nameEnd+1, "\xff")},
		{name: "a name with fullwidth letters is refused", token: replaceAt(fixedToken, 3, "ａ")[:73]},
		{
			name:  "a name with two newlines in place of letters is refused",
			token: replaceAt(fixedToken, nameEnd-2, "\n\n"),
		},
		{
			name:  "a name with CR LF in place of letters is refused",
			token: replaceAt(fixedToken, nameEnd-2, "\r\n"),
		},
		{
			name:  "a name with non-canonical trailing bits is refused",
			token: fixedToken[:nameEnd-1] + nextB32(fixedToken[nameEnd-1:nameEnd]) + fixedToken[nameEnd:],
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			name, hash, ok := ParseToken(tc.token)
			g.Expect(ok).To(Equal(tc.ok), "token %q", tc.token)
			if !tc.ok {
				g.Expect(name).To(BeEmpty())
				g.Expect(hash).To(BeEmpty())
				return
			}
			g.Expect(name).To(Equal(tc.token[:nameEnd]))
			g.Expect(name).To(MatchRegexp(namePattern.String()))
			raw, err := base64.RawURLEncoding.DecodeString(tc.token[nameEnd+1:])
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(hash).To(Equal(sha256URL(raw)))
			g.Expect(hash).To(MatchRegexp(hashPattern.String()))
		})
	}
}

// nextB64 returns the base64url character after c: for the last character
// of a 32-byte secret, whose two low bits are padding, that sets a
// trailing bit.
func nextB64(c string) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	return string(alphabet[(strings.Index(alphabet, c)+1)%64])
}

// nextB32 is nextB64 for the name alphabet: the last of 26 characters
// carries 3 bits of the 16 bytes and 2 of padding.
func nextB32(c string) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz234567"
	return string(alphabet[(strings.Index(alphabet, c)+1)%32])
}

func TestParseTokenOfTheFixedTokenGivesItsNameAndHash(t *testing.T) {
	g := NewWithT(t)
	name, hash, ok := ParseToken(fixedToken)
	g.Expect(ok).To(BeTrue())
	g.Expect(name).To(Equal(fixedName))
	g.Expect(hash).To(Equal(sha256URL(fixedSecretBytes)))
	g.Expect(hash).To(Equal(hashSecret(fixedSecretBytes)))
	// The hash is of the decoded bytes, not of the text.
	g.Expect(hash).NotTo(Equal(sha256URL([]byte(fixedSecret))))
}

func TestTokensRotorIssuesParseBack(t *testing.T) {
	g := NewWithT(t)
	names := map[string]bool{}
	secrets := map[string]bool{}
	for range 1000 {
		name := newName()
		secret, hash := newSecret()
		g.Expect(name).To(MatchRegexp(namePattern.String()))
		g.Expect(secret).To(MatchRegexp(`^[A-Za-z0-9_-]{43}$`))
		g.Expect(hash).To(MatchRegexp(hashPattern.String()))
		g.Expect(names).NotTo(HaveKey(name))
		g.Expect(secrets).NotTo(HaveKey(secret))
		names[name], secrets[secret] = true, true

		token := formatToken(name, secret)
		g.Expect(token).To(HaveLen(maxTokenSize))
		gotName, gotHash, ok := ParseToken(token)
		g.Expect(ok).To(BeTrue(), "token %q", token)
		g.Expect(gotName).To(Equal(name))
		g.Expect(gotHash).To(Equal(hash))
		// The name round-trips through the encoding: no trailing bits.
		raw, err := nameEncoding.DecodeString(name[len(namePrefix):])
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(raw).To(HaveLen(16))
		g.Expect(namePrefix + nameEncoding.EncodeToString(raw)).To(Equal(name))
	}
}

func TestHashEqual(t *testing.T) {
	g := NewWithT(t)
	a := hashSecret(fixedSecretBytes)
	b := hashSecret(bytes.Repeat([]byte{1}, 32))
	g.Expect(hashEqual(a, a)).To(BeTrue())
	g.Expect(hashEqual(a, b)).To(BeFalse())
	g.Expect(hashEqual(a, "")).To(BeFalse())
	g.Expect(hashEqual("", "")).To(BeTrue(), "callers must check for an empty previous hash themselves")
	g.Expect(hashEqual(a, a[:42])).To(BeFalse())
}
