# `make bench`: rotor measured against its limits on one local control plane
# (issue 8). Included from the Makefile, which exports KUBEBUILDER_ASSETS
# (bin/k8s) for pkg/controlplane. The load generator is hack/bench; it also
# runs the signing benchmarks (go test -bench in pkg/tokens, pkg/client),
# prints one markdown table and writes it to hack/bench-results.md.
# Everything stays on 127.0.0.1 and stops by itself; the defaults take
# about 8 minutes on 2 cores. Smaller, for a quick look:
#
#   make bench BENCH_FLAGS='--refreshes 300 --sessions 5000 --logins 10 --bench-count 1'

LOCALBIN ?= $(CURDIR)/bin
BENCH_FLAGS ?=
BENCH_OUT ?= hack/bench-results.md

.PHONY: bench
bench: build control-plane ## Load-test rotor (refresh vs the API server's limit, RSS, GC, signing); writes hack/bench-results.md.
	go run ./hack/bench --rotor-bin $(LOCALBIN)/rotor --out $(BENCH_OUT) $(BENCH_FLAGS)
