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

// oauthError is an error answer of the token or revocation endpoint
// (RFC 6749 §5.2). Its text is the issuer's, made printable; rotor never
// puts a token in it.
type oauthError struct {
	Status      int
	Code        string
	Description string
}

func (e *oauthError) Error() string {
	code := e.Code
	if code == "" {
		code = http.StatusText(e.Status)
	}
	if e.Description == "" {
		return fmt.Sprintf("issuer answered %d %s", e.Status, code)
	}
	return fmt.Sprintf("issuer answered %d %s: %s", e.Status, code, e.Description)
}

// invalidGrant: rotor refused the grant itself (a revoked, expired or
// replayed refresh token; a wrong password), not a passing failure.
func invalidGrant(err error) bool {
	var oe *oauthError
	return errors.As(err, &oe) && oe.Status == http.StatusBadRequest && oe.Code == "invalid_grant"
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
		return nil, readOAuthError(resp)
	}
	var tr tokenResponse
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxResponseBytes)).Decode(&tr); err != nil {
		return nil, fmt.Errorf("decoding token response: %w", err)
	}
	if tr.AccessToken == "" {
		return nil, errors.New("token response has no access_token")
	}
	if !strings.EqualFold(tr.TokenType, "bearer") {
		return nil, fmt.Errorf("token response has token_type %q, want Bearer", printable(tr.TokenType))
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
		return readOAuthError(resp)
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

// readOAuthError turns a non-200 answer into an *oauthError.
func readOAuthError(resp *http.Response) *oauthError {
	oe := &oauthError{Status: resp.StatusCode}
	var body struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if json.Unmarshal(b, &body) == nil {
		oe.Code, oe.Description = printable(body.Error), printable(body.Description)
	}
	return oe
}

// printable keeps text from the network to printable ASCII and a sane length
// before it reaches a terminal.
func printable(s string) string {
	const maxLen = 200
	var b strings.Builder
	for _, r := range s {
		if b.Len() >= maxLen {
			b.WriteString("...")
			break
		}
		if r >= 0x20 && r <= 0x7e {
			b.WriteRune(r)
		} else {
			b.WriteByte('?')
		}
	}
	return b.String()
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
