package charts_test

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	identityv1alpha1 "rotor.dev/rotor/api/v1alpha1"
	"rotor.dev/rotor/config/crd"
	"rotor.dev/rotor/pkg/server"
)

// The values files the tests render besides the defaults.
var variants = map[string][]string{
	"default":  nil,
	"full":     {"-f", "testdata/values-full.yaml"},
	"insecure": {"-f", "testdata/values-insecure.yaml"},
}

func variantArgs(t testing.TB, name string) []string {
	var args []string
	for _, a := range variants[name] {
		if strings.HasPrefix(a, "testdata/") {
			a = testdata(t, strings.TrimPrefix(a, "testdata/"))
		}
		args = append(args, a)
	}
	return args
}

func fromUnstructured[T any](t testing.TB, u *unstructured.Unstructured) *T {
	t.Helper()
	out := new(T)
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(u.Object, out, true); err != nil {
		t.Fatalf("decoding %s %s: %v", u.GetKind(), u.GetName(), err)
	}
	return out
}

func TestChartLintStrict(t *testing.T) {
	for _, name := range []string{"default", "full", "insecure"} {
		t.Run(name, func(t *testing.T) {
			g := NewWithT(t)
			args := append([]string{"lint", "--strict", chartDir(t), "--kube-version", kubeVersion(t)}, variantArgs(t, name)...)
			out, _, err := run(t, nil, helmBin(t), args...)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(out).To(ContainSubstring("1 chart(s) linted, 0 chart(s) failed"))
		})
	}
	t.Run("fails on a bad value", func(t *testing.T) {
		g := NewWithT(t)
		out, _, err := run(t, nil, helmBin(t), "lint", "--strict", chartDir(t), "--set", "replicaCont=3")
		g.Expect(err).To(MatchError(ContainSubstring("1 chart(s) linted, 1 chart(s) failed")))
		g.Expect(out).To(ContainSubstring("[ERROR] values.yaml: - at '': additional properties 'replicaCont' not allowed"))
	})
}

func TestChartSchemaRejectsTyposAndBadTypes(t *testing.T) {
	cases := []struct {
		set, want string
	}{
		{"replicaCont=3", "at '': additional properties 'replicaCont' not allowed"},
		{"tokens.acessTokenTTL=1m", "at '/tokens': additional properties 'acessTokenTTL' not allowed"},
		{"tls.certManager.issuerRef.nmae=x", "at '/tls/certManager/issuerRef': additional properties 'nmae' not allowed"},
		{"replicaCount=two", "at '/replicaCount': got string, want integer"},
		{"passwordGrant.enabled=yes", "at '/passwordGrant/enabled': got string, want boolean"},
		{"tokens.accessTokenTTL=20min", "at '/tokens/accessTokenTTL': '20min' does not match pattern"},
		{"signingKeys.algorithm=HS256", "at '/signingKeys/algorithm': value must be one of 'ES256', 'EdDSA', 'RS256'"},
		{"issuer.url=https://auth.example.com/", "at '/issuer/url': 'https://auth.example.com/' does not match pattern"},
		{"service.port=70000", "at '/service/port'"},
		{"log.level=verbose", "at '/log/level'"},
		{"exchange.allow={team-a}", "at '/exchange/allow/0': 'team-a' does not match pattern"},
		{"sessions.quota=-1", "at '/sessions/quota'"},
		{"sessions.maxPerSubject=many", "at '/sessions/maxPerSubject': got string, want integer"},
		{"sessions.perSubjectPerMinute=0", "at '/sessions/perSubjectPerMinute'"},
		// Gone with --allowed-audiences: each client's audiences replace it.
		{"tokens.allowedAudiences={billing}", "at '/tokens': additional properties 'allowedAudiences' not allowed"},
		{"tokens.defaultClientID=Not_A_Name", "at '/tokens/defaultClientID': 'Not_A_Name' does not match pattern"},
		{"clients.rotor.type=Secret", "at '/clients/rotor/type': value must be one of 'Public', 'Confidential'"},
		{"clients.rotor.grantTypes={implicit}", "at '/clients/rotor/grantTypes/0': value must be one of 'password', 'refresh_token', 'client_credentials', 'urn:ietf:params:oauth:grant-type:token-exchange'"},
		{"clients.rotor.audiences={rotor,rotor}", "at '/clients/rotor/audiences': items at 0 and 1 are equal"},
		{"clients.rotor.scopes={a b}", "at '/clients/rotor/scopes/0': 'a b' does not match pattern"},
		{"clients.rotor.tokenLifetimes.accessToken=20min", "at '/clients/rotor/tokenLifetimes/accessToken': '20min' does not match pattern"},
		{"clients.rotor.secretRef.nmae=x", "at '/clients/rotor/secretRef': additional properties 'nmae' not allowed"},
		{"clients.rotor.grant=password", "at '/clients/rotor': additional properties 'grant' not allowed"},
		{"clients.billing.type=Confidential", "at '/clients/billing': missing properties 'grantTypes', 'audiences'"},
		{"clients.Billing.type=Public", "invalid propertyName 'Billing'"},
	}
	for _, c := range cases {
		t.Run(c.set, func(t *testing.T) {
			g := NewWithT(t)
			_, err := helmTemplate(t, "rotor-system", "--set", c.set)
			g.Expect(err).To(MatchError(ContainSubstring("values don't meet the specifications of the schema")))
			g.Expect(err).To(MatchError(ContainSubstring(c.want)))
		})
	}

	t.Run("clients.rotor.audiences=[]", func(t *testing.T) {
		g := NewWithT(t)
		_, err := helmTemplate(t, "rotor-system", "--set-json", "clients.rotor.audiences=[]")
		g.Expect(err).To(MatchError(ContainSubstring("at '/clients/rotor/audiences': minItems: got 0, want 1")))
	})

	// Contradictions the schema cannot express fail in the templates.
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--set", "issuer.url=http://auth.example.com"}, "is plain http but tls.insecureHTTP is false"},
		{[]string{"--set", "ingress.enabled=true"}, "ingress.enabled needs issuer.url"},
		{[]string{"--set", "tls.certManager.enabled=true"}, "tls.certManager.issuerRef.name is required"},
		{[]string{"--set", "tls.certManager.enabled=true,tls.certManager.issuerRef.name=ca,tls.insecureHTTP=true"}, "contradict each other"},
		{[]string{"--set", "serviceAccount.create=false"}, "serviceAccount.name is required"},
		{[]string{"--set", "exchange.enabled=true"}, "exchange.enabled needs exchange.allow"},
		{[]string{"--set", "clients.rotor.type=Confidential,clients.rotor.secretRef.name=client-secret-rotor"},
			`tokens.defaultClientID "rotor" names a Confidential client: the client of requests without client_id must be Public`},
	} {
		t.Run(strings.Join(c.args[1:], " "), func(t *testing.T) {
			g := NewWithT(t)
			_, err := helmTemplate(t, "rotor-system", c.args...)
			g.Expect(err).To(MatchError(ContainSubstring(c.want)))
		})
	}
}

