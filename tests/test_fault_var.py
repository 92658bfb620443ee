"""Fault injection into VAR training (``VAR/train.py``) on a tiny synthetic set: nothing lost, nothing wrong.

Faults are injected from outside the product code: each training process is started through a small
launcher written into ``tmp_path`` (:data:`LAUNCHER`) that wraps ``VARTrainer.train_step`` or
``os.replace`` and then runs ``VAR/train.py`` as ``__main__``. The launcher reads ``FAULT_*`` variables:

- ``FAULT_KILL_AT=g`` (with ``FAULT_RANK``): SIGKILL the process when it reaches global iteration ``g``;
  ``FAULT_FIRST_TRY_ONLY=1`` only while torchrun's ``TORCHELASTIC_RESTART_COUNT`` is 0.
- ``FAULT_KILL_IN_SAVE=n``: SIGKILL during the n-th write of ``ar-ckpt-last.pth``, after the temporary
  file is complete and the ``.prev`` copy made, right before the rename.
- ``FAULT_NAN_AT=g1,g2``: the model's logits are NaN at these global iterations.

Every kill is followed by the *same* command; the final parameters must equal an uninterrupted run's
bit for bit (CPU, fixed seed).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from utils.checkpoint import load_checkpoint, save_checkpoint
from utils.eeg_bands import scale_lengths_for_bands
from utils.eeg_dataset import EEGWindowDataset

pytestmark = [pytest.mark.slow]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# 16 train windows, --bs=4 -> 4 iterations per epoch, 2 epochs = global iterations 0..7
FLAGS = ["--depth=1", "--bs=4", "--ep=2", "--seed=0", "--save_it=2", "--tlr=3e-3", "--wp=0.5", "--workers=0"]

LAUNCHER = r'''
import os, runpy, signal, sys
from utils.var_path import ensure_var_importable
ensure_var_importable()
import trainer

def _kill():
    sys.stdout.flush(); sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)

first_try = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0" or not os.environ.get("FAULT_FIRST_TRY_ONLY")
rank_hit = os.environ.get("RANK", "0") == os.environ.get("FAULT_RANK", "0")
kill_at = int(os.environ.get("FAULT_KILL_AT", "-1"))
nan_at = {int(g) for g in os.environ.get("FAULT_NAN_AT", "").split(",") if g}
_step = trainer.VARTrainer.train_step

class _NaNLogits:
    def __init__(self, var):
        self.var = var
    def __call__(self, *a, **kw):
        return self.var(*a, **kw) * float("nan")

def train_step(self, *a, **kw):
    g_it = kw["g_it"]
    if g_it == kill_at and first_try and rank_hit:
        _kill()
    if g_it in nan_at:
        real = self.var
        self.var = _NaNLogits(real)
        try:
            return _step(self, *a, **kw)
        finally:
            self.var = real
    return _step(self, *a, **kw)

trainer.VARTrainer.train_step = train_step

kill_in_save = int(os.environ.get("FAULT_KILL_IN_SAVE", "0"))
_replace, _n = os.replace, [0]
def replace(src, dst, *a, **kw):
    if str(dst).endswith("ar-ckpt-last.pth"):
        _n[0] += 1
        if _n[0] == kill_in_save:
            _kill()
    return _replace(src, dst, *a, **kw)
os.replace = replace

sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
'''


def _env(**fault: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1", PYTHONPATH=REPO)
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "TORCHELASTIC_RESTART_COUNT"):
        env.pop(key, None)
    env.update({f"FAULT_{k.upper()}": str(v) for k, v in fault.items()})
    return env


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    """Synthetic dataset (2 channels, 128 samples), a fixed random tokenizer, the launcher, two reference runs."""
    from models import VQVAE
    from prototypes.synthetic_eeg import SyntheticConfig, make_dataset
    from vae_checkpoint import TOKENIZER_KEY, tokenizer_info
    base = tmp_path_factory.mktemp("fault_var")
    ds_root = str(base / "ds")
    make_dataset(ds_root, SyntheticConfig(n_channels=2, sfreq=100.0, window_sec=1.28, n_windows=24,
                                          windows_per_recording=4, seed=0))
    ds = EEGWindowDataset(ds_root, "train")
    assert len(ds) == 16
    pns = scale_lengths_for_bands(ds.bands, ds.sfreq, ds.n_times // 4)
    torch.manual_seed(0)
    vae = VQVAE(in_channels=ds.n_channels, vocab_size=16, z_channels=4, ch=8, ch_mult=(1, 2, 2), num_res_blocks=1,
                v_patch_nums=pns, tokens_per_pos=1, test_mode=True)
    x_NCT = torch.stack([ds[i][0][-1] for i in range(len(ds))])
    uv = float(x_NCT.std(dim=-1).median())
    with torch.no_grad():
        vae.quantize.init_codebook_from_(vae.encode_BCl(x_NCT / uv), generator=torch.Generator().manual_seed(0))
    info = tokenizer_info(vae, sfreq=ds.sfreq, bands=ds.bands.tolist(), ch_names=ds.ch_names, uv_scale=uv,
                          n_extra_coarse=0, tokens_per_nyquist=1.0)
    tok = str(base / "vae-ckpt-best.pth")
    save_checkpoint(tok, {TOKENIZER_KEY: info, "vae_wo_ddp": vae.state_dict(), "epoch": 1, "iter": 0}, config=info)
    launcher = base / "launch.py"
    launcher.write_text(LAUNCHER)
    s = dict(ds=ds_root, tok=tok, launcher=str(launcher), base=base)
    s["ref1"] = str(base / "ref1")
    r = _train(s, s["ref1"])
    assert r.returncode == 0, r.stderr[-3000:]
    s["ref2"] = str(base / "ref2")
    r = _train(s, s["ref2"], nproc=2)
    assert r.returncode == 0, r.stderr[-3000:]
    return s


def _train(s: dict, out: str, nproc: int = 1, torchrun: tuple[str, ...] = (), extra: tuple[str, ...] = (),
           **fault) -> subprocess.CompletedProcess:
    script = [s["launcher"], "VAR/train.py", f"--data_path={s['ds']}", f"--vae_ckpt={s['tok']}",
              f"--local_out_dir_path={out}", *FLAGS, *extra]
    if nproc > 1:
        rdzv = () if any(o.startswith("--rdzv") for o in torchrun) else ("--standalone",)
        cmd = [sys.executable, "-m", "torch.distributed.run", *rdzv, f"--nproc_per_node={nproc}",
               "--monitor_interval=0.2", *torchrun, *script]
    else:
        cmd = [sys.executable, *script]
    return subprocess.run(cmd, cwd=REPO, env=_env(**fault), capture_output=True, text=True, timeout=150)


def _final(out: str) -> dict:
    state, used = load_checkpoint(os.path.join(out, "ar-ckpt-last.pth"), fallback=False)
    assert used.endswith("ar-ckpt-last.pth")
    return state


def _assert_same_params(out: str, ref: str) -> None:
    a, b = _final(ref), _final(out)
    assert (b["epoch"], b["iter"]) == (a["epoch"], a["iter"]) == (2, 0)
    for k, va in a["trainer"]["var_wo_ddp"].items():
        assert torch.equal(va, b["trainer"]["var_wo_ddp"][k]), k
    for k, va in a["trainer"]["var_opt"]["optimizer"]["state"].items():
        for name, t in va.items():
            assert torch.equal(t, b["trainer"]["var_opt"]["optimizer"]["state"][k][name]), (k, name)


def _log(out: str) -> list[dict]:
    with open(os.path.join(out, "log.txt"), encoding="utf-8") as fh:
        return [json.loads(ln) for ln in fh.read().splitlines()[1:] if ln.strip().startswith("{")]


@pytest.mark.parametrize("kill_at", [5], ids=["mid-epoch-2"])
def test_sigkill_at_a_step_then_same_command_is_bit_identical(setup, tmp_path, kill_at):
    out = str(tmp_path / "run")
    r = _train(setup, out, kill_at=kill_at)
    assert r.returncode == -9  # SIGKILL
    if kill_at > 2:  # a mid-epoch checkpoint (--save_it=2) survived the kill: at most 2 iterations lost
        state = _final(out)
        assert (state["epoch"], state["iter"]) in ((0, 2), (1, 0))
    r = _train(setup, out)
    assert r.returncode == 0, r.stderr[-3000:]
    _assert_same_params(out, setup["ref1"])


@pytest.mark.parametrize("nth_save", [3], ids=["third-write"])
def test_sigkill_during_checkpoint_write_keeps_a_good_state_and_resumes(setup, tmp_path, nth_save):
    out = str(tmp_path / "run")
    r = _train(setup, out, kill_in_save=nth_save)
    assert r.returncode == -9
    leftovers = [f for f in os.listdir(out) if f.endswith(".tmp")]
    assert leftovers  # the kill really happened with a complete temporary file not yet renamed
    if nth_save > 1:  # the last good checkpoint is intact and verifies
        assert _final(out)["iter"] in (0, 2)
    r = _train(setup, out)
    assert r.returncode == 0, r.stderr[-3000:]
    _assert_same_params(out, setup["ref1"])
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")], "stale temporary checkpoint files left behind"


def test_nonfinite_step_is_skipped_and_counted(setup, tmp_path):
    out = str(tmp_path / "run")
    r = _train(setup, out, nan_at="3")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "non-finite loss or gradient at epoch 0 iteration 3: step skipped (1 in a row)" in r.stderr
    assert [d["nonfinite_total"] for d in _log(out) if "nonfinite_total" in d] == [1, 1]
    state = _final(out)
    assert state["run"]["nonfinite_total"] == 1
    assert _finite_params(state)


def _finite_params(state: dict) -> bool:
    """Every float tensor of the model is finite (the attention mask buffer holds -inf by design)."""
    return all(torch.isfinite(t).all() for k, t in state["trainer"]["var_wo_ddp"].items()
               if t.is_floating_point() and "attn_bias" not in k)


def test_nonfinite_run_stops_with_a_checkpoint_from_before_the_fault(setup, tmp_path):
    out = str(tmp_path / "run")
    r = _train(setup, out, nan_at="4,5", extra=("--max_nonfinite=2",))
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("train.py: error: 2 optimizer steps in a row had a non-finite loss") and "Traceback" not in r.stderr
    state = _final(out)  # the end of epoch 0 (global iteration 4), before the first bad step
    assert (state["epoch"], state["iter"]) == (1, 0) and state["run"]["nonfinite_total"] == 0
    assert _finite_params(state)


@pytest.mark.torchrun
def test_torchrun_worker_killed_then_same_command_is_bit_identical(setup, tmp_path):
    out = str(tmp_path / "run")
    r = _train(setup, out, nproc=2, kill_at=5, rank=1)
    assert r.returncode != 0
    r = _train(setup, out, nproc=2)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "[auto_resume] resuming from" in open(os.path.join(out, "stdout.txt")).read()
    _assert_same_params(out, setup["ref2"])


@pytest.mark.torchrun
def test_torchrun_max_restarts_recovers_a_crashed_worker(setup, tmp_path):
    out = str(tmp_path / "run")
    r = _train(setup, out, nproc=2, kill_at=5, rank=1, first_try_only=1, torchrun=("--max-restarts=1",))
    assert r.returncode == 0, r.stderr[-3000:]
    with open(os.path.join(out, "stdout.txt"), encoding="utf-8") as fh:
        starts = [ln for ln in fh if "[auto_resume]" in ln]
    assert "starting from scratch" in starts[0] and "resuming from" in starts[-1]  # the restart resumed
    _assert_same_params(out, setup["ref2"])


def test_bad_files_in_the_corpus_are_skipped_when_allowed(setup, tmp_path, spoil_corpus):
    import shutil

    root = str(tmp_path / "ds")
    shutil.copytree(setup["ds"], root)
    garbage, nan_file = spoil_corpus(root, key="signal", index=(1, 9))
    s = dict(setup, ds=root)
    r = _train(s, str(tmp_path / "a"))
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith(f"train.py: error: {garbage}")
    r = _train(s, str(tmp_path / "b"), extra=("--skip_bad=1", "--ep=1"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "skipped 1 bad file(s)" in r.stderr and garbage in r.stderr  # header check when the split opens
    assert "skipped bad window file" in r.stderr and nan_file in r.stderr  # data check when the window is read
