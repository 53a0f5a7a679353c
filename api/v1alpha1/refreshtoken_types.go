package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// AuthMethod says how the subject of a session proved who it is.
// +kubebuilder:validation:Enum=Password;ServiceAccount
type AuthMethod string

const (
	// AuthMethodPassword is a login with an account's username and password.
	AuthMethodPassword AuthMethod = "Password"
	// AuthMethodServiceAccount is an exchange of a Kubernetes ServiceAccount token.
	AuthMethodServiceAccount AuthMethod = "ServiceAccount"
)

// SessionState is the state of a session as rotor last wrote it.
// +kubebuilder:validation:Enum=Active;Revoked
type SessionState string

const (
	// SessionActive sessions can be refreshed until they expire.
	SessionActive SessionState = "Active"
	// SessionRevoked sessions are refused; garbage collection deletes them
	// after a retention period.
	SessionRevoked SessionState = "Revoked"
)

// RevocationReason says why a session was revoked.
// +kubebuilder:validation:Enum=Revoked;Reuse;AccountDisabled
type RevocationReason string

const (
	// RevocationRevoked is an explicit revocation (RFC 7009) by the client.
	RevocationRevoked RevocationReason = "Revoked"
	// RevocationReuse is a replay of an already rotated refresh token
	// (RFC 9700 section 4.14.2): the thief cannot be told from the owner, so
	// the whole session ends.
	RevocationReuse RevocationReason = "Reuse"
	// RevocationAccountDisabled is a refresh refused because the account was
	// disabled or removed.
	RevocationAccountDisabled RevocationReason = "AccountDisabled"
)

// Labels rotor sets on every RefreshToken it creates. A label value is at
// most 63 characters and a subject up to 339, so each value is a digest:
// the first 16 bytes of the SHA-256 of the subject (or client ID), as 32
// lowercase hex characters. In a shell:
//
//	kubectl get rt -l identity.rotor.dev/subject=$(printf %s alice | sha256sum | cut -c1-32)
//
// (the spec.subject field selector does the same for people; the labels are
// what rotor's session collector reads, from metadata only, to bound the
// sessions of one subject). Sessions created before rotor set them have none.
const (
	// SubjectLabel holds the digest of spec.subject.
	SubjectLabel = "identity.rotor.dev/subject"
	// ClientLabel holds the digest of spec.clientID.
	ClientLabel = "identity.rotor.dev/client"
)

// RefreshTokenSpec is one login session. Every field lives in spec, like a
// coordination.k8s.io Lease, so that a login is one create and a refresh is
// one conditional update, with no status round trip.
//
// The schema checks each field's shape but no rule across fields and sets
// no defaults: measured, the API server spent about 8% of its CPU per write
// on two CEL rules and two defaults, and rotor reads a session safely
// without them (any state but Active refuses, and a session ends at the
// earlier of expiresAt and absoluteExpiresAt: EndsAt).
type RefreshTokenSpec struct {
	// subject is the authenticated identity: an account's username, or
	// system:serviceaccount:<namespace>:<name>. It becomes the sub claim.
	// The longest is a ServiceAccount's: 22 + 63 + 1 + 253 = 339 characters.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=339
	Subject string `json:"subject"`

	// groups are the subject's groups at login, copied into access tokens.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=256
	Groups []string `json:"groups,omitempty"`

	// clientID is the OAuth client the session was issued to; it becomes the
	// client_id claim and a refresh from another client is refused.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	ClientID string `json:"clientID"`

	// audience is the aud claim of the session's access tokens. A refresh
	// keeps it: a session cannot widen its audience.
	// +required
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=512
	Audience []string `json:"audience"`

	// scope is the scope granted at login (RFC 6749 section 3.3): scope-tokens
	// separated by single spaces, sorted, each once. Refreshed access tokens
	// carry it, less any scope the client may no longer request. At most an
	// OAuthClient's 64 scopes of 256 characters and their separators.
	// +optional
	// +kubebuilder:validation:MaxLength=16447
	Scope string `json:"scope,omitempty"`

	// method says how the subject authenticated.
	// +required
	Method AuthMethod `json:"method"`

	// secretHash is the SHA-256 of the current refresh token's secret,
	// base64url without padding. The secret itself is never stored.
	// +required
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9_-]{43}$`
	SecretHash string `json:"secretHash"`

	// previousSecretHash is the SHA-256 of the secret that the last rotation
	// replaced. Presenting that secret again is a replay (reuse detection).
	// +optional
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9_-]{43}$`
	PreviousSecretHash string `json:"previousSecretHash,omitempty"`

	// state is Active or Revoked.
	// +required
	State SessionState `json:"state"`

	// expiresAt is the sliding expiry: each refresh moves it forward by the
	// refresh-token lifetime, never past absoluteExpiresAt.
	// +required
	// +kubebuilder:validation:Format=date-time
	ExpiresAt metav1.Time `json:"expiresAt"`

	// absoluteExpiresAt is the time the session ends however often it is
	// refreshed.
	// +required
	// +kubebuilder:validation:Format=date-time
	AbsoluteExpiresAt metav1.Time `json:"absoluteExpiresAt"`

	// rotations counts the refreshes of this session.
	// +optional
	// +kubebuilder:validation:Minimum=0
	Rotations int64 `json:"rotations,omitempty"`

	// lastUsedAt is the time of the last login or refresh; with rotations>0
	// it is also when previousSecretHash was rotated out.
	// +required
	// +kubebuilder:validation:Format=date-time
	LastUsedAt metav1.Time `json:"lastUsedAt"`

	// revokedAt is when the session was revoked. rotor sets it together
	// with state=Revoked and revocationReason.
	// +optional
	// +kubebuilder:validation:Format=date-time
	RevokedAt *metav1.Time `json:"revokedAt,omitempty"`

	// revocationReason says why the session was revoked.
	// +optional
	RevocationReason RevocationReason `json:"revocationReason,omitempty"`
}

// RefreshToken is one login session of one device: the hash of its current
// refresh token, rotated in place on every refresh, so the number of objects
// is the number of live sessions.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:shortName=rt,categories=rotor
// +kubebuilder:selectablefield:JSONPath=".spec.subject"
// +kubebuilder:selectablefield:JSONPath=".spec.clientID"
// +kubebuilder:printcolumn:name="Subject",type=string,JSONPath=".spec.subject"
// +kubebuilder:printcolumn:name="Client",type=string,JSONPath=".spec.clientID"
// +kubebuilder:printcolumn:name="Rotations",type=integer,JSONPath=".spec.rotations"
// +kubebuilder:printcolumn:name="Expires",type=string,JSONPath=".spec.expiresAt"
// +kubebuilder:printcolumn:name="State",type=string,JSONPath=".spec.state"
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=".metadata.creationTimestamp"
type RefreshToken struct {
	metav1.TypeMeta `json:",inline"`

	// metadata is standard object metadata.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitzero"`

	// spec is the session.
	// +required
	Spec RefreshTokenSpec `json:"spec"`
}

// +kubebuilder:object:root=true

// RefreshTokenList is a list of RefreshToken.
type RefreshTokenList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitzero"`
	Items           []RefreshToken `json:"items"`
}
