"""Datasets and loaders of the VAR transformer: EEG windows in model units with their class label
(upstream ``utils/data.py``; port: EEG windows instead of ImageNet folders).

Shape letters: C channels (electrodes), T samples, K stages.

Each item is the full-spectrum stage (the last cumulative stage) of a window, in µV divided by the
tokenizer's ``uv_scale``, with its class. Windows without a label (-1) form class 0 of a one-class
(unconditional) set; a dataset mixing labelled and unlabelled windows is an error.
"""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from utils.eeg_dataset import EEGWindowDataset, label_names, open_dataset
from utils.errors import DatasetError

logger = logging.getLogger(__name__)


class FullSpectrumWindows(Dataset):
    """Wraps :class:`EEGWindowDataset`; item ``i`` = (x_CT float32 model units, label int >= 0), plus the
    window's level (int) once :attr:`levels` is set (``VAR/train.py --level_clusters``)."""

    def __init__(self, base: EEGWindowDataset, uv_scale: float, unlabelled_as: int = 0) -> None:
        self.base, self.uv_scale = base, float(uv_scale)
        self.labels = np.where(base.labels < 0, unlabelled_as, base.labels).astype(np.int64)
        self.levels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple:
        stages_KCT, _ = self.base[index]
        if self.levels is None:
            return stages_KCT[-1] / self.uv_scale, int(self.labels[index])
        return stages_KCT[-1] / self.uv_scale, int(self.labels[index]), int(self.levels[index])


def dataset_level_features(ds: EEGWindowDataset, bands: Sequence[Sequence[float]], chunk: int = 256) -> np.ndarray:
    """:func:`utils.eeg_levels.window_levels` of every full-spectrum window of ``ds``: (N, B), read in chunks
    (a progress bar on large sets)."""
    from tqdm import tqdm

    from utils.eeg_levels import window_levels
    out = []
    starts = range(0, len(ds), chunk)
    for s in tqdm(starts, desc=f"levels of {ds.split}", unit="chunk", disable=len(starts) < 8):
        x_NCT = np.stack([ds[i][0][-1].numpy() for i in range(s, min(s + chunk, len(ds)))])
        out.append(window_levels(x_NCT, ds.sfreq, bands))
    return np.concatenate(out) if out else np.zeros((0, len(bands)))


def build_dataset(data_path: str, uv_scale: float, limits: Sequence[int | None] = (None, None),
                  skip_bad: bool = False
                  ) -> tuple[int, list[str], FullSpectrumWindows, FullSpectrumWindows, EEGWindowDataset, EEGWindowDataset]:
    """Open ``data_path`` (train/ and val/) for VAR training.

    Returns
    -------
    num_classes, class_names, train_set, val_set, raw_train, raw_val
        ``raw_*`` are the underlying :class:`EEGWindowDataset` objects (headers, sfreq, bands, channels).

    Raises
    ------
    DatasetError
        When labelled and unlabelled windows are mixed.
    """
    raw_train, raw_val = open_dataset(data_path, limits=limits, skip_bad=skip_bad)
    for ds in (raw_train, raw_val):
        if (ds.labels < 0).any() and (ds.labels >= 0).any():
            raise DatasetError(f"{data_path}/{ds.split}: {int((ds.labels < 0).sum())} windows have no label and "
                               f"{int((ds.labels >= 0).sum())} have one; rebuild the dataset with --label-from for "
                               "every recording, or without labels")
    names = label_names(data_path, raw_train, raw_val)
    all_unlabelled = bool((raw_train.labels < 0).all() and (raw_val.labels < 0).all())
    if all_unlabelled:
        names = names[:1]
    num_classes = len(names)
    logger.info("dataset %s: %d train / %d val windows, %d class(es) %s", data_path, len(raw_train), len(raw_val),
                num_classes, names)
    return (num_classes, names, FullSpectrumWindows(raw_train, uv_scale), FullSpectrumWindows(raw_val, uv_scale),
            raw_train, raw_val)


@torch.no_grad()
def dataset_band_powers(ds: EEGWindowDataset, vae, gain, uv_scale: float, chunk: int = 128,
                        indices: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Band powers (N, C, K) of the full-spectrum windows ``indices`` of ``ds`` (default every one), model units, and
    of their plain decodes through ``vae``'s tokens (None without ``vae``); ``gain``: a
    :class:`~models.band_gain.BandGain`. A progress bar on large sets."""
    from tqdm import tqdm
    idx = np.arange(len(ds)) if indices is None else np.asarray(indices)
    px, pr = [], []
    starts = range(0, len(idx), chunk)
    for s in tqdm(starts, desc=f"band gains of {ds.split}", unit="chunk", disable=len(starts) < 8):
        x_NCT = torch.stack([ds[int(i)][0][-1] for i in idx[s:s + chunk]]).float() / float(uv_scale)
        px.append(gain.band_power(x_NCT).numpy())
        if vae is not None:
            pr.append(gain.band_power(vae.idxBl_to_eeg(vae.eeg_to_idxBl(x_NCT), last_one=True)).numpy())
    empty = np.zeros((0, 0, gain.n_bands))
    return (np.concatenate(px) if px else empty), (None if vae is None else np.concatenate(pr) if pr else empty)
