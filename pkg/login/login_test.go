package login_test

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	crclient "sigs.k8s.io/controller-runtime/pkg/client"

	identityv1alpha1 "rotor.dev/rotor/api/v1alpha1"
	"rotor.dev/rotor/pkg/login"
	"rotor.dev/rotor/pkg/server"
)

// A first login with --password-file prints exactly one ExecCredential whose
// token an API server trusting rotor for the client's audience accepts, and
// caches the session privately.
func TestLoginWithPasswordFile(t *testing.T) {
	g := NewWithT(t)
	r := startRotor(t)
	u := newUser(t, r)
	o := u.O
	o.PasswordFile = u.passwordFile()

	res := u.run(o, nil)
	g.Expect(res.Err).NotTo(HaveOccurred())
	g.Expect(res.Stderr).To(BeEmpty())
	cred := res.Cred
	g.Expect(cred).NotTo(BeNil())
	g.Expect(cred.APIVersion).To(Equal("client.authentication.k8s.io/v1"))
	g.Expect(cred.Kind).To(Equal("ExecCredential"))
	g.Expect(cred.Status.Token).NotTo(BeEmpty())

	claims := r.verify(t, cred.Status.Token)
	g.Expect(claims.Subject).To(Equal(username))
	g.Expect(claims.Audience).To(Equal([]string{audience}))
	g.Expect(claims.ClientID).To(Equal(login.DefaultClientID))
	// A 20-minute token: kubectl comes back a minute before it expires.
	exp := cred.Status.ExpirationTimestamp
	g.Expect(exp).NotTo(BeNil())
	g.Expect(exp.Time.Before(claims.ExpiresAt)).To(BeTrue())
	g.Expect(claims.ExpiresAt.Sub(exp.Time)).To(And(BeNumerically(">=", time.Minute), BeNumerically("<=", time.Minute+2*time.Second)))

	dir, err := os.Stat(u.Dir)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(dir.Mode().Perm()).To(Equal(os.FileMode(0o700)))
	files := u.files()
	g.Expect(files).To(HaveLen(1))
	g.Expect(filepath.Base(files[0])).To(HavePrefix("alice@127.0.0.1_"))
	fi, err := os.Stat(files[0])
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(fi.Mode().Perm()).To(Equal(os.FileMode(0o600)))
	lock, err := os.Stat(strings.TrimSuffix(files[0], ".json") + ".lock")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(lock.Mode().Perm()).To(Equal(os.FileMode(0o600)))
	// Nothing else: no temporary file left behind.
	all, _ := os.ReadDir(u.Dir)
	g.Expect(all).To(HaveLen(2))

	e := u.entry()
	g.Expect(e.AccessToken).To(Equal(cred.Status.Token))
	g.Expect(e.RefreshToken).NotTo(BeEmpty())
	g.Expect(r.count("password")).To(Equal(1))
	g.Expect(r.count("")).To(Equal(1))
}

// While the cached access token is valid for more than the margin, runs
// make no request at all; within the margin one refresh renews it.
func TestCachedTokenIsUsedWithoutRequest(t *testing.T) {
	g := NewWithT(t)
	r := startRotor(t)
	u := newUser(t, r)
	o := u.O
	o.PasswordFile = u.passwordFile()
	first := u.must(o)
	g.Expect(r.count("")).To(Equal(1))

	// No credentials at all this time: a run that needed a login would fail.
	again := u.must(u.O)
	g.Expect(again.Status.Token).To(Equal(first.Status.Token))
	g.Expect(again.Status.ExpirationTimestamp.Time).To(BeTemporally("==", first.Status.ExpirationTimestamp.Time))
	r.Clock.Step(18 * time.Minute)
	g.Expect(u.must(u.O).Status.Token).To(Equal(first.Status.Token))
	g.Expect(r.count("")).To(Equal(1))

	// 19m30s into a 20-minute token: inside the minute's margin.
	r.Clock.Step(90 * time.Second)
	renewed := u.must(u.O)
	g.Expect(renewed.Status.Token).NotTo(Equal(first.Status.Token))
	g.Expect(r.count("refresh_token")).To(Equal(1))
	g.Expect(r.count("password")).To(Equal(1))
	claims := r.verify(t, renewed.Status.Token)
	g.Expect(claims.Subject).To(Equal(username))
	g.Expect(renewed.Status.ExpirationTimestamp.Time).To(BeTemporally("~", r.Clock.Now().Add(19*time.Minute), 2*time.Second))
}

