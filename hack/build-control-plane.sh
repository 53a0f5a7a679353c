#!/usr/bin/env bash
# Puts the Kubernetes control plane that envtest and `rotor dev` run
# (kube-apiserver, etcd, and kubectl beside them) into OUT (bin/k8s), pinned
# to KUBE_VERSION and ETCD_VERSION, taking the first of these that works and
# saying which it took:
#
#   present   both binaries in OUT already report the pinned versions: nothing
#             to do (a fraction of a second).
#   download  setup-envtest (sigs.k8s.io/controller-runtime/tools/setup-envtest,
#             kubebuilder's way to get envtest binaries) downloads the envtest
#             release of KUBE_VERSION, checked against the sha512 in its index.
#             Bounded by timeouts; a binary that does not report its pinned
#             version (the release's etcd may be another patch) is not used.
#   build     whatever is still missing is compiled from Go modules
#             (hack/tools/kube-apiserver, hack/tools/etcd): about 11 minutes
#             for kube-apiserver and 1 for etcd on 2 cores, once per machine.
#             This project's CI machines cannot reach the release storage, so
#             this is what CI does.
#
#   hack/build-control-plane.sh [OUT]
#
# Environment:
#   SETUP_ENVTEST        setup-envtest binary (the Makefile's; else
#                        bin/setup-envtest-$ENVTEST_VERSION, installed if missing)
#   ENVTEST_VERSION      setup-envtest version to install (v0.25.1)
#   ENVTEST_INDEX_URL    release index (default: setup-envtest's own, the
#                        envtest-releases.yaml of kubernetes-sigs/controller-tools)
#   ENVTEST_INDEX_TIMEOUT  seconds to read the index (15): an unreachable
#                        release storage costs no more than this
#   ENVTEST_TIMEOUT      seconds for the download itself (300)
#   ENVTEST_DOWNLOAD=0   skip the download: build
#   CONTROL_PLANE_BUILD  command run instead of the Go module build, as
#                        `$CONTROL_PLANE_BUILD NAME PATH` for NAME kube-apiserver
#                        or etcd (hack/envtest stubs the build with it)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-"$root/bin/k8s"}
KUBE_VERSION=v1.37.2
ETCD_VERSION=v3.6.16
ENVTEST_VERSION=${ENVTEST_VERSION:-v0.25.1}
mkdir -p "$out"
out=$(cd "$out" && pwd)

pinned() { # NAME -> "NAME VERSION"
  case $1 in
    kube-apiserver) echo "kube-apiserver $KUBE_VERSION" ;;
    etcd) echo "etcd $ETCD_VERSION" ;;
  esac
}
want() { # NAME -> the line NAME --version prints at its pinned version
  case $1 in
    kube-apiserver) echo "Kubernetes $KUBE_VERSION" ;;
    etcd) echo "etcd Version: ${ETCD_VERSION#v}" ;;
  esac
}
# reports BINARY NAME: BINARY runs and reports NAME's pinned version. The
# output is read whole: `| grep -q` would stop reading at the match, and the
# binary, killed by SIGPIPE writing its next line, fail the pipeline.
reports() {
  [ -x "$1" ] || return 1
  local v
  v=$("$1" --version 2>/dev/null) || true
  grep -qxF -- "$(want "$2")" <<<"$v"
}

# how each binary got here: present, downloaded, built ...
declare -A how=()
missing=()
for name in kube-apiserver etcd; do
  how[$name]=present
  if ! reports "$out/$name" "$name"; then
    missing+=("$name")
    how[$name]=missing
  fi
done

