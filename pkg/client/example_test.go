package client_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"rotor.dev/rotor/pkg/client"
)

// A workload that logs in with an account.
func ExamplePasswordSource() {
	rotor := fakeRotor() // stands in for https://rotor.example
	defer rotor.Close()

	src := client.PasswordSource(context.Background(), client.Config{IssuerURL: rotor.URL}, "alice", "s3cret")
	tok, err := src.Token() // logs in; later calls refresh when needed
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(tok.Type(), tok.AccessToken)
	// Output: Bearer at-1
}

// A pod that exchanges its projected ServiceAccount token. In the pod spec:
//
//	volumes:
//	- name: rotor-token
//	  projected:
//	    sources:
//	    - serviceAccountToken: {audience: rotor, path: rotor, expirationSeconds: 3600}
//
// mounted at /var/run/secrets/tokens, the default file of ServiceAccountSource.
func ExampleServiceAccountSource() {
	rotor := fakeRotor()
	defer rotor.Close()
	dir, _ := os.MkdirTemp("", "sa")
	defer os.RemoveAll(dir)
	tokenFile := filepath.Join(dir, "rotor")
	_ = os.WriteFile(tokenFile, []byte("eyJhbGciOiJSUzI1NiJ9.sa.token"), 0o600)

	src := client.ServiceAccountSource(context.Background(), client.Config{IssuerURL: rotor.URL, Audience: "orders"}, tokenFile)
	tok, err := src.Token()
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(tok.AccessToken, tok.Extra("issued_token_type"))
	// Output: at-1 urn:ietf:params:oauth:token-type:access_token
}

// A service that calls an API as itself, not on behalf of a user: a
// Confidential OAuthClient with the client_credentials grant. Its secret is
// sent as HTTP Basic (set AuthStyle: client.AuthStylePost for the form);
// the Source asks again with it before the token expires.
func ExampleClientCredentialsSource() {
	rotor := fakeRotor()
	defer rotor.Close()

	src := client.ClientCredentialsSource(context.Background(), client.Config{
		IssuerURL:    rotor.URL,
		ClientID:     "billing",
		ClientSecret: "s3cret", // e.g. read from a mounted Secret
		Audience:     "orders",
		Scope:        "orders.read",
	})
	tok, err := src.Token()
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(tok.AccessToken, "scope:", tok.Extra("scope"))
	// Output: at-1 scope: orders.read
}

// Calling an API: the transport adds the token, and refreshes and retries
// once when the API refuses it.
func ExampleNewTransport() {
	rotor := fakeRotor()
	defer rotor.Close()
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "API saw:", r.Header.Get("Authorization"))
	}))
	defer api.Close()

	src := client.PasswordSource(context.Background(), client.Config{IssuerURL: rotor.URL}, "alice", "s3cret")
	httpClient := &http.Client{Transport: client.NewTransport(src, nil)}
	resp, err := httpClient.Get(api.URL)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Print(string(body))
	// Output: API saw: Bearer at-1
}

// An API that accepts rotor access tokens for its audience.
func ExampleVerifier_Middleware() {
	rotor, mint := fakeRotorWithKeys()
	defer rotor.Close()

	verifier, err := client.NewVerifier(context.Background(), rotor.URL, "orders")
	if err != nil {
		fmt.Println(err)
		return
	}
	orders := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		claims, _ := client.ClaimsFromContext(r.Context())
		fmt.Fprintf(w, "orders of %s (groups %v)\n", claims.Subject, claims.Groups)
	})
	api := httptest.NewServer(verifier.Middleware(orders))
	defer api.Close()

	for _, auth := range []string{"", "Bearer " + mint("alice", "orders"), "Bearer " + mint("alice", "billing")} {
		req, _ := http.NewRequest(http.MethodGet, api.URL, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			fmt.Println(err)
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			fmt.Println(resp.StatusCode, strings.TrimSpace(string(body)))
		} else {
			fmt.Println(resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
		}
	}
	// Output:
	// 401 Bearer realm="rotor"
	// 200 orders of alice (groups [dev])
	// 401 Bearer realm="rotor", error="invalid_token", error_description="the access token is invalid"
}

// Verifying a token outside net/http, e.g. in a gRPC interceptor.
func ExampleVerifier_Verify() {
	rotor, mint := fakeRotorWithKeys()
	defer rotor.Close()

	verifier, err := client.NewVerifier(context.Background(), rotor.URL, "orders")
	if err != nil {
		fmt.Println(err)
		return
	}
	claims, err := verifier.Verify(context.Background(), mint("alice", "orders"))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(claims.Subject, claims.ClientID, claims.Groups)
	_, err = verifier.Verify(context.Background(), "not-a-token")
	fmt.Println(err)
	// Output:
	// alice rotor [dev]
	// invalid access token: token is malformed: token contains an invalid number of segments
}

// fakeRotor answers rotor's token endpoint for alice/s3cret, for any
// ServiceAccount token and for client credentials billing/s3cret in HTTP
// Basic, with access tokens at-1, at-2, ... and the scope asked for.
func fakeRotor() *httptest.Server {
	var mu sync.Mutex
	n := 0
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		ok := false
		switch r.PostForm.Get("grant_type") {
		case client.GrantPassword:
			ok = r.PostForm.Get("username") == "alice" && r.PostForm.Get("password") == "s3cret"
		case client.GrantTokenExchange:
			ok = r.PostForm.Get("subject_token") != "" && r.PostForm.Get("subject_token_type") == client.TokenTypeJWT
		case client.GrantRefreshToken:
			ok = r.PostForm.Get("refresh_token") != ""
		case client.GrantClientCredentials:
			id, secret, _ := r.BasicAuth()
			ok = id == "billing" && secret == "s3cret" // nothing to unescape in these
		}
		if !ok {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_grant"})
			return
		}
		mu.Lock()
		n++
		body := map[string]any{"access_token": fmt.Sprintf("at-%d", n), "token_type": "Bearer", "expires_in": 1200}
		mu.Unlock()
		if r.PostForm.Get("grant_type") != client.GrantClientCredentials {
			body["refresh_token"] = fmt.Sprintf("rt-%d", n)
		}
		if scope := r.PostForm.Get("scope"); scope != "" {
			body["scope"] = scope
		}
		if r.PostForm.Get("grant_type") == client.GrantTokenExchange {
			body["issued_token_type"] = "urn:ietf:params:oauth:token-type:access_token"
		}
		writeJSON(w, http.StatusOK, body)
	}))
}

// fakeRotorWithKeys serves rotor's discovery and JWKS for one ES256 key, and
// mints access tokens signed by it.
func fakeRotorWithKeys() (*httptest.Server, func(sub, aud string) string) {
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	key := newKey(jwt.SigningMethodES256, priv)
	mux := http.NewServeMux()
	srv := httptest.NewServer(mux)
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"issuer": srv.URL, "jwks_uri": srv.URL + "/keys"})
	})
	mux.HandleFunc("GET /keys", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"keys": []any{key.jwk()}})
	})
	mint := func(sub, aud string) string {
		now := time.Now()
		t := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{
			"iss": srv.URL, "sub": sub, "aud": aud, "client_id": "rotor", "groups": []string{"dev"},
			"exp": now.Add(20 * time.Minute).Unix(), "iat": now.Unix(), "jti": "1",
		})
		t.Header["typ"], t.Header["kid"] = "at+jwt", key.kid
		signed, _ := t.SignedString(priv)
		return signed
	}
	return srv, mint
}
