// Command rotor is a Kubernetes-native issuer of short-lived JWT access
// tokens and rotating refresh tokens.
//
//	rotor [serve] [flags]              the manager and the issuer, against a cluster
//	rotor dev [flags]                  the same against a local control plane, with a demo account
//	rotor account create NAME [flags]  print an account Secret; the password is read from stdin
//	rotor client create NAME [flags]   print an OAuthClient (and its Secret); the secret goes to stderr
//	rotor client rotate-secret NAME    read the client's Secret on stdin, print it with a new secret's hash
//	rotor login [flags]                kubectl exec credential plugin: print an ExecCredential with an access token
//	rotor logout [flags]               revoke the cached session and remove it
//	rotor kubeconfig [flags]           write (or print) the kubeconfig user entry that runs rotor login
//	rotor authn-config [flags]         print the AuthenticationConfiguration that makes an API server trust rotor
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap/zapcore"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	identityv1alpha1 "rotor.dev/rotor/api/v1alpha1"
	"rotor.dev/rotor/pkg/accounts"
	"rotor.dev/rotor/pkg/dev"
	"rotor.dev/rotor/pkg/kubeauthn"
	"rotor.dev/rotor/pkg/login"
	"rotor.dev/rotor/pkg/memlimit"
	"rotor.dev/rotor/pkg/oauthclients"
	"rotor.dev/rotor/pkg/server"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "v0.1.0-dev"

func main() {
	if err := run(os.Args[1:]); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "rotor:", err)
		}
		os.Exit(1)
	}
}

func run(args []string) error {
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		return serve(args)
	case "dev":
		return runDev(args)
	case "account":
		if len(args) == 0 || args[0] != "create" {
			return errors.New("usage: rotor account create NAME [--groups a,b] [--namespace NS] < password")
		}
		return accountCreate(args[1:], os.Stdin, os.Stdout)
	case "client":
		if len(args) > 0 {
			switch args[0] {
			case "create":
				return clientCreate(args[1:], os.Stdout, os.Stderr)
			case "rotate-secret":
				return clientRotateSecret(args[1:], os.Stdin, os.Stdout, os.Stderr)
			}
		}
		return errors.New("usage: rotor client create NAME --type Public|Confidential --grant G --audience A [flags], or rotor client rotate-secret NAME [flags] < secret.yaml")
	case "login":
		return loginCmd(args, os.Stdin, os.Stdout, os.Stderr)
	case "logout":
		return logoutCmd(args, os.Stderr)
	case "kubeconfig":
		return kubeconfigCmd(args, os.Stdout, os.Stderr)
	case "authn-config":
		return authnConfigCmd(args, os.Stdout, os.Stderr)
	case "version":
		fmt.Println(version)
		return nil
	}
	return fmt.Errorf("unknown command %q (serve, dev, account create, client create, client rotate-secret, login, logout, kubeconfig, authn-config, version)", cmd)
}

func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

func serve(args []string) error {
	fs := flag.NewFlagSet("rotor serve", flag.ContinueOnError)
	o := server.DefaultOptions()
	o.AddFlags(fs)
	zo := zap.Options{}
	zo.BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	log := zap.New(zap.UseFlagOptions(&zo))
	ctrl.SetLogger(log)
	cfg, err := ctrl.GetConfig()
	if err != nil {
		return err
	}
	srv, err := server.New(cfg, o, log)
	if err != nil {
		return err
	}
	if limit, err := memlimit.Set("/sys/fs/cgroup", o.MemoryLimitRatio); err != nil {
		log.Error(err, "no soft memory limit set")
	} else if limit > 0 {
		log.Info("soft memory limit set from the container's", "bytes", limit, "ratio", o.MemoryLimitRatio)
	}
	ctx, cancel := signalContext()
	defer cancel()
	log.Info("starting rotor", "version", version, "issuer", o.IssuerURL, "address", srv.Addr().String())
	return srv.Start(ctx)
}

