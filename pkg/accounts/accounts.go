// Package accounts authenticates rotor's password-grant users against account
// Secrets in rotor's namespace, read through a filtered, indexed informer, with
// failed logins throttled per username and client address, so that guesses
// stay slow while locking out another user stays expensive (ratelimit.Throttle).
//
// An account is a Secret of type identity.rotor.dev/account with data keys
// username, passwordHash (bcrypt), optional groups (comma-separated) and
// optional disabled ("true"). Manifest writes one.
package accounts

import (
	"errors"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// SecretType marks account Secrets; the informer only lists Secrets of this type.
const SecretType corev1.SecretType = "identity.rotor.dev/account"

// Data keys of an account Secret.
const (
	KeyUsername     = "username"
	KeyPasswordHash = "passwordHash"
	KeyGroups       = "groups"
	KeyDisabled     = "disabled"
)

// MaxUsernameLength keeps "account-<username>" a valid Secret name and the
// username a valid label value.
const MaxUsernameLength = 63

// reservedGroupPrefix is Kubernetes' own: a token carrying system:masters would
// make anyone who can write Secrets in rotor's namespace a cluster admin.
const reservedGroupPrefix = "system:"

var (
	// ErrInvalidCredentials is returned for a wrong password and for an
	// unknown, disabled, ambiguous or malformed account alike, so a caller
	// cannot tell them apart (the log says which).
	ErrInvalidCredentials = errors.New("invalid username or password")
	// ErrThrottled is returned when the username or the client address has
	// used up its failed-login budget; the password was not checked.
	ErrThrottled = errors.New("too many failed logins, try again later")
)

// Account is what a successful login yields.
type Account struct {
	Username string
	Groups   []string
	Disabled bool
}

// ValidateUsername accepts 1-63 lowercase letters, digits, '-' and '.',
// starting and ending with a letter or digit (a DNS subdomain), so that the
// username can be part of the Secret's name and needs no case folding.
func ValidateUsername(username string) error {
	if username == "" {
		return errors.New("username is empty")
	}
	if len(username) > MaxUsernameLength {
		return fmt.Errorf("username is longer than %d characters", MaxUsernameLength)
	}
	if errs := validation.IsDNS1123Subdomain(username); len(errs) > 0 {
		return fmt.Errorf("username %q: %s", username, strings.Join(errs, "; "))
	}
	return nil
}

// SecretName is the name Manifest gives the account Secret of username.
func SecretName(username string) string {
	return "account-" + username
}

// validateGroup rejects what the comma-separated encoding cannot carry and
// Kubernetes' reserved groups.
func validateGroup(g string) error {
	switch {
	case g == "":
		return errors.New("group is empty")
	case strings.TrimSpace(g) != g:
		return fmt.Errorf("group %q has surrounding spaces", g)
	case strings.Contains(g, ","):
		return fmt.Errorf("group %q contains a comma", g)
	case strings.HasPrefix(g, reservedGroupPrefix):
		return fmt.Errorf("group %q is reserved by Kubernetes", g)
	}
	for _, r := range g {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("group %q contains a control character", g)
		}
	}
	return nil
}

// parseGroups splits the groups data key; blank entries are ignored.
func parseGroups(raw string) ([]string, error) {
	var groups []string
	for _, g := range strings.Split(raw, ",") {
		g = strings.TrimSpace(g)
		if g == "" {
			continue
		}
		if err := validateGroup(g); err != nil {
			return nil, err
		}
		groups = append(groups, g)
	}
	return groups, nil
}

// parseDisabled fails safe: any value other than absent, "" or "false"
// disables the account, so "True" or "yes" do what the operator meant.
func parseDisabled(raw []byte) bool {
	v := strings.TrimSpace(string(raw))
	return v != "" && v != "false"
}
