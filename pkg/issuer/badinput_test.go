package issuer_test

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"k8s.io/client-go/rest"

	identityv1alpha1 "rotor.dev/rotor/api/v1alpha1"
)

// Bad input, endpoint by endpoint: each table runs against one real
// replica, and every row checks the exact answer and that nothing was
// written: the RefreshTokens of the namespace keep their number and
// resourceVersions, and the replica sent no write for them.

// badRequest is the request of a row, made with the builders below. Zero
// fields mean: POST to the table's endpoint, no Content-Type, empty body.
type badRequest struct {
	method string
	// path replaces the table's endpoint; it may carry a query string.
	path        string
	contentType string
	body        string
	// chunked sends the body without a Content-Length.
	chunked bool
	// authorization is the Authorization header, when set.
	authorization string
	// host replaces the Host header; header adds other headers.
	host   string
	header map[string]string
}

// formPost is a POST of a form-encoded body: params joined by "&", each
// sent exactly as written (param escapes a value).
func formPost(params ...string) badRequest {
	return badRequest{contentType: formType, body: strings.Join(params, "&")}
}

// untyped is a POST of body without a Content-Type.
func untyped(body string) badRequest { return badRequest{body: body} }

// bare is a request with only a method: no Content-Type, no body.
func bare(method string) badRequest { return badRequest{method: method} }

// param is name=value with value form-escaped.
func param(name, value string) string { return name + "=" + url.QueryEscape(value) }

func (r badRequest) as(method string) badRequest  { r.method = method; return r }
func (r badRequest) at(path string) badRequest    { r.path = path; return r }
func (r badRequest) typed(ct string) badRequest   { r.contentType = ct; return r }
func (r badRequest) withHost(h string) badRequest { r.host = h; return r }

// streamed sends the body chunked, without a Content-Length.
func (r badRequest) streamed() badRequest { r.chunked = true; return r }

// authorized sets the Authorization header as written.
func (r badRequest) authorized(header string) badRequest { r.authorization = header; return r }

// bearer sets Authorization: Bearer token.
func (r badRequest) bearer(token string) badRequest { return r.authorized("Bearer " + token) }

func (r badRequest) withHeader(name, value string) badRequest {
	h := maps.Clone(r.header)
	if h == nil {
		h = map[string]string{}
	}
	h[name] = value
	r.header = h
	return r
}

// badRow is one row: a sentence, the request and the exact answer.
type badRow struct {
	name string
	req  badRequest
	want badAnswer
	// noAPI: the request must not reach the API server at all (a
	// malformed token is refused before any read).
	noAPI bool
	// then runs after the checks, e.g. to show a session still works.
	then func(t *testing.T)
}

// badAnswer is the answer a row expects.
type badAnswer struct {
	status int
	// code is the JSON error; "" when the answer has none.
	code string
	// description, when set, is the exact error_description.
	description string
	// body, for answers without a JSON error, is the exact body.
	body string
	// challenge is the exact WWW-Authenticate header ("" for none), or
	// basicChallenge for any Basic challenge.
	challenge string
	// cacheControl overrides the table's expected Cache-Control; "-"
	// means none.
	cacheControl string
}

// The answers of the OAuth endpoints.
var (
	methodNotAllowed     = badAnswer{status: 405, code: "invalid_request"}
	unsupportedMediaType = badAnswer{status: 415, code: "invalid_request"}
	tooLarge             = badAnswer{status: 413, code: "invalid_request"}
	invalidGrant         = badAnswer{status: 400, code: "invalid_grant"}
	unsupportedGrantType = badAnswer{status: 400, code: "unsupported_grant_type"}
	invalidTarget        = badAnswer{status: 400, code: "invalid_target"}
	// invalidClient is a failed client authentication: 401 with a Basic
	// challenge (its realm is the replica's URL).
	invalidClient = badAnswer{status: 401, code: "invalid_client", challenge: basicChallenge}
	// revoked is /revoke's answer, known token or not: 200, empty body.
	revoked = badAnswer{status: 200}
	// notFound is the mux's answer to a path it does not serve.
	notFound = badAnswer{status: 404, body: "404 page not found\n", cacheControl: "-"}
)

// basicChallenge stands for any WWW-Authenticate: Basic challenge.
const basicChallenge = "Basic ..."

// invalidRequest is 400 invalid_request with exactly this description, or
// any description when it is "".
func invalidRequest(description string) badAnswer {
	return badAnswer{status: 400, code: "invalid_request", description: description}
}

// served is a 200 with exactly this body.
func served(body string) badAnswer { return badAnswer{status: 200, body: body} }

// badTable is what the rows of one endpoint share.
type badTable struct {
	r    *replica
	ns   string
	path string
	// allow is the Allow header of every 405.
	allow string
	// cacheControl is the Cache-Control of every answer unless a row
	// says otherwise.
	cacheControl string
	// secrets must appear in no error answer.
	secrets []string
}

// badReply is what a row's request got.
type badReply struct {
	status int
	header http.Header
	body   []byte
}

func (tb *badTable) send(t *testing.T, req badRequest) badReply {
	t.Helper()
	method := cmp.Or(req.method, http.MethodPost)
	path := cmp.Or(req.path, tb.path)
	var body io.Reader = strings.NewReader(req.body)
	if req.chunked {
		body = struct{ io.Reader }{body} // hides the length: chunked encoding
	}
	hr, err := http.NewRequest(method, tb.r.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if req.contentType != "" {
		hr.Header.Set("Content-Type", req.contentType)
	}
	if req.authorization != "" {
		hr.Header.Set("Authorization", req.authorization)
	}
	for k, v := range req.header {
		hr.Header.Set(k, v)
	}
	if req.host != "" {
		hr.Host = req.host
	}
	resp, err := http.DefaultClient.Do(hr)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the answer: %v", method, path, err)
	}
	return badReply{status: resp.StatusCode, header: resp.Header, body: b}
}

