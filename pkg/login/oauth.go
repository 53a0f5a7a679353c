package login

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"rotor.dev/rotor/pkg/client"
)

// OAuth parameter values sent to rotor.
const (
	grantPassword      = "password"
	grantRefreshToken  = "refresh_token"
	grantTokenExchange = "urn:ietf:params:oauth:grant-type:token-exchange"
	tokenTypeJWT       = "urn:ietf:params:oauth:token-type:jwt"
)

const (
	// requestTimeout bounds each request to the issuer.
	requestTimeout = 30 * time.Second
	// maxResponseBytes bounds what is read from the issuer.
	maxResponseBytes = 1 << 20
)

// invalidGrant: rotor refused the grant itself (a revoked, expired or
// replayed refresh token; a wrong password), not a passing failure.
func invalidGrant(err error) bool {
	var te *client.TokenError
	return errors.As(err, &te) && te.StatusCode == http.StatusBadRequest && te.Code == "invalid_grant"
}

// tokenResponse is a successful answer of the token endpoint.
type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in"`
	RefreshToken string `json:"refresh_token"`
}

// newHTTPClient trusts CAFile's CAs only when one is given (a private CA
// pins the issuer, as a kubeconfig's certificate-authority does) and never
// follows a redirect: the request body holds a password or a token, and it
// goes to the issuer and nowhere else.
func newHTTPClient(caFile string) (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("--ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--ca-file %s holds no PEM certificate", caFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{
		Transport: tr,
		Timeout:   requestTimeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}, nil
}

// issuerClient makes the requests of one session.
type issuerClient struct {
	http *http.Client
	o    Options
}

// token posts form, with the client_id, to the token endpoint.
func (c *issuerClient) token(ctx context.Context, form url.Values) (*tokenResponse, error) {
	resp, err := c.post(ctx, "/token", form)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, client.ReadTokenError(resp)
	}
	var tr tokenResponse
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxResponseBytes)).Decode(&tr); err != nil {
		return nil, fmt.Errorf("decoding token response: %w", err)
	}
	if tr.AccessToken == "" {
		return nil, errors.New("token response has no access_token")
	}
	if !strings.EqualFold(tr.TokenType, "bearer") {
		return nil, fmt.Errorf("token response has token_type %.40q, want Bearer", tr.TokenType)
	}
	return &tr, nil
}

// revoke revokes a refresh token (RFC 7009).
func (c *issuerClient) revoke(ctx context.Context, refreshToken string) error {
	resp, err := c.post(ctx, "/revoke", url.Values{"token": {refreshToken}, "token_type_hint": {"refresh_token"}})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return client.ReadTokenError(resp)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponseBytes))
	return nil
}

// post sends form as a Public client: client_id in the body, no secret.
// rotor binds a session to its client, so login, refresh and revocation
// all name the same one.
func (c *issuerClient) post(ctx context.Context, path string, form url.Values) (*http.Response, error) {
	form.Set("client_id", c.o.ClientID)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.o.IssuerURL+path, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, fmt.Errorf("building request: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	// The URL holds no secret (they are in the body), so the *url.Error is
	// safe to show.
	return c.http.Do(req)
}

// jwtExpiry reads the exp claim of a JWT without verifying it: the plugin
// only needs to know when to come back, and the API server verifies. It is
// the fallback for an answer without expires_in.
func jwtExpiry(token string) (time.Time, bool) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return time.Time{}, false
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return time.Time{}, false
	}
	var claims struct {
		Exp json.Number `json:"exp"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		return time.Time{}, false
	}
	exp, err := claims.Exp.Int64()
	if err != nil || exp <= 0 {
		return time.Time{}, false
	}
	return time.Unix(exp, 0), true
}
