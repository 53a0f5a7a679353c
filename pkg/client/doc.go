// Package client is the library workloads import to use rotor: a token
// source that logs in and keeps an access token fresh, an HTTP transport that
// sends it, and a verifier with net/http middleware for APIs that accept
// rotor's access tokens. It imports nothing of rotor's server and never logs.
//
// # Getting tokens
//
// [PasswordSource] logs in with a username and password (RFC 6749 §4.3);
// [ServiceAccountSource] exchanges the pod's projected Kubernetes
// ServiceAccount token (RFC 8693), reading the file again on every exchange
// because the kubelet rotates it; [ClientCredentialsSource] gets a token for
// a Confidential client itself (RFC 6749 §4.4). All return a [*Source], an
// [golang.org/x/oauth2.TokenSource]:
//
//	src := client.PasswordSource(ctx, client.Config{IssuerURL: "https://rotor.example"}, "alice", password)
//	httpClient := &http.Client{Transport: client.NewTransport(src, nil)}
//
// Nobody calls refresh by hand: the Source does, transparently, inside
// [Source.Token]. It refreshes [Config.RefreshMargin] before the access token
// expires (default one minute, at most half the token's lifetime), keeps the
// newest refresh token (rotor rotates them on every refresh; the old one
// never works again and presenting it twice can revoke the session), and
// refreshes once however many goroutines ask at once. When rotor
// refuses the refresh token (invalid_grant: expired, revoked, replayed), the
// Source logs in again with its credentials or ServiceAccount token. When
// rotor is unreachable or answers 503, the refresh token is kept and the
// error returned; a later call tries again.
//
// The [NewTransport] round tripper adds the Authorization header and, when an
// API answers 401 with error="invalid_token" (a token revoked or signed by a
// key the API has not seen), drops the cached access token, gets a new one
// and retries the request once.
//
// # Clients
//
// [Config.ClientID] names the OAuth client. A Public client sends it as
// client_id and nothing more. A Confidential client also sets
// [Config.ClientSecret], and then every request to the token and revocation
// endpoints (logins, refreshes, revocations) authenticates it the same way:
// by default as HTTP Basic, with the id and secret form-urlencoded before
// they are joined (client_secret_basic, RFC 6749 §2.3.1), or with
// [AuthStylePost] as client_id and client_secret form parameters
// (client_secret_post); never both. The secret never appears in an error.
// A refresh comes from the client that logged in, as rotor requires.
//
// [Config.Scope] asks for scopes on logins, exchanges and client credentials
// requests; what rotor granted is the token's Extra("scope"), kept across
// refreshes. A client credentials Source has no refresh token: it asks again
// with its credentials before the access token expires, and its
// [Source.Revoke] does nothing.
//
// # Accepting tokens
//
// [NewVerifier] fetches rotor's discovery document and JWKS and checks access
// tokens as RFC 9068 asks of a resource server: typ at+jwt, a signature by a
// published key with that key's own algorithm (ES256, EdDSA or RS256 only),
// the exact issuer, the audience, and exp/nbf/iat within a leeway. An
// unknown kid refetches the JWKS at most once per ten seconds, and a key set
// older than five minutes is fetched again, so a key the issuer withdraws
// stops verifying within that time.
// [Verifier.Middleware] answers 401 with an RFC 6750 challenge and hands the
// verified claims to the next handler, which reads them with
// [ClaimsFromContext].
package client
