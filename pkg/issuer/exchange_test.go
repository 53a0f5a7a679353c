package issuer_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	. "github.com/onsi/gomega"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	identityv1alpha1 "rotor.dev/rotor/api/v1alpha1"
)

// serviceAccountToken is what `kubectl create token NAME --audience AUD` does.
func serviceAccountToken(t *testing.T, ns, name, audience string) string {
	t.Helper()
	sa := serviceAccount(t, ns, name)
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		Audiences: []string{audience}, ExpirationSeconds: ptr.To[int64](600),
	}}
	if err := env.Client.SubResource("token").Create(context.Background(), sa, tr); err != nil {
		t.Fatalf("requesting token: %v", err)
	}
	return tr.Status.Token
}

func serviceAccount(t *testing.T, ns, name string) *corev1.ServiceAccount {
	t.Helper()
	sa := &corev1.ServiceAccount{}
	err := env.Client.Get(context.Background(), keyOf(ns, name), sa)
	if err == nil {
		return sa
	}
	sa = &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	if err := env.Client.Create(context.Background(), sa); err != nil {
		t.Fatal(err)
	}
	return sa
}

// forgedServiceAccountToken signs a token with the API server's own
// ServiceAccount key, for what TokenRequest will not issue (an expired one).
func forgedServiceAccountToken(t *testing.T, sa *corev1.ServiceAccount, audience string, iat, exp time.Time) string {
	t.Helper()
	raw, err := os.ReadFile(env.ControlPlane.ServiceAccountSigningKeyFile())
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(raw)
	var key crypto.Signer
	if k, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
		key = k
	} else {
		k8, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			t.Fatalf("parsing ServiceAccount key: %v", err)
		}
		key = k8.(crypto.Signer)
	}
	claims := jwt.MapClaims{
		"iss": env.ControlPlane.ServiceAccountIssuer(),
		"sub": "system:serviceaccount:" + sa.Namespace + ":" + sa.Name,
		"aud": []string{audience},
		"iat": iat.Unix(), "nbf": iat.Unix(), "exp": exp.Unix(),
		"kubernetes.io": map[string]any{
			"namespace":      sa.Namespace,
			"serviceaccount": map[string]any{"name": sa.Name, "uid": string(sa.UID)},
		},
	}
	var method jwt.SigningMethod = jwt.SigningMethodRS256
	if _, ok := key.(*ecdsa.PrivateKey); ok {
		method = jwt.SigningMethodES256
	}
	tok, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func exchange(t *testing.T, r *replica, subjectToken string) *tokenReply {
	t.Helper()
	return post(t, r.URL+"/token", url.Values{
		"grant_type":         {"urn:ietf:params:oauth:grant-type:token-exchange"},
		"subject_token":      {subjectToken},
		"subject_token_type": {"urn:ietf:params:oauth:token-type:jwt"},
	})
}

func allowExchange(patterns ...string) replicaOption {
	return func(o *replicaOptions) { o.TokenExchangeAllow = patterns }
}

