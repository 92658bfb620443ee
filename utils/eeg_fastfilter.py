"""All cumulative stages of a continuous recording in one FFT pass (the ingestion's fast path).

Shape letters: K stages, C channels, T time samples.

Computes exactly what :func:`utils.eeg_stages.cumulative_frequency_levels` computes (MNE's zero-phase
firwin FIR per stage, designed by :func:`mne.filter.create_filter` with the same parameters, and MNE's
``reflect_limited`` edge padding), but transforms the padded signal once and reuses its spectrum for
every stage instead of running K overlap-add filters. ``tests/test_ingest_stages.py`` checks the two
agree to float64 round-off; the reference stays the definition.
"""
from __future__ import annotations

import functools
import logging
import warnings
from typing import Iterable, Sequence

import numpy as np
import scipy.fft

from .eeg_bands import DEFAULT_BANDS, stage_edges, validate_bands
from .errors import UserError

logger = logging.getLogger(__name__)
# Channels are filtered in blocks of about this many samples, bounding the memory of the complex spectra
# for long recordings (~64 MB per block).
_BLOCK_SAMPLES = 4_000_000


def _reflect_limited_pad(x_CT: np.ndarray, n_edge: int) -> np.ndarray:
    """Odd reflection about the end samples, zero beyond the signal's own length (MNE's 'reflect_limited')."""
    n_times = x_CT.shape[-1]
    zeros = np.zeros(x_CT.shape[:-1] + (max(n_edge - n_times + 1, 0),), dtype=x_CT.dtype)
    left = 2 * x_CT[..., :1] - x_CT[..., n_edge:0:-1]
    right = 2 * x_CT[..., -1:] - x_CT[..., -2:-n_edge - 2:-1]
    return np.concatenate([zeros, left, x_CT, right, zeros], axis=-1)


def stage_kernels(sfreq: float, bands: Iterable[Sequence[float]], n_times: int) -> list[np.ndarray]:
    """The FIR kernel of each cumulative stage, as :func:`mne.filter.filter_data` would design it.

    The design does not depend on the signal length (only MNE's "longer than the signal" warning
    does), so kernels are cached per (sfreq, bands).
    """
    bands_key = tuple((float(lo), float(hi)) for lo, hi in validate_bands(bands, sfreq))
    kernels = _stage_kernels_cached(float(sfreq), bands_key)
    longest = max(len(h) for h in kernels)
    if longest > n_times:
        logger.warning("the %d-tap stage filter (%.1f s) is longer than the signal (%d samples): expect edge "
                       "distortion; ingest longer recordings", longest, longest / sfreq, n_times)
    return [h.copy() for h in kernels]


@functools.lru_cache(maxsize=8)
def _stage_kernels_cached(sfreq: float, bands: tuple[tuple[float, float], ...]) -> tuple[np.ndarray, ...]:
    import mne

    bands_K2 = np.asarray(bands, dtype=np.float64)
    nyquist = float(sfreq) / 2
    probe = np.zeros((1, 2))
    kernels = []
    for f_lo, f_hi in stage_edges(bands_K2):
        h_freq = None if f_hi >= nyquist * (1 - 1e-6) else f_hi  # same rule as eeg_stages: top stage high-pass only
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # "filter longer than signal": logged once below
            kernels.append(np.asarray(mne.filter.create_filter(
                probe, float(sfreq), l_freq=f_lo, h_freq=h_freq, method="fir", phase="zero", fir_window="hamming",
                fir_design="firwin", verbose=False), dtype=np.float64))
    return tuple(kernels)


def cumulative_stages_one_pass(signal_CT: np.ndarray, sfreq: float,
                               bands: Iterable[Sequence[float]] = DEFAULT_BANDS,
                               out_dtype: type = np.float32) -> np.ndarray:
    """Band-pass a continuous recording into its K cumulative stages with one forward FFT.

    Parameters
    ----------
    signal_CT : ndarray, shape (C, T)
        Continuous EEG in µV at ``sfreq``.
    sfreq : float
        Sampling frequency in Hz.
    bands : sequence of (f_lo, f_hi)
        Band edges in Hz.
    out_dtype : numpy dtype
        dtype of the result (computation is float64).

    Returns
    -------
    stages_KCT : ndarray, shape (K, C, T)

    Raises
    ------
    UserError
        For a signal that is not (C, T) or holds NaN/Inf.
    """
    x_CT = np.asarray(signal_CT, dtype=np.float64)
    if x_CT.ndim != 2 or x_CT.shape[-1] < 2:
        raise UserError(f"signal: expected shape (channels, time), got {np.shape(signal_CT)}")
    if not np.all(np.isfinite(x_CT)):
        raise UserError("signal: contains NaN or Inf values; interpolate or drop the bad samples first")
    n_times = x_CT.shape[-1]
    kernels = stage_kernels(sfreq, bands, n_times)
    stages_KCT = np.empty((len(kernels),) + x_CT.shape, dtype=out_dtype)
    block = max(1, _BLOCK_SAMPLES // max(n_times, 1))
    for c0 in range(0, x_CT.shape[0], block):
        _filter_block(x_CT[c0:c0 + block], kernels, stages_KCT[:, c0:c0 + block])
    return stages_KCT


def _filter_block(x_CT: np.ndarray, kernels: Sequence[np.ndarray], out_KCT: np.ndarray) -> None:
    """Write every stage of the channels ``x_CT`` into ``out_KCT`` (one forward FFT per kernel length)."""
    n_times = x_CT.shape[-1]
    spectra: dict[int, tuple[np.ndarray, int, int]] = {}  # kernel length -> (padded spectrum, n_fft, n_edge)
    for k, h in enumerate(kernels):
        n_h = len(h)
        if n_h == 1:
            out_KCT[k] = x_CT * h[0]
            continue
        if n_h not in spectra:
            n_edge = max(min(n_h, n_times) - 1, 0)
            x_ext = _reflect_limited_pad(x_CT, n_edge) if n_edge else x_CT
            n_fft = scipy.fft.next_fast_len(x_ext.shape[-1] + n_h - 1, real=True)
            spectra[n_h] = (scipy.fft.rfft(x_ext, n_fft, axis=-1), n_fft, n_edge)
        X_Cf, n_fft, n_edge = spectra[n_h]
        shift = (n_h - 1) // 2 + n_edge  # zero phase: undo the kernel's delay and the padding
        y_CT = scipy.fft.irfft(X_Cf * scipy.fft.rfft(h, n_fft), n_fft, axis=-1)
        out_KCT[k] = y_CT[:, shift:shift + n_times]