func runDev(args []string) error {
	fs := flag.NewFlagSet("rotor dev", flag.ContinueOnError)
	o := server.DefaultOptions()
	// Empty: free ports on 127.0.0.1, printed with the instructions.
	o.ProbeAddress, o.MetricsAddress = "", ""
	// One replica: no lease to wait for or to release at Ctrl-C. Metrics
	// in plain HTTP on loopback, for curl.
	o.LeaderElect, o.MetricsSecure = false, false
	// The demo's Public client, which rotor dev creates: its password login
	// needs no client_id (rotor serve has no default client).
	o.DefaultClientID = dev.DefaultClientID
	o.AddFlags(fs)
	d := dev.Options{DemoGroups: dev.DefaultDemoGroups}
	fs.StringVar(&d.Addr, "addr", "", "Address of the issuer; the issuer URL is https://<addr> (http:// with --insecure-http). Default 127.0.0.1:8080, or a free port if 8080 is taken.")
	fs.StringVar(&d.StateDir, "state-dir", ".rotor/dev", "Directory for the kubeconfigs (the administrator's, and user.kubeconfig, which logs in through rotor), the dev CA and certificate, and the demo client's secret.")
	fs.StringVar(&d.DemoUser, "demo-user", "demo", "Username of the demo account.")
	fs.StringVar(&d.DemoPassword, "demo-password", "", "Password of the demo account (default: generated and printed).")
	fs.Func("demo-groups", "Comma-separated groups of the demo account; the first may read the local cluster (ClusterRole view). Default "+strings.Join(dev.DefaultDemoGroups, ",")+".", func(v string) error {
		d.DemoGroups = splitList(v)
		return nil
	})
	// Development logs (console, stack traces on errors), at info: the
	// control plane's debug lines would bury the instructions.
	zo := zap.Options{Development: true, Level: zapcore.InfoLevel}
	zo.BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	log := zap.New(zap.UseFlagOptions(&zo))
	ctrl.SetLogger(log)
	ctx, cancel := signalContext()
	defer cancel()
	return dev.Run(ctx, o, d, log, os.Stdout)
}

func accountCreate(args []string, stdin io.Reader, stdout io.Writer) error {
	fs := flag.NewFlagSet("rotor account create", flag.ContinueOnError)
	namespace := fs.String("namespace", server.DefaultOptions().Namespace, "Namespace of the account Secret (rotor's namespace).")
	groups := fs.String("groups", "", "Comma-separated groups.")
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return errors.New("usage: rotor account create NAME [--groups a,b] [--namespace NS] < password")
	}
	name := args[0]
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	password, err := io.ReadAll(io.LimitReader(stdin, 1<<10))
	if err != nil {
		return fmt.Errorf("reading password from stdin: %w", err)
	}
	password = []byte(strings.TrimRight(string(password), "\r\n"))
	if len(password) == 0 {
		return errors.New("no password on stdin")
	}
	manifest, err := accounts.Manifest(name, *namespace, splitList(*groups), password)
	if err != nil {
		return err
	}
	_, err = stdout.Write(manifest)
	return err
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

const clientCreateUsage = "usage: rotor client create NAME --type Public|Confidential --grant G[,G] --audience A[,A] [--scope S[,S]] [--namespace NS] [--secret-file PATH]"

