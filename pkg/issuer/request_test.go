package issuer

// The rules a request is held to before anything is looked up, tested
// without a control plane: form decoding, parameters, bearer headers, and
// the token endpoint's refusals that come before any dependency is asked.
// Nothing here uses the package's API server (TestMain still starts it for
// the tests of package issuer_test).

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"

	"rotor.dev/rotor/pkg/accounts"
	"rotor.dev/rotor/pkg/workload"
)

const formType = "application/x-www-form-urlencoded"

// formRequest is a request as parseForm sees it, and as readForm does once
// it is sent to target.
type formRequest struct {
	method, target, contentType, body string
}

// postForm is a form-encoded POST of params joined by "&", as written.
func postForm(params ...string) formRequest {
	body := strings.Join(params, "&")
	return formRequest{method: http.MethodPost, target: "/token", contentType: formType, body: body}
}

func (r formRequest) as(method string) formRequest { r.method = method; return r }
func (r formRequest) typed(ct string) formRequest  { r.contentType = ct; return r }
func (r formRequest) at(target string) formRequest { r.target = target; return r }

// refusal is the invalid_request error of a refused form.
func refusal(status int, description string) *oauthError {
	return newError(status, errInvalidRequest, description)
}

var (
	usePost         = refusal(http.StatusMethodNotAllowed, "use POST")
	notForm         = refusal(http.StatusUnsupportedMediaType, "the body must be application/x-www-form-urlencoded")
	tooLarge        = refusal(http.StatusRequestEntityTooLarge, "the body is too large")
	notFormEncoding = refusal(http.StatusBadRequest, "the body is not valid form encoding")
	keyNotUTF8      = refusal(http.StatusBadRequest, "parameters must be UTF-8")
)

// padded is a form of exactly n bytes: params and an unknown parameter.
func padded(n int, params ...string) string {
	body := strings.Join(params, "&") + "&pad="
	return body + strings.Repeat("a", n-len(body))
}

