package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// AuthMethod says how the subject of a session proved who it is.
type AuthMethod string

const (
	// AuthMethodPassword is a login with an account's username and password.
	AuthMethodPassword AuthMethod = "Password"
	// AuthMethodServiceAccount is an exchange of a Kubernetes ServiceAccount token.
	AuthMethodServiceAccount AuthMethod = "ServiceAccount"
)

// SessionState is the state of a session as rotor last wrote it.
type SessionState string

const (
	// SessionActive sessions can be refreshed until they expire.
	SessionActive SessionState = "Active"
	// SessionRevoked sessions are refused; garbage collection deletes them
	// after a retention period.
	SessionRevoked SessionState = "Revoked"
)

// RevocationReason says why a session was revoked.
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
// The API server sees five fields: subject and clientID, which it selects
// on; state and expiresAt, which kubectl prints; and session, everything
// else, as one JSON string that rotor alone writes and checks on every read
// (Validate). Measured on kube-apiserver v1.37, every field of a custom
// resource costs the API server on every write, in decoding, schema
// coercion, validation and ratcheting, even a field it does not validate:
// a session of 15 fields cost it about 15% more CPU per write than one
// string field of the same size. What a schema of every field protected
// against is a mistaken `kubectl edit` of a session; rotor refuses a session
// it cannot read, or that fails its checks, as it would a revoked one.
type RefreshTokenSpec struct {
	// subject is the authenticated identity: an account's username, or
	// system:serviceaccount:<namespace>:<name>. It becomes the sub claim.
	// The longest is a ServiceAccount's: 22 + 63 + 1 + 253 = 339 characters.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=339
	Subject string `json:"subject"`

	// clientID is the OAuth client the session was issued to; it becomes the
	// client_id claim and a refresh from another client is refused.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	ClientID string `json:"clientID"`

	// state is Active or Revoked. Optional to the API server only, so that
	// it accepts a session written by an earlier rotor (whose state was in
	// session); rotor requires it.
	// +optional
	// +kubebuilder:validation:Enum=Active;Revoked
	State SessionState `json:"state,omitempty"`

	// expiresAt is the sliding expiry: each refresh moves it forward by the
	// refresh-token lifetime, never past session.absoluteExpiresAt.
	// Optional to the API server only, as state is.
	// +optional
	ExpiresAt metav1.Time `json:"expiresAt,omitzero"`

	// session is the rest of the session, as a JSON string: its groups,
	// audience and scope, how it authenticated, the hashes of its current and
	// previous refresh token, its absolute expiry, rotations and revocation.
	// The Session type describes its fields; `kubectl get rt NAME -o
	// jsonpath='{.spec.session}' | jq` shows them. The API server stores it
	// unvalidated (a session written by an earlier rotor has an object here).
	// +required
	// +kubebuilder:validation:Schemaless
	// +kubebuilder:pruning:PreserveUnknownFields
	Session Session `json:"session"`
}

// Session is the part of a session that only rotor reads, stored as one
// JSON string (see MarshalJSON). Its limits are checked by
// RefreshTokenSpec.Validate, not by the API server.
type Session struct {
	// groups are the subject's groups at login, copied into access tokens:
	// at most 64, each 1-256 characters.
	// +optional
	Groups []string `json:"groups,omitempty"`

	// audience is the aud claim of the session's access tokens: 1-16
	// values of 1-512 characters. A refresh keeps it: a session cannot
	// widen its audience.
	// +required
	Audience []string `json:"audience"`

	// scope is the scope granted at login (RFC 6749 section 3.3): scope-tokens
	// separated by single spaces, sorted, each once. Refreshed access tokens
	// carry it, less any scope the client may no longer request. At most an
	// OAuthClient's 64 scopes of 256 characters and their separators.
	// +optional
	Scope string `json:"scope,omitempty"`

	// method says how the subject authenticated: Password or ServiceAccount.
	// +required
	Method AuthMethod `json:"method"`

	// secretHash is the SHA-256 of the current refresh token's secret,
	// base64url without padding (43 characters). The secret itself is never
	// stored.
	// +required
	SecretHash string `json:"secretHash"`

	// previousSecretHash is the SHA-256 of the secret that the last rotation
	// replaced. Presenting that secret again is a replay (reuse detection).
	// +optional
	PreviousSecretHash string `json:"previousSecretHash,omitempty"`

	// absoluteExpiresAt is the time the session ends however often it is
	// refreshed.
	// +required
	AbsoluteExpiresAt metav1.Time `json:"absoluteExpiresAt"`

	// rotations counts the refreshes of this session.
	// +optional
	Rotations int64 `json:"rotations,omitempty"`

	// lastUsedAt is the time of the last login or refresh; with rotations>0
	// it is also when previousSecretHash was rotated out.
	// +required
	LastUsedAt metav1.Time `json:"lastUsedAt"`

	// revokedAt is when the session was revoked. rotor sets it together
	// with state=Revoked and revocationReason.
	// +optional
	RevokedAt *metav1.Time `json:"revokedAt,omitempty"`

	// revocationReason says why the session was revoked: Revoked, Reuse or
	// AccountDisabled.
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
// +kubebuilder:printcolumn:name="State",type=string,JSONPath=".spec.state"
// +kubebuilder:printcolumn:name="Expires",type=string,JSONPath=".spec.expiresAt"
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