// clientCreate prints the manifests of a new OAuthClient, and of its Secret
// if it is Confidential; the generated secret is written once, to stderr or
// to --secret-file, never to stdout with the manifests.
func clientCreate(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("rotor client create", flag.ContinueOnError)
	fs.SetOutput(stderr)
	namespace := fs.String("namespace", server.DefaultOptions().Namespace, "Namespace of the client (rotor's namespace).")
	clientType := fs.String("type", "", "Public (sends its client_id only) or Confidential (authenticates with a generated secret). Required.")
	secretFile := fs.String("secret-file", "", "Write the generated secret to this file (mode 0600) instead of stderr.")
	var spec identityv1alpha1.OAuthClientSpec
	fs.Func("grant", "Grant type the client may use: password, refresh_token, client_credentials, token-exchange (or its URN). Repeatable or comma-separated; at least one.", func(v string) error {
		for _, g := range splitList(v) {
			if g == "token-exchange" {
				g = string(identityv1alpha1.GrantTokenExchange)
			}
			spec.GrantTypes = append(spec.GrantTypes, identityv1alpha1.GrantType(g))
		}
		return nil
	})
	fs.Func("audience", "Audience the client may request; the first is the default. Repeatable or comma-separated; at least one.", func(v string) error {
		spec.Audiences = append(spec.Audiences, splitList(v)...)
		return nil
	})
	fs.Func("scope", "Scope the client may request. Repeatable or comma-separated.", func(v string) error {
		spec.Scopes = append(spec.Scopes, splitList(v)...)
		return nil
	})
	fs.Func("access-token-lifetime", "Lifetime of the client's access tokens, at most 1h (default: the server's).", durationFlag(&spec, func(l *identityv1alpha1.TokenLifetimes) **metav1.Duration { return &l.AccessToken }))
	fs.Func("refresh-token-lifetime", "Sliding lifetime of the client's refresh tokens (default: the server's).", durationFlag(&spec, func(l *identityv1alpha1.TokenLifetimes) **metav1.Duration { return &l.RefreshToken }))
	fs.Func("session-max-lifetime", "Absolute lifetime of the client's sessions (default: the server's).", durationFlag(&spec, func(l *identityv1alpha1.TokenLifetimes) **metav1.Duration { return &l.SessionMax }))
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return errors.New(clientCreateUsage)
	}
	name := args[0]
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q; %s", fs.Args(), clientCreateUsage)
	}
	switch strings.ToLower(*clientType) {
	case "public":
		spec.Type = identityv1alpha1.ClientTypePublic
	case "confidential":
		spec.Type = identityv1alpha1.ClientTypeConfidential
	default:
		return fmt.Errorf("--type must be Public or Confidential, not %q", *clientType)
	}
	m, err := oauthclients.Manifests(name, *namespace, spec)
	if err != nil {
		return err
	}
	if m.PlaintextSecret != "" {
		if err := showSecret(name, m.PlaintextSecret, *secretFile, stderr); err != nil {
			return err
		}
	} else if *secretFile != "" {
		return errors.New("--secret-file: a Public client has no secret")
	}
	_, err = stdout.Write(m.YAML())
	return err
}

// durationFlag sets one of spec's token lifetimes.
func durationFlag(spec *identityv1alpha1.OAuthClientSpec, field func(*identityv1alpha1.TokenLifetimes) **metav1.Duration) func(string) error {
	return func(v string) error {
		d, err := time.ParseDuration(v)
		if err != nil {
			return err
		}
		if d <= 0 {
			return errors.New("must be positive")
		}
		if spec.TokenLifetimes == nil {
			spec.TokenLifetimes = &identityv1alpha1.TokenLifetimes{}
		}
		*field(spec.TokenLifetimes) = &metav1.Duration{Duration: d}
		return nil
	}
}

const clientRotateUsage = "usage: kubectl -n NS get secret client-secret-NAME -o yaml | rotor client rotate-secret NAME [--namespace NS] [--secret-file PATH] [--drop-previous]"

// clientRotateSecret reads a client-secret Secret on stdin (rotor cannot read
// the cluster: it prints manifests) and prints it with a new secret's hash
// added, the current one kept; or, with --drop-previous, with the newest
// hash only, ending the rotation.
func clientRotateSecret(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("rotor client rotate-secret", flag.ContinueOnError)
	fs.SetOutput(stderr)
	namespace := fs.String("namespace", server.DefaultOptions().Namespace, "Namespace of the client (rotor's namespace); a Secret on stdin in another is refused.")
	secretFile := fs.String("secret-file", "", "Write the new secret to this file (mode 0600) instead of stderr.")
	drop := fs.Bool("drop-previous", false, "End a rotation: keep only the newest hash, so the previous secret stops working. No new secret.")
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return errors.New(clientRotateUsage)
	}
	name := args[0]
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q; %s", fs.Args(), clientRotateUsage)
	}
	in, err := io.ReadAll(io.LimitReader(stdin, 1<<20))
	if err != nil {
		return fmt.Errorf("reading the Secret from stdin: %w", err)
	}
	rotate := oauthclients.RotateSecret
	if *drop {
		if *secretFile != "" {
			return errors.New("--secret-file: --drop-previous creates no secret")
		}
		rotate = oauthclients.DropPrevious
	}
	r, err := rotate(in, name, *namespace)
	if err != nil {
		return err
	}
	if r.PlaintextSecret != "" {
		if err := showSecret(name, r.PlaintextSecret, *secretFile, stderr); err != nil {
			return err
		}
	}
	_, err = stdout.Write(r.Secret)
	return err
}

