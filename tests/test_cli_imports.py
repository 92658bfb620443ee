"""The two ``utils`` folders form one package, from the repo root and from inside VAR/."""
from __future__ import annotations

import os
import subprocess
import sys

import utils


def _modules(folder: str) -> set[str]:
    return {f[:-3] for f in os.listdir(folder) if f.endswith(".py") and f != "__init__.py"}


def test_utils_folders_have_disjoint_module_names(repo_root):
    top = _modules(os.path.join(repo_root, "utils"))
    var = _modules(os.path.join(repo_root, "VAR", "utils"))
    assert top, "top-level utils is empty"
    assert not (top & var), f"module names in both utils folders: {sorted(top & var)}"


def test_package_path_spans_both_folders(repo_root):
    paths = {os.path.realpath(p) for p in utils.__path__}
    assert os.path.realpath(os.path.join(repo_root, "utils")) in paths
    assert os.path.realpath(os.path.join(repo_root, "VAR", "utils")) in paths


def test_eeg_utils_resolve_with_var_first_on_path(repo_root, tmp_path):
    # Mimic `torchrun VAR/train.py`: the script's folder is sys.path[0], the repo root is absent.
    script = tmp_path / "probe.py"
    script.write_text("import sys\nsys.path.insert(0, sys.argv[1])\n"
                      "import utils, utils.eeg_bands as b\n"
                      "print(b.__file__)\nprint(len(b.DEFAULT_BANDS))\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, str(script), os.path.join(repo_root, "VAR")], cwd=str(tmp_path),
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    file_line, count_line = out.stdout.strip().splitlines()
    assert os.path.realpath(file_line) == os.path.realpath(os.path.join(repo_root, "utils", "eeg_bands.py"))
    assert count_line == "5"
