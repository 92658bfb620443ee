"""Classical rate-distortion references for the band tokenizer (docs/design.md §8).

Shape letters: N windows, C channels (electrodes), T time samples.

- :class:`TransformCodec`: spatial PCA fitted on training windows + orthonormal temporal DCT-II per
  window; keeps the largest-magnitude coefficients of each window; every kept coefficient costs
  ``bits_per_coef`` (16) bits for its value and its index together.
- :func:`gaussian_rd_bound`: the Gaussian rate-distortion bound by reverse water-filling over the
  spatial-PCA x DCT component variances — no codec of a Gaussian source with this covariance does better.

Rates are bits per second per channel (``bits_per_sec_per_channel``); a 5-s, 19-channel window at
28 bits/s/ch gets 28 x 5 x 19 = 2660 bits.
"""
from __future__ import annotations

import dataclasses
import logging

import numpy as np
from scipy.fft import dct, idct

from .errors import UserError

logger = logging.getLogger(__name__)

__all__ = ["TransformCodec", "CodecResult", "bits_per_window", "gaussian_rd_bound", "reverse_water_fill",
           "stage_codec_snr"]


def bits_per_window(bits_per_sec_per_channel: float, n_channels: int, n_times: int, sfreq: float) -> float:
    """Bit budget of one (C, T) window at a rate in bits per second per channel."""
    if not bits_per_sec_per_channel >= 0:
        raise UserError(f"bits_per_sec_per_channel must be >= 0, got {bits_per_sec_per_channel}")
    return float(bits_per_sec_per_channel) * n_channels * n_times / float(sfreq)


def _check_windows(x_NCT: np.ndarray, name: str, n_channels: int | None = None) -> np.ndarray:
    x = np.asarray(x_NCT, dtype=np.float64)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3 or x.shape[0] == 0:
        raise UserError(f"{name}: got shape {x.shape}; expected (N, C, T) windows")
    if not np.all(np.isfinite(x)):
        raise UserError(f"{name}: holds NaN or Inf values")
    if n_channels is not None and x.shape[1] != n_channels:
        raise UserError(f"{name}: has {x.shape[1]} channels but the codec was fitted on {n_channels}; "
                        "refit the codec on windows with the same channels")
    return x


@dataclasses.dataclass
class CodecResult:
    """One encode/decode round trip.

    Attributes
    ----------
    x_hat_NCT : ndarray, shape (N, C, T), µV
        Decoded windows.
    n_kept : int
        Coefficients kept per window.
    bits_per_window : float
        Bits actually spent per window (``n_kept * bits_per_coef``).
    bits_per_sec_per_channel : float
        The rate actually spent.
    """

    x_hat_NCT: np.ndarray
    n_kept: int
    bits_per_window: float
    bits_per_sec_per_channel: float


