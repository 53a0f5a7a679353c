// Command bench measures rotor against the limits it is designed around
// (shared/reference/limits.md) and prints one markdown table:
//
//   - refresh throughput and latency of an in-process rotor, side by side
//     with raw conditional updates of the same RefreshToken objects (the
//     API server's limit, which a refresh cannot beat: it is one such update);
//   - the floor under both: conditional updates of a minimal custom resource
//     (floor.go: a Blob, one string field, no validation, padded to the
//     stored size of a session), with the CPU the API server and etcd spend
//     per write on each, and where the bytes of a stored session go;
//     --apiserver-profile takes CPU profiles of the API server under each
//     load;
//   - API-server requests per login and per warm refresh, from the API
//     server's own apiserver_request_total;
//   - signing and verification cost next to the raw primitives (go test
//     -bench in pkg/tokens and pkg/client);
//   - password-grant throughput (bcrypt-bound by design);
//   - client_credentials throughput and latency of the in-process rotor,
//     side by side with a bare net/http handler doing the same work (its
//     limit: the grant makes no API request), and the API requests it made
//     (none);
//   - the RSS of a separate `rotor serve` with 0, N/10 and N stored sessions,
//     and how fast its collector deletes those N sessions when they expire
//     together, next to raw deletes (a smaller sample) at the same
//     parallelism;
//   - refresh throughput with 1, 2 and 3 `rotor serve` replicas (replicas.go:
//     separate processes, leader election on, every one serving its share
//     of the clients) against the one API server at the same total of
//     clients, the ratio to one replica, and the CPU per refresh of rotor,
//     the API server, etcd and the load generator: on 2 cores they share
//     the machine, so the figure is the ratio and where the CPU went, not
//     a speed-up. --replicas-only runs only this.
//
// With --scale-only (`make bench-scale`, bigscale.go) it measures only a
// large store instead, on a control plane of its own: a million sessions
// seeded into etcd, etcd's size and the API server's memory per session,
// rotor serve's RSS and time to ready, and its collector on an expiring
// share while live clients refresh (gcload.go).
//
// Every token request is made by a registered OAuth client: the bench
// creates them (OAuthClient resources, and the Secrets of Confidential
// ones) before it starts rotor, and waits until they are Ready.
//
// Everything listens on and dials 127.0.0.1 only, every phase is bounded by
// a request count or a timeout, and the control plane is stopped at the end.
// Run it with `make bench`; flags scale it down for development:
//
//	go run ./hack/bench --refreshes 200 --sessions 2000 --logins 8 --cc-requests 4000 --bench-count 1 --benchtime 100ms
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	ctrl "sigs.k8s.io/controller-runtime"

	"rotor.dev/rotor/pkg/dev/controlplane"
)

type config struct {
	out      string
	rotorBin string

	clients     []int
	refreshes   int
	rounds      int
	logins      int
	loginConc   int
	sessions    int
	gcSessions  int
	rawDeletes  int
	parallelism int
	settle      time.Duration
	// expiryMargin is the slack before the sessions expire (scale.go).
	expiryMargin time.Duration

	// ccRequests client_credentials grants per side (rotor, bare) from
	// ccConc clients, in ccRounds runs per side.
	ccRequests, ccConc, ccRounds int
	// ccProfile is where CPU and allocation profiles of the
	// client_credentials runs go.
	ccProfile string
	// refreshProfile is where CPU and allocation profiles of the bench
	// process (in-process rotor and load generator) during each measured
	// rotor refresh, raw update and floor update run go.
	refreshProfile string
	// apiProfile is where CPU profiles of the API server during the
	// refresh, RefreshToken-PUT and floor-PUT loads go; apiProfileSeconds
	// long each.
	apiProfile        string
	apiProfileSeconds int

	benchCount int
	benchtime  string

	// rotorAPIQPS is the in-process rotor's --api-qps (its burst twice
	// that).
	rotorAPIQPS float64

	skipCrypto, skipRefresh, skipScale bool

	// scaleOnly is `make bench-scale` (bigscale.go): --sessions seeded in
	// chunks of seedChunk, the API server stopped at apiRSSLimit.
	scaleOnly   bool
	seedChunk   int
	apiRSSLimit int64
	// gcExpiring sessions expire together after rotor's start, collected
	// while gcClients clients refresh.
	gcExpiring, gcClients int
	// rotorWait bounds the wait for rotor serve's readiness and the
	// collector's list.
	rotorWait time.Duration

	// replicas are the numbers of rotor serve replicas the replicas
	// measurement (replicas.go) compares, replicaClients clients in all
	// refreshing replicaRefreshes times per level, split over replicaRounds
	// rounds; none skips it. replicasOnly runs nothing else.
	replicas                                        []int
	replicaClients, replicaRefreshes, replicaRounds int
	replicasOnly                                    bool
}