// normalizeRules sorts rules and their lists, so that two rule sets granting
// the same permissions compare equal.
func normalizeRules(rules []rbacv1.PolicyRule) []rbacv1.PolicyRule {
	out := make([]rbacv1.PolicyRule, 0, len(rules))
	for _, r := range rules {
		r = *r.DeepCopy()
		for _, l := range [][]string{r.APIGroups, r.Resources, r.Verbs, r.ResourceNames, r.NonResourceURLs} {
			sort.Strings(l)
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool {
		return strings.Join(out[i].APIGroups, ",")+"/"+strings.Join(out[i].Resources, ",") <
			strings.Join(out[j].APIGroups, ",")+"/"+strings.Join(out[j].Resources, ",")
	})
	return out
}

// generatedRBAC returns config/rbac/role.yaml's Role and ClusterRole rules.
func generatedRBAC(t testing.TB) (role, clusterRole []rbacv1.PolicyRule) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root(t), "config", "rbac", "role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	objs, err := decodeAll(string(data))
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		switch o.GetKind() {
		case "Role":
			role = fromUnstructured[rbacv1.Role](t, o).Rules
		case "ClusterRole":
			clusterRole = fromUnstructured[rbacv1.ClusterRole](t, o).Rules
		default:
			t.Fatalf("unexpected %s in config/rbac/role.yaml", o.GetKind())
		}
	}
	if len(role) == 0 {
		t.Fatal("config/rbac/role.yaml has no Role rules")
	}
	return role, clusterRole
}

