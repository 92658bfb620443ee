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
