# rotor's build. `make demo` runs rotor against a local control plane;
# `make test` verifies generated files, lints, and runs every test against a
# real kube-apiserver and etcd in bin/k8s (downloaded by setup-envtest where
# the release storage is reachable, else built from Go modules).

SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

LOCALBIN ?= $(CURDIR)/bin
CONTROLLER_TOOLS_VERSION ?= v0.23.0
HELM_VERSION ?= v3.22.0
GOLANGCI_LINT_VERSION ?= v2.15.0
# setup-envtest is tagged on its own in controller-runtime's tools module; the
# module proxy serves no release-0.25 branch query, so this is the newest tag
# of the controller-runtime minor in go.mod (hack/envtest checks they match).
ENVTEST_VERSION ?= v0.25.1
CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen-$(CONTROLLER_TOOLS_VERSION)
HELM ?= $(LOCALBIN)/helm-$(HELM_VERSION)
GOLANGCI_LINT ?= $(LOCALBIN)/golangci-lint-$(GOLANGCI_LINT_VERSION)
SETUP_ENVTEST ?= $(LOCALBIN)/setup-envtest-$(ENVTEST_VERSION)

# Tests and `rotor dev` find kube-apiserver, etcd and kubectl here.
KUBEBUILDER_ASSETS ?= $(LOCALBIN)/k8s
export KUBEBUILDER_ASSETS

GO_TEST_FLAGS ?= -count=1 -timeout 30m

.PHONY: all
all: build

##@ Development

.PHONY: manifests
manifests: $(CONTROLLER_GEN) ## Generate CRDs and RBAC from markers.
	$(CONTROLLER_GEN) rbac:roleName=rotor crd paths="./..." output:crd:artifacts:config=config/crd/bases

.PHONY: generate
generate: $(CONTROLLER_GEN) ## Generate DeepCopy methods.
	$(CONTROLLER_GEN) object:headerFile="hack/boilerplate.go.txt" paths="./..."

.PHONY: verify-gen
verify-gen: manifests generate ## Fail when generated files are stale.
	@if [ -n "$$(git status --porcelain -- config api charts)" ]; then \
	  git status --porcelain -- config api charts; { git diff -- config api charts | head -50 || true; }; \
	  echo "generated files are stale: run 'make manifests generate' and commit" >&2; exit 1; fi

.PHONY: fmt
fmt: ## go fmt.
	go fmt ./...

.PHONY: vet
vet: ## go vet.
	go vet ./...

.PHONY: lint
lint: $(GOLANGCI_LINT) ## golangci-lint (.golangci.yml: correctness linters and the package layering).
	$(GOLANGCI_LINT) run

.PHONY: lint-fix
lint-fix: $(GOLANGCI_LINT) ## golangci-lint, applying the fixes linters offer.
	$(GOLANGCI_LINT) run --fix

# Where the control plane comes from: bin/k8s if the pinned versions are
# there; else setup-envtest's download (ENVTEST_INDEX_URL overrides the
# release index, ENVTEST_DOWNLOAD=0 skips it); else a build from Go modules.
# The script prints which. It and the test of its download path (hack/envtest,
# against a local release index) find setup-envtest through $SETUP_ENVTEST.
export SETUP_ENVTEST
.PHONY: control-plane
control-plane: $(SETUP_ENVTEST) ## Put kube-apiserver and etcd into bin/k8s: present, downloaded, or built from Go modules.
	hack/build-control-plane.sh "$(KUBEBUILDER_ASSETS)"

.PHONY: test
test: verify-gen vet lint control-plane ## Lint, then run all tests against a real control plane.
	go test $(GO_TEST_FLAGS) ./...

##@ Build and run

.PHONY: build
build: ## Build bin/rotor.
	go build -o $(LOCALBIN)/rotor .

.PHONY: demo
demo: build control-plane ## Run rotor against a local control plane (rotor dev).
	$(LOCALBIN)/rotor dev $(DEMO_FLAGS)

##@ Tools

$(CONTROLLER_GEN):
	mkdir -p $(LOCALBIN)
	GOBIN=$(LOCALBIN) go install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_TOOLS_VERSION)
	mv $(LOCALBIN)/controller-gen $@

# Always checked (FORCE), rebuilt unless `helm version` is exactly
# $(HELM_VERSION): a binary from a plain `go install` reports no version and
# assumes Kubernetes v1.20. The script stamps both as helm's Makefile does.
$(HELM): FORCE
	hack/install-helm.sh $(HELM_VERSION) $@

$(GOLANGCI_LINT):
	mkdir -p $(LOCALBIN)
	GOBIN=$(LOCALBIN) go install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)
	mv $(LOCALBIN)/golangci-lint $@

$(SETUP_ENVTEST):
	mkdir -p $(LOCALBIN)
	GOBIN=$(LOCALBIN) go install sigs.k8s.io/controller-runtime/tools/setup-envtest@$(ENVTEST_VERSION)
	mv $(LOCALBIN)/setup-envtest $@

.PHONY: golangci-lint setup-envtest
golangci-lint: $(GOLANGCI_LINT) ## Install golangci-lint (pinned) into bin/.
setup-envtest: $(SETUP_ENVTEST) ## Install setup-envtest (pinned) into bin/.

.PHONY: FORCE
FORCE:

# Helm chart, kustomize and image targets; benchmarks; fuzzing.
-include hack/chart.mk
-include hack/bench.mk
-include hack/fuzz.mk

.PHONY: help
help: ## Show targets.
	@awk 'BEGIN {FS = ":.*##"} /^[a-zA-Z_-]+:.*?##/ { printf "  %-16s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)