func TestChartRoleMatchesGeneratedRole(t *testing.T) {
	g := NewWithT(t)
	generatedRole, generatedClusterRole := generatedRBAC(t)

	objs := mustRender(t, "auth")
	role := fromUnstructured[rbacv1.Role](t, only(t, objs, "Role"))
	g.Expect(role.Namespace).To(Equal("auth"))
	g.Expect(normalizeRules(role.Rules)).To(Equal(normalizeRules(generatedRole)),
		"charts/rotor/templates/rbac.yaml's Role rules differ from config/rbac/role.yaml (generated from the +kubebuilder:rbac markers): update the chart")

	binding := fromUnstructured[rbacv1.RoleBinding](t, only(t, objs, "RoleBinding"))
	g.Expect(binding.RoleRef).To(Equal(rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name}))
	g.Expect(binding.Subjects).To(Equal([]rbacv1.Subject{{Kind: "ServiceAccount", Name: "rotor", Namespace: "auth"}}))
	g.Expect(only(t, objs, "ServiceAccount").GetName()).To(Equal("rotor"))
	// By default metrics are served over HTTPS to callers the API server
	// authenticates and authorizes: config/rbac/role.yaml's ClusterRole
	// (TokenReview and SubjectAccessReview) bound to rotor, and a reader
	// role for the scraper.
	reviews := fromUnstructured[rbacv1.ClusterRole](t, named(t, objs, "ClusterRole", "auth-rotor-reviews"))
	g.Expect(normalizeRules(reviews.Rules)).To(Equal(normalizeRules(generatedClusterRole)),
		"the chart's ClusterRole rules differ from config/rbac/role.yaml's ClusterRole: update the chart")
	crb := fromUnstructured[rbacv1.ClusterRoleBinding](t, only(t, objs, "ClusterRoleBinding"))
	g.Expect(crb.RoleRef).To(Equal(rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: reviews.Name}))
	g.Expect(crb.Subjects).To(Equal([]rbacv1.Subject{{Kind: "ServiceAccount", Name: "rotor", Namespace: "auth"}}))
	reader := fromUnstructured[rbacv1.ClusterRole](t, named(t, objs, "ClusterRole", "auth-rotor-metrics-reader"))
	g.Expect(reader.Rules).To(Equal([]rbacv1.PolicyRule{{NonResourceURLs: []string{"/metrics"}, Verbs: []string{"get"}}}))
	g.Expect(ofKind(objs, "ClusterRole")).To(HaveLen(2))

	// Plain metrics: nothing cluster-wide without exchange or introspection.
	plain := mustRender(t, "auth", "--set", "metrics.secure=false")
	g.Expect(ofKind(plain, "ClusterRole")).To(BeEmpty(), "nothing cluster-wide without exchange, introspection or secure metrics")
	g.Expect(ofKind(plain, "ClusterRoleBinding")).To(BeEmpty())

	// With exchange, or with introspection, and plain metrics: create on
	// tokenreviews only, bound to the same ServiceAccount.
	for _, set := range []string{"exchange.enabled=true,exchange.allow={team-a/*}", "introspection.allow={*/*}"} {
		tokenReview := mustRender(t, "auth", "--set", "metrics.secure=false", "--set", set)
		cr := fromUnstructured[rbacv1.ClusterRole](t, only(t, tokenReview, "ClusterRole"))
		g.Expect(cr.Rules).To(Equal([]rbacv1.PolicyRule{{
			APIGroups: []string{"authentication.k8s.io"}, Resources: []string{"tokenreviews"}, Verbs: []string{"create"},
		}}))
		crb := fromUnstructured[rbacv1.ClusterRoleBinding](t, only(t, tokenReview, "ClusterRoleBinding"))
		g.Expect(crb.RoleRef).To(Equal(rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: cr.Name}))
		g.Expect(crb.Subjects).To(Equal([]rbacv1.Subject{{Kind: "ServiceAccount", Name: "rotor", Namespace: "auth"}}))
		g.Expect(cr.Name).To(Equal("auth-rotor-reviews"), "ClusterRole names must not collide between releases")
	}

	// No wildcard in any rule of any variant.
	for _, name := range []string{"default", "full", "insecure"} {
		for _, o := range mustRender(t, "auth", variantArgs(t, name)...) {
			if o.GetKind() != "Role" && o.GetKind() != "ClusterRole" {
				continue
			}
			for _, r := range fromUnstructured[rbacv1.ClusterRole](t, o).Rules {
				for _, l := range [][]string{r.APIGroups, r.Resources, r.Verbs} {
					g.Expect(l).NotTo(ContainElement("*"), "%s %s in %s", o.GetKind(), o.GetName(), name)
				}
			}
		}
	}
}

