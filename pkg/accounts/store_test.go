package accounts

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"golang.org/x/crypto/bcrypt"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/sets"
)

var alice = Account{Username: "alice", Groups: []string{"dev", "ops"}}

func TestAuthenticate(t *testing.T) {
	h := startHarness(t, Options{})
	h.create(h.accountSecret("alice", "alice-password", []string{"dev", "ops"}, nil))
	h.create(h.accountSecret("bob", "bob-password", nil, func(s *corev1.Secret) {
		s.Data[KeyDisabled] = []byte("true")
	}))
	long := strings.Repeat("x", 72)
	h.create(h.accountSecret("dave", long, nil, nil))
	h.noLeak("hunter2-typed-as-username", nil)

	for _, tc := range []struct {
		name               string
		username, password string
		want               outcome
		wantLog            string
	}{
		{"the right password logs in with the account's groups", "alice", "alice-password", ok(alice), `"msg"="login succeeded" "username"="alice"`},
		{"a wrong password is invalid credentials", "alice", "alice-passwore", invalid, `"username"="alice" "address"="192.0.2.1" "reason"="wrong password"`},
		{"an unknown username is invalid credentials and is not logged", "hunter2-typed-as-username", "alice-password", invalid, `"username"="(unknown)" "address"="192.0.2.1" "reason"="unknown username"`},
		{"a disabled account is invalid credentials with the right password", "bob", "bob-password", invalid, `"username"="bob" "address"="192.0.2.1" "reason"="account disabled"`},
		{"a username in another case is unknown", "Alice", "alice-password", invalid, `"reason"="unknown username"`},
		{"an empty password is invalid credentials", "alice", "", invalid, `"reason"="wrong password"`},
		{"a password longer than bcrypt checks is refused although its first 72 bytes match", "dave", long + "y", invalid, `"reason"="wrong password"`},
		{"a password of exactly 72 bytes logs in", "dave", long, ok(Account{Username: "dave"}), `"msg"="login succeeded"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			n := h.logs.len()
			g.Expect(h.login(tc.username, tc.password, "192.0.2.1")).To(Equal(tc.want))
			g.Expect(h.logs.since(n)).To(ContainSubstring(tc.wantLog))
		})
	}
}

func TestFailuresAreThrottledPerUsernameAndAddress(t *testing.T) {
	g := NewWithT(t)
	h := startHarness(t, Options{FailuresPerMinute: 6, Burst: 3})
	h.create(h.accountSecret("alice", "alice-password", []string{"dev", "ops"}, nil))
	h.create(h.accountSecret("bob", "bob-password", nil, nil))

	g.Expect(h.login("alice", "guess-1", "192.0.2.4")).To(Equal(invalid))
	g.Expect(h.login("alice", "guess-2", "192.0.2.4")).To(Equal(invalid))
	g.Expect(h.login("alice", "guess-3", "192.0.2.4")).To(Equal(invalid))
	g.Expect(h.login("alice", "alice-password", "192.0.2.4")).To(Equal(throttled), "the right password once the pair's budget is spent")
	g.Expect(h.login("bob", "bob-password", "192.0.2.4")).To(Equal(ok(Account{Username: "bob"})), "another username from the same address")
	g.Expect(h.login("alice", "alice-password", "192.0.2.5")).To(Equal(ok(alice)), "the same username from another address")

	h.clock.Step(9 * time.Second)
	g.Expect(h.login("alice", "alice-password", "192.0.2.4")).To(Equal(throttled), "before one failure has been refilled (10 s at 6/min)")
	h.clock.Step(1 * time.Second)
	g.Expect(h.login("alice", "alice-password", "192.0.2.4")).To(Equal(ok(alice)))
	g.Expect(h.login("alice", "alice-password", "192.0.2.4")).To(Equal(ok(alice)), "a success spent nothing")
	g.Expect(h.login("alice", "guess-4", "192.0.2.4")).To(Equal(invalid))
	g.Expect(h.login("alice", "alice-password", "192.0.2.4")).To(Equal(throttled))
}

// Attacks found in review, with the default budgets: each used to lock
// alice out or reset her budget.
func TestLoginThrottlingResistsLockoutAndReset(t *testing.T) {
	h := startHarness(t, Options{})
	h.create(h.accountSecret("alice", "alice-password", []string{"dev", "ops"}, nil))

	t.Run("ten wrong passwords for alice from ten addresses leave her a new address", func(t *testing.T) {
		g := NewWithT(t)
		for i := range 10 {
			g.Expect(h.login("alice", "guess", fmt.Sprintf("198.51.100.%d", i+1))).To(Equal(invalid))
		}
		g.Expect(h.login("alice", "alice-password", "192.0.2.200")).To(Equal(ok(alice)))
	})
	t.Run("ten failures for made-up names from one address lock out nobody behind it", func(t *testing.T) {
		g := NewWithT(t)
		for i := range 10 {
			g.Expect(h.login(fmt.Sprintf("nobody-%d", i), "guess", "203.0.113.7")).To(Equal(invalid))
		}
		g.Expect(h.login("alice", "alice-password", "203.0.113.7")).To(Equal(ok(alice)))
	})
	t.Run("10,050 junk logins from one address do not reset alice's spent budget", func(t *testing.T) {
		g := NewWithT(t)
		for range 10 {
			g.Expect(h.login("alice", "guess", "192.0.2.66")).To(Equal(invalid))
		}
		g.Expect(h.login("alice", "alice-password", "192.0.2.66")).To(Equal(throttled))
		before := h.compares.Load()
		for i := range 10_050 {
			_, _ = h.store.Authenticate(context.Background(), fmt.Sprintf("junk-%d", i), "guess", "192.0.2.99")
		}
		g.Expect(h.compares.Load()-before).To(Equal(int64(100)), "the address's budget: 10x the burst, then no bcrypt and no state")
		g.Expect(h.login("alice", "alice-password", "192.0.2.66")).To(Equal(throttled), "alice's pair is still spent")
	})
}

func TestFailuresAreThrottledPerAddress(t *testing.T) {
	h := startHarness(t, Options{FailuresPerMinute: 6, Burst: 3})
	h.create(h.accountSecret("alice", "alice-password", []string{"dev", "ops"}, nil))

	// Spend both addresses' budgets (10x the burst) on usernames that do not
	// exist, as a password-spraying client would.
	for _, addr := range []string{"192.0.2.7", "2001:db8::1"} {
		for i := range 30 {
			NewWithT(t).Expect(h.login(fmt.Sprintf("user-%d", i), "guess", addr)).To(Equal(invalid))
		}
	}

	for _, tc := range []struct {
		name string
		addr string
		want outcome
	}{
		{"the spent IPv4 address is throttled for a user new to it", "192.0.2.7", throttled},
		{"the same address with a port is throttled", "192.0.2.7:51234", throttled},
		{"the same address mapped into IPv6 is throttled", "::ffff:192.0.2.7", throttled},
		{"another IPv4 address logs in", "192.0.2.8", ok(alice)},
		{"another host in the same IPv6 /64 is throttled", "[2001:db8::2]:443", throttled},
		{"an IPv6 address in another /64 logs in", "2001:db8:0:1::1", ok(alice)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			NewWithT(t).Expect(h.login("alice", "alice-password", tc.addr)).To(Equal(tc.want))
		})
	}
}

// A hash of another cost would answer faster or slower than the dummy hash
// a missing username is compared with, telling which accounts exist.
func TestAHashOfAnotherCostIsRefused(t *testing.T) {
	g := NewWithT(t)
	h := startHarness(t, Options{})
	h.create(h.accountSecret("erin", "erin-password", nil, func(s *corev1.Secret) {
		hash, err := bcrypt.GenerateFromPassword([]byte("erin-password"), testCost+1)
		g.Expect(err).NotTo(HaveOccurred())
		h.noLeak("erin-password", hash)
		s.Data[KeyPasswordHash] = hash
	}))
	n := h.logs.len()
	g.Expect(h.login("erin", "erin-password", "192.0.2.1")).To(Equal(invalid), "one comparison, with the dummy hash")
	g.Expect(h.logs.since(n)).To(ContainSubstring("bcrypt cost 5, rotor accepts only 4"))
	_, found := h.store.Lookup("erin")
	g.Expect(found).To(BeFalse())
}

func TestSuccessfulLoginsSpendNoBudget(t *testing.T) {
	g := NewWithT(t)
	h := startHarness(t, Options{FailuresPerMinute: 1, Burst: 2})
	h.create(h.accountSecret("alice", "alice-password", []string{"dev", "ops"}, nil))

	for range 5 {
		g.Expect(h.login("alice", "alice-password", "192.0.2.1")).To(Equal(ok(alice)))
	}
	g.Expect(h.login("alice", "guess-1", "192.0.2.1")).To(Equal(invalid))
	g.Expect(h.login("alice", "guess-2", "192.0.2.1")).To(Equal(invalid))
	g.Expect(h.login("alice", "alice-password", "192.0.2.1")).To(Equal(throttled))
	g.Expect(h.compares.Load()).To(Equal(int64(7)))
}

func TestConcurrentGuessesStayWithinBudget(t *testing.T) {
	g := NewWithT(t)
	h := newHarness(t, Options{FailuresPerMinute: 1, Burst: 3})
	h.gate = make(chan struct{})
	h.start()
	h.create(h.accountSecret("alice", "alice-password", []string{"dev", "ops"}, nil))

	// Six guesses at once from one client: three may reach bcrypt, and the
	// other three are refused while those are still running.
	results := make(chan error, 6)
	for range 6 {
		go func() {
			_, err := h.store.Authenticate(context.Background(), "alice", "guess", "192.0.2.1")
			results <- err
		}()
	}
	for range 3 {
		g.Expect(<-results).To(MatchError(ErrThrottled))
	}
	g.Eventually(h.compares.Load).Should(Equal(int64(3)))
	g.Consistently(h.compares.Load, 200*time.Millisecond).Should(Equal(int64(3)))
	close(h.gate)
	for range 3 {
		g.Expect(<-results).To(MatchError(ErrInvalidCredentials))
	}
	g.Expect(h.login("alice", "alice-password", "192.0.2.1")).To(Equal(throttled))
}

func TestAccountChangesTakeEffect(t *testing.T) {
	g := NewWithT(t)
	h := startHarness(t, Options{})
	sec := h.create(h.accountSecret("alice", "alice-password", []string{"dev", "ops"}, nil))
	g.Expect(h.login("alice", "alice-password", "192.0.2.1")).To(Equal(ok(alice)))

	// The password is changed by replacing the hash, e.g. with a new Manifest.
	changed := h.accountSecret("alice", "new-alice-password", []string{"dev"}, nil)
	sec.Data = changed.Data
	h.update(sec)
	g.Expect(h.login("alice", "alice-password", "192.0.2.1")).To(Equal(invalid), "the old password")
	g.Expect(h.login("alice", "new-alice-password", "192.0.2.1")).To(Equal(ok(Account{Username: "alice", Groups: []string{"dev"}})))
	acct, usable := h.store.Lookup("alice")
	g.Expect(acct).To(Equal(Account{Username: "alice", Groups: []string{"dev"}}))
	g.Expect(usable).To(BeTrue())

	sec.Data[KeyDisabled] = []byte("true")
	h.update(sec)
	g.Expect(h.login("alice", "new-alice-password", "192.0.2.1")).To(Equal(invalid))
	acct, usable = h.store.Lookup("alice")
	g.Expect(acct).To(Equal(Account{Username: "alice", Groups: []string{"dev"}, Disabled: true}))
	g.Expect(usable).To(BeFalse())

	sec.Data[KeyDisabled] = []byte("false")
	h.update(sec)
	g.Expect(h.login("alice", "new-alice-password", "192.0.2.1")).To(Equal(ok(Account{Username: "alice", Groups: []string{"dev"}})))

	h.delete(sec)
	g.Expect(h.login("alice", "new-alice-password", "192.0.2.1")).To(Equal(invalid))
	acct, usable = h.store.Lookup("alice")
	g.Expect(acct).To(Equal(Account{}))
	g.Expect(usable).To(BeFalse())
}

func TestDuplicateUsernameIsRefused(t *testing.T) {
	g := NewWithT(t)
	h := startHarness(t, Options{})
	h.create(h.accountSecret("alice", "alice-password", []string{"dev", "ops"}, nil))
	dup := h.create(h.accountSecret("alice", "alice-password", nil, func(s *corev1.Secret) {
		s.Name = "alice-again"
	}))

	n := h.logs.len()
	g.Expect(h.login("alice", "alice-password", "192.0.2.1")).To(Equal(invalid))
	g.Expect(h.logs.since(n)).To(ContainSubstring(`"msg"="refusing login: username is ambiguous" "username"="alice" "address"="192.0.2.1" "secrets"=["account-alice" "alice-again"]`))
	acct, usable := h.store.Lookup("alice")
	g.Expect(acct).To(Equal(Account{}))
	g.Expect(usable).To(BeFalse())

	h.delete(dup)
	g.Expect(h.login("alice", "alice-password", "192.0.2.1")).To(Equal(ok(alice)))
}

func TestLookup(t *testing.T) {
	h := startHarness(t, Options{})
	h.create(h.accountSecret("alice", "alice-password", []string{"dev", "ops"}, func(s *corev1.Secret) {
		// As `kubectl apply` leaves it: a second copy of the hash.
		s.Annotations = map[string]string{"kubectl.kubernetes.io/last-applied-configuration": "{}"}
		s.Data["note"] = []byte("not an account key")
	}))
	h.create(h.accountSecret("bob", "bob-password", nil, func(s *corev1.Secret) {
		s.Data[KeyDisabled] = []byte("yes") // anything but "false" disables
	}))
	h.create(h.accountSecret("erin", "erin-password", nil, func(s *corev1.Secret) {
		s.Data[KeyPasswordHash] = []byte("not-a-hash")
	}))
	h.create(h.accountSecret("frank", "frank-password", nil, func(s *corev1.Secret) {
		s.Data[KeyGroups] = []byte("dev, system:masters")
	}))
	h.create(h.accountSecret("gina", "gina-password", nil, func(s *corev1.Secret) {
		s.Data[KeyGroups] = []byte(" dev ,, ops,")
	}))
	// Secrets the filtered informer must never see: another type here, and
	// the right type in another namespace.
	opaque := h.accountSecret("carol", "carol-password", nil, func(s *corev1.Secret) { s.Type = corev1.SecretTypeOpaque })
	NewWithT(t).Expect(env.Client.Create(context.Background(), opaque)).To(Succeed())
	elsewhere := h.accountSecret("dave", "dave-password", nil, func(s *corev1.Secret) { s.Namespace = env.Namespace(t) })
	NewWithT(t).Expect(env.Client.Create(context.Background(), elsewhere)).To(Succeed())
	// Created after those two, so the cache has had its chance to see them.
	h.create(h.accountSecret("zoe", "zoe-password", nil, nil))

	for _, tc := range []struct {
		name       string
		username   string
		want       Account
		wantUsable bool
	}{
		{"an account is found with its groups", "alice", alice, true},
		{"a disabled account is filled in but not usable", "bob", Account{Username: "bob", Disabled: true}, false},
		{"an account whose hash is not bcrypt is not usable", "erin", Account{}, false},
		{"an account claiming a system: group is not usable", "frank", Account{}, false},
		{"blank and padded groups are tidied", "gina", Account{Username: "gina", Groups: []string{"dev", "ops"}}, true},
		{"a Secret of another type is not an account", "carol", Account{}, false},
		{"an account Secret in another namespace is not seen", "dave", Account{}, false},
		{"an unknown username is not found", "nobody", Account{}, false},
		{"a malformed username is not found", "Alice", Account{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			acct, usable := h.store.Lookup(tc.username)
			g.Expect(acct).To(Equal(tc.want))
			g.Expect(usable).To(Equal(tc.wantUsable))
		})
	}

	t.Run("the cache holds only this namespace's account Secrets", func(t *testing.T) {
		g := NewWithT(t)
		names := sets.New(h.store.informer.GetIndexer().ListKeys()...)
		g.Expect(sets.List(names)).To(Equal([]string{
			h.ns + "/account-alice", h.ns + "/account-bob", h.ns + "/account-erin",
			h.ns + "/account-frank", h.ns + "/account-gina", h.ns + "/account-zoe",
		}))
	})
	t.Run("the cache keeps only the account data of a Secret", func(t *testing.T) {
		g := NewWithT(t)
		obj, exists, err := h.store.informer.GetIndexer().GetByKey(h.ns + "/account-alice")
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(exists).To(BeTrue())
		got := obj.(*corev1.Secret)
		g.Expect(got.ManagedFields).To(BeEmpty())
		g.Expect(got.Annotations).To(BeEmpty())
		g.Expect(sets.List(sets.KeySet(got.Data))).To(Equal([]string{KeyGroups, KeyPasswordHash, KeyUsername}))
	})
}

func TestNotReadyUntilSynced(t *testing.T) {
	g := NewWithT(t)
	h := newHarness(t, Options{})
	sec := h.accountSecret("alice", "alice-password", []string{"dev", "ops"}, nil)
	g.Expect(env.Client.Create(context.Background(), sec)).To(Succeed())

	g.Expect(h.store.NeedLeaderElection()).To(BeFalse())
	g.Expect(h.store.ReadyCheck(nil)).To(MatchError(errNotSynced))
	o := h.login("alice", "alice-password", "192.0.2.1")
	g.Expect(o.Err).To(MatchError(errNotSynced), "a server error, not a failed login")
	g.Expect(o.Compares).To(BeZero())
	acct, usable := h.store.Lookup("alice")
	g.Expect(acct).To(Equal(Account{}))
	g.Expect(usable).To(BeFalse())

	h.start()
	g.Expect(h.store.ReadyCheck(nil)).To(Succeed())
	// The initial list, not a watch event, brought the account in.
	g.Expect(h.login("alice", "alice-password", "192.0.2.1")).To(Equal(ok(alice)))
}

func TestNewStoreRejectsBadOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
		want string
	}{
		{"a missing namespace is refused", Options{}, "accounts: Options.Namespace is required"},
		{"a negative rate is refused", Options{Namespace: "rotor", FailuresPerMinute: -1}, "accounts: negative rate limit options"},
		{"a negative burst is refused", Options{Namespace: "rotor", Burst: -1}, "accounts: negative rate limit options"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewStore(env.Config, tc.opts)
			NewWithT(t).Expect(err).To(MatchError(tc.want))
		})
	}
}
