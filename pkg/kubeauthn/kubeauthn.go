// Package kubeauthn is what a Kubernetes API server needs to trust rotor's
// access tokens: a structured authentication configuration
// (apiserver.config.k8s.io/v1 AuthenticationConfiguration, --authentication-config)
// with one JWT authenticator for rotor, and the check that rotor signs with
// an algorithm the API server accepts.
package kubeauthn

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	apiserverv1 "k8s.io/apiserver/pkg/apis/apiserver/v1"
	"sigs.k8s.io/yaml"
)

// Defaults of `rotor authn-config`.
const (
	// DefaultAudience is the aud the API server requires: the kubectl
	// client's audience.
	DefaultAudience = "kubernetes"
	// DefaultPrefix starts every username and group rotor asserts, so that
	// none can be mistaken for one of the cluster's own (system:masters,
	// a certificate's CN, another issuer's users).
	DefaultPrefix = "rotor:"
)

// Options describe the authenticator.
type Options struct {
	// IssuerURL is rotor's --issuer-url: the API server requires https and
	// compares it with iss and discovery's issuer exactly.
	IssuerURL string
	// CAPEM is the PEM bundle the API server verifies rotor's certificate
	// with; empty trusts the API server host's roots.
	CAPEM []byte
	// Audiences are the aud values accepted; a token must carry one.
	Audiences []string
	// Prefix starts usernames and groups; "" maps them unprefixed, which
	// only the userValidationRules then stand between rotor's subjects and
	// the cluster's system: names.
	Prefix string
}

// Config is the AuthenticationConfiguration trusting rotor.
//
// Usernames are the sub claim and groups the groups claim, both prefixed;
// the uid is the sub claim too (rotor's subjects are stable names). The
// validation rule refuses any username that, prefix removed, is a system:
// name: rotor never issues one for an account (usernames are DNS names) but
// a ServiceAccount's exchanged token is system:serviceaccount:..., and a
// Kubernetes identity must come from the API server's own authenticators,
// not from rotor.
func Config(o Options) (*apiserverv1.AuthenticationConfiguration, error) {
	u, err := url.Parse(o.IssuerURL)
	switch {
	case err != nil:
		return nil, fmt.Errorf("issuer URL: %w", err)
	case u.Scheme != "https":
		return nil, fmt.Errorf("issuer URL %q: the API server trusts https issuers only", o.IssuerURL)
	case u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil:
		return nil, fmt.Errorf("issuer URL %q must be https://host[:port] with no query, fragment or user", o.IssuerURL)
	}
	if len(o.Audiences) == 0 {
		return nil, errors.New("at least one audience is required")
	}
	prefix := o.Prefix
	return &apiserverv1.AuthenticationConfiguration{
		TypeMeta: metav1.TypeMeta{APIVersion: "apiserver.config.k8s.io/v1", Kind: "AuthenticationConfiguration"},
		JWT: []apiserverv1.JWTAuthenticator{{
			Issuer: apiserverv1.Issuer{
				URL:                  o.IssuerURL,
				CertificateAuthority: string(o.CAPEM),
				Audiences:            o.Audiences,
				AudienceMatchPolicy:  matchPolicy(o.Audiences),
			},
			ClaimMappings: apiserverv1.ClaimMappings{
				Username: apiserverv1.PrefixedClaimOrExpression{Claim: "sub", Prefix: &prefix},
				Groups:   apiserverv1.PrefixedClaimOrExpression{Claim: "groups", Prefix: &prefix},
				UID:      apiserverv1.ClaimOrExpression{Claim: "sub"},
			},
			UserValidationRules: []apiserverv1.UserValidationRule{{
				Expression: fmt.Sprintf("!user.username.startsWith(%q) && !user.username.startsWith(%q)", prefix+"system:", "system:"),
				Message:    "rotor may not assert system: identities",
			}},
		}},
	}, nil
}

// matchPolicy is MatchAny for several audiences, which the API server
// requires then; empty (exact) for one.
func matchPolicy(aud []string) apiserverv1.AudienceMatchPolicyType {
	if len(aud) > 1 {
		return apiserverv1.AudienceMatchPolicyMatchAny
	}
	return ""
}

// YAML encodes cfg as the file --authentication-config reads.
func YAML(cfg *apiserverv1.AuthenticationConfiguration) ([]byte, error) {
	return yaml.Marshal(cfg)
}

// Accepted are the JWS algorithms the API server's JWT authenticator
// verifies (k8s.io/apiserver's oidc authenticator): RSA, ECDSA and RSA-PSS,
// not EdDSA.
var Accepted = []string{"RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512"}

// ErrAlgorithm means rotor signs with no algorithm the API server accepts.
var ErrAlgorithm = errors.New("the Kubernetes API server cannot verify rotor's tokens")

// CheckAlgorithms refuses a set of signing algorithms (discovery's
// access_token_signing_alg_values_supported, or --key-algorithm) of which
// none is accepted. rotor signs every token with one key set, so an issuer
// on EdDSA cannot be trusted by an API server at all: it must move to ES256
// (the default) or RS256 rather than sign the API server's tokens with a
// second key set, which would double what rotates and what can leak.
func CheckAlgorithms(algs []string) error {
	for _, a := range algs {
		if slices.Contains(Accepted, a) {
			return nil
		}
	}
	return fmt.Errorf("%w: it signs with %s and the API server accepts only %s; run rotor with --key-algorithm ES256 (the default) or RS256",
		ErrAlgorithm, strings.Join(algs, ", "), strings.Join(Accepted, ", "))
}

// Discover reads the signing algorithms from rotor's discovery document
// and checks that its issuer is issuerURL exactly, as the API server will.
func Discover(ctx context.Context, c *http.Client, issuerURL string) ([]string, error) {
	endpoint := strings.TrimSuffix(issuerURL, "/") + "/.well-known/openid-configuration"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("reading discovery: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("reading discovery: %s answered %s", endpoint, resp.Status)
	}
	var doc struct {
		Issuer string   `json:"issuer"`
		Algs   []string `json:"access_token_signing_alg_values_supported"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&doc); err != nil {
		return nil, fmt.Errorf("reading discovery: %w", err)
	}
	if doc.Issuer != issuerURL {
		return nil, fmt.Errorf("discovery at %s says issuer %q, not %q: the API server would refuse it", endpoint, doc.Issuer, issuerURL)
	}
	return doc.Algs, nil
}