// sessionVersions is the name and resourceVersion of every RefreshToken.
func sessionVersions(t testing.TB, ns string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, s := range sessionsOf(t, ns) {
		out[s.Name] = s.ResourceVersion
	}
	return out
}

// rowSecrets are the credentials a row's request carries.
func rowSecrets(req badRequest) []string {
	var out []string
	values, _ := url.ParseQuery(req.body) // a partial parse is enough
	for _, k := range []string{"password", "refresh_token", "token", "subject_token", "access_token"} {
		for _, v := range values[k] {
			if len(v) >= 8 {
				out = append(out, v)
			}
		}
	}
	if _, tok, ok := strings.Cut(req.authorization, " "); ok && len(tok) >= 8 {
		out = append(out, tok)
	}
	return out
}

// printableASCII is RFC 6749 section 5.2's alphabet of error_description.
const printableASCII = `^[\x20\x21\x23-\x5B\x5D-\x7E]+$`

func (tb *badTable) run(t *testing.T, rows []badRow) {
	t.Helper()
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			g := NewWithT(t)
			want := row.want
			before := sessionVersions(t, tb.ns)
			reads, writes := tb.r.Requests.reads.Load(), tb.r.Requests.writes.Load()

			got := tb.send(t, row.req)

			g.Expect(got.status).To(Equal(want.status), "body %q", got.body)
			cache := cmp.Or(want.cacheControl, tb.cacheControl)
			if cache == "-" {
				cache = ""
			}
			g.Expect(got.header.Get("Cache-Control")).To(Equal(cache))
			if got.status == http.StatusMethodNotAllowed {
				g.Expect(got.header.Get("Allow")).To(Equal(tb.allow))
			} else {
				g.Expect(got.header.Values("Allow")).To(BeEmpty())
			}
			if want.challenge == basicChallenge {
				g.Expect(got.header.Get("WWW-Authenticate")).To(HavePrefix("Basic realm="))
			} else {
				g.Expect(got.header.Get("WWW-Authenticate")).To(Equal(want.challenge))
			}
			if want.code != "" {
				g.Expect(got.header.Get("Content-Type")).To(Equal("application/json"))
				var e struct {
					Error       *string `json:"error"`
					Description *string `json:"error_description"`
				}
				g.Expect(json.Unmarshal(got.body, &e)).To(Succeed(), "body %q", got.body)
				g.Expect(e.Error).To(HaveValue(Equal(want.code)))
				if e.Description != nil {
					g.Expect(*e.Description).To(MatchRegexp(printableASCII),
						"error_description is printable ASCII (RFC 6749 section 5.2)")
				}
				if want.description != "" {
					g.Expect(e.Description).To(HaveValue(Equal(want.description)))
				}
			} else {
				g.Expect(string(got.body)).To(Equal(want.body))
			}
			if got.status != http.StatusOK {
				for _, s := range append(rowSecrets(row.req), tb.secrets...) {
					g.Expect(string(got.body)).NotTo(ContainSubstring(s), "an error answer names a secret")
				}
			}

			g.Expect(sessionVersions(t, tb.ns)).To(Equal(before), "a bad request changes no session")
			g.Expect(tb.r.Requests.writes.Load()).To(Equal(writes), "a bad request writes nothing")
			if row.noAPI {
				g.Expect(tb.r.Requests.reads.Load()).To(Equal(reads), "a malformed token never reaches the API server")
			}
			if row.then != nil && !t.Failed() {
				row.then(t)
			}
		})
	}
}

const (
	formType      = "application/x-www-form-urlencoded"
	badAlicePW    = "pw-alice-Zq81xT"
	badBobPW      = "pw-bob-Kw02yU"
	badCarolPW    = "pw-carol-Hp55vR"
	useGetOrHead  = "GET, HEAD"
	bearerMissing = `Bearer realm="rotor"`
	bearerInvalid = `Bearer realm="rotor", error="invalid_token", ` +
		`error_description="the access token is invalid or expired"`
	// unknownSession is a well-formed session name that names no session.
	unknownSession = "rt-aaaaaaaaaaaaaaaaaaaaaaaaaa"
)

// loginBody is a password grant's form body.
func loginBody(username, password string) string {
	return url.Values{"grant_type": {"password"}, "username": {username}, "password": {password}}.Encode()
}

// refreshBody is a refresh grant's form body.
func refreshBody(token string) string {
	return "grant_type=refresh_token&" + param("refresh_token", token)
}

// padTo pads a form body with an unknown parameter to exactly n bytes.
func padTo(body string, n int) string {
	const pad = "&pad="
	return body + pad + strings.Repeat("a", n-len(body)-len(pad))
}

// tokenSecrets are a token reply's secrets: both tokens and the secret
// half of the refresh token.
func tokenSecrets(rep *tokenReply) []string {
	_, secret, _ := strings.Cut(rep.RefreshToken, ".")
	return []string{rep.AccessToken, rep.RefreshToken, secret}
}

// loginSecrets are the three passwords and the secrets of these logins.
func loginSecrets(logins ...*tokenReply) []string {
	out := []string{badAlicePW, badBobPW, badCarolPW}
	for _, l := range logins {
		out = append(out, tokenSecrets(l)...)
	}
	return out
}