func TestParseForm(t *testing.T) {
	longKey := strings.Repeat("k", 200)
	padding := strings.Repeat("a", 16<<10-len("grant_type=password&pad="))
	for _, tt := range []struct {
		name string
		req  formRequest
		// want is the decoded form; err the refusal instead.
		want url.Values
		err  *oauthError
	}{
		// Method.
		{
			name: "GET is refused with 405",
			req:  postForm("grant_type=password").as(http.MethodGet),
			err:  usePost,
		},
		{
			name: "PUT is refused with 405",
			req:  postForm("grant_type=password").as(http.MethodPut),
			err:  usePost,
		},
		{
			name: "a method in lower case is not POST",
			req:  postForm("grant_type=password").as("post"),
			err:  usePost,
		},

		// Content-Type.
		{
			name: "a body without Content-Type is refused with 415",
			req:  postForm("grant_type=password").typed(""),
			err:  notForm,
		},
		{
			name: "JSON is refused with 415",
			req:  postForm(`{"grant_type":"password"}`).typed("application/json"),
			err:  notForm,
		},
		{
			name: "multipart/form-data is refused with 415",
			req:  postForm("--x--").typed("multipart/form-data; boundary=x"),
			err:  notForm,
		},
		{
			name: "a form Content-Type with a broken parameter is refused with 415",
			req:  postForm("grant_type=password").typed(formType + "; charset"),
			err:  notForm,
		},
		{
			name: "a Content-Type that only starts like a form is refused with 415",
			req:  postForm("grant_type=password").typed(formType + "-x"),
			err:  notForm,
		},
		{
			name: "a form Content-Type in another case with a charset is read",
			req:  postForm("grant_type=password").typed("Application/X-WWW-Form-URLEncoded; charset=UTF-8"),
			want: url.Values{"grant_type": {"password"}},
		},

		// Size.
		{
			name: "a body of exactly 16 KiB is read",
			req:  postForm(padded(16<<10, "grant_type=password")),
			want: url.Values{"grant_type": {"password"}, "pad": {padding}},
		},
		{
			name: "a body one byte over 16 KiB is refused with 413",
			req:  postForm(padded(16<<10+1, "grant_type=password")),
			err:  tooLarge,
		},
		{
			name: "a 1 MiB body is refused with 413",
			req:  postForm(padded(1<<20, "grant_type=password")),
			err:  tooLarge,
		},

		// What the body holds.
		{
			name: "an empty body is an empty form",
			req:  postForm(),
			want: url.Values{},
		},
		{
			name: "a parameter without '=' is present and empty",
			req:  postForm("grant_type"),
			want: url.Values{"grant_type": {""}},
		},
		{
			name: "'+' and %20 are spaces",
			req:  postForm("username=a+b%20c"),
			want: url.Values{"username": {"a b c"}},
		},
		{
			name: "a NUL byte is valid UTF-8 and kept",
			req:  postForm("grant_type=password%00"),
			want: url.Values{"grant_type": {"password\x00"}},
		},
		{
			name: "the query string is never read",
			req:  postForm("grant_type=refresh_token").at("/token?refresh_token=x&grant_type=password"),
			want: url.Values{"grant_type": {"refresh_token"}},
		},

		// Form encoding.
		{
			name: "a semicolon separator is not form encoding",
			req:  postForm("grant_type=password;username=alice"),
			err:  notFormEncoding,
		},
		{
			name: "a bad percent escape is not form encoding",
			req:  postForm("grant_type=%zz"),
			err:  notFormEncoding,
		},
		{
			name: "a trailing lone percent is not form encoding",
			req:  postForm("grant_type=password%"),
			err:  notFormEncoding,
		},

		// UTF-8.
		{
			name: "a non-UTF-8 key is refused",
			req:  postForm("%FF=1"),
			err:  keyNotUTF8,
		},
		{
			name: "a percent-encoded non-UTF-8 value is refused and named",
			req:  postForm("username=alice%FF"),
			err:  refusal(http.StatusBadRequest, "parameter username is not UTF-8"),
		},
		{
			name: "raw non-UTF-8 bytes in a value are refused and named",
			req:  postForm("username=alice\xff"),
			err:  refusal(http.StatusBadRequest, "parameter username is not UTF-8"),
		},
		{
			name: "an overlong UTF-8 encoding is refused",
			req:  postForm("username=%C0%AF"),
			err:  refusal(http.StatusBadRequest, "parameter username is not UTF-8"),
		},
		{
			name: "a UTF-8-encoded surrogate is refused",
			req:  postForm("username=%ED%A0%80"),
			err:  refusal(http.StatusBadRequest, "parameter username is not UTF-8"),
		},

		// Repeated parameters.
		{
			name: "a repeated parameter is refused and named",
			req:  postForm("grant_type=password", "grant_type=refresh_token"),
			err:  refusal(http.StatusBadRequest, "parameter grant_type is repeated"),
		},
		{
			name: "a parameter repeated with the same value is refused too",
			req:  postForm("token=x", "token=x"),
			err:  refusal(http.StatusBadRequest, "parameter token is repeated"),
		},
		{
			name: "a parameter repeated with an empty value is refused",
			req:  postForm("grant_type=", "grant_type=password"),
			err:  refusal(http.StatusBadRequest, "parameter grant_type is repeated"),
		},
		{
			name: "a repeated key of control characters is named printably",
			req:  postForm("%1B%5B31m%22%5C%7F=1", "%1B%5B31m%22%5C%7F=2"),
			err:  refusal(http.StatusBadRequest, "parameter ?[31m??? is repeated"),
		},
		{
			name: "a repeated 200-character key is cut short in the description",
			req:  postForm(longKey+"=1", longKey+"=2"),
			err:  refusal(http.StatusBadRequest, "parameter "+longKey[:40]+"... is repeated"),
		},
		{
			name: "a repeated password is named, its values are not",
			req:  postForm("password=secret-one", "password=secret-two"),
			err:  refusal(http.StatusBadRequest, "parameter password is repeated"),
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := tt.req
			f, err := parseForm(r.method, r.contentType, strings.NewReader(r.body))
			checkForm(t, "parseForm", f, err, tt.want, tt.err)

			// readForm, on the same request being served, decides the same.
			hr := httptest.NewRequest(r.method, r.target, strings.NewReader(r.body))
			if r.contentType != "" {
				hr.Header.Set("Content-Type", r.contentType)
			}
			f, err = readForm(httptest.NewRecorder(), hr)
			checkForm(t, "readForm", f, err, tt.want, tt.err)
		})
	}
}

