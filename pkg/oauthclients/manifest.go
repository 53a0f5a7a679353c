package oauthclients

import (
	"errors"
	"fmt"
	"maps"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"

	identityv1alpha1 "rotor.dev/rotor/api/v1alpha1"
)

// Manifest is what `rotor client create` prints: the OAuthClient, and for a
// Confidential client the Secret with the hash of its new secret and that
// secret in plaintext, to be shown once and never stored by rotor.
type Manifest struct {
	// Client is the OAuthClient's YAML.
	Client []byte
	// Secret is the client-secret Secret's YAML; nil for a Public client.
	Secret []byte
	// PlaintextSecret is the generated secret; empty for a Public client.
	PlaintextSecret string
}

// YAML is the manifests as one stream for `kubectl apply -f -`.
func (m *Manifest) YAML() []byte {
	if m.Secret == nil {
		return m.Client
	}
	out := append([]byte{}, m.Client...)
	out = append(out, "---\n"...)
	return append(out, m.Secret...)
}

// lastApplied is kubectl's copy of the applied manifest; rotate-secret drops
// it so that the Secret it prints is only what it means to apply.
const lastApplied = "kubectl.kubernetes.io/last-applied-configuration"

// Manifests builds the manifests of client name (its client_id, a DNS
// subdomain) in namespace. A Confidential client without secretRef gets
// SecretName(name), and a generated secret; a Public one gets no Secret.
func Manifests(name, namespace string, spec identityv1alpha1.OAuthClientSpec) (*Manifest, error) {
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return nil, fmt.Errorf("client name %q (the client_id): %s", name, strings.Join(errs, "; "))
	}
	if errs := validation.IsDNS1123Label(namespace); len(errs) > 0 {
		return nil, fmt.Errorf("namespace %q: %s", namespace, strings.Join(errs, "; "))
	}
	if spec.Type == identityv1alpha1.ClientTypeConfidential && spec.SecretRef == nil {
		secretName := SecretName(name)
		if errs := validation.IsDNS1123Subdomain(secretName); len(errs) > 0 {
			return nil, fmt.Errorf("client name %q is too long for its Secret's name %q: %s", name, secretName, strings.Join(errs, "; "))
		}
		spec.SecretRef = &identityv1alpha1.ClientSecretReference{Name: secretName}
	}
	if err := CheckSpec(&spec); err != nil {
		return nil, err
	}
	client, err := yaml.Marshal(&identityv1alpha1.OAuthClient{
		TypeMeta:   metav1.TypeMeta{APIVersion: identityv1alpha1.GroupVersion.String(), Kind: "OAuthClient"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec:       spec,
	})
	if err != nil {
		return nil, fmt.Errorf("encoding OAuthClient: %w", err)
	}
	m := &Manifest{Client: client}
	if spec.Type != identityv1alpha1.ClientTypeConfidential {
		return m, nil
	}
	secret, hash := Generate()
	m.PlaintextSecret = secret
	m.Secret, err = secretYAML(metav1.ObjectMeta{Name: spec.SecretRef.Name, Namespace: namespace}, hash, "")
	if err != nil {
		return nil, err
	}
	return m, nil
}

// secretYAML is a client-secret Secret with the given hashes. A plain map
// rather than corev1.Secret keeps empty fields out of the output.
func secretYAML(meta metav1.ObjectMeta, current, previous string) ([]byte, error) {
	data := map[string][]byte{KeySecretHash: []byte(current)} // []byte marshals as base64
	if previous != "" {
		data[KeyPreviousSecretHash] = []byte(previous)
	}
	metadata := map[string]any{"name": meta.Name, "namespace": meta.Namespace}
	if len(meta.Labels) > 0 {
		metadata["labels"] = meta.Labels
	}
	if len(meta.Annotations) > 0 {
		metadata["annotations"] = meta.Annotations
	}
	out, err := yaml.Marshal(map[string]any{
		"apiVersion": "v1",
		"kind":       "Secret",
		"metadata":   metadata,
		"type":       string(SecretType),
		"data":       data,
	})
	if err != nil {
		return nil, fmt.Errorf("encoding Secret: %w", err)
	}
	return out, nil
}