func main() {
	var c config
	var clients, replicas string
	flag.StringVar(&c.out, "out", "hack/bench-results.md", "Markdown file the results table is written to (empty: stdout only).")
	flag.StringVar(&c.rotorBin, "rotor-bin", "bin/rotor", "rotor binary for the scale and GC measurements (a separate process, as deployed).")
	flag.StringVar(&clients, "clients", "1,8", "Concurrency levels of the refresh measurement: clients refreshing their own session back to back.")
	flag.IntVar(&c.refreshes, "refreshes", 6000, "Refreshes per concurrency level, and as many raw updates and floor updates (split over the rounds).")
	flag.IntVar(&c.rounds, "rounds", 6, "Alternate rotor, raw and floor runs this many times, each round starting with the next kind, so that load from elsewhere on a shared machine hits them alike; the ratios to the floor are medians of the rounds' (a multiple of 3 gives each kind every place in the order equally often).")
	flag.IntVar(&c.logins, "logins", 40, "Password logins (bcrypt cost 10); they also create the sessions the refresh clients hold.")
	flag.IntVar(&c.loginConc, "login-concurrency", 2, "Concurrent password logins.")
	flag.IntVar(&c.sessions, "sessions", 100000, "Largest number of stored sessions for the RSS measurement (also measured: 0 and a tenth).")
	flag.IntVar(&c.gcSessions, "gc-sessions", -1, "How many of the --sessions stored sessions expire together after the last RSS sample, for rotor's collector to delete; 0 skips the GC measurement (default and at most: --sessions).")
	flag.IntVar(&c.rawDeletes, "raw-deletes", 10000, "Size of the raw-delete sample the collector is compared with (a rate: smaller than --gc-sessions is enough; at most --gc-sessions).")
	flag.IntVar(&c.parallelism, "parallelism", 8, "Parallel raw deletes; rotor's collector uses 8 workers.")
	flag.DurationVar(&c.settle, "settle", 5*time.Second, "How long RSS is sampled after rotor is ready and has listed the sessions.")
	flag.DurationVar(&c.expiryMargin, "expiry-margin", 30*time.Second, "Slack in the moment the sessions expire, on top of the time estimated (from the measured seed and delete rates) to seed the store, take the RSS samples and run the rest of the raw-delete sample; the raw sample yields to the collector if time runs short, so it is slack too.")
	flag.IntVar(&c.ccRequests, "cc-requests", 20000, "client_credentials grants for rotor, and as many for the bare handler it is compared with (split over the --cc-rounds); 0 skips the measurement.")
	flag.IntVar(&c.ccConc, "cc-clients", 8, "Concurrent clients of the client_credentials measurement (keep-alive HTTP).")
	flag.IntVar(&c.ccRounds, "cc-rounds", 10, "Alternate rotor and bare client_credentials runs this many times (the order swapped each round); the median of the rounds' ratios is reported.")
	flag.StringVar(&c.ccProfile, "cc-profile", "", "Directory to write a CPU profile of each client_credentials run to (<side>-<round>.pprof; the bench process: rotor or the bare handler, and the load generator), with the allocation profile before and after it (.allocs-0, .allocs-1: go tool pprof -diff_base); empty: none.")
	flag.StringVar(&c.refreshProfile, "refresh-profile", "", "Directory to write a CPU profile of the bench process (in-process rotor and load generator) during each measured run of rotor refreshes, raw updates and floor updates to (rotor-<clients>-<round>.pprof, raw-..., floor-...), with allocation profiles as --cc-profile; empty: none.")
	flag.StringVar(&c.apiProfile, "apiserver-profile", "", "Directory to write CPU profiles of the kube-apiserver to (/debug/pprof/profile as the admin user), taken after the refresh rounds while the most clients of --clients refresh (apiserver-refresh.pprof), update the same RefreshTokens raw (apiserver-refreshtoken-put.pprof) and update the floor's Blobs (apiserver-floor-put.pprof), each load running for as long as its profile; empty: none. Read them with go tool pprof -top bin/k8s/kube-apiserver FILE.")
	flag.IntVar(&c.apiProfileSeconds, "apiserver-profile-seconds", 15, "Length of each --apiserver-profile profile.")
	flag.Float64Var(&c.rotorAPIQPS, "rotor-api-qps", 5000, "--api-qps of the in-process rotor of the refresh and client_credentials measurements (burst twice that): above what the API server takes, so that they measure rotor's cost and not its session client's limiter, whose default (500 a second per replica) is reported beside them.")
	flag.IntVar(&c.benchCount, "bench-count", 3, "Rounds of the signing benchmarks (each test binary run once per round); medians are reported.")
	flag.StringVar(&c.benchtime, "benchtime", "500ms", "-test.benchtime of each signing benchmark.")
	flag.BoolVar(&c.skipCrypto, "skip-crypto", false, "Skip the signing benchmarks.")
	flag.BoolVar(&c.skipRefresh, "skip-refresh", false, "Skip the login and refresh measurements.")
	flag.BoolVar(&c.skipScale, "skip-scale", false, "Skip the RSS and GC measurements.")
	flag.BoolVar(&c.scaleOnly, "scale-only", false, "Only the large-store measurement of `make bench-scale` (bigscale.go), on a control plane of its own: --sessions seeded into etcd, the API server caught up, etcd's size and the API server's RSS per session, rotor serve's RSS and time to ready.")
	flag.IntVar(&c.seedChunk, "seed-chunk", 100000, "With --scale-only: sessions seeded per chunk (progress and the API server's RSS are reported between chunks).")
	flag.IntVar(&c.gcExpiring, "gc-expiring", 7500, "With --scale-only: sessions seeded after rotor serve's start (beside --sessions) that expire together, for its collector to delete while --gc-clients clients refresh, at its default --session-gc-rate (25/s: 7,500 take 5 minutes, and the window without the collector is as long again, up to 5); 0 skips it.")
	flag.IntVar(&c.gcClients, "gc-clients", 8, "With --scale-only: live clients (password logins) refreshing back to back during the collection and for as long after it.")
	flag.DurationVar(&c.rotorWait, "rotor-wait", 10*time.Minute, "With --scale-only: how long rotor serve may take to be ready and to list every session (far past the 60s target, to measure a miss).")
	flag.StringVar(&replicas, "replicas", "1,2,3", "Numbers of rotor serve replicas (separate processes, leader election on, every one serving) the replicas measurement compares at the same total of clients; empty or 0 skips it.")
	flag.IntVar(&c.replicaClients, "replica-clients", 8, "Clients in all of the replicas measurement, spread over the replicas (client i on replica i mod N), each refreshing back to back.")
	flag.IntVar(&c.replicaRefreshes, "replica-refreshes", 3000, "Refreshes per replica level (split over --replica-rounds; each run also stops after a minute).")
	flag.IntVar(&c.replicaRounds, "replica-rounds", 3, "Alternate the replica levels (1,2,3,1,2,3,...) this many times, so that load from elsewhere hits them alike; medians are reported.")
	flag.BoolVar(&c.replicasOnly, "replicas-only", false, "Only the replicas measurement (no signing, in-process, scale or GC measurements).")
	apiRSSLimit := flag.Int("apiserver-rss-limit-gib", 16, "With --scale-only: stop the run when the API server's VmRSS passes this many GiB.")
	flag.Parse()
	c.apiRSSLimit = int64(*apiRSSLimit) << 30
	if c.scaleOnly && (c.sessions < 1 || c.seedChunk < 1 || *apiRSSLimit < 1 || c.gcExpiring < 0 || (c.gcExpiring > 0 && c.gcClients < 1) || c.rotorWait <= 0) {
		fatalf("--scale-only needs --sessions, --seed-chunk and --apiserver-rss-limit-gib ≥ 1, --gc-expiring ≥ 0 and --gc-clients ≥ 1")
	}
	for _, s := range strings.Split(clients, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			fatalf("--clients: %q is not a positive number", s)
		}
		c.clients = append(c.clients, n)
	}
	if s := strings.TrimSpace(replicas); s != "" && s != "0" {
		for _, f := range strings.Split(s, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 1 || slices.Contains(c.replicas, n) {
				fatalf("--replicas: %q is not a positive number, or a repeated one", f)
			}
			c.replicas = append(c.replicas, n)
		}
	}
	if len(c.replicas) > 0 && (c.replicaClients < 1 || c.replicaRounds < 1 || c.replicaRefreshes < c.replicaRounds) {
		fatalf("--replica-clients and --replica-rounds must be positive, --replica-refreshes at least --replica-rounds")
	}
	if c.replicasOnly {
		if len(c.replicas) == 0 || c.scaleOnly {
			fatalf("--replicas-only needs --replicas, and not --scale-only")
		}
		c.skipCrypto, c.skipRefresh, c.skipScale, c.ccRequests = true, true, true, 0
	}
	if c.gcSessions < 0 {
		c.gcSessions = c.sessions
	}
	if c.sessions < 0 || c.gcSessions > c.sessions {
		fatalf("--gc-sessions (%d) must be at most --sessions (%d): the collector deletes sessions of the RSS measurement", c.gcSessions, c.sessions)
	}
	c.rawDeletes = min(c.rawDeletes, c.gcSessions)
	if c.ccRequests < 0 || c.ccConc < 1 || c.ccRounds < 1 {
		fatalf("--cc-requests must not be negative, --cc-clients and --cc-rounds must be positive")
	}
	if c.rotorAPIQPS <= 0 {
		fatalf("--rotor-api-qps must be positive")
	}
	if c.rounds < 1 || c.refreshes < c.rounds || c.logins < 1 || c.loginConc < 1 || c.parallelism < 1 || (c.gcSessions > 0 && c.rawDeletes < 1) || c.expiryMargin < 0 {
		fatalf("--rounds, --refreshes, --logins, --raw-deletes and the concurrency flags must be positive (refreshes >= rounds), --expiry-margin not negative")
	}
	if c.apiProfile != "" && (c.skipRefresh || c.apiProfileSeconds < 1) {
		fatalf("--apiserver-profile profiles the refresh loads: it needs them (no --skip-refresh) and --apiserver-profile-seconds ≥ 1")
	}
	for _, n := range c.clients {
		if n > c.logins {
			fatalf("--clients %d needs at least as many sessions: raise --logins", n)
		}
	}

	// The in-process rotor and client-go log through controller-runtime;
	// only errors matter here, progress goes to stderr below.
	log := logr.FromSlogHandler(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	ctrl.SetLogger(log)

	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	if err := measure(ctx, c, log); err != nil {
		fatalf("%v", err)
	}
}