// startBadInputReplica starts one replica with alice, bob and carol logged in.
func startBadInputReplica(t *testing.T) (r *replica, ns string, alice, bob, carol *tokenReply) {
	t.Helper()
	ns = env.Namespace(t)
	createAccount(t, ns, "alice", badAlicePW)
	createAccount(t, ns, "bob", badBobPW)
	createAccount(t, ns, "carol", badCarolPW)
	r = startReplica(t, ns, newClock())
	alice, bob, carol = r.login(t, "alice", badAlicePW), r.login(t, "bob", badBobPW), r.login(t, "carol", badCarolPW)
	for _, rep := range []*tokenReply{alice, bob, carol} {
		if rep.Status != http.StatusOK {
			t.Fatalf("login: %d %s", rep.Status, rep.Error)
		}
	}
	// Let the session watch's and collector's start-up lists pass, so
	// the read counter sees only what the rows cause.
	time.Sleep(300 * time.Millisecond)
	return r, ns, alice, bob, carol
}

// b64Next returns the base64url character after c (for the last
// character of a 32-byte secret, that sets a trailing bit).
func b64Next(c byte) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	return string(alphabet[(strings.IndexByte(alphabet, c)+1)%64])
}

func b32Next(c byte) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz234567"
	return string(alphabet[(strings.IndexByte(alphabet, c)+1)%32])
}

