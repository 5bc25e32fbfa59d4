#!/usr/bin/env bash
# nfpm.sh runs the packager pinned in packaging/tools/go.mod. The Makefile and
# the tests both call it, so every package is built by the same nfpm version,
# and the product's go.mod does not carry the packager's dependencies.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
exec "${GO:-go}" tool -modfile="$here/tools/go.mod" nfpm "$@"
