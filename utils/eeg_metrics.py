"""Signal-quality metrics for reconstructed, completed and generated EEG (docs/design.md §8).

Shape letters: N windows, C channels, T time samples, K bands, F frequency bins.

Every input is in µV; arrays are ``x_NCT`` (windows, channels, time) unless a docstring says otherwise.

- Reconstruction / completion error: :func:`snr_db`, :func:`mse`, :func:`log_spectral_distance`.
- Spectra: :func:`welch_psd` (the full PSD curve for plots), :func:`band_powers`, :func:`window_band_powers`,
  :func:`psd_band_error_db` (per-band ``|10 log10(P_gen / P_real)|``).
- Spatial structure: :func:`channel_correlation`, :func:`channel_corr_distance`.
- Variety: :func:`band_power_spread` (how much band power varies from window to window).

The classifier two-sample test lives in :mod:`utils.eeg_c2st`.
"""
from __future__ import annotations

import logging
from typing import Iterable, Sequence

import numpy as np
from scipy import signal as sps

from .eeg_bands import DEFAULT_BANDS, band_names, validate_bands
from .errors import UserError

logger = logging.getLogger(__name__)

__all__ = ["snr_db", "mse", "welch_psd", "band_powers", "psd_band_error_db", "channel_correlation",
           "channel_corr_distance", "log_spectral_distance", "clip_bands", "mean_psd_db", "alpha_peak", "edge_drop_db",
           "spectral_shape", "window_band_powers", "band_power_spread", "low_power_share"]