class TransformCodec:
    """Spatial PCA + temporal DCT transform codec, keeping the largest coefficients.

    Parameters
    ----------
    sfreq : float
        Sampling frequency in Hz (to turn bits/s/channel into a per-window budget).
    bits_per_coef : int
        Bits per kept coefficient, value and index together (16 by default).

    Notes
    -----
    The spatial basis ``W_CC`` (eigenvectors of the channel covariance of the training windows) and the
    DCT-II with ``norm='ortho'`` are both orthonormal, so coefficient energy equals signal energy and
    dropping the smallest coefficients minimises the squared error for a given count. Kept values are
    stored exactly (the 16 bits are an accounting rate, an optimistic codec).
    """

    def __init__(self, sfreq: float, bits_per_coef: int = 16) -> None:
        if not sfreq > 0:
            raise UserError(f"sfreq must be > 0 Hz, got {sfreq}")
        if int(bits_per_coef) < 1:
            raise UserError(f"bits_per_coef must be >= 1, got {bits_per_coef}")
        self.sfreq = float(sfreq)
        self.bits_per_coef = int(bits_per_coef)
        self.W_CC: np.ndarray | None = None
        self.n_times: int | None = None
        self.train_var_CT: np.ndarray | None = None

    def fit(self, train_NCT: np.ndarray) -> "TransformCodec":
        """Fit the spatial PCA on training windows (µV); returns ``self``."""
        x = _check_windows(train_NCT, "train_NCT")
        x_CM = x.transpose(1, 0, 2).reshape(x.shape[1], -1)
        cov_CC = x_CM @ x_CM.T / x_CM.shape[1]
        eigval_C, eigvec_CC = np.linalg.eigh(cov_CC)
        self.W_CC = eigvec_CC[:, ::-1].copy()  # columns = components, largest variance first
        self.n_times = x.shape[2]
        self.train_var_CT = self.component_variances(x)
        return self

    @property
    def n_channels(self) -> int:
        if self.W_CC is None:
            raise RuntimeError("TransformCodec.fit must be called first")
        return self.W_CC.shape[0]

    def analysis(self, x_NCT: np.ndarray) -> np.ndarray:
        """Coefficients ``DCT_T(W^T x)``, shape (N, C, T) (component, DCT frequency index), µV."""
        x = _check_windows(x_NCT, "x_NCT", self.n_channels)
        y_NCT = np.einsum("cd,nct->ndt", self.W_CC, x)
        return dct(y_NCT, type=2, norm="ortho", axis=-1)

    def synthesis(self, coef_NCT: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`analysis`: windows (N, C, T) in µV from coefficients."""
        y_NCT = idct(coef_NCT, type=2, norm="ortho", axis=-1)
        return np.einsum("cd,ndt->nct", self.W_CC, y_NCT)

    def n_kept_for(self, bits: float, n_times: int) -> int:
        """How many coefficients a window of ``bits`` bits keeps (at most C x T)."""
        return int(min(np.floor(bits / self.bits_per_coef + 1e-9), self.n_channels * n_times))

    def roundtrip(self, x_NCT: np.ndarray, bits_per_sec_per_channel: float | None = None,
                  bits: float | None = None) -> CodecResult:
        """Encode and decode windows at a rate (bits/s/channel) or a per-window bit budget.

        Parameters
        ----------
        x_NCT : ndarray, shape (N, C, T), µV
            Windows to code (full band, or one cumulative stage).
        bits_per_sec_per_channel : float | None
            Target rate; exactly one of this and ``bits`` must be given.
        bits : float | None
            Bit budget per window (e.g. the tokenizer's cumulative bits after scale k).
        """
        x = _check_windows(x_NCT, "x_NCT", self.n_channels)
        n, n_ch, n_t = x.shape
        if (bits_per_sec_per_channel is None) == (bits is None):
            raise UserError("TransformCodec.roundtrip: give exactly one of bits_per_sec_per_channel and bits")
        if bits is None:
            bits = bits_per_window(bits_per_sec_per_channel, n_ch, n_t, self.sfreq)
        if not bits >= 0:
            raise UserError(f"bits must be >= 0, got {bits}")
        n_keep = self.n_kept_for(bits, n_t)
        coef_NM = self.analysis(x).reshape(n, -1)
        kept_NM = np.zeros_like(coef_NM)
        if n_keep > 0:
            idx_NK = np.argpartition(-np.abs(coef_NM), n_keep - 1, axis=1)[:, :n_keep]
            rows = np.arange(n)[:, None]
            kept_NM[rows, idx_NK] = coef_NM[rows, idx_NK]
        x_hat = self.synthesis(kept_NM.reshape(n, n_ch, n_t))
        spent = float(n_keep * self.bits_per_coef)
        return CodecResult(x_hat_NCT=x_hat, n_kept=n_keep, bits_per_window=spent,
                           bits_per_sec_per_channel=spent * self.sfreq / (n_ch * n_t))

    def component_variances(self, x_NCT: np.ndarray) -> np.ndarray:
        """Mean squared coefficient per (component, DCT index) over windows, shape (C, T), µV²."""
        return np.mean(self.analysis(x_NCT) ** 2, axis=0)


def reverse_water_fill(variances: np.ndarray, bits: float) -> tuple[float, float]:
    """Reverse water-filling for independent Gaussian components at a total rate of ``bits``.

    Parameters
    ----------
    variances : ndarray, any shape
        Component variances (µV²).
    bits : float
        Total rate in bits.

    Returns
    -------
    distortion : float
        Minimal total squared error ``sum_i min(theta, var_i)`` (µV²).
    theta : float
        The water level reached.
    """
    lam = np.asarray(variances, dtype=np.float64).ravel()
    lam = lam[lam > 0]
    if lam.size == 0:
        return 0.0, 0.0
    if bits <= 0:
        return float(lam.sum()), float(lam.max())

    def rate(theta: float) -> float:
        return float(np.sum(0.5 * np.log2(np.maximum(lam / theta, 1.0))))

    lo, hi = np.log(lam.min()) - 60.0, np.log(lam.max())  # rate(exp(hi)) = 0; rate(exp(lo)) is huge
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if rate(np.exp(mid)) > bits:
            lo = mid
        else:
            hi = mid
    theta = float(np.exp(hi))
    return float(np.sum(np.minimum(theta, lam))), theta


def gaussian_rd_bound(codec: TransformCodec, val_NCT: np.ndarray, bits_per_sec_per_channel: float | np.ndarray,
                      allocation: str = "train") -> np.ndarray:
    """SNR (dB) of the Gaussian rate-distortion bound at one or more rates.

    Components are the codec's spatial-PCA x DCT coefficients. Reverse water-filling over their variances
    sets a water level ``theta`` and a rate per component; a Gaussian component of variance ``s`` coded
    at rate ``R`` has distortion ``s 2^(-2R)``.

    Parameters
    ----------
    codec : TransformCodec
        A fitted codec (its PCA basis and training variances are used).
    val_NCT : ndarray, shape (N, C, T), µV
        Evaluation windows.
    bits_per_sec_per_channel : float or array of float
        Rates.
    allocation : {'train', 'val'}
        ``'train'`` (default): the rates are allocated by water-filling over the
        variances estimated on the training windows, and the distortion is evaluated with the
        validation variances, ``sum_i s_val_i min(1, theta / s_train_i)`` — the best Gaussian code
        designed on training data. ``'val'``: water-filling over the validation variances themselves
        (an oracle that knows the validation statistics; never lower).

    Returns
    -------
    ndarray
        SNR in dB, one per rate (same shape as ``bits_per_sec_per_channel``).
    """
    if allocation not in ("train", "val"):
        raise UserError(f"allocation got {allocation!r}; allowed: 'train', 'val'")
    x = _check_windows(val_NCT, "val_NCT", codec.n_channels)
    lam_val_CT = codec.component_variances(x)
    lam_alloc_CT = codec.train_var_CT if allocation == "train" else lam_val_CT
    if lam_alloc_CT.shape != lam_val_CT.shape:
        raise UserError(f"val_NCT windows have {x.shape[2]} samples but the codec was fitted on "
                        f"{lam_alloc_CT.shape[1]}; use allocation='val' or windows of the fitted length")
    energy = float(lam_val_CT.sum())
    rates = np.asarray(bits_per_sec_per_channel, dtype=np.float64)
    out = np.empty_like(rates)
    for i, r in np.ndenumerate(rates):
        _, theta = reverse_water_fill(lam_alloc_CT, bits_per_window(r, x.shape[1], x.shape[2], codec.sfreq))
        with np.errstate(divide="ignore", invalid="ignore"):
            keep_CT = np.where(lam_alloc_CT > 0, np.minimum(1.0, theta / lam_alloc_CT), 1.0)
        d = float(np.sum(lam_val_CT * keep_CT))
        out[i] = np.inf if d == 0 else 10.0 * np.log10(energy / d)
    return out


def stage_codec_snr(train_stages_NKCT: np.ndarray, val_stages_NKCT: np.ndarray, sfreq: float,
                    bits_per_window_K, bits_per_coef: int = 16) -> list[float]:
    """Codec SNR (dB) of each cumulative stage at its own per-window bit budget.

    For the "partial decode vs codec" comparison: stage k's codec (PCA fitted on the training
    windows of that stage) gets the tokenizer's cumulative bits after scale k.

    Parameters
    ----------
    train_stages_NKCT, val_stages_NKCT : ndarray, shape (N, K, C, T), µV
        Cumulative stages of training and evaluation windows.
    sfreq : float
        Sampling frequency in Hz.
    bits_per_window_K : sequence of float, length K
        Bit budget per window for each stage (e.g. cumulative tokens x log2(V) up to stage k).
    bits_per_coef : int
        Bits per kept coefficient.
    """
    from .eeg_metrics import snr_db

    tr = np.asarray(train_stages_NKCT, dtype=np.float64)
    va = np.asarray(val_stages_NKCT, dtype=np.float64)
    budgets = [float(b) for b in bits_per_window_K]
    if tr.ndim != 4 or va.ndim != 4 or tr.shape[1:] != va.shape[1:] or len(budgets) != tr.shape[1]:
        raise UserError(f"stage_codec_snr: expected (N, K, C, T) stages with K={len(budgets)} budgets; got "
                        f"{tr.shape} and {va.shape}")
    out = []
    for k, bits in enumerate(budgets):
        codec = TransformCodec(sfreq, bits_per_coef).fit(tr[:, k])
        out.append(snr_db(va[:, k], codec.roundtrip(va[:, k], bits=bits).x_hat_NCT))
    return out
