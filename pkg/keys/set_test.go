package keys_test

import (
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"

	"rotor.dev/rotor/pkg/keys"
)

func TestEmptySet(t *testing.T) {
	g := NewWithT(t)
	s := keys.NewSet()
	_, ok := s.Active()
	g.Expect(ok).To(BeFalse())
	g.Expect(s.ReadyCheck(nil)).To(MatchError("no active signing key yet"))
	body, etag := s.JWKS()
	g.Expect(string(body)).To(Equal(`{"keys":[]}`))
	g.Expect(etag).To(MatchRegexp(`^"[A-Za-z0-9_-]{22}"$`))
	g.Expect(s.Algorithms()).To(BeEmpty())
}

func TestSetPublishesOnlyPublicParts(t *testing.T) {
	g := NewWithT(t)
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	next, nextKey := secret(t, "next", keys.EdDSA, keys.StateNext, t0, time.Time{}, time.Time{})
	active, activeKey := secret(t, "active", keys.RS256, keys.StateActive, t0, t0, time.Time{})
	retired, retiredKey := secret(t, "retired", keys.ES256, keys.StateRetired, t0, t0, t0)
	unadopted, unadoptedKey := secret(t, "byo", keys.ES256, keys.StateNew, time.Time{}, time.Time{}, time.Time{})
	corrupt, corruptKey := secret(t, "corrupt", keys.ES256, keys.StateActive, t0, t0.Add(time.Hour), time.Time{})
	corrupt.Data[keys.DataKey] = []byte("garbage")
	other := corev1.Secret{Type: corev1.SecretTypeOpaque}

	s := keys.NewSet()
	s.Update([]corev1.Secret{*next, *active, *retired, *unadopted, *corrupt, other})

	got, ok := s.Active()
	g.Expect(ok).To(BeTrue())
	g.Expect(got.KID).To(Equal(activeKey.KID))
	g.Expect(s.ReadyCheck(nil)).To(Succeed())
	g.Expect(s.Algorithms()).To(Equal([]keys.Algorithm{keys.ES256, keys.EdDSA, keys.RS256}))
	for _, k := range []*keys.Key{nextKey, activeKey, retiredKey} {
		found, ok := s.Lookup(k.KID)
		g.Expect(ok).To(BeTrue(), k.SecretName)
		g.Expect(found.SecretName).To(Equal(k.SecretName))
	}
	for _, k := range []*keys.Key{unadoptedKey, corruptKey} {
		_, ok := s.Lookup(k.KID)
		g.Expect(ok).To(BeFalse(), "%s must not be published", k.SecretName)
	}

	body, etag := s.JWKS()
	var raw struct {
		Keys []map[string]any `json:"keys"`
	}
	g.Expect(json.Unmarshal(body, &raw)).To(Succeed())
	g.Expect(raw.Keys).To(HaveLen(3))
	public := map[string][]string{
		"EC":  {"alg", "crv", "kid", "kty", "use", "x", "y"},
		"OKP": {"alg", "crv", "kid", "kty", "use", "x"},
		"RSA": {"alg", "e", "kid", "kty", "n", "use"},
	}
	for _, k := range raw.Keys {
		var members []string
		for m := range k {
			members = append(members, m)
		}
		slices.Sort(members)
		// Exactly the public members: no d, p, q, dp, dq, qi, oth or k.
		g.Expect(members).To(Equal(public[k["kty"].(string)]), "%v", k)
		g.Expect(k["use"]).To(Equal("sig"))
	}

	// An independent JOSE library reads the same keys, all public.
	var set jose.JSONWebKeySet
	g.Expect(json.Unmarshal(body, &set)).To(Succeed())
	for _, k := range []*keys.Key{nextKey, activeKey, retiredKey} {
		found := set.Key(k.KID)
		g.Expect(found).To(HaveLen(1))
		g.Expect(found[0].IsPublic()).To(BeTrue())
		g.Expect(found[0].Valid()).To(BeTrue())
		g.Expect(found[0].Algorithm).To(Equal(string(k.Algorithm)))
		g.Expect(found[0].Use).To(Equal("sig"))
		g.Expect(found[0].Key).To(Equal(k.Public))
	}

	// The same keys give the same body and ETag; a change gives new ones.
	s.Update([]corev1.Secret{*retired, *active, *next})
	body2, etag2 := s.JWKS()
	g.Expect(body2).To(Equal(body))
	g.Expect(etag2).To(Equal(etag))
	s.Update([]corev1.Secret{*active, *next})
	body3, etag3 := s.JWKS()
	g.Expect(body3).NotTo(Equal(body))
	g.Expect(etag3).NotTo(Equal(etag))
	_, ok = s.Lookup(retiredKey.KID)
	g.Expect(ok).To(BeFalse())
}

func TestSetAgreesWithTheControllerOnTwoActiveKeys(t *testing.T) {
	g := NewWithT(t)
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	older, _ := secret(t, "a", keys.ES256, keys.StateActive, t0, t0, time.Time{})
	newer, newerKey := secret(t, "b", keys.ES256, keys.StateActive, t0, t0.Add(time.Second), time.Time{})
	s := keys.NewSet()
	s.Update([]corev1.Secret{*newer, *older})
	got, ok := s.Active()
	g.Expect(ok).To(BeTrue())
	g.Expect(got.KID).To(Equal(newerKey.KID))
	s.Update([]corev1.Secret{*older, *newer})
	got, _ = s.Active()
	g.Expect(got.KID).To(Equal(newerKey.KID))
}
