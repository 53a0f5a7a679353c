package login

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clientauthv1 "k8s.io/client-go/pkg/apis/clientauthentication/v1"
)

// ExecInfoEnv is the variable in which kubectl hands the plugin an
// ExecCredential describing the call (spec.interactive).
const ExecInfoEnv = "KUBERNETES_EXEC_INFO"

// APIVersion is the ExecCredential version the plugin speaks by default.
const APIVersion = "client.authentication.k8s.io/v1"

// apiVersionV1beta1 is answered in kind when kubectl asks in it: the
// answer must use the version of the request.
const apiVersionV1beta1 = "client.authentication.k8s.io/v1beta1"

// maxPasswordBytes bounds a password read from stdin or a file.
const maxPasswordBytes = 1 << 10

// Process is what a run takes from its process: the standard streams, the
// environment, the terminal and the clock. Tests give each run its own.
type Process struct {
	// Stdin is read for --password-stdin, Stdout receives the
	// ExecCredential and nothing else, Stderr the messages for a person.
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// Getenv reads the environment (nil: os.Getenv).
	Getenv func(string) string
	// Prompt asks a person for a password without echoing it (nil: on
	// /dev/tty). It is called only when the session is interactive.
	Prompt func(prompt string) (string, error)
	// Now tells the time (nil: time.Now).
	Now func() time.Time
	// HTTPClient makes the requests (nil: one that trusts Options.CAFile).
	HTTPClient *http.Client
}

func (p *Process) getenv(k string) string {
	if p.Getenv == nil {
		return os.Getenv(k)
	}
	return p.Getenv(k)
}

func (p *Process) now() time.Time {
	if p.Now == nil {
		return time.Now()
	}
	return p.Now()
}

func (p *Process) stderr() io.Writer {
	if p.Stderr == nil {
		return io.Discard
	}
	return p.Stderr
}

// execInfo is what kubectl said about this call.
type execInfo struct {
	apiVersion  string
	interactive bool
	// byHand: no KUBERNETES_EXEC_INFO, so not kubectl but a person.
	byHand bool
}

// readExecInfo reads KUBERNETES_EXEC_INFO. Without it (a person running
// rotor login by hand) the session is interactive when stdin is a terminal.
func readExecInfo(p *Process) (execInfo, error) {
	raw := p.getenv(ExecInfoEnv)
	if raw == "" {
		return execInfo{apiVersion: APIVersion, interactive: stdinIsTerminal(p.Stdin), byHand: true}, nil
	}
	var cred clientauthv1.ExecCredential
	if err := json.Unmarshal([]byte(raw), &cred); err != nil {
		return execInfo{}, fmt.Errorf("decoding %s: %w", ExecInfoEnv, err)
	}
	switch cred.APIVersion {
	case APIVersion, apiVersionV1beta1:
	default:
		return execInfo{}, fmt.Errorf("%s has apiVersion %q; rotor speaks %s (set it in the kubeconfig's exec entry)", ExecInfoEnv, cred.APIVersion, APIVersion)
	}
	return execInfo{apiVersion: cred.APIVersion, interactive: cred.Spec.Interactive}, nil
}

// Run is `rotor login`: it prints on p.Stdout an ExecCredential holding an
// access token of the session o names, from the cache while it is fresh,
// else refreshed, else from a new login. The cache is locked from read to
// write, so concurrent runs (kubectl processes) refresh once between them.
// Nothing but the ExecCredential goes to stdout, and no token or password
// goes anywhere else.
func Run(ctx context.Context, o Options, p Process) error {
	o, err := o.normalized()
	if err != nil {
		return err
	}
	info, err := readExecInfo(&p)
	if err != nil {
		return err
	}
	cf, err := openCache(o, &p)
	if err != nil {
		return err
	}
	unlock, err := cf.lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	// A person who ran rotor login in a terminal gets the session cached,
	// not the token shown, where it would stay in the scrollback.
	if info.byHand && isTerminal(p.Stdout) {
		p.Stdout = &loggedIn{w: p.stderr(), who: o.who()}
	}

	e, err := cf.read(o)
	if err != nil {
		return err
	}
	if e != nil && e.fresh(p.now()) {
		return writeCredential(p.Stdout, info.apiVersion, e.AccessToken, e.renewAt())
	}
	c, err := newIssuerClient(o, &p)
	if err != nil {
		return err
	}
	ended := false
	if e != nil && e.RefreshToken != "" {
		next, err := refresh(ctx, c, &p, e)
		switch {
		case err == nil:
			if err := cf.write(next); err != nil {
				return err
			}
			return writeCredential(p.Stdout, info.apiVersion, next.AccessToken, next.renewAt())
		case invalidGrant(err):
			// The session is over (revoked, expired, replayed): its
			// refresh token must never be sent again.
			if err := cf.remove(); err != nil {
				return err
			}
			ended = true
		default:
			// The issuer is away or busy: that says nothing about the
			// session, which is kept; the current token may still do.
			if e.usable(p.now()) {
				fmt.Fprintf(p.stderr(), "rotor: refreshing the session of %s failed (%v); using the current access token meanwhile\n", o.who(), err)
				// Past the margin already: kubectl is told to come back
				// soon, and tries the refresh again then.
				until := e.Expiry.Add(-usableDelta)
				if soon := p.now().Add(30 * time.Second); soon.Before(until) {
					until = soon
				}
				return writeCredential(p.Stdout, info.apiVersion, e.AccessToken, until)
			}
			return fmt.Errorf("refreshing the session of %s (kept; try again): %w", o.who(), err)
		}
	}
	form, err := loginForm(o, &p, info.interactive, ended)
	if err != nil {
		return err
	}
	next, err := requestToken(ctx, c, &p, form, o)
	if err != nil {
		return fmt.Errorf("logging in as %s: %w", o.who(), err)
	}
	if err := cf.write(next); err != nil {
		return err
	}
	return writeCredential(p.Stdout, info.apiVersion, next.AccessToken, next.renewAt())
}

