package accounts

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/bcrypt"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"
)

// manifestCost is bcrypt's default, about 50 ms per login on one core.
const manifestCost = bcrypt.DefaultCost

// minPasswordLength rejects trivially guessable passwords at creation time.
const minPasswordLength = 8

// Manifest returns the YAML of the account Secret for username, with the
// password stored only as a bcrypt hash (cost 10). The password is used
// byte for byte: a line read from a file must have its newline removed
// first, and one that still contains CR or LF is refused.
func Manifest(username, namespace string, groups []string, password []byte) ([]byte, error) {
	return manifest(username, namespace, groups, password, manifestCost)
}

func manifest(username, namespace string, groups []string, password []byte, cost int) ([]byte, error) {
	if err := ValidateUsername(username); err != nil {
		return nil, err
	}
	if errs := validation.IsDNS1123Label(namespace); len(errs) > 0 {
		return nil, fmt.Errorf("namespace %q: %s", namespace, strings.Join(errs, "; "))
	}
	for _, g := range groups {
		if err := validateGroup(g); err != nil {
			return nil, err
		}
	}
	switch {
	case len(password) < minPasswordLength:
		return nil, fmt.Errorf("password is shorter than %d bytes", minPasswordLength)
	case len(password) > maxPasswordLength:
		return nil, fmt.Errorf("password is longer than %d bytes, which bcrypt cannot check", maxPasswordLength)
	case bytes.ContainsAny(password, "\r\n"):
		return nil, errors.New("password contains a line break (strip the trailing newline)")
	}
	hash, err := bcrypt.GenerateFromPassword(password, cost)
	if err != nil {
		return nil, fmt.Errorf("hashing password: %w", err)
	}
	data := map[string][]byte{
		KeyUsername:     []byte(username),
		KeyPasswordHash: hash,
	}
	if len(groups) > 0 {
		data[KeyGroups] = []byte(strings.Join(groups, ","))
	}
	// A plain map rather than corev1.Secret keeps "creationTimestamp: null"
	// and other empty fields out of the output.
	out, err := yaml.Marshal(map[string]any{
		"apiVersion": "v1",
		"kind":       "Secret",
		"metadata":   map[string]any{"name": SecretName(username), "namespace": namespace},
		"type":       string(SecretType),
		"data":       data, // []byte marshals as base64, as Secret data must be
	})
	if err != nil {
		return nil, fmt.Errorf("encoding Secret: %w", err)
	}
	return out, nil
}
