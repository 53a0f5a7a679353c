package accounts

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/go-logr/logr"
	"golang.org/x/crypto/bcrypt"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"rotor.dev/rotor/pkg/ratelimit"
)

// Defaults for zero Options; rotor's flags default to them too.
const (
	DefaultFailuresPerMinute = 6
	DefaultBurst             = 10
	DefaultMaxTracked        = 100000
)

// usernameIndex is the cache index over the username data key.
const usernameIndex = "data.username"

// maxPasswordLength is bcrypt's: it ignores bytes past 72, so a longer
// password would log in with any suffix.
const maxPasswordLength = 72

// errNotSynced is returned before the informer's first list has completed,
// when "unknown user" would be a lie.
var errNotSynced = errors.New("account cache has not synced yet")

// Options configure a Store.
type Options struct {
	// Namespace holds the account Secrets (rotor's own). Required.
	Namespace string
	// FailuresPerMinute is the sustained rate of failed logins allowed per
	// (username, client address); a username over all addresses may fail 5x
	// the burst at the same rate, an address over all usernames 10x the
	// burst at 10x the rate (see ratelimit.Throttle). Default 6.
	FailuresPerMinute float64
	// Burst is how many failures a (username, client address) may have in a
	// row before the rate applies. Default 10.
	Burst int
	// MaxTracked bounds each map of the login throttle (pairs, usernames,
	// addresses, known pairs); see ratelimit.Throttle for what is forgotten
	// first. Default 100000.
	MaxTracked int
	// Clock paces the login throttle; tests move it. Default: the real clock.
	Clock clock.PassiveClock
	// Log receives login outcomes (V(1)) and account problems; never
	// passwords or hashes. Zero means the controller-runtime logger named
	// "accounts".
	Log logr.Logger
}

// hooks are test seams; zero values mean production behaviour.
type hooks struct {
	compare   func(hash, password []byte) error
	dummyCost int
}

// Store authenticates against the account Secrets in one namespace.
type Store struct {
	ns        string
	informer  toolscache.SharedIndexInformer
	log       logr.Logger
	throttle  *ratelimit.Throttle
	compare   func(hash, password []byte) error
	dummyHash []byte
	cost      int // the only bcrypt cost accepted: the dummy hash's
	clock     clock.PassiveClock
}

// NewStore builds the store and its informer; Start runs it.
func NewStore(cfg *rest.Config, opts Options) (*Store, error) {
	return newStore(cfg, opts, hooks{})
}

func newStore(cfg *rest.Config, opts Options, h hooks) (*Store, error) {
	if opts.Namespace == "" {
		return nil, errors.New("accounts: Options.Namespace is required")
	}
	if errs := validation.IsDNS1123Label(opts.Namespace); len(errs) > 0 {
		return nil, fmt.Errorf("accounts: namespace %q: %s", opts.Namespace, strings.Join(errs, "; "))
	}
	if opts.FailuresPerMinute < 0 || opts.Burst < 0 || opts.MaxTracked < 0 {
		return nil, errors.New("accounts: negative rate limit options")
	}
	if opts.FailuresPerMinute == 0 {
		opts.FailuresPerMinute = DefaultFailuresPerMinute
	}
	if opts.Burst == 0 {
		opts.Burst = DefaultBurst
	}
	if opts.MaxTracked == 0 {
		opts.MaxTracked = DefaultMaxTracked
	}
	log := opts.Log
	if log.GetSink() == nil {
		log = logf.Log.WithName("accounts")
	}
	if h.compare == nil {
		h.compare = bcrypt.CompareHashAndPassword
	}
	if h.dummyCost == 0 {
		h.dummyCost = manifestCost
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}

	// The dummy hash has the cost Manifest uses, so an unknown username takes
	// as long as a real one; its password is random and never kept.
	dummy, err := bcrypt.GenerateFromPassword([]byte(rand.Text()), h.dummyCost)
	if err != nil {
		return nil, fmt.Errorf("accounts: dummy hash: %w", err)
	}
	th, err := ratelimit.NewThrottle(opts.FailuresPerMinute, opts.Burst, opts.MaxTracked)
	if err != nil {
		return nil, fmt.Errorf("accounts: limiter: %w", err)
	}

	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("accounts: API client: %w", err)
	}
	// The API server filters by type, so other Secrets never reach this
	// process. A plain client-go informer, not a controller-runtime cache:
	// every refresh looks its account up, and the index answers directly
	// where the cache's List maps kinds and copies lists on each call
	// (about 17 µs of rotor's CPU per refresh, measured).
	secrets := cs.CoreV1().Secrets(opts.Namespace)
	onlyAccounts := fields.OneTermEqualSelector("type", string(SecretType)).String()
	lw := &toolscache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = onlyAccounts
			return secrets.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = onlyAccounts
			return secrets.Watch(ctx, o)
		},
	}
	inf := toolscache.NewSharedIndexInformerWithOptions(lw, &corev1.Secret{}, toolscache.SharedIndexInformerOptions{
		Indexers: toolscache.Indexers{usernameIndex: indexUsername},
	})
	if err := inf.SetTransform(trimSecret); err != nil {
		return nil, fmt.Errorf("accounts: informer: %w", err)
	}
	return &Store{
		ns:        opts.Namespace,
		informer:  inf,
		log:       log,
		throttle:  th,
		compare:   h.compare,
		dummyHash: dummy,
		cost:      h.dummyCost,
		clock:     opts.Clock,
	}, nil
}

