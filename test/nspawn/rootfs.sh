#!/usr/bin/env bash
# rootfs.sh makes (once) a Debian bookworm rootfs with systemd, D-Bus and
# journald for the tests that need a real systemd node, and caches it as a
# tarball by version outside the work tree. It prints the tarball's path.
# Needs root (debootstrap, systemd-nspawn); installs them when missing.
set -euo pipefail
version=bookworm-v2
cache=${CERTAGENT_CACHE:-/var/cache/certagent-test}
tar=$cache/rootfs-$version.tar
if [ -s "$tar" ]; then echo "$tar"; exit 0; fi
if [ "$(id -u)" != 0 ]; then echo "rootfs.sh needs root" >&2; exit 1; fi
need=()
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v systemd-nspawn >/dev/null || need+=(systemd-container)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
mkdir -p "$cache"
work=$(mktemp -d "$cache/rootfs-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "debootstrap bookworm (about a minute)" >&2
debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,procps,ca-certificates,adduser,passwd,util-linux bookworm "$work/root" >&2
# A quiet, quick boot: no getty, no network setup to wait for.
rm -f "$work/root/etc/systemd/system/getty.target.wants/"* 2>/dev/null || true
ln -sf /dev/null "$work/root/etc/systemd/system/systemd-networkd-wait-online.service"
echo certagent-node >"$work/root/etc/hostname"
tar -C "$work/root" -cf "$tar.tmp" .
mv "$tar.tmp" "$tar"
echo "$tar"
