"""Shared fixtures: the real-data folder, tiny synthetic datasets, VAR imports."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from utils.var_path import ensure_var_importable

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.environ.get("EEG_SHARED_DATA", os.path.join(os.path.dirname(REPO_ROOT), "shared", "data"))

ensure_var_importable()
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def repo_root() -> str:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_data() -> str:
    """Path of ``../shared/data``; skips the test (with the reason) when the folder is absent."""
    if not os.path.isdir(os.path.join(SHARED_DATA, "physionet-eegmat")):
        pytest.skip(f"real EEG recordings not found at {SHARED_DATA} (set EEG_SHARED_DATA to use another folder)")
    return SHARED_DATA


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def spoil_train_files(root: str, key: str = "signal", index: tuple[int, ...] = (0, 5),
                      value: float = float("nan")) -> tuple[str, str]:
    """Damage a dataset copy: train file #1 becomes non-npz bytes, train file #2 keeps a valid header but gets
    ``value`` written into ``key[index]``. Returns (garbage path, bad-value path)."""
    files = sorted(os.listdir(os.path.join(root, "train")))
    garbage, bad = (os.path.join(root, "train", n) for n in files[1:3])
    with open(garbage, "wb") as fh:
        fh.write(b"not an npz at all")
    with np.load(bad, allow_pickle=False) as npz:
        members = {k: npz[k] for k in npz.files}
    members[key][index] = value
    np.savez(bad, **members)
    return garbage, bad


@pytest.fixture
def spoil_corpus():
    """The :func:`spoil_train_files` helper, for tests that inject bad files into a corpus."""
    return spoil_train_files


def save_tiny_var_checkpoint(ds_root: str, path: str) -> None:
    """A random tokenizer (V=8, 4x downsampling, band layout of ``ds_root``) and a random depth-1 two-class VAR,
    saved at ``path`` as ``VAR/train.py`` writes ``ar-ckpt-*.pth`` (no training)."""
    from models import VQVAE, build_var
    from utils.checkpoint import save_checkpoint
    from utils.eeg_bands import scale_lengths_for_bands
    from utils.eeg_dataset import EEGWindowDataset
    from vae_checkpoint import tokenizer_info
    ds = EEGWindowDataset(ds_root, "train")
    pns = scale_lengths_for_bands(ds.bands, ds.sfreq, ds.n_times // 4)
    torch.manual_seed(0)
    vae = VQVAE(in_channels=ds.n_channels, vocab_size=8, z_channels=4, ch=8, ch_mult=(1, 2, 2), num_res_blocks=1,
                v_patch_nums=pns, tokens_per_pos=1, test_mode=True).eval()
    info = tokenizer_info(vae, sfreq=ds.sfreq, bands=ds.bands.tolist(), ch_names=ds.ch_names, uv_scale=10.0,
                          n_extra_coarse=0, tokens_per_nyquist=1.0)
    var = build_var(vae, "cpu", num_classes=2, depth=1)
    var.init_weights(init_adaln=0.5, init_adaln_gamma=0.5, init_head=1.0, init_std=0.05)
    save_checkpoint(path, {"trainer": {"var_wo_ddp": var.state_dict(), "vae_local": vae.state_dict(),
                                       "config": var.get_config()},
                           "tokenizer": info, "class_names": ["a", "b"], "epoch": 1, "iter": 0})