// Logout is `rotor logout`: it revokes the cached session at the issuer
// (RFC 7009) and removes it from the cache, also when the revocation fails,
// which it then reports.
func Logout(ctx context.Context, o Options, p Process) error {
	o, err := o.normalized()
	if err != nil {
		return err
	}
	cf, err := openCache(o, &p)
	if err != nil {
		return err
	}
	unlock, err := cf.lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	e, err := cf.read(o)
	if err != nil {
		return err
	}
	if e == nil {
		if err := cf.remove(); err != nil {
			return err
		}
		fmt.Fprintf(p.stderr(), "rotor: no cached session for %s\n", o.who())
		return nil
	}
	var revokeErr error
	if e.RefreshToken != "" {
		c, err := newIssuerClient(o, &p)
		if err == nil {
			err = c.revoke(ctx, e.RefreshToken)
		}
		revokeErr = err
	}
	if err := cf.remove(); err != nil {
		return err
	}
	if revokeErr != nil {
		// The name of the session (the RefreshToken object) is not its
		// secret: an operator can revoke it by name.
		session, _, _ := strings.Cut(e.RefreshToken, ".")
		return fmt.Errorf("removed the cached session of %s, but revoking it at the issuer failed: %w; it stays valid until it expires unless an operator deletes RefreshToken %s", o.who(), revokeErr, session)
	}
	fmt.Fprintf(p.stderr(), "rotor: logged out %s\n", o.who())
	return nil
}

func openCache(o Options, p *Process) (cacheFile, error) {
	dir, err := cacheDir(o, p.getenv)
	if err != nil {
		return cacheFile{}, err
	}
	if err := ensureDir(dir); err != nil {
		return cacheFile{}, err
	}
	return sessionFile(dir, o), nil
}

func newIssuerClient(o Options, p *Process) (*issuerClient, error) {
	h := p.HTTPClient
	if h == nil {
		var err error
		if h, err = newHTTPClient(o.CAFile); err != nil {
			return nil, err
		}
	}
	return &issuerClient{http: h, o: o}, nil
}

// usableDelta: an access token this close to its expiry is not handed
// out even when no other can be had; it could expire on its way.
const usableDelta = 10 * time.Second

// usable: the access token still works, if only for a few seconds more.
func (e *entry) usable(now time.Time) bool {
	return e.AccessToken != "" && !e.Expiry.IsZero() && now.Before(e.Expiry.Add(-usableDelta))
}

// refresh rotates e's refresh token. The answer's refresh token replaces
// it; the old one is dead at rotor from now on. The request is not cut
// short by ctx (Ctrl-C): rotor may have rotated already, and losing the
// answer would leave the cache holding a token whose next use is a replay.
// The HTTP client's timeout still bounds it.
func refresh(ctx context.Context, c *issuerClient, p *Process, e *entry) (*entry, error) {
	form := url.Values{"grant_type": {grantRefreshToken}, "refresh_token": {e.RefreshToken}}
	next, err := requestToken(context.WithoutCancel(ctx), c, p, form, c.o)
	if err != nil {
		return nil, err
	}
	if next.RefreshToken == "" {
		next.RefreshToken = e.RefreshToken // RFC 6749 §6: none means keep it
	}
	return next, nil
}

// requestToken asks the token endpoint and makes a cache entry of the
// answer. Lifetimes count from when the request was sent: the safe end.
func requestToken(ctx context.Context, c *issuerClient, p *Process, form url.Values, o Options) (*entry, error) {
	sent := p.now()
	tr, err := c.token(ctx, form)
	if err != nil {
		return nil, err
	}
	e := &entry{
		Issuer: o.IssuerURL, ClientID: o.ClientID, Audience: o.Audience, User: o.cacheUser(),
		AccessToken: tr.AccessToken, RefreshToken: tr.RefreshToken,
	}
	if tr.ExpiresIn > 0 {
		e.Lifetime = time.Duration(tr.ExpiresIn) * time.Second
		e.Expiry = sent.Add(e.Lifetime)
	} else if exp, ok := jwtExpiry(tr.AccessToken); ok {
		e.Expiry, e.Lifetime = exp, exp.Sub(sent)
	}
	return e, nil
}

