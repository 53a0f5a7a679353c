# `make bench`: rotor measured against its limits on one local control
# plane. Included from the Makefile, which exports KUBEBUILDER_ASSETS
# (bin/k8s) for pkg/dev/controlplane. The load generator is hack/bench; it also
# runs the signing benchmarks (go test -bench in pkg/tokens, pkg/client),
# prints one markdown table and writes it to hack/bench-results.md.
# Everything stays on 127.0.0.1 and stops by itself. The stored sessions the
# RSS and GC measurements need are seeded straight into etcd (the API
# server's storage, in its encoding; the API server sees them through its
# watch), so that the run's time goes to what is measured: the collector
# deleting 100,000 expired sessions through the API server dominates it. If
# the run is much slower than estimated, the largest RSS sample is reported
# as not measured: raise --expiry-margin.
# Every token request is made by a registered OAuth client: the bench creates
# the OAuthClients (and the Secrets of Confidential ones) in rotor's namespace
# and waits until they are Ready before it measures. The client_credentials
# grant makes no API request, so it is compared with a bare net/http handler
# doing the same work (--cc-requests per side).
# Refreshes and raw updates are set beside the floor: conditional updates of
# a minimal custom resource (a Blob: one string field, no validation) stored
# in as many bytes as a session, with the CPU the API server and etcd spend
# per write on each. They run in --rounds (6) rounds, each starting with the
# next of the three, every run after the same quiet second, and the ratios to
# the floor are the medians of the rounds'. The refreshing clients write their
# requests on plain keep-alive connections (hack/bench/wire.go), not through
# net/http's client, whose goroutines would take CPU from what is measured
# (BENCH_FLAGS='--refresh-profile DIR': CPU profiles of the bench
# process, in-process rotor and load generator, during each run). BENCH_FLAGS='--apiserver-profile DIR' also writes CPU
# profiles of the API server under each load (go tool pprof -top
# bin/k8s/kube-apiserver DIR/apiserver-refresh.pprof).
# Replicas: 1, 2 and 3 `rotor serve` processes (--replicas; leader election
# on, every replica serving) against the one API server, --replica-clients (8)
# clients in all spread over them, the levels alternating over three rounds:
# refresh throughput, its ratio to one replica, and the CPU per refresh of
# rotor, the API server, etcd and the load generator. On 2 cores they share
# the machine and the API server saturates: expect no speed-up (a ratio at or
# a little under 1, each replica adding its own session watch) and read where
# the CPU went. Alone: BENCH_FLAGS='--replicas-only' (under a minute).
# Smaller, for a quick look (about 2 minutes):
#
#   make bench BENCH_FLAGS='--refreshes 400 --sessions 3000 --raw-deletes 1000 --logins 10 --cc-requests 10000 --replica-refreshes 600 --bench-count 1 --benchtime 200ms'

LOCALBIN ?= $(CURDIR)/bin
BENCH_FLAGS ?=
BENCH_OUT ?= hack/bench-results.md

.PHONY: bench
bench: build control-plane ## Load-test rotor (refresh vs the API server's limit, RSS, GC, signing); writes hack/bench-results.md.
	go run ./hack/bench --rotor-bin $(LOCALBIN)/rotor --out $(BENCH_OUT) $(BENCH_FLAGS)

# `make bench-scale`: a store of a million sessions (hack/bench --scale-only,
# hack/bench/bigscale.go) on a control plane of its own (etcd's quota raised
# to 8 GiB): the sessions are seeded straight into etcd in chunks and rotor
# starts only once the API server's watch cache has caught up. It reports the
# seeding rate, etcd's database size per session after compaction and
# defragmentation, the API server's RSS per stored session, and `rotor
# serve`'s RSS and time to ready and to its collector's first full list with
# every session stored (waiting up to --rotor-wait, 10m). Then, unless
# --gc-expiring 0, that rotor's collector deletes --gc-expiring (7,500, at its default --session-gc-rate of 25 a second)
# more sessions expiring together while --gc-clients (8) logged-in clients
# refresh through it: the delete rate, and the refresh p50/p99 during the
# collection beside an equally long window right after it. The run stops if
# the API server's RSS passes --apiserver-rss-limit-gib (16). About 15-20
# minutes and 12+ GiB of memory at 1,000,000; a quick look (4 minutes):
#
#   make bench-scale BENCH_SCALE_FLAGS='--sessions 50000 --gc-expiring 5000'

BENCH_SCALE_FLAGS ?=
BENCH_SCALE_OUT ?= hack/bench-scale-results.md

.PHONY: bench-scale
bench-scale: build control-plane ## Measure a store of 1,000,000 sessions (etcd and API server per session, rotor RSS and ready); writes hack/bench-scale-results.md.
	go run ./hack/bench --scale-only --sessions 1000000 --rotor-bin $(LOCALBIN)/rotor --out $(BENCH_SCALE_OUT) $(BENCH_SCALE_FLAGS)
