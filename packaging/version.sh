#!/usr/bin/env bash
# version.sh prints certagent's version from git: the tag (vX.Y.Z) when
# HEAD is tagged, else 0.1.0-dev.<commits>.g<hash>, with .dirty appended
# for uncommitted changes. Semver, so nfpm and both package formats order it.
set -euo pipefail
cd "$(dirname "$0")/.."
if tag=$(git describe --tags --exact-match 2>/dev/null); then
  v=${tag#v}
else
  n=$(git rev-list --count HEAD 2>/dev/null || echo 0)
  h=$(git rev-parse --short=7 HEAD 2>/dev/null || echo unknown)
  v="0.1.0-dev.$n.g$h"
fi
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then v="$v.dirty"; fi
echo "$v"
