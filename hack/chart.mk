# Helm chart, kustomize manifests and container image. Included by the
# Makefile, which defines LOCALBIN, HELM (bin/helm-$(HELM_VERSION)) and its
# install rule; nothing here duplicates them.

CHART_DIR ?= charts/rotor
CHART_CRD_DIR := $(CHART_DIR)/files/crds
CRD_BASES := config/crd/bases
DIST ?= $(CURDIR)/dist

# rotor's version: the chart's appVersion and the image tag.
VERSION ?= $(shell sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$$/\1/p' $(CHART_DIR)/Chart.yaml)
IMG ?= ghcr.io/rotor-dev/rotor:$(VERSION)
# docker or podman: the first one found.
CONTAINER_TOOL ?= $(shell command -v docker 2>/dev/null || command -v podman 2>/dev/null)
KUBECTL ?= $(shell command -v kubectl 2>/dev/null || echo $(LOCALBIN)/k8s/kubectl)

# The chart tests (charts/*_test.go) find helm through $HELM, else at
# bin/helm-$(HELM_VERSION); `make test` installs it first.
export HELM
test: $(HELM)
# verify-gen fails when generated files are stale or uncommitted: the chart's
# copy of the CRDs is generated too (after `manifests`, as listed).
verify-gen: chart-crds

##@ Chart and deployment

.PHONY: helm
helm: $(HELM) ## Install helm (pinned) into bin/.

.PHONY: chart-crds
chart-crds: ## Copy the controller-gen CRDs (config/crd/bases) into the chart.
	mkdir -p $(CHART_CRD_DIR)
	rm -f $(CHART_CRD_DIR)/*.yaml
	cp $(CRD_BASES)/*.yaml $(CHART_CRD_DIR)/

.PHONY: verify-chart
verify-chart: $(HELM) ## Fail when the chart's CRDs are stale or the chart does not lint.
	@diff -r $(CRD_BASES) $(CHART_CRD_DIR) || { \
	  echo "$(CHART_CRD_DIR) differs from $(CRD_BASES): run 'make chart-crds'" >&2; exit 1; }
	$(HELM) lint --strict $(CHART_DIR)

.PHONY: deploy-manifests
deploy-manifests: ## Render config/default (kustomize) into dist/install.yaml.
	mkdir -p $(DIST)
	$(KUBECTL) kustomize config/default > $(DIST)/install.yaml
	@echo "wrote $(DIST)/install.yaml: kubectl apply --server-side -f $(DIST)/install.yaml"

.PHONY: chart-package
chart-package: verify-chart ## Package the chart into dist/.
	mkdir -p $(DIST)
	$(HELM) package $(CHART_DIR) --destination $(DIST)

.PHONY: docker-build
docker-build: ## Build the image $(IMG) (needs docker or podman and a running engine; CI has none).
	@if [ -z "$(CONTAINER_TOOL)" ]; then \
	  echo "docker-build: no container engine (docker or podman) found; set CONTAINER_TOOL" >&2; exit 1; fi
	@$(CONTAINER_TOOL) info >/dev/null 2>&1 || { \
	  echo "docker-build: $(CONTAINER_TOOL) is installed but its engine is not reachable" >&2; exit 1; }
	$(CONTAINER_TOOL) build --build-arg VERSION=$(VERSION) -t $(IMG) .

.PHONY: docker-push
docker-push: ## Push the image $(IMG).
	$(CONTAINER_TOOL) push $(IMG)
