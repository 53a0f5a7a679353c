// Package login is `rotor login`, `rotor logout` and `rotor kubeconfig`: a
// kubectl exec credential plugin (client.authentication.k8s.io/v1) that
// hands kubectl rotor access tokens, for API servers that trust rotor's JWTs
// through structured authentication configuration.
//
// The plugin keeps one session per issuer, client, audience and user in a
// private cache directory and holds an exclusive lock on it from read to
// write, so that any number of kubectl processes share one session and
// refresh it once: two refreshes of one refresh token would look like a
// replay to rotor, which revokes the session.
//
// It imports nothing of rotor's server.
package login