# download: setup-envtest into a scratch store beside OUT (same file system,
# so the binaries are moved, not copied); only what reports its pinned
# version is kept.
envtest_kubectl=
download() {
  if [ "${ENVTEST_DOWNLOAD:-1}" = 0 ]; then
    echo "control plane: download skipped (ENVTEST_DOWNLOAD=0)"
    return 1
  fi
  local setup=${SETUP_ENVTEST:-"$root/bin/setup-envtest-$ENVTEST_VERSION"}
  if [ ! -x "$setup" ]; then
    echo "installing setup-envtest $ENVTEST_VERSION into $setup..."
    local gobin
    gobin=$(mktemp -d)
    if ! GOBIN="$gobin" go install "sigs.k8s.io/controller-runtime/tools/setup-envtest@$ENVTEST_VERSION"; then
      rm -rf "$gobin"
      echo "control plane: could not install setup-envtest"
      return 1
    fi
    mkdir -p "$(dirname "$setup")"
    mv -f "$gobin/setup-envtest" "$setup"
    rm -rf "$gobin"
  fi
  local index=() where="setup-envtest's default index"
  if [ -n "${ENVTEST_INDEX_URL:-}" ]; then
    index=(--index "$ENVTEST_INDEX_URL")
    where=$ENVTEST_INDEX_URL
  fi
  local version=${KUBE_VERSION#v}
  store=$(mktemp -d "$out.envtest.XXXXXX")
  echo "control plane: downloading envtest $version with setup-envtest ($where)..."
  local listed
  if ! listed=$(timeout -k 5 "${ENVTEST_INDEX_TIMEOUT:-15}" "$setup" list "${index[@]}" --bin-dir "$store" "$version" 2>&1); then
    echo "control plane: the envtest release index cannot be read (timeout ${ENVTEST_INDEX_TIMEOUT:-15}s):"
    printf '%s\n' "$listed" | tail -5 | sed 's/^/  /'
    return 1
  fi
  if ! grep -q "available.*v$version" <<<"$listed"; then
    echo "control plane: the envtest release index has no $version for $(go env GOOS 2>/dev/null || uname -s)/$(go env GOARCH 2>/dev/null || uname -m)"
    return 1
  fi
  local dir
  if ! dir=$(timeout -k 5 "${ENVTEST_TIMEOUT:-300}" "$setup" use "${index[@]}" --bin-dir "$store" -p path "$version" 2>&1); then
    echo "control plane: setup-envtest could not download envtest $version (timeout ${ENVTEST_TIMEOUT:-300}s):"
    printf '%s\n' "$dir" | tail -5 | sed 's/^/  /'
    return 1
  fi
  dir=$(tail -1 <<<"$dir")
  local name got=0
  for name in "${missing[@]}"; do
    if reports "$dir/$name" "$name"; then
      mv -f "$dir/$name" "$out/$name"
      how[$name]=downloaded
      got=1
      echo "control plane: $(pinned "$name") downloaded"
    else
      echo "control plane: the envtest release's $name does not report $(pinned "$name") ($("$dir/$name" --version 2>&1 | head -1 || true)): not used"
    fi
  done
  if [ -x "$dir/kubectl" ]; then envtest_kubectl=$dir/kubectl; fi
  [ "$got" = 1 ]
}

build_from_modules() { # NAME PATH
  local name=$1 path=$2 minor
  case $name in
    kube-apiserver)
      echo "building kube-apiserver $KUBE_VERSION from k8s.io/kubernetes (about 11 minutes the first time)..."
      minor=${KUBE_VERSION#v1.}; minor=${minor%%.*}
      (cd "$root/hack/tools/kube-apiserver" && CGO_ENABLED=0 go build -mod=mod -o "$path" \
        -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor" \
        k8s.io/kubernetes/cmd/kube-apiserver) ;;
    etcd)
      echo "building etcd $ETCD_VERSION from go.etcd.io/etcd/server/v3 (about 1 minute the first time)..."
      (cd "$root/hack/tools/etcd" && CGO_ENABLED=0 go build -mod=mod -o "$path" -ldflags "-s -w" go.etcd.io/etcd/server/v3) ;;
  esac
}

store=
trap '[ -z "$store" ] || rm -rf "$store"' EXIT

if [ ${#missing[@]} -eq 0 ]; then
  echo "control plane: $(pinned kube-apiserver) and $(pinned etcd) present in $out"
else
  if ! download; then
    echo "control plane: falling back to building ${missing[*]} from Go modules"
  fi
  for name in "${missing[@]}"; do
    [ "${how[$name]}" = missing ] || continue # downloaded
    if [ -n "${CONTROL_PLANE_BUILD:-}" ]; then
      echo "building $name with \$CONTROL_PLANE_BUILD ($CONTROL_PLANE_BUILD)..."
      $CONTROL_PLANE_BUILD "$name" "$out/$name"
      how[$name]="built by \$CONTROL_PLANE_BUILD"
    else
      build_from_modules "$name" "$out/$name"
      how[$name]="built from Go modules"
    fi
    reports "$out/$name" "$name" || { echo "$name does not report $(pinned "$name") after the build" >&2; exit 1; }
  done
  echo "control plane: $(pinned kube-apiserver) ${how[kube-apiserver]}, $(pinned etcd) ${how[etcd]}; in $out"
fi

# envtest looks for kubectl beside the other binaries: the release's if it
# was downloaded, else the machine's own.
if [ ! -e "$out/kubectl" ]; then
  if [ -n "$envtest_kubectl" ]; then
    mv -f "$envtest_kubectl" "$out/kubectl"
  elif command -v kubectl >/dev/null; then
    ln -sf "$(command -v kubectl)" "$out/kubectl"
  fi
fi
