package sessions

import (
	"encoding/base64"
	"strings"
	"testing"
)

// FuzzParseToken: ParseToken never panics, refuses with empty results, and
// accepts only tokens of the documented shape, whose name and hash it
// returns consistently with formatToken and hashSecret.
func FuzzParseToken(f *testing.F) {
	secret, _ := newSecret()
	f.Add(formatToken(newName(), secret))
	f.Add(fixedToken)
	f.Fuzz(func(t *testing.T, token string) {
		name, hash, ok := ParseToken(token)
		if !ok {
			if name != "" || hash != "" {
				t.Fatalf("ParseToken(%q) refused but returned name %q, hash %q", token, name, hash)
			}
			return
		}
		if bug := knownParseTokenBug(token); bug != "" {
			t.Skip("bug: " + bug)
		}
		if len(token) != maxTokenSize {
			t.Fatalf("ParseToken(%q) accepted a token of length %d", token, len(token))
		}
		if !namePattern.MatchString(name) {
			t.Fatalf("ParseToken(%q) returned name %q, not %s", token, name, namePattern)
		}
		if !hashPattern.MatchString(hash) {
			t.Fatalf("ParseToken(%q) returned hash %q, not %s", token, hash, hashPattern)
		}
		secret, found := strings.CutPrefix(token, name+".")
		if !found {
			t.Fatalf("ParseToken(%q) returned name %q, which is not the token's prefix", token, name)
		}
		raw, err := base64.RawURLEncoding.Strict().DecodeString(secret)
		if err != nil || len(raw) != secretBytes {
			t.Fatalf("ParseToken(%q) accepted secret %q: %v, %d bytes", token, secret, err, len(raw))
		}
		if got := hashSecret(raw); got != hash {
			t.Fatalf("ParseToken(%q) returned hash %q, want %q", token, hash, got)
		}
		// Re-formatting gives the same token: the encodings are canonical,
		// so no other spelling names the same session or secret.
		rawName, err := nameEncoding.DecodeString(name[len(namePrefix):])
		if err != nil || len(rawName) != 16 {
			t.Fatalf("ParseToken(%q) accepted name %q: %v, %d bytes", token, name, err, len(rawName))
		}
		again := formatToken(namePrefix+nameEncoding.EncodeToString(rawName), base64.RawURLEncoding.EncodeToString(raw))
		if again != token {
			t.Fatalf("ParseToken(%q) accepted a token that re-formats as %q", token, again)
		}
		if n, h, ok := ParseToken(again); !ok || n != name || h != hash {
			t.Fatalf("re-formatted token %q parses as %q, %q, %v", again, n, h, ok)
		}
	})
}

// knownParseTokenBug names a reported bug that token triggers, so the
// fuzz target skips it instead of failing until the bug is fixed. Remove
// it with the fix.
func knownParseTokenBug(token string) string {
	name, _, _ := strings.Cut(token, ".")
	if strings.ContainsAny(name, "\r\n") {
		return "ParseToken accepts session names containing \\r or \\n (encoding/base32 skips them)"
	}
	if raw, err := nameEncoding.DecodeString(strings.TrimPrefix(name, namePrefix)); err == nil && namePrefix+nameEncoding.EncodeToString(raw) != name {
		return "ParseToken accepts session names with non-canonical base32 trailing bits"
	}
	return ""
}
