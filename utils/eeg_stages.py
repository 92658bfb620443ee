"""Cumulative band stages computed with MNE's zero-phase FIR filters.

Shape letters: K stages, C channels, T time samples.

Stage k is one band-pass from the first band's ``f_lo`` to band k's ``f_hi`` (docs/design.md §1), never a
sum of narrow band-passes (their transition bands would not add up). When ``f_hi`` reaches Nyquist the
stage is a high-pass only. Filter continuous recordings before cutting windows: the 0.5 Hz edge needs a
6.6 s kernel, longer than typical windows.
"""
from __future__ import annotations

import logging
from typing import Iterable, Sequence

import numpy as np

from .eeg_bands import DEFAULT_BANDS, stage_edges, validate_bands
from .errors import UserError

logger = logging.getLogger(__name__)


def cumulative_frequency_levels(signal: np.ndarray, sfreq: float,
                                bands: Iterable[Sequence[float]] = DEFAULT_BANDS,
                                n_jobs: int | None = None, verbose: bool | str | None = False) -> np.ndarray:
    """Band-pass ``signal`` into its K cumulative stages.

    Parameters
    ----------
    signal : ndarray, shape (C, T) or (T,)
        EEG in µV (any unit works; the output has the input's unit).
    sfreq : float
        Sampling frequency in Hz.
    bands : sequence of (f_lo, f_hi)
        Band edges in Hz (default: delta..gamma); validated against ``sfreq``.
    n_jobs : int | None
        Passed to :func:`mne.filter.filter_data`.
    verbose : bool | str | None
        MNE verbosity; the filter design is logged at DEBUG level regardless.

    Returns
    -------
    stages_KCT : ndarray, shape (K, C, T), float64
        ``stages_KCT[k]`` holds the signal band-passed to ``(bands[0][0], bands[k][1])``.

    Raises
    ------
    BandError
        If the band edges are impossible for ``sfreq``.
    UserError
        If ``signal`` is not 1D/2D or holds NaN/Inf.
    """
    import mne  # imported lazily: ingestion-free code paths should not pay MNE's import time

    bands_K2 = validate_bands(bands, sfreq)
    x_CT = np.asarray(signal, dtype=np.float64)
    squeeze = x_CT.ndim == 1
    if squeeze:
        x_CT = x_CT[None]
    if x_CT.ndim != 2 or x_CT.shape[-1] < 2:
        raise UserError(f"signal: expected shape (channels, time), got {np.shape(signal)}")
    if not np.all(np.isfinite(x_CT)):
        raise UserError("signal: contains NaN or Inf values; interpolate or drop the bad samples first")
    nyquist = float(sfreq) / 2
    stages = []
    for f_lo, f_hi in stage_edges(bands_K2):
        h_freq = None if f_hi >= nyquist * (1 - 1e-6) else f_hi
        logger.debug("stage %.3g-%.3g Hz at sfreq %.4g Hz: FIR firwin hamming zero-phase (h_freq=%s)",
                     f_lo, f_hi, sfreq, h_freq)
        stages.append(mne.filter.filter_data(x_CT, float(sfreq), l_freq=f_lo, h_freq=h_freq, method="fir",
                                             phase="zero", fir_window="hamming", fir_design="firwin",
                                             n_jobs=n_jobs, verbose=verbose, copy=True))
    stages_KCT = np.stack(stages)
    return stages_KCT[:, 0] if squeeze else stages_KCT
