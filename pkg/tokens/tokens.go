// Package tokens mints and verifies rotor's access tokens: JWTs per RFC 9068
// (header typ at+jwt, claims iss, sub, aud, exp, iat, jti, client_id, and
// scope when one was granted),
// signed with the key set's active key.
package tokens

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"k8s.io/utils/clock"

	"rotor.dev/rotor/pkg/keys"
)

// Type is the JWT typ header of access tokens (RFC 9068 section 2.1).
const Type = "at+jwt"

// Claims are the claims of an access token.
type Claims struct {
	jwt.RegisteredClaims
	ClientID string   `json:"client_id"`
	Scope    string   `json:"scope,omitempty"`
	Groups   []string `json:"groups,omitempty"`
}

// Subject is what an access token is about.
type Subject struct {
	Subject  string
	ClientID string
	Audience []string
	Groups   []string
	// Scope is the granted scope (RFC 9068 section 2.2.3), "" for none.
	Scope string
	// TTL is the token's lifetime, the client's; zero is the Minter's TTL.
	TTL time.Duration
}

// ErrNoActiveKey means the key set has no active key yet (the issuer is not ready).
var ErrNoActiveKey = errors.New("no active signing key")

// ActiveKeys gives the key that signs new tokens.
type ActiveKeys interface {
	Active() (*keys.Key, bool)
}

// PublishedKeys finds a published key by kid.
type PublishedKeys interface {
	Lookup(kid string) (*keys.Key, bool)
}

// Minter signs access tokens.
type Minter struct {
	Issuer string
	TTL    time.Duration
	Keys   ActiveKeys
	Clock  clock.PassiveClock

	// headers caches each key's encoded JOSE header: alg, kid and typ never
	// change for a key, and JSON-encoding them per token is a fifth of an
	// Ed25519 signature's cost.
	headers sync.Map // kid -> string
}

// wireClaims is Claims as signed: plain integers for the times, so minting
// does not pay for jwt.NumericDate's generic encoding.
type wireClaims struct {
	Issuer    string   `json:"iss"`
	Subject   string   `json:"sub"`
	Audience  []string `json:"aud"`
	ExpiresAt int64    `json:"exp"`
	IssuedAt  int64    `json:"iat"`
	ID        string   `json:"jti"`
	ClientID  string   `json:"client_id"`
	Scope     string   `json:"scope,omitempty"`
	Groups    []string `json:"groups,omitempty"`
}

// Mint signs an access token for s and returns it with its expiry.
func (m *Minter) Mint(s Subject) (string, time.Time, error) {
	key, ok := m.Keys.Active()
	if !ok {
		return "", time.Time{}, ErrNoActiveKey
	}
	method, err := signingMethod(key.Algorithm)
	if err != nil {
		return "", time.Time{}, err
	}
	header, err := m.header(key, method)
	if err != nil {
		return "", time.Time{}, err
	}
	now := m.Clock.Now().Truncate(time.Second)
	ttl := m.TTL
	if s.TTL > 0 {
		ttl = s.TTL
	}
	exp := now.Add(ttl)
	payload, err := json.Marshal(wireClaims{
		Issuer: m.Issuer, Subject: s.Subject, Audience: s.Audience,
		ExpiresAt: exp.Unix(), IssuedAt: now.Unix(), ID: newJTI(),
		ClientID: s.ClientID, Scope: s.Scope, Groups: s.Groups,
	})
	if err != nil {
		return "", time.Time{}, fmt.Errorf("encoding access-token claims: %w", err)
	}
	enc := base64.RawURLEncoding
	buf := make([]byte, 0, len(header)+1+enc.EncodedLen(len(payload))+1+enc.EncodedLen(512))
	buf = append(buf, header...)
	buf = append(buf, '.')
	buf = enc.AppendEncode(buf, payload)
	sig, err := method.Sign(string(buf), key.Signer)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("signing access token with key %s: %w", key.KID, err)
	}
	buf = append(buf, '.')
	buf = enc.AppendEncode(buf, sig)
	return string(buf), exp, nil
}

func (m *Minter) header(key *keys.Key, method jwt.SigningMethod) (string, error) {
	if h, ok := m.headers.Load(key.KID); ok {
		return h.(string), nil
	}
	raw, err := json.Marshal(map[string]string{"alg": method.Alg(), "kid": key.KID, "typ": Type})
	if err != nil {
		return "", err
	}
	h := base64.RawURLEncoding.EncodeToString(raw)
	m.headers.Store(key.KID, h)
	return h, nil
}

func newJTI() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func signingMethod(alg keys.Algorithm) (jwt.SigningMethod, error) {
	switch alg {
	case keys.ES256:
		return jwt.SigningMethodES256, nil
	case keys.EdDSA:
		return jwt.SigningMethodEdDSA, nil
	case keys.RS256:
		return jwt.SigningMethodRS256, nil
	}
	return nil, fmt.Errorf("unsupported signing algorithm %q", alg)
}

// Verifier checks access tokens as RFC 9068 section 4 asks of a resource
// server: typ, the signature with a published key of the key's own
// algorithm, exact iss, aud, and exp/nbf/iat within a leeway.
type Verifier struct {
	Issuer   string
	Audience string
	Keys     PublishedKeys
	Leeway   time.Duration
	Clock    clock.PassiveClock

	parserOnce sync.Once
	parser     *jwt.Parser
}

// ErrInvalidToken wraps every reason a token is refused; callers answer
// RFC 6750 invalid_token.
var ErrInvalidToken = errors.New("invalid token")

var allAlgorithms = []string{"ES256", "EdDSA", "RS256"}

// Verify returns the claims of a valid access token.
func (v *Verifier) Verify(token string) (*Claims, error) {
	v.parserOnce.Do(func() {
		v.parser = jwt.NewParser(
			jwt.WithValidMethods(allAlgorithms),
			jwt.WithIssuer(v.Issuer),
			jwt.WithAudience(v.Audience),
			jwt.WithExpirationRequired(),
			jwt.WithIssuedAt(),
			jwt.WithLeeway(v.Leeway),
			jwt.WithTimeFunc(v.Clock.Now),
		)
	})
	claims := &Claims{}
	_, err := v.parser.ParseWithClaims(token, claims, v.keyFor)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	// RFC 9068 section 2.2 requires these of every access token.
	if claims.Subject == "" || claims.ClientID == "" || claims.ID == "" || claims.IssuedAt == nil {
		return nil, fmt.Errorf("%w: sub, client_id, jti and iat are required", ErrInvalidToken)
	}
	return claims, nil
}

func (v *Verifier) keyFor(t *jwt.Token) (any, error) {
	if typ, _ := t.Header["typ"].(string); !isAccessTokenType(typ) {
		return nil, fmt.Errorf("typ %q is not %s", typ, Type)
	}
	kid, _ := t.Header["kid"].(string)
	key, ok := v.Keys.Lookup(kid)
	if !ok {
		return nil, fmt.Errorf("unknown kid %q", kid)
	}
	// One algorithm per key (RFC 8725 section 3.1): a key is never used
	// with an algorithm other than its own.
	if t.Method.Alg() != string(key.Algorithm) {
		return nil, fmt.Errorf("alg %s does not match key %s", t.Method.Alg(), key.KID)
	}
	return key.Public, nil
}

// isAccessTokenType accepts "at+jwt" and "application/at+jwt" (RFC 9068
// section 4), case-insensitively as media types are.
func isAccessTokenType(typ string) bool {
	typ = strings.ToLower(typ)
	return typ == Type || typ == "application/"+Type
}
