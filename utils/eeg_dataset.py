"""Lazy reading of a dataset root (``train/``, ``val/``, ``manifest.json``) for the prototype and VAR.

Shape letters: K stages, C channels, T time samples.

Only the small header of each file is read up front (keys, shapes, bands, sfreq, label), so every file
is validated before training starts without holding the corpus in memory; signals are read per item.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .eeg_schema import (MANIFEST_NAME, NO_LABEL, EEGWindow, WindowHeader, check_compatible, list_split_files,
                         read_header, read_window)
from .errors import DatasetError

logger = logging.getLogger(__name__)


def read_manifest(root: str) -> dict | None:
    """Return ``root/manifest.json`` as a dict, ``None`` if absent.

    Raises
    ------
    DatasetError
        If the manifest exists but is not valid JSON.
    """
    path = os.path.join(root, MANIFEST_NAME)
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, json.JSONDecodeError) as err:
        raise DatasetError(f"{path}: unreadable manifest ({err}); restore it or rebuild the dataset") from None


class EEGWindowDataset(Dataset):
    """Windows of one split, read lazily; item ``i`` is ``(stages_KCT, label)``.

    Parameters
    ----------
    root : str
        Dataset root holding ``train/`` and ``val/``.
    split : str
        ``'train'`` or ``'val'``.
    limit : int | None
        Keep only the first ``limit`` files (sorted by name), for debugging.
    skip_bad : bool
        Skip (and count, in :attr:`skipped`) files that fail validation instead of raising. Headers are
        checked when the split is opened; a file whose data turns out bad when read later (NaN/Inf,
        truncated array) is reported with its path once, counted, and replaced by the next good window
        (deterministic, so a resumed run sees the same substitutes).

    Attributes
    ----------
    sfreq : float
    bands : ndarray, shape (K, 2)
    ch_names : tuple of str | None
    n_stages, n_channels, n_times : int
    labels : ndarray, shape (N,) int64, -1 where a window has no label
    skipped : list of (path, reason)
    """

    def __init__(self, root: str, split: str, limit: int | None = None, skip_bad: bool = False) -> None:
        if limit is not None and limit < 1:
            raise DatasetError(f"limit must be >= 1, got {limit}")
        files = list_split_files(root, split)
        if limit is not None:
            files = files[:limit]
        self.root, self.split, self.skip_bad = root, split, skip_bad
        self.skipped: list[tuple[str, str]] = []
        self._bad_data: set[int] = set()
        headers: list[WindowHeader] = []
        for path in files:
            try:
                header = read_header(path)
                if headers:
                    check_compatible(headers[0], header)
            except DatasetError as err:
                if not skip_bad:
                    raise
                self.skipped.append((path, str(err)))
                continue
            headers.append(header)
        if self.skipped:
            logger.warning("%s/%s: skipped %d bad file(s), first: %s", root, split, len(self.skipped),
                           self.skipped[0][1])
        if not headers:
            raise DatasetError(f"{os.path.join(root, split)}: no valid window file (all {len(files)} failed "
                               "validation); rebuild the dataset")
        self.headers = headers
        first = headers[0]
        self.sfreq = first.sfreq
        self.bands = np.asarray(first.bands, dtype=np.float64)
        self.ch_names = first.ch_names
        self.n_stages, self.n_channels, self.n_times = first.stages_shape
        self.labels = np.asarray([h.label for h in headers], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.headers)

    def window(self, index: int) -> EEGWindow:
        """The full window ``index`` (validated, float32 µV); see ``skip_bad`` for files that fail to read."""
        if not self.skip_bad:
            return read_window(self.headers[index].path, self.headers[index])
        n = len(self.headers)
        for step in range(n):
            i = (index + step) % n
            if i in self._bad_data:
                continue
            try:
                return read_window(self.headers[i].path, self.headers[i])
            except DatasetError as err:
                self._bad_data.add(i)
                self.skipped.append((self.headers[i].path, str(err)))
                logger.warning("skipped bad window file (%d so far in %s/%s): %s", len(self.skipped), self.root,
                               self.split, err)
        raise DatasetError(f"{os.path.join(self.root, self.split)}: every window file failed to read "
                           f"({len(self.skipped)} skipped); rebuild the dataset")

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        win = self.window(index)
        return torch.from_numpy(win.stages_KCT), int(win.header.label)

    def check_matches(self, other: "EEGWindowDataset") -> None:
        """Raise :class:`DatasetError` naming one file of each split if the two cannot be used together."""
        check_compatible(self.headers[0], other.headers[0])


def label_names(root: str, *datasets: EEGWindowDataset) -> list[str]:
    """Class names: from the manifest when it lists them, else ``class0..`` up to the largest label.

    Windows without a label (-1) count as one unconditional class, so at least one name is returned.
    """
    manifest = read_manifest(root) or {}
    names = manifest.get("label_names")
    max_label = max((int(ds.labels.max()) for ds in datasets), default=NO_LABEL)
    if names:
        if max_label >= len(names):
            raise DatasetError(f"{os.path.join(root, MANIFEST_NAME)}: lists {len(names)} label names but a window has "
                               f"label {max_label}; rebuild the dataset")
        return [str(n) for n in names]
    return [f"class{i}" for i in range(max(max_label + 1, 1))]


def open_dataset(root: str, limits: Sequence[int | None] = (None, None),
                 skip_bad: bool = False) -> tuple[EEGWindowDataset, EEGWindowDataset]:
    """Open ``train`` and ``val`` and check they share channels, length, bands and sfreq."""
    train = EEGWindowDataset(root, "train", limit=limits[0], skip_bad=skip_bad)
    val = EEGWindowDataset(root, "val", limit=limits[1], skip_bad=skip_bad)
    train.check_matches(val)
    return train, val
