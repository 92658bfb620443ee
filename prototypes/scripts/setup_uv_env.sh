#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment at <repo>/.venv and install requirements.txt.
# Uses uv when it is on PATH, plain `python3 -m venv` + pip otherwise. Re-running is quick: the install
# is skipped while requirements.txt is unchanged. Works when run (`bash ...`) or sourced (`source ...`,
# which also activates the environment). Override the location with VENV_DIR, the interpreter with PYTHON.
_setup_main() {
  local repo venv py stamp want
  repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
  venv="${VENV_DIR:-$repo/.venv}"
  py="${PYTHON:-python3}"
  stamp="$venv/.requirements.sha256"
  want="$( (sha256sum "$repo/requirements.txt" 2>/dev/null || shasum -a 256 "$repo/requirements.txt") | cut -d' ' -f1)"
  if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    echo "[setup] $venv is up to date"
  else
    if command -v uv >/dev/null 2>&1 && [ "${USE_UV:-1}" != 0 ]; then
      echo "[setup] creating $venv with uv"
      uv venv --seed --python "$py" "$venv" || return 1
      # torch first through pip: pip finds the CPU wheel that this project's machines keep on disk.
      "$venv/bin/python" -m pip install -q "$(grep -E '^torch==' "$repo/requirements.txt")" || return 1
      VIRTUAL_ENV="$venv" uv pip install -q -r "$repo/requirements.txt" || return 1
    else
      echo "[setup] creating $venv with $py -m venv + pip"
      "$py" -m venv "$venv" || return 1
      "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$repo/requirements.txt" || return 1
    fi
    echo "$want" > "$stamp"
  fi
}
if ! _setup_main; then
  echo "[setup] error: installing the requirements failed (see above)" >&2
  if [ "${BASH_SOURCE[0]}" != "$0" ]; then return 1; else exit 1; fi
fi
if [ "${BASH_SOURCE[0]}" != "$0" ]; then
  # shellcheck disable=SC1091
  source "${VENV_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/.venv}/bin/activate"
fi
