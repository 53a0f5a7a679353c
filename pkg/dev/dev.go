// Package dev runs `rotor dev`: a local control plane, rotor's CRDs, a demo
// account and everything `rotor serve` runs, for trying rotor on one machine.
// Nothing in production imports it.
package dev

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"text/template"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"rotor.dev/rotor/pkg/accounts"
	"rotor.dev/rotor/pkg/dev/controlplane"
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

// Run runs `rotor dev`: a local control plane with rotor's CRDs, a demo
// account, and everything `rotor serve` runs, until ctx ends.
func Run(ctx context.Context, o server.Options, d Options, log logr.Logger, out io.Writer) error {
	var err error
	if d.Addr == "" {
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
	o.IssuerURL = "http://" + d.Addr
	o.ListenAddress = d.Addr
	o.InsecureHTTP = true
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
	if publicID == ServiceClientID {
		return fmt.Errorf("--default-client-id %s is the demo's Confidential client; the default client must be Public", publicID)
	}
	if err := o.Validate(); err != nil {
		return err
	}
	if err := os.MkdirAll(d.StateDir, 0o700); err != nil {
		return fmt.Errorf("creating state dir: %w", err)
	}

	fmt.Fprintln(out, "Starting a local control plane (etcd and kube-apiserver from bin/k8s)...")
	cp, err := controlplane.Start(controlplane.Options{})
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
	kubeconfigPath, err := filepath.Abs(filepath.Join(d.StateDir, "kubeconfig"))
	if err != nil {
		return err
	}
	if err := os.WriteFile(kubeconfigPath, kubeconfig, 0o600); err != nil {
		return fmt.Errorf("writing kubeconfig: %w", err)
	}

	c, err := client.New(cp.Config, client.Options{Scheme: scheme.Scheme})
	if err != nil {
		return err
	}
	secretPath := filepath.Join(filepath.Dir(kubeconfigPath), serviceSecretFile)
	if err := seed(ctx, c, o.Namespace, d); err != nil {
		return err
	}
	if err := seedClients(ctx, c, o.Namespace, publicID, o.Audience, secretPath); err != nil {
		return err
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
	go func() {
		defer close(stopped)
		srvErr = srv.Start(srvCtx)
	}()
	if err := waitReady(srvCtx, c, o.Namespace, []string{publicID, ServiceClientID}, readyTimeout, stopped); err != nil {
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
	if err := instructions.Execute(out, map[string]any{
		"URL": o.IssuerURL, "Kubeconfig": kubeconfigPath, "User": d.DemoUser, "Password": d.DemoPassword,
		"Namespace": o.Namespace, "Audience": o.Audience, "SAAudience": o.ServiceAccountAudience,
		"Probe": o.ProbeAddress, "Metrics": o.MetricsAddress,
		"PublicClient": publicID, "DefaultClient": o.DefaultClientID, "ClientIDParam": clientIDParam,
		"ServiceClient": ServiceClientID, "SecretFile": secretPath,
	}); err != nil {
		return err
	}
	<-stopped
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
rotor is serving {{.URL}} (plain HTTP: development only).

Demo account: {{.User}} / {{.Password}}
{{if .DefaultClient}}
Requests without client_id are the Public client {{.DefaultClient}}'s (--default-client-id).
{{else}}
No default client (--default-client-id is empty): requests name the Public client {{.PublicClient}}.
{{end}}
Log in (password grant) and keep the tokens:
  curl -s {{.URL}}/token -d grant_type=password{{.ClientIDParam}} -d username={{.User}} -d password='{{.Password}}' | tee /tmp/rotor-login.json

Call the userinfo API with the access token (401 with WWW-Authenticate once it expires):
  curl -s {{.URL}}/userinfo -H "Authorization: Bearer $(sed -E 's/.*"access_token":"([^"]+)".*/\1/' /tmp/rotor-login.json)"

Refresh: a new access token AND a new refresh token; the old refresh token never works again:
  curl -s {{.URL}}/token -d grant_type=refresh_token{{.ClientIDParam}} -d refresh_token="$(sed -E 's/.*"refresh_token":"([^"]+)".*/\1/' /tmp/rotor-login.json)"

Exchange a workload's ServiceAccount token (RFC 8693; allowed here for default/*):
  kubectl --kubeconfig {{.Kubeconfig}} -n default create serviceaccount demo-workload
  curl -s {{.URL}}/token -d grant_type=urn:ietf:params:oauth:grant-type:token-exchange{{.ClientIDParam}} \
    -d subject_token_type=urn:ietf:params:oauth:token-type:jwt \
    -d subject_token="$(kubectl --kubeconfig {{.Kubeconfig}} -n default create token demo-workload --audience {{.SAAudience}})"

A service in its own name (client_credentials grant: an access token, no refresh token),
as the Confidential client {{.ServiceClient}}, whose secret is in {{.SecretFile}}:
  # -u is HTTP Basic (client_secret_basic). RFC 6749 section 2.3.1 form-encodes the id and
  # secret first; a client_id and a generated secret (base64url) have nothing it would change.
  curl -s -u {{.ServiceClient}}:"$(cat {{.SecretFile}})" -d grant_type=client_credentials -d scope=reports:read {{.URL}}/token

Introspect a token (RFC 7662), authenticated as a ServiceAccount:
  curl -s {{.URL}}/introspect -H "Authorization: Bearer $(kubectl --kubeconfig {{.Kubeconfig}} -n default create token demo-workload --audience {{.SAAudience}})" -d token=<token>

Revoke a session:
  curl -s {{.URL}}/revoke -d token=<refresh_token>

Discovery and keys:
  curl -s {{.URL}}/.well-known/openid-configuration
  curl -s {{.URL}}/keys

Inspect clients, sessions and keys on the real API server:
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
