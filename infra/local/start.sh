#!/usr/bin/env bash
# Start the local stack on loopback, detached: S3 (SeaweedFS), MLflow, Prefect server + worker.
#
#   infra/local/start.sh [STATE_DIR] [--timeout S] [--no-prefect-services]
#
# STATE_DIR (default: .stack in the repo root) keeps data, logs, pids and env.sh (credentials,
# owner-only). Prints the non-secret settings and the line to source. Safe to run twice.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
state="${1:-$repo/.stack}"
[[ "$state" = /* ]] || state="$PWD/$state"   # relative to where the script was called from
python="${PYTHON:-$repo/.venv/bin/python}"
[[ -x "$python" ]] || python="$(command -v python3)"

cd "$repo"
exec "$python" -m infra.local_stack start --state "$state" "${@:2}"
