package oauthclients

import (
	"errors"
	"fmt"
	"regexp"
	"slices"

	identityv1alpha1 "rotor.dev/rotor/api/v1alpha1"
)

// Errors of CheckSpec, for callers to tell apart with errors.Is.
var (
	// ErrSecretRef: a Confidential client without secretRef, or a Public
	// client with one.
	ErrSecretRef = errors.New("secretRef does not fit the client type")
	// ErrPublicClientCredentials: a Public client with the
	// client_credentials grant, which RFC 6749 section 4.4 keeps to
	// confidential clients.
	ErrPublicClientCredentials = errors.New("a Public client cannot use client_credentials")
	// ErrGrantsInconsistent: a grant list that cannot work, such as
	// refresh_token without a grant that creates sessions.
	ErrGrantsInconsistent = errors.New("the grant types are inconsistent")
	// ErrInvalidSpec: anything else the schema should have refused (an
	// object stored before the schema refused it, or a manifest being
	// built).
	ErrInvalidSpec = errors.New("the spec is invalid")
)

// KnownGrantTypes are the grant types rotor knows, in the schema's order.
var KnownGrantTypes = []identityv1alpha1.GrantType{
	identityv1alpha1.GrantPassword,
	identityv1alpha1.GrantRefreshToken,
	identityv1alpha1.GrantClientCredentials,
	identityv1alpha1.GrantTokenExchange,
}

// scopeToken is RFC 6749 section 3.3's scope-token: %x21 / %x23-5B / %x5D-7E.
var scopeToken = regexp.MustCompile(`^[\x21\x23-\x5B\x5D-\x7E]+$`)

// CheckSpec applies the rules of an OAuthClient spec that its schema holds
// (so the API server refuses objects breaking them, but objects stored before
// a rule was added are not checked again) and those it does not, so that the
// reconciler and `rotor client create` judge a client alike. Its errors wrap
// ErrSecretRef, ErrPublicClientCredentials, ErrGrantsInconsistent or
// ErrInvalidSpec; the first problem found is returned.
func CheckSpec(spec *identityv1alpha1.OAuthClientSpec) error {
	switch spec.Type {
	case identityv1alpha1.ClientTypePublic, identityv1alpha1.ClientTypeConfidential:
	default:
		return fmt.Errorf("%w: type %q is neither Public nor Confidential", ErrInvalidSpec, spec.Type)
	}
	if len(spec.GrantTypes) == 0 {
		return fmt.Errorf("%w: no grant types", ErrInvalidSpec)
	}
	for i, g := range spec.GrantTypes {
		if !slices.Contains(KnownGrantTypes, g) {
			return fmt.Errorf("%w: unknown grant type %q", ErrInvalidSpec, g)
		}
		if slices.Contains(spec.GrantTypes[:i], g) {
			return fmt.Errorf("%w: grant type %q is listed twice", ErrInvalidSpec, g)
		}
	}
	if len(spec.Audiences) == 0 {
		return fmt.Errorf("%w: no audiences", ErrInvalidSpec)
	}
	for i, a := range spec.Audiences {
		if a == "" {
			return fmt.Errorf("%w: an audience is empty", ErrInvalidSpec)
		}
		if slices.Contains(spec.Audiences[:i], a) {
			return fmt.Errorf("%w: audience %q is listed twice", ErrInvalidSpec, a)
		}
	}
	for i, s := range spec.Scopes {
		if !scopeToken.MatchString(s) {
			return fmt.Errorf("%w: scope %q is not an RFC 6749 scope-token (printable ASCII without space, '\"' or '\\')", ErrInvalidSpec, s)
		}
		if slices.Contains(spec.Scopes[:i], s) {
			return fmt.Errorf("%w: scope %q is listed twice", ErrInvalidSpec, s)
		}
	}
	switch {
	case spec.Type == identityv1alpha1.ClientTypeConfidential && (spec.SecretRef == nil || spec.SecretRef.Name == ""):
		return fmt.Errorf("%w: a Confidential client needs secretRef", ErrSecretRef)
	case spec.Type == identityv1alpha1.ClientTypePublic && spec.SecretRef != nil:
		return fmt.Errorf("%w: a Public client has no secret, but secretRef names %q", ErrSecretRef, spec.SecretRef.Name)
	}
	if spec.Type == identityv1alpha1.ClientTypePublic && spec.Allows(identityv1alpha1.GrantClientCredentials) {
		return fmt.Errorf("%w (RFC 6749 section 4.4): make it Confidential or remove the grant", ErrPublicClientCredentials)
	}
	if spec.Allows(identityv1alpha1.GrantRefreshToken) &&
		!spec.Allows(identityv1alpha1.GrantPassword) && !spec.Allows(identityv1alpha1.GrantTokenExchange) {
		return fmt.Errorf("%w: refresh_token without password or token exchange, the grants that create sessions, refreshes nothing", ErrGrantsInconsistent)
	}
	return nil
}