// Eight kubectl processes finding the access token expired at once cause
// one refresh: the first to take the lock refreshes, the others find its
// token in the cache. All eight print a valid credential.
func TestConcurrentRunsRefreshOnce(t *testing.T) {
	g := NewWithT(t)
	r := startRotor(t)
	u := newUser(t, r)
	o := u.O
	o.PasswordFile = u.passwordFile()
	first := u.must(o)
	r.Clock.Step(21 * time.Minute)

	const n = 8
	results := make([]result, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			results[i] = u.run(u.O, nil)
		})
	}
	close(start)
	wg.Wait()

	g.Expect(r.count("refresh_token")).To(Equal(1))
	g.Expect(r.count("password")).To(Equal(1))
	token := ""
	for i, res := range results {
		g.Expect(res.Err).NotTo(HaveOccurred(), "run %d", i)
		g.Expect(res.Stderr).To(BeEmpty(), "run %d", i)
		g.Expect(res.Cred).NotTo(BeNil(), "run %d", i)
		g.Expect(res.Cred.Status.Token).NotTo(Equal(first.Status.Token))
		if token == "" {
			token = res.Cred.Status.Token
			r.verify(t, token)
		}
		g.Expect(res.Cred.Status.Token).To(Equal(token), "run %d", i)
	}
}

// A revoked session cannot be refreshed: a non-interactive run without
// credentials fails with what to do and forgets the session; a run with
// --password-file, or an interactive one, logs in again.
func TestRevokedSession(t *testing.T) {
	g := NewWithT(t)
	r := startRotor(t)
	u := newUser(t, r)
	withPassword := u.O
	withPassword.PasswordFile = u.passwordFile()
	u.must(withPassword)

	revoke := func() {
		t.Helper()
		resp, err := r.HTTP.PostForm(r.URL+"/revoke", url.Values{"token": {u.entry().RefreshToken}, "client_id": {login.DefaultClientID}})
		g.Expect(err).NotTo(HaveOccurred())
		resp.Body.Close()
		g.Expect(resp.StatusCode).To(Equal(http.StatusOK))
		r.Clock.Step(21 * time.Minute) // past the access token
	}
	revoke()

	// kubectl without a terminal: nobody to ask.
	u.Exec = `{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","spec":{"interactive":false}}`
	res := u.run(u.O, nil)
	g.Expect(res.Err).To(HaveOccurred())
	g.Expect(res.Stdout).To(BeEmpty())
	g.Expect(res.Err.Error()).To(And(
		ContainSubstring("the session of alice at "+r.URL),
		ContainSubstring("ended (revoked, expired or replayed)"),
		ContainSubstring("run: rotor login --issuer-url "+r.URL+" --username alice --ca-file "+r.CAFile),
	))
	g.Expect(u.files()).To(BeEmpty())
	g.Expect(r.count("refresh_token")).To(Equal(1))

	// Again: there is no session now, and still nobody to ask.
	res = u.run(u.O, nil)
	g.Expect(res.Err).To(MatchError(ContainSubstring("no session for alice")))
	g.Expect(r.count("refresh_token")).To(Equal(1))

	cred := u.must(withPassword)
	r.verify(t, cred.Status.Token)
	g.Expect(r.count("password")).To(Equal(2))
	g.Expect(u.entry()).NotTo(BeNil())

	// Interactive (kubectl in a terminal): the password is asked for.
	revoke()
	u.Exec = `{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","spec":{"interactive":true}}`
	var prompts []string
	res = u.run(u.O, func(prompt string) (string, error) {
		prompts = append(prompts, prompt)
		return password, nil
	})
	g.Expect(res.Err).NotTo(HaveOccurred())
	g.Expect(prompts).To(Equal([]string{"Password for alice at " + r.URL + ": "}))
	g.Expect(res.Stderr).To(ContainSubstring("ended (revoked, expired or replayed); logging in again"))
	r.verify(t, res.Cred.Status.Token)
	g.Expect(r.count("password")).To(Equal(3))
}

