// Package dev runs `rotor dev`: a local control plane, rotor's CRDs, a demo
// account and everything `rotor serve` runs, for trying rotor on one machine.
// Nothing in production imports it.
package dev

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"text/template"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"rotor.dev/rotor/pkg/accounts"
	"rotor.dev/rotor/pkg/dev/controlplane"
	"rotor.dev/rotor/pkg/dev/devcert"
	"rotor.dev/rotor/pkg/kubeauthn"
	"rotor.dev/rotor/pkg/scheme"
	"rotor.dev/rotor/pkg/server"
)

// Options are the flags of `rotor dev` beyond the issuer's.
type Options struct {
	// Addr is the issuer's address; empty picks 127.0.0.1:8080, or a free
	// port when 8080 is taken (another demo, a test run).
	Addr         string
	StateDir     string
	DemoUser     string
	DemoPassword string
	DemoGroups   []string
}

// DefaultDemoGroups are the demo account's groups unless --demo-groups is
// given; the first is granted the ClusterRole view on the local API server.
var DefaultDemoGroups = []string{"viewers"}

// Run runs `rotor dev`: a local control plane with rotor's CRDs, a demo
// account, and everything `rotor serve` runs, until ctx ends.
//
// Unless o.InsecureHTTP, rotor serves HTTPS with a certificate of a CA of
// its own (in the state directory), the control plane's API server trusts
// its tokens for the kubectl client, and the state directory holds a
// kubeconfig whose user logs in through rotor.
func Run(ctx context.Context, o server.Options, d Options, log logr.Logger, out io.Writer) error {
	var err error
	trust := !o.InsecureHTTP
	if trust {
		if o.TLSCertFile != "" || o.TLSKeyFile != "" {
			return errors.New("rotor dev makes its own certificate (in <state-dir>/tls): --tls-cert-file and --tls-key-file are for rotor serve")
		}
		// The API server verifies rotor's tokens itself, and not EdDSA.
		if err := kubeauthn.CheckAlgorithms([]string{o.KeyAlgorithm}); err != nil {
			return fmt.Errorf("%w; or run rotor dev with --insecure-http, where no API server trusts rotor", err)
		}
	}
	if d.Addr == "" {
		// The issuer's port is chosen before the control plane starts: the
		// API server is told the issuer URL.
		if d.Addr, err = freeAddr("127.0.0.1:8080"); err != nil {
			return err
		}
	}
	// Health and metrics ports are picked free unless given, so that two
	// demos (or a demo beside the tests) do not collide.
	for _, a := range []*string{&o.ProbeAddress, &o.MetricsAddress} {
		if *a == "" {
			if *a, err = freeAddr("127.0.0.1:0"); err != nil {
				return err
			}
		}
	}
	o.ListenAddress = d.Addr
	o.IssuerURL = "http://" + d.Addr
	if trust {
		if err := checkLoopback(d.Addr); err != nil {
			return err
		}
		o.IssuerURL = "https://" + d.Addr
	}
	// The demo lets workloads of the default namespace exchange tokens and
	// introspect.
	if len(o.TokenExchangeAllow) == 0 {
		o.TokenExchangeAllow = []string{"default/*"}
	}
	if len(o.IntrospectionAllow) == 0 {
		o.IntrospectionAllow = []string{"default/*"}
	}
	if d.DemoPassword == "" {
		var b [12]byte
		_, _ = rand.Read(b[:])
		d.DemoPassword = base64.RawURLEncoding.EncodeToString(b[:])
	}
	// The Public client of the password login and the token exchange: the
	// default client unless --default-client-id= (empty) requires client_id.
	publicID := o.DefaultClientID
	if publicID == "" {
		publicID = DefaultClientID
	}
	if publicID == ServiceClientID || trust && publicID == KubectlClientID {
		return fmt.Errorf("--default-client-id %s is one of the demo's other clients; the default client must be the demo's Public client", publicID)
	}
	// The certificate is generated below, once the state directory exists.
	v := o
	if trust {
		v.TLSCertFile, v.TLSKeyFile = "(generated)", "(generated)"
	}
	if err := v.Validate(); err != nil {
		return err
	}
	if err := os.MkdirAll(d.StateDir, 0o700); err != nil {
		return fmt.Errorf("creating state dir: %w", err)
	}
	stateDir, err := filepath.Abs(d.StateDir)
	if err != nil {
		return err
	}

	var cpOpts controlplane.Options
	var tls devcert.Files
	if !trust {
		// What a previous run that the API server trusted left: it would
		// point kubectl at an issuer that is no longer there.
		if err := removeUserKubeconfig(stateDir); err != nil {
			return err
		}
	} else {
		if tls, err = devcert.Generate(filepath.Join(stateDir, "tls")); err != nil {
			return fmt.Errorf("generating the dev certificate: %w", err)
		}
		o.TLSCertFile, o.TLSKeyFile = tls.Cert, tls.Key
		// The API server trusts rotor from its start: it retries rotor's
		// discovery until rotor, started below, answers.
		if cpOpts.AuthenticationConfig, err = authenticationConfig(o.IssuerURL, tls.CA); err != nil {
			return err
		}
	}

	fmt.Fprintln(out, "Starting a local control plane (etcd and kube-apiserver from bin/k8s)...")
	cp, err := controlplane.Start(cpOpts)
	if err != nil {
		return err
	}
	defer func() {
		if err := cp.Stop(); err != nil {
			log.Error(err, "stopping control plane")
		}
	}()
	kubeconfig, err := cp.Kubeconfig("rotor-dev-admin")
	if err != nil {
		return err
	}
	kubeconfigPath := filepath.Join(stateDir, "kubeconfig")
	if err := os.WriteFile(kubeconfigPath, kubeconfig, 0o600); err != nil {
		return fmt.Errorf("writing kubeconfig: %w", err)
	}

	c, err := client.New(cp.Config, client.Options{Scheme: scheme.Scheme})
	if err != nil {
		return err
	}
	secretPath := filepath.Join(stateDir, serviceSecretFile)
	if err := seed(ctx, c, o.Namespace, d); err != nil {
		return err
	}
	if err := seedClients(ctx, c, o.Namespace, publicID, o.Audience, secretPath); err != nil {
		return err
	}
	clients := []string{publicID, ServiceClientID}
	var userKubeconfigPath, viewRole string
	var viewer rbacv1.Subject
	if trust {
		if err := seedKubectlClient(ctx, c, o.Namespace); err != nil {
			return err
		}
		clients = append(clients, KubectlClientID)
		viewer = viewSubject(d)
		if viewRole, err = grantView(ctx, c, viewer); err != nil {
			return err
		}
		if userKubeconfigPath, err = writeUserKubeconfig(stateDir, kubeconfig, o.IssuerURL, d.DemoUser, tls.CA); err != nil {
			return err
		}
	}

	srv, err := server.New(cp.Config, o, log)
	if err != nil {
		return err
	}
	// rotor runs while dev waits for its reconciler to find the clients
	// Ready: the instructions are printed once they work.
	srvCtx, stop := context.WithCancel(ctx)
	defer stop()
	var srvErr error
	stopped := make(chan struct{})
	started := time.Now()
	go func() {
		defer close(stopped)
		srvErr = srv.Start(srvCtx)
	}()
	if err := waitReady(srvCtx, c, o.Namespace, clients, readyTimeout, stopped); err != nil {
		stop()
		<-stopped
		switch {
		case srvErr != nil:
			return srvErr
		case ctx.Err() != nil:
			return nil // Ctrl-C while waiting
		}
		return err
	}
	clientIDParam := ""
	if o.DefaultClientID == "" {
		clientIDParam = " -d client_id=" + publicID
	}
	curl := "curl -s"
	if trust {
		curl += " --cacert " + tls.CA
	}
	if err := instructions.Execute(out, map[string]any{
		"URL": o.IssuerURL, "Curl": curl, "CA": tls.CA,
		"Kubeconfig": kubeconfigPath, "User": d.DemoUser, "Password": d.DemoPassword,
		"Namespace": o.Namespace, "Audience": o.Audience, "SAAudience": o.ServiceAccountAudience,
		"Probe": o.ProbeAddress, "Metrics": o.MetricsAddress,
		"PublicClient": publicID, "DefaultClient": o.DefaultClientID, "ClientIDParam": clientIDParam,
		"ServiceClient": ServiceClientID, "SecretFile": secretPath,
		"UserKubeconfig": userKubeconfigPath, "KubectlClient": KubectlClientID, "KubectlTTL": kubectlAccessTokenTTL,
		"KubeAudience": kubeauthn.DefaultAudience, "Prefix": kubeauthn.DefaultPrefix,
		"Viewer": viewer, "ViewRole": viewRole, "ViewBinding": viewBinding,
		"LoginCache": filepath.Join(stateDir, loginCacheDir),
	}); err != nil {
		return err
	}
	trusted := make(chan struct{})
	go func() {
		defer close(trusted)
		if !trust {
			return
		}
		// Said after the instructions, which need not wait for it.
		err := waitTrusted(srvCtx, c, o.IssuerURL, trustTimeout)
		switch {
		case err == nil:
			fmt.Fprintf(out, "\nThe local API server trusts rotor now (%s after rotor started): the kubectl commands through %s work.\n",
				time.Since(started).Round(100*time.Millisecond), userKubeconfigPath)
		case srvCtx.Err() == nil:
			fmt.Fprintf(out, "\nThe local API server does not trust rotor yet (%v): kubectl through %s is refused until it does.\n", err, userKubeconfigPath)
		}
	}()
	<-stopped
	stop() // rotor failed, or ctx ended: the wait for trust ends too
	<-trusted
	return srvErr
}

