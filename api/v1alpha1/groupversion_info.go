// Package v1alpha1 contains the API types of the identity.rotor.dev group.
// It holds types only: no behaviour, no imports of rotor's other packages.
//
// +kubebuilder:object:generate=true
// +groupName=identity.rotor.dev
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the group and version of these types.
	GroupVersion = schema.GroupVersion{Group: "identity.rotor.dev", Version: "v1alpha1"}

	// SchemeBuilder registers these types with a runtime.Scheme. It is
	// apimachinery's, as in k8s.io/api, so that this package depends on
	// apimachinery only (controller-runtime's scheme.Builder is deprecated
	// for that reason).
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds these types to a runtime.Scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

// addKnownTypes adds every kind of this group version, and the meta/v1
// types (ListOptions and the like) under it.
func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &RefreshToken{}, &RefreshTokenList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