// Rotation is what `rotor client rotate-secret` prints.
type Rotation struct {
	// Secret is the client-secret Secret's YAML.
	Secret []byte
	// PlaintextSecret is the new secret; empty when the rotation only drops
	// the previous one.
	PlaintextSecret string
}

// RotateSecret reads a client-secret Secret as `kubectl get secret -o yaml`
// (or -o json) prints it and returns it with a new secret's hash as
// secretHash and the current one kept as previousSecretHash, so that both
// secrets work until the callers have moved: a secret is rotated without
// downtime. An older previousSecretHash is dropped: a Secret holds at most
// two hashes. A Secret without any hash gets one. namespace fills in a
// manifest without one and must match one that has one.
func RotateSecret(existing []byte, clientID, namespace string) (*Rotation, error) {
	sec, hashes, err := readSecret(existing, clientID, namespace)
	if err != nil {
		return nil, err
	}
	secret, hash := Generate()
	current := ""
	if len(hashes) > 0 {
		current = hashes[0]
	}
	out, err := secretYAML(kept(sec), hash, current)
	if err != nil {
		return nil, err
	}
	return &Rotation{Secret: out, PlaintextSecret: secret}, nil
}

// DropPrevious ends a rotation: it returns the Secret with secretHash only,
// so the secret it replaced stops working.
func DropPrevious(existing []byte, clientID, namespace string) (*Rotation, error) {
	sec, hashes, err := readSecret(existing, clientID, namespace)
	if err != nil {
		return nil, err
	}
	if len(hashes) == 0 {
		return nil, fmt.Errorf("%w: nothing to keep", ErrNoHash)
	}
	out, err := secretYAML(kept(sec), hashes[0], "")
	if err != nil {
		return nil, err
	}
	return &Rotation{Secret: out}, nil
}

// readSecret decodes and checks the Secret a rotation starts from: the
// client-secret Secret of clientID (named clientID or SecretName(clientID)),
// well formed or without any hash yet.
func readSecret(existing []byte, clientID, namespace string) (*corev1.Secret, []string, error) {
	if len(strings.TrimSpace(string(existing))) == 0 {
		return nil, nil, fmt.Errorf("no Secret on stdin: kubectl -n %s get secret %s -o yaml | rotor client rotate-secret %s",
			namespace, SecretName(clientID), clientID)
	}
	sec := &corev1.Secret{}
	if err := yaml.Unmarshal(existing, sec); err != nil {
		return nil, nil, fmt.Errorf("decoding the Secret: %w", err)
	}
	if sec.APIVersion != "v1" || sec.Kind != "Secret" {
		return nil, nil, fmt.Errorf("expected one v1 Secret, got apiVersion %q kind %q", sec.APIVersion, sec.Kind)
	}
	if sec.Name != clientID && sec.Name != SecretName(clientID) {
		return nil, nil, fmt.Errorf("the Secret is %q, not client %s's (%s)", sec.Name, clientID, SecretName(clientID))
	}
	switch {
	case sec.Namespace == "":
		sec.Namespace = namespace
	case namespace != "" && sec.Namespace != namespace:
		return nil, nil, fmt.Errorf("the Secret is in namespace %q, not %q", sec.Namespace, namespace)
	}
	// As the API server does: stringData is written over data.
	for k, v := range sec.StringData {
		if sec.Data == nil {
			sec.Data = map[string][]byte{}
		}
		sec.Data[k] = []byte(v)
	}
	hashes, err := ParseSecret(sec)
	if errors.Is(err, ErrNoHash) {
		// Nothing usable yet (a lone previousSecretHash is not): a rotation
		// starts afresh.
		return sec, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	return sec, hashes, nil
}

// kept is the metadata a rotation keeps: name, namespace, and the labels and
// annotations but kubectl's copy of the last applied manifest. The server's
// fields (resourceVersion, uid, managedFields...) are not for `kubectl apply`.
func kept(sec *corev1.Secret) metav1.ObjectMeta {
	annotations := maps.Clone(sec.Annotations)
	delete(annotations, lastApplied)
	return metav1.ObjectMeta{Name: sec.Name, Namespace: sec.Namespace, Labels: sec.Labels, Annotations: annotations}
}
