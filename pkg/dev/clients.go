package dev

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	identityv1alpha1 "rotor.dev/rotor/api/v1alpha1"
	"rotor.dev/rotor/pkg/kubeauthn"
	"rotor.dev/rotor/pkg/login"
	"rotor.dev/rotor/pkg/oauthclients"
)

const (
	// DefaultClientID is the Public client rotor dev creates and makes the
	// default (--default-client-id): a request without client_id is its, so
	// the demo's password login needs none. rotor serve has no default.
	DefaultClientID = "rotor"
	// ServiceClientID is the demo's Confidential client, for the
	// client_credentials grant.
	ServiceClientID = "demo-service"
	// serviceSecretFile is the file of the state directory that holds
	// ServiceClientID's plaintext secret, mode 0600.
	serviceSecretFile = ServiceClientID + ".secret"
	// KubectlClientID is the Public client `rotor login` logs in as for
	// kubectl, whose tokens the local API server accepts (every mode of
	// rotor dev but --insecure-http).
	KubectlClientID = login.DefaultClientID
	// kubectlAccessTokenTTL is the lifetime of the kubectl client's access
	// tokens: the API server never learns that a session was revoked, so
	// what it accepts must expire soon.
	kubectlAccessTokenTTL = 5 * time.Minute
	// readyTimeout bounds the wait for rotor's reconciler to find the demo
	// clients Ready.
	readyTimeout = 30 * time.Second
)

// publicSpec is the demo's Public client: what a CLI logging a person in
// needs, and the token exchange of workloads.
func publicSpec(audience string) identityv1alpha1.OAuthClientSpec {
	return identityv1alpha1.OAuthClientSpec{
		Type: identityv1alpha1.ClientTypePublic,
		GrantTypes: []identityv1alpha1.GrantType{
			identityv1alpha1.GrantPassword,
			identityv1alpha1.GrantRefreshToken,
			identityv1alpha1.GrantTokenExchange,
		},
		Audiences: []string{audience},
		Scopes:    []string{"openid", "profile"},
	}
}

// serviceSpec is the demo's Confidential client: a service calling an API
// in its own name.
func serviceSpec(audience string) identityv1alpha1.OAuthClientSpec {
	return identityv1alpha1.OAuthClientSpec{
		Type:       identityv1alpha1.ClientTypeConfidential,
		GrantTypes: []identityv1alpha1.GrantType{identityv1alpha1.GrantClientCredentials},
		Audiences:  []string{audience},
		Scopes:     []string{"reports:read", "reports:write"},
	}
}

// kubectlSpec is the client of `rotor login` as kubectl's credential
// plugin: a person's password login and its refreshes, for the API server's
// audience only, with short access tokens.
func kubectlSpec() identityv1alpha1.OAuthClientSpec {
	return identityv1alpha1.OAuthClientSpec{
		Type: identityv1alpha1.ClientTypePublic,
		GrantTypes: []identityv1alpha1.GrantType{
			identityv1alpha1.GrantPassword,
			identityv1alpha1.GrantRefreshToken,
		},
		Audiences:      []string{kubeauthn.DefaultAudience},
		TokenLifetimes: &identityv1alpha1.TokenLifetimes{AccessToken: &metav1.Duration{Duration: kubectlAccessTokenTTL}},
	}
}

// seedKubectlClient creates the KubectlClientID client in namespace unless
// it exists.
func seedKubectlClient(ctx context.Context, c client.Client, namespace string) error {
	_, err := ensureClient(ctx, c, KubectlClientID, namespace, kubectlSpec())
	return err
}

// seedClients creates the demo's two OAuthClients in namespace: the Public
// publicID and the Confidential ServiceClientID, whose Secret holds the hash
// of the plaintext secret written to secretPath. It is idempotent: existing
// clients are left as they are, and an existing Secret too when secretPath
// holds its current secret; otherwise (the file is missing or stale) the
// Secret is rotated and the new secret written.
func seedClients(ctx context.Context, c client.Client, namespace, publicID, audience, secretPath string) error {
	if _, err := ensureClient(ctx, c, publicID, namespace, publicSpec(audience)); err != nil {
		return err
	}
	m, err := ensureClient(ctx, c, ServiceClientID, namespace, serviceSpec(audience))
	if err != nil {
		return err
	}
	return ensureSecret(ctx, c, m, namespace, secretPath)
}

// ensureClient creates client name from oauthclients.Manifests unless it
// exists. It returns the manifests, whose Secret is the one to create if
// there is none yet, and the existing client's secretRef when it exists.
func ensureClient(ctx context.Context, c client.Client, name, namespace string, spec identityv1alpha1.OAuthClientSpec) (*clientManifests, error) {
	m, err := oauthclients.Manifests(name, namespace, spec)
	if err != nil {
		return nil, fmt.Errorf("OAuthClient %s: %w", name, err)
	}
	out := &clientManifests{Client: &identityv1alpha1.OAuthClient{}, PlaintextSecret: m.PlaintextSecret}
	if err := yaml.UnmarshalStrict(m.Client, out.Client); err != nil {
		return nil, fmt.Errorf("decoding OAuthClient %s: %w", name, err)
	}
	if m.Secret != nil {
		out.Secret = &corev1.Secret{}
		if err := yaml.UnmarshalStrict(m.Secret, out.Secret); err != nil {
			return nil, fmt.Errorf("decoding the Secret of OAuthClient %s: %w", name, err)
		}
	}
	err = c.Create(ctx, out.Client)
	if err == nil {
		return out, nil
	}
	if !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("creating OAuthClient %s/%s: %w", namespace, name, err)
	}
	// It exists (a restart on a kept control plane, or someone created it):
	// leave it, and look after the Secret it names.
	existing := &identityv1alpha1.OAuthClient{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, existing); err != nil {
		return nil, fmt.Errorf("reading OAuthClient %s/%s: %w", namespace, name, err)
	}
	if existing.Spec.Type != spec.Type {
		return nil, fmt.Errorf("OAuthClient %s/%s exists but is %s, not %s: delete it and restart rotor dev", namespace, name, existing.Spec.Type, spec.Type)
	}
	out.Client = existing
	if out.Secret != nil && existing.Spec.SecretRef != nil {
		out.Secret.Name = existing.Spec.SecretRef.Name
	}
	return out, nil
}