// seed creates rotor's namespace and the demo account; seedClients the demo's
// OAuthClients.
func seed(ctx context.Context, c client.Client, namespace string, d Options) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}
	if err := c.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating namespace %s: %w", namespace, err)
	}
	manifest, err := accounts.Manifest(d.DemoUser, namespace, d.DemoGroups, []byte(d.DemoPassword))
	if err != nil {
		return fmt.Errorf("demo account: %w", err)
	}
	secret := &corev1.Secret{}
	if err := yaml.UnmarshalStrict(manifest, secret); err != nil {
		return fmt.Errorf("decoding demo account: %w", err)
	}
	if err := c.Create(ctx, secret); err != nil {
		return fmt.Errorf("creating demo account: %w", err)
	}
	return nil
}

// instructions are printed once rotor's clients are Ready. The
// client_credentials example uses curl -u: Basic's id and secret are
// form-encoded first (RFC 6749 section 2.3.1), which leaves client_ids (DNS
// names) and generated secrets (base64url) unchanged.
var instructions = template.Must(template.New("").Parse(`
rotor is serving {{.URL}} ({{if .CA}}HTTPS, with a certificate of rotor dev's own CA: {{.CA}}{{else}}plain HTTP: development only{{end}}).

Demo account: {{.User}} / {{.Password}}
{{if .DefaultClient}}
Requests without client_id are the Public client {{.DefaultClient}}'s (--default-client-id).
{{else}}
No default client (--default-client-id is empty): requests name the Public client {{.PublicClient}}.
{{end}}
Log in (password grant) and keep the tokens:
  {{.Curl}} {{.URL}}/token -d grant_type=password{{.ClientIDParam}} -d username={{.User}} -d password='{{.Password}}' | tee /tmp/rotor-login.json

Call the userinfo API with the access token (401 with WWW-Authenticate once it expires):
  {{.Curl}} {{.URL}}/userinfo -H "Authorization: Bearer $(sed -E 's/.*"access_token":"([^"]+)".*/\1/' /tmp/rotor-login.json)"

Refresh: a new access token AND a new refresh token; the old refresh token never works again:
  {{.Curl}} {{.URL}}/token -d grant_type=refresh_token{{.ClientIDParam}} -d refresh_token="$(sed -E 's/.*"refresh_token":"([^"]+)".*/\1/' /tmp/rotor-login.json)"

Exchange a workload's ServiceAccount token (RFC 8693; allowed here for default/*):
  kubectl --kubeconfig {{.Kubeconfig}} -n default create serviceaccount demo-workload
  {{.Curl}} {{.URL}}/token -d grant_type=urn:ietf:params:oauth:grant-type:token-exchange{{.ClientIDParam}} \
    -d subject_token_type=urn:ietf:params:oauth:token-type:jwt \
    -d subject_token="$(kubectl --kubeconfig {{.Kubeconfig}} -n default create token demo-workload --audience {{.SAAudience}})"

A service in its own name (client_credentials grant: an access token, no refresh token),
as the Confidential client {{.ServiceClient}}, whose secret is in {{.SecretFile}}:
  # -u is HTTP Basic (client_secret_basic). RFC 6749 section 2.3.1 form-encodes the id and
  # secret first; a client_id and a generated secret (base64url) have nothing it would change.
  {{.Curl}} -u {{.ServiceClient}}:"$(cat {{.SecretFile}})" -d grant_type=client_credentials -d scope=reports:read {{.URL}}/token

Introspect a token (RFC 7662), authenticated as a ServiceAccount:
  {{.Curl}} {{.URL}}/introspect -H "Authorization: Bearer $(kubectl --kubeconfig {{.Kubeconfig}} -n default create token demo-workload --audience {{.SAAudience}})" -d token=<token>

Revoke a session:
  {{.Curl}} {{.URL}}/revoke -d token=<refresh_token>

Discovery and keys:
  {{.Curl}} {{.URL}}/.well-known/openid-configuration
  {{.Curl}} {{.URL}}/keys
{{if .UserKubeconfig}}
kubectl through rotor: the local API server accepts rotor's tokens of audience {{.KubeAudience}}, from the
Public client {{.KubectlClient}} (access tokens of {{.KubectlTTL}}: the API server never learns of a revocation).
Usernames and groups are prefixed {{.Prefix}}. {{.UserKubeconfig}} runs 'rotor login' as a credential
plugin: the first command asks for {{.User}}'s password, later ones reuse and refresh the session
(cached in {{.LoginCache}}). The API server reads rotor's discovery every 10 s until rotor answers;
a line below says when it trusts rotor.
  kubectl --kubeconfig {{.UserKubeconfig}} auth whoami
  kubectl --kubeconfig {{.UserKubeconfig}} get pods -A
{{.Viewer.Kind}} {{.Viewer.Name}} may read the cluster (ClusterRole {{.ViewRole}}, ClusterRoleBinding {{.ViewBinding}}); nothing else is granted.
{{end}}
Inspect clients, sessions and keys on the real API server (as an administrator):
  kubectl --kubeconfig {{.Kubeconfig}} -n {{.Namespace}} get oauthclients -o wide
  kubectl --kubeconfig {{.Kubeconfig}} -n {{.Namespace}} get rt
  kubectl --kubeconfig {{.Kubeconfig}} -n {{.Namespace}} get secrets --field-selector type=identity.rotor.dev/signing-key -L identity.rotor.dev/key-state

Probes: http://{{.Probe}}/readyz   Metrics: http://{{.Metrics}}/metrics

Ctrl-C stops rotor and the control plane.
`))

// freeAddr returns addr if it can be listened on now, else a free port on
// 127.0.0.1. The port is released before rotor binds it: good enough for a
// development command, never used by rotor serve.
func freeAddr(addr string) (string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		if ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			return "", fmt.Errorf("finding a free port: %w", err)
		}
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}
