#!/usr/bin/env bash
# Offline validation of the Kalypso charts, Argo CD objects and Dockerfile.
#
#   bash tests/charts/run.sh [pytest args...]
#
# Installs what a fresh machine lacks into ${XDG_CACHE_HOME:-$HOME/.cache}/kalypso-tools (once; a
# second run only checks version stamps), then runs the pytest suite in this directory. The last
# line printed is "N passed, N failed".
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=tests/charts/tools.sh
source "$here/tools.sh"
install_all_tools

# No bytecode or pytest cache left in the work tree.
export PYTHONDONTWRITEBYTECODE=1

counts="$(mktemp)"
trap 'rm -f "$counts"' EXIT
export KALYPSO_COUNTS_FILE="$counts"

status=0
(cd "$here" && python -m pytest -p no:cacheprovider -q "$@") || status=$?

passed=0 failed=0 skipped=0
if [[ -s "$counts" ]]; then
  read -r passed failed skipped < <(python -c 'import json,sys; c=json.load(open(sys.argv[1])); print(c["passed"], c["failed"], c["skipped"])' "$counts")
fi
# pytest exits 5 when it collected nothing: that is a failure here, not a pass.
if [[ $status -ne 0 && $failed -eq 0 ]]; then
  failed=1
fi
echo "${passed} passed, ${failed} failed, ${skipped} skipped"
exit "$status"
