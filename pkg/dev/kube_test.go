package dev

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	identityv1alpha1 "rotor.dev/rotor/api/v1alpha1"
	"rotor.dev/rotor/pkg/kubeauthn"
	"rotor.dev/rotor/pkg/scheme"
	"rotor.dev/rotor/pkg/server"
)

// TestSeedKubectlClient: the kubectl client is Public, logs people in and
// refreshes, for the API server's audience only, with 5-minute access
// tokens; a second seed leaves it alone.
func TestSeedKubectlClient(t *testing.T) {
	ctx := context.Background()
	c := fake.NewClientBuilder().WithScheme(scheme.Scheme).Build()
	const ns = "rotor-system"
	for range 2 {
		if err := seedKubectlClient(ctx, c, ns); err != nil {
			t.Fatal(err)
		}
	}
	oac := &identityv1alpha1.OAuthClient{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: KubectlClientID}, oac); err != nil {
		t.Fatal(err)
	}
	s := oac.Spec
	if s.Type != identityv1alpha1.ClientTypePublic || s.SecretRef != nil {
		t.Errorf("type %s, secretRef %v: want a Public client without a secret", s.Type, s.SecretRef)
	}
	if !slices.Equal(s.GrantTypes, []identityv1alpha1.GrantType{identityv1alpha1.GrantPassword, identityv1alpha1.GrantRefreshToken}) {
		t.Errorf("grants %v", s.GrantTypes)
	}
	if !slices.Equal(s.Audiences, []string{kubeauthn.DefaultAudience}) {
		t.Errorf("audiences %v, want [%s]", s.Audiences, kubeauthn.DefaultAudience)
	}
	if s.TokenLifetimes == nil || s.TokenLifetimes.AccessToken == nil || s.TokenLifetimes.AccessToken.Duration != kubectlAccessTokenTTL {
		t.Errorf("token lifetimes %+v, want an access token of %s", s.TokenLifetimes, kubectlAccessTokenTTL)
	}
}

