#!/usr/bin/env bash
# Stop everything infra/local/start.sh started (children included); keeps the data. Safe to run twice.
#
#   infra/local/stop.sh [STATE_DIR]
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
state="${1:-$repo/.stack}"
[[ "$state" = /* ]] || state="$PWD/$state"
python="${PYTHON:-$repo/.venv/bin/python}"
[[ -x "$python" ]] || python="$(command -v python3)"

cd "$repo"
exec "$python" -m infra.local_stack stop --state "$state"
