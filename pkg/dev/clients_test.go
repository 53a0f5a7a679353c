package dev

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	identityv1alpha1 "rotor.dev/rotor/api/v1alpha1"
	"rotor.dev/rotor/pkg/oauthclients"
	"rotor.dev/rotor/pkg/scheme"
)

// TestSeedClientsIdempotent: a second seed leaves the clients, the Secret
// and the secret file alone; a missing file rotates the secret.
func TestSeedClientsIdempotent(t *testing.T) {
	ctx := context.Background()
	c := fake.NewClientBuilder().WithScheme(scheme.Scheme).Build()
	const ns = "rotor-system"
	path := filepath.Join(t.TempDir(), serviceSecretFile)

	secretHashes := func() []string {
		t.Helper()
		sec := &corev1.Secret{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: oauthclients.SecretName(ServiceClientID)}, sec); err != nil {
			t.Fatal(err)
		}
		hashes, err := oauthclients.ParseSecret(sec)
		if err != nil {
			t.Fatal(err)
		}
		return hashes
	}
	readFile := func() string {
		t.Helper()
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("secret file mode %v, want 0600", fi.Mode().Perm())
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}

	if err := seedClients(ctx, c, ns, DefaultClientID, "rotor", path); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{DefaultClientID, ServiceClientID} {
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &identityv1alpha1.OAuthClient{}); err != nil {
			t.Fatalf("OAuthClient %s: %v", name, err)
		}
	}
	first := readFile()
	if !oauthclients.Verify(first, secretHashes()[:1]) {
		t.Fatal("the file's secret does not match the Secret")
	}

	// Again: nothing changes.
	if err := seedClients(ctx, c, ns, DefaultClientID, "rotor", path); err != nil {
		t.Fatal(err)
	}
	if got := readFile(); got != first {
		t.Fatal("a second seed changed the secret file")
	}
	if hashes := secretHashes(); len(hashes) != 1 || !oauthclients.Verify(first, hashes) {
		t.Fatalf("a second seed changed the Secret: %d hashes", len(hashes))
	}

	// The file is gone: the secret is rotated, the old one kept as previous.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := seedClients(ctx, c, ns, DefaultClientID, "rotor", path); err != nil {
		t.Fatal(err)
	}
	second := readFile()
	hashes := secretHashes()
	if second == first || !oauthclients.Verify(second, hashes[:1]) {
		t.Fatal("the secret was not rotated into the file")
	}
	if len(hashes) != 2 || !oauthclients.Verify(first, hashes[1:]) {
		t.Fatal("the rotation did not keep the old secret as previousSecretHash")
	}
}
