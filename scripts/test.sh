#!/usr/bin/env bash
# Set up the environment (if needed) and run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
bash prototypes/scripts/setup_uv_env.sh
exec "${VENV_DIR:-$repo/.venv}/bin/python" -m pytest "$@"
