package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/http"
	"net/url"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	identityv1alpha1 "rotor.dev/rotor/api/v1alpha1"
	"rotor.dev/rotor/pkg/accounts"
	"rotor.dev/rotor/pkg/oauthclients"
	"rotor.dev/rotor/pkg/server"
)

// The OAuth clients the bench registers. Every token request is made by
// one: rotor serves registered clients only.
const (
	// defaultClientID is the Public client that requests without client_id
	// are made by (--default-client-id), as `rotor dev` sets it up.
	defaultClientID = "rotor"
	// refreshClientID is the Confidential client of the login and refresh
	// measurement: it authenticates (HTTP Basic) on every request.
	refreshClientID = "bench-refresh"
	// serviceClientID is the Confidential client of the client_credentials
	// measurement.
	serviceClientID = "bench-service"
	// benchAudience is the audience of every client, rotor's default.
	benchAudience = "rotor"
)

// publicClientSpec is the default client's registration: logins and
// refreshes for benchAudience.
func publicClientSpec() identityv1alpha1.OAuthClientSpec {
	return identityv1alpha1.OAuthClientSpec{
		Type:       identityv1alpha1.ClientTypePublic,
		GrantTypes: []identityv1alpha1.GrantType{identityv1alpha1.GrantPassword, identityv1alpha1.GrantRefreshToken},
		Audiences:  []string{benchAudience},
	}
}

// confidentialClientSpec is a Confidential client with grants, for
// benchAudience.
func confidentialClientSpec(grants ...identityv1alpha1.GrantType) identityv1alpha1.OAuthClientSpec {
	return identityv1alpha1.OAuthClientSpec{
		Type:       identityv1alpha1.ClientTypeConfidential,
		GrantTypes: grants,
		Audiences:  []string{benchAudience},
	}
}

// createClient applies what `rotor client create` prints for client name
// in namespace (the OAuthClient, and a Confidential client's Secret holding
// the hash of its secret) and returns the secret ("" for a Public client).
// createAccount stores the account benchUser (group bench) in namespace
// with a random password, and returns the password.
func createAccount(ctx context.Context, kc client.Client, namespace string) (string, error) {
	password := rand.Text()
	manifest, err := accounts.Manifest(benchUser, namespace, []string{"bench"}, []byte(password))
	if err != nil {
		return "", err
	}
	secret := &corev1.Secret{}
	if err := yaml.UnmarshalStrict(manifest, secret); err != nil {
		return "", err
	}
	return password, kc.Create(ctx, secret)
}

func createClient(ctx context.Context, kc client.Client, namespace, name string, spec identityv1alpha1.OAuthClientSpec) (string, error) {
	m, err := oauthclients.Manifests(name, namespace, spec)
	if err != nil {
		return "", err
	}
	docs := [][]byte{m.Client}
	if m.Secret != nil {
		docs = append(docs, m.Secret)
	}
	for _, doc := range docs {
		obj := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(doc, &obj.Object); err != nil {
			return "", err
		}
		if err := kc.Create(ctx, obj); err != nil {
			return "", fmt.Errorf("creating %s %s/%s: %w", obj.GetKind(), namespace, obj.GetName(), err)
		}
	}
	return m.PlaintextSecret, nil
}

// clientReady reports whether rotor's reconciler has marked OAuthClient
// name Ready (its status, as `kubectl get oac` shows it).
func clientReady(ctx context.Context, kc client.Reader, namespace, name string) (bool, error) {
	oac := &identityv1alpha1.OAuthClient{}
	if err := kc.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, oac); err != nil {
		return false, err
	}
	return apimeta.IsStatusConditionTrue(oac.Status.Conditions, identityv1alpha1.ConditionReady), nil
}

// awaitServed waits until the in-process rotor may serve each client:
// found, Ready (its reconciler's condition), and for a Confidential client
// its Secret in rotor's cache, as the token endpoint sees it.
func awaitServed(ctx context.Context, srv *server.Server, ids ...string) error {
	deadline := time.Now().Add(60 * time.Second)
	for _, id := range ids {
		for {
			c, found, err := srv.Clients.Lookup(ctx, id)
			if err == nil && found && c.Ready {
				break
			}
			if time.Now().After(deadline) {
				reason := ""
				if c != nil {
					reason = c.NotReady
				}
				return fmt.Errorf("OAuth client %s not served after 60s (found %v, %q, %v)", id, found, reason, err)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	return nil
}

// basicAuth is the Authorization header of client_secret_basic: RFC 6749
// section 2.3.1 form-urlencodes the client_id and the secret before RFC 7617
// puts them together.
func basicAuth(req *http.Request, id, secret string) {
	req.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
}

// requestTally counts the API requests the in-process rotor sends, from
// its side of the connection (a wrapper around its transport): long-running
// watches apart from the rest. It is the check on apiserver_request_total
// that nothing rotor does escapes the resources the bench reads there.
type requestTally struct {
	requests, watches atomic.Int64
}

type tallyCounts struct{ requests, watches int64 }

func (t *requestTally) snapshot() tallyCounts {
	return tallyCounts{t.requests.Load(), t.watches.Load()}
}

func (c tallyCounts) minus(before tallyCounts) tallyCounts {
	return tallyCounts{c.requests - before.requests, c.watches - before.watches}
}

// config returns a copy of cfg whose requests t counts.
func (t *requestTally) config(cfg *rest.Config) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(req *http.Request) (*http.Response, error) {
			if w := req.URL.Query().Get("watch"); w == "true" || w == "1" {
				t.watches.Add(1)
			} else {
				t.requests.Add(1)
			}
			return rt.RoundTrip(req)
		})
	})
	return cfg
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }
