"""Losses and scores of the band tokenizer: per-stage reconstruction, multi-resolution log-spectral, sub-band power
and channel-correlation losses, SNR.

The multi-resolution log-spectral (STFT magnitude) loss is the EEG stand-in for the perceptual loss of
upstream's image tokenizer (docs/design.md §2). All functions take tensors in model units.

Shape letters: B batch, K stages, C electrodes, T samples, F frequency bins, W STFT frames.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = ['stage_recon_loss', 'log_spectral_loss', 'band_power_loss', 'band_bins', 'band_corr_loss', 'subband_edges', 'snr_db',
           'SNRAccumulator']


def stage_recon_loss(recs_K: Sequence[torch.Tensor], stages_BKCT: torch.Tensor,
                     weights_K: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Σ_k w_k · MSE(rec_k, x_≤k) / mean(x_≤k²): each stage's error relative to its own energy.

    Parameters
    ----------
    recs_K : list of K Tensors, each (B, C, T)
        Decoded partial sums, one per stage.
    stages_BKCT : Tensor, shape (B, K, C, T)
        Cumulative band targets.
    weights_K : sequence of K floats

    Returns
    -------
    loss : Tensor, scalar
        Weighted sum divided by Σ w_k.
    nmse_K : Tensor, shape (K,)
        Detached normalised MSE per stage (1 / linear SNR).
    """
    terms = []
    for k, rec_BCT in enumerate(recs_K):
        x_BCT = stages_BKCT[:, k]
        terms.append(F.mse_loss(rec_BCT.float(), x_BCT.float()) / x_BCT.float().square().mean().clamp_min(1e-8))
    nmse_K = torch.stack(terms)
    w_K = torch.as_tensor(list(weights_K), dtype=nmse_K.dtype, device=nmse_K.device)
    return (nmse_K * w_K).sum() / w_K.sum(), nmse_K.detach()


