package accounts

import (
	"context"
	"encoding/base64"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
	"golang.org/x/crypto/bcrypt"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

func TestManifestAppliesAndLogsIn(t *testing.T) {
	g := NewWithT(t)
	// A store as rotor runs it, accepting the cost Manifest writes.
	h := newHarnessWithCost(t, Options{}, manifestCost)
	h.start()
	password := []byte("correct horse battery staple")

	out, err := Manifest("alice", h.ns, []string{"dev", "ops"}, password)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(string(out)).NotTo(ContainSubstring(string(password)))
	g.Expect(string(out)).NotTo(ContainSubstring(base64.StdEncoding.EncodeToString(password)))

	sec := &corev1.Secret{}
	g.Expect(yaml.UnmarshalStrict(out, sec)).To(Succeed())
	hash := sec.Data[KeyPasswordHash]
	h.noLeak(string(password), hash)
	g.Expect(sec.APIVersion).To(Equal("v1"))
	g.Expect(sec.Kind).To(Equal("Secret"))
	g.Expect(sec.Name).To(Equal("account-alice"))
	g.Expect(sec.Namespace).To(Equal(h.ns))
	g.Expect(sec.Type).To(Equal(SecretType))
	g.Expect(sec.Data).To(HaveLen(3))
	g.Expect(string(sec.Data[KeyUsername])).To(Equal("alice"))
	g.Expect(string(sec.Data[KeyGroups])).To(Equal("dev,ops"))
	g.Expect(bcrypt.Cost(hash)).To(Equal(10))
	g.Expect(bcrypt.CompareHashAndPassword(hash, password)).To(Succeed())

	g.Expect(env.Client.Create(context.Background(), sec)).To(Succeed())
	h.waitFor(sec)
	g.Expect(h.login("alice", string(password), "192.0.2.1")).To(Equal(ok(alice)))
}

func TestManifestWithoutGroupsHasNoGroupsKey(t *testing.T) {
	g := NewWithT(t)
	out, err := manifest("bob", "rotor", nil, []byte("bob-password"), testCost)
	g.Expect(err).NotTo(HaveOccurred())
	sec := &corev1.Secret{}
	g.Expect(yaml.UnmarshalStrict(out, sec)).To(Succeed())
	g.Expect(sec.Data).To(HaveKey(KeyUsername))
	g.Expect(sec.Data).To(HaveKey(KeyPasswordHash))
	g.Expect(sec.Data).To(HaveLen(2))
}

func TestManifestRefuses(t *testing.T) {
	for _, tc := range []struct {
		name      string
		username  string
		namespace string
		groups    []string
		password  string
		want      string
	}{
		{"an uppercase username", "Alice", "rotor", nil, "alice-password", `username "Alice": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')`},
		{"a namespace that is not a label", "alice", "Rotor", nil, "alice-password", `namespace "Rotor": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')`},
		{"a password shorter than 8 bytes", "alice", "rotor", nil, "short", "password is shorter than 8 bytes"},
		{"a password longer than 72 bytes", "alice", "rotor", nil, strings.Repeat("x", 73), "password is longer than 72 bytes, which bcrypt cannot check"},
		{"a password with its trailing newline", "alice", "rotor", nil, "alice-password\n", "password contains a line break (strip the trailing newline)"},
		{"a group with a comma", "alice", "rotor", []string{"dev,ops"}, "alice-password", `group "dev,ops" contains a comma`},
		{"an empty group", "alice", "rotor", []string{""}, "alice-password", "group is empty"},
		{"a padded group", "alice", "rotor", []string{" dev"}, "alice-password", `group " dev" has surrounding spaces`},
		{"a Kubernetes system: group", "alice", "rotor", []string{"system:masters"}, "alice-password", `group "system:masters" is reserved by Kubernetes`},
	} {
		t.Run("Manifest refuses "+tc.name, func(t *testing.T) {
			out, err := Manifest(tc.username, tc.namespace, tc.groups, []byte(tc.password))
			g := NewWithT(t)
			g.Expect(err).To(MatchError(tc.want))
			g.Expect(out).To(BeNil())
		})
	}
}

func TestValidateUsername(t *testing.T) {
	for _, tc := range []struct {
		name     string
		username string
		valid    bool
	}{
		{"a plain name is valid", "alice", true},
		{"a one-letter name is valid", "a", true},
		{"dots, dashes and digits inside are valid", "ci-bot.prod2", true},
		{"63 characters are valid", strings.Repeat("a", 63), true},
		{"64 characters are too long", strings.Repeat("a", 64), false},
		{"an empty name is invalid", "", false},
		{"uppercase is invalid", "Alice", false},
		{"an email address is invalid", "alice@example.com", false},
		{"a Kubernetes system: name is invalid", "system:admin", false},
		{"a leading dash is invalid", "-alice", false},
		{"a trailing dot is invalid", "alice.", false},
		{"two dots in a row are invalid", "a..b", false},
		{"a space is invalid", "al ice", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateUsername(tc.username)
			if tc.valid {
				NewWithT(t).Expect(err).NotTo(HaveOccurred())
			} else {
				NewWithT(t).Expect(err).To(HaveOccurred())
			}
		})
	}
}

func TestParseDisabled(t *testing.T) {
	for _, tc := range []struct {
		name, value string
		want        bool
	}{
		{"absent is enabled", "", false},
		{"false is enabled", "false", false},
		{"true is disabled", "true", true},
		{"any other value is disabled, failing safe", "True", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			NewWithT(t).Expect(parseDisabled([]byte(tc.value))).To(Equal(tc.want))
		})
	}
}