// TestUserKubeconfig: the cluster of the admin kubeconfig (not its
// credentials), a user that runs `rotor login` with the demo's flags, the
// current context set, the file 0600 and the login cache emptied.
func TestUserKubeconfig(t *testing.T) {
	admin := clientcmdapi.NewConfig()
	admin.Clusters["envtest"] = &clientcmdapi.Cluster{Server: "https://127.0.0.1:6443", CertificateAuthorityData: []byte("CA")}
	admin.AuthInfos["envtest"] = &clientcmdapi.AuthInfo{ClientCertificateData: []byte("admin cert"), ClientKeyData: []byte("admin key")}
	admin.Contexts["envtest"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: "envtest"}
	admin.CurrentContext = "envtest"
	adminYAML, err := clientcmd.Write(*admin)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	stale := filepath.Join(dir, loginCacheDir, "stale.json")
	if err := os.MkdirAll(filepath.Dir(stale), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(stale, []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	ca := filepath.Join(dir, "tls", "ca.crt")

	path, err := writeUserKubeconfig(dir, adminYAML, "https://127.0.0.1:8080", "demo", ca)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the stale login cache is still there: %v", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	cfg, err := clientcmd.LoadFromFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := cfg.Contexts[cfg.CurrentContext]
	if ctx == nil {
		t.Fatalf("no current context %q", cfg.CurrentContext)
	}
	cluster, user := cfg.Clusters[ctx.Cluster], cfg.AuthInfos[ctx.AuthInfo]
	if cluster == nil || cluster.Server != "https://127.0.0.1:6443" || string(cluster.CertificateAuthorityData) != "CA" {
		t.Errorf("cluster %+v, want the admin kubeconfig's", cluster)
	}
	if user == nil || user.Exec == nil || len(user.ClientCertificateData) > 0 || len(user.ClientKeyData) > 0 || user.Token != "" {
		t.Fatalf("user %+v, want an exec plugin and no other credential", user)
	}
	e := user.Exec
	if e.APIVersion != "client.authentication.k8s.io/v1" || e.InteractiveMode != clientcmdapi.IfAvailableExecInteractiveMode || !filepath.IsAbs(e.Command) {
		t.Errorf("exec %+v", e)
	}
	want := []string{"login", "--issuer-url", "https://127.0.0.1:8080", "--client-id", KubectlClientID, "--username", "demo", "--ca-file", ca, "--cache-dir", filepath.Join(dir, loginCacheDir)}
	if !slices.Equal(e.Args, want) {
		t.Errorf("args %q, want %q", e.Args, want)
	}
	if len(cfg.AuthInfos) != 1 || len(cfg.Clusters) != 1 {
		t.Errorf("%d users, %d clusters: want only the demo user's", len(cfg.AuthInfos), len(cfg.Clusters))
	}
}

// TestGrantView: the ClusterRole view when it has rules; where nothing
// aggregated into it (no kube-controller-manager), a role of rotor dev's
// with what view would hold; a small read-only role when there is nothing
// to aggregate either.
func TestGrantView(t *testing.T) {
	ctx := context.Background()
	subject := viewSubject(Options{DemoUser: "demo", DemoGroups: []string{"viewers", "ops"}})
	if subject.Kind != rbacv1.GroupKind || subject.Name != "rotor:viewers" {
		t.Fatalf("subject %+v, want group rotor:viewers", subject)
	}
	if s := viewSubject(Options{DemoUser: "demo"}); s.Kind != rbacv1.UserKind || s.Name != "rotor:demo" {
		t.Fatalf("subject without groups %+v, want user rotor:demo", s)
	}
	podsRule := rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "watch"}}
	aggregated := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "system:aggregate-to-view", Labels: map[string]string{aggregateToView: "true"}},
		Rules:      []rbacv1.PolicyRule{podsRule},
	}
	for name, tc := range map[string]struct {
		objects  []client.Object
		wantRole string
		check    func(*testing.T, []rbacv1.PolicyRule)
	}{
		"view has rules": {
			objects:  []client.Object{&rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "view"}, Rules: []rbacv1.PolicyRule{podsRule}}},
			wantRole: "view",
		},
		"view is not aggregated": {
			objects:  []client.Object{&rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "view"}}, aggregated},
			wantRole: fallbackViewRole,
			check: func(t *testing.T, rules []rbacv1.PolicyRule) {
				if len(rules) != 1 || !slices.Equal(rules[0].Resources, []string{"pods"}) {
					t.Errorf("rules %+v, want the aggregated role's", rules)
				}
			},
		},
		"no view at all": {
			wantRole: fallbackViewRole,
			check: func(t *testing.T, rules []rbacv1.PolicyRule) {
				for _, r := range rules {
					if slices.Contains(r.Resources, "secrets") || slices.ContainsFunc(r.Verbs, func(v string) bool { return v != "get" && v != "list" && v != "watch" }) {
						t.Errorf("rule %+v: want reads, and no Secrets", r)
					}
				}
			},
		},
	} {
		t.Run(name, func(t *testing.T) {
			c := fake.NewClientBuilder().WithScheme(scheme.Scheme).WithObjects(tc.objects...).Build()
			role, err := grantView(ctx, c, subject)
			if err != nil {
				t.Fatal(err)
			}
			if role != tc.wantRole {
				t.Errorf("role %s, want %s", role, tc.wantRole)
			}
			crb := &rbacv1.ClusterRoleBinding{}
			if err := c.Get(ctx, client.ObjectKey{Name: viewBinding}, crb); err != nil {
				t.Fatal(err)
			}
			if crb.RoleRef.Name != tc.wantRole || len(crb.Subjects) != 1 || crb.Subjects[0] != subject {
				t.Errorf("binding %+v", crb)
			}
			if tc.check != nil {
				cr := &rbacv1.ClusterRole{}
				if err := c.Get(ctx, client.ObjectKey{Name: role}, cr); err != nil {
					t.Fatal(err)
				}
				tc.check(t, cr.Rules)
			}
			if _, err := grantView(ctx, c, subject); err != nil {
				t.Errorf("again: %v", err)
			}
		})
	}
}

func TestAuthenticationConfig(t *testing.T) {
	ca := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(ca, []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := authenticationConfig("https://127.0.0.1:8080", ca)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"url: https://127.0.0.1:8080", "- " + kubeauthn.DefaultAudience, "BEGIN CERTIFICATE", "prefix: '" + kubeauthn.DefaultPrefix + "'"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("no %q in\n%s", want, out)
		}
	}
	if _, err := authenticationConfig("https://127.0.0.1:8080", filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("a missing CA file was accepted")
	}
}

func TestCheckLoopback(t *testing.T) {
	for addr, ok := range map[string]bool{
		"127.0.0.1:8080": true, "localhost:8080": true, "[::1]:8080": true,
		"0.0.0.0:8080": false, ":8080": false, "10.0.0.1:8080": false, "127.0.0.2:8080": false, "8080": false,
	} {
		if err := checkLoopback(addr); (err == nil) != ok {
			t.Errorf("checkLoopback(%q) = %v", addr, err)
		}
	}
}

// TestRunRefusesEdDSA: the API server cannot verify EdDSA, so rotor dev
// refuses it unless --insecure-http, before it creates anything.
func TestRunRefusesEdDSA(t *testing.T) {
	o := server.DefaultOptions()
	o.KeyAlgorithm = "EdDSA"
	state := filepath.Join(t.TempDir(), "state")
	err := Run(context.Background(), o, Options{StateDir: state, DemoUser: "demo"}, logr.Discard(), io.Discard)
	if !errors.Is(err, kubeauthn.ErrAlgorithm) || !strings.Contains(err.Error(), "--insecure-http") {
		t.Fatalf("err = %v, want kubeauthn.ErrAlgorithm suggesting --insecure-http", err)
	}
	if _, err := os.Stat(state); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the state directory was created: %v", err)
	}
}