func checkForm(t *testing.T, what string, got form, gotErr *oauthError, want url.Values, wantErr *oauthError) {
	t.Helper()
	if wantErr != nil {
		if gotErr == nil || *gotErr != *wantErr {
			t.Errorf("%s: got %v, %+v; want %+v", what, got, gotErr, *wantErr)
		}
		return
	}
	if gotErr != nil || !reflect.DeepEqual(url.Values(got), want) {
		t.Errorf("%s: got %v, %+v; want %v", what, got, gotErr, want)
	}
}

// failingReader fails as a client that goes away mid-body does.
type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("connection reset") }

func TestParseFormReadErrors(t *testing.T) {
	overLimit := padded(maxFormBytes+10, "a=1")
	for _, tt := range []struct {
		name string
		body io.Reader
		want *oauthError
	}{
		{
			name: "a body that cannot be read is invalid_request",
			body: failingReader{},
			want: refusal(http.StatusBadRequest, "the body could not be read"),
		},
		{
			name: "a body the server's MaxBytesReader cut short is refused with 413",
			body: http.MaxBytesReader(nil, io.NopCloser(strings.NewReader(overLimit)), maxFormBytes),
			want: tooLarge,
		},
		{
			name: "a body that fails after 16 KiB is refused with 413, not as unreadable",
			body: io.MultiReader(strings.NewReader(padded(maxFormBytes+1, "a=1")), failingReader{}),
			want: tooLarge,
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f, err := parseForm(http.MethodPost, formType, tt.body)
			checkForm(t, "parseForm", f, err, nil, tt.want)
		})
	}
}

