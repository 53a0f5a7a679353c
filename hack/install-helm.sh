#!/usr/bin/env bash
# Installs helm VERSION at DEST, built from Go modules and stamped the way
# helm's own Makefile stamps a release (its LDFLAGS): the version, and the
# Kubernetes version that `helm template` and `helm lint` assume without a
# cluster (k8s major.minor from the k8s.io/client-go helm is built with). A
# plain `go install helm.sh/helm/v3/cmd/helm@VERSION` reports "v3.22" and
# assumes Kubernetes v1.20, which charts with a kubeVersion constraint
# refuse. Does nothing when DEST already reports exactly VERSION.
#
#   hack/install-helm.sh v3.22.0 bin/helm-v3.22.0
set -euo pipefail

version=${1:?usage: install-helm.sh VERSION DEST}
dest=${2:?usage: install-helm.sh VERSION DEST}

if [ -x "$dest" ] && [ "$("$dest" version --template '{{.Version}}' 2>/dev/null)" = "$version" ]; then
  exit 0
fi
if [ -e "$dest" ]; then
  echo "$dest does not report helm $version: rebuilding it"
fi
echo "installing helm $version from Go modules into $dest (about 3 minutes the first time)..."

# helm's Makefile takes the Kubernetes version from `go list -m k8s.io/client-go`
# in helm's module; the same query in the module's copy in the module cache
# gives the same answer (its go.mod lists every selected version).
mod=helm.sh/helm/v3
dir=$(GOFLAGS=-mod=mod go mod download -json "$mod@$version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
[ -d "$dir" ] || { echo "go mod download $mod@$version gave no module directory" >&2; exit 1; }
client_go=$(cd "$dir" && GOWORK=off GOFLAGS=-mod=mod go list -m -f '{{.Version}}' k8s.io/client-go)
IFS=. read -r cg_major k8s_minor _ <<<"${client_go#v}"
k8s_major=$((cg_major + 1)) # client-go v0.X is Kubernetes v1.X

# helm's Makefile: -w -s, version (set for a tag), metadata (empty for a tag,
# "unreleased" otherwise), gitCommit and gitTreeState (from git; a module
# download carries no commit, and its tree is the tag's, unmodified), and
# the Kubernetes version for chartutil and lint.
ldflags="-w -s"
ldflags+=" -X $mod/internal/version.version=$version"
ldflags+=" -X $mod/internal/version.metadata="
ldflags+=" -X $mod/internal/version.gitTreeState=clean"
for pkg in pkg/lint/rules pkg/chartutil; do
  ldflags+=" -X $mod/$pkg.k8sVersionMajor=$k8s_major -X $mod/$pkg.k8sVersionMinor=$k8s_minor"
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
CGO_ENABLED=0 GOBIN="$tmp" go install -trimpath -ldflags "$ldflags" "$mod/cmd/helm@$version"
got=$("$tmp/helm" version --template '{{.Version}}')
[ "$got" = "$version" ] || { echo "built helm reports $got, not $version" >&2; exit 1; }
mkdir -p "$(dirname "$dest")"
mv -f "$tmp/helm" "$dest"
echo "helm $version (Kubernetes v$k8s_major.$k8s_minor by default, from k8s.io/client-go $client_go): $dest"