// loginForm builds the request of a new session from the credentials o
// names, or asks for a password when a person is there to type it.
// Otherwise it says what to run.
func loginForm(o Options, p *Process, interactive, ended bool) (url.Values, error) {
	form := url.Values{}
	if o.Audience != "" {
		form.Set("audience", o.Audience)
	}
	if o.TokenFile != "" {
		b, err := os.ReadFile(o.TokenFile)
		if err != nil {
			return nil, fmt.Errorf("reading --token-file: %w", err)
		}
		subject := strings.TrimSpace(string(b))
		if subject == "" {
			return nil, fmt.Errorf("--token-file %s is empty", o.TokenFile)
		}
		form.Set("grant_type", grantTokenExchange)
		form.Set("subject_token", subject)
		form.Set("subject_token_type", tokenTypeJWT)
		return form, nil
	}
	var password string
	var err error
	switch {
	case o.PasswordFile != "":
		password, err = readPassword(o.PasswordFile, nil)
	case o.PasswordStdin:
		password, err = readPassword("", p.Stdin)
	case interactive:
		if ended {
			fmt.Fprintf(p.stderr(), "rotor: the session of %s ended (revoked, expired or replayed); logging in again\n", o.who())
		}
		prompt := p.Prompt
		if prompt == nil {
			prompt = terminalPrompt
		}
		password, err = prompt(fmt.Sprintf("Password for %s at %s: ", o.Username, o.IssuerURL))
		if err == nil && password == "" {
			err = errors.New("no password given")
		}
	case ended:
		return nil, fmt.Errorf("the session of %s ended (revoked, expired or replayed); run: %s  (in a terminal, to type the password)", o.who(), o.loginCommand())
	default:
		return nil, fmt.Errorf("no session for %s, and no terminal to ask for a password (give --password-stdin, --password-file or --token-file); run: %s  (in a terminal, to type the password)", o.who(), o.loginCommand())
	}
	if err != nil {
		return nil, err
	}
	form.Set("grant_type", grantPassword)
	form.Set("username", o.Username)
	form.Set("password", password)
	return form, nil
}

// readPassword reads a password from path, or from r when path is empty.
// Only a trailing newline is dropped: anything else may be part of it.
func readPassword(path string, r io.Reader) (string, error) {
	what := "standard input (--password-stdin)"
	if path != "" {
		f, err := os.Open(path)
		if err != nil {
			return "", fmt.Errorf("--password-file: %w", err)
		}
		defer f.Close()
		r, what = f, "--password-file "+path
	}
	if r == nil {
		return "", fmt.Errorf("reading the password from %s: no input", what)
	}
	b, err := io.ReadAll(io.LimitReader(r, maxPasswordBytes+1))
	if err != nil {
		return "", fmt.Errorf("reading the password from %s: %w", what, err)
	}
	if len(b) > maxPasswordBytes {
		return "", fmt.Errorf("the password from %s is longer than %d bytes", what, maxPasswordBytes)
	}
	pw := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	if pw == "" {
		return "", fmt.Errorf("no password in %s", what)
	}
	return pw, nil
}

// loggedIn stands for stdout when it is a terminal: it says that the
// session is ready instead of showing the credential.
type loggedIn struct {
	w   io.Writer
	who string
}

func (l *loggedIn) Write(b []byte) (int, error) {
	if _, err := fmt.Fprintf(l.w, "rotor: logged in as %s; kubectl will use this session (the token is not shown on a terminal)\n", l.who); err != nil {
		return 0, err
	}
	return len(b), nil
}

// writeCredential prints an ExecCredential of token, which kubectl uses
// until expires (zero: until an API server refuses it). Callers pass a time
// a margin before the token's expiry, so kubectl comes back while the token
// still works and the cache then renews it.
func writeCredential(w io.Writer, apiVersion, token string, expires time.Time) error {
	cred := clientauthv1.ExecCredential{
		TypeMeta: metav1.TypeMeta{APIVersion: apiVersion, Kind: "ExecCredential"},
		Status:   &clientauthv1.ExecCredentialStatus{Token: token},
	}
	if !expires.IsZero() {
		// metav1.Time is written to the second, rounded down: earlier still.
		cred.Status.ExpirationTimestamp = &metav1.Time{Time: expires}
	}
	b, err := json.Marshal(cred)
	if err != nil {
		return fmt.Errorf("encoding ExecCredential: %w", err)
	}
	if _, err := w.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("writing ExecCredential: %w", err)
	}
	return nil
}
