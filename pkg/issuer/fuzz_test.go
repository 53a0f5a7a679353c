package issuer_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/go-logr/logr"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	identityv1alpha1 "rotor.dev/rotor/api/v1alpha1"
	"rotor.dev/rotor/pkg/accounts"
	"rotor.dev/rotor/pkg/issuer"
	"rotor.dev/rotor/pkg/keys"
	rotorscheme "rotor.dev/rotor/pkg/scheme"
	"rotor.dev/rotor/pkg/sessions"
	"rotor.dev/rotor/pkg/tokens"
	"rotor.dev/rotor/pkg/workload"
)

// The one account, ServiceAccount token and introspection caller the fuzz
// issuer knows.
const (
	fuzzUsername  = "alice"
	fuzzPassword  = "pw-alice-fuzz"
	fuzzSAToken   = "sa-token-apps-api"
	fuzzCaller    = "sa-token-apps-introspector"
	fuzzIssuerURL = "https://issuer.fuzz.test"
)

// fuzzAccounts accepts alice's password and nothing else.
type fuzzAccounts struct{}

func (fuzzAccounts) Authenticate(_ context.Context, username, password, _ string) (accounts.Account, error) {
	if username == fuzzUsername && password == fuzzPassword {
		return accounts.Account{Username: fuzzUsername, Groups: []string{"dev"}}, nil
	}
	return accounts.Account{}, accounts.ErrInvalidCredentials
}

func (fuzzAccounts) Lookup(username string) (accounts.Account, bool) {
	if username == fuzzUsername {
		return accounts.Account{Username: fuzzUsername, Groups: []string{"dev"}}, true
	}
	return accounts.Account{}, false
}

// fuzzReviewer knows one ServiceAccount token per identity.
type fuzzReviewer map[string]workload.Identity

func (r fuzzReviewer) Review(_ context.Context, token string) (workload.Identity, error) {
	if id, ok := r[token]; ok {
		return id, nil
	}
	return workload.Identity{}, workload.ErrNotAuthenticated
}

// fuzzSessionClient is an in-memory API server for RefreshTokens that
// validates spec.clientID the way the CRD schema does (1 to 253
// characters), so the fuzz target sees what a real API server would refuse.
func fuzzSessionClient() client.Client {
	return fake.NewClientBuilder().WithScheme(rotorscheme.Scheme).WithInterceptorFuncs(interceptor.Funcs{
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			if err := validateSession(obj); err != nil {
				return err
			}
			return c.Create(ctx, obj, opts...)
		},
		Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			if err := validateSession(obj); err != nil {
				return err
			}
			return c.Update(ctx, obj, opts...)
		},
	}).Build()
}

func validateSession(obj client.Object) error {
	rt, ok := obj.(*identityv1alpha1.RefreshToken)
	if !ok {
		return nil
	}
	if n := utf8.RuneCountInString(rt.Spec.ClientID); n < 1 || n > 253 {
		return apierrors.NewInvalid(schema.GroupKind{Group: "identity.rotor.dev", Kind: "RefreshToken"}, rt.Name,
			field.ErrorList{field.TooLong(field.NewPath("spec", "clientID"), "", 253)})
	}
	return nil
}

// fuzzKeySet is a key set with one active ES256 key, made once per process.
func fuzzKeySet(tb testing.TB) *keys.Set {
	tb.Helper()
	k, err := keys.Generate(keys.ES256)
	if err != nil {
		tb.Fatal(err)
	}
	k.State = keys.StateActive
	sec, err := keys.NewSecret("fuzz", "active", k)
	if err != nil {
		tb.Fatal(err)
	}
	set := keys.NewSet()
	set.Update([]corev1.Secret{*sec})
	if _, ok := set.Active(); !ok {
		tb.Fatal("no active key")
	}
	return set
}

// newFuzzIssuer is a complete issuer on an empty in-memory session store.
func newFuzzIssuer(tb testing.TB, set *keys.Set) http.Handler {
	tb.Helper()
	clock := clocktesting.NewFakeClock(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC))
	store, err := sessions.NewStore(fuzzSessionClient(), sessions.Config{
		Namespace: "fuzz", RefreshTTL: time.Hour, MaxLifetime: 2 * time.Hour, ReuseGrace: 5 * time.Second,
		CacheSize: 16, Timeout: time.Second, Clock: clock,
	})
	if err != nil {
		tb.Fatal(err)
	}
	return issuer.New(issuer.Config{
		URL:                 fuzzIssuerURL,
		DefaultClientID:     "rotor",
		PasswordGrant:       true,
		JWKSMaxAge:          15 * time.Minute,
		ExchangePolicy:      workload.Policy{"apps/api"},
		IntrospectionPolicy: workload.Policy{"apps/introspector"},
	}, issuer.Deps{
		Keys:   set,
		Minter: &tokens.Minter{Issuer: fuzzIssuerURL, TTL: 20 * time.Minute, Keys: set, Clock: clock},
		Verifier: &tokens.Verifier{
			Issuer: fuzzIssuerURL, Audience: "rotor", Keys: set, Leeway: 2 * time.Minute, Clock: clock,
		},
		Sessions: store,
		Accounts: fuzzAccounts{},
		Clients:  issuer.TestClients(tb, issuer.PublicClient("rotor", "rotor", "api"), issuer.PublicClient("cli", "rotor", "api")),
		Exchange: fuzzReviewer{fuzzSAToken: {
			Namespace: "apps", Name: "api", Username: "system:serviceaccount:apps:api",
		}},
		Introspectors: fuzzReviewer{fuzzCaller: {
			Namespace: "apps", Name: "introspector", Username: "system:serviceaccount:apps:introspector",
		}},
		Log: logr.Discard(),
	}).Handler()
}