// A wrong password is the issuer's invalid_grant, reported, nothing cached.
func TestWrongPassword(t *testing.T) {
	g := NewWithT(t)
	r := startRotor(t)
	u := newUser(t, r)
	u.Exec = `{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","spec":{"interactive":true}}`
	res := u.run(u.O, func(string) (string, error) { return "wrong", nil })
	g.Expect(res.Err).To(MatchError(ContainSubstring("logging in as alice at " + r.URL)))
	g.Expect(res.Err).To(MatchError(ContainSubstring("invalid_grant")))
	g.Expect(res.Stdout).To(BeEmpty())
	g.Expect(u.files()).To(BeEmpty())

	res = u.run(u.O, func(string) (string, error) { return "", errors.New("no terminal") })
	g.Expect(res.Err).To(MatchError(ContainSubstring("no terminal")))
}

// kubectl may ask in v1beta1: the answer is in the same version.
func TestExecInfoVersion(t *testing.T) {
	g := NewWithT(t)
	r := startRotor(t)
	u := newUser(t, r)
	u.Exec = `{"apiVersion":"client.authentication.k8s.io/v1beta1","kind":"ExecCredential","spec":{"interactive":true}}`
	res := u.run(u.O, func(string) (string, error) { return password, nil })
	g.Expect(res.Err).NotTo(HaveOccurred())
	g.Expect(res.Cred.APIVersion).To(Equal("client.authentication.k8s.io/v1beta1"))

	u.Exec = `{"apiVersion":"client.authentication.k8s.io/v2","kind":"ExecCredential"}`
	g.Expect(u.run(u.O, nil).Err).To(MatchError(ContainSubstring(`apiVersion "client.authentication.k8s.io/v2"`)))
}

// logout revokes the session at rotor and removes the cache file; when the
// issuer cannot be reached the file is removed all the same, and the error
// says the session lives on.
func TestLogout(t *testing.T) {
	g := NewWithT(t)
	r := startRotor(t)
	u := newUser(t, r)
	o := u.O
	o.PasswordFile = u.passwordFile()
	u.must(o)
	rt := u.entry().RefreshToken
	session, _, _ := strings.Cut(rt, ".")

	var stderr strings.Builder
	err := login.Logout(context.Background(), u.O, login.Process{Stderr: &stderr})
	u.record(stderr.String(), err)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(stderr.String()).To(ContainSubstring("logged out alice at " + r.URL))
	g.Expect(r.revocations()).To(Equal(1))
	g.Expect(u.files()).To(BeEmpty())
	obj := &identityv1alpha1.RefreshToken{}
	g.Expect(env.Client.Get(context.Background(), crclient.ObjectKey{Namespace: r.NS, Name: session}, obj)).To(Succeed())
	g.Expect(obj.Spec.State).To(Equal(identityv1alpha1.SessionRevoked))

	// Nothing cached: nothing to do, and no request.
	stderr.Reset()
	err = login.Logout(context.Background(), u.O, login.Process{Stderr: &stderr})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(stderr.String()).To(ContainSubstring("no cached session for alice"))
	g.Expect(r.revocations()).To(Equal(1))

	// The issuer away: the file goes anyway.
	u.must(o)
	session, _, _ = strings.Cut(u.entry().RefreshToken, ".")
	down := &http.Client{Transport: roundTripFunc(func(*http.Request) (*http.Response, error) {
		return nil, errors.New("connection refused")
	})}
	stderr.Reset()
	err = login.Logout(context.Background(), u.O, login.Process{Stderr: &stderr, HTTPClient: down})
	u.record(stderr.String(), err)
	g.Expect(err).To(MatchError(And(
		ContainSubstring("removed the cached session of alice"),
		ContainSubstring("revoking it at the issuer failed"),
		ContainSubstring("RefreshToken "+session),
	)))
	g.Expect(u.files()).To(BeEmpty())
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// A workload (or a CI job) logs in by exchanging its ServiceAccount token
// (RFC 8693); its session is cached like a person's.
func TestTokenFileExchange(t *testing.T) {
	g := NewWithT(t)
	r := startRotor(t, func(o *server.Options, spec *identityv1alpha1.OAuthClientSpec) {
		o.TokenExchangeAllow = []string{"*/ci"}
		spec.GrantTypes = append(spec.GrantTypes, identityv1alpha1.GrantTokenExchange)
	})
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: r.NS, Name: "ci"}}
	g.Expect(env.Client.Create(context.Background(), sa)).To(Succeed())
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		Audiences: []string{"rotor"}, ExpirationSeconds: ptr.To[int64](3600),
	}}
	g.Expect(env.Client.SubResource("token").Create(context.Background(), sa, tr)).To(Succeed())
	tokenFile := filepath.Join(t.TempDir(), "token")
	g.Expect(os.WriteFile(tokenFile, []byte(tr.Status.Token), 0o600)).To(Succeed())

	u := newUser(t, r)
	u.addSecret(tr.Status.Token)
	o := u.O
	o.Username, o.TokenFile = "", tokenFile
	cred := u.must(o)
	claims := r.verify(t, cred.Status.Token)
	g.Expect(claims.Subject).To(Equal("system:serviceaccount:" + r.NS + ":ci"))
	g.Expect(r.count("urn:ietf:params:oauth:grant-type:token-exchange")).To(Equal(1))
	g.Expect(u.must(o).Status.Token).To(Equal(cred.Status.Token))
	g.Expect(r.count("")).To(Equal(1))
}

