"""``ResidualNoise``: puts back, as seeded Gaussian noise, the band power a tokenizer's decoder loses.

A decoder trained for squared error outputs the conditional mean of each window given its tokens, so a
reconstruction carries less power than its input, most in the high bands (the unpredictable part is
shrunk to zero). For every scale whose partial decode is a stage, this module stores, per rFFT bin, a
factor ``L`` of the power deficit ``S_x - S_rec`` (channel x channel cross-spectra of the stage targets
and their decodes, averaged over calibration windows; negative eigenvalues clipped to zero). Decoding
then adds noise whose cross-spectrum is that deficit, rescaled per window, channel and sub-band to the
deficit predicted from the decode's own power there (an affine fit over the calibration windows: loud
windows lose more than quiet ones): band powers and channel correlations come back in expectation, no
token is added, and the same seed gives the same noise (decoding stays reproducible).
The price is squared error: the noise is independent of the lost detail, so it adds its own power to
the error; keep it off where SNR is what counts.

Shape letters: B batch, N windows, C electrodes, T samples, F = T // 2 + 1 rFFT bins, S scales.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

__all__ = ['ResidualNoise', 'deficit_factor']


def deficit_factor(x_NCT: torch.Tensor, rec_NCT: torch.Tensor, n_bins: int | None = None) -> torch.Tensor:
    """Per rFFT bin, ``L_FCC`` with ``L L^H`` ~ ``S_x - S_rec`` (complex, (F, C, C)).

    ``S_x[f] = mean_N X_f X_f^H`` with ``X = rfft(x)`` (no taper). The deficit is not positive semi-definite
    when the decode is correlated with its error; its negative eigenvalues are dropped and the rest scaled so
    each bin keeps the deficit's total power (its trace, or zero). Bins from ``n_bins`` on and the DC bin are
    zero (a band-limited stage gets no noise outside its band; windows are not mean-centred by it).
    """
    X_NCF = torch.fft.rfft(x_NCT.double(), dim=-1)
    R_NCF = torch.fft.rfft(rec_NCT.double(), dim=-1)
    N = X_NCF.shape[0]
    D_FCC = (torch.einsum('ncf,ndf->fcd', X_NCF, X_NCF.conj()) - torch.einsum('ncf,ndf->fcd', R_NCF, R_NCF.conj())) / N
    D_FCC = 0.5 * (D_FCC + D_FCC.transpose(-1, -2).conj())  # exact Hermitian before the eigendecomposition
    lam_FC, U_FCC = torch.linalg.eigh(D_FCC)
    pos_FC = lam_FC.clamp_min(0)
    pos_FC = pos_FC * (lam_FC.sum(-1, keepdim=True).clamp_min(0) / pos_FC.sum(-1, keepdim=True).clamp_min(1e-30))
    L_FCC = U_FCC * pos_FC.sqrt().unsqueeze(-2)
    L_FCC[0] = 0
    if n_bins is not None:
        L_FCC[n_bins:] = 0
    return L_FCC.to(torch.complex64)


class ResidualNoise(nn.Module):
    """Calibrated per-scale noise; all zeros (a no-op) until :meth:`calibrate_` fills a scale.

    Parameters
    ----------
    n_scales, n_channels, n_times : int
        Scales S of the tokenizer, electrodes C, window length T.
    """

    #: Sub-bands of the per-window gain: the rFFT bins in about this many groups.
    N_GAIN_BANDS = 12
    #: Largest per-window gain on the noise amplitude (a decode far louder than the calibration windows).
    MAX_GAIN = 3.0

    def __init__(self, n_scales: int, n_channels: int, n_times: int):
        super().__init__()
        F = n_times // 2 + 1
        self.n_times = int(n_times)
        self.gain_bins = max(1, -(-F // self.N_GAIN_BANDS))
        J = -(-F // self.gain_bins)
        # real and imaginary parts apart: plain float buffers in every checkpoint format
        self.register_buffer('L_re_SFCC', torch.zeros(n_scales, F, n_channels, n_channels))
        self.register_buffer('L_im_SFCC', torch.zeros(n_scales, F, n_channels, n_channels))
        # per-window deficit power of a sub-band ~ a + b * decode power there; D_ref: the deficit L carries
        self.register_buffer('a_SCJ', torch.zeros(n_scales, n_channels, J))
        self.register_buffer('b_SCJ', torch.zeros(n_scales, n_channels, J))
        self.register_buffer('D_ref_SCJ', torch.zeros(n_scales, n_channels, J))

    def subband_power(self, x_BCT: torch.Tensor) -> torch.Tensor:
        """Σ |rfft(x)|² over each gain sub-band of ``gain_bins`` bins: (B, C, J)."""
        return self.subband_power_from_psd(torch.fft.rfft(x_BCT.float(), dim=-1).abs().square())

    @torch.no_grad()
    def calibrate_(self, si: int, x_NCT: torch.Tensor, rec_NCT: torch.Tensor, f_hi_bin: int | None = None) -> None:
        """Fit scale ``si``'s noise to the deficit of ``rec_NCT`` against its targets ``x_NCT`` (model units)."""
        L = deficit_factor(x_NCT, rec_NCT, f_hi_bin)
        self.L_re_SFCC[si].copy_(L.real)
        self.L_im_SFCC[si].copy_(L.imag)
        # the power L gives each channel and sub-band: diag(L L^H), summed over the sub-band's bins
        diag_CF = (L.real.square() + L.imag.square()).sum(-1).T.float()
        self.D_ref_SCJ[si].copy_(self.subband_power_from_psd(diag_CF))
        # log P_x ~ a + b log P_rec per window (a power law: loud windows lose a larger share than quiet ones)
        lr_NCJ = self.subband_power(rec_NCT).clamp_min(1e-30).log()
        lx_NCJ = self.subband_power(x_NCT).clamp_min(1e-30).log()
        r_mean, x_mean = lr_NCJ.mean(0), lx_NCJ.mean(0)
        b = ((lr_NCJ - r_mean) * (lx_NCJ - x_mean)).mean(0) / (lr_NCJ - r_mean).square().mean(0).clamp_min(1e-12)
        a = x_mean - b * r_mean
        # the mean of logs sits below the log of the mean: shift a so the mean predicted power is the mean power
        pred_NCJ = (a + b * lr_NCJ).exp()
        a = a + (lx_NCJ.exp().mean(0) / pred_NCJ.mean(0).clamp_min(1e-30)).clamp_min(1e-30).log()
        self.b_SCJ[si].copy_(b)
        self.a_SCJ[si].copy_(a)

    def subband_power_from_psd(self, P_CF: torch.Tensor) -> torch.Tensor:
        """A power spectrum (..., F) summed over each gain sub-band: (..., J)."""
        pad = self.a_SCJ.shape[-1] * self.gain_bins - P_CF.shape[-1]
        P_CF = torch.nn.functional.pad(P_CF, (0, pad))
        return P_CF.reshape(*P_CF.shape[:-1], -1, self.gain_bins).sum(-1)

    def is_calibrated(self, si: int) -> bool:
        return bool(self.L_re_SFCC[si].abs().sum() > 0)

    @torch.no_grad()
    def sample(self, si: int, batch: int, seed: int, gain_BCF: torch.Tensor | None = None) -> torch.Tensor:
        """Noise of scale ``si``, shape (batch, C, T), amplitudes times ``gain_BCF`` (B, C, F) if given; the same
        seed draws the same z for every scale.

        One z per (window, bin, channel) shared by all scales, so the noise of stage k+1 continues that of
        stage k inside the lower bands instead of replacing it.
        """
        S, F, C, _ = self.L_re_SFCC.shape
        g = torch.Generator(device='cpu').manual_seed(int(seed))
        z_BFC = torch.complex(torch.randn(batch, F, C, generator=g), torch.randn(batch, F, C, generator=g))
        z_BFC = z_BFC.to(self.L_re_SFCC.device) * (0.5 ** 0.5)  # E|z|² = 1
        L_FCC = torch.complex(self.L_re_SFCC[si], self.L_im_SFCC[si])
        N_BCF = torch.einsum('fcd,bfd->bcf', L_FCC, z_BFC)
        if gain_BCF is not None:
            N_BCF = N_BCF * gain_BCF
        return torch.fft.irfft(N_BCF, n=self.n_times, dim=-1)

    def add_(self, x_BCT: torch.Tensor, si: int, seed: int | None) -> torch.Tensor:
        """Decode ``x_BCT`` of scale ``si`` plus its noise for ``seed``; ``x_BCT`` itself when ``seed`` is None.

        The noise amplitude in each sub-band and channel is scaled by sqrt(predicted deficit / calibrated
        deficit), at most ``MAX_GAIN``.
        """
        if seed is None:
            return x_BCT
        P_BCJ = self.subband_power(x_BCT)
        pred_BCJ = ((self.a_SCJ[si] + self.b_SCJ[si] * P_BCJ.clamp_min(1e-30).log()).exp() - P_BCJ).clamp_min(0)
        gain_BCJ = (pred_BCJ / self.D_ref_SCJ[si].clamp_min(1e-30)).sqrt().clamp(max=self.MAX_GAIN)
        gain_BCF = gain_BCJ.repeat_interleave(self.gain_bins, dim=-1)[..., :self.L_re_SFCC.shape[1]]
        return x_BCT + self.sample(si, x_BCT.shape[0], seed, gain_BCF).to(x_BCT.dtype)


@torch.no_grad()
def calibrate_vae_noise_(noise: ResidualNoise, vae, stages_NKCT: torch.Tensor, stage_scale_idx: Sequence[int],
                         f_hi_bins: Sequence[int], batch: int = 256) -> None:
    """Fit ``noise`` for each stage scale from windows ``stages_NKCT`` (model units) through ``vae``'s tokens."""
    recs = [[] for _ in stage_scale_idx]
    for i in range(0, stages_NKCT.shape[0], batch):
        idx = vae.eeg_to_idxBl(stages_NKCT[i:i + batch, -1])
        recs_S = vae.idxBl_to_eeg(idx, last_one=False)
        for k, si in enumerate(stage_scale_idx):
            recs[k].append(recs_S[si])
    for k, si in enumerate(stage_scale_idx):
        noise.calibrate_(si, stages_NKCT[:, k], torch.cat(recs[k]), f_hi_bins[k])
