"""Fault injection into the prototype pipeline: full disk and read-only folder during a checkpoint write,
NaN steps, bad files in the corpus, SIGKILL mid-epoch (with --save-every-steps: at most that many steps
lost). Nothing written before the fault may be lost, and a resumed run must end bit-identical to an
uninterrupted one (CPU, fixed seed)."""
from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile

import pytest
import torch

from prototypes import eeg_scale_ar_pipeline as pipeline
from prototypes.eeg_scale_ar_model import EEGScaleAutoregressiveModel
from prototypes.synthetic_eeg import SyntheticConfig, make_dataset
from utils.checkpoint import load_checkpoint
from utils.cli import run_cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = SyntheticConfig(n_channels=2, sfreq=100.0, window_sec=1.0, n_windows=16, windows_per_recording=4, seed=0)
ARGS = ["--batch-size", "16", "--d-model", "16", "--nhead", "2", "--num-layers", "1", "--dropout", "0.1",
        "--lr", "2e-3", "--seed", "0", "--device", "cpu"]
PROG = "eeg_scale_ar_pipeline"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("fault_proto") / "data")
    make_dataset(root, DATA)
    return root


@pytest.fixture(scope="module")
def reference(data_root, tmp_path_factory) -> dict:
    """An uninterrupted 3-epoch run: its final parameters."""
    out = str(tmp_path_factory.mktemp("fault_proto") / "ref")
    assert pipeline.main(["--data-root", data_root, "--checkpoint-dir", out, "--epochs", "3", *ARGS]) == 0
    return load_checkpoint(os.path.join(out, "last.pt"), fallback=False)[0]


@pytest.fixture
def cli(capsys):
    """Run the pipeline as its command line would: (exit code, stderr lines)."""
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers.clear()

    def call(argv):
        with pytest.raises(SystemExit) as exc:
            run_cli(pipeline.main, PROG, argv)
        return exc.value.code, capsys.readouterr().err.strip().splitlines()

    yield call
    root.handlers[:] = saved


def _same_params(a: dict, b: dict) -> None:
    assert a["epoch"] == b["epoch"]
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k


def _resume_and_compare(out: str, data_root: str, reference: dict) -> None:
    last = os.path.join(out, "last.pt")
    assert pipeline.main(["--data-root", data_root, "--checkpoint-dir", out, "--epochs", "3", "--resume", last,
                          *ARGS]) == 0
    _same_params(reference, load_checkpoint(last, fallback=False)[0])


def _failing_second_save(exc: OSError, monkeypatch, where: str):
    """Make the 2nd write of last.pt fail with ``exc`` (``where``: 'write' half-way, or 'open' the temp file)."""
    calls = {"n": 0}
    real_save, real_mkstemp = torch.save, tempfile.mkstemp

    def save(obj, fh, *a, **kw):
        if isinstance(obj, dict) and obj.get("kind") == pipeline.CKPT_KIND and where == "write":
            calls["n"] += 1
            if calls["n"] == 2:
                fh.write(b"PK\x03\x04 half a checkpoint")
                raise exc
        return real_save(obj, fh, *a, **kw)

    def mkstemp(*a, **kw):
        if where == "open" and kw.get("prefix", "").startswith(".last.pt."):
            calls["n"] += 1
            if calls["n"] == 2:
                raise exc
        return real_mkstemp(*a, **kw)

    monkeypatch.setattr(torch, "save", save)
    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    return calls


def _snapshot(folder: str) -> dict[str, bytes]:
    return {n: open(os.path.join(folder, n), "rb").read() for n in sorted(os.listdir(folder))}


@pytest.mark.parametrize("fault", ["disk full", "read-only folder"])
def test_failed_checkpoint_write_keeps_previous_files_then_resumes_exactly(fault, data_root, reference, tmp_path,
                                                                          monkeypatch, cli):
    out = str(tmp_path / "run")
    argv = ["--data-root", data_root, "--checkpoint-dir", out, "--epochs", "3", *ARGS]
    if fault == "disk full":
        calls = _failing_second_save(OSError(errno.ENOSPC, "No space left on device"), monkeypatch, "write")
        expected = "could not write checkpoint (disk full)"
    else:
        # a real read-only folder where permissions apply; as root (who may write anyway) the same error is
        # raised where the temporary file is created
        calls = _failing_second_save(PermissionError(errno.EACCES, "Permission denied"), monkeypatch, "open")
        expected = "could not write checkpoint (Permission denied)"
    code, lines = cli(argv)
    assert calls["n"] == 2
    assert code == 2 and len(lines) == 1 and lines[0].startswith(f"{PROG}: error: ") and expected in lines[0]
    assert "previous checkpoint files are intact" in lines[0]
    names = sorted(os.listdir(out))
    assert not [n for n in names if n.endswith(".tmp")], names  # the half-written file is gone
    state = load_checkpoint(os.path.join(out, "last.pt"), fallback=False)[0]
    assert state["epoch"] == 1  # epoch 1 survived intact (checksum verified)
    monkeypatch.undo()
    _resume_and_compare(out, data_root, reference)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores folder permissions")
def test_real_read_only_folder(data_root, tmp_path, cli):
    out = tmp_path / "run"
    assert pipeline.main(["--data-root", data_root, "--checkpoint-dir", str(out), "--epochs", "1", *ARGS]) == 0
    before = _snapshot(str(out))
    os.chmod(out, 0o555)
    try:
        code, lines = cli(["--data-root", data_root, "--checkpoint-dir", str(out), "--epochs", "2", "--resume",
                           str(out / "last.pt"), *ARGS])
    finally:
        os.chmod(out, 0o755)
    assert code == 2 and len(lines) == 1 and "could not write checkpoint" in lines[0]
    assert _snapshot(str(out)) == before


