"""``BandMix``: a fixed per-band channel mixing that gives decodes their inputs' spatial structure back.

A decoder trained for squared error keeps what is common to the electrodes (large, predictable) better than
what each electrode has on its own, so its decodes are more correlated across channels than their inputs:
a classifier on channel correlations tells them apart (docs/design.md §2). Per band k, the channel x channel
covariance of the inputs ``Sx`` and of their decodes ``Sr`` (over the band's rFFT bins, averaged over
training windows) define the map ``M = Sx^½ Sr^-½`` that turns the decodes' covariance into the inputs'.
The stored map is only part of the way there, ``W = (1 - a) I + a M``: the full map, fitted on some subjects,
overshoots on others. ``a`` is chosen per band on the training windows alone (two folds of subjects: fit on
one, pick the ``a`` whose decodes of the other have the mean |channel correlation| of their inputs), among the
factors that cost those decodes at most ``MAX_SNR_LOSS_DB`` of the band's SNR: a decoder that has hardly learned
a band (a direction its decodes never use, which the map would amplify) keeps it nearly unmixed.

Applied in the frequency domain, band k's bins times ``W_k``: a band-limited partial decode stays band-limited,
so every prefix of the tokens still decodes to its stage. No bits are sent; an uncalibrated map (identity) or
a tokenizer without one decodes as before.

Shape letters: B batch, N windows, C electrodes, T samples, F = T // 2 + 1 rFFT bins, K bands.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn as nn

__all__ = ['BandMix', 'band_index_F', 'band_cov', 'matching_map', 'mean_abs_corr', 'choose_alpha']

#: Mixing factors tried by :func:`choose_alpha`.
ALPHA_GRID = tuple(np.round(np.linspace(0.0, 1.0, 11), 2))
#: Largest loss of a band's SNR on the held-out fold that :func:`choose_alpha` accepts for a factor (dB).
MAX_SNR_LOSS_DB = 1.0


def band_index_F(bands: Sequence[Sequence[float]], sfreq: float, n_times: int) -> np.ndarray:
    """rFFT bin -> band index (F,), -1 outside every band; band k owns ``f_lo <= f < f_hi`` (the top band
    also its upper edge), as :class:`~models.band_gain.BandGain`."""
    freqs_F = np.fft.rfftfreq(int(n_times), 1.0 / float(sfreq))
    out = np.full(freqs_F.shape, -1, dtype=np.int64)
    for k, (lo, hi) in enumerate(bands):
        last = k == len(bands) - 1
        out[(freqs_F >= lo) & ((freqs_F <= hi) if last else (freqs_F < hi))] = k
    return out


def band_cov(x_NCT: np.ndarray, in_band_F: np.ndarray, y_NCT: np.ndarray | None = None) -> np.ndarray:
    """Per window, ``Re Σ_f X_f Y_f^H`` over the bins ``in_band_F`` (bool (F,)): (N, C, C) float64 (``y`` = ``x``
    when not given)."""
    X = _rfft(x_NCT)[..., in_band_F]
    return _spectral_cov(X, X if y_NCT is None else _rfft(y_NCT)[..., in_band_F])


def _rfft(x_NCT: np.ndarray) -> np.ndarray:
    return np.fft.rfft(np.asarray(x_NCT, dtype=np.float64), axis=-1)


def _spectral_cov(X_NCF: np.ndarray, Y_NCF: np.ndarray) -> np.ndarray:
    """``Re Σ_f X_f Y_f^H`` per window, (N, C, C)."""
    return np.einsum('ncf,ndf->ncd', X_NCF, Y_NCF.conj()).real


def _sym_power(S_CC: np.ndarray, p: float) -> np.ndarray:
    """``S^p`` of a symmetric PSD matrix, eigenvalues floored at 1e-6 of the largest: a direction the decodes
    (nearly) never use is amplified at most 1000-fold by ``Sr^-½``."""
    w, U = np.linalg.eigh(0.5 * (S_CC + S_CC.T))
    w = np.clip(w, max(float(w.max()), 0.0) * 1e-6 + 1e-30, None)
    return (U * w ** p) @ U.T


def matching_map(Sx_CC: np.ndarray, Sr_CC: np.ndarray) -> np.ndarray:
    """``Sx^½ Sr^-½`` (symmetric square roots): ``M Sr M^T = Sx``."""
    return _sym_power(Sx_CC, 0.5) @ _sym_power(Sr_CC, -0.5)


def mean_abs_corr(S_NCC: np.ndarray) -> float:
    """Mean |correlation| over channel pairs and windows of per-window covariances (N, C, C)."""
    d = np.sqrt(np.clip(np.einsum('ncc->nc', S_NCC), 1e-30, None))
    R = S_NCC / d[:, :, None] / d[:, None, :]
    iu = np.triu_indices(S_NCC.shape[1], k=1)
    return float(np.abs(R[:, iu[0], iu[1]]).mean())


def choose_alpha(Sx_NCC: np.ndarray, Sr_NCC: np.ndarray, fold_N: np.ndarray, grid: Sequence[float] = ALPHA_GRID,
                 Sxr_NCC: np.ndarray | None = None, max_snr_loss_db: float = MAX_SNR_LOSS_DB) -> float:
    """The mixing factor whose held-out decodes have their inputs' mean |channel correlation|.

    For each fold, the map is fitted on the other folds' windows; the gap ``|mac(W Sr W^T) - mac(Sx)|`` on the
    fold's windows is averaged over folds; the ``a`` of ``grid`` with the smallest gap wins (the smallest ``a``
    on ties). One fold: the map is fitted and judged on the same windows. With the cross-covariances
    ``Sxr_NCC`` (:func:`band_cov` of inputs against decodes), only factors whose mixed decodes lose at most
    ``max_snr_loss_db`` of SNR against the unmixed ones on every fold compete (``a = 0`` always does); the
    squared error of ``W r`` is ``tr Sx - 2 Σ W ⊙ Sxr + tr(W Sr W^T)``.
    """
    folds = np.unique(fold_N)
    gaps, ok = np.zeros(len(grid)), np.ones(len(grid), bool)
    for f in folds:
        held = fold_N == f
        fit = ~held if len(folds) > 1 else held
        M = matching_map(Sx_NCC[fit].mean(0), Sr_NCC[fit].mean(0))
        target = mean_abs_corr(Sx_NCC[held])
        Sx, Sr = Sx_NCC[held].sum(0), Sr_NCC[held].sum(0)
        Sxr = None if Sxr_NCC is None else Sxr_NCC[held].sum(0)

        def sq_err(W: np.ndarray) -> float:
            return max(float(np.trace(Sx) - 2 * np.sum(W * Sxr) + np.trace(W @ Sr @ W.T)), 1e-30)

        err0 = None if Sxr is None else sq_err(np.eye(len(M)))
        for i, a in enumerate(grid):
            W = (1 - a) * np.eye(len(M)) + a * M
            gaps[i] += abs(mean_abs_corr(W @ Sr_NCC[held] @ W.T) - target)
            if err0 is not None and a > 0 and 10 * np.log10(sq_err(W) / err0) > max_snr_loss_db:
                ok[i] = False
    gaps[~ok] = np.inf
    return float(grid[int(np.argmin(gaps))])


class BandMix(nn.Module):
    """Per-band channel maps; the identity (a no-op) until :meth:`calibrate_` fills them.

    Parameters
    ----------
    n_bands, n_channels, n_times : int
        Bands K of the tokenizer, electrodes C, window length T.
    """

    def __init__(self, n_bands: int, n_channels: int, n_times: int):
        super().__init__()
        self.n_times = int(n_times)
        self.register_buffer('W_KCC', torch.eye(n_channels).repeat(n_bands, 1, 1))
        #: rFFT bin -> band, -1 = not mixed (all -1 until calibrated)
        self.register_buffer('band_F', torch.full((self.n_times // 2 + 1,), -1, dtype=torch.long))
        #: the mixing factor chosen for each band (0 until calibrated)
        self.register_buffer('alpha_K', torch.zeros(n_bands))

    @torch.no_grad()
    def reset_(self) -> None:
        """Back to the identity (uncalibrated)."""
        self.W_KCC.copy_(torch.eye(self.W_KCC.shape[1]).repeat(self.W_KCC.shape[0], 1, 1))
        self.band_F.fill_(-1)
        self.alpha_K.zero_()

    def is_calibrated(self) -> bool:
        return bool((self.band_F >= 0).any())

    @torch.no_grad()
    def calibrate_(self, x_NCT: np.ndarray, rec_NCT: np.ndarray, band_F: np.ndarray, fold_N: np.ndarray,
                   alpha: float | None = None) -> list[float]:
        """Fit every band's map to windows ``x_NCT`` and their plain decodes ``rec_NCT`` (same units).

        ``fold_N``: a fold id per window (e.g. recordings split in two) for choosing ``a`` (:func:`choose_alpha`);
        ``alpha``: use this factor for every band instead. Returns the factors.
        """
        band_F = np.asarray(band_F, dtype=np.int64)
        K = self.W_KCC.shape[0]
        if band_F.shape != tuple(self.band_F.shape) or band_F.max() >= K:
            raise ValueError(f'band index of shape {band_F.shape} (max {band_F.max()}) does not fit a mix of '
                             f'{K} bands over {self.band_F.shape[0]} rFFT bins')
        X_NCF, R_NCF = _rfft(x_NCT), _rfft(rec_NCT)  # once, sliced per band
        alphas = []
        for k in range(K):
            in_k = band_F == k
            if not in_k.any():
                alphas.append(0.0)
                continue
            Xk, Rk = X_NCF[..., in_k], R_NCF[..., in_k]
            Sx, Sr = _spectral_cov(Xk, Xk), _spectral_cov(Rk, Rk)
            a = (choose_alpha(Sx, Sr, np.asarray(fold_N), Sxr_NCC=_spectral_cov(Xk, Rk)) if alpha is None
                 else float(alpha))
            M = matching_map(Sx.mean(0), Sr.mean(0))
            self.W_KCC[k].copy_(torch.from_numpy((1 - a) * np.eye(len(M)) + a * M))
            alphas.append(a)
        self.band_F.copy_(torch.from_numpy(band_F))
        self.alpha_K.copy_(torch.tensor(alphas))
        return alphas

    def forward(self, x_BCT: torch.Tensor) -> torch.Tensor:
        """``x_BCT`` with each band's rFFT bins mixed across channels by its map (unchanged until calibrated)."""
        if not self.is_calibrated():
            return x_BCT
        K = self.W_KCC.shape[0]
        X_BCF = torch.fft.rfft(x_BCT.double(), dim=-1)
        out_BCF = X_BCF.clone()
        band_F = self.band_F.to(x_BCT.device)
        for k in range(K):
            in_k = band_F == k
            if in_k.any():
                W = self.W_KCC[k].to(device=x_BCT.device, dtype=torch.float64).to(X_BCF.dtype)
                out_BCF[..., in_k] = torch.einsum('cd,bdf->bcf', W, X_BCF[..., in_k])
        return torch.fft.irfft(out_BCF, n=self.n_times, dim=-1).to(x_BCT.dtype)
