#!/usr/bin/env bash
# build.sh builds the real Kubernetes binaries the tests run against (kubeadm,
# kube-apiserver, kube-controller-manager; more by name) from the module pinned in
# test/k8stools/go.mod and go.sum, and caches them outside the work tree, keyed
# by the Kubernetes version and the pinned go.sum. It prints the directory
# holding the binaries.
#
#   build.sh [kubelet ...]   the Kubernetes binaries (kubelet on demand)
#   build.sh containerd       containerd v2 and its runc shim (containerd.sh)
#
#   CERTAGENT_CACHE (default /var/cache/certagent-test, or ~/.cache/certagent-test when not root)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
if [ "${1:-}" = containerd ]; then exec bash "$here/containerd.sh"; fi
ver=$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" {print $3} $1 == "k8s.io/kubernetes" {print $2}' "$here/go.mod" | head -1)
[ -n "$ver" ] || { echo "build.sh: no k8s.io/kubernetes version in $here/go.mod" >&2; exit 1; }
if [ -z "${CERTAGENT_CACHE:-}" ]; then
  if [ "$(id -u)" = 0 ]; then CERTAGENT_CACHE=/var/cache/certagent-test; else CERTAGENT_CACHE=$HOME/.cache/certagent-test; fi
fi
key=$(cat "$here/go.mod" "$here/go.sum" "$here/tools.go" | sha256sum | cut -c1-12)
out=$CERTAGENT_CACHE/k8s-$ver-$key/bin
# The kubelet is pinned too (tools.go) but built only when asked for
# (`build.sh kubelet`: make test and make e2e ask, for the real-kubelet node).
bins=(kubeadm kube-apiserver kube-controller-manager "$@")

have=1
for b in "${bins[@]}"; do [ -x "$out/$b" ] || have=0; done
if [ $have = 1 ]; then echo "$out"; exit 0; fi

minor=${ver#v*.}; minor=${minor%%.*}
echo "building Kubernetes $ver binaries (cold: about 7 minutes on 2 cores)" >&2
mkdir -p "$(dirname "$out")"
rm -rf "$out.tmp"; mkdir -p "$out.tmp"
vpkg=k8s.io/component-base/version
cd "$here"
# The version variables make the kubelet report its real version on the Node.
GOFLAGS=-mod=readonly go build -tags tools -trimpath \
  -ldflags "-X $vpkg.gitVersion=$ver -X $vpkg.gitMajor=1 -X $vpkg.gitMinor=$minor -X $vpkg.gitTreeState=clean" \
  -o "$out.tmp/" $(printf 'k8s.io/kubernetes/cmd/%s ' "${bins[@]}") >&2
mkdir -p "$out"
for b in "${bins[@]}"; do mv -f "$out.tmp/$b" "$out/$b"; done
rm -rf "$out.tmp"
echo "$out"
