package server

import (
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/utils/clock"

	"rotor.dev/rotor/pkg/accounts"
	"rotor.dev/rotor/pkg/issuer"
	"rotor.dev/rotor/pkg/keys"
	"rotor.dev/rotor/pkg/workload"
)

// Options are the flags shared by `rotor serve` and `rotor dev`.
type Options struct {
	Namespace     string
	IssuerURL     string
	ListenAddress string
	TLSCertFile   string
	TLSKeyFile    string
	InsecureHTTP  bool

	AccessTokenTTL     time.Duration
	RefreshTokenTTL    time.Duration
	SessionMaxLifetime time.Duration
	SessionCacheSize   int
	RefreshReuseGrace  time.Duration
	PasswordGrant      bool
	Audience           string
	DefaultClientID    string
	ClockSkew          time.Duration
	RevokedRetention   time.Duration
	// SessionGCRate bounds the collector's deletes of ended sessions per
	// second (0: none).
	SessionGCRate float64

	MaxSessionsPerSubject       int
	SessionsPerSubjectBurst     int
	SessionsPerSubjectPerMinute float64

	KeyAlgorithm      string
	KeyRotationPeriod time.Duration
	KeyPrepublish     time.Duration
	JWKSMaxAge        time.Duration

	ServiceAccountAudience string
	TokenExchangeAllow     stringList
	IntrospectionAllow     stringList

	LoginFailuresPerMinute float64
	LoginFailureBurst      int

	UnauthenticatedBurst     int
	UnauthenticatedPerSecond float64
	TrustedProxies           stringList

	APIQPS float64
	// MemoryLimitRatio is the share of the container's memory limit that
	// `rotor serve` sets as the Go runtime's soft limit (pkg/memlimit).
	MemoryLimitRatio float64
	APIBurst         int
	APITimeout       time.Duration

	MetricsAddress string
	MetricsSecure  bool
	ProbeAddress   string
	LeaderElect    bool

	// Clock lets tests move time; not a flag.
	Clock clock.Clock
	// LeaseDuration, RenewDeadline and RetryPeriod tune leader election
	// (zero: controller-runtime's 15s, 10s, 2s); tests shorten them.
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
}

// DefaultMaxSessionsPerSubject is the default of --max-sessions-per-subject.
// A person has a handful of devices; a workload's exchanged sessions end
// with its ServiceAccount token (an hour, typically), so a pod holds one or
// two: 100 fits a Deployment of about 50 replicas sharing a ServiceAccount.
// It bounds what one credential can store at 100 objects (~100 KiB of
// etcd) instead of one per login for the refresh-token lifetime.
const DefaultMaxSessionsPerSubject = 100

// DefaultOptions are the documented defaults.
func DefaultOptions() Options {
	ns := os.Getenv("POD_NAMESPACE")
	if ns == "" {
		ns = "rotor-system"
	}
	return Options{
		Namespace:                ns,
		ListenAddress:            ":8443",
		AccessTokenTTL:           20 * time.Minute,
		RefreshTokenTTL:          7 * 24 * time.Hour,
		SessionMaxLifetime:       30 * 24 * time.Hour,
		SessionCacheSize:         10000,
		RefreshReuseGrace:        5 * time.Second,
		PasswordGrant:            true,
		Audience:                 "rotor",
		ClockSkew:                2 * time.Minute,
		RevokedRetention:         time.Hour,
		SessionGCRate:            25,
		KeyAlgorithm:             string(keys.ES256),
		KeyRotationPeriod:        24 * time.Hour,
		KeyPrepublish:            time.Hour,
		JWKSMaxAge:               15 * time.Minute,
		ServiceAccountAudience:   "rotor",
		LoginFailuresPerMinute:   accounts.DefaultFailuresPerMinute,
		LoginFailureBurst:        accounts.DefaultBurst,
		UnauthenticatedBurst:     issuer.DefaultUnauthenticatedBurst,
		UnauthenticatedPerSecond: issuer.DefaultUnauthenticatedPerSecond,
		APIQPS:                   500,
		MemoryLimitRatio:         0.9,
		APIBurst:                 1000,
		APITimeout:               5 * time.Second,
		MetricsAddress:           ":9090",
		MetricsSecure:            true,
		ProbeAddress:             ":8081",
		LeaderElect:              true,

		MaxSessionsPerSubject:       DefaultMaxSessionsPerSubject,
		SessionsPerSubjectBurst:     issuer.DefaultSessionsPerSubjectBurst,
		SessionsPerSubjectPerMinute: issuer.DefaultSessionsPerSubjectPerMinute,
	}
}

