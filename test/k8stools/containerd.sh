#!/usr/bin/env bash
# containerd.sh builds containerd v2 and containerd-shim-runc-v2 (the runtime
# the real kubelet talks to in the test node) from the Go module proxy, at the
# version pinned below, and caches them outside the work tree keyed by that
# version, the build flags and the Go version. It prints the directory
# holding the binaries. `go install module@version` builds with the module's
# own go.mod and go.sum, checked against the checksum database: the same
# pinned sources on every machine.
#
#   CERTAGENT_CACHE (default /var/cache/certagent-test, or ~/.cache/certagent-test when not root)
set -euo pipefail

module=github.com/containerd/containerd/v2
version=v2.4.2
# No btrfs, devmapper or zfs snapshotters: they need cgo and headers, and
# the test node runs no container that needs them.
tags="no_btrfs no_devmapper no_zfs"
ldflags="-s -w -X $module/version.Version=$version -X $module/version.Package=$module"
if [ -z "${CERTAGENT_CACHE:-}" ]; then
  if [ "$(id -u)" = 0 ]; then CERTAGENT_CACHE=/var/cache/certagent-test; else CERTAGENT_CACHE=$HOME/.cache/certagent-test; fi
fi
key=$(printf '%s\n' "$module@$version" "$tags" "$ldflags" "$(go env GOVERSION)" | sha256sum | cut -c1-12)
out=$CERTAGENT_CACHE/containerd-$version-$key/bin
bins=(containerd containerd-shim-runc-v2)

have=1
for b in "${bins[@]}"; do [ -x "$out/$b" ] || have=0; done
if [ $have = 1 ]; then echo "$out"; exit 0; fi

echo "building containerd $version (cold: about a minute on 2 cores)" >&2
mkdir -p "$(dirname "$out")"
rm -rf "$out.tmp"; mkdir -p "$out.tmp"
for b in "${bins[@]}"; do
  CGO_ENABLED=0 GOBIN="$out.tmp" GOFLAGS=-trimpath go install -tags "$tags" -ldflags "$ldflags" "$module/cmd/$b@$version" >&2
done
mkdir -p "$out"
for b in "${bins[@]}"; do mv -f "$out.tmp/$b" "$out/$b"; done
rm -rf "$out.tmp"
echo "$out"
