"""scripts/main.sh: help, bad arguments and the no-overwrite rule (the full run is exercised by CI's users, not here)."""
from __future__ import annotations

import os
import subprocess


def _main_sh(repo_root: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", os.path.join(repo_root, "scripts", "main.sh"), *args], capture_output=True,
                          text=True, timeout=60)


def test_help_lists_every_stage(repo_root):
    r = _main_sh(repo_root, "--help")
    assert r.returncode == 0
    for stage in ("dataset", "prototype", "tokenizer", "VAR", "samples"):
        assert stage in r.stdout


def test_unknown_argument_is_one_line_exit_2(repo_root):
    r = _main_sh(repo_root, "--epochs", "3")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == ["main.sh: error: unknown argument '--epochs' (see --help)"]


def test_non_empty_output_folder_is_kept_without_overwrite(repo_root, tmp_path):
    keep = tmp_path / "run" / "precious.txt"
    keep.parent.mkdir()
    keep.write_text("do not delete")
    r = _main_sh(repo_root, "--out", str(keep.parent))
    assert r.returncode == 2 and "--overwrite" in r.stderr
    assert keep.read_text() == "do not delete"


def test_bad_numbers_are_refused(repo_root):
    r = _main_sh(repo_root, "--tok-epochs", "zero")
    assert r.returncode == 2 and "--tok-epochs needs a positive integer" in r.stderr


def test_missing_input_leaves_no_output_folder(repo_root, tmp_path):
    out = tmp_path / "run"
    empty = tmp_path / "no_recordings"
    empty.mkdir()
    r = subprocess.run(["bash", os.path.join(repo_root, "scripts", "main.sh"), "--out", str(out)], capture_output=True,
                       text=True, timeout=120, env={**os.environ, "EEGVAR_DATA": str(empty)})
    assert r.returncode == 2 and f"EEGVAR_DATA={empty} holds no eegmat recordings" in r.stderr
    assert not out.exists()
    r = _main_sh(repo_root, "--out", str(out), "--recordings", str(tmp_path / "missing.edf"))
    assert r.returncode == 2 and "missing.edf does not exist" in r.stderr
    assert not out.exists()


def test_synthetic_and_recordings_exclude_each_other(repo_root, tmp_path):
    r = _main_sh(repo_root, "--synthetic", "--recordings", str(tmp_path))
    assert r.returncode == 2 and "exclude each other" in r.stderr
