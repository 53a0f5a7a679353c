package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// wires holds one keep-alive HTTP/1.1 connection to rotor per refreshing
// client, written and read directly. net/http's client hands every request
// to two goroutines of its own (a write loop and a read loop, so four
// goroutine switches a request); measured on this machine's two cores at 8
// clients, that was about a tenth of the bench process's CPU per refresh,
// CPU taken from rotor and the API server that a real client, running
// elsewhere, never takes. The refresh measurements are about rotor, so
// their load generator costs as little as it can; logins and the other
// grants still go through net/http (issuerClient.post).
type wires struct {
	addr, header string // host:port; the request line and headers but Content-Length
	mu           sync.Mutex
	conns        map[int]*wire
}

type wire struct {
	conn net.Conn
	br   *bufio.Reader
	buf  []byte
}

// newWires prepares the requests of ic's refreshes (nil for a URL that is
// not plain http://host:port).
func newWires(ic *issuerClient) *wires {
	u, err := url.Parse(ic.url)
	if err != nil || u.Scheme != "http" || u.Port() == "" || strings.Trim(u.Path, "/") != "" {
		return nil
	}
	var h strings.Builder
	fmt.Fprintf(&h, "POST /token HTTP/1.1\r\nHost: %s\r\nContent-Type: application/x-www-form-urlencoded\r\nAccept: application/json\r\n", u.Host)
	if ic.id != "" {
		// As basicAuth does (RFC 6749 section 2.3.1: form-encoded, then Basic).
		cred := url.QueryEscape(ic.id) + ":" + url.QueryEscape(ic.secret)
		fmt.Fprintf(&h, "Authorization: Basic %s\r\n", base64.StdEncoding.EncodeToString([]byte(cred)))
	}
	return &wires{addr: u.Host, header: h.String(), conns: map[int]*wire{}}
}

// refresh redeems token as client w on w's connection, dialling it first if
// needed; a connection that failed or that rotor closed is dropped, and the
// next refresh dials anew.
func (ws *wires) refresh(ctx context.Context, w int, token string) (*tokenReply, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ws.mu.Lock()
	c := ws.conns[w]
	delete(ws.conns, w)
	ws.mu.Unlock()
	if c == nil {
		conn, err := (&net.Dialer{Timeout: 10 * time.Second}).DialContext(ctx, "tcp", ws.addr)
		if err != nil {
			return nil, err
		}
		c = &wire{conn: conn, br: bufio.NewReaderSize(conn, 4096)}
	}
	reply, keep, err := c.post(ws.header, "grant_type=refresh_token&refresh_token="+url.QueryEscape(token))
	if !keep {
		_ = c.conn.Close()
		return reply, err
	}
	ws.mu.Lock()
	ws.conns[w] = c
	ws.mu.Unlock()
	return reply, err
}

// post sends one request and reads its answer; keep says whether the
// connection can carry the next one.
func (c *wire) post(header, body string) (*tokenReply, bool, error) {
	_ = c.conn.SetDeadline(time.Now().Add(30 * time.Second))
	c.buf = append(c.buf[:0], header...)
	c.buf = append(c.buf, "Content-Length: "...)
	c.buf = strconv.AppendInt(c.buf, int64(len(body)), 10)
	c.buf = append(c.buf, "\r\n\r\n"...)
	c.buf = append(c.buf, body...)
	if _, err := c.conn.Write(c.buf); err != nil {
		return nil, false, err
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		return nil, false, err
	}
	raw, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		return nil, false, err
	}
	keep := !resp.Close
	reply := &tokenReply{}
	if err := json.Unmarshal(raw, reply); err != nil {
		return nil, keep, fmt.Errorf("%s: %q is not JSON", resp.Status, raw)
	}
	if resp.StatusCode != http.StatusOK || reply.AccessToken == "" {
		return nil, keep, fmt.Errorf("%s: %s: %s", resp.Status, reply.Error, reply.Description)
	}
	if reply.RefreshToken == "" {
		return nil, keep, errors.New("no refresh token")
	}
	return reply, keep, nil
}