// oauthErrorDescription is RFC 6749 section 5.2's error_description
// alphabet: %x20-21 / %x23-5B / %x5D-7E.
var oauthErrorDescription = regexp.MustCompile(`^[\x20\x21\x23-\x5B\x5D-\x7E]*$`)

// fuzzAnswer is any JSON answer of the form endpoints.
type fuzzAnswer struct {
	Error        string `json:"error"`
	Description  string `json:"error_description"`
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	RefreshToken string `json:"refresh_token"`
	Active       *bool  `json:"active"`
}

var fuzzMethods = []string{
	http.MethodPost, http.MethodGet, http.MethodPut, http.MethodHead,
	http.MethodDelete, http.MethodPatch, http.MethodOptions, "PROPFIND",
}

// FuzzTokenRequest sends arbitrary bodies with arbitrary content types and
// methods to /token, /revoke and /introspect of a complete issuer: none may
// panic or answer 5xx, every answer is one the endpoint documents, /token
// hands out tokens only for the one valid credential, and error
// descriptions stay within RFC 6749's alphabet.
func FuzzTokenRequest(f *testing.F) {
	set := fuzzKeySet(f)
	f.Fuzz(func(t *testing.T, method uint8, contentType string, body []byte) {
		h := newFuzzIssuer(t, set)
		m := fuzzMethods[int(method)%len(fuzzMethods)]
		for _, path := range []string{issuer.PathToken, issuer.PathRevoke, issuer.PathIntrospect} {
			req := httptest.NewRequest(m, fuzzIssuerURL+path, bytes.NewReader(body))
			if contentType != "" {
				req.Header.Set("Content-Type", contentType)
			}
			if path == issuer.PathIntrospect {
				req.Header.Set("Authorization", "Bearer "+fuzzCaller)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			checkFuzzAnswer(t, m, path, contentType, body, rec)
		}
	})
}

func checkFuzzAnswer(t *testing.T, method, path, contentType string, body []byte, rec *httptest.ResponseRecorder) {
	t.Helper()
	g := NewWithT(t)
	status := rec.Code
	what := fmt.Sprintf("%s %s (Content-Type %q, body %q): %d %q",
		method, path, contentType, body, status, rec.Body.Bytes())
	g.Expect(status).To(BeElementOf(http.StatusOK, http.StatusBadRequest, http.StatusUnauthorized, http.StatusMethodNotAllowed,
		http.StatusRequestEntityTooLarge, http.StatusUnsupportedMediaType, http.StatusTooManyRequests), what)
	if status == http.StatusUnauthorized {
		// invalid_client: RFC 6749 section 5.2 and RFC 9110 want a challenge.
		g.Expect(rec.Header().Get("WWW-Authenticate")).To(HavePrefix("Basic "), what)
	}
	g.Expect(rec.Header().Get("Cache-Control")).To(Equal("no-store"), what)
	if method != http.MethodPost {
		g.Expect(status).To(Equal(http.StatusMethodNotAllowed), what)
	}
	if status == http.StatusMethodNotAllowed {
		g.Expect(method).NotTo(Equal(http.MethodPost), what)
		g.Expect(rec.Header().Get("Allow")).To(Equal(http.MethodPost), what)
	}
	if mt, _, err := mime.ParseMediaType(contentType); err == nil && mt == "application/x-www-form-urlencoded" {
		g.Expect(status).NotTo(Equal(http.StatusUnsupportedMediaType), what)
	}
	if status == http.StatusRequestEntityTooLarge {
		g.Expect(len(body)).To(BeNumerically(">", 16<<10), what)
	}
	if path == issuer.PathRevoke && status == http.StatusOK {
		g.Expect(rec.Body.Bytes()).To(BeEmpty(), what)
		return
	}
	var a fuzzAnswer
	g.Expect(json.Unmarshal(rec.Body.Bytes(), &a)).To(Succeed(), what)
	if status != http.StatusOK {
		g.Expect(a.Error).To(BeElementOf("invalid_request", "invalid_grant", "unsupported_grant_type",
			"invalid_target", "invalid_scope", "unauthorized_client", "invalid_client"), what)
		g.Expect(a.Description).To(MatchRegexp(oauthErrorDescription.String()), what)
		return
	}
	switch path {
	case issuer.PathIntrospect:
		// No token valid now can be in the body: the issuer is new.
		g.Expect(a.Active).To(HaveValue(BeFalse()), what)
	case issuer.PathToken:
		// Tokens only for exactly one grant with the one valid credential.
		form, err := url.ParseQuery(string(body))
		g.Expect(err).NotTo(HaveOccurred(), what)
		for k, vs := range form {
			g.Expect(vs).To(HaveLen(1), "%s: parameter %q", what, k)
		}
		switch form.Get("grant_type") {
		case "password":
			g.Expect(form.Get("username")).To(Equal(fuzzUsername), what)
			g.Expect(form.Get("password")).To(Equal(fuzzPassword), what)
		case "urn:ietf:params:oauth:grant-type:token-exchange":
			g.Expect(form.Get("subject_token")).To(Equal(fuzzSAToken), what)
		default:
			t.Fatalf("%s: tokens for grant_type %q", what, form.Get("grant_type"))
		}
		g.Expect(a.AccessToken).NotTo(BeEmpty(), what)
		g.Expect(a.TokenType).To(Equal("Bearer"), what)
		_, _, ok := sessions.ParseToken(a.RefreshToken)
		g.Expect(ok).To(BeTrue(), what)
	}
}
