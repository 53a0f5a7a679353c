package issuer

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	identityv1alpha1 "rotor.dev/rotor/api/v1alpha1"
	"rotor.dev/rotor/pkg/oauthclients"
	rotorscheme "rotor.dev/rotor/pkg/scheme"
)

// clientsNamespace is the namespace of the clients of testClients.
const clientsNamespace = "rotor-test"

// testClients is a real oauthclients.Registry over an in-memory reader
// holding Ready clients, for the tests that need no API server. The
// clients' own behaviour is pkg/oauthclients' to test against one.
func testClients(tb testing.TB, clients ...*identityv1alpha1.OAuthClient) Clients {
	tb.Helper()
	objs := make([]client.Object, 0, len(clients))
	for _, c := range clients {
		c = c.DeepCopy()
		c.Namespace = clientsNamespace
		c.Status.Conditions = []metav1.Condition{{
			Type: identityv1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: "Valid", LastTransitionTime: metav1.Now(),
		}}
		objs = append(objs, c)
	}
	reader := fake.NewClientBuilder().WithScheme(rotorscheme.Scheme).WithObjects(objs...).Build()
	// Public clients only: their Secrets are never read.
	r, err := oauthclients.NewRegistry(reader, nil, oauthclients.RegistryOptions{Namespace: clientsNamespace})
	if err != nil {
		tb.Fatal(err)
	}
	return r
}

// publicClient is a Public client that may use every grant but
// client_credentials, for audiences aud (the first is the default).
func publicClient(id string, aud ...string) *identityv1alpha1.OAuthClient {
	return &identityv1alpha1.OAuthClient{
		ObjectMeta: metav1.ObjectMeta{Name: id},
		Spec: identityv1alpha1.OAuthClientSpec{
			Type: identityv1alpha1.ClientTypePublic,
			GrantTypes: []identityv1alpha1.GrantType{
				identityv1alpha1.GrantPassword, identityv1alpha1.GrantRefreshToken, identityv1alpha1.GrantTokenExchange,
			},
			Audiences: aud,
		},
	}
}