func indexUsername(o any) ([]string, error) {
	s, ok := o.(*corev1.Secret)
	if !ok || len(s.Data[KeyUsername]) == 0 {
		return nil, nil
	}
	return []string{string(s.Data[KeyUsername])}, nil
}

// trimSecret keeps only what logins need: managedFields and kubectl's
// last-applied annotation (a second copy of the hash) would double memory.
func trimSecret(obj any) (any, error) {
	s, ok := obj.(*corev1.Secret)
	if !ok {
		return obj, nil // e.g. a deletion tombstone
	}
	data := make(map[string][]byte, 4)
	for _, k := range []string{KeyUsername, KeyPasswordHash, KeyGroups, KeyDisabled} {
		if v, ok := s.Data[k]; ok {
			data[k] = v
		}
	}
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name:            s.Name,
			Namespace:       s.Namespace,
			UID:             s.UID,
			ResourceVersion: s.ResourceVersion,
		},
		Type: s.Type,
		Data: data,
	}, nil
}

// Start runs the informer until ctx is done (manager.Runnable).
func (s *Store) Start(ctx context.Context) error {
	go func() {
		if toolscache.WaitForCacheSync(ctx.Done(), s.informer.HasSynced) {
			s.log.Info("account cache synced", "namespace", s.ns)
		}
	}()
	s.informer.RunWithContext(ctx)
	return nil
}

// NeedLeaderElection is false: every replica serves logins from its own cache.
func (s *Store) NeedLeaderElection() bool { return false }

// ReadyCheck is a healthz.Checker: ready once the informer has synced.
func (s *Store) ReadyCheck(*http.Request) error {
	if !s.informer.HasSynced() {
		return errNotSynced
	}
	return nil
}

// lookupStatus says what the cache holds for a username.
type lookupStatus int

const (
	statusMissing   lookupStatus = iota
	statusFound                  // exactly one valid Secret
	statusAmbiguous              // more than one Secret claims the username
	statusInvalid                // one Secret, but its data is unusable
)

type record struct {
	account Account
	hash    []byte
	secret  string // Secret name, for logs
	// resourceVersion lets tests wait for an update to reach the cache.
	resourceVersion string
}

// find reads the username's Secrets from the cache; secrets names them for
// logs when the answer is ambiguous or invalid.
func (s *Store) find(username string) (rec record, st lookupStatus, secrets []string, err error) {
	if ValidateUsername(username) != nil {
		return record{}, statusMissing, nil, nil
	}
	// Read-only: nothing below changes the cached Secrets.
	objs, err := s.informer.GetIndexer().ByIndex(usernameIndex, username)
	if err != nil {
		return record{}, statusMissing, nil, fmt.Errorf("accounts: reading cached Secrets: %w", err)
	}
	var matches []*corev1.Secret
	for _, o := range objs {
		sec, ok := o.(*corev1.Secret)
		if ok && sec.Type == SecretType && string(sec.Data[KeyUsername]) == username {
			matches = append(matches, sec)
			secrets = append(secrets, sec.Name)
		}
	}
	slices.Sort(secrets)
	switch len(matches) {
	case 0:
		return record{}, statusMissing, nil, nil
	case 1:
	default:
		return record{}, statusAmbiguous, secrets, nil
	}
	rec, perr := parseSecret(matches[0])
	if perr == nil {
		perr = s.checkCost(rec.hash)
	}
	if perr != nil {
		s.log.Info("account Secret is unusable; refusing its logins", "secret", matches[0].Name, "username", username, "reason", perr.Error())
		return record{}, statusInvalid, secrets, nil
	}
	return rec, statusFound, secrets, nil
}