func TestChartCRDsMatchGenerated(t *testing.T) {
	g := NewWithT(t)
	bases := filepath.Join(root(t), "config", "crd", "bases")
	copies := filepath.Join(chartDir(t), "files", "crds")
	names := func(dir string) []string {
		entries, err := os.ReadDir(dir)
		g.Expect(err).NotTo(HaveOccurred())
		var ns []string
		for _, e := range entries {
			ns = append(ns, e.Name())
		}
		return ns
	}
	g.Expect(names(copies)).To(Equal(names(bases)), "charts/rotor/files/crds is stale: run 'make chart-crds'")
	for _, n := range names(bases) {
		want, err := os.ReadFile(filepath.Join(bases, n))
		g.Expect(err).NotTo(HaveOccurred())
		got, err := os.ReadFile(filepath.Join(copies, n))
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(bytes.Equal(got, want)).To(BeTrue(), "charts/rotor/files/crds/%s differs from config/crd/bases: run 'make chart-crds'", n)
	}

	// The rendered CRDs are the generated ones, plus labels and the keep policy.
	generated, err := crd.Definitions()
	g.Expect(err).NotTo(HaveOccurred())
	rendered := ofKind(mustRender(t, "auth"), "CustomResourceDefinition")
	g.Expect(rendered).To(HaveLen(len(generated)))
	for i, gen := range generated {
		got := fromUnstructured[apiextensionsv1.CustomResourceDefinition](t, rendered[i])
		g.Expect(got.Name).To(Equal(gen.Name))
		g.Expect(got.Spec).To(Equal(gen.Spec), "rendered CRD %s differs from config/crd/bases", gen.Name)
		for k, v := range gen.Annotations {
			g.Expect(got.Annotations).To(HaveKeyWithValue(k, v))
		}
		g.Expect(got.Annotations).To(HaveKeyWithValue("helm.sh/resource-policy", "keep"))
		g.Expect(got.Labels).To(HaveKeyWithValue("app.kubernetes.io/managed-by", "Helm"))
	}

	notKept := ofKind(mustRender(t, "auth", "--set", "crds.keep=false"), "CustomResourceDefinition")
	g.Expect(notKept).To(HaveLen(len(generated)))
	g.Expect(notKept[0].GetAnnotations()).NotTo(HaveKey("helm.sh/resource-policy"))
	g.Expect(ofKind(mustRender(t, "auth", "--set", "crds.enabled=false"), "CustomResourceDefinition")).To(BeEmpty())
}

