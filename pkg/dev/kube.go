package dev

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"rotor.dev/rotor/pkg/kubeauthn"
	"rotor.dev/rotor/pkg/login"
)

// What rotor dev adds to the local API server when it trusts rotor (every
// mode but --insecure-http).
const (
	// userKubeconfigFile is the state directory's kubeconfig that logs in
	// through rotor (`rotor login` as a credential plugin).
	userKubeconfigFile = "user.kubeconfig"
	// loginCacheDir is the state directory's cache of `rotor login`: it is
	// emptied at every start, since the sessions it holds died with the
	// previous control plane.
	loginCacheDir = "login-cache"
	// viewBinding is the ClusterRoleBinding that lets the demo user read
	// the cluster, and fallbackViewRole the ClusterRole it binds when the
	// API server has no bootstrap `view` role.
	viewBinding      = "rotor-dev-view"
	fallbackViewRole = "rotor-dev-view"
)

// checkLoopback refuses an issuer address the dev certificate does not
// name: the certificate is for localhost, 127.0.0.1 and ::1 only.
func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--addr %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); host == "localhost" || ip != nil && (ip.Equal(net.IPv4(127, 0, 0, 1)) || ip.Equal(net.IPv6loopback)) {
		return nil
	}
	return fmt.Errorf("--addr %q: rotor dev's certificate is for localhost, 127.0.0.1 and ::1 only (or use --insecure-http)", addr)
}

// authenticationConfig is the API server's --authentication-config that
// trusts the rotor at issuerURL, whose certificate the CA in caFile signed,
// for tokens of kubeauthn.DefaultAudience (the kubectl client's).
func authenticationConfig(issuerURL, caFile string) ([]byte, error) {
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("reading the dev CA: %w", err)
	}
	cfg, err := kubeauthn.Config(kubeauthn.Options{
		IssuerURL: issuerURL,
		CAPEM:     caPEM,
		Audiences: []string{kubeauthn.DefaultAudience},
		Prefix:    kubeauthn.DefaultPrefix,
	})
	if err != nil {
		return nil, err
	}
	return kubeauthn.YAML(cfg)
}

// loginOptions are the `rotor login` of the demo user through the kubectl
// client, with its own cache.
func loginOptions(issuerURL, user, caFile, cacheDir string) login.Options {
	return login.Options{IssuerURL: issuerURL, ClientID: KubectlClientID, Username: user, CAFile: caFile, CacheDir: cacheDir}
}

// userKubeconfig is a kubeconfig for the cluster of adminKubeconfig (its
// server and CA, not its credentials) whose user runs `rotor login` (this
// binary) as kubectl's credential plugin, as lo says.
func userKubeconfig(adminKubeconfig []byte, lo login.Options) ([]byte, error) {
	admin, err := clientcmd.Load(adminKubeconfig)
	if err != nil {
		return nil, fmt.Errorf("reading the control plane's kubeconfig: %w", err)
	}
	current, ok := admin.Contexts[admin.CurrentContext]
	if !ok {
		return nil, fmt.Errorf("the control plane's kubeconfig has no current context %q", admin.CurrentContext)
	}
	cluster, ok := admin.Clusters[current.Cluster]
	if !ok {
		return nil, fmt.Errorf("the control plane's kubeconfig has no cluster %q", current.Cluster)
	}
	const clusterName = "rotor-dev"
	k := login.KubeconfigOptions{Cluster: clusterName, Context: lo.Username + "@" + clusterName}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[clusterName] = cluster
	if err := login.AddToKubeconfig(cfg, lo, k); err != nil {
		return nil, err
	}
	cfg.CurrentContext = k.Context
	return clientcmd.Write(*cfg)
}

// writeUserKubeconfig writes the demo user's kubeconfig into stateDir, mode
// 0600, and empties the login cache it names. It returns its path.
func writeUserKubeconfig(stateDir string, adminKubeconfig []byte, issuerURL, user, caFile string) (string, error) {
	cacheDir := filepath.Join(stateDir, loginCacheDir)
	// The cached sessions are of the previous control plane, which took
	// them with it, and their access tokens would still be handed to kubectl.
	if err := os.RemoveAll(cacheDir); err != nil {
		return "", fmt.Errorf("emptying the login cache: %w", err)
	}
	kc, err := userKubeconfig(adminKubeconfig, loginOptions(issuerURL, user, caFile, cacheDir))
	if err != nil {
		return "", err
	}
	path := filepath.Join(stateDir, userKubeconfigFile)
	if err := writePrivateFile(path, kc); err != nil {
		return "", fmt.Errorf("writing %s: %w", path, err)
	}
	return path, nil
}

// removeUserKubeconfig removes the demo user's kubeconfig and login cache
// from stateDir, if they are there.
func removeUserKubeconfig(stateDir string) error {
	for _, name := range []string{userKubeconfigFile, loginCacheDir} {
		if err := os.RemoveAll(filepath.Join(stateDir, name)); err != nil {
			return fmt.Errorf("removing %s: %w", name, err)
		}
	}
	return nil
}