// Options that cannot work are refused before anything is read or sent.
func TestOptionsRefused(t *testing.T) {
	dir := t.TempDir()
	for name, tc := range map[string]struct {
		o    login.Options
		want string
	}{
		"no issuer":          {login.Options{Username: "a"}, "--issuer-url is required"},
		"plain http to afar": {login.Options{IssuerURL: "http://auth.example.com", Username: "a"}, "clear text"},
		"no user":            {login.Options{IssuerURL: "https://auth.example.com"}, "--username is required"},
		"two sources":        {login.Options{IssuerURL: "https://auth.example.com", Username: "a", PasswordStdin: true, PasswordFile: "x"}, "exclude each other"},
	} {
		t.Run(name, func(t *testing.T) {
			tc.o.CacheDir = dir
			var stdout strings.Builder
			err := login.Run(context.Background(), tc.o, login.Process{Stdout: &stdout})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
			if stdout.Len() != 0 {
				t.Fatalf("stdout %q", stdout.String())
			}
		})
	}
}

// An issuer that cannot be reached says nothing about the session: it is
// kept, and the current access token is handed out while it still works.
func TestIssuerAwayKeepsSession(t *testing.T) {
	g := NewWithT(t)
	r := startRotor(t)
	u := newUser(t, r)
	o := u.O
	o.PasswordFile = u.passwordFile()
	first := u.must(o)
	rt := u.entry().RefreshToken

	down := &http.Client{Transport: roundTripFunc(func(*http.Request) (*http.Response, error) {
		return nil, errors.New("connection refused")
	})}
	run := func() (stdout, stderr string, err error) {
		var out, errOut strings.Builder
		err = login.Run(context.Background(), u.O, login.Process{Stdout: &out, Stderr: &errOut, Now: r.Clock.Now, HTTPClient: down})
		u.record(errOut.String(), err)
		return out.String(), errOut.String(), err
	}

	r.Clock.Step(19*time.Minute + 30*time.Second) // inside the margin
	stdout, stderr, err := run()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(stdout).To(ContainSubstring(first.Status.Token))
	g.Expect(stderr).To(ContainSubstring("using the current access token meanwhile"))
	g.Expect(u.entry().RefreshToken).To(Equal(rt))

	r.Clock.Step(time.Minute) // expired
	stdout, _, err = run()
	g.Expect(err).To(MatchError(ContainSubstring("(kept; try again)")))
	g.Expect(stdout).To(BeEmpty())
	g.Expect(u.entry().RefreshToken).To(Equal(rt))

	// Back: the kept session refreshes.
	g.Expect(u.must(u.O).Status.Token).NotTo(Equal(first.Status.Token))
	g.Expect(r.count("refresh_token")).To(Equal(1))
}
