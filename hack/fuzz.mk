# `make fuzz`: each fuzz target explored for FUZZTIME. Included
# from the Makefile, which exports KUBEBUILDER_ASSETS (bin/k8s): the
# TestMain of pkg/issuer and pkg/sessions starts a control plane, although
# the fuzz targets need none (FuzzTokenRequest runs against an in-memory
# session store). pkg/dev/testenv.Main must therefore skip the control plane in
# fuzz worker processes (-test.fuzzworker): go test -fuzz kills a worker a
# second after it is done, its etcd and kube-apiserver outlive it holding
# the worker's output pipes, and the run never ends.
#
# `go test` (and so `make test`) already runs the committed seed corpora
# under pkg/*/testdata/fuzz/<Target>/. A failing input found here is written
# to that directory: keep it, it becomes a regression test. `-fuzz` takes one
# package at a time, hence one line per target. Longer, or fewer workers:
#
#   make fuzz FUZZTIME=10m FUZZ_FLAGS=-parallel=1

FUZZTIME ?= 30s
FUZZ_FLAGS ?=

.PHONY: fuzz
fuzz: control-plane ## Fuzz ParseToken, JWT verification and the form endpoints, FUZZTIME (30s) each.
	go test -run '^$$' -fuzz '^FuzzParseToken$$' -fuzztime $(FUZZTIME) $(FUZZ_FLAGS) ./pkg/sessions/
	go test -run '^$$' -fuzz '^FuzzVerify$$' -fuzztime $(FUZZTIME) $(FUZZ_FLAGS) ./pkg/tokens/
	go test -run '^$$' -fuzz '^FuzzTokenRequest$$' -fuzztime $(FUZZTIME) $(FUZZ_FLAGS) ./pkg/issuer/
