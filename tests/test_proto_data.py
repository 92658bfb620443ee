"""The prototype's data side: the synthetic generator and the (stage k, stage k+1, k) pair dataset."""
from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest
import torch

from prototypes.eeg_frequency_dataset import EEGStagePairDataset, estimate_scale_uv, open_pair_datasets
from prototypes.synthetic_eeg import SyntheticConfig, make_dataset
from utils.eeg_dataset import EEGWindowDataset
from utils.eeg_schema import read_window
from utils.errors import DatasetError, UserError

TINY = SyntheticConfig(n_channels=3, sfreq=100.0, window_sec=2.0, n_windows=20, windows_per_recording=4,
                       val_fraction=0.4, seed=3)


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("proto_data") / "ds")
    make_dataset(root, TINY)
    return root


def _digest(root: str) -> dict[str, str]:
    out = {}
    for split in ("train", "val"):
        for name in sorted(os.listdir(os.path.join(root, split))):
            with np.load(os.path.join(root, split, name)) as npz:
                out[f"{split}/{name}"] = hashlib.sha256(npz["signal"].tobytes() + npz["cumulative_bands"].tobytes()
                                                        ).hexdigest()
    return out


def test_counts_split_by_recording_and_manifest(tiny_root):
    manifest = json.load(open(os.path.join(tiny_root, "manifest.json")))
    # 20 windows at 4 per recording = 5 recordings; round(0.4 * 5) = 2 go to val
    assert manifest["counts"] == {"train": 12, "val": 8}
    assert len(os.listdir(os.path.join(tiny_root, "train"))) == 12
    assert len(os.listdir(os.path.join(tiny_root, "val"))) == 8
    train, val = EEGWindowDataset(tiny_root, "train"), EEGWindowDataset(tiny_root, "val")
    train_src = {h.source for h in train.headers}
    val_src = {h.source for h in val.headers}
    assert train_src == {"rec000", "rec001", "rec002"} and val_src == {"rec003", "rec004"}
    assert manifest["recordings"] == {"train": sorted(train_src), "val": sorted(val_src)}
    assert (train.n_stages, train.n_channels, train.n_times, train.sfreq) == (5, 3, 200, 100.0)
    assert set(train.labels.tolist()) == {0, 1} and manifest["label_names"] == ["low_alpha", "high_alpha"]
    # windows of one recording are consecutive, non-overlapping cuts of the continuous recording
    starts = [h.start for h in train.headers if h.source == "rec000"]
    assert np.all(np.diff(starts) == 200)


def test_same_seed_same_files_other_seed_other_files(tiny_root, tmp_path):
    again = str(tmp_path / "again")
    make_dataset(again, TINY)
    assert _digest(again) == _digest(tiny_root)
    other = str(tmp_path / "other")
    make_dataset(other, SyntheticConfig(**{**TINY.__dict__, "seed": 4}))
    assert set(_digest(other).values()).isdisjoint(_digest(tiny_root).values())


def test_refuses_a_non_empty_folder_unless_overwrite(tiny_root, tmp_path):
    out = tmp_path / "ds"
    make_dataset(str(out), TINY)
    before = _digest(str(out))
    with pytest.raises(DatasetError, match="--overwrite"):
        make_dataset(str(out), SyntheticConfig(**{**TINY.__dict__, "seed": 9}))
    assert _digest(str(out)) == before
    make_dataset(str(out), SyntheticConfig(**{**TINY.__dict__, "seed": 9}), overwrite=True)
    assert _digest(str(out)) != before


@pytest.mark.parametrize("change, match", [({"sfreq": 80.0}, "Nyquist"), ({"n_windows": 4}, "--n-windows"),
                                           ({"n_channels": 0}, "--channels"), ({"window_sec": 0.05}, "--window-sec")])
def test_impossible_settings_are_user_errors(tmp_path, change, match):
    with pytest.raises(UserError, match=match):
        make_dataset(str(tmp_path / "x"), SyntheticConfig(**{**TINY.__dict__, **change}))
    assert not (tmp_path / "x").exists()


def test_known_band_content(tiny_root):
    # The band each stage adds has its spectral peak where the generator put it: beta at 2x and gamma at
    # 4x the alpha fundamental (harmonics), theta's locked part at 3x the delta fundamental.
    win = read_window(os.path.join(tiny_root, "train", "rec001_w0000.npz"))
    added_KCT = np.diff(np.concatenate([np.zeros_like(win.stages_KCT[:1]), win.stages_KCT]), axis=0)
    n = 4 * win.stages_KCT.shape[-1]  # zero-padded FFT for a finer frequency grid
    power_KF = (np.abs(np.fft.rfft(added_KCT, n=n, axis=-1)) ** 2).sum(axis=1)
    freqs = np.fft.rfftfreq(n, 1 / 100.0)
    peak = [freqs[np.argmax(p)] for p in power_KF]
    assert 1.6 * 0.95 <= peak[0] <= 2.4 * 1.05
    assert 8.0 <= peak[2] <= 13.0
    assert abs(peak[3] - 2 * peak[2]) <= 1.0
    assert abs(peak[4] - 4 * peak[2]) <= 1.5


def test_pairs_are_consecutive_stages_in_model_units(tiny_root):
    train, val = open_pair_datasets(tiny_root)
    assert isinstance(train, EEGStagePairDataset)
    assert len(train) == 12 * 4 and len(val) == 8 * 4
    raw = EEGWindowDataset(tiny_root, "train")
    assert train.scale_uv == pytest.approx(estimate_scale_uv(raw)) and val.scale_uv == train.scale_uv
    stages_KCT = torch.from_numpy(raw.window(2).stages_KCT)
    for k in range(4):
        x_CT, y_CT, kk = train[2 * 4 + k]
        assert kk == k
        torch.testing.assert_close(x_CT * train.scale_uv, stages_KCT[k])
        torch.testing.assert_close(y_CT * train.scale_uv, stages_KCT[k + 1])
    lazy, _ = open_pair_datasets(tiny_root, cache=False)
    torch.testing.assert_close(lazy[13][0], train[13][0])


def test_limits_are_honoured(tiny_root):
    train, val = open_pair_datasets(tiny_root, limits=(5, 2), scale_uv=10.0)
    assert len(train.windows) == 5 and len(val.windows) == 2 and train.scale_uv == 10.0
    assert len(train) == 5 * 4 and len(val) == 2 * 4