// AddFlags registers the issuer flags. Defaults are o's current values.
func (o *Options) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.Namespace, "namespace", o.Namespace, "Namespace of rotor's Secrets, RefreshTokens and leader-election Lease (default $POD_NAMESPACE or rotor-system).")
	fs.StringVar(&o.IssuerURL, "issuer-url", o.IssuerURL, "Issuer identifier: the iss claim and base URL of discovery. Must be the URL clients dial.")
	fs.StringVar(&o.ListenAddress, "listen-address", o.ListenAddress, "Address the issuer listens on.")
	fs.StringVar(&o.TLSCertFile, "tls-cert-file", o.TLSCertFile, "PEM certificate for HTTPS (reloaded when it changes).")
	fs.StringVar(&o.TLSKeyFile, "tls-key-file", o.TLSKeyFile, "PEM private key for HTTPS.")
	fs.BoolVar(&o.InsecureHTTP, "insecure-http", o.InsecureHTTP, "Serve plain HTTP. OAuth requires TLS: only for local development.")
	fs.DurationVar(&o.AccessTokenTTL, "access-token-ttl", o.AccessTokenTTL, "Lifetime of access tokens.")
	fs.DurationVar(&o.RefreshTokenTTL, "refresh-token-ttl", o.RefreshTokenTTL, "Sliding lifetime of refresh tokens: a session unused this long expires.")
	fs.DurationVar(&o.SessionMaxLifetime, "session-max-lifetime", o.SessionMaxLifetime, "Absolute lifetime of a session, however often it is refreshed.")
	fs.IntVar(&o.SessionCacheSize, "session-cache-size", o.SessionCacheSize, "Sessions kept in each replica's LRU cache.")
	fs.DurationVar(&o.RefreshReuseGrace, "refresh-reuse-grace", o.RefreshReuseGrace, "A replay of the previous refresh token within this long after its rotation is refused without revoking the session (a client racing itself). 0 is strict.")
	fs.BoolVar(&o.PasswordGrant, "password-grant", o.PasswordGrant, "Enable grant_type=password.")
	fs.StringVar(&o.Audience, "audience", o.Audience, "The aud that /userinfo accepts. Which audiences a client's tokens carry is the OAuthClient's spec.audiences.")
	fs.StringVar(&o.DefaultClientID, "default-client-id", o.DefaultClientID, "OAuthClient (in --namespace) that token requests without client_id are made by; it must be Public. Empty: client_id is required.")
	fs.DurationVar(&o.ClockSkew, "clock-skew", o.ClockSkew, "Allowed clock skew when verifying tokens.")
	fs.Float64Var(&o.SessionGCRate, "session-gc-rate", o.SessionGCRate, "Deletes of ended (expired, or revoked and retained) sessions per second, at most; 0: no bound. Ended sessions are refused already: deleting them slowly leaves the API server to the live clients.")
	fs.DurationVar(&o.RevokedRetention, "revoked-session-retention", o.RevokedRetention, "How long revoked sessions stay visible (kubectl get rt) before garbage collection deletes them.")
	fs.IntVar(&o.MaxSessionsPerSubject, "max-sessions-per-subject", o.MaxSessionsPerSubject, "Live sessions one subject (account or ServiceAccount) may hold. Beyond it the leader deletes the oldest session of the same client, or the subject's oldest, shortly after the new one is created (rotor_sessions_evicted_total). Revoked sessions and sessions created before rotor labelled them do not count. Keep it above twice the replicas of the largest Deployment sharing one ServiceAccount (a pod holds one or two exchanged sessions). 0 disables the limit.")
	fs.IntVar(&o.SessionsPerSubjectBurst, "sessions-per-subject-burst", o.SessionsPerSubjectBurst, "New sessions (successful logins and token exchanges) one subject may create in a burst, on each replica; over it they are answered 429 with Retry-After and create nothing. 0 disables the limit.")
	fs.Float64Var(&o.SessionsPerSubjectPerMinute, "sessions-per-subject-per-minute", o.SessionsPerSubjectPerMinute, "New sessions one subject may create per minute after --sessions-per-subject-burst, on each replica.")
	fs.StringVar(&o.KeyAlgorithm, "key-algorithm", o.KeyAlgorithm, "Algorithm of generated signing keys: ES256, EdDSA or RS256.")
	fs.DurationVar(&o.KeyRotationPeriod, "key-rotation-period", o.KeyRotationPeriod, "How long a signing key signs before the next one takes over.")
	fs.DurationVar(&o.KeyPrepublish, "key-prepublish", o.KeyPrepublish, "How long the next signing key is published before it signs; longer than --jwks-max-age.")
	fs.DurationVar(&o.JWKSMaxAge, "jwks-max-age", o.JWKSMaxAge, "Cache-Control max-age of the JWKS.")
	fs.StringVar(&o.ServiceAccountAudience, "serviceaccount-audience", o.ServiceAccountAudience, "Audience ServiceAccount tokens must be minted for (kubectl create token SA --audience ...) to be exchanged or to call /introspect.")
	fs.Var(&o.TokenExchangeAllow, "token-exchange-allow", "Comma-separated <namespace>/<serviceaccount> patterns (path.Match, e.g. team-a/*) allowed to exchange their ServiceAccount token (RFC 8693). Empty disables token exchange.")
	fs.Var(&o.IntrospectionAllow, "introspection-allow", "Comma-separated <namespace>/<serviceaccount> patterns allowed to call /introspect with their ServiceAccount token. Empty disables introspection.")
	fs.Float64Var(&o.LoginFailuresPerMinute, "login-failures-per-minute", o.LoginFailuresPerMinute, "Failed logins allowed per minute per username and client address, after the burst (a username over all addresses may fail 5x the burst, an address over all usernames 10x the burst at 10x the rate).")
	fs.IntVar(&o.LoginFailureBurst, "login-failure-burst", o.LoginFailureBurst, "Failed logins allowed in a burst per username and client address.")
	fs.IntVar(&o.UnauthenticatedBurst, "unauthenticated-burst", o.UnauthenticatedBurst, "Failed requests allowed in a burst per client address on the requests that cost an API request before the client proves anything: refresh-token and token-exchange grants, /revoke and /introspect. Over it they are answered 429 (503 on /revoke) with Retry-After and make no API request. Successful requests spend nothing. 0 disables the limit.")
	fs.Float64Var(&o.UnauthenticatedPerSecond, "unauthenticated-per-second", o.UnauthenticatedPerSecond, "Failed requests allowed per second per client address after --unauthenticated-burst.")
	fs.Var(&o.TrustedProxies, "trusted-proxies", "Comma-separated CIDRs (or addresses) of reverse proxies whose X-Forwarded-For is believed: when the TCP peer is inside one, the client address of the per-address limits (--unauthenticated-*, --login-failure-*) is the right-most X-Forwarded-For entry outside them. Empty: the TCP peer is the client and X-Forwarded-For is ignored.")
	fs.Float64Var(&o.MemoryLimitRatio, "memory-limit-ratio", o.MemoryLimitRatio, "Share of the container's memory limit (cgroup) set as the Go runtime's soft memory limit, so that rotor collects garbage harder near it rather than being OOM-killed; 0 disables it, and GOMEMLIMIT, if set, wins.")
	fs.Float64Var(&o.APIQPS, "api-qps", o.APIQPS, "Queries per second of the issuer's session client to the API server.")
	fs.IntVar(&o.APIBurst, "api-burst", o.APIBurst, "Burst of the issuer's session client to the API server.")
	fs.DurationVar(&o.APITimeout, "api-timeout", o.APITimeout, "Bound on each API request of the token path; when the API server does not answer in time, clients get 503 temporarily_unavailable.")
	fs.StringVar(&o.MetricsAddress, "metrics-bind-address", o.MetricsAddress, "Address of the Prometheus metrics endpoint; 0 disables it.")
	fs.BoolVar(&o.MetricsSecure, "metrics-secure", o.MetricsSecure, "Serve metrics over HTTPS (a self-signed certificate) to callers whose Kubernetes token may GET /metrics (TokenReview and SubjectAccessReview). false serves plain HTTP to anyone who can reach the port.")
	fs.StringVar(&o.ProbeAddress, "health-probe-bind-address", o.ProbeAddress, "Address of /healthz and /readyz.")
	fs.BoolVar(&o.LeaderElect, "leader-elect", o.LeaderElect, "Elect a leader for the controllers; every replica serves the issuer.")
}

