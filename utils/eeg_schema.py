"""The on-disk dataset format: one npz file per window, in ``train/`` and ``val/`` (docs/design.md §5).

Shape letters: K stages, C channels, T time samples.

Every reader and writer of window files goes through this module, and every error names the file.

Keys of a window file
---------------------
Required (the seed schema):
    ``signal`` (C, T) float32 µV · ``cumulative_bands`` (K, C, T) float32 µV ·
    ``bands`` (K, 2) float32 Hz · ``sfreq`` float32 scalar Hz.
Optional (written by real-data ingestion):
    ``ch_names`` (C,) str · ``source`` str (recording file) · ``start`` int (sample offset in the
    recording) · ``subject`` str · ``label`` int (class; -1 when none).
"""
from __future__ import annotations

import dataclasses
import glob
import os
import tempfile
import zipfile
from typing import Sequence

import numpy as np

from .eeg_bands import bands_equal, validate_bands
from .errors import BandError, DatasetError

SPLITS: tuple[str, ...] = ("train", "val")
MANIFEST_NAME = "manifest.json"
REQUIRED_KEYS: tuple[str, ...] = ("signal", "cumulative_bands", "bands", "sfreq")
OPTIONAL_KEYS: tuple[str, ...] = ("ch_names", "source", "start", "subject", "label")
NO_LABEL = -1


@dataclasses.dataclass(frozen=True)
class WindowHeader:
    """What a window file declares, read without loading the signal arrays.

    Attributes hold plain Python values; ``signal_shape`` is (C, T) and ``stages_shape`` is (K, C, T).
    """

    path: str
    signal_shape: tuple[int, ...]
    stages_shape: tuple[int, ...]
    bands: tuple[tuple[float, float], ...]
    sfreq: float
    ch_names: tuple[str, ...] | None
    label: int
    subject: str | None
    source: str | None
    start: int | None

    @property
    def n_channels(self) -> int:
        return self.signal_shape[0]

    @property
    def n_times(self) -> int:
        return self.signal_shape[1]

    @property
    def n_stages(self) -> int:
        return self.stages_shape[0]


@dataclasses.dataclass
class EEGWindow:
    """One window loaded in full. ``signal_CT`` (C, T) and ``stages_KCT`` (K, C, T) are float32 µV."""

    header: WindowHeader
    signal_CT: np.ndarray
    stages_KCT: np.ndarray


def _npy_shape(zf: zipfile.ZipFile, key: str) -> tuple[tuple[int, ...], np.dtype]:
    with zf.open(f"{key}.npy") as fh:
        version = np.lib.format.read_magic(fh)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(fh)  # header only, no data
    return tuple(int(s) for s in shape), dtype


