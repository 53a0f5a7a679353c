package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// ClientType says whether a client can keep a secret (RFC 6749 section 2.1).
// +kubebuilder:validation:Enum=Public;Confidential
type ClientType string

const (
	// ClientTypePublic clients cannot keep a secret (a CLI, a single-page
	// app, a mobile app): they send their client_id only.
	ClientTypePublic ClientType = "Public"
	// ClientTypeConfidential clients keep a secret rotor generated, whose
	// hashes are in the Secret that secretRef names.
	ClientTypeConfidential ClientType = "Confidential"
)

// GrantType is an OAuth 2.0 grant type a client may use at the token
// endpoint.
// +kubebuilder:validation:Enum=password;refresh_token;client_credentials;"urn:ietf:params:oauth:grant-type:token-exchange"
type GrantType string

const (
	// GrantPassword is the resource owner password credentials grant
	// (RFC 6749 section 4.3). It creates a session.
	GrantPassword GrantType = "password"
	// GrantRefreshToken is the refresh of a session (RFC 6749 section 6).
	GrantRefreshToken GrantType = "refresh_token"
	// GrantClientCredentials is the client credentials grant (RFC 6749
	// section 4.4): confidential clients only, no session.
	GrantClientCredentials GrantType = "client_credentials"
	// GrantTokenExchange is the token exchange of a Kubernetes
	// ServiceAccount token (RFC 8693). It creates a session.
	GrantTokenExchange GrantType = "urn:ietf:params:oauth:grant-type:token-exchange"
)

// OAuthClientSpec is what one client may do at the token endpoint.
//
// +kubebuilder:validation:XValidation:rule="self.type != 'Confidential' || has(self.secretRef)",message="a Confidential client needs secretRef"
// +kubebuilder:validation:XValidation:rule="self.type != 'Public' || !has(self.secretRef)",message="a Public client has no secret: remove secretRef"
// +kubebuilder:validation:XValidation:rule="self.type != 'Public' || !self.grantTypes.exists(g, g == 'client_credentials')",message="a Public client cannot use client_credentials (RFC 6749 section 4.4: confidential clients only)"
type OAuthClientSpec struct {
	// type is Public (a client that cannot keep a secret: it sends its
	// client_id only) or Confidential (it authenticates with a secret,
	// RFC 6749 section 2.3.1).
	// +required
	Type ClientType `json:"type"`

	// grantTypes are the grant types the client may use. refresh_token
	// refreshes sessions, which only password and the token exchange create;
	// client_credentials is for Confidential clients only.
	// +required
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=4
	GrantTypes []GrantType `json:"grantTypes"`

	// audiences are the aud values the client may request. The first is the
	// audience of tokens whose request names none.
	// The order matters, so the list is atomic; its values are unique.
	// +required
	// +listType=atomic
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=512
	// +kubebuilder:validation:XValidation:rule="self.all(a, self.exists_one(b, b == a))",message="audiences must be unique"
	Audiences []string `json:"audiences"`

	// scopes are the scope values the client may request (RFC 6749 section
	// 3.3): each a scope-token, printable ASCII without space, '"' or '\'.
	// None means the client may request no scope.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=256
	// +kubebuilder:validation:items:Pattern=`^[\x21\x23-\x5B\x5D-\x7E]+$`
	Scopes []string `json:"scopes,omitempty"`

	// tokenLifetimes override the server's lifetimes for this client. Each is
	// bounded by the server's own at runtime: a client gets the shorter.
	// +optional
	TokenLifetimes *TokenLifetimes `json:"tokenLifetimes,omitempty"`

	// secretRef names the Secret, in the client's namespace, that holds the
	// hashes of a Confidential client's secret. Required for Confidential
	// clients, refused for Public ones.
	// +optional
	SecretRef *ClientSecretReference `json:"secretRef,omitempty"`
}

// TokenLifetimes are a client's lifetimes, each a Go duration such as
// "20m", "12h" or "1h30m". Absent fields keep the server's.
//
// +kubebuilder:validation:XValidation:rule="!has(self.refreshToken) || !has(self.sessionMax) || duration(self.refreshToken) <= duration(self.sessionMax)",message="refreshToken must not be longer than sessionMax"
type TokenLifetimes struct {
	// accessToken is the lifetime of access tokens: more than 0 and at most
	// 1h, as for the server's --access-token-ttl.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s') && duration(self) <= duration('1h')",message="accessToken must be more than 0s and at most 1h"
	AccessToken *metav1.Duration `json:"accessToken,omitempty"`

	// refreshToken is the sliding lifetime of refresh tokens: a session
	// unused this long expires. More than 0.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="refreshToken must be more than 0s"
	RefreshToken *metav1.Duration `json:"refreshToken,omitempty"`

	// sessionMax is the absolute lifetime of a session, however often it is
	// refreshed. More than 0.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="sessionMax must be more than 0s"
	SessionMax *metav1.Duration `json:"sessionMax,omitempty"`

	// reuseGrace is how long after a rotation a replay of the previous
	// refresh token is taken for the client racing itself rather than a
	// theft. 0s is strict.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	ReuseGrace *metav1.Duration `json:"reuseGrace,omitempty"`
}

// ClientSecretReference names a Secret of type
// identity.rotor.dev/client-secret in the client's namespace.
type ClientSecretReference struct {
	// name is the Secret's name.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name"`
}

// Condition types and their reasons are rotor's (see controllers): an
// OAuthClient has one condition, Ready.
const (
	// ConditionReady is True when the issuer may serve the client: its spec
	// is consistent and, for a Confidential client, its Secret holds a hash.
	ConditionReady = "Ready"
)

// OAuthClientStatus is what rotor's reconciler last found.
type OAuthClientStatus struct {
	// conditions are the client's conditions; Ready says whether the issuer
	// may serve it, and its reason what to fix when it may not.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// observedGeneration is the metadata.generation the status was computed
	// from.
	// +optional
	// +kubebuilder:validation:Minimum=0
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

// OAuthClient is an application registered with rotor: what it may ask the
// token endpoint for, and how it authenticates. Its name is its client_id.
// RFC 6749 allows any printable ASCII in a client_id, but a Kubernetes name
// is a DNS subdomain (RFC 1123: lowercase letters, digits, '-' and '.', at
// most 253 characters), so rotor's client_ids are DNS subdomain names.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=oac,categories=rotor
// +kubebuilder:printcolumn:name="Type",type=string,JSONPath=".spec.type"
// +kubebuilder:printcolumn:name="Grants",type=string,JSONPath=".spec.grantTypes"
// +kubebuilder:printcolumn:name="Audiences",type=string,JSONPath=".spec.audiences"
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=".status.conditions[?(@.type==\"Ready\")].status"
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=".status.conditions[?(@.type==\"Ready\")].reason",priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=".metadata.creationTimestamp"
type OAuthClient struct {
	metav1.TypeMeta `json:",inline"`

	// metadata is standard object metadata; metadata.name is the client_id.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitzero"`

	// spec is what the client may do.
	// +required
	Spec OAuthClientSpec `json:"spec"`

	// status is what rotor's reconciler last found.
	// +optional
	Status OAuthClientStatus `json:"status,omitzero"`
}

// +kubebuilder:object:root=true

// OAuthClientList is a list of OAuthClient.
type OAuthClientList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitzero"`
	Items           []OAuthClient `json:"items"`
}

func init() {
	SchemeBuilder.Register(func(s *runtime.Scheme) error {
		s.AddKnownTypes(GroupVersion, &OAuthClient{}, &OAuthClientList{})
		return nil
	})
}
