package sessions

import (
	"encoding/base64"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
)

// FuzzParseToken: ParseToken never panics, refuses with empty results, and
// accepts only tokens of the documented shape, whose name and hash it
// returns consistently with formatToken and hashSecret.
func FuzzParseToken(f *testing.F) {
	secret, _ := newSecret()
	f.Add(formatToken(newName(), secret))
	f.Add(fixedToken)
	f.Fuzz(func(t *testing.T, token string) {
		g := NewWithT(t)
		name, hash, ok := ParseToken(token)
		if !ok {
			g.Expect(name).To(BeEmpty(), "a refused token has no name")
			g.Expect(hash).To(BeEmpty(), "a refused token has no hash")
			return
		}
		g.Expect(token).To(HaveLen(maxTokenSize))
		g.Expect(name).To(MatchRegexp(namePattern.String()))
		g.Expect(hash).To(MatchRegexp(hashPattern.String()))
		secret, found := strings.CutPrefix(token, name+".")
		g.Expect(found).To(BeTrue(), "the name is the token's prefix")
		raw, err := base64.RawURLEncoding.Strict().DecodeString(secret)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(raw).To(HaveLen(secretBytes))
		g.Expect(hash).To(Equal(hashSecret(raw)))
		// Re-formatting gives the same token: the encodings are canonical,
		// so no other spelling names the same session or secret.
		rawName, err := nameEncoding.DecodeString(name[len(namePrefix):])
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(rawName).To(HaveLen(16))
		again := formatToken(namePrefix+nameEncoding.EncodeToString(rawName), base64.RawURLEncoding.EncodeToString(raw))
		g.Expect(again).To(Equal(token))
		n, h, ok := ParseToken(again)
		g.Expect(ok).To(BeTrue())
		g.Expect(n).To(Equal(name))
		g.Expect(h).To(Equal(hash))
	})
}