func TestRequiredParameters(t *testing.T) {
	f := form{"token": {"t-1"}, "empty": {""}, "client_id": {"app"}}
	for _, tt := range []struct {
		name string
		get  func() (string, *oauthError)
		want string
		err  *oauthError
	}{
		{
			name: "a present parameter is returned",
			get:  func() (string, *oauthError) { return f.require("client_id") },
			want: "app",
		},
		{
			name: "an absent parameter is invalid_request naming it",
			get:  func() (string, *oauthError) { return f.require("username") },
			err:  refusal(http.StatusBadRequest, "missing parameter username"),
		},
		{
			name: "a parameter sent empty counts as absent",
			get:  func() (string, *oauthError) { return f.require("empty") },
			err:  refusal(http.StatusBadRequest, "missing parameter empty"),
		},
		{
			name: "a revocation names its token",
			get:  func() (string, *oauthError) { return revokeToken(f) },
			want: "t-1",
		},
		{
			name: "a revocation without a token is invalid_request",
			get:  func() (string, *oauthError) { return revokeToken(form{"token_type_hint": {"refresh_token"}}) },
			err:  refusal(http.StatusBadRequest, "missing parameter token"),
		},
		{
			name: "a revocation with an empty token is invalid_request",
			get:  func() (string, *oauthError) { return revokeToken(form{"token": {""}}) },
			err:  refusal(http.StatusBadRequest, "missing parameter token"),
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.get()
			if tt.err != nil {
				if err == nil || *err != *tt.err {
					t.Errorf("got %q, %+v; want %+v", got, err, *tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("got %q, %+v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestBearer(t *testing.T) {
	for _, tt := range []struct {
		name   string
		header []string // Authorization headers sent
		want   string   // "" for none
	}{
		{name: "no Authorization header is no bearer"},
		{name: "a Bearer header carries its token", header: []string{"Bearer abc.def"}, want: "abc.def"},
		{name: "the scheme is case-insensitive", header: []string{"bEaReR abc"}, want: "abc"},
		{name: "spaces around the token are trimmed", header: []string{"Bearer   abc  "}, want: "abc"},
		{name: "the Basic scheme is no bearer", header: []string{"Basic YWxpY2U6cHc="}},
		{name: "the word Bearer alone is no bearer", header: []string{"Bearer"}},
		{name: "an empty bearer is no bearer", header: []string{"Bearer "}},
		{name: "only spaces after Bearer are no bearer", header: []string{"Bearer    "}},
		{name: "a tab after Bearer is no bearer", header: []string{"Bearer\tabc"}},
		{name: "two tokens are one token with a space", header: []string{"Bearer a b"}, want: "a b"},
		{name: "of two headers the first counts", header: []string{"Bearer first", "Bearer second"}, want: "first"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/userinfo", nil)
			for _, h := range tt.header {
				r.Header.Add("Authorization", h)
			}
			got, ok := bearer(r)
			if got != tt.want || ok != (tt.want != "") {
				t.Errorf("bearer(%q) = %q, %v; want %q", tt.header, got, ok, tt.want)
			}
		})
	}
}

func TestPrintable(t *testing.T) {
	for _, tt := range []struct{ name, in, want string }{
		{"printable ASCII is kept", "grant_type", "grant_type"},
		{"quotes and backslashes become '?'", `a"b\c`, "a?b?c"},
		{"control characters and DEL become '?'", "a\x1b\x7fb", "a??b"},
		{"a non-ASCII rune becomes one '?'", "né", "n?"},
		{"40 characters are kept whole", strings.Repeat("k", 40), strings.Repeat("k", 40)},
		{"more than 40 are cut to 40 and '...'", strings.Repeat("k", 41), strings.Repeat("k", 40) + "..."},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := printable(tt.in); got != tt.want {
				t.Errorf("printable(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

// strictAccounts and strictReviewer count every question asked of them:
// a request refused before its grant looks anything up asks none.
type strictAccounts struct{ asked *atomic.Int32 }

func (a strictAccounts) Authenticate(context.Context, string, string, string) (accounts.Account, error) {
	a.asked.Add(1)
	return accounts.Account{}, accounts.ErrInvalidCredentials
}

func (a strictAccounts) Lookup(string) (accounts.Account, bool) {
	a.asked.Add(1)
	return accounts.Account{}, false
}

type strictReviewer struct{ asked *atomic.Int32 }

func (r strictReviewer) Review(context.Context, string) (workload.Identity, error) {
	r.asked.Add(1)
	return workload.Identity{}, workload.ErrNotAuthenticated
}

// TestTokenRequestChecks sends /token requests to an issuer that has a
// configuration and nothing else: no keys, no session store, and an
// account store and a TokenReview that only count. Each row is decided
// before anything is looked up, except the last rows, which show where the
// lookups start.
func TestTokenRequestChecks(t *testing.T) {
	const (
		exchange = "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange"
		jwtType  = "subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt"
		// idTokenType is a token type rotor does not exchange.
		idTokenType = "urn:ietf:params:oauth:token-type:id_token"
	)
	login := []string{"grant_type=password", "username=alice", "password=pw"}
	with := func(base []string, params ...string) []string { return append(append([]string{}, base...), params...) }
	enabled := Config{
		DefaultClientID: "rotor", PasswordGrant: true,
		ExchangePolicy: workload.Policy{"apps/*"},
	}
	disabled := Config{DefaultClientID: "rotor"}
	invalid := func(description string) *oauthError {
		return newError(http.StatusBadRequest, errInvalidRequest, description)
	}
	unsupported := func(description string) *oauthError {
		return newError(http.StatusBadRequest, errUnsupportedGrantType, description)
	}
	badGrant := func(description string) *oauthError {
		return newError(http.StatusBadRequest, errInvalidGrant, description)
	}

	for _, tt := range []struct {
		name   string
		cfg    Config
		params []string
		want   *oauthError
		// asks is what the request may ask: "accounts" or "review".
		asks string
	}{
		// Grant types.
		{
			name:   "a request without grant_type is invalid_request",
			cfg:    enabled,
			params: []string{"username=alice", "password=pw"},
			want:   invalid("missing parameter grant_type"),
		},
		{
			name:   "an empty grant_type is invalid_request",
			cfg:    enabled,
			params: with(login[1:], "grant_type="),
			want:   invalid("missing parameter grant_type"),
		},
		{
			name:   "authorization_code is unsupported_grant_type",
			cfg:    enabled,
			params: []string{"grant_type=authorization_code", "code=x", "client_id=rotor"},
			want:   unsupported("unsupported grant_type"),
		},
		{
			name:   "grant types are compared exactly",
			cfg:    enabled,
			params: with(login[1:], "grant_type=PASSWORD"),
			want:   unsupported("unsupported grant_type"),
		},
		{
			name:   "the password grant switched off is unsupported_grant_type",
			cfg:    disabled,
			params: login,
			want:   unsupported("the password grant is disabled"),
		},
		{
			name:   "token exchange without a policy is unsupported_grant_type",
			cfg:    disabled,
			params: []string{exchange, "subject_token=x", jwtType},
			want:   unsupported("token exchange is disabled"),
		},

		// The password grant.
		{
			name:   "a login without username is invalid_request",
			cfg:    enabled,
			params: []string{"grant_type=password", "password=pw"},
			want:   invalid("missing parameter username"),
		},
		{
			name:   "a login without password is invalid_request",
			cfg:    enabled,
			params: []string{"grant_type=password", "username=alice"},
			want:   invalid("missing parameter password"),
		},
		{
			name:   "a login with an empty password is invalid_request",
			cfg:    enabled,
			params: []string{"grant_type=password", "username=alice", "password="},
			want:   invalid("missing parameter password"),
		},
		{
			name:   "a login asking for an audience not allowed is invalid_target",
			cfg:    enabled,
			params: with(login, "audience=evil"),
			want:   newError(http.StatusBadRequest, errInvalidTarget, "the client may not request this audience"),
		},
		{
			name:   "a login with a client_id too long for a session is invalid_request",
			cfg:    enabled,
			params: with(login, "client_id="+strings.Repeat("c", 254)),
			want:   invalid("client_id must be printable ASCII, at most 253 characters"),
		},
		{
			name:   "a login with a client_id that is not printable ASCII is invalid_request",
			cfg:    enabled,
			params: with(login, "client_id=app%09x"),
			want:   invalid("client_id must be printable ASCII, at most 253 characters"),
		},
		{
			name:   "a login sending a refresh token instead of a password is invalid_request",
			cfg:    enabled,
			params: []string{"grant_type=password", "username=alice", "refresh_token=rt-x.y"},
			want:   invalid("missing parameter password"),
		},

		// The refresh grant.
		{
			name:   "a refresh without refresh_token is invalid_request",
			cfg:    enabled,
			params: []string{"grant_type=refresh_token"},
			want:   invalid("missing parameter refresh_token"),
		},
		{
			name:   "a refresh with an empty refresh_token is invalid_request",
			cfg:    enabled,
			params: []string{"grant_type=refresh_token", "refresh_token="},
			want:   invalid("missing parameter refresh_token"),
		},

		// Token exchange.
		{
			name:   "an exchange without subject_token is invalid_request",
			cfg:    enabled,
			params: []string{exchange, jwtType},
			want:   invalid("missing parameter subject_token"),
		},
		{
			name:   "an exchange without subject_token_type is invalid_request",
			cfg:    enabled,
			params: []string{exchange, "subject_token=x"},
			want:   invalid("missing parameter subject_token_type"),
		},
		{
			name:   "an exchange of another token type is invalid_request",
			cfg:    enabled,
			params: []string{exchange, "subject_token=x", "subject_token_type=" + idTokenType},
			want:   invalid("subject_token_type must be urn:ietf:params:oauth:token-type:jwt"),
		},
		{
			name:   "an exchange with an actor_token (delegation) is invalid_request",
			cfg:    enabled,
			params: []string{exchange, "subject_token=x", jwtType, "actor_token=y"},
			want:   invalid("delegation (actor_token) is not supported"),
		},
		{
			name:   "an exchange asking for a refresh token type is invalid_request",
			cfg:    enabled,
			params: []string{exchange, "subject_token=x", jwtType, "requested_token_type=refresh_token"},
			want:   invalid("requested_token_type must be urn:ietf:params:oauth:token-type:access_token"),
		},
		{
			name:   "an exchange asking for an audience not allowed is invalid_target",
			cfg:    enabled,
			params: []string{exchange, "subject_token=x", jwtType, "audience=evil"},
			want:   newError(http.StatusBadRequest, errInvalidTarget, "the client may not request this audience"),
		},

		// Where the lookups start.
		{
			name:   "a complete login asks the account store",
			cfg:    enabled,
			params: login,
			want:   badGrant("invalid username or password"),
			asks:   "accounts",
		},
		{
			name:   "a complete exchange asks for a TokenReview",
			cfg:    enabled,
			params: []string{exchange, "subject_token=x", jwtType},
			want:   badGrant("the subject token is not a valid ServiceAccount token for this issuer"),
			asks:   "review",
		},
		{
			name:   "an exchange checks its client before the review",
			cfg:    enabled,
			params: []string{exchange, "subject_token=x", jwtType, "client_id=" + strings.Repeat("c", 254)},
			want:   invalid("client_id must be printable ASCII, at most 253 characters"),
		},
		{
			name:   "an exchange by an unknown client is invalid_client before the review",
			cfg:    enabled,
			params: []string{exchange, "subject_token=x", jwtType, "client_id=nobody"},
			want:   &oauthError{status: http.StatusUnauthorized, code: "invalid_client", description: "unknown client"},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var accountsAsked, reviews atomic.Int32
			i := &Issuer{cfg: tt.cfg, accounts: strictAccounts{&accountsAsked}, clients: testClients(t, publicClient("rotor", "rotor")),
				exchange: strictReviewer{&reviews}, introspectors: strictReviewer{&reviews}}
			body := strings.Join(tt.params, "&")
			req := httptest.NewRequest(http.MethodPost, PathToken, strings.NewReader(body))
			req.Header.Set("Content-Type", formType)
			rec := httptest.NewRecorder()
			func() {
				defer func() {
					if p := recover(); p != nil {
						t.Fatalf("the request reached a dependency the issuer does not have: %v", p)
					}
				}()
				i.token(rec, req)
			}()

			if rec.Code != tt.want.status {
				t.Errorf("status %d, want %d", rec.Code, tt.want.status)
			}
			wantHeader := http.Header{
				"Content-Type":  {"application/json"},
				"Cache-Control": {"no-store"},
				"Pragma":        {"no-cache"},
			}
			if tt.want.status == http.StatusUnauthorized {
				wantHeader["Www-Authenticate"] = []string{`Basic realm="", charset="UTF-8"`}
			}
			if !reflect.DeepEqual(rec.Header(), wantHeader) {
				t.Errorf("headers %v, want %v", rec.Header(), wantHeader)
			}
			wantBody := `{"error":"` + tt.want.code + `","error_description":"` + tt.want.description + "\"}\n"
			if rec.Body.String() != wantBody {
				t.Errorf("body %q, want %q", rec.Body, wantBody)
			}
			var wantAccounts, wantReviews int32
			switch tt.asks {
			case "accounts":
				wantAccounts = 1
			case "review":
				wantReviews = 1
			}
			if n := accountsAsked.Load(); n != wantAccounts {
				t.Errorf("the account store was asked %d times, want %d", n, wantAccounts)
			}
			if n := reviews.Load(); n != wantReviews {
				t.Errorf("%d TokenReviews, want %d", n, wantReviews)
			}
		})
	}
}
