package keys

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The Secret format of a signing key. List the key set with
//
//	kubectl get secrets --field-selector type=identity.rotor.dev/signing-key -L identity.rotor.dev/key-state
const (
	SecretType corev1.SecretType = "identity.rotor.dev/signing-key"

	// DataKey holds the PKCS#8 PEM private key; DataAlgorithm its Algorithm.
	DataKey       = "key.pem"
	DataAlgorithm = "algorithm"

	// StateLabel is next, active or retired; absent on a key brought by hand
	// that rotor has not adopted yet.
	StateLabel = "identity.rotor.dev/key-state"

	// RFC 3339 times of the lifecycle steps, and the key's kid (informative:
	// rotor always recomputes the kid from the key).
	PublishedAtAnnotation = "identity.rotor.dev/published-at"
	ActivatedAtAnnotation = "identity.rotor.dev/activated-at"
	RetiredAtAnnotation   = "identity.rotor.dev/retired-at"
	KIDAnnotation         = "identity.rotor.dev/kid"

	// RotateAnnotation (any value) on the active key asks for a rotation as
	// soon as a next key has been published long enough; removed when done.
	RotateAnnotation = "identity.rotor.dev/rotate"
)

// FromSecret reads a signing-key Secret: the key material (validated as Parse
// does) and its lifecycle. An error means the Secret must not be used.
func FromSecret(sec *corev1.Secret) (*Key, error) {
	if sec.Type != SecretType {
		return nil, fmt.Errorf("secret %s/%s has type %q, want %q", sec.Namespace, sec.Name, sec.Type, SecretType)
	}
	k, err := fromData(sec)
	if err != nil {
		return nil, fmt.Errorf("secret %s/%s: %w", sec.Namespace, sec.Name, err)
	}
	return k, nil
}

func fromData(sec *corev1.Secret) (*Key, error) {
	algData, ok := sec.Data[DataAlgorithm]
	if !ok {
		return nil, fmt.Errorf("no %q in data", DataAlgorithm)
	}
	alg, err := ParseAlgorithm(string(algData))
	if err != nil {
		return nil, err
	}
	pemData, ok := sec.Data[DataKey]
	if !ok {
		return nil, fmt.Errorf("no %q in data", DataKey)
	}
	k, err := Parse(alg, pemData)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", DataKey, err)
	}
	switch st := State(sec.Labels[StateLabel]); st {
	case StateNew, StateNext, StateActive, StateRetired:
		k.State = st
	default:
		return nil, fmt.Errorf("label %s has unknown value %q", StateLabel, st)
	}
	for _, a := range []struct {
		name string
		t    *time.Time
	}{
		{PublishedAtAnnotation, &k.PublishedAt},
		{ActivatedAtAnnotation, &k.ActivatedAt},
		{RetiredAtAnnotation, &k.RetiredAt},
	} {
		v, ok := sec.Annotations[a.name]
		if !ok {
			continue
		}
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			return nil, fmt.Errorf("annotation %s: %w", a.name, err)
		}
		*a.t = t
	}
	_, k.RotateRequested = sec.Annotations[RotateAnnotation]
	k.SecretName = sec.Name
	return k, nil
}

// NewSecret makes the Secret that stores k with k's lifecycle.
func NewSecret(namespace, name string, k *Key) (*corev1.Secret, error) {
	pemBytes, err := k.PEM()
	if err != nil {
		return nil, err
	}
	sec := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Type:       SecretType,
		Data:       map[string][]byte{DataKey: pemBytes, DataAlgorithm: []byte(k.Algorithm)},
	}
	SetLifecycle(sec, k)
	return sec, nil
}

// SetLifecycle writes k's state, times, kid and rotation request onto sec's
// label and annotations (zero times are removed).
func SetLifecycle(sec *corev1.Secret, k *Key) {
	if k.State == StateNew {
		delete(sec.Labels, StateLabel)
	} else {
		metav1.SetMetaDataLabel(&sec.ObjectMeta, StateLabel, string(k.State))
	}
	metav1.SetMetaDataAnnotation(&sec.ObjectMeta, KIDAnnotation, k.KID)
	if _, ok := sec.Annotations[RotateAnnotation]; ok != k.RotateRequested {
		if k.RotateRequested {
			metav1.SetMetaDataAnnotation(&sec.ObjectMeta, RotateAnnotation, "true")
		} else {
			delete(sec.Annotations, RotateAnnotation)
		}
	}
	for name, t := range map[string]time.Time{
		PublishedAtAnnotation: k.PublishedAt,
		ActivatedAtAnnotation: k.ActivatedAt,
		RetiredAtAnnotation:   k.RetiredAt,
	} {
		if t.IsZero() {
			delete(sec.Annotations, name)
		} else {
			metav1.SetMetaDataAnnotation(&sec.ObjectMeta, name, FormatTime(t))
		}
	}
}

// FormatTime formats a lifecycle time: RFC 3339 in UTC, rounded up to the
// second so that a stored time is never earlier than the event (a key is
// then never promoted or deleted early).
func FormatTime(t time.Time) string {
	return CeilTime(t).Format(time.RFC3339)
}

// CeilTime rounds t up to the second, in UTC, as FormatTime stores it.
func CeilTime(t time.Time) time.Time {
	t = t.UTC()
	if r := t.Truncate(time.Second); !r.Equal(t) {
		return r.Add(time.Second)
	}
	return t
}

// CompareActive orders two active keys: the one that should sign is greater.
// The later activation wins (a rotation activates the new key before it
// retires the old one), ties broken by Secret name (then kid). The issuer and
// the controller both use it, so they agree while two keys claim to be active.
func CompareActive(a, b *Key) int {
	return cmp.Or(a.ActivatedAt.Compare(b.ActivatedAt), cmp.Compare(a.SecretName, b.SecretName), cmp.Compare(a.KID, b.KID))
}

// PickActive returns the key among ks with State active that should sign, or
// nil when none is active.
func PickActive(ks []*Key) *Key {
	var best *Key
	for _, k := range ks {
		if k.State == StateActive && (best == nil || CompareActive(k, best) > 0) {
			best = k
		}
	}
	return best
}

// CompareNext orders next keys for promotion: first published, first
// promoted (ties by Secret name, then kid), so keys queue in the order they
// were published.
func CompareNext(a, b *Key) int {
	return cmp.Or(a.PublishedAt.Compare(b.PublishedAt), cmp.Compare(a.SecretName, b.SecretName), cmp.Compare(a.KID, b.KID))
}

// NextKeys returns the next keys of ks in promotion order.
func NextKeys(ks []*Key) []*Key {
	var out []*Key
	for _, k := range ks {
		if k.State == StateNext {
			out = append(out, k)
		}
	}
	slices.SortFunc(out, CompareNext)
	return out
}
