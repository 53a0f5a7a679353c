package oauthclients_test

import (
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
	"golang.org/x/oauth2"

	"rotor.dev/rotor/pkg/oauthclients"
)

func basicHeader(raw string) http.Header {
	return http.Header{"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte(raw))}}
}

func TestClientCredentials(t *testing.T) {
	const secret = "s3cr3t-Value_0123456789abcdefghijklmnopqrs"
	for _, tc := range []struct {
		name   string
		header http.Header
		form   url.Values
		want   oauthclients.Credentials
	}{
		{"a public client sends its client_id only", nil, url.Values{"client_id": {"cli"}},
			oauthclients.Credentials{ID: "cli", Method: oauthclients.MethodNone}},
		{"a request naming no client has no credentials", nil, url.Values{"grant_type": {"password"}},
			oauthclients.Credentials{Method: oauthclients.MethodNone}},
		{"an empty client_id is absent", nil, url.Values{"client_id": {""}},
			oauthclients.Credentials{Method: oauthclients.MethodNone}},
		{"an empty client_secret is absent", nil, url.Values{"client_id": {"cli"}, "client_secret": {""}},
			oauthclients.Credentials{ID: "cli", Method: oauthclients.MethodNone}},
		{"client_id and client_secret in the form are client_secret_post", nil, url.Values{"client_id": {"app"}, "client_secret": {secret}},
			oauthclients.Credentials{ID: "app", Secret: secret, Method: oauthclients.MethodPost}},
		{"HTTP Basic is client_secret_basic", basicHeader("app:" + secret), nil,
			oauthclients.Credentials{ID: "app", Secret: secret, Method: oauthclients.MethodBasic}},
		{"the Basic scheme is case-insensitive", http.Header{"Authorization": {"bAsIc " + base64.StdEncoding.EncodeToString([]byte("app:x"))}}, nil,
			oauthclients.Credentials{ID: "app", Secret: "x", Method: oauthclients.MethodBasic}},
		{"Basic user and password are form-urlencoded: %2B is a plus", basicHeader("a%2Bb:p%2Bq"), nil,
			oauthclients.Credentials{ID: "a+b", Secret: "p+q", Method: oauthclients.MethodBasic}},
		{"Basic user and password are form-urlencoded: a plus is a space", basicHeader("a+b:p+q"), nil,
			oauthclients.Credentials{ID: "a b", Secret: "p q", Method: oauthclients.MethodBasic}},
		{"an escaped colon in the Basic user is part of the client_id", basicHeader("a%3Ab:c:d"), nil,
			oauthclients.Credentials{ID: "a:b", Secret: "c:d", Method: oauthclients.MethodBasic}},
		{"Basic with an empty password has no secret", basicHeader("cli:"), nil,
			oauthclients.Credentials{ID: "cli", Method: oauthclients.MethodBasic}},
		{"Basic with the same client_id in the form is one method", basicHeader("app:" + secret), url.Values{"client_id": {"app"}},
			oauthclients.Credentials{ID: "app", Secret: secret, Method: oauthclients.MethodBasic}},
		{"an empty Authorization header is absent", http.Header{"Authorization": {""}}, url.Values{"client_id": {"cli"}},
			oauthclients.Credentials{ID: "cli", Method: oauthclients.MethodNone}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			got, err := oauthclients.ClientCredentials(tc.header, tc.form)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(got).To(Equal(tc.want))
		})
	}
}