func measure(ctx context.Context, c config, log logr.Logger) error {
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	if err := os.Chdir(root); err != nil {
		return err
	}
	start := time.Now()
	r := &report{}
	r.machine(c)
	if c.scaleOnly {
		return measureBigScale(ctx, c, r)
	}

	// Signing first, while nothing else of ours runs.
	if !c.skipCrypto {
		progress("signing benchmarks: %d rounds of go test -bench, benchtime %s", c.benchCount, c.benchtime)
		t := time.Now()
		if err := runCrypto(ctx, c, r); err != nil {
			r.add("signing", "go test -bench", "failed: "+oneLine(err.Error()), "", "")
		}
		r.spent("signing benchmarks", time.Since(t))
	}

	inProcess := !c.skipRefresh || c.ccRequests > 0
	if inProcess || !c.skipScale || len(c.replicas) > 0 {
		progress("starting the control plane")
		t := time.Now()
		cp, err := controlplane.Start(controlplane.Options{})
		if err != nil {
			return err
		}
		r.spent("control plane start", time.Since(t))
		defer func() {
			progress("stopping the control plane")
			if err := cp.Stop(); err != nil {
				progress("stopping the control plane: %v", err)
			}
		}()
		r.versions(c, cp)
		if inProcess {
			if err := runInProcess(ctx, c, cp, log, r); err != nil {
				return fmt.Errorf("in-process measurements: %w", err)
			}
		}
		if !c.skipScale {
			if err := runScale(ctx, c, cp, r); err != nil {
				return fmt.Errorf("scale measurement: %w", err)
			}
		}
		if len(c.replicas) > 0 {
			t := time.Now()
			if err := runReplicas(ctx, c, cp, r); err != nil {
				progress("replicas measurement: %v", err)
				r.add("replicas", "rotor serve replicas "+joinInts(c.replicas), "failed: "+oneLine(err.Error()), "", "**FAILED**")
			}
			r.spent("replicas", time.Since(t))
		}
	} else {
		r.versions(c, nil)
	}
	r.loadavg("end")
	replicaSizes := "no replicas measurement"
	if len(c.replicas) > 0 {
		replicaSizes = fmt.Sprintf("rotor serve replicas %s with %d clients in all, %d refreshes per level in %d rounds", joinInts(c.replicas), c.replicaClients, c.replicaRefreshes, c.replicaRounds)
	}
	if c.replicasOnly {
		r.add("run", "sizes", "only the replicas measurement: "+replicaSizes, "", "")
	} else {
		r.add("run", "sizes", fmt.Sprintf("clients %s, %d refreshes, %d raw updates and %d floor updates per level in %d rounds, %d logins at %d, sessions 0/%d/%d (seeded straight into etcd), %d of them expiring together for GC, %d raw deletes at parallelism %d, %d client_credentials grants each for rotor and the bare handler from %d clients in %d rounds, %d rounds of go test -bench with -benchtime %s",
			joinInts(c.clients), c.refreshes, c.refreshes, c.refreshes, c.rounds, c.logins, c.loginConc, c.sessions/10, c.sessions, c.gcSessions, c.rawDeletes, c.parallelism, c.ccRequests, c.ccConc, c.ccRounds, c.benchCount, c.benchtime)+", "+replicaSizes, "", "")
	}
	r.add("run", "duration", fmt.Sprintf("%s (%s)", time.Since(start).Round(time.Second), strings.Join(r.phases, ", ")), "< 10 min with defaults", "")

	table := r.markdown()
	fmt.Println(table)
	if c.out != "" {
		how := "make bench"
		if c.replicasOnly {
			how = "make bench BENCH_FLAGS=--replicas-only"
		}
		doc := fmt.Sprintf("# rotor benchmark results\n\n`%s`, %s. Regenerate with `%s`; ratios compare measurements of one run on one machine.\n\n%s\n",
			how, time.Now().UTC().Format("2006-01-02 15:04 MST"), how, table)
		if err := os.WriteFile(c.out, []byte(doc), 0o644); err != nil {
			return err
		}
		progress("wrote %s", c.out)
	}
	return nil
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s bench: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
	os.Exit(1)
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return strings.ReplaceAll(s, "|", "\\|")
}

func joinInts(ns []int) string {
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}

// moduleRoot is the directory of rotor's go.mod: `go run ./hack/bench`
// runs in it already, but the binary may be started from anywhere below.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && strings.Contains(string(b), "module rotor.dev/rotor\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside rotor's module")
		}
		dir = parent
	}
}