def read_header(path: str) -> WindowHeader:
    """Validate a window file's keys, shapes and metadata without reading the signal data.

    Raises
    ------
    DatasetError
        Naming ``path`` when the file is unreadable, misses a key, or has inconsistent shapes,
        impossible bands or a non-positive sampling frequency.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            names = {n[:-4] for n in zf.namelist() if n.endswith(".npy")}
            missing = [k for k in REQUIRED_KEYS if k not in names]
            if missing:
                raise DatasetError(f"{path}: missing key(s) {missing}; a window file needs {list(REQUIRED_KEYS)} "
                                   "(rebuild it with `python -m utils.data_eeg build`)")
            signal_shape, signal_dtype = _npy_shape(zf, "signal")
            stages_shape, stages_dtype = _npy_shape(zf, "cumulative_bands")
        with np.load(path, allow_pickle=False) as npz:
            bands_K2 = np.asarray(npz["bands"], dtype=np.float64)
            sfreq = float(np.asarray(npz["sfreq"]).reshape(-1)[0])
            ch_names = tuple(str(c) for c in npz["ch_names"].reshape(-1)) if "ch_names" in names else None
            label = int(np.asarray(npz["label"]).reshape(-1)[0]) if "label" in names else NO_LABEL
            subject = str(np.asarray(npz["subject"]).reshape(-1)[0]) if "subject" in names else None
            source = str(np.asarray(npz["source"]).reshape(-1)[0]) if "source" in names else None
            start = int(np.asarray(npz["start"]).reshape(-1)[0]) if "start" in names else None
    except DatasetError:
        raise
    except (OSError, zipfile.BadZipFile, ValueError, KeyError, EOFError, IndexError) as err:
        raise DatasetError(f"{path}: not a readable npz window file ({type(err).__name__}: {err}); "
                           "delete it or rebuild the dataset") from None
    for key, dtype in (("signal", signal_dtype), ("cumulative_bands", stages_dtype)):
        if dtype.kind != "f":
            raise DatasetError(f"{path}: '{key}' has dtype {dtype}, expected float32 µV")
    if len(signal_shape) != 2:
        raise DatasetError(f"{path}: 'signal' has shape {signal_shape}, expected (channels, time)")
    if len(stages_shape) != 3 or tuple(stages_shape[1:]) != tuple(signal_shape):
        raise DatasetError(f"{path}: 'cumulative_bands' has shape {stages_shape}, expected "
                           f"(stages, {signal_shape[0]}, {signal_shape[1]}) to match 'signal'")
    if bands_K2.ndim != 2 or bands_K2.shape != (stages_shape[0], 2):
        raise DatasetError(f"{path}: 'bands' has shape {bands_K2.shape}, expected ({stages_shape[0]}, 2), one "
                           "(f_lo, f_hi) row per stage of 'cumulative_bands'")
    if not (np.isfinite(sfreq) and sfreq > 0):
        raise DatasetError(f"{path}: 'sfreq' is {sfreq}, expected a positive sampling frequency in Hz")
    try:
        validate_bands(bands_K2, sfreq, where=f"{path}: 'bands'")
    except BandError as err:
        raise DatasetError(str(err)) from None
    if ch_names is not None and len(ch_names) != signal_shape[0]:
        raise DatasetError(f"{path}: 'ch_names' has {len(ch_names)} names but 'signal' has {signal_shape[0]} channels")
    return WindowHeader(path=path, signal_shape=signal_shape, stages_shape=stages_shape,
                        bands=tuple((float(lo), float(hi)) for lo, hi in bands_K2), sfreq=sfreq,
                        ch_names=ch_names, label=label, subject=subject, source=source, start=start)


def read_window(path: str, header: WindowHeader | None = None) -> EEGWindow:
    """Load a full window, checking it against its header and for NaN/Inf.

    Raises
    ------
    DatasetError
        Naming ``path`` for unreadable data, shape changes or non-finite values.
    """
    header = header or read_header(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            signal_CT = np.asarray(npz["signal"], dtype=np.float32)
            stages_KCT = np.asarray(npz["cumulative_bands"], dtype=np.float32)
    except (OSError, zipfile.BadZipFile, ValueError, KeyError, EOFError) as err:
        raise DatasetError(f"{path}: could not read the signal arrays ({type(err).__name__}: {err}); "
                           "delete the file or rebuild the dataset") from None
    if signal_CT.shape != header.signal_shape or stages_KCT.shape != header.stages_shape:
        raise DatasetError(f"{path}: file changed while reading (shapes {signal_CT.shape}, {stages_KCT.shape})")
    for key, arr in (("signal", signal_CT), ("cumulative_bands", stages_KCT)):
        if not np.all(np.isfinite(arr)):
            raise DatasetError(f"{path}: '{key}' contains NaN or Inf values; drop this window or rebuild "
                               "the dataset (ingestion rejects non-finite windows)")
    return EEGWindow(header=header, signal_CT=signal_CT, stages_KCT=stages_KCT)


def check_compatible(ref: WindowHeader, other: WindowHeader) -> None:
    """Raise :class:`DatasetError` naming both files when two windows cannot share a dataset."""
    if ref.signal_shape != other.signal_shape:
        raise DatasetError(f"{other.path}: 'signal' has shape {other.signal_shape} but {ref.path} has "
                           f"{ref.signal_shape}; every window of a dataset needs the same channels and length")
    if not bands_equal(ref.bands, other.bands):
        raise DatasetError(f"{other.path}: 'bands' is {[list(b) for b in other.bands]} but {ref.path} has "
                           f"{[list(b) for b in ref.bands]}; rebuild the dataset with a single --bands setting")
    if abs(ref.sfreq - other.sfreq) > 1e-3 * ref.sfreq:
        raise DatasetError(f"{other.path}: 'sfreq' is {other.sfreq:g} Hz but {ref.path} has {ref.sfreq:g} Hz; "
                           "rebuild the dataset with a single --sfreq")
    if ref.ch_names is not None and other.ch_names is not None and ref.ch_names != other.ch_names:
        raise DatasetError(f"{other.path}: 'ch_names' {list(other.ch_names)[:4]}... differ from {ref.path}'s "
                           f"{list(ref.ch_names)[:4]}...; rebuild with one --channels set")


def write_window(path: str, signal_CT: np.ndarray, stages_KCT: np.ndarray, bands: Sequence[Sequence[float]],
                 sfreq: float, *, ch_names: Sequence[str] | None = None, source: str | None = None,
                 start: int | None = None, subject: str | None = None, label: int | None = None,
                 compress: bool | str = True, fsync: bool = True) -> None:
    """Validate and write one window atomically (temporary file in the same folder, then rename).

    ``compress``: ``True`` (numpy's ``savez_compressed``), ``False`` (``savez``), or ``"fast"``
    (entropy-only deflate with a fixed timestamp, :mod:`utils.eeg_npz`: ~4x faster to write and
    byte-identical for identical arrays; read back by ``np.load`` as usual). ``fsync=False`` skips the
    per-file fsync (the rename stays atomic); a caller writing many files then syncs once itself
    (ingestion calls ``os.sync()`` per recording before recording it as done).

    Raises
    ------
    DatasetError
        If the arrays break the schema or hold NaN/Inf (naming ``path``).
    """
    signal_CT = np.asarray(signal_CT, dtype=np.float32)
    stages_KCT = np.asarray(stages_KCT, dtype=np.float32)
    bands_K2 = np.asarray(bands, dtype=np.float32)
    if signal_CT.ndim != 2 or stages_KCT.ndim != 3 or stages_KCT.shape[1:] != signal_CT.shape:
        raise DatasetError(f"{path}: signal {signal_CT.shape} and cumulative_bands {stages_KCT.shape} do not match "
                           "(expected (C, T) and (K, C, T))")
    if bands_K2.shape != (stages_KCT.shape[0], 2):
        raise DatasetError(f"{path}: bands {bands_K2.shape} should be ({stages_KCT.shape[0]}, 2)")
    if not (np.all(np.isfinite(signal_CT)) and np.all(np.isfinite(stages_KCT))):
        raise DatasetError(f"{path}: refusing to write a window holding NaN or Inf values")
    arrays: dict[str, np.ndarray] = dict(signal=signal_CT, cumulative_bands=stages_KCT, bands=bands_K2,
                                         sfreq=np.float32(sfreq))
    if ch_names is not None:
        arrays["ch_names"] = np.asarray([str(c) for c in ch_names])
    if source is not None:
        arrays["source"] = np.asarray(str(source))
    if start is not None:
        arrays["start"] = np.int64(start)
    if subject is not None:
        arrays["subject"] = np.asarray(str(subject))
    if label is not None:
        arrays["label"] = np.int64(label)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            if compress == "fast":
                from .eeg_npz import save_npz_huffman

                save_npz_huffman(fh, arrays)
            else:
                (np.savez_compressed if compress else np.savez)(fh, **arrays)
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def list_split_files(root: str, split: str) -> list[str]:
    """Sorted ``*.npz`` paths of ``root/split``.

    Raises
    ------
    DatasetError
        If the root or split folder is missing or holds no npz file.
    """
    if not os.path.isdir(root):
        raise DatasetError(f"{root}: dataset folder not found; pass a folder holding train/ and val/ "
                           "(build one with `python -m utils.data_eeg build` or "
                           "`bash prototypes/scripts/create_dummy_dataset.sh DIR`)")
    folder = os.path.join(root, split)
    if not os.path.isdir(folder):
        raise DatasetError(f"{folder}: missing '{split}/' folder; a dataset root needs train/ and val/ folders of "
                           "*.npz windows")
    files = sorted(glob.glob(os.path.join(folder, "*.npz")))
    if not files:
        raise DatasetError(f"{folder}: no *.npz window files; rebuild the dataset or point to another root")
    return files