// grantView lets subject (a rotor-asserted user or group) read the cluster
// as the ClusterRole view allows. view is an aggregated role, filled by
// kube-controller-manager, which the local control plane does not run: its
// rules stay empty there, and rotor dev binds a ClusterRole of its own
// holding what view would (the rules of the roles aggregated into it). It
// returns the bound ClusterRole's name.
func grantView(ctx context.Context, c client.Client, subject rbacv1.Subject) (string, error) {
	role := "view"
	view := &rbacv1.ClusterRole{}
	err := c.Get(ctx, client.ObjectKey{Name: role}, view)
	if err != nil && !apierrors.IsNotFound(err) {
		return "", fmt.Errorf("reading ClusterRole %s: %w", role, err)
	}
	if err != nil || len(view.Rules) == 0 {
		role = fallbackViewRole
		rules, err := viewRules(ctx, c)
		if err != nil {
			return "", err
		}
		cr := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: role}, Rules: rules}
		if err := c.Create(ctx, cr); err != nil && !apierrors.IsAlreadyExists(err) {
			return "", fmt.Errorf("creating ClusterRole %s: %w", role, err)
		}
	}
	crb := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: viewBinding},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
		Subjects:   []rbacv1.Subject{subject},
	}
	if err := c.Create(ctx, crb); err != nil && !apierrors.IsAlreadyExists(err) {
		return "", fmt.Errorf("creating ClusterRoleBinding %s: %w", viewBinding, err)
	}
	return role, nil
}

// aggregateToView labels the ClusterRoles whose rules make up view.
const aggregateToView = "rbac.authorization.k8s.io/aggregate-to-view"

// viewRules are the rules the ClusterRoles aggregated into view hold (the
// bootstrap system:aggregate-to-view, and any a CRD added), or when there
// are none, reading the common workload objects (never Secrets).
func viewRules(ctx context.Context, c client.Client) ([]rbacv1.PolicyRule, error) {
	list := &rbacv1.ClusterRoleList{}
	if err := c.List(ctx, list, client.MatchingLabels{aggregateToView: "true"}); err != nil {
		return nil, fmt.Errorf("listing the ClusterRoles aggregated into view: %w", err)
	}
	var rules []rbacv1.PolicyRule
	for _, r := range list.Items {
		rules = append(rules, r.Rules...)
	}
	if len(rules) > 0 {
		return rules, nil
	}
	read := []string{"get", "list", "watch"}
	return []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"pods", "pods/log", "services", "endpoints", "configmaps", "namespaces", "serviceaccounts", "events", "persistentvolumeclaims"}, Verbs: read},
		{APIGroups: []string{"apps"}, Resources: []string{"deployments", "replicasets", "statefulsets", "daemonsets"}, Verbs: read},
		{APIGroups: []string{"batch"}, Resources: []string{"jobs", "cronjobs"}, Verbs: read},
	}, nil
}

// viewSubject is who grantView lets read the cluster: the demo user's first
// group, or the user when it has none, as the API server names them.
func viewSubject(d Options) rbacv1.Subject {
	if len(d.DemoGroups) > 0 {
		return rbacv1.Subject{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: kubeauthn.DefaultPrefix + d.DemoGroups[0]}
	}
	return rbacv1.Subject{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: kubeauthn.DefaultPrefix + d.DemoUser}
}

// trustTimeout bounds the wait for the API server to trust rotor: it reads
// rotor's discovery every 10 s until rotor answers.
const trustTimeout = 40 * time.Second

// waitTrusted waits until the API server's authenticator for issuerURL is
// initialized, that is has read rotor's discovery: from then on it verifies
// rotor's tokens. It asks with a TokenReview of a token that claims
// issuerURL and has no valid signature (so nothing is ever authenticated),
// which the authenticator refuses as "not initialized" until then.
func waitTrusted(ctx context.Context, c client.Client, issuerURL string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	probe := probeToken(issuerURL)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	var last string
	for {
		tr := &authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{Token: probe}}
		err := c.Create(ctx, tr)
		switch {
		case err != nil:
			last = err.Error()
		case tr.Status.Authenticated || !strings.Contains(tr.Status.Error, "not initialized"):
			return nil
		default:
			last = tr.Status.Error
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %s", ctx.Err(), last)
		case <-tick.C:
		}
	}
}

// probeToken is a JWT of issuer for the API server's audience with a
// signature that verifies under no key.
func probeToken(issuer string) string {
	enc := func(v any) string {
		b, _ := json.Marshal(v)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	header := enc(map[string]string{"alg": "ES256", "typ": "JWT", "kid": "rotor-dev-trust-probe"})
	claims := enc(map[string]any{"iss": issuer, "aud": []string{kubeauthn.DefaultAudience}, "sub": "rotor-dev-trust-probe", "exp": time.Now().Add(time.Hour).Unix()})
	return header + "." + claims + "." + base64.RawURLEncoding.EncodeToString([]byte("not a signature"))
}
