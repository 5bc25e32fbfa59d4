#!/usr/bin/env bash
# build.sh builds the real kubeadm, kube-apiserver and kube-controller-manager
# from the pinned k8s.io/kubernetes module and caches them by version outside
# the work tree. It prints the directory holding the binaries.
#
#   KUBE_VERSION  (default 1.37.2)  k8s.io/kubernetes version; staging modules use 0.<minor>.<patch>
#   CERTAGENT_CACHE (default /var/cache/certagent-test, or ~/.cache/certagent-test when not root)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
ver=${KUBE_VERSION:-1.37.2}
staging=0.${ver#*.}
if [ -z "${CERTAGENT_CACHE:-}" ]; then
  if [ "$(id -u)" = 0 ]; then CERTAGENT_CACHE=/var/cache/certagent-test; else CERTAGENT_CACHE=$HOME/.cache/certagent-test; fi
fi
out=$CERTAGENT_CACHE/k8s-v$ver/bin
bins=(kubeadm kube-apiserver kube-controller-manager)

have=1
for b in "${bins[@]}"; do [ -x "$out/$b" ] || have=0; done
if [ $have = 1 ]; then echo "$out"; exit 0; fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sed "s/@KUBE_VERSION@/$ver/" "$here/go.mod.in" >"$work/go.mod"
cat >"$work/tools.go" <<'GO'
//go:build tools

// Package k8stools pins the real Kubernetes binaries that certagent's tests
// run against: kubeadm (fixture generator and reference), kube-apiserver and
// kube-controller-manager (CSR renewal).
package k8stools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubeadm"
)
GO
# k8s.io/kubernetes refers to its staging modules as v0.0.0 with replace lines
# that only work inside its own tree; pin each to the matching release.
for m in api apiextensions-apiserver apimachinery apiserver cli-runtime client-go \
  cloud-provider cluster-bootstrap code-generator component-base component-helpers \
  controller-manager cri-api cri-client csi-translation-lib dynamic-resource-allocation \
  endpointslice externaljwt kms kube-aggregator kube-controller-manager kube-proxy \
  kube-scheduler kubectl kubelet metrics mount-utils pod-security-admission sample-apiserver; do
  echo "replace k8s.io/$m => k8s.io/$m v$staging" >>"$work/go.mod"
done
cd "$work"
echo "building Kubernetes v$ver tools (cold: about 6 minutes on 2 cores)" >&2
GOFLAGS=-mod=mod go mod tidy >&2
mkdir -p "$out.tmp"
GOFLAGS=-mod=mod go build -tags tools -trimpath -o "$out.tmp/" \
  k8s.io/kubernetes/cmd/kubeadm k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager >&2
rm -rf "$out"; mv "$out.tmp" "$out"
echo "$out"