def _nan_forward(monkeypatch, bad_calls: set[int]) -> dict:
    """The model's training forward returns NaN on the given (1-based) calls."""
    real = EEGScaleAutoregressiveModel.forward
    n = {"calls": 0}

    def forward(self, *a, **kw):
        out = real(self, *a, **kw)
        if self.training:
            n["calls"] += 1
            if n["calls"] in bad_calls:
                return out * float("nan")
        return out

    monkeypatch.setattr(EEGScaleAutoregressiveModel, "forward", forward)
    return n


def test_nonfinite_step_is_skipped_and_counted(data_root, tmp_path, monkeypatch, caplog):
    out = str(tmp_path / "run")
    _nan_forward(monkeypatch, {2})  # epoch 1 has 3 steps (48 pairs / 16)
    with caplog.at_level(logging.WARNING):
        assert pipeline.main(["--data-root", data_root, "--checkpoint-dir", out, "--epochs", "2", *ARGS]) == 0
    assert "epoch 1 step 2/3: non-finite loss (nan)" in caplog.text and "step skipped (1 in a row)" in caplog.text
    with open(os.path.join(out, "metrics.json"), encoding="utf-8") as fh:
        epochs = json.load(fh)["epochs"]
    assert [e["nonfinite_steps"] for e in epochs] == [1, 0] and [e["steps"] for e in epochs] == [2, 3]
    state = load_checkpoint(os.path.join(out, "last.pt"), fallback=False)[0]
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_nonfinite_run_stops_and_keeps_the_last_good_epoch(data_root, reference, tmp_path, monkeypatch, cli):
    out = str(tmp_path / "run")
    _nan_forward(monkeypatch, {6, 7, 8})  # the last step of epoch 2 and the first two of epoch 3: 3 in a row
    code, lines = cli(["--data-root", data_root, "--checkpoint-dir", out, "--epochs", "3", "--max-nonfinite", "3",
                       *ARGS])
    assert code == 2 and lines[-1].startswith(f"{PROG}: error: training diverged in epoch 3: 3 steps in a row")
    state = load_checkpoint(os.path.join(out, "last.pt"), fallback=False)[0]
    assert state["epoch"] == 2  # nothing saved from the failing epoch; epoch 2 (one skipped step) is kept
    assert state["history"][-1]["nonfinite_steps"] == 1


def test_bad_files_in_the_corpus(data_root, tmp_path, cli, caplog, spoil_corpus):
    root = str(tmp_path / "data")
    shutil.copytree(data_root, root)
    garbage, nan_file = spoil_corpus(root)
    out = str(tmp_path / "run")
    code, lines = cli(["--data-root", root, "--checkpoint-dir", out, "--epochs", "1", *ARGS])
    assert code == 2 and len(lines) == 1 and os.path.basename(garbage) in lines[0]
    assert not os.path.exists(out)
    with caplog.at_level(logging.WARNING):
        assert pipeline.main(["--data-root", root, "--checkpoint-dir", out, "--epochs", "1", "--skip-bad",
                              *ARGS]) == 0
    with open(os.path.join(out, "metrics.json"), encoding="utf-8") as fh:
        skipped = json.load(fh)["skipped_files"]
    assert sorted(s["path"] for s in skipped) == sorted([garbage, nan_file])
    assert any("contains NaN or Inf" in s["reason"] for s in skipped)
    assert "2 bad window file(s) skipped" in caplog.text and os.path.basename(nan_file) in caplog.text


LAUNCHER = r'''
import os, runpy, signal, sys, torch
kill_at, n = int(os.environ["FAULT_KILL_AT_STEP"]), [0]
real = torch.nn.utils.clip_grad_norm_
def clip(*a, **kw):
    n[0] += 1
    if n[0] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*a, **kw)
torch.nn.utils.clip_grad_norm_ = clip
sys.argv = ["eeg_scale_ar_pipeline", *sys.argv[1:]]
runpy.run_module("prototypes.eeg_scale_ar_pipeline", run_name="__main__", alter_sys=True)
'''


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_is_bit_identical(data_root, reference, tmp_path):
    launcher = tmp_path / "launch.py"
    launcher.write_text(LAUNCHER)
    out = str(tmp_path / "run")
    # the same thread count as this process, which resumes the run (float sums depend on it)
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()), PYTHONPATH=REPO,
               FAULT_KILL_AT_STEP="5")  # epoch 2, step 2 (3 steps per epoch)
    r = subprocess.run([sys.executable, str(launcher), "--data-root", data_root, "--checkpoint-dir", out,
                        "--epochs", "3", "--save-every-steps", "1", *ARGS], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == -9, r.stderr[-2000:]
    # the kill lost at most the interval: last.pt holds epoch 1 and step 1 of epoch 2
    state = load_checkpoint(os.path.join(out, "last.pt"), fallback=False)[0]
    assert state["epoch"] == 1 and state["partial_epoch"]["step"] == 1
    # resumed without the flag; the reference run had no mid-epoch checkpoints at all
    _resume_and_compare(out, data_root, reference)
    assert "partial_epoch" not in load_checkpoint(os.path.join(out, "last.pt"), fallback=False)[0]
