package client

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"

	"golang.org/x/oauth2"
)

// NewTransport returns a RoundTripper that sends src's access token as
// Authorization: Bearer through base (http.DefaultTransport when nil).
//
// When the API answers 401 with error="invalid_token", the token was
// refused before its expiry (revoked, or signed by a key the API has not
// fetched yet): the transport drops it from src (when src has an Invalidate
// method, as *Source does), gets a new one and retries the request once,
// provided the body can be sent again (no body, or req.GetBody set, as
// http.NewRequest does for in-memory bodies). If getting the new token
// fails, that error is returned instead of the 401.
func NewTransport(src oauth2.TokenSource, base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return &transport{src: src, base: base}
}

type transport struct {
	src  oauth2.TokenSource
	base http.RoundTripper
}

type contextTokenSource interface {
	TokenContext(ctx context.Context) (*oauth2.Token, error)
}

type invalidator interface {
	Invalidate(tok *oauth2.Token)
}

func (t *transport) token(ctx context.Context) (*oauth2.Token, error) {
	if cs, ok := t.src.(contextTokenSource); ok {
		return cs.TokenContext(ctx)
	}
	return t.src.Token()
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !sameOrigin(req) {
		// A redirect elsewhere gets no token, as http.Client drops the
		// Authorization header it was given on such a redirect.
		return t.base.RoundTrip(req)
	}
	tok, err := t.token(req.Context())
	if err != nil {
		closeBody(req)
		return nil, fmt.Errorf("getting access token: %w", err)
	}
	// A RoundTripper must not modify the caller's request.
	r := req.Clone(req.Context())
	tok.SetAuthHeader(r)
	resp, err := t.base.RoundTrip(r)
	if err != nil || resp.StatusCode != http.StatusUnauthorized || bearerError(resp.Header.Values("WWW-Authenticate")) != "invalid_token" {
		return resp, err
	}
	replayable := req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
	if !replayable {
		return resp, nil
	}
	if inv, ok := t.src.(invalidator); ok {
		inv.Invalidate(tok)
	}
	next, err := t.token(req.Context())
	if err != nil {
		drain(resp)
		return nil, fmt.Errorf("getting a new access token after 401: %w", err)
	}
	if next.AccessToken == tok.AccessToken {
		return resp, nil // nothing new to try
	}
	r2 := req.Clone(req.Context())
	if req.Body != nil && req.Body != http.NoBody {
		body, err := req.GetBody()
		if err != nil {
			return resp, nil
		}
		r2.Body = body
	}
	drain(resp)
	next.SetAuthHeader(r2)
	return t.base.RoundTrip(r2)
}

// sameOrigin reports whether req is the first request of its chain, or a
// redirect to the first request's scheme and host.
func sameOrigin(req *http.Request) bool {
	first := req
	for first.Response != nil && first.Response.Request != nil {
		first = first.Response.Request
	}
	return first == req || (first.URL.Scheme == req.URL.Scheme && strings.EqualFold(first.URL.Host, req.URL.Host))
}

// CloseIdleConnections passes through to the base transport, so that
// http.Client.CloseIdleConnections keeps working.
func (t *transport) CloseIdleConnections() {
	if c, ok := t.base.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
}

// drain lets the connection be reused.
func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
}

// bearerError returns the error parameter of the Bearer challenge among
// WWW-Authenticate values (RFC 6750 §3, RFC 9110 §11.6.1 syntax), or "".
func bearerError(values []string) string {
	for _, v := range values {
		scheme := ""
		p := challengeParser{s: v}
		for !p.done() {
			name := p.token()
			if name == "" {
				p.skip() // junk: move on
				continue
			}
			p.spaces()
			if p.peek() == '=' {
				p.pos++
				p.spaces()
				val := p.value()
				if strings.EqualFold(scheme, "bearer") && strings.EqualFold(name, "error") {
					return val
				}
			} else {
				scheme = name // a new challenge starts
			}
			p.spaces()
			if p.peek() == ',' {
				p.pos++
			}
			p.spaces()
		}
	}
	return ""
}

type challengeParser struct {
	s   string
	pos int
}

func (p *challengeParser) done() bool { return p.pos >= len(p.s) }

func (p *challengeParser) peek() byte {
	if p.done() {
		return 0
	}
	return p.s[p.pos]
}

func (p *challengeParser) spaces() {
	for !p.done() && (p.s[p.pos] == ' ' || p.s[p.pos] == '\t') {
		p.pos++
	}
}

func (p *challengeParser) skip() { p.pos++ }

// token reads an RFC 9110 token (token68 padding '=' is left for the caller).
func (p *challengeParser) token() string {
	start := p.pos
	for !p.done() && isTokenChar(p.s[p.pos]) {
		p.pos++
	}
	return p.s[start:p.pos]
}

// value reads a token or a quoted-string.
func (p *challengeParser) value() string {
	if p.peek() != '"' {
		return p.token()
	}
	p.pos++
	var b strings.Builder
	for !p.done() {
		c := p.s[p.pos]
		p.pos++
		switch {
		case c == '\\' && !p.done():
			b.WriteByte(p.s[p.pos])
			p.pos++
		case c == '"':
			return b.String()
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

func isTokenChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}