def _as_float(x: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.size == 0:
        raise UserError(f"{name}: got an empty array; expected EEG windows of shape (N, C, T)")
    if not np.all(np.isfinite(arr)):
        raise UserError(f"{name}: holds NaN or Inf values; drop or repair those windows first")
    return arr


def _as_NCT(x: np.ndarray, name: str) -> np.ndarray:
    arr = _as_float(x, name)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise UserError(f"{name}: got shape {arr.shape}; expected (N, C, T) windows or one (C, T) window")
    return arr


def _check_same_shape(a: np.ndarray, b: np.ndarray, names: tuple[str, str]) -> None:
    if a.shape != b.shape:
        raise UserError(f"{names[1]} has shape {b.shape} but {names[0]} has {a.shape}; they must match")


def snr_db(target: np.ndarray, estimate: np.ndarray, per_window: bool = False) -> float | np.ndarray:
    """Signal-to-noise ratio ``10 log10(||x||^2 / ||x - x_hat||^2)`` in dB.

    Parameters
    ----------
    target : ndarray, shape (N, C, T) or any shape, µV
        The true signal ``x``.
    estimate : ndarray, same shape as ``target``, µV
        The reconstruction ``x_hat``.
    per_window : bool
        If True, return one SNR per window (axis 0); otherwise one SNR over all values (energies summed
        before the ratio, so loud windows weigh more — the convention of the tokenizer's per-stage SNR).

    Returns
    -------
    float or ndarray, shape (N,)
        SNR in dB; ``inf`` where the estimate is exact.
    """
    x = _as_float(target, "target")
    x_hat = _as_float(estimate, "estimate")
    _check_same_shape(x, x_hat, ("target", "estimate"))
    if per_window:
        axes = tuple(range(1, x.ndim))
        sig = np.sum(x ** 2, axis=axes)
        err = np.sum((x - x_hat) ** 2, axis=axes)
    else:
        sig, err = np.sum(x ** 2), np.sum((x - x_hat) ** 2)
    with np.errstate(divide="ignore"):
        out = 10.0 * (np.log10(sig) - np.log10(err))
    return out if per_window else float(out)


def mse(target: np.ndarray, estimate: np.ndarray, per_window: bool = False) -> float | np.ndarray:
    """Mean squared error in µV² (over all values, or per window along axis 0)."""
    x = _as_float(target, "target")
    x_hat = _as_float(estimate, "estimate")
    _check_same_shape(x, x_hat, ("target", "estimate"))
    if per_window:
        return np.mean((x - x_hat) ** 2, axis=tuple(range(1, x.ndim)))
    return float(np.mean((x - x_hat) ** 2))


def welch_psd(x_NCT: np.ndarray, sfreq: float, nperseg: int | None = None,
              average: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Welch power spectral density, averaged over windows and channels.

    Parameters
    ----------
    x_NCT : ndarray, shape (N, C, T) or (C, T), µV
        EEG windows.
    sfreq : float
        Sampling frequency in Hz.
    nperseg : int | None
        Welch segment length in samples; default ``min(T, 2 * sfreq)`` (0.5 Hz resolution), Hann window,
        50 % overlap.
    average : bool
        If True return the mean PSD over windows and channels, shape (F,); else (N, C, F).

    Returns
    -------
    freqs_F : ndarray, shape (F,), Hz
    psd : ndarray, shape (F,) or (N, C, F), µV²/Hz
    """
    x = _as_NCT(x_NCT, "x_NCT")
    if nperseg is None:
        nperseg = int(min(x.shape[-1], round(2 * float(sfreq))))
    nperseg = int(min(nperseg, x.shape[-1]))
    freqs_F, psd_NCF = sps.welch(x, fs=float(sfreq), nperseg=nperseg, axis=-1, detrend="constant")
    if average:
        return freqs_F, psd_NCF.mean(axis=(0, 1))
    return freqs_F, psd_NCF


def clip_bands(bands: Iterable[Sequence[float]], f_max: float) -> np.ndarray:
    """Clip band edges to ``f_max`` Hz and drop bands that start at or above it.

    Used to judge spectra only where the data has content (e.g. eegmat is low-passed at 45 Hz, so its
    gamma band is judged on 30-45 Hz).
    """
    bands_K2 = validate_bands(bands)
    kept = [(lo, min(hi, f_max)) for lo, hi in bands_K2 if lo < f_max]
    if not kept:
        raise UserError(f"f_max={f_max:g} Hz is below every band {bands_K2.tolist()}; raise f_max")
    return np.asarray(kept, dtype=np.float64)


def band_powers(freqs_F: np.ndarray, psd: np.ndarray, bands: Iterable[Sequence[float]] = DEFAULT_BANDS) -> np.ndarray:
    """Band power (µV²) per band: the PSD integrated over ``f_lo <= f < f_hi``.

    Parameters
    ----------
    freqs_F : ndarray, shape (F,), Hz
    psd : ndarray, shape (..., F), µV²/Hz
    bands : sequence of (f_lo, f_hi), Hz

    Returns
    -------
    ndarray, shape (..., K), µV²
    """
    bands_K2 = validate_bands(bands)
    df = float(freqs_F[1] - freqs_F[0]) if len(freqs_F) > 1 else 1.0
    out = []
    for lo, hi in bands_K2:
        sel = (freqs_F >= lo) & (freqs_F < hi)
        if not np.any(sel):
            raise UserError(f"band ({lo:g}, {hi:g}) Hz holds no PSD bin (resolution {df:g} Hz); use longer "
                            "windows or a larger nperseg")
        out.append(psd[..., sel].sum(axis=-1) * df)
    return np.stack(out, axis=-1)


def psd_band_error_db(real_NCT: np.ndarray, gen_NCT: np.ndarray, sfreq: float,
                      bands: Iterable[Sequence[float]] = DEFAULT_BANDS, nperseg: int | None = None,
                      f_max: float | None = None) -> dict[str, float]:
    """Per-band PSD error ``|10 log10(P_gen / P_real)|`` in dB between two sets of windows.

    Each set's Welch PSD is averaged over its windows and channels, integrated over each band, and the
    two band powers compared. 0 dB means equal power; a ×sqrt(2) amplitude change gives 3.01 dB.

    Parameters
    ----------
    real_NCT : ndarray, shape (N, C, T), µV
        Reference windows.
    gen_NCT : ndarray, shape (M, C, T), µV
        Windows to judge (generated, completed, reconstructed); M may differ from N, C and T may not.
    sfreq : float
        Sampling frequency in Hz.
    bands : sequence of (f_lo, f_hi), Hz
        Bands (default delta..gamma); names from :func:`utils.eeg_bands.band_names`.
    nperseg : int | None
        Welch segment length (see :func:`welch_psd`).
    f_max : float | None
        If given, bands are clipped to ``f_max`` Hz first (:func:`clip_bands`).

    Returns
    -------
    dict
        ``{band name: error in dB}`` in band order.
    """
    real = _as_NCT(real_NCT, "real_NCT")
    gen = _as_NCT(gen_NCT, "gen_NCT")
    if real.shape[1:] != gen.shape[1:]:
        raise UserError(f"gen_NCT windows are (C, T) = {gen.shape[1:]} but real_NCT windows are {real.shape[1:]}; "
                        "compare windows of the same channels and length")
    bands_K2 = validate_bands(bands, sfreq)
    names = band_names(bands_K2)
    if f_max is not None:
        clipped = clip_bands(bands_K2, f_max)
        names = names[: len(clipped)]
        bands_K2 = clipped
    freqs_F, p_real_F = welch_psd(real, sfreq, nperseg)
    _, p_gen_F = welch_psd(gen, sfreq, nperseg)
    bp_real_K = band_powers(freqs_F, p_real_F, bands_K2)
    bp_gen_K = band_powers(freqs_F, p_gen_F, bands_K2)
    tiny = np.finfo(np.float64).tiny
    err_K = np.abs(10.0 * np.log10(np.maximum(bp_gen_K, tiny) / np.maximum(bp_real_K, tiny)))
    return {name: float(e) for name, e in zip(names, err_K)}


def channel_correlation(x_NCT: np.ndarray) -> np.ndarray:
    """Mean over windows of the per-window channel correlation matrix, shape (C, C).

    Channels that are flat within a window contribute zero correlation for that window.
    """
    x = _as_NCT(x_NCT, "x_NCT")
    xc = x - x.mean(axis=-1, keepdims=True)
    norm_NC = np.sqrt(np.sum(xc ** 2, axis=-1))
    norm_NC[norm_NC == 0] = np.inf
    z = xc / norm_NC[..., None]
    return np.einsum("nct,ndt->cd", z, z) / x.shape[0]


def channel_corr_distance(a_NCT: np.ndarray, b_NCT: np.ndarray) -> float:
    """Distance between the mean channel-correlation matrices of two sets of windows.

    ``||R_a - R_b||_F / sqrt(C (C - 1))``: the Frobenius norm normalised to the root-mean-square
    difference of one off-diagonal correlation (the diagonals are 1 in both and cancel), so values
    are comparable across channel counts; 0 = same spatial correlation, 2 = the largest possible.
    """
    a = _as_NCT(a_NCT, "a_NCT")
    b = _as_NCT(b_NCT, "b_NCT")
    if a.shape[1] != b.shape[1]:
        raise UserError(f"b_NCT has {b.shape[1]} channels but a_NCT has {a.shape[1]}; they must match")
    n_ch = a.shape[1]
    if n_ch < 2:
        raise UserError("channel_corr_distance needs at least 2 channels")
    diff = channel_correlation(a) - channel_correlation(b)
    return float(np.linalg.norm(diff) / np.sqrt(n_ch * (n_ch - 1)))


def log_spectral_distance(target_NCT: np.ndarray, estimate_NCT: np.ndarray, sfreq: float,
                          band: Sequence[float] | None = None, nperseg: int | None = None) -> float:
    """Log-spectral distance (dB) between matched windows, restricted to one band.

    ``LSD = mean_{n,c} sqrt(mean_{f in band} (10 log10(P_x(f) / P_xhat(f)))^2)`` from per-window,
    per-channel Welch PSDs — the audio bandwidth-extension metric, used here on the newly completed band.

    Parameters
    ----------
    target_NCT, estimate_NCT : ndarray, shape (N, C, T), µV
        Matched true and estimated windows.
    sfreq : float
        Sampling frequency in Hz.
    band : (f_lo, f_hi) | None
        Frequency range in Hz (``f_lo <= f < f_hi``); default: every bin above 0 Hz.
    nperseg : int | None
        Welch segment length (see :func:`welch_psd`).
    """
    x = _as_NCT(target_NCT, "target_NCT")
    x_hat = _as_NCT(estimate_NCT, "estimate_NCT")
    _check_same_shape(x, x_hat, ("target_NCT", "estimate_NCT"))
    freqs_F, p_x = welch_psd(x, sfreq, nperseg, average=False)
    _, p_y = welch_psd(x_hat, sfreq, nperseg, average=False)
    lo, hi = (0.0, np.inf) if band is None else (float(band[0]), float(band[1]))
    sel = (freqs_F > 0) & (freqs_F >= lo) & (freqs_F < hi)
    if not np.any(sel):
        raise UserError(f"band {band} holds no PSD bin; choose a band inside (0, {sfreq / 2:g}) Hz")
    eps = 1e-12 * max(float(p_x.max()), 1e-30)  # floor so a zero estimate gives a large finite LSD
    d = 10.0 * np.log10((p_x[..., sel] + eps) / (p_y[..., sel] + eps))
    return float(np.mean(np.sqrt(np.mean(d ** 2, axis=-1))))


# ------------------------------------------------------------------------------------------ spectral shape
def mean_psd_db(x_NCT: np.ndarray, sfreq: float, resolution_hz: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Mean Welch PSD over windows and channels in dB (10 log10 µV²/Hz) at ``resolution_hz`` bin spacing."""
    x = _as_NCT(x_NCT, "x_NCT")
    nperseg = int(min(x.shape[-1], round(float(sfreq) / resolution_hz)))
    f, p = welch_psd(x, sfreq, nperseg=nperseg)
    return f, 10.0 * np.log10(np.maximum(p, 1e-30))


def alpha_peak(freqs_F: np.ndarray, psd_db_F: np.ndarray, band: Sequence[float] = (7.0, 13.0),
               flanks: Sequence[Sequence[float]] = ((5.0, 7.0), (14.0, 16.0))) -> tuple[float, float]:
    """Peak frequency (Hz) inside ``band`` and its prominence (dB) over the mean of the flank bins."""
    inb = (freqs_F >= band[0]) & (freqs_F <= band[1])
    if not inb.any():
        raise UserError(f"alpha band {tuple(band)} holds no PSD bin")
    i = np.flatnonzero(inb)[int(np.argmax(psd_db_F[inb]))]
    fl = np.zeros_like(inb)
    for lo, hi in flanks:
        fl |= (freqs_F >= lo) & (freqs_F <= hi)
    return float(freqs_F[i]), float(psd_db_F[i] - psd_db_F[fl].mean())


def edge_drop_db(freqs_F: np.ndarray, psd_db_F: np.ndarray, edge_hz: float, offset_hz: float = 1.0) -> float:
    """Mean-PSD drop (dB) across a frequency edge: the bin nearest ``edge - offset`` minus the one nearest ``edge + offset``."""
    lo = int(np.argmin(np.abs(freqs_F - (edge_hz - offset_hz))))
    hi = int(np.argmin(np.abs(freqs_F - (edge_hz + offset_hz))))
    return float(psd_db_F[lo] - psd_db_F[hi])


def spectral_shape(ref_NCT: np.ndarray, est_NCT: np.ndarray, sfreq: float, edges_hz: Sequence[float],
                   f_range: Sequence[float] = (1.0, 45.0)) -> dict:
    """How far ``est``'s mean spectrum is from ``ref``'s, in shape rather than per window.

    Returns ``mean_abs_db`` (mean |dB difference| over the 1-Hz bins of ``f_range``), the alpha peak of each
    (``alpha_hz_ref/est``, ``alpha_prom_db_ref/est``) from 0.25-Hz bins, and per stage edge the difference of
    the drops across it (``edge_step_db``: est minus ref, dB).
    """
    f1, r1 = mean_psd_db(ref_NCT, sfreq, 1.0)
    _, e1 = mean_psd_db(est_NCT, sfreq, 1.0)
    sel = (f1 >= f_range[0]) & (f1 <= f_range[1])
    f4, r4 = mean_psd_db(ref_NCT, sfreq, 0.25)
    _, e4 = mean_psd_db(est_NCT, sfreq, 0.25)
    a_r, p_r = alpha_peak(f4, r4)
    a_e, p_e = alpha_peak(f4, e4)
    nyq = float(sfreq) / 2
    edges = [float(e) for e in edges_hz if 1.0 < float(e) < nyq - 1.0]
    return {"mean_abs_db": float(np.mean(np.abs(e1[sel] - r1[sel]))),
            "alpha_hz_ref": a_r, "alpha_hz_est": a_e, "alpha_prom_db_ref": p_r, "alpha_prom_db_est": p_e,
            "edge_step_db": {f"{e:g}": edge_drop_db(f1, e1, e) - edge_drop_db(f1, r1, e) for e in edges}}


def window_band_powers(x_NCT: np.ndarray, sfreq: float, bands: Iterable[Sequence[float]] = DEFAULT_BANDS,
                       f_max: float | None = None) -> np.ndarray:
    """Band power (µV²) of every window and channel from 1-s Welch segments (more averaging per window than one
    segment): (N, C, K); bands are clipped to ``f_max`` when given."""
    x = np.asarray(x_NCT, dtype=np.float64)
    bands_K2 = validate_bands(bands, sfreq)
    if f_max is not None:
        bands_K2 = clip_bands(bands_K2, f_max)
    f, p_NCF = welch_psd(x, sfreq, nperseg=int(min(x.shape[-1], round(float(sfreq)))), average=False)
    return band_powers(f, p_NCF, bands_K2)


def band_power_spread(x_NCT: np.ndarray, sfreq: float, labels_N: np.ndarray | None = None,
                      groups_N: np.ndarray | None = None, bands: Iterable[Sequence[float]] = DEFAULT_BANDS,
                      f_max: float | None = None) -> np.ndarray:
    """How much band power varies from window to window: per band, the standard deviation over windows of
    log10 band power (1-s Welch segments), per channel, then averaged over channels (and over classes: windows
    of different ``labels_N`` are not compared). With ``groups_N`` (e.g. the recording of each window) each
    group's mean is removed first: the spread inside a recording. Returns (K,) in log10 units (x10 for dB).

    Generated windows whose spread is below the real windows' are too alike; a spread that matches the real
    windows inside one recording but not across recordings is what a model that draws "an average subject" gives.
    """
    x = _as_NCT(x_NCT, "x_NCT")
    N = x.shape[0]
    labels = np.zeros(N, dtype=int) if labels_N is None else np.asarray(labels_N)
    if len(labels) != N or (groups_N is not None and len(groups_N) != N):
        raise UserError(f"band_power_spread: {N} windows but {len(labels)} labels"
                        + ("" if groups_N is None else f" and {len(groups_N)} groups"))
    lp_NCK = np.log10(np.maximum(window_band_powers(x, sfreq, bands, f_max), 1e-30))
    if groups_N is not None:
        groups = np.asarray(groups_N)
        lp_NCK = lp_NCK.copy()
        for g in np.unique(groups):
            lp_NCK[groups == g] -= lp_NCK[groups == g].mean(0)
    per_class = [lp_NCK[labels == c].std(0).mean(0) for c in np.unique(labels) if (labels == c).sum() > 1]
    if not per_class:
        raise UserError("band_power_spread needs at least two windows of one class")
    return np.mean(per_class, axis=0)


def low_power_share(x_NCT: np.ndarray, sfreq: float, f_lo: float) -> float:
    """Share of the power below ``f_lo`` Hz (DC included) in each window's periodogram, mean over windows and channels.

    The stages are band-passed from the first band's lower edge, so real windows hold little there (window leakage);
    a generator or decoder that drifts puts offsets and slow waves there, which band-power features starting at
    ``f_lo`` do not see. A channel with no power counts as 0.
    """
    x = _as_NCT(x_NCT, "x_NCT")
    P = np.abs(np.fft.rfft(x, axis=-1)) ** 2
    f = np.fft.rfftfreq(x.shape[-1], 1.0 / float(sfreq))
    total = P.sum(-1)
    low = P[..., f < float(f_lo)].sum(-1)
    return float(np.mean(np.where(total > 0, low / np.where(total > 0, total, 1.0), 0.0)))