func TestClientCredentialsRefusals(t *testing.T) {
	const secret = "s3cr3t-Value_0123456789abcdefghijklmnopqrs"
	for _, tc := range []struct {
		name   string
		header http.Header
		form   url.Values
		code   string
		status int
		reason oauthclients.Reason
		basic  bool
	}{
		{"Basic and client_secret in the form are two methods", basicHeader("app:" + secret), url.Values{"client_id": {"app"}, "client_secret": {secret}},
			"invalid_request", 400, oauthclients.ReasonMultipleMethods, true},
		{"Basic and client_secret alone in the form are two methods", basicHeader("app:" + secret), url.Values{"client_secret": {secret}},
			"invalid_request", 400, oauthclients.ReasonMultipleMethods, true},
		{"a form client_id other than Basic's is refused", basicHeader("app:" + secret), url.Values{"client_id": {"other"}},
			"invalid_request", 400, oauthclients.ReasonMultipleMethods, true},
		{"two Authorization headers are refused", http.Header{"Authorization": {"Basic YTpi", "Basic YTpi"}}, nil,
			"invalid_request", 400, oauthclients.ReasonMultipleMethods, true},
		{"client_secret without client_id is refused", nil, url.Values{"client_secret": {secret}},
			"invalid_request", 400, oauthclients.ReasonMalformed, false},
		{"a form client_id with a control character is refused", nil, url.Values{"client_id": {"a\nb"}},
			"invalid_request", 400, oauthclients.ReasonMalformed, false},
		{"a form client_id longer than an object name is refused", nil, url.Values{"client_id": {strings.Repeat("a", 254)}},
			"invalid_request", 400, oauthclients.ReasonMalformed, false},
		{"a Bearer Authorization header is an unsupported method", http.Header{"Authorization": {"Bearer abc"}}, nil,
			"invalid_client", 401, oauthclients.ReasonMalformed, true},
		{"Basic that is not base64 is malformed", http.Header{"Authorization": {"Basic !!!"}}, nil,
			"invalid_client", 401, oauthclients.ReasonMalformed, true},
		{"Basic without a token is malformed", http.Header{"Authorization": {"Basic"}}, nil,
			"invalid_client", 401, oauthclients.ReasonMalformed, true},
		{"Basic without a colon is malformed", basicHeader("app"), nil,
			"invalid_client", 401, oauthclients.ReasonMalformed, true},
		{"Basic with an empty user is malformed", basicHeader(":" + secret), nil,
			"invalid_client", 401, oauthclients.ReasonMalformed, true},
		{"Basic with a bad percent-escape in the user is malformed", basicHeader("a%zz:" + secret), nil,
			"invalid_client", 401, oauthclients.ReasonMalformed, true},
		{"Basic with a bad percent-escape in the password is malformed", basicHeader("app:%" + secret), nil,
			"invalid_client", 401, oauthclients.ReasonMalformed, true},
		{"Basic whose client_id decodes to a control character is malformed", basicHeader("a%0Ab:" + secret), nil,
			"invalid_client", 401, oauthclients.ReasonMalformed, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			got, err := oauthclients.ClientCredentials(tc.header, tc.form)
			g.Expect(got).To(Equal(oauthclients.Credentials{}))
			var e *oauthclients.Error
			g.Expect(errors.As(err, &e)).To(BeTrue(), "got %v", err)
			g.Expect(e.Code).To(Equal(tc.code))
			g.Expect(e.Status).To(Equal(tc.status))
			g.Expect(e.Reason).To(Equal(tc.reason))
			g.Expect(e.Basic).To(Equal(tc.basic))
			g.Expect(e.Description).NotTo(ContainSubstring(secret), "never echo the secret")
			g.Expect(e.Description).To(MatchRegexp(`^[\x20\x21\x23-\x5B\x5D-\x7E]+$`), "RFC 6749 error_description characters")
			g.Expect(e.Error()).To(HavePrefix(tc.code + ": "))
			if tc.status == http.StatusUnauthorized {
				g.Expect(e.WWWAuthenticate("rotor")).To(Equal(`Basic realm="rotor", charset="UTF-8"`))
			} else {
				g.Expect(e.WWWAuthenticate("rotor")).To(BeEmpty())
			}
		})
	}
}

// recorder is a transport that records each request and answers
// invalid_grant, without a network.
type recorder func(*http.Request)

func (f recorder) RoundTrip(r *http.Request) (*http.Response, error) {
	f(r)
	return &http.Response{
		StatusCode: http.StatusBadRequest,
		Header:     http.Header{"Content-Type": {"application/json"}},
		Body:       io.NopCloser(strings.NewReader(`{"error":"invalid_grant"}`)),
		Request:    r,
	}, nil
}

func TestWWWAuthenticateQuotesTheRealm(t *testing.T) {
	e := &oauthclients.Error{Code: "invalid_client", Status: http.StatusUnauthorized}
	NewWithT(t).Expect(e.WWWAuthenticate(`a"b\c`)).To(Equal(`Basic realm="a\"b\\c", charset="UTF-8"`))
}

// TestClientCredentialsReadsWhatOAuth2LibrariesSend holds RFC 6749 section
// 2.3.1's encoding as golang.org/x/oauth2 applies it in its header style
// (url.QueryEscape of id and secret): any id and secret come back unchanged.
func TestClientCredentialsReadsWhatOAuth2LibrariesSend(t *testing.T) {
	for _, tc := range []struct{ name, id, secret string }{
		{"a generated secret passes unchanged", "billing.example.com", "Zm9vYmFy-_0123456789abcdefghijklmnopqrstuv"},
		{"reserved characters round-trip", "a:b+c%d e", "p:q+r%s t/&="},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			var seen *http.Request
			cfg := oauth2.Config{ClientID: tc.id, ClientSecret: tc.secret,
				Endpoint: oauth2.Endpoint{TokenURL: "http://rotor.invalid/token", AuthStyle: oauth2.AuthStyleInHeader}}
			ctx := context.WithValue(context.Background(), oauth2.HTTPClient, &http.Client{Transport: recorder(func(r *http.Request) { seen = r })})
			_, _ = cfg.PasswordCredentialsToken(ctx, "u", "p")
			g.Expect(seen).NotTo(BeNil())
			g.Expect(seen.ParseForm()).To(Succeed())
			got, err := oauthclients.ClientCredentials(seen.Header, seen.PostForm)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(got).To(Equal(oauthclients.Credentials{ID: tc.id, Secret: tc.secret, Method: oauthclients.MethodBasic}))

			cfg.Endpoint.AuthStyle = oauth2.AuthStyleInParams
			_, _ = cfg.PasswordCredentialsToken(ctx, "u", "p")
			g.Expect(seen.ParseForm()).To(Succeed())
			got, err = oauthclients.ClientCredentials(seen.Header, seen.PostForm)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(got).To(Equal(oauthclients.Credentials{ID: tc.id, Secret: tc.secret, Method: oauthclients.MethodPost}))
		})
	}
}
