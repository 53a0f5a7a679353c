# `make bench`: rotor measured against its limits on one local control plane
# (issue 8). Included from the Makefile, which exports KUBEBUILDER_ASSETS
# (bin/k8s) for pkg/controlplane. The load generator is hack/bench; it also
# runs the signing benchmarks (go test -bench in pkg/tokens, pkg/client),
# prints one markdown table and writes it to hack/bench-results.md.
# Everything stays on 127.0.0.1 and stops by itself. The defaults (100,000
# stored and 100,000 expired sessions) are bound by the API server's write
# rate: about 400,000 creates and deletes. They took 23 minutes on a shared,
# busy 2-core machine (~330 creates/s); expect about 11 on a quiet one.
# Smaller, for a quick look (about 2 minutes):
#
#   make bench BENCH_FLAGS='--refreshes 400 --sessions 3000 --logins 10 --bench-count 1 --benchtime 200ms'

LOCALBIN ?= $(CURDIR)/bin
BENCH_FLAGS ?=
BENCH_OUT ?= hack/bench-results.md

.PHONY: bench
bench: build control-plane ## Load-test rotor (refresh vs the API server's limit, RSS, GC, signing); writes hack/bench-results.md.
	go run ./hack/bench --rotor-bin $(LOCALBIN)/rotor --out $(BENCH_OUT) $(BENCH_FLAGS)