// showSecret hands the plaintext secret over once: into path (created or
// truncated, mode 0600) or on stderr.
func showSecret(client, secret, path string, stderr io.Writer) error {
	if path == "" {
		_, err := fmt.Fprintf(stderr, "Secret of client %s (shown once; rotor keeps only its hash):\n%s\n", client, secret)
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("--secret-file: %w", err)
	}
	// An existing file (mktemp's) keeps its mode on open: make it private
	// before the secret is in it.
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("--secret-file: %w", err)
	}
	if _, err := fmt.Fprintln(f, secret); err != nil {
		f.Close()
		return fmt.Errorf("--secret-file: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("--secret-file: %w", err)
	}
	_, err = fmt.Fprintf(stderr, "Secret of client %s written to %s (rotor keeps only its hash)\n", client, path)
	return err
}

// usageWith prints what a subcommand does before its flags, for -h.
func usageWith(fs *flag.FlagSet, text string) func() {
	return func() {
		fmt.Fprintln(fs.Output(), strings.TrimSpace(text))
		fmt.Fprintln(fs.Output(), "\nFlags:")
		fs.PrintDefaults()
	}
}

const loginUsage = `
usage: rotor login --issuer-url URL --username NAME [flags]

A kubectl exec credential plugin: prints an ExecCredential
(client.authentication.k8s.io/v1) with a rotor access token on stdout, and
nothing else. The session (refresh token) is cached per issuer, client,
audience and user; a cached access token is reused until shortly before it
expires, then refreshed, under a lock shared by concurrent kubectl processes.
A new login asks for the password on the terminal when kubectl says the
session is interactive (KUBERNETES_EXEC_INFO) or, run by hand, when stdin is a
terminal; otherwise the password comes from --password-stdin or
--password-file, or a ServiceAccount token from --token-file. A password is
never taken from a flag's value. Set it up with: rotor kubeconfig`

// loginCmd is `rotor login`.
func loginCmd(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("rotor login", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o login.Options
	o.AddFlags(fs)
	o.AddCredentialFlags(fs)
	fs.Usage = usageWith(fs, loginUsage)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q (a password is never an argument: use the terminal, --password-stdin or --password-file)", fs.Args())
	}
	ctx, cancel := signalContext()
	defer cancel()
	return login.Run(ctx, o, login.Process{Stdin: stdin, Stdout: stdout, Stderr: stderr})
}

const logoutUsage = `
usage: rotor logout --issuer-url URL --username NAME [flags]

Revokes the cached session of rotor login at the issuer (RFC 7009) and
removes it from the cache; the cache entry is removed also when the
revocation fails, which is then reported. The flags name the session as they
do for rotor login.`

