# rotor's build. `make demo` runs rotor against a local control plane;
# `make test` verifies generated files and runs every test against a real
# kube-apiserver and etcd built from Go modules into bin/k8s.

SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

LOCALBIN ?= $(CURDIR)/bin
CONTROLLER_TOOLS_VERSION ?= v0.23.0
HELM_VERSION ?= v3.22.0
CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen-$(CONTROLLER_TOOLS_VERSION)
HELM ?= $(LOCALBIN)/helm-$(HELM_VERSION)

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
	  git status --porcelain -- config api charts; git diff -- config api charts | head -50; \
	  echo "generated files are stale: run 'make manifests generate' and commit" >&2; exit 1; fi

.PHONY: fmt
fmt: ## go fmt.
	go fmt ./...

.PHONY: vet
vet: ## go vet.
	go vet ./...

.PHONY: control-plane
control-plane: ## Build kube-apiserver and etcd from Go modules into bin/k8s (once per machine).
	hack/build-control-plane.sh "$(KUBEBUILDER_ASSETS)"

.PHONY: test
test: verify-gen vet control-plane ## Run all tests against a real control plane.
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

$(HELM):
	mkdir -p $(LOCALBIN)
	GOBIN=$(LOCALBIN) go install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)
	mv $(LOCALBIN)/helm $@

# Helm chart, kustomize and image targets; benchmarks; fuzzing.
-include hack/chart.mk
-include hack/bench.mk
-include hack/fuzz.mk

.PHONY: help
help: ## Show targets.
	@awk 'BEGIN {FS = ":.*##"} /^[a-zA-Z_-]+:.*?##/ { printf "  %-16s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)
