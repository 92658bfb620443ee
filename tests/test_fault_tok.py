"""Fault injection into tokenizer training (``VAR/train_vae.py``) on a tiny synthetic set.

As in ``test_fault_var.py``, faults come from a launcher written into ``tmp_path`` that wraps
``VAETrainer.train_step`` and runs ``VAR/train_vae.py`` as ``__main__``: ``FAULT_KILL_AT=g`` SIGKILLs the
process at global iteration ``g``; ``FAULT_NAN_AT=g1,..`` makes the loss NaN at those iterations. Also:
bad window files in the corpus (``--skip_bad``).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from utils.checkpoint import load_checkpoint

pytestmark = [pytest.mark.slow]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# 16 train windows, --bs=4: 4 iterations per epoch, 2 epochs = global iterations 0..7
FLAGS = ["--bs=4", "--ep=2", "--save_it=2", "--seed=0", "--vocab_size=16", "--z_channels=4", "--ch=8",
         "--ch_mult=1_2_2", "--workers=0"]

LAUNCHER = r'''
import os, runpy, signal, sys
from utils.var_path import ensure_var_importable
ensure_var_importable()
import vae_trainer

kill_at = int(os.environ.get("FAULT_KILL_AT", "-1"))
nan_at = {int(g) for g in os.environ.get("FAULT_NAN_AT", "").split(",") if g}
_step, _loss = vae_trainer.VAETrainer.train_step, vae_trainer.VAETrainer.compute_loss
_bad = [False]

def compute_loss(self, *a, **kw):
    loss, parts = _loss(self, *a, **kw)
    return (loss * float("nan"), parts) if _bad[0] else (loss, parts)

def train_step(self, it, g_it, *a, **kw):
    if g_it == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    _bad[0] = g_it in nan_at
    try:
        return _step(self, it, g_it, *a, **kw)
    finally:
        _bad[0] = False

vae_trainer.VAETrainer.train_step = train_step
vae_trainer.VAETrainer.compute_loss = compute_loss
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
'''


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    from prototypes.synthetic_eeg import SyntheticConfig, make_dataset
    base = tmp_path_factory.mktemp("fault_tok")
    s = {"ds": str(base / "ds"), "launcher": str(base / "launch.py"), "ref": str(base / "ref")}
    make_dataset(s["ds"], SyntheticConfig(n_channels=2, sfreq=100.0, window_sec=1.28, n_windows=24,
                                          windows_per_recording=4, seed=0))
    with open(s["launcher"], "w", encoding="utf-8") as fh:
        fh.write(LAUNCHER)
    r = _train(s, s["ref"])
    assert r.returncode == 0, r.stderr[-3000:]
    return s


def _train(s: dict, out: str, extra: tuple[str, ...] = (), **fault) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=REPO)
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        env.pop(key, None)
    env.update({f"FAULT_{k.upper()}": str(v) for k, v in fault.items()})
    cmd = [sys.executable, s["launcher"], "VAR/train_vae.py", f"--data_path={s['ds']}", f"--local_out_dir_path={out}",
           *FLAGS, *extra]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=150)


def _state(out: str) -> dict:
    return load_checkpoint(os.path.join(out, "vae-ckpt-last.pth"), fallback=False)[0]


def test_sigkill_mid_epoch_then_same_command_is_bit_identical(setup, tmp_path):
    out = str(tmp_path / "run")
    r = _train(setup, out, kill_at=7)  # epoch 1, iteration 3; the last save was at epoch 1, iteration 2
    assert r.returncode == -9
    assert (_state(out)["epoch"], _state(out)["iter"]) == (1, 2)
    r = _train(setup, out)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = _state(setup["ref"]), _state(out)
    assert (a["epoch"], a["iter"]) == (b["epoch"], b["iter"]) == (2, 0)
    for k, v in a["vae_wo_ddp"].items():
        assert torch.equal(v, b["vae_wo_ddp"][k]), k


def _log(out: str) -> list[dict]:
    with open(os.path.join(out, "log.txt"), encoding="utf-8") as fh:
        return [json.loads(ln) for ln in fh.read().split("\n\n", 1)[1].splitlines() if ln.strip()]


def _finite(state: dict) -> bool:
    return all(torch.isfinite(v).all() for v in state["vae_wo_ddp"].values() if v.is_floating_point())


def test_nonfinite_step_is_skipped_and_counted(setup, tmp_path):
    out = str(tmp_path / "run")
    r = _train(setup, out, nan_at="2")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "non-finite loss or gradient at epoch 0 iteration 2: step skipped (1 in a row)" in r.stderr
    assert [d["nonfinite_total"] for d in _log(out)] == [1, 1]
    state = _state(out)
    assert state["nonfinite_total"] == 1 and _finite(state)
    assert all(torch.isfinite(v).all() for v in state["trainer"]["vae_opt"]["optimizer"]["state"][0].values())


def test_nonfinite_run_stops_with_a_checkpoint_from_before_the_fault(setup, tmp_path):
    out = str(tmp_path / "run")
    r = _train(setup, out, nan_at="4,5", extra=("--max_nonfinite=2",))
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("train_vae.py: error: 2 optimizer steps in a row had a non-finite") and "Traceback" not in r.stderr
    state = _state(out)  # end of epoch 0 (global iteration 4), before the first bad step
    assert (state["epoch"], state["iter"]) == (1, 0) and state["nonfinite_total"] == 0 and _finite(state)


def test_skip_bad_files(setup, tmp_path, spoil_corpus):
    root = str(tmp_path / "ds")
    shutil.copytree(setup["ds"], root)
    garbage, nan_file = spoil_corpus(root, key="cumulative_bands", index=(-1, 1, 7), value=np.inf)
    out = str(tmp_path / "run")
    r = _train(dict(setup, ds=root), out)
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("train_vae.py: error: " + garbage)
    r = _train(dict(setup, ds=root), out, extra=("--skip_bad=1",))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "skipped 1 bad file(s)" in r.stderr and garbage in r.stderr  # header check when the split opens
    assert "skipped bad window file" in r.stderr and nan_file in r.stderr  # data check when the window is read