// serveFlags is `rotor serve`'s flag set, as main.go builds it.
func serveFlags() (*flag.FlagSet, *server.Options) {
	fs := flag.NewFlagSet("rotor serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	o := server.DefaultOptions()
	o.AddFlags(fs)
	zo := zap.Options{}
	zo.BindFlags(fs)
	return fs, &o
}

// flagsNotFromValues are `rotor serve` flags the chart deliberately never sets.
var flagsNotFromValues = map[string]string{
	"zap-devel": "development logging defaults; the chart sets each zap flag explicitly",
}

// parseServeArgs parses a container's args with rotor's own flag set.
func parseServeArgs(t testing.TB, args []string, namespace string) (*server.Options, map[string]bool) {
	t.Helper()
	if len(args) == 0 || args[0] != "serve" {
		t.Fatalf("container args must start with serve: %q", args)
	}
	fs, o := serveFlags()
	var expanded []string
	for _, a := range args[1:] {
		expanded = append(expanded, strings.ReplaceAll(a, "$(POD_NAMESPACE)", namespace))
	}
	if err := fs.Parse(expanded); err != nil {
		t.Fatalf("rotor serve rejects the chart's args %q: %v", expanded, err)
	}
	if fs.NArg() != 0 {
		t.Fatalf("stray arguments %q", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return o, set
}

func rotorContainer(t testing.TB, d *appsv1.Deployment) corev1.Container {
	t.Helper()
	for _, c := range d.Spec.Template.Spec.Containers {
		if c.Name == "rotor" {
			return c
		}
	}
	t.Fatalf("no rotor container in %s", d.Name)
	return corev1.Container{}
}

func TestChartSetsEveryRotorServeFlag(t *testing.T) {
	g := NewWithT(t)
	fs, _ := serveFlags()
	all := map[string]bool{}
	fs.VisitAll(func(f *flag.Flag) { all[f.Name] = true })
	g.Expect(all).To(HaveKey("issuer-url"))

	setAnywhere := map[string]bool{}
	opts := map[string]*server.Options{}
	for _, name := range []string{"default", "full", "insecure"} {
		d := fromUnstructured[appsv1.Deployment](t, only(t, mustRender(t, "auth", variantArgs(t, name)...), "Deployment"))
		o, set := parseServeArgs(t, rotorContainer(t, d).Args, "auth")
		g.Expect(o.Validate()).To(Succeed(), "rotor rejects the %s values", name)
		for f := range set {
			setAnywhere[f] = true
		}
		opts[name] = o
	}
	var missing []string
	for f := range all {
		if !setAnywhere[f] && flagsNotFromValues[f] == "" {
			missing = append(missing, f)
		}
	}
	slices.Sort(missing)
	g.Expect(missing).To(BeEmpty(), "rotor serve flags that no chart value sets: add them to values.yaml, values.schema.json and deployment.yaml")

	// The chart's defaults are rotor's defaults.
	want := server.DefaultOptions()
	want.Namespace = "auth"
	want.IssuerURL = "https://rotor.auth.svc"
	want.TLSCertFile, want.TLSKeyFile = "/etc/rotor/tls/tls.crt", "/etc/rotor/tls/tls.key"
	// Deliberately off in the chart: introspection needs a cluster-wide
	// permission (TokenReview), which the chart only grants when asked.
	want.IntrospectionAllow = nil
	// Deliberately set: the chart creates the Public client "rotor" (values
	// clients), so that requests without client_id work as they did.
	want.DefaultClientID = "rotor"
	g.Expect(*opts["default"]).To(Equal(want))

	// Every non-default value reaches its flag.
	full := *opts["full"]
	g.Expect(full.IssuerURL).To(Equal("https://auth.example.com"))
	g.Expect(full.ListenAddress).To(Equal(":9443"))
	g.Expect(full.AccessTokenTTL).To(Equal(10 * time.Minute))
	g.Expect(full.RefreshTokenTTL).To(Equal(72 * time.Hour))
	g.Expect(full.SessionMaxLifetime).To(Equal(240 * time.Hour))
	g.Expect(full.RefreshReuseGrace).To(Equal(time.Duration(0)))
	g.Expect(full.Audience).To(Equal("api.example.com"))
	g.Expect(full.DefaultClientID).To(Equal("cli"))
	g.Expect(full.ClockSkew).To(Equal(30 * time.Second))
	g.Expect(full.SessionCacheSize).To(Equal(50000))
	g.Expect(full.RevokedRetention).To(Equal(30 * time.Minute))
	g.Expect(full.MaxSessionsPerSubject).To(Equal(20))
	g.Expect(full.SessionsPerSubjectBurst).To(Equal(10))
	g.Expect(full.SessionsPerSubjectPerMinute).To(Equal(2.5))
	g.Expect(full.ServiceAccountAudience).To(Equal("rotor.example.com"))
	g.Expect([]string(full.TokenExchangeAllow)).To(Equal([]string{"team-a/*", "ci/builder"}))
	g.Expect([]string(full.IntrospectionAllow)).To(Equal([]string{"*/api-gateway"}))
	g.Expect(full.PasswordGrant).To(BeFalse())
	g.Expect(full.LoginFailuresPerMinute).To(Equal(2.5))
	g.Expect(full.LoginFailureBurst).To(Equal(5))
	g.Expect(full.UnauthenticatedBurst).To(Equal(40))
	g.Expect(full.UnauthenticatedPerSecond).To(Equal(2.5))
	g.Expect([]string(full.TrustedProxies)).To(Equal([]string{"10.0.0.0/8", "fd00::/8"}))
	g.Expect(full.KeyAlgorithm).To(Equal("RS256"))
	g.Expect(full.KeyRotationPeriod).To(Equal(12 * time.Hour))
	g.Expect(full.KeyPrepublish).To(Equal(2 * time.Hour))
	g.Expect(full.JWKSMaxAge).To(Equal(5 * time.Minute))
	g.Expect(full.APIQPS).To(Equal(100.5))
	g.Expect(full.APIBurst).To(Equal(200))
	g.Expect(full.APITimeout).To(Equal(3 * time.Second))
	g.Expect(full.ProbeAddress).To(Equal(":9081"))
	g.Expect(full.MetricsAddress).To(Equal(":9091"))
	g.Expect(full.MetricsSecure).To(BeFalse())

	insecure := *opts["insecure"]
	g.Expect(insecure.InsecureHTTP).To(BeTrue())
	g.Expect(insecure.IssuerURL).To(Equal("http://rotor.auth.svc"))
	g.Expect(insecure.TLSCertFile).To(BeEmpty())
	g.Expect(insecure.MetricsAddress).To(Equal("0"))
	g.Expect([]string(insecure.IntrospectionAllow)).To(Equal([]string{"*/*"}))
	g.Expect(insecure.TokenExchangeAllow).To(BeEmpty())

	// The kustomize Deployment passes rotor's flag parsing and validation too.
	out, _, err := run(t, nil, kubectlBin(t), "kustomize", filepath.Join(root(t), "config", "default"))
	g.Expect(err).NotTo(HaveOccurred())
	objs, err := decodeAll(out)
	g.Expect(err).NotTo(HaveOccurred())
	kd := fromUnstructured[appsv1.Deployment](t, only(t, objs, "Deployment"))
	ko, _ := parseServeArgs(t, rotorContainer(t, kd).Args, "rotor-system")
	g.Expect(ko.Validate()).To(Succeed())
	g.Expect(ko.IssuerURL).To(Equal("https://rotor.rotor-system.svc"))
}

func TestChartDeploymentIsHardenedAndHighlyAvailable(t *testing.T) {
	g := NewWithT(t)
	objs := mustRender(t, "auth")
	d := fromUnstructured[appsv1.Deployment](t, only(t, objs, "Deployment"))
	selector := map[string]string{"app.kubernetes.io/name": "rotor", "app.kubernetes.io/instance": "rotor"}

	g.Expect(*d.Spec.Replicas).To(Equal(int32(2)))
	g.Expect(d.Spec.Selector.MatchLabels).To(Equal(selector))
	pod := d.Spec.Template.Spec
	g.Expect(d.Spec.Template.Labels).To(HaveKeyWithValue("app.kubernetes.io/name", "rotor"))
	g.Expect(pod.ServiceAccountName).To(Equal("rotor"))
	g.Expect(*pod.SecurityContext.RunAsNonRoot).To(BeTrue())
	g.Expect(pod.SecurityContext.SeccompProfile.Type).To(Equal(corev1.SeccompProfileTypeRuntimeDefault))

	c := rotorContainer(t, d)
	sc := c.SecurityContext
	g.Expect(*sc.RunAsNonRoot).To(BeTrue())
	g.Expect(*sc.ReadOnlyRootFilesystem).To(BeTrue())
	g.Expect(*sc.AllowPrivilegeEscalation).To(BeFalse())
	g.Expect(sc.Capabilities.Drop).To(Equal([]corev1.Capability{"ALL"}))
	g.Expect(sc.Capabilities.Add).To(BeEmpty())

	g.Expect(c.LivenessProbe.HTTPGet.Path).To(Equal("/healthz"))
	g.Expect(c.LivenessProbe.HTTPGet.Port.String()).To(Equal("health"))
	g.Expect(c.ReadinessProbe.HTTPGet.Path).To(Equal("/readyz"))
	g.Expect(c.ReadinessProbe.HTTPGet.Port.String()).To(Equal("health"))
	g.Expect(c.Ports).To(ContainElement(corev1.ContainerPort{Name: "health", ContainerPort: 8081, Protocol: corev1.ProtocolTCP}))
	g.Expect(c.Resources.Requests.Cpu().String()).To(Equal("100m"))
	g.Expect(c.Resources.Limits.Memory().String()).To(Equal("256Mi"))

	g.Expect(c.Env).To(ContainElement(corev1.EnvVar{Name: "POD_NAMESPACE", ValueFrom: &corev1.EnvVarSource{
		FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}}))

	// The TLS Secret is a whole-directory mount (no subPath), which the
	// kubelet updates in place; the reloader depends on that.
	g.Expect(c.VolumeMounts).To(Equal([]corev1.VolumeMount{{Name: "tls", MountPath: "/etc/rotor/tls", ReadOnly: true}}))
	g.Expect(pod.Volumes).To(HaveLen(1))
	g.Expect(pod.Volumes[0].Secret.SecretName).To(Equal("rotor-tls"))

	g.Expect(pod.TopologySpreadConstraints).To(HaveLen(2))
	for _, tsc := range pod.TopologySpreadConstraints {
		g.Expect(tsc.LabelSelector.MatchLabels).To(Equal(selector))
	}
	g.Expect(pod.TopologySpreadConstraints[0].TopologyKey).To(Equal("topology.kubernetes.io/zone"))
	g.Expect(pod.TopologySpreadConstraints[1].TopologyKey).To(Equal("kubernetes.io/hostname"))

	pdb := fromUnstructured[policyv1.PodDisruptionBudget](t, only(t, objs, "PodDisruptionBudget"))
	g.Expect(pdb.Spec.MaxUnavailable.IntValue()).To(Equal(1))
	g.Expect(pdb.Spec.MinAvailable).To(BeNil())
	g.Expect(pdb.Spec.Selector.MatchLabels).To(Equal(selector))

	svcs := ofKind(objs, "Service")
	g.Expect(kinds(svcs)).To(Equal([]string{"Service/rotor", "Service/rotor-metrics"}))
	issuerSvc := fromUnstructured[corev1.Service](t, svcs[0])
	g.Expect(issuerSvc.Spec.Selector).To(Equal(selector))
	g.Expect(issuerSvc.Spec.Ports).To(HaveLen(1))
	g.Expect(issuerSvc.Spec.Ports[0].Port).To(Equal(int32(443)))
	g.Expect(issuerSvc.Spec.Ports[0].TargetPort.String()).To(Equal("https"))

	// Optional objects are off by default.
	for _, kind := range []string{"Ingress", "NetworkPolicy", "ServiceMonitor", "Certificate", "ResourceQuota"} {
		g.Expect(ofKind(objs, kind)).To(BeEmpty(), kind)
	}
	// The helm test hook checks discovery through the Service, as a client of the issuer URL would.
	hook := only(t, objs, "Pod")
	g.Expect(hook.GetAnnotations()).To(HaveKeyWithValue("helm.sh/hook", "test"))
	g.Expect(labels.SelectorFromSet(selector).Matches(labels.Set(hook.GetLabels()))).To(BeFalse(),
		"the Services and the PodDisruptionBudget must not select the test Pod")
	script := fromUnstructured[corev1.Pod](t, hook).Spec.Containers[0].Command[2]
	g.Expect(script).To(ContainSubstring(`--connect-to "rotor.auth.svc:443:rotor.auth.svc:443"`))
	g.Expect(script).To(ContainSubstring(`"$base/.well-known/openid-configuration"`))
}

// The ResourceQuota on sessions: the cluster's last line, off by default.
func TestChartSessionQuota(t *testing.T) {
	g := NewWithT(t)
	g.Expect(ofKind(mustRender(t, "auth"), "ResourceQuota")).To(BeEmpty())
	g.Expect(ofKind(mustRender(t, "auth", "--set", "sessions.quota=0"), "ResourceQuota")).To(BeEmpty())

	for set, want := range map[string]int64{
		"sessions.quota=5000":    5000,
		"sessions.quota=2000000": 2000000,
	} {
		u := only(t, mustRender(t, "auth", "--set", set), "ResourceQuota")
		raw, _, _ := unstructured.NestedString(u.Object, "spec", "hard", "count/refreshtokens.identity.rotor.dev")
		g.Expect(raw).To(Equal(fmt.Sprint(want)), "written as an integer, not as 2e+06")
		q := fromUnstructured[corev1.ResourceQuota](t, u)
		g.Expect(q.Name).To(Equal("rotor-sessions"))
		g.Expect(q.Namespace).To(Equal("auth"))
		g.Expect(q.Spec.Hard).To(HaveLen(1))
		hard := q.Spec.Hard[corev1.ResourceName("count/refreshtokens.identity.rotor.dev")]
		g.Expect(hard.Value()).To(Equal(want), set)
		g.Expect(q.Spec.Scopes).To(BeEmpty())
		g.Expect(q.Labels).To(HaveKeyWithValue("app.kubernetes.io/name", "rotor"))
	}
	// The quota counts exactly the resource the CRD serves.
	crd := fromUnstructured[apiextensionsv1.CustomResourceDefinition](t, named(t, mustRender(t, "auth"), "CustomResourceDefinition", "refreshtokens.identity.rotor.dev"))
	g.Expect("count/" + crd.Spec.Names.Plural + "." + crd.Spec.Group).To(Equal("count/refreshtokens.identity.rotor.dev"))
	full := fromUnstructured[corev1.ResourceQuota](t, only(t, mustRender(t, "auth", variantArgs(t, "full")...), "ResourceQuota"))
	g.Expect(full.Name).To(Equal("issuer-sessions"))
}

// oauthClientsServed is the --api-versions entry that `helm install` and
// `helm upgrade` find in discovery once the OAuthClient CRD is served.
const oauthClientsServed = "identity.rotor.dev/v1alpha1/OAuthClient"

// releaseClients is the Deployment's record of the clients the release
// manages as ordinary objects.
func releaseClients(t testing.TB, objs []*unstructured.Unstructured) string {
	t.Helper()
	v, ok := only(t, objs, "Deployment").GetAnnotations()["identity.rotor.dev/release-clients"]
	if !ok {
		t.Fatal("the Deployment has no identity.rotor.dev/release-clients annotation")
	}
	return v
}

func TestChartClients(t *testing.T) {
	g := NewWithT(t)
	rotorSpec := identityv1alpha1.OAuthClientSpec{
		Type:       identityv1alpha1.ClientTypePublic,
		GrantTypes: []identityv1alpha1.GrantType{identityv1alpha1.GrantPassword, identityv1alpha1.GrantRefreshToken},
		Audiences:  []string{"rotor"},
	}

	// Once the API server serves OAuthClients (every upgrade, and installs
	// into a cluster that has the CRDs), the clients are ordinary objects of
	// the release: helm updates them, deletes the ones removed, and deletes
	// them all on uninstall.
	objs := mustRender(t, "auth", "--api-versions", oauthClientsServed)
	c := fromUnstructured[identityv1alpha1.OAuthClient](t, only(t, objs, "OAuthClient"))
	g.Expect(c.Name).To(Equal("rotor"))
	g.Expect(c.Namespace).To(Equal("auth"))
	g.Expect(c.Spec).To(Equal(rotorSpec))
	g.Expect(c.Annotations).To(BeEmpty(), "not a hook")
	g.Expect(c.Labels).To(HaveKeyWithValue("app.kubernetes.io/instance", "rotor"))
	g.Expect(c.Labels).To(HaveKeyWithValue("app.kubernetes.io/managed-by", "Helm"))
	g.Expect(releaseClients(t, objs)).To(Equal("rotor"))
	d := fromUnstructured[appsv1.Deployment](t, only(t, objs, "Deployment"))
	o, _ := parseServeArgs(t, rotorContainer(t, d).Args, "auth")
	g.Expect(o.DefaultClientID).To(Equal(c.Name), "requests without client_id are made by the chart's client")

	// When the release itself creates the CRD (a first install), they are
	// post-install hooks (built only when they run, after the CRD), owned by
	// the release so that the next upgrade adopts them; none is recorded as
	// ordinary yet.
	objs = mustRender(t, "auth")
	hook := only(t, objs, "OAuthClient")
	g.Expect(hook.GetAnnotations()).To(Equal(map[string]string{
		"helm.sh/hook":                   "post-install,post-upgrade,post-rollback",
		"helm.sh/hook-delete-policy":     "before-hook-creation",
		"meta.helm.sh/release-name":      "rotor",
		"meta.helm.sh/release-namespace": "auth",
	}))
	g.Expect(hook.GetLabels()).To(Equal(c.Labels))
	g.Expect(fromUnstructured[identityv1alpha1.OAuthClient](t, hook).Spec).To(Equal(rotorSpec))
	g.Expect(releaseClients(t, objs)).To(BeEmpty())

	// Every field of a spec reaches the object; null removes the default client.
	full := mustRender(t, "auth", append(variantArgs(t, "full"), "--api-versions", oauthClientsServed)...)
	clients := ofKind(full, "OAuthClient")
	g.Expect(kinds(clients)).To(Equal([]string{"OAuthClient/billing", "OAuthClient/cli"}))
	g.Expect(releaseClients(t, full)).To(Equal("billing,cli"))
	billing := fromUnstructured[identityv1alpha1.OAuthClient](t, clients[0])
	g.Expect(billing.Spec).To(Equal(identityv1alpha1.OAuthClientSpec{
		Type:       identityv1alpha1.ClientTypeConfidential,
		GrantTypes: []identityv1alpha1.GrantType{identityv1alpha1.GrantClientCredentials},
		Audiences:  []string{"billing"},
		SecretRef:  &identityv1alpha1.ClientSecretReference{Name: "client-secret-billing"},
	}))
	g.Expect(billing.Namespace).To(Equal("auth"))
	g.Expect(billing.Labels).To(HaveKeyWithValue("app.kubernetes.io/instance", "rotor"))
	cli := fromUnstructured[identityv1alpha1.OAuthClient](t, clients[1])
	g.Expect(cli.Spec).To(Equal(identityv1alpha1.OAuthClientSpec{
		Type:       identityv1alpha1.ClientTypePublic,
		GrantTypes: []identityv1alpha1.GrantType{identityv1alpha1.GrantTokenExchange, identityv1alpha1.GrantRefreshToken},
		Audiences:  []string{"api.example.com", "reports"},
		Scopes:     []string{"openid", "reports.read"},
		TokenLifetimes: &identityv1alpha1.TokenLifetimes{
			AccessToken:  &metav1.Duration{Duration: 5 * time.Minute},
			RefreshToken: &metav1.Duration{Duration: 24 * time.Hour},
			SessionMax:   &metav1.Duration{Duration: 120 * time.Hour},
			ReuseGrace:   &metav1.Duration{Duration: time.Second},
		},
	}))

	// No clients: client_id is mandatory. An empty map would not do: helm
	// merges it with the default one.
	none := mustRender(t, "auth", "--set", "clients=null", "--set", "tokens.defaultClientID=", "--api-versions", oauthClientsServed)
	g.Expect(ofKind(none, "OAuthClient")).To(BeEmpty())
	g.Expect(releaseClients(t, none)).To(BeEmpty())
	d = fromUnstructured[appsv1.Deployment](t, only(t, none, "Deployment"))
	o, _ = parseServeArgs(t, rotorContainer(t, d).Args, "auth")
	g.Expect(o.DefaultClientID).To(BeEmpty())
	g.Expect(o.Validate()).To(Succeed())
	g.Expect(ofKind(mustRender(t, "auth", "--set-json", "clients={}"), "OAuthClient")).To(HaveLen(1))
}