// clientManifests are oauthclients.Manifests' decoded.
type clientManifests struct {
	Client          *identityv1alpha1.OAuthClient
	Secret          *corev1.Secret
	PlaintextSecret string
}

// ensureSecret creates m's client-secret Secret and writes its plaintext
// secret to path. When the Secret exists it is kept if path holds its
// current secret, and rotated otherwise: there is no other way back to a
// plaintext secret, which rotor never stores.
func ensureSecret(ctx context.Context, c client.Client, m *clientManifests, namespace, path string) error {
	name := m.Client.Name
	err := c.Create(ctx, m.Secret)
	if err == nil {
		return writeSecretFile(path, m.PlaintextSecret)
	}
	if !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating Secret %s/%s of OAuthClient %s: %w", namespace, m.Secret.Name, name, err)
	}
	existing := &corev1.Secret{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: m.Secret.Name}, existing); err != nil {
		return fmt.Errorf("reading Secret %s/%s of OAuthClient %s: %w", namespace, m.Secret.Name, name, err)
	}
	if hashes, err := oauthclients.ParseSecret(existing); err == nil {
		plain, err := os.ReadFile(path)
		switch {
		case err == nil && oauthclients.Verify(strings.TrimSpace(string(plain)), hashes[:1]):
			return nil // the file holds the current secret
		case err != nil && !errors.Is(err, fs.ErrNotExist):
			return fmt.Errorf("reading the secret of OAuthClient %s: %w", name, err)
		}
	}
	// Rotate as `rotor client rotate-secret` does: a new secret, the old one
	// kept as previousSecretHash.
	existing.APIVersion, existing.Kind = "v1", "Secret"
	current, err := yaml.Marshal(existing)
	if err != nil {
		return fmt.Errorf("encoding Secret %s/%s: %w", namespace, existing.Name, err)
	}
	rot, err := oauthclients.RotateSecret(current, name, namespace)
	if err != nil {
		return fmt.Errorf("rotating the secret of OAuthClient %s: %w", name, err)
	}
	rotated := &corev1.Secret{}
	if err := yaml.UnmarshalStrict(rot.Secret, rotated); err != nil {
		return fmt.Errorf("decoding the rotated Secret of OAuthClient %s: %w", name, err)
	}
	rotated.ResourceVersion = existing.ResourceVersion
	if err := c.Update(ctx, rotated); err != nil {
		return fmt.Errorf("updating Secret %s/%s of OAuthClient %s: %w", namespace, existing.Name, name, err)
	}
	return writeSecretFile(path, rot.PlaintextSecret)
}

// writeSecretFile writes secret to path, mode 0600, replacing any file there
// in one rename so that a reader never sees half a secret. The secret goes
// nowhere else: not to the log, not to stdout.
func writeSecretFile(path, secret string) error {
	if err := writePrivateFile(path, []byte(secret)); err != nil {
		return fmt.Errorf("writing the client secret: %w", err)
	}
	return nil
}

// writePrivateFile writes data to path, mode 0600, replacing any file there
// in one rename.
func writePrivateFile(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // after the rename, a no-op
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// waitReady waits until rotor's reconciler has found each of the clients
// Ready (for their current generation), polling through c, at most timeout.
// It gives up early when stopped is closed: rotor is no longer running.
func waitReady(ctx context.Context, c client.Client, namespace string, names []string, timeout time.Duration, stopped <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for _, name := range names {
		for {
			why := notReady(ctx, c, client.ObjectKey{Namespace: namespace, Name: name})
			if why == "" {
				break
			}
			select {
			case <-stopped:
				return fmt.Errorf("rotor stopped before OAuthClient %s/%s was Ready", namespace, name)
			case <-ctx.Done():
				return fmt.Errorf("OAuthClient %s/%s is not Ready after %s: %s", namespace, name, timeout, why)
			case <-tick.C:
			}
		}
	}
	return nil
}

// notReady says why client key is not Ready, or "" when it is.
func notReady(ctx context.Context, c client.Client, key client.ObjectKey) string {
	oac := &identityv1alpha1.OAuthClient{}
	if err := c.Get(ctx, key, oac); err != nil {
		return err.Error()
	}
	ready := apimeta.FindStatusCondition(oac.Status.Conditions, identityv1alpha1.ConditionReady)
	switch {
	case ready == nil || ready.ObservedGeneration != oac.Generation:
		return "no Ready condition for its current generation yet (is rotor's OAuthClient reconciler running?)"
	case ready.Status != metav1.ConditionTrue:
		return fmt.Sprintf("Ready is %s, reason %s: %s", ready.Status, ready.Reason, ready.Message)
	}
	return ""
}
