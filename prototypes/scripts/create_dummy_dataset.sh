#!/usr/bin/env bash
# Write a deterministic synthetic EEG dataset (train/, val/, manifest.json) in the project's npz schema.
#   bash prototypes/scripts/create_dummy_dataset.sh OUT [--channels 8] [--sfreq 100] [--window-sec 2]
#        [--n-windows 160] [--windows-per-recording 8] [--val-fraction 0.25] [--seed 0] [--overwrite]
# All flags go to `python -m prototypes.synthetic_eeg` (see its --help); a non-empty OUT is refused
# unless --overwrite. Uses <repo>/.venv when present (create it with prototypes/scripts/setup_uv_env.sh),
# else $PYTHON or python3.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
if [ -n "${PYTHON:-}" ]; then py="$PYTHON"
elif [ -x "${VENV_DIR:-$repo/.venv}/bin/python" ]; then py="${VENV_DIR:-$repo/.venv}/bin/python"
else py=python3; fi
if [ $# -eq 0 ]; then
  echo "create_dummy_dataset.sh: error: missing OUT; usage: bash prototypes/scripts/create_dummy_dataset.sh OUT [flags] (--help lists the flags)" >&2
  exit 2
fi
# The repo root goes on PYTHONPATH (not cd) so a relative OUT stays relative to the caller's folder.
PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}" exec "$py" -m prototypes.synthetic_eeg "$@"
