"""The npz window schema and the lazy dataset reader."""
from __future__ import annotations

import os

import numpy as np
import pytest

from utils.eeg_dataset import EEGWindowDataset, open_dataset
from utils.eeg_schema import read_header, read_window, write_window
from utils.errors import DatasetError

BANDS = [(0.5, 4.0), (4.0, 8.0)]


def _write(path, C=3, T=64, K=2, bands=BANDS, sfreq=100.0, **kw):
    write_window(str(path), np.ones((C, T)), np.ones((K, C, T)), bands[:K], sfreq, **kw)


def _root(tmp_path, n=(3, 2)):
    for split, count in zip(("train", "val"), n):
        for i in range(count):
            _write(tmp_path / split / f"w{i}.npz", label=i % 2)
    return str(tmp_path)


def test_write_read_round_trip(tmp_path):
    path = tmp_path / "a.npz"
    _write(path, ch_names=["Fz", "Cz", "Pz"], subject="s1", source="rec.edf", start=10, label=1)
    win = read_window(str(path))
    assert win.signal_CT.shape == (3, 64) and win.stages_KCT.shape == (2, 3, 64)
    h = win.header
    assert (h.ch_names, h.subject, h.source, h.start, h.label) == (("Fz", "Cz", "Pz"), "s1", "rec.edf", 10, 1)
    assert [f for f in os.listdir(tmp_path) if f.startswith(".tmp")] == []


@pytest.mark.parametrize("mutate, match", [
    (lambda p: p.write_bytes(b"not a zip"), "not a readable npz"),
    (lambda p: np.savez(p, signal=np.ones((3, 8))), "missing key"),
    (lambda p: np.savez(p, signal=np.ones((3, 8)), cumulative_bands=np.ones((2, 3, 9)), bands=np.ones((2, 2)),
                        sfreq=np.float32(100)), "expected \\(stages, 3, 8\\)"),
    (lambda p: np.savez(p, signal=np.ones((3, 8)), cumulative_bands=np.ones((2, 3, 8)),
                        bands=np.array([[0.5, 4], [4, 80]]), sfreq=np.float32(100)), "Nyquist"),
])
def test_bad_files_are_named(tmp_path, mutate, match):
    path = tmp_path / "bad.npz"
    mutate(path)
    with pytest.raises(DatasetError, match=match) as err:
        read_header(str(path))
    assert "bad.npz" in str(err.value)


def test_nan_window_is_refused_on_read(tmp_path):
    path = tmp_path / "nan.npz"
    sig = np.ones((3, 8))
    sig[0, 0] = np.nan
    np.savez(path, signal=sig, cumulative_bands=np.ones((2, 3, 8)), bands=np.array(BANDS), sfreq=np.float32(100))
    with pytest.raises(DatasetError, match="NaN"):
        read_window(str(path))
    with pytest.raises(DatasetError, match="refusing"):
        write_window(str(tmp_path / "x.npz"), sig, np.ones((2, 3, 8)), BANDS, 100)


def test_dataset_reads_lazily_and_checks_consistency(tmp_path):
    root = _root(tmp_path)
    train, val = open_dataset(root)
    assert len(train) == 3 and len(val) == 2
    stages, label = train[1]
    assert tuple(stages.shape) == (2, 3, 64) and label == 1
    _write(tmp_path / "val" / "w9.npz", bands=[(0.5, 4.0), (4.0, 9.0)])
    with pytest.raises(DatasetError, match="w9.npz: 'bands'"):
        EEGWindowDataset(root, "val")
    ds = EEGWindowDataset(root, "val", skip_bad=True)
    assert len(ds) == 2 and len(ds.skipped) == 1


@pytest.mark.parametrize("layout, match", [("none", "dataset folder not found"), ("no_val", "missing 'val/'"),
                                           ("empty_val", "no \\*.npz")])
def test_missing_folders(tmp_path, layout, match):
    root = tmp_path / "ds"
    if layout != "none":
        _write(root / "train" / "a.npz")
    if layout == "empty_val":
        (root / "val").mkdir()
    with pytest.raises(DatasetError, match=match):
        open_dataset(str(root))