def log_spectral_loss(rec_BCT: torch.Tensor, x_BCT: torch.Tensor, n_ffts: Sequence[int] = (32, 64, 128),
                      rel_eps: float = 1e-2) -> torch.Tensor:
    """Multi-resolution STFT log-magnitude L1 distance (mean over resolutions).

    Parameters
    ----------
    rec_BCT, x_BCT : Tensor, shape (B, C, T)
    n_ffts : sequence of int
        FFT sizes (Hann window, hop n_fft / 4); sizes above T are skipped.
    rel_eps : float
        Floor added to magnitudes, relative to the target's mean magnitude, so bins outside a
        stage's band (near zero in the target) do not dominate the log distance.
    """
    B, C, T = x_BCT.shape
    rec_NT = rec_BCT.float().reshape(B * C, T)
    x_NT = x_BCT.float().reshape(B * C, T)
    losses = []
    for n_fft in n_ffts:
        if n_fft > T:
            continue
        win = torch.hann_window(n_fft, device=x_NT.device)
        X_NFW = torch.stft(x_NT, n_fft, hop_length=n_fft // 4, window=win, center=False, return_complex=True).abs()
        R_NFW = torch.stft(rec_NT, n_fft, hop_length=n_fft // 4, window=win, center=False, return_complex=True).abs()
        eps = rel_eps * X_NFW.mean().detach() + 1e-8
        losses.append((torch.log(R_NFW + eps) - torch.log(X_NFW + eps)).abs().mean())
    if not losses:
        return x_BCT.new_zeros(())
    return torch.stack(losses).mean()


def subband_edges(f_hi: float, sfreq: float, n_times: int, width_hz: float = 2.0) -> list[tuple[int, int]]:
    """rFFT bin ranges ``[lo, hi)`` of consecutive sub-bands of ``width_hz`` Hz covering (0, f_hi] (DC left out).

    A window of ``n_times`` samples at ``sfreq`` Hz has bins every ``sfreq / n_times`` Hz; a band narrower
    than one bin still gets one bin.
    """
    df = sfreq / n_times
    last = max(1, min(int(round(f_hi / df)), n_times // 2))  # bin of f_hi, at least 1, at most Nyquist
    step = max(1, int(round(width_hz / df)))
    return [(lo, min(lo + step, last + 1)) for lo in range(1, last + 1, step)]


def band_power_loss(rec_BCT: torch.Tensor, x_BCT: torch.Tensor, edges: Sequence[tuple[int, int]],
                    rel_eps: float = 1e-3) -> torch.Tensor:
    """Mean squared log-ratio of sub-band powers, per window and channel: mean (ln P_rec - ln P_x)².

    A decoder trained on squared error alone shrinks what it cannot predict (its output carries less power
    than its target, most in the high bands); this loss pulls each sub-band's power back to the target's
    without asking for the phase.

    Parameters
    ----------
    rec_BCT, x_BCT : Tensor, shape (B, C, T)
    edges : sequence of (lo, hi)
        rFFT bin ranges (see :func:`subband_edges`); P is Σ |rfft(x)|² over bins lo..hi-1 (Hann window).
    rel_eps : float
        Floor added to the powers, relative to the target's mean sub-band power (keeps empty bands finite).
    """
    T = x_BCT.shape[-1]
    win = torch.hann_window(T, periodic=False, device=x_BCT.device, dtype=torch.float32)
    R = torch.fft.rfft(rec_BCT.float() * win, dim=-1).abs().square()
    X = torch.fft.rfft(x_BCT.float() * win, dim=-1).abs().square()
    P_rec = torch.stack([R[..., lo:hi].sum(-1) for lo, hi in edges], dim=-1)
    P_x = torch.stack([X[..., lo:hi].sum(-1) for lo, hi in edges], dim=-1)
    eps = rel_eps * P_x.mean().detach() + 1e-12
    return (torch.log(P_rec + eps) - torch.log(P_x + eps)).square().mean()


def band_bins(band_F: Sequence[int] | torch.Tensor, device: torch.device | str = 'cpu') -> list[torch.Tensor]:
    """The rFFT bins of each band that has any, as index tensors on ``device``, from a band index per bin
    (``models.band_mix.band_index_F``; -1 = in no band)."""
    band_F = torch.as_tensor(band_F, dtype=torch.long).cpu()
    bins = [torch.nonzero(band_F == k).squeeze(1) for k in range(int(band_F.max()) + 1)] if band_F.numel() else []
    return [b.to(device) for b in bins if b.numel()]


def band_corr_loss(rec_BCT: torch.Tensor, x_BCT: torch.Tensor, bins_K: Sequence[torch.Tensor],
                   rel_eps: float = 1e-3) -> torch.Tensor:
    """Mean squared difference of per-window, per-band channel correlations: mean (R_rec - R_x)² over bands,
    windows and channel pairs.

    Band k's correlation matrix of a window is ``Re Σ_f X_f X_f^H`` over its rFFT bins ``bins_K[k]``, scaled
    to a unit diagonal. A decoder trained on squared error pulls every window's spatial pattern toward the
    average one (its decodes' correlations vary less from window to window than their inputs'); this loss
    asks each window for its own.

    Parameters
    ----------
    rec_BCT, x_BCT : Tensor, shape (B, C, T)
    bins_K : sequence of LongTensor
        Each band's rFFT bin indices, on the tensors' device (:func:`band_bins`, built once per run).
    rel_eps : float
        Floor added to the diagonal, relative to the target's mean channel power in the band.
    """
    if not bins_K:
        return x_BCT.new_zeros(())
    R = torch.fft.rfft(rec_BCT.float(), dim=-1)
    X = torch.fft.rfft(x_BCT.float(), dim=-1)
    C = x_BCT.shape[1]
    iu = torch.triu_indices(C, C, offset=1, device=x_BCT.device)

    def pair_corr(Z_BCF: torch.Tensor) -> torch.Tensor:
        S_BCC = torch.einsum('bcf,bdf->bcd', Z_BCF, Z_BCF.conj()).real
        d_BC = torch.diagonal(S_BCC, dim1=-2, dim2=-1)
        s_BC = (d_BC + rel_eps * d_BC.mean().detach() + 1e-12).sqrt()
        return (S_BCC / s_BC[:, :, None] / s_BC[:, None, :])[:, iu[0], iu[1]]

    return torch.stack([(pair_corr(R.index_select(-1, b)) - pair_corr(X.index_select(-1, b))).square().mean()
                        for b in bins_K]).mean()


def snr_db(signal_energy: float | torch.Tensor, error_energy: float | torch.Tensor) -> float:
    """10 log10(‖x‖² / ‖x − x̂‖²) in dB (inf for a perfect reconstruction)."""
    s, e = float(signal_energy), float(error_energy)
    if e <= 0:
        return float('inf')
    return 10.0 * torch.log10(torch.tensor(s / e)).item() if s > 0 else float('-inf')


class SNRAccumulator:
    """Pooled per-stage SNR over many batches: Σ‖x_k‖² / Σ‖x_k − x̂_k‖² (energies in float64)."""

    def __init__(self, n_stages: int):
        self.sig_K = torch.zeros(n_stages, dtype=torch.float64)
        self.err_K = torch.zeros(n_stages, dtype=torch.float64)

    def update(self, recs_K: Sequence[torch.Tensor], stages_BKCT: torch.Tensor) -> None:
        for k, rec_BCT in enumerate(recs_K):
            x = stages_BKCT[:, k].double()
            self.sig_K[k] += x.square().sum().cpu()
            self.err_K[k] += (rec_BCT.double() - x).square().sum().cpu()

    def snr_db_K(self) -> list[float]:
        return [snr_db(s, e) for s, e in zip(self.sig_K.tolist(), self.err_K.tolist())]
