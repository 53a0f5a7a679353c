# `make bench`: rotor measured against its limits on one local control plane
# (issue 8). Included from the Makefile, which exports KUBEBUILDER_ASSETS
# (bin/k8s) for pkg/controlplane. The load generator is hack/bench; it also
# runs the signing benchmarks (go test -bench in pkg/tokens, pkg/client),
# prints one markdown table and writes it to hack/bench-results.md.
# Everything stays on 127.0.0.1 and stops by itself. The defaults are bound
# by the API server's write rate: 100,000 sessions are created for the RSS
# samples and then all expire at one moment for rotor's collector to delete,
# and a 20,000-session sample is created and deleted raw for comparison:
# about 240,000 creates and deletes (the earlier layout needed 400,000 and
# took 23 minutes on a shared, busy 2-core machine). Expect 9 to 10 minutes
# on a quiet 2-core machine, more on a busy one. If the store fills much
# slower than the create rate measured first, the largest RSS sample is
# reported as not measured: raise --expiry-margin.
# Smaller, for a quick look (about 2 minutes):
#
#   make bench BENCH_FLAGS='--refreshes 400 --sessions 3000 --raw-deletes 1000 --logins 10 --bench-count 1 --benchtime 200ms'

LOCALBIN ?= $(CURDIR)/bin
BENCH_FLAGS ?=
BENCH_OUT ?= hack/bench-results.md

.PHONY: bench
bench: build control-plane ## Load-test rotor (refresh vs the API server's limit, RSS, GC, signing); writes hack/bench-results.md.
	go run ./hack/bench --rotor-bin $(LOCALBIN)/rotor --out $(BENCH_OUT) $(BENCH_FLAGS)
