// Package scheme is the one runtime.Scheme rotor's clients share: the
// built-in Kubernetes kinds and rotor's own.
package scheme

import (
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"

	identityv1alpha1 "rotor.dev/rotor/api/v1alpha1"
)

// Scheme knows the built-in kinds and rotor's. It is built once and only
// read afterwards, which a runtime.Scheme allows from many goroutines.
var Scheme = newScheme()

func newScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(identityv1alpha1.AddToScheme(s))
	return s
}
