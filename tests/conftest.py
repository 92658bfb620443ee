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
