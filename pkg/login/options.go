package login

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strings"
)

// DefaultClientID is the Public OAuthClient kubectl's plugin logs in as.
const DefaultClientID = "kubectl"

// Options say which session to use (issuer, client, user) and how to start a
// new one. The same Options drive login, logout and the kubeconfig entry.
type Options struct {
	// IssuerURL is rotor's --issuer-url; requests go to IssuerURL/token and
	// IssuerURL/revoke.
	IssuerURL string
	// ClientID is the Public OAuthClient (DefaultClientID when empty).
	ClientID string
	// Audience is sent with logins when set; empty lets rotor pick the
	// client's first audience.
	Audience string
	// Username logs in with a password. It is also part of the cache key.
	Username string
	// CAFile is a PEM bundle of the CAs that may sign the issuer's
	// certificate; empty uses the system's roots.
	CAFile string
	// CacheDir holds the sessions; empty is $XDG_CACHE_HOME/rotor or
	// ~/.cache/rotor.
	CacheDir string

	// How a new session starts when one is needed; at most one of them.
	// Without any, a password is asked on the terminal when the session is
	// interactive. A password is never taken from a flag's value.
	PasswordStdin bool
	PasswordFile  string
	// TokenFile is a Kubernetes ServiceAccount token exchanged for rotor
	// tokens (RFC 8693); re-read at every exchange, as the kubelet rewrites it.
	TokenFile string
}

// AddFlags registers the flags that identify a session: those of every
// subcommand (login, logout, kubeconfig).
func (o *Options) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.IssuerURL, "issuer-url", o.IssuerURL, "rotor's issuer URL (its --issuer-url); tokens are requested from <issuer-url>/token. Required. https, or http on a loopback address only.")
	fs.StringVar(&o.ClientID, "client-id", cmpOr(o.ClientID, DefaultClientID), "The Public OAuthClient to log in as (sent as client_id).")
	fs.StringVar(&o.Audience, "audience", o.Audience, "Audience (aud) to request at login; it must be one of the client's audiences. Default: the client's first audience.")
	fs.StringVar(&o.Username, "username", o.Username, "The account to log in as. Required unless --token-file is given.")
	fs.StringVar(&o.CAFile, "ca-file", o.CAFile, "PEM file of the CA that signed the issuer's certificate (a private CA, like rotor dev's). Default: the system's roots.")
	fs.StringVar(&o.CacheDir, "cache-dir", o.CacheDir, "Directory of the session cache (mode 0700; one 0600 file per issuer, client, audience and user). Default: $XDG_CACHE_HOME/rotor, or ~/.cache/rotor.")
	fs.StringVar(&o.TokenFile, "token-file", o.TokenFile, "Log in by exchanging the Kubernetes ServiceAccount token in this file (RFC 8693) instead of a password; the file is read at every exchange.")
}

// AddCredentialFlags registers the flags that say where a password comes
// from (login only).
func (o *Options) AddCredentialFlags(fs *flag.FlagSet) {
	fs.BoolVar(&o.PasswordStdin, "password-stdin", o.PasswordStdin, "Read the password from standard input (up to the first end of input; a trailing newline is dropped) when a login is needed.")
	fs.StringVar(&o.PasswordFile, "password-file", o.PasswordFile, "Read the password from this file when a login is needed (a trailing newline is dropped).")
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// normalized returns o with defaults applied, the issuer without a trailing
// slash, and checks what every subcommand needs.
func (o Options) normalized() (Options, error) {
	o.ClientID = cmpOr(o.ClientID, DefaultClientID)
	o.IssuerURL = strings.TrimSuffix(o.IssuerURL, "/")
	if err := checkIssuer(o.IssuerURL); err != nil {
		return o, err
	}
	if o.Username == "" && o.TokenFile == "" {
		return o, errors.New("--username is required (or --token-file, to exchange a ServiceAccount token)")
	}
	n := 0
	for _, set := range []bool{o.PasswordStdin, o.PasswordFile != "", o.TokenFile != ""} {
		if set {
			n++
		}
	}
	if n > 1 {
		return o, errors.New("--password-stdin, --password-file and --token-file exclude each other")
	}
	return o, nil
}

// checkIssuer refuses what would send a password in clear text to another
// machine: plain http is for rotor dev on this machine only.
func checkIssuer(issuer string) error {
	if issuer == "" {
		return errors.New("--issuer-url is required")
	}
	u, err := url.Parse(issuer)
	if err != nil {
		return fmt.Errorf("--issuer-url: %w", err)
	}
	if u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return fmt.Errorf("--issuer-url %q must be an absolute URL without user, query or fragment", issuer)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if isLoopback(u.Hostname()) {
			return nil
		}
		return fmt.Errorf("--issuer-url %q is plain http to another machine: passwords and tokens would cross the network in clear text; use https (with --ca-file for a private CA)", issuer)
	}
	return fmt.Errorf("--issuer-url %q must be https", issuer)
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// cacheUser is the user part of the cache key: the username, or for a
// session exchanged from a ServiceAccount token without one, the token's
// file (the subject is only known after the exchange).
func (o Options) cacheUser() string {
	if o.Username != "" {
		return o.Username
	}
	if abs, err := filepath.Abs(o.TokenFile); err == nil {
		return "token-file:" + abs
	}
	return "token-file:" + o.TokenFile
}

// who names the session in messages: no secret, enough to act on.
func (o Options) who() string {
	return fmt.Sprintf("%s at %s (client %s)", o.cacheUser(), o.IssuerURL, o.ClientID)
}

// loginCommand is the command line that starts this session again by hand.
func (o Options) loginCommand() string {
	args := []string{"rotor", "login", "--issuer-url", o.IssuerURL}
	if o.ClientID != DefaultClientID {
		args = append(args, "--client-id", o.ClientID)
	}
	if o.Audience != "" {
		args = append(args, "--audience", o.Audience)
	}
	if o.Username != "" {
		args = append(args, "--username", o.Username)
	}
	if o.CAFile != "" {
		args = append(args, "--ca-file", o.CAFile)
	}
	if o.CacheDir != "" {
		args = append(args, "--cache-dir", o.CacheDir)
	}
	for i, a := range args {
		args[i] = shellQuote(a)
	}
	return strings.Join(args, " ")
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	plain := func(r rune) bool {
		return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./:=@,+", r)
	}
	if s != "" && strings.IndexFunc(s, func(r rune) bool { return !plain(r) }) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