// checkCost refuses hashes of another cost than rotor's own: a login
// compares exactly one hash whatever the username, and its time must not
// tell an existing account (a cheaper or dearer hash) from a missing one
// (the dummy hash).
func (s *Store) checkCost(hash []byte) error {
	if c, err := bcrypt.Cost(hash); err != nil || c != s.cost {
		return fmt.Errorf("passwordHash has bcrypt cost %d, rotor accepts only %d: recreate it with rotor account create", c, s.cost)
	}
	return nil
}

// parseSecret validates an account Secret. Its errors never quote the hash.
func parseSecret(sec *corev1.Secret) (record, error) {
	username := string(sec.Data[KeyUsername])
	if err := ValidateUsername(username); err != nil {
		return record{}, err
	}
	hash := sec.Data[KeyPasswordHash]
	if _, err := bcrypt.Cost(hash); err != nil {
		return record{}, errors.New("passwordHash is not a bcrypt hash")
	}
	groups, err := parseGroups(string(sec.Data[KeyGroups]))
	if err != nil {
		return record{}, err
	}
	return record{
		account:         Account{Username: username, Groups: groups, Disabled: parseDisabled(sec.Data[KeyDisabled])},
		hash:            hash,
		secret:          sec.Name,
		resourceVersion: sec.ResourceVersion,
	}, nil
}

// Authenticate checks a password login. It returns ErrThrottled without
// checking the password when the username or clientAddr (an IP, optionally
// with a port) is out of failure budget, and ErrInvalidCredentials for every
// kind of failed login; any other error is the server's.
func (s *Store) Authenticate(ctx context.Context, username, password, clientAddr string) (Account, error) {
	if err := ctx.Err(); err != nil {
		return Account{}, fmt.Errorf("accounts: %w", err)
	}
	if !s.informer.HasSynced() {
		return Account{}, fmt.Errorf("accounts: %w", errNotSynced)
	}
	rec, st, secrets, err := s.find(username)
	if err != nil {
		return Account{}, err
	}
	// Invalid usernames share one key so junk cannot flood the username map.
	userKey := username
	if ValidateUsername(username) != nil {
		userKey = "\x00invalid"
	}
	addrKey := ratelimit.AddressKey(clientAddr)
	// A username that no Secret claims may be a password typed into the
	// wrong field: it is never logged.
	logName := "(unknown)"
	if st != statusMissing {
		logName = username
	}
	log := s.log.WithValues("username", logName, "address", addrKey)

	at, ok := s.throttle.Admit(userKey, addrKey, s.clock.Now())
	if !ok {
		log.V(1).Info("login throttled")
		return Account{}, ErrThrottled
	}

	// Exactly one bcrypt comparison whatever the outcome, so the time taken
	// does not tell which usernames exist.
	hash := s.dummyHash
	usable := st == statusFound && password != "" && len(password) <= maxPasswordLength
	if usable {
		hash = rec.hash
	}
	cmpErr := s.compare(hash, []byte(password))

	var reason string
	switch {
	case st == statusMissing:
		reason = "unknown username"
	case st == statusAmbiguous:
		reason = "username is claimed by more than one account Secret"
	case st == statusInvalid:
		reason = "account Secret is unusable"
	case !usable || errors.Is(cmpErr, bcrypt.ErrMismatchedHashAndPassword):
		reason = "wrong password"
	case cmpErr != nil:
		// Not quoted: bcrypt's errors can include part of the hash.
		reason = "stored password hash is unusable"
	case rec.account.Disabled:
		reason = "account disabled"
	}
	at.Done(reason != "", s.clock.Now())
	if reason != "" {
		if st == statusAmbiguous {
			// An operator error, so it is logged at the default level.
			log.Info("refusing login: username is ambiguous", "secrets", secrets)
		} else {
			log.V(1).Info("login failed", "reason", reason)
		}
		return Account{}, ErrInvalidCredentials
	}
	log.V(1).Info("login succeeded", "secret", rec.secret)
	return rec.account, nil
}

// Lookup reads an account from the cache without an API request, for the
// refresh grant. ok is true only for an account that may log in now: it is
// false for a missing, ambiguous, malformed or disabled one (Account is
// still filled in for a disabled one). Before the cache has synced ok is
// false.
func (s *Store) Lookup(username string) (Account, bool) {
	if !s.informer.HasSynced() {
		return Account{}, false
	}
	rec, st, secrets, err := s.find(username)
	if err != nil {
		s.log.Error(err, "looking up account")
		return Account{}, false
	}
	switch st {
	case statusFound:
		return rec.account, !rec.account.Disabled
	case statusAmbiguous:
		s.log.Info("refusing account: username is ambiguous", "username", username, "secrets", secrets)
	}
	return Account{}, false
}
