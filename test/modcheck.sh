#!/usr/bin/env bash
# modcheck.sh proves that every go.mod in the repository resolves from the
# module proxy alone: each module's packages (with their tests) and each of
# its `tool`s are listed in an empty, throw-away module cache. A machine's
# own cache can hide a module the proxy has stopped serving; a new machine
# would then fail in the middle of the build. This fails in seconds instead,
# and says which module and which go.mod.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
tmp=$(mktemp -d)
cleanup() { chmod -R u+w "$tmp" 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

check() { # check DIR: runs in its own empty module cache
  local dir=$1 cache log
  cache=$tmp/cache-${dir//\//_}
  log=$tmp/log-${dir//\//_}
  (
    cd "$dir"
    export GOMODCACHE=$cache GOFLAGS=-mod=readonly
    if [ -n "$(go list -tags tools ./... 2>/dev/null)" ]; then
      go list -deps -test -tags tools ./... >/dev/null
    fi
    # "tool" is the pattern for every tool directive of this go.mod.
    if [ -n "$(go list tool 2>/dev/null)" ]; then
      go list -deps tool >/dev/null
    fi
  ) >"$log" 2>&1
}

mods=$(find . -name go.mod -not -path './.git/*' -not -path '*/testdata/*' | sort)
pids=() dirs=()
for m in $mods; do
  d=$(dirname "$m")
  check "$d" & pids+=($!); dirs+=("$d")
done
fail=0
for i in "${!pids[@]}"; do
  if ! wait "${pids[$i]}"; then
    d=${dirs[$i]}
    echo "modcheck: $d/go.mod does not resolve in an empty module cache:" >&2
    grep -v '^go: downloading' "$tmp/log-${d//\//_}" | tail -20 | sed 's/^/  /' >&2
    echo "  A module the proxy refuses (403/404) must be replaced by a version it serves;" >&2
    echo "  see the env entry's go-partial.tsv before adding or upgrading a dependency." >&2
    fail=1
  fi
done
[ $fail = 0 ] && echo "modcheck: ${#dirs[@]} go.mod files resolve from the module proxy in an empty cache (${dirs[*]})"
exit $fail
