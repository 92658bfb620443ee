"""Training pairs for the prototype: (stage k, stage k+1, k) from a dataset root's ``train/`` and ``val/``.

Shape letters: K stages, C channels, T time samples.

Item ``i`` of :class:`EEGStagePairDataset` is ``(input_CT, target_CT, k)``:

- ``k`` is the **0-based index of the input stage** in the file's ``cumulative_bands`` (k = 0 is delta,
  the first stage), so ``k`` runs over ``0 .. K-2`` and the target is stage index ``k + 1``. The model's
  stage embedding is indexed by this ``k``: it says which band is being added (band ``k + 1``).
- ``input_CT`` and ``target_CT`` are float32 tensors in *model units*: µV divided by the dataset-level
  ``scale_uv`` (see :func:`estimate_scale_uv`), which the checkpoint stores so outputs return to µV.

Every file is validated by :class:`utils.eeg_dataset.EEGWindowDataset` (keys, shapes, bands, sfreq,
train/val compatibility) before any pair is built; small datasets are loaded fully up front (which also
checks every signal for NaN/Inf before training starts), large ones are read lazily, file by file.
"""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from utils.eeg_dataset import EEGWindowDataset, open_dataset
from utils.errors import DatasetError

logger = logging.getLogger(__name__)

#: Windows are cached in memory when the whole split is smaller than this many bytes (float32).
CACHE_MAX_BYTES = 512 * 2**20


def estimate_scale_uv(windows: EEGWindowDataset, max_windows: int = 256) -> float:
    """Dataset-level amplitude scale in µV: the median per-channel std of the full-band stage.

    Uses the first ``max_windows`` windows (sorted by file name) of ``windows``, normally the train split.

    Raises
    ------
    DatasetError
        If the signals are all zero (nothing to scale by).
    """
    stds = []
    for i in range(min(len(windows), max_windows)):
        stages_KCT = windows.window(i).stages_KCT
        stds.append(stages_KCT[-1].astype(np.float64).std(axis=-1))
    scale = float(np.median(np.concatenate(stds)))
    if not np.isfinite(scale) or scale <= 0:
        raise DatasetError(f"{windows.root}/{windows.split}: the full-band signals have zero variance "
                           "(median channel std is 0 µV); check the dataset")
    return scale


class EEGStagePairDataset(Dataset):
    """All (stage k -> stage k+1) pairs of one split, in model units.

    Parameters
    ----------
    windows : EEGWindowDataset
        A validated split (e.g. from :func:`open_pair_datasets`).
    scale_uv : float
        Dataset-level scale in µV; inputs and targets are divided by it.
    cache : bool | None
        Keep loaded windows in memory; ``None`` caches (and fully validates up front) when the split is
        smaller than :data:`CACHE_MAX_BYTES`.

    Raises
    ------
    DatasetError
        If the windows hold fewer than two stages (no pair), or a file fails validation.
    """

    def __init__(self, windows: EEGWindowDataset, scale_uv: float, cache: bool | None = None) -> None:
        if windows.n_stages < 2:
            raise DatasetError(f"{windows.root}/{windows.split}: windows hold {windows.n_stages} stage(s); the "
                               "prototype needs at least 2 cumulative stages (rebuild with two or more bands)")
        self.windows = windows
        self.scale_uv = float(scale_uv)
        self.n_pairs_per_window = windows.n_stages - 1
        nbytes = len(windows) * windows.n_stages * windows.n_channels * windows.n_times * 4
        self.cache = nbytes <= CACHE_MAX_BYTES if cache is None else bool(cache)
        self._cached: dict[int, torch.Tensor] = {}
        if self.cache:
            for w in range(len(windows)):  # reads and checks every file now, before any training
                self._stages(w)

    def _stages(self, w: int) -> torch.Tensor:
        if w in self._cached:
            return self._cached[w]
        stages_KCT = torch.from_numpy(self.windows.window(w).stages_KCT) / self.scale_uv
        if self.cache:
            self._cached[w] = stages_KCT
        return stages_KCT

    def __len__(self) -> int:
        return len(self.windows) * self.n_pairs_per_window

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        w, k = divmod(int(index), self.n_pairs_per_window)
        stages_KCT = self._stages(w)
        return stages_KCT[k], stages_KCT[k + 1], k

    def stages(self, window_index: int) -> torch.Tensor:
        """All K stages of one window, shape (K, C, T), model units."""
        return self._stages(window_index)


def open_pair_datasets(root: str, limits: Sequence[int | None] = (None, None), scale_uv: float | None = None,
                       cache: bool | None = None, skip_bad: bool = False
                       ) -> tuple[EEGStagePairDataset, EEGStagePairDataset]:
    """Open ``root/train`` and ``root/val`` as pair datasets sharing one scale.

    Parameters
    ----------
    root : str
        Dataset root with ``train/`` and ``val/`` folders of npz windows.
    limits : (int | None, int | None)
        Keep only the first N train / val windows (``--limit-train-samples``, ``--limit-val-samples``).
    scale_uv : float | None
        µV scale; estimated from the train split when ``None`` (pass the checkpoint's when resuming).
    cache : bool | None
        See :class:`EEGStagePairDataset`.
    skip_bad : bool
        Skip bad window files (reported with their path and counted) instead of stopping; see
        :class:`utils.eeg_dataset.EEGWindowDataset`.

    Raises
    ------
    DatasetError
        Missing or empty folders, unreadable files, or train and val windows that disagree in channels,
        length, bands or sampling frequency (naming one file of each).
    """
    train_w, val_w = open_dataset(root, limits, skip_bad=skip_bad)
    if scale_uv is None:
        scale_uv = estimate_scale_uv(train_w)
    train, val = EEGStagePairDataset(train_w, scale_uv, cache), EEGStagePairDataset(val_w, scale_uv, cache)
    logger.debug("%s: %d train / %d val windows, scale %.4g µV", root, len(train_w), len(val_w), scale_uv)
    return train, val