func TestBadInputToken(t *testing.T) {
	r, ns, alice, bob, carol := startBadInputReplica(t)
	aliceName, aliceSecret, _ := strings.Cut(alice.RefreshToken, ".")
	carolName, carolSecret, _ := strings.Cut(carol.RefreshToken, ".")
	tb := &badTable{r: r, ns: ns, path: "/token", allow: http.MethodPost, cacheControl: "no-store",
		secrets: loginSecrets(alice, bob, carol)}
	login := loginBody("alice", badAlicePW)
	jsonLogin := `{"grant_type":"password","username":"alice","password":"` + badAlicePW + `"}`
	const multipartLogin = "--x\r\nContent-Disposition: form-data; name=\"grant_type\"\r\n\r\npassword\r\n--x--\r\n"
	const escapeKey = "%1B%5B31m%22%5C%7F" // ESC [31m " \ DEL
	longKey := strings.Repeat("k", 200)
	// alicePassword is alice's good password as a form parameter.
	alicePassword := "password=" + badAlicePW
	stillWorks := func(token *string) func(t *testing.T) {
		return func(t *testing.T) {
			rep := r.refresh(t, *token)
			NewWithT(t).Expect(rep.Status).To(Equal(http.StatusOK), "the session still works: %s", rep.Error)
			*token = rep.RefreshToken
		}
	}
	carolToken := carol.RefreshToken
	// carolChanged is carol's secret with one character changed: the
	// next-to-last, so that it stays canonical base64url (the last one
	// also holds padding bits).
	carolChanged := carolSecret[:41] + b64Next(carolSecret[41]) + carolSecret[42:]
	// malformed is a refresh with a token that cannot be a token: refused
	// before any API request.
	malformed := func(name, token string) badRow {
		return badRow{name: name, req: formPost(refreshBody(token)), want: invalidGrant, noAPI: true}
	}

	tb.run(t, []badRow{
		// Method.
		{
			name: "GET is refused with 405 and Allow: POST",
			req:  bare(http.MethodGet),
			want: methodNotAllowed,
		},
		{
			name: "GET with a login in the query string is refused with 405",
			req:  bare(http.MethodGet).at("/token?" + login),
			want: methodNotAllowed,
		},
		{
			name: "PUT with a login is refused with 405",
			req:  formPost(login).as(http.MethodPut),
			want: methodNotAllowed,
		},
		{
			name: "OPTIONS is refused with 405",
			req:  bare(http.MethodOptions),
			want: methodNotAllowed,
		},

		// Content-Type.
		{
			name: "a login without Content-Type is refused with 415",
			req:  untyped(login),
			want: unsupportedMediaType,
		},
		{
			name: "a login as JSON is refused with 415",
			req:  untyped(jsonLogin).typed("application/json"),
			want: unsupportedMediaType,
		},
		{
			name: "a login as multipart/form-data is refused with 415",
			req:  untyped(multipartLogin).typed("multipart/form-data; boundary=x"),
			want: unsupportedMediaType,
		},
		{
			name: "a login as text/plain is refused with 415",
			req:  formPost(login).typed("text/plain"),
			want: unsupportedMediaType,
		},
		{
			name: "a form Content-Type with a broken parameter is refused with 415",
			req:  formPost(login).typed(formType + "; charset"),
			want: unsupportedMediaType,
		},
		{
			name: "a Content-Type that only starts like a form is refused with 415",
			req:  formPost(login).typed(formType + "-x"),
			want: unsupportedMediaType,
		},
		{
			name: "a form Content-Type in another case with a charset is read",
			req:  formPost("grant_type=bogus").typed("Application/X-WWW-Form-URLEncoded; charset=UTF-8"),
			want: unsupportedGrantType,
		},

		// Size.
		{
			name: "a login padded to one byte over 16 KiB is refused with 413",
			req:  formPost(padTo(login, 16<<10+1)),
			want: tooLarge,
		},
		{
			name: "a body of exactly 16 KiB is read",
			req:  formPost(padTo("grant_type=bogus", 16<<10)),
			want: unsupportedGrantType,
		},
		{
			name: "a 64 KiB login sent chunked is refused with 413",
			req:  formPost(padTo(login, 64<<10)).streamed(),
			want: tooLarge,
		},

		// Repeated parameters.
		{
			name: "a repeated grant_type is invalid_request",
			req:  formPost(login, "grant_type=password"),
			want: invalidRequest("parameter grant_type is repeated"),
		},
		{
			name: "a repeated password is invalid_request and names neither value",
			req:  formPost(login, "password="+badBobPW),
			want: invalidRequest("parameter password is repeated"),
		},
		{
			name: "a repeated unknown parameter is invalid_request and the login is not made",
			req:  formPost(login, "foo=1", "foo=2"),
			want: invalidRequest("parameter foo is repeated"),
		},
		{
			name: "a parameter repeated with an empty value is invalid_request",
			req:  formPost("grant_type=", login),
			want: invalidRequest("parameter grant_type is repeated"),
		},
		{
			name:  "a repeated refresh_token is invalid_request",
			req:   formPost(refreshBody(alice.RefreshToken), param("refresh_token", bob.RefreshToken)),
			want:  invalidRequest(""),
			noAPI: true,
		},
		{
			name: "a repeated key of control characters is invalid_request with a printable description",
			req:  formPost(escapeKey+"=1", escapeKey+"=2"),
			want: invalidRequest("parameter ?[31m??? is repeated"),
		},
		{
			name: "a repeated 200-character key is cut short in the description",
			req:  formPost(longKey+"=1", longKey+"=2"),
			want: invalidRequest("parameter " + longKey[:40] + "... is repeated"),
		},

		// Missing and empty parameters.
		{
			name: "a body without grant_type is invalid_request",
			req:  formPost("username=alice", alicePassword),
			want: invalidRequest("missing parameter grant_type"),
		},
		{
			name: "an empty grant_type is invalid_request",
			req:  formPost("grant_type=", "username=alice", alicePassword),
			want: invalidRequest("missing parameter grant_type"),
		},
		{
			name: "a grant_type without '=' is invalid_request",
			req:  formPost("grant_type", "username=alice", alicePassword),
			want: invalidRequest("missing parameter grant_type"),
		},
		{
			name: "an empty body is invalid_request",
			req:  formPost(),
			want: invalidRequest("missing parameter grant_type"),
		},
		{
			name: "a login without password is invalid_request",
			req:  formPost("grant_type=password", "username=alice"),
			want: invalidRequest("missing parameter password"),
		},
		{
			name: "a login with an empty password is invalid_request",
			req:  formPost("grant_type=password", "username=alice", "password="),
			want: invalidRequest("missing parameter password"),
		},
		{
			name: "a login without username is invalid_request and names no password",
			req:  formPost("grant_type=password", alicePassword),
			want: invalidRequest("missing parameter username"),
		},
		{
			name:  "a refresh without refresh_token is invalid_request",
			req:   formPost("grant_type=refresh_token"),
			want:  invalidRequest("missing parameter refresh_token"),
			noAPI: true,
		},
		{
			name:  "a refresh with an empty refresh_token is invalid_request",
			req:   formPost("grant_type=refresh_token", "refresh_token="),
			want:  invalidRequest(""),
			noAPI: true,
		},
		{
			name:  "a refresh token sent only as a Bearer header is invalid_client",
			req:   formPost("grant_type=refresh_token").bearer(alice.RefreshToken),
			want:  invalidClient,
			noAPI: true,
		},

		// Grant types.
		{
			name: "an unknown grant_type is unsupported_grant_type",
			req:  formPost("grant_type=implicit", "client_id=x", "client_secret=y"),
			want: unsupportedGrantType,
		},
		{
			name: "authorization_code is unsupported_grant_type",
			req:  formPost("grant_type=authorization_code", "code=abc"),
			want: unsupportedGrantType,
		},
		{
			name: "grant_type PASSWORD is unsupported_grant_type",
			req:  formPost("grant_type=PASSWORD", "username=alice", alicePassword),
			want: unsupportedGrantType,
		},
		{
			name: "grant_type with a trailing space is unsupported_grant_type",
			req:  formPost("grant_type=password+", "username=alice", alicePassword),
			want: unsupportedGrantType,
		},
		{
			name: "grant_type with a NUL byte is unsupported_grant_type",
			req:  formPost("grant_type=password%00", "username=alice", alicePassword),
			want: unsupportedGrantType,
		},
		{
			name: "a 1000-character grant_type is unsupported_grant_type",
			req:  formPost("grant_type=" + strings.Repeat("p", 1000)),
			want: unsupportedGrantType,
		},
		{
			name: "token exchange while it is disabled is unsupported_grant_type",
			req: formPost(
				param("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"),
				"subject_token=x",
				param("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
			),
			want: unsupportedGrantType,
		},

		// Login parameters rotor checks itself.
		{
			name: "a login asking for an audience that is not allowed is invalid_target",
			req:  formPost(login, "audience=evil"),
			want: invalidTarget,
		},
		{
			name: "a login with a client_id longer than a session can store is invalid_request",
			req:  formPost(login, "client_id="+strings.Repeat("c", 254)),
			want: invalidRequest(""),
		},

		// The query string is not read.
		{
			name: "a login in the query string only is invalid_request",
			req:  formPost().at("/token?" + login),
			want: invalidRequest("missing parameter grant_type"),
		},
		{
			name:  "a refresh in the query string only is invalid_request",
			req:   formPost().at("/token?" + refreshBody(alice.RefreshToken)),
			want:  invalidRequest(""),
			noAPI: true,
		},
		{
			name: "credentials in the query string do not complete a body",
			req:  formPost("grant_type=password").at("/token?username=alice&" + alicePassword),
			want: invalidRequest("missing parameter username"),
		},

		// Encoding.
		{
			name: "a non-UTF-8 key is invalid_request",
			req:  formPost("%FF=1", login),
			want: invalidRequest("parameters must be UTF-8"),
		},
		{
			name: "a non-UTF-8 username is invalid_request",
			req:  formPost("grant_type=password", "username=alice%FF", alicePassword),
			want: invalidRequest("parameter username is not UTF-8"),
		},
		{
			name: "a non-UTF-8 password is invalid_request",
			req:  formPost("grant_type=password", "username=alice", alicePassword+"%FE"),
			want: invalidRequest("parameter password is not UTF-8"),
		},
		{
			name: "raw non-UTF-8 bytes are invalid_request",
			req:  formPost("grant_type=password", "username=alice\xff", alicePassword),
			want: invalidRequest(""),
		},
		{
			name: "an overlong UTF-8 encoding is invalid_request",
			req:  formPost("grant_type=password", "username=%C0%AF", alicePassword),
			want: invalidRequest(""),
		},
		{
			name: "a UTF-8-encoded surrogate is invalid_request",
			req:  formPost("grant_type=password", "username=%ED%A0%80", alicePassword),
			want: invalidRequest(""),
		},
		{
			name:  "a non-UTF-8 refresh token is invalid_request",
			req:   formPost("grant_type=refresh_token", param("refresh_token", alice.RefreshToken[:72])+"%FF"),
			want:  invalidRequest(""),
			noAPI: true,
		},
		{
			name: "a semicolon separator is invalid_request",
			req:  formPost(strings.ReplaceAll(login, "&", ";")),
			want: invalidRequest("the body is not valid form encoding"),
		},
		{
			name: "a bad percent escape is invalid_request",
			req:  formPost("grant_type=%zz"),
			want: invalidRequest("the body is not valid form encoding"),
		},
		{
			name: "a trailing lone percent is invalid_request",
			req:  formPost(login + "%"),
			want: invalidRequest("the body is not valid form encoding"),
		},

		// Malformed refresh tokens never reach the API server.
		malformed("a refresh token that is not a token is invalid_grant", "garbage"),
		malformed("a truncated refresh token is invalid_grant", alice.RefreshToken[:72]),
		malformed("a refresh token cut to its name is invalid_grant", aliceName),
		malformed("a refresh token cut after its dot is invalid_grant", aliceName+"."),
		malformed("a refresh token with one extra character is invalid_grant", alice.RefreshToken+"A"),
		malformed("a 10 KiB refresh token is invalid_grant", alice.RefreshToken+strings.Repeat("A", 10<<10)),
		malformed("a refresh token without its dot is invalid_grant", aliceName+"a"+aliceSecret),
		malformed("a refresh token with its name in upper case is invalid_grant",
			strings.ToUpper(aliceName)+"."+aliceSecret),
		malformed("a refresh token with base64 padding is invalid_grant", alice.RefreshToken[:72]+"="),
		malformed("a refresh token in standard base64 is invalid_grant", aliceName+".+"+aliceSecret[1:]),
		malformed("a refresh token with a leading space is invalid_grant", " "+alice.RefreshToken[1:]),
		malformed("a refresh token whose secret has non-canonical trailing bits is invalid_grant",
			alice.RefreshToken[:72]+b64Next(alice.RefreshToken[72])),
		malformed("a refresh token with newlines in its name is invalid_grant",
			aliceName[:27]+"\n\n."+aliceSecret),
		malformed("a refresh token whose name has non-canonical trailing bits is invalid_grant",
			aliceName[:28]+b32Next(aliceName[28])+"."+aliceSecret),

		// Well-formed refresh tokens that are not the session's.
		{
			name: "a well-formed refresh token naming no session is invalid_grant",
			req:  formPost(refreshBody(unknownSession + "." + aliceSecret)),
			want: invalidGrant,
		},
		{
			name: "carol's session with alice's secret is invalid_grant and carol's session still works",
			req:  formPost(refreshBody(carolName + "." + aliceSecret)),
			want: invalidGrant,
			then: stillWorks(&carolToken),
		},
		{
			name: "carol's session with her secret's last character changed is invalid_grant",
			req:  formPost(refreshBody(carolName + "." + carolChanged)),
			want: invalidGrant,
		},
		{
			name: "alice's refresh token with another client_id is invalid_grant",
			req:  formPost(refreshBody(alice.RefreshToken), "client_id=evil"),
			want: invalidGrant,
		},
		{
			name: "alice's refresh token with its client_id in another case is invalid_grant",
			req:  formPost(refreshBody(alice.RefreshToken), "client_id=Rotor"),
			want: invalidGrant,
		},
		{
			name: "alice's refresh token in the password grant is invalid_request",
			req:  formPost("grant_type=password", param("refresh_token", alice.RefreshToken)),
			want: invalidRequest(""),
		},
	})

	t.Run("alice's session, refused above in many ways, still works", func(t *testing.T) {
		g := NewWithT(t)
		rep := r.refresh(t, alice.RefreshToken)
		g.Expect(rep.Status).To(Equal(http.StatusOK))
		g.Expect(sessionName(rep.RefreshToken)).To(Equal(aliceName))
	})
}

func TestBadInputRevoke(t *testing.T) {
	r, ns, alice, bob, carol := startBadInputReplica(t)
	aliceName, aliceSecret, _ := strings.Cut(alice.RefreshToken, ".")
	bobName, _, _ := strings.Cut(bob.RefreshToken, ".")
	tb := &badTable{r: r, ns: ns, path: "/revoke", allow: http.MethodPost, cacheControl: "no-store",
		secrets: loginSecrets(alice, bob, carol)}
	revoke := param("token", alice.RefreshToken)
	bobToken := bob.RefreshToken

	tb.run(t, []badRow{
		{
			name: "GET is refused with 405 and Allow: POST",
			req:  bare(http.MethodGet),
			want: methodNotAllowed,
		},
		{
			name:  "GET with the token in the query string is refused with 405",
			req:   bare(http.MethodGet).at("/revoke?" + revoke),
			want:  methodNotAllowed,
			noAPI: true,
		},
		{
			name:  "DELETE is refused with 405",
			req:   formPost(revoke).as(http.MethodDelete),
			want:  methodNotAllowed,
			noAPI: true,
		},
		{
			name:  "a revocation without Content-Type is refused with 415",
			req:   untyped(revoke),
			want:  unsupportedMediaType,
			noAPI: true,
		},
		{
			name:  "a revocation as JSON is refused with 415",
			req:   untyped(`{"token":"` + alice.RefreshToken + `"}`).typed("application/json"),
			want:  unsupportedMediaType,
			noAPI: true,
		},
		{
			name:  "a revocation padded over 16 KiB is refused with 413",
			req:   formPost(padTo(revoke, 16<<10+1)),
			want:  tooLarge,
			noAPI: true,
		},
		{
			name:  "a repeated token is invalid_request",
			req:   formPost(revoke, revoke),
			want:  invalidRequest("parameter token is repeated"),
			noAPI: true,
		},
		{
			name:  "two different tokens are invalid_request",
			req:   formPost(revoke, param("token", bob.RefreshToken)),
			want:  invalidRequest(""),
			noAPI: true,
		},
		{
			name:  "a missing token is invalid_request",
			req:   formPost("token_type_hint=refresh_token"),
			want:  invalidRequest("missing parameter token"),
			noAPI: true,
		},
		{
			name:  "an empty token is invalid_request",
			req:   formPost("token="),
			want:  invalidRequest("missing parameter token"),
			noAPI: true,
		},
		{
			name:  "a non-UTF-8 token is invalid_request",
			req:   formPost(param("token", alice.RefreshToken[:72]) + "%FF"),
			want:  invalidRequest(""),
			noAPI: true,
		},
		{
			name:  "a non-UTF-8 key is invalid_request",
			req:   formPost("%FF=1", revoke),
			want:  invalidRequest(""),
			noAPI: true,
		},
		{
			name:  "a token in the query string only is invalid_request",
			req:   formPost().at("/revoke?" + revoke),
			want:  invalidRequest(""),
			noAPI: true,
		},
		{
			name:  "a token that is not a token is answered 200",
			req:   formPost("token=garbage"),
			want:  revoked,
			noAPI: true,
		},
		{
			name:  "a truncated token is answered 200",
			req:   formPost(param("token", alice.RefreshToken[:72])),
			want:  revoked,
			noAPI: true,
		},
		{
			name:  "a token with its name in upper case is answered 200",
			req:   formPost(param("token", strings.ToUpper(aliceName)+"."+aliceSecret)),
			want:  revoked,
			noAPI: true,
		},
		{
			name:  "a token with newlines in its name is answered 200 without an API request",
			req:   formPost(param("token", aliceName[:27]+"\r\n."+aliceSecret)),
			want:  revoked,
			noAPI: true,
		},
		{
			name: "a well-formed token naming no session is answered 200",
			req:  formPost("token=" + unknownSession + "." + aliceSecret),
			want: revoked,
		},
		{
			name: "bob's session with alice's secret is answered 200 and bob's session still works",
			req:  formPost(param("token", bobName+"."+aliceSecret)),
			want: revoked,
			then: func(t *testing.T) {
				rep := r.refresh(t, bobToken)
				NewWithT(t).Expect(rep.Status).To(Equal(http.StatusOK))
				bobToken = rep.RefreshToken
			},
		},
		{
			name: "an access token is answered 200 and revokes nothing",
			req:  formPost(param("token", alice.AccessToken), "token_type_hint=access_token"),
			want: revoked,
		},
		{
			name:  "an unknown token_type_hint is ignored",
			req:   formPost("token=garbage", "token_type_hint=id_token"),
			want:  revoked,
			noAPI: true,
		},
	})

	t.Run("alice's session, refused above in many ways, still works", func(t *testing.T) {
		rep := r.refresh(t, alice.RefreshToken)
		NewWithT(t).Expect(rep.Status).To(Equal(http.StatusOK))
	})
}

func TestBadInputUserinfo(t *testing.T) {
	r, ns, alice, _, _ := startBadInputReplica(t)
	access := alice.AccessToken
	parts := strings.Split(access, ".")
	none := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"at+jwt"}`)) + "." + parts[1] + "."
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	bobPayload := bytes.Replace(payload, []byte(`"sub":"alice"`), []byte(`"sub":"bob"`), 1)
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString(bobPayload) + "." + parts[2]
	if tampered == access {
		t.Fatal("the payload was not tampered with")
	}
	tb := &badTable{r: r, ns: ns, path: "/userinfo", allow: "GET, POST", cacheControl: "no-store",
		secrets: []string{badAlicePW, alice.RefreshToken}}
	missing := func(name string, req badRequest) badRow {
		want := badAnswer{status: 401, code: "invalid_request", challenge: bearerMissing}
		return badRow{name: name, req: req, want: want, noAPI: true}
	}
	invalid := func(name string, req badRequest) badRow {
		want := badAnswer{status: 401, code: "invalid_token", challenge: bearerInvalid}
		return badRow{name: name, req: req, want: want, noAPI: true}
	}
	get := bare(http.MethodGet)

	tb.run(t, []badRow{
		{
			name:  "PUT is refused with 405 and Allow: GET, POST",
			req:   bare(http.MethodPut).bearer(access),
			want:  methodNotAllowed,
			noAPI: true,
		},
		{
			name:  "DELETE is refused with 405",
			req:   bare(http.MethodDelete).bearer(access),
			want:  methodNotAllowed,
			noAPI: true,
		},
		missing("no Authorization header gets a challenge without an error code",
			get),
		missing("the Basic scheme gets a challenge without an error code",
			get.authorized("Basic YWxpY2U6cHc=")),
		missing("the Basic scheme carrying the access token gets a challenge without an error code",
			get.authorized("Basic "+access)),
		missing("an empty bearer gets a challenge without an error code",
			get.authorized("Bearer ")),
		missing("the word Bearer alone gets a challenge without an error code",
			get.authorized("Bearer")),
		missing("a tab after Bearer gets a challenge without an error code",
			get.authorized("Bearer\t"+access)),
		missing("the access token in the query string only gets a challenge without an error code",
			get.at("/userinfo?access_token="+access)),
		missing("the access token in a form body only gets a challenge without an error code",
			formPost("access_token="+access)),
		invalid("a malformed bearer is invalid_token",
			get.bearer("not-a-jwt")),
		invalid("a bearer of three empty segments is invalid_token",
			get.bearer("..")),
		invalid("a refresh token as bearer is invalid_token",
			get.bearer(alice.RefreshToken)),
		invalid("an unsigned copy of the access token (alg none) is invalid_token",
			get.bearer(none)),
		invalid("the access token with a tampered payload is invalid_token",
			get.bearer(tampered)),
		invalid("the access token without its signature is invalid_token",
			get.bearer(parts[0]+"."+parts[1]+".")),
		invalid("two access tokens in one header are invalid_token",
			get.bearer(access+" "+access)),
		invalid("a 10 KiB bearer is invalid_token",
			get.bearer(strings.Repeat("a", 10<<10))),
		invalid("a bearer of non-UTF-8 bytes is invalid_token",
			get.bearer("\xff\xfe")),
	})
}

// refusedGet is how GET-only endpoints refuse other methods: 405 with a
// plain-text body, no Cache-Control.
var refusedGet = badAnswer{status: 405, body: "method not allowed\n", cacheControl: "-"}

func TestBadInputKeys(t *testing.T) {
	r, ns, _, _, _ := startBadInputReplica(t)
	resp, err := http.Get(r.URL + "/keys")
	if err != nil {
		t.Fatal(err)
	}
	jwks, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	etag := resp.Header.Get("ETag")
	if resp.StatusCode != http.StatusOK || etag == "" || !bytes.HasPrefix(jwks, []byte(`{"keys":[{`)) {
		t.Fatalf("GET /keys: %d %q %q", resp.StatusCode, etag, jwks)
	}
	tb := &badTable{r: r, ns: ns, path: "/keys", allow: useGetOrHead, cacheControl: "public, max-age=900"}
	notAllowed := func(method string) badRow {
		return badRow{
			name:  method + " is refused with 405 and Allow: GET, HEAD",
			req:   formPost("keys=1").as(method),
			want:  refusedGet,
			noAPI: true,
		}
	}
	get := bare(http.MethodGet)

	tb.run(t, []badRow{
		notAllowed(http.MethodPost),
		notAllowed(http.MethodPut),
		notAllowed(http.MethodDelete),
		notAllowed(http.MethodPatch),
		{
			name:  "a query string is ignored",
			req:   get.at("/keys?kid=../../etc/passwd&alg=none"),
			want:  served(string(jwks)),
			noAPI: true,
		},
		{
			name:  "an If-None-Match of another ETag gets the whole set",
			req:   get.withHeader("If-None-Match", `"not-the-etag"`),
			want:  served(string(jwks)),
			noAPI: true,
		},
		{
			name:  "an If-None-Match of the ETag gets 304",
			req:   get.withHeader("If-None-Match", etag),
			want:  badAnswer{status: 304},
			noAPI: true,
		},
		{
			name:  "HEAD gets no body",
			req:   bare(http.MethodHead),
			want:  served(""),
			noAPI: true,
		},
		{
			name:  "a path below /keys is not found",
			req:   get.at("/keys/" + "x"),
			want:  notFound,
			noAPI: true,
		},
		{
			name:  "/keys/ is not found",
			req:   get.at("/keys/"),
			want:  notFound,
			noAPI: true,
		},
	})
}

func TestBadInputDiscovery(t *testing.T) {
	r, ns, _, _, _ := startBadInputReplica(t)
	const path = "/.well-known/openid-configuration"
	resp, err := http.Get(r.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	doc, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var parsed map[string]any
	err = json.Unmarshal(doc, &parsed)
	if err != nil || parsed["issuer"] != r.URL || parsed["token_endpoint"] != r.URL+"/token" {
		t.Fatalf("GET discovery: %v %s", err, doc)
	}
	tb := &badTable{r: r, ns: ns, path: path, allow: useGetOrHead, cacheControl: "public, max-age=300"}
	notAllowed := func(method string) badRow {
		return badRow{
			name:  method + " is refused with 405 and Allow: GET, HEAD",
			req:   formPost("issuer=http://evil.test").as(method),
			want:  refusedGet,
			noAPI: true,
		}
	}
	get := bare(http.MethodGet)

	tb.run(t, []badRow{
		notAllowed(http.MethodPost),
		notAllowed(http.MethodPut),
		notAllowed(http.MethodDelete),
		{
			name:  "a query string is ignored",
			req:   get.at(path + "?issuer=http://evil.test"),
			want:  served(string(doc)),
			noAPI: true,
		},
		{
			name:  "a forged Host header does not change the issuer",
			req:   get.withHost("evil.test"),
			want:  served(string(doc)),
			noAPI: true,
		},
		{
			name:  "X-Forwarded-Host and X-Forwarded-Proto are ignored",
			req:   get.withHeader("X-Forwarded-Host", "evil.test").withHeader("X-Forwarded-Proto", "https"),
			want:  served(string(doc)),
			noAPI: true,
		},
		{
			name:  "HEAD gets no body",
			req:   bare(http.MethodHead),
			want:  served(""),
			noAPI: true,
		},
		{
			name:  "a trailing slash is not found",
			req:   get.at(path + "/"),
			want:  notFound,
			noAPI: true,
		},
	})
}

// A RefreshToken object must not let whoever can read it (kubectl get rt
// -o json, a backup of etcd) act as the session: it holds neither token,
// nor the secret, and what it does hold is refused as a secret.
func TestBadInputStoredSessionIsNoCredential(t *testing.T) {
	g := NewWithT(t)
	ns := env.Namespace(t)
	createAccount(t, ns, "alice", badAlicePW)
	r := startReplica(t, ns, newClock())
	first := r.login(t, "alice", badAlicePW)
	g.Expect(first.Status).To(Equal(http.StatusOK))
	r.Clock.Step(time.Minute)
	current := r.refresh(t, first.RefreshToken)
	g.Expect(current.Status).To(Equal(http.StatusOK))
	name := sessionName(current.RefreshToken)

	// The object as the API server serves it.
	hc, err := rest.HTTPClientFor(env.Config)
	g.Expect(err).NotTo(HaveOccurred())
	objectURL := fmt.Sprintf("%s/apis/identity.rotor.dev/v1alpha1/namespaces/%s/refreshtokens/%s",
		strings.TrimSuffix(env.Config.Host, "/"), ns, name)
	resp, err := hc.Get(objectURL)
	g.Expect(err).NotTo(HaveOccurred())
	raw, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(resp.StatusCode).To(Equal(http.StatusOK), "%s", raw)
	var obj identityv1alpha1.RefreshToken
	g.Expect(json.Unmarshal(raw, &obj)).To(Succeed())
	g.Expect(obj.Name).To(Equal(name))
	stored := string(raw)

	secretBytes := func(refreshToken string) []byte {
		_, secret, _ := strings.Cut(refreshToken, ".")
		b, err := base64.RawURLEncoding.DecodeString(secret)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(b).To(HaveLen(32))
		return b
	}
	sha := func(b []byte) string {
		sum := sha256.Sum256(b)
		return base64.RawURLEncoding.EncodeToString(sum[:])
	}
	for _, rep := range []*tokenReply{first, current} {
		_, secret, _ := strings.Cut(rep.RefreshToken, ".")
		sb := secretBytes(rep.RefreshToken)
		sig := rep.AccessToken[strings.LastIndex(rep.AccessToken, ".")+1:]
		for what, s := range map[string]string{
			"the refresh token":                       rep.RefreshToken,
			"the secret half":                         secret,
			"the secret in standard base64":           base64.StdEncoding.EncodeToString(sb),
			"the secret in hex":                       hex.EncodeToString(sb),
			"the access token":                        rep.AccessToken,
			"the access token's signature":            sig,
			"the password":                            badAlicePW,
			"the secret as padded base64url (prefix)": base64.URLEncoding.EncodeToString(sb)[:40],
		} {
			g.Expect(stored).NotTo(ContainSubstring(s), "the stored session contains %s", what)
		}
	}
	// What it holds instead: the SHA-256 of the current and previous secret.
	g.Expect(obj.Spec.Session.SecretHash).To(Equal(sha(secretBytes(current.RefreshToken))))
	g.Expect(obj.Spec.Session.PreviousSecretHash).To(Equal(sha(secretBytes(first.RefreshToken))))

	hashBytes, err := base64.RawURLEncoding.DecodeString(obj.Spec.Session.SecretHash)
	g.Expect(err).NotTo(HaveOccurred())
	time.Sleep(300 * time.Millisecond) // the start-up lists, as in the tables
	tb := &badTable{r: r, ns: ns, path: "/token", allow: http.MethodPost, cacheControl: "no-store",
		secrets: slices.Concat([]string{badAlicePW}, tokenSecrets(first), tokenSecrets(current))}
	derived := []struct{ what, token string }{
		{"the stored hash", name + "." + obj.Spec.Session.SecretHash},
		{"the stored previous hash", name + "." + obj.Spec.Session.PreviousSecretHash},
		{"the SHA-256 of the stored hash", name + "." + sha(hashBytes)},
		{"the stored hash with its first character changed",
			name + "." + b64Next(obj.Spec.Session.SecretHash[0]) + obj.Spec.Session.SecretHash[1:]},
	}
	var rows []badRow
	for _, d := range derived {
		rows = append(rows,
			badRow{
				name: "refreshing with " + d.what + " as the secret is invalid_grant",
				req:  formPost(refreshBody(d.token)),
				want: invalidGrant,
			},
			badRow{
				name: "revoking with " + d.what + " as the secret revokes nothing",
				req:  formPost(param("token", d.token)).at("/revoke"),
				want: revoked,
			},
		)
	}
	tb.run(t, rows)

	after := sessionsOf(t, ns)
	g.Expect(after).To(HaveLen(1))
	g.Expect(after[0].Spec.State).To(Equal(identityv1alpha1.SessionActive))
	g.Expect(r.refresh(t, current.RefreshToken).Status).To(Equal(http.StatusOK), "the owner's token still works")
}