// Validate checks the options together.
func (o *Options) Validate() error {
	var errs []error
	u, err := url.Parse(o.IssuerURL)
	switch {
	case o.IssuerURL == "":
		errs = append(errs, errors.New("--issuer-url is required"))
	case err != nil || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil:
		errs = append(errs, fmt.Errorf("--issuer-url %q must be an absolute URL without user, query or fragment", o.IssuerURL))
	case u.Path != "":
		// rotor serves its endpoints at the root, and iss must be exactly
		// what discovery says (no trailing slash either).
		errs = append(errs, fmt.Errorf("--issuer-url %q must have no path", o.IssuerURL))
	case u.Scheme == "http" && !o.InsecureHTTP:
		errs = append(errs, errors.New("--issuer-url is http: but --insecure-http is not set"))
	case u.Scheme != "https" && u.Scheme != "http":
		errs = append(errs, fmt.Errorf("--issuer-url scheme must be https"))
	}
	if !o.InsecureHTTP && (o.TLSCertFile == "" || o.TLSKeyFile == "") {
		errs = append(errs, errors.New("--tls-cert-file and --tls-key-file are required unless --insecure-http"))
	}
	if _, err := keys.ParseAlgorithm(o.KeyAlgorithm); err != nil {
		errs = append(errs, err)
	}
	if o.SessionGCRate < 0 {
		errs = append(errs, fmt.Errorf("--session-gc-rate %v must not be negative", o.SessionGCRate))
	}
	if o.MemoryLimitRatio < 0 || o.MemoryLimitRatio > 1 {
		errs = append(errs, fmt.Errorf("--memory-limit-ratio %v must be in [0, 1]", o.MemoryLimitRatio))
	}
	for name, d := range map[string]time.Duration{
		"--access-token-ttl": o.AccessTokenTTL, "--refresh-token-ttl": o.RefreshTokenTTL,
		"--session-max-lifetime": o.SessionMaxLifetime, "--key-rotation-period": o.KeyRotationPeriod,
		"--key-prepublish": o.KeyPrepublish, "--jwks-max-age": o.JWKSMaxAge,
	} {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%s must be positive", name))
		}
	}
	if o.RefreshReuseGrace < 0 || o.ClockSkew < 0 || o.RevokedRetention < 0 {
		errs = append(errs, errors.New("--refresh-reuse-grace, --clock-skew and --revoked-session-retention must not be negative"))
	}
	if o.KeyPrepublish <= o.JWKSMaxAge {
		errs = append(errs, errors.New("--key-prepublish must be longer than --jwks-max-age, or verifiers may see a kid they could not have fetched"))
	}
	if o.KeyPrepublish >= o.KeyRotationPeriod {
		errs = append(errs, errors.New("--key-prepublish must be shorter than --key-rotation-period"))
	}
	if _, err := workload.ParsePolicy(o.TokenExchangeAllow); err != nil {
		errs = append(errs, fmt.Errorf("--token-exchange-allow: %w", err))
	}
	if _, err := workload.ParsePolicy(o.IntrospectionAllow); err != nil {
		errs = append(errs, fmt.Errorf("--introspection-allow: %w", err))
	}
	if o.DefaultClientID != "" {
		if errs1 := validation.IsDNS1123Subdomain(o.DefaultClientID); len(errs1) > 0 {
			errs = append(errs, fmt.Errorf("--default-client-id %q must name an OAuthClient: %s", o.DefaultClientID, strings.Join(errs1, "; ")))
		}
	}
	if o.ServiceAccountAudience == "" {
		errs = append(errs, errors.New("--serviceaccount-audience must not be empty"))
	}
	if o.APITimeout <= 0 {
		errs = append(errs, errors.New("--api-timeout must be positive"))
	}
	if o.UnauthenticatedBurst < 0 {
		errs = append(errs, errors.New("--unauthenticated-burst must not be negative (0 disables the limit)"))
	}
	if o.UnauthenticatedBurst > 0 && !(o.UnauthenticatedPerSecond > 0) {
		errs = append(errs, errors.New("--unauthenticated-per-second must be positive: at 0 an address that spent its burst would be refused for good"))
	}
	if _, err := parsePrefixes(o.TrustedProxies); err != nil {
		errs = append(errs, fmt.Errorf("--trusted-proxies: %w", err))
	}
	if o.SessionCacheSize <= 0 {
		errs = append(errs, errors.New("--session-cache-size must be positive"))
	}
	if o.MaxSessionsPerSubject < 0 || o.SessionsPerSubjectBurst < 0 {
		errs = append(errs, errors.New("--max-sessions-per-subject and --sessions-per-subject-burst must not be negative (0 disables them)"))
	}
	if o.SessionsPerSubjectBurst > 0 && !(o.SessionsPerSubjectPerMinute > 0) {
		errs = append(errs, errors.New("--sessions-per-subject-per-minute must be positive: at 0 a subject that spent its burst could never log in again"))
	}
	if o.AccessTokenTTL > time.Hour {
		errs = append(errs, errors.New("--access-token-ttl must be at most 1h (RFC 6750 section 5.3)"))
	}
	return errors.Join(errs...)
}

// trustedProxies are --trusted-proxies, which Validate has checked.
func (o *Options) trustedProxies() []netip.Prefix {
	p, _ := parsePrefixes(o.TrustedProxies)
	return p
}

// parsePrefixes reads CIDRs, or single addresses as /32 and /128. A prefix
// of length 0 is refused: trusting every peer would let any client choose
// its own address.
func parsePrefixes(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range list {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return nil, fmt.Errorf("%q is neither a CIDR nor an IP address", s)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			// Peers are compared unmapped.
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		if p.Bits() == 0 {
			return nil, fmt.Errorf("%q would trust every peer, so any client could set its own address", s)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// stringList is a comma-separated flag.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ",") }

func (l *stringList) Set(v string) error {
	*l = nil
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}