// logoutCmd is `rotor logout`.
func logoutCmd(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("rotor logout", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o login.Options
	o.AddFlags(fs)
	fs.Usage = usageWith(fs, logoutUsage)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	ctx, cancel := signalContext()
	defer cancel()
	return login.Logout(ctx, o, login.Process{Stderr: stderr})
}

const kubeconfigUsage = `
usage: rotor kubeconfig --issuer-url URL --username NAME [--kubeconfig FILE] [--user NAME] [--cluster NAME [--context NAME]] [flags]

Writes the kubeconfig user entry that runs rotor login as a kubectl exec
credential plugin (users[].user.exec, interactiveMode IfAvailable) into
--kubeconfig, keeping everything else in the file, or prints it as YAML on
stdout without --kubeconfig. The login flags go into the entry's args.`

// kubeconfigCmd is `rotor kubeconfig`.
func kubeconfigCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("rotor kubeconfig", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o login.Options
	o.AddFlags(fs)
	fs.StringVar(&o.PasswordFile, "password-file", "", "Put --password-file FILE into the entry: rotor login reads the password there when it needs a login (unattended use).")
	var k login.KubeconfigOptions
	path := fs.String("kubeconfig", "", "Kubeconfig file to add the entry to (created if missing; other entries kept). Default: print the entry as YAML on stdout.")
	fs.StringVar(&k.User, "user", "", "Name of the users[] entry (default rotor-<username>).")
	fs.StringVar(&k.Cluster, "cluster", "", "Also add a context pairing this cluster (already in the kubeconfig) with the user.")
	fs.StringVar(&k.Context, "context", "", "Name of the context that --cluster adds (default <user>@<cluster>).")
	fs.StringVar(&k.Command, "command", "", "The rotor binary the entry runs (default: the absolute path of this one).")
	fs.Usage = usageWith(fs, kubeconfigUsage)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *path == "" {
		b, err := login.Kubeconfig(o, k)
		if err != nil {
			return err
		}
		_, err = stdout.Write(b)
		return err
	}
	if err := login.WriteKubeconfig(*path, o, k); err != nil {
		return err
	}
	_, err := fmt.Fprintf(stderr, "User %s added to %s\n", k.UserName(o), *path)
	return err
}

// authnConfigCmd prints the AuthenticationConfiguration (v1) a Kubernetes
// API server needs to trust rotor (--authentication-config). Unless
// --offline, it first reads rotor's discovery, as the API server will, and
// refuses an issuer it could not verify: one whose issuer differs from
// --issuer-url, or that signs with EdDSA only.
func authnConfigCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("rotor authn-config", flag.ContinueOnError)
	fs.SetOutput(stderr)
	issuerURL := fs.String("issuer-url", "", "rotor's --issuer-url (https). Required.")
	caFile := fs.String("ca-file", "", "PEM CA bundle that verifies rotor's serving certificate, embedded in the config. Empty: the API server host's roots.")
	audiences := fs.String("audience", kubeauthn.DefaultAudience, "Comma-separated aud values the API server accepts: the audiences of the OAuthClient kubectl logs in with.")
	prefix := fs.String("prefix", kubeauthn.DefaultPrefix, "Prefix of every username and group from rotor, so that none is mistaken for one of the cluster's own.")
	offline := fs.Bool("offline", false, "Do not read rotor's discovery first (the issuer URL and signing algorithm are then not checked).")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: rotor authn-config --issuer-url https://... [flags] > authentication-config.yaml")
		fmt.Fprintln(stderr, "\nPrints an apiserver.config.k8s.io/v1 AuthenticationConfiguration with one JWT authenticator trusting rotor.")
		fmt.Fprintln(stderr, "Give it to kube-apiserver with --authentication-config=FILE (kubeadm: extraArgs and extraVolumes; kind: a mount and the flag).")
		fmt.Fprintln(stderr)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *issuerURL == "" || fs.NArg() > 0 {
		fs.Usage()
		return errors.New("--issuer-url is required and no arguments are taken")
	}
	var ca []byte
	if *caFile != "" {
		var err error
		if ca, err = os.ReadFile(*caFile); err != nil {
			return fmt.Errorf("reading --ca-file: %w", err)
		}
	}
	var aud []string
	for _, a := range strings.Split(*audiences, ",") {
		if a = strings.TrimSpace(a); a != "" {
			aud = append(aud, a)
		}
	}
	cfg, err := kubeauthn.Config(kubeauthn.Options{IssuerURL: *issuerURL, CAPEM: ca, Audiences: aud, Prefix: *prefix})
	if err != nil {
		return err
	}
	if !*offline {
		tlsConfig := &rest.Config{TLSClientConfig: rest.TLSClientConfig{CAData: ca}}
		tr, err := rest.TransportFor(tlsConfig)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		algs, err := kubeauthn.Discover(ctx, &http.Client{Transport: tr}, *issuerURL)
		if err != nil {
			return fmt.Errorf("%w (--offline skips this check)", err)
		}
		if err := kubeauthn.CheckAlgorithms(algs); err != nil {
			return err
		}
	}
	out, err := kubeauthn.YAML(cfg)
	if err != nil {
		return err
	}
	_, err = stdout.Write(out)
	return err
}