func TestServiceAccountTokenExchange(t *testing.T) {
	g := NewWithT(t)
	ns := env.Namespace(t)
	r := startReplica(t, ns, newClock(), allowExchange(ns+"/worker"))

	t.Run("a token for rotor's audience is exchanged for an access and a refresh token", func(t *testing.T) {
		g := NewWithT(t)
		reply := exchange(t, r, serviceAccountToken(t, ns, "worker", "rotor"))
		g.Expect(reply.Status).To(Equal(http.StatusOK), "%+v", reply)
		g.Expect(reply.RefreshToken).NotTo(BeEmpty())
		status, _, claims := r.userinfo(t, reply.AccessToken)
		g.Expect(status).To(Equal(http.StatusOK))
		g.Expect(claims).To(HaveKeyWithValue("sub", "system:serviceaccount:"+ns+":worker"))
		g.Expect(claims).To(HaveKeyWithValue("groups",
			ContainElements("system:serviceaccounts", "system:serviceaccounts:"+ns)))

		var session *identityv1alpha1.RefreshToken
		for _, s := range sessionsOf(t, ns) {
			if s.Name == sessionName(reply.RefreshToken) {
				session = &s
			}
		}
		g.Expect(session).NotTo(BeNil())
		g.Expect(session.Spec.Session.Method).To(Equal(identityv1alpha1.AuthMethodServiceAccount))
		r.Clock.Step(time.Minute)
		g.Expect(r.refresh(t, reply.RefreshToken).Status).To(Equal(http.StatusOK),
			"the session refreshes like a password login")
	})

	before := len(sessionsOf(t, ns))
	sa := serviceAccount(t, ns, "worker")
	now := time.Now()
	for _, tt := range []struct {
		name  string
		token func() string
		code  string
	}{
		{"a token minted for another audience is refused", func() string {
			return serviceAccountToken(t, ns, "worker", "someone-else")
		}, "invalid_grant"},
		{"an expired token is refused", func() string {
			return forgedServiceAccountToken(t, sa, "rotor", now.Add(-2*time.Hour), now.Add(-time.Hour))
		}, "invalid_grant"},
		{"a ServiceAccount outside the policy is refused", func() string {
			return serviceAccountToken(t, ns, "intruder", "rotor")
		}, "unauthorized_client"},
		{"garbage is refused", func() string { return "not-a-jwt" }, "invalid_grant"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			reply := exchange(t, r, tt.token())
			g.Expect(reply.Status).To(Equal(http.StatusBadRequest))
			g.Expect(reply.Error).To(Equal(tt.code))
		})
	}
	g.Expect(sessionsOf(t, ns)).To(HaveLen(before), "refused exchanges write nothing")

	t.Run("the forging helper itself produces tokens the API server accepts", func(t *testing.T) {
		// Otherwise the expired case above would prove nothing.
		reply := exchange(t, r, forgedServiceAccountToken(t, sa, "rotor", now.Add(-time.Minute), now.Add(time.Hour)))
		NewWithT(t).Expect(reply.Status).To(Equal(http.StatusOK), "%+v", reply)
	})
}

func TestTokenExchangeIsOffByDefault(t *testing.T) {
	g := NewWithT(t)
	ns := env.Namespace(t)
	r := startReplica(t, ns, newClock())
	reply := exchange(t, r, serviceAccountToken(t, ns, "worker", "rotor"))
	g.Expect(reply.Status).To(Equal(http.StatusBadRequest))
	g.Expect(reply.Error).To(Equal("unsupported_grant_type"))
}

