#!/usr/bin/env bash
# Main job: provision the host if needed, then run an example workflow headless (see scripts/demo.py).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
eval "$(bash "$REPO/scripts/host/provision.sh" 2> >(grep -v '^WARNING: Location' >&2))"
exec "$MOS_PYTHON" "$REPO/scripts/demo.py" "$@"
