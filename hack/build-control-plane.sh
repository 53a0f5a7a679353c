#!/usr/bin/env bash
# Builds the Kubernetes control plane that envtest and `rotor dev` run
# (kube-apiserver and etcd) from Go modules into bin/k8s, because release
# binaries cannot be downloaded here. Skips a binary that is already present
# at the pinned version, so only a machine's first run pays (~6 minutes on
# 2 cores; the Go build cache makes a rebuild in a fresh clone fast).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-"$root/bin/k8s"}
KUBE_VERSION=v1.37.2
ETCD_VERSION=v3.6.16
mkdir -p "$out"

have() { [ -x "$1" ] && "$1" --version 2>/dev/null | grep -q -- "$2"; }

if have "$out/kube-apiserver" "Kubernetes $KUBE_VERSION"; then
  echo "kube-apiserver $KUBE_VERSION: present"
else
  echo "building kube-apiserver $KUBE_VERSION from k8s.io/kubernetes (about 5 minutes the first time)..."
  minor=${KUBE_VERSION#v1.}; minor=${minor%%.*}
  (cd "$root/hack/tools/kube-apiserver" && CGO_ENABLED=0 go build -mod=mod -o "$out/kube-apiserver" \
    -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor" \
    k8s.io/kubernetes/cmd/kube-apiserver)
  have "$out/kube-apiserver" "Kubernetes $KUBE_VERSION" || { echo "kube-apiserver does not report $KUBE_VERSION" >&2; exit 1; }
fi

if have "$out/etcd" "etcd Version: ${ETCD_VERSION#v}"; then
  echo "etcd $ETCD_VERSION: present"
else
  echo "building etcd $ETCD_VERSION from go.etcd.io/etcd/server/v3 (about 1 minute the first time)..."
  (cd "$root/hack/tools/etcd" && CGO_ENABLED=0 go build -mod=mod -o "$out/etcd" -ldflags "-s -w" go.etcd.io/etcd/server/v3)
  have "$out/etcd" "etcd Version: ${ETCD_VERSION#v}" || { echo "etcd does not report $ETCD_VERSION" >&2; exit 1; }
fi

# envtest looks for kubectl beside the other binaries; the machine's own will do.
if [ ! -e "$out/kubectl" ] && command -v kubectl >/dev/null; then
  ln -sf "$(command -v kubectl)" "$out/kubectl"
fi