func introspect(t *testing.T, r *replica, caller, token string) (int, map[string]any) {
	t.Helper()
	form := strings.NewReader(url.Values{"token": {token}}.Encode())
	req, _ := http.NewRequest(http.MethodPost, r.URL+"/introspect", form)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if caller != "" {
		req.Header.Set("Authorization", "Bearer "+caller)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body := map[string]any{}
	_ = jsonDecode(resp.Body, &body)
	return resp.StatusCode, body
}

func TestIntrospection(t *testing.T) {
	g := NewWithT(t)
	ns := env.Namespace(t)
	createAccount(t, ns, "lou", "pw-lou-12345")
	r := startReplica(t, ns, newClock(), func(o *replicaOptions) { o.IntrospectionAllow = []string{ns + "/api"} })
	caller := serviceAccountToken(t, ns, "api", "rotor")
	login := r.login(t, "lou", "pw-lou-12345")

	status, body := introspect(t, r, caller, login.AccessToken)
	g.Expect(status).To(Equal(http.StatusOK))
	g.Expect(body).To(HaveKeyWithValue("active", true))
	g.Expect(body).To(HaveKeyWithValue("sub", "lou"))
	g.Expect(body).To(HaveKeyWithValue("client_id", "rotor"))
	g.Expect(body).To(HaveKey("exp"))

	status, body = introspect(t, r, caller, login.RefreshToken)
	g.Expect(status).To(Equal(http.StatusOK))
	g.Expect(body).To(HaveKeyWithValue("active", true))
	g.Expect(body).To(HaveKeyWithValue("token_type", "refresh_token"))
	g.Expect(body).To(HaveKeyWithValue("sub", "lou"))

	for _, tt := range []struct {
		name  string
		token string
	}{
		{"an unknown refresh token", "rt-aaaaaaaaaaaaaaaaaaaaaaaaaa.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"},
		{"garbage", "garbage"},
	} {
		status, body := introspect(t, r, caller, tt.token)
		g.Expect(status).To(Equal(http.StatusOK), tt.name)
		g.Expect(body).To(Equal(map[string]any{"active": false}), tt.name)
	}

	g.Expect(post(t, r.URL+"/revoke", url.Values{"token": {login.RefreshToken}}).Status).To(Equal(http.StatusOK))
	_, body = introspect(t, r, caller, login.RefreshToken)
	g.Expect(body).To(Equal(map[string]any{"active": false}), "a revoked refresh token")

	r.Clock.Step(25 * time.Minute)
	_, body = introspect(t, r, caller, login.AccessToken)
	g.Expect(body).To(Equal(map[string]any{"active": false}), "an expired access token")

	status, _ = introspect(t, r, "", login.AccessToken)
	g.Expect(status).To(Equal(http.StatusUnauthorized), "an unauthenticated caller")
	status, _ = introspect(t, r, "forged", login.AccessToken)
	g.Expect(status).To(Equal(http.StatusUnauthorized), "a caller with an invalid token")
	status, _ = introspect(t, r, serviceAccountToken(t, ns, "other", "rotor"), login.AccessToken)
	g.Expect(status).To(Equal(http.StatusForbidden), "a caller outside the policy")
}

// A workload session used to refresh for 30 days after its ServiceAccount
// was deleted, although the token it was exchanged for lived minutes.
func TestAWorkloadSessionEndsWhenTheExchangedTokenDoes(t *testing.T) {
	g := NewWithT(t)
	ns := env.Namespace(t)
	r := startReplica(t, ns, newClock(), allowExchange(ns+"/worker"))
	subject := serviceAccountToken(t, ns, "worker", "rotor") // expires in 600s
	var claims jwt.RegisteredClaims
	_, _, err := jwt.NewParser().ParseUnverified(subject, &claims)
	g.Expect(err).NotTo(HaveOccurred())
	reply := exchange(t, r, subject)
	g.Expect(reply.Status).To(Equal(http.StatusOK), "%+v", reply)
	rt, err := session(t, ns, reply.RefreshToken)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(rt.Spec.Session.AbsoluteExpiresAt.Time).To(BeTemporally("==", claims.ExpiresAt.Time),
		"not the 30 days of --session-max-lifetime: a deleted ServiceAccount cannot refresh past its token")

	clock := r.Clock
	clock.SetTime(claims.ExpiresAt.Add(-time.Minute))
	next := r.refresh(t, reply.RefreshToken)
	g.Expect(next.Status).To(Equal(http.StatusOK), "before the token's expiry")
	clock.SetTime(claims.ExpiresAt.Time)
	g.Expect(r.refresh(t, next.RefreshToken).Error).To(Equal("invalid_grant"), "at the token's expiry: exchange again")
}

// The longest ServiceAccount subject, system:serviceaccount: with a
// 63-character namespace and a 253-character name (339 characters), used to
// end in a 500: the CRD allowed 316.
func TestTheLongestServiceAccountNamesExchange(t *testing.T) {
	g := NewWithT(t)
	ns := strings.Repeat("n", 58) + "-" + strings.ToLower(rand.Text()[:4])
	g.Expect(env.Client.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})).To(Succeed())
	name := strings.Repeat("s", 63) + "." + strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 61)
	g.Expect(len(ns)).To(Equal(63))
	g.Expect(len(name)).To(Equal(253))
	r := startReplica(t, ns, newClock(), allowExchange(ns+"/*"))
	reply := exchange(t, r, serviceAccountToken(t, ns, name, "rotor"))
	g.Expect(reply.Status).To(Equal(http.StatusOK), "%+v", reply)
	rt, err := session(t, ns, reply.RefreshToken)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(rt.Spec.Subject).To(HaveLen(339))
	r.Clock.Step(time.Minute)
	g.Expect(r.refresh(t, reply.RefreshToken).Status).To(Equal(http.StatusOK))
}
