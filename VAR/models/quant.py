"""``VectorQuantizer2``: the 1D multi-scale residual quantizer of the band tokenizer, and the Phi convs.

Port of upstream's ``models/quant.py`` to 1D latents ``f_BCl`` (B, Cvae, L).
Scale ``si`` quantizes the residual area-downsampled to ``pn = v_patch_nums[si]`` positions; the
dequantised map is upsampled back to L, refined by a shared Phi conv and added to ``f_hat``.

Token layout (the contract with the VAR transformer)
----------------------------------------------------
Each latent position carries ``G = tokens_per_pos`` tokens: the Cvae vector is split into G chunks of
``Cvae / G`` channels (product quantisation), chunk g is looked up in group g's codebook of
``V = vocab_size`` rows. Scale si's token map ``idx_Bl`` has shape (B, pn * G), position-major:
``[pos0 g0..g(G-1), pos1 g0..g(G-1), ...]``. With ``per_scale_codebook`` every scale also owns its
codebooks (indices stay in [0, V)). G = 1 and a shared codebook is upstream's layout.

Shape letters: B batch, C (= Cvae) latent channels, L latent length, l / pn one scale's length,
G tokens per position, V codebook size, d = Cvae / G channels per group, N flattened rows.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import distributed as tdist, nn as nn
from torch.nn import functional as F

__all__ = ['VectorQuantizer2', 'Phi', 'PhiShared', 'PhiPartiallyShared', 'PhiNonShared', 'area_down', 'up_to']


def area_down(f_BCl: torch.Tensor, pn: int, mode: str = 'linear') -> torch.Tensor:
    """Downsample (B, C, L) -> (B, C, pn) by area averaging (``mode='linear'``) or FFT truncation (``'fft'``)."""
    L = f_BCl.shape[-1]
    if pn == L:
        return f_BCl.clone()  # a new tensor, as F.interpolate returns: callers may update f_hat in place
    if mode == 'fft':
        # port: band-limited alternative to area pooling: keep the lowest pn//2+1 rFFT bins.
        X = torch.fft.rfft(f_BCl.float(), dim=-1)[..., : pn // 2 + 1]
        return torch.fft.irfft(X, n=pn, dim=-1) * (pn / L)
    return F.interpolate(f_BCl, size=pn, mode='area')


def up_to(h_BCl: torch.Tensor, L: int, mode: str = 'linear') -> torch.Tensor:
    """Upsample (B, C, pn) -> (B, C, L): linear (align_corners False) or band-limited FFT zero padding."""
    pn = h_BCl.shape[-1]
    if pn == L:
        return h_BCl
    if mode == 'fft':
        X = torch.fft.rfft(h_BCl.float(), dim=-1)
        if pn % 2 == 0 and pn > 1:  # the Nyquist bin of an even length is shared by +/- frequencies
            X = torch.cat([X[..., :-1], X[..., -1:] * 0.5], dim=-1)
        return torch.fft.irfft(X, n=L, dim=-1) * (L / pn)
    # port: PyTorch has no 1D bicubic mode; linear interpolation along time replaces upstream's bicubic.
    return F.interpolate(h_BCl, size=L, mode='linear', align_corners=False)


class Phi(nn.Conv1d):
    """Residual-blended Conv1d k3: Phi(h) = (1 - r) h + r conv(h). (B, C, L) -> (B, C, L)."""

    def __init__(self, embed_dim: int, quant_resi: float):
        ks = 3
        super().__init__(in_channels=embed_dim, out_channels=embed_dim, kernel_size=ks, stride=1, padding=ks // 2)
        self.resi_ratio = abs(quant_resi)

    def forward(self, h_BCl: torch.Tensor) -> torch.Tensor:
        return h_BCl.mul(1 - self.resi_ratio) + super().forward(h_BCl).mul_(self.resi_ratio)


class PhiShared(nn.Module):
    """One Phi for every scale (``share_quant_resi == 1``)."""

    def __init__(self, qresi: nn.Module):
        super().__init__()
        self.qresi = qresi

    def __getitem__(self, _: float) -> nn.Module:
        return self.qresi


def _ticks(K: int) -> np.ndarray:
    return np.linspace(1 / 3 / K, 1 - 1 / 3 / K, K) if K == 4 else np.linspace(1 / 2 / K, 1 - 1 / 2 / K, K)


class PhiPartiallyShared(nn.Module):
    """K Phis shared among scales; scale si takes the Phi whose tick is nearest to si / (SN - 1)."""

    def __init__(self, qresi_ls: nn.ModuleList):
        super().__init__()
        self.qresi_ls = qresi_ls
        self.ticks = _ticks(len(qresi_ls))

    def __getitem__(self, at_from_0_to_1: float) -> nn.Module:
        return self.qresi_ls[int(np.argmin(np.abs(self.ticks - at_from_0_to_1)))]

    def extra_repr(self) -> str:
        return f'ticks={self.ticks}'


class PhiNonShared(nn.ModuleList):
    """One Phi per scale, selected by the same tick rule over K = SN entries."""

    def __init__(self, qresi: List[nn.Module]):
        super().__init__(qresi)
        self.ticks = _ticks(len(qresi))

    def __getitem__(self, at_from_0_to_1: float) -> nn.Module:  # type: ignore[override]
        return super().__getitem__(int(np.argmin(np.abs(self.ticks - at_from_0_to_1))))

    def extra_repr(self) -> str:
        return f'ticks={self.ticks}'


class VectorQuantizer2(nn.Module):
    """Multi-scale residual VQ over 1D latents with G product-quantised tokens per position.

    Parameters
    ----------
    vocab_size : int
        V, rows of each codebook.
    Cvae : int
        Latent channels; divisible by ``tokens_per_pos``.
    using_znorm : bool
        Cosine (normalised) nearest-code lookup instead of squared Euclidean.
    beta : float
        Commitment weight.
    default_qresi_counts : int
        Number of Phis for ``share_quant_resi == 0`` (0 = one per scale).
    v_patch_nums : sequence of int
        Per-scale lengths, strictly increasing, the last equal to the latent length L.
    quant_resi : float
        Phi blend ratio r (|r| <= 1e-6 gives identity).
    share_quant_resi : int
        0 non-shared, 1 shared, K >= 2 partially shared Phis.
    tokens_per_pos : int
        G tokens per latent position (1 = upstream).
    per_scale_codebook : bool
        Each scale owns its G codebooks (port: lets each scale keep its codebook in use).
    resample : {'linear', 'fft'}
        Down/up-sampling between scales: area pooling + linear interpolation, or band-limited FFT.
    """

    def __init__(self, vocab_size: int, Cvae: int, using_znorm: bool, beta: float = 0.25,
                 default_qresi_counts: int = 0, v_patch_nums: Optional[Sequence[int]] = None,
                 quant_resi: float = 0.5, share_quant_resi: int = 4, tokens_per_pos: int = 1,
                 per_scale_codebook: bool = False, resample: str = 'linear'):
        super().__init__()
        if v_patch_nums is None:
            raise ValueError('VectorQuantizer2 needs v_patch_nums (the 1D scale layout)')
        if Cvae % tokens_per_pos != 0:
            raise ValueError(f'Cvae={Cvae} is not divisible by tokens_per_pos={tokens_per_pos}')
        if resample not in ('linear', 'fft'):
            raise ValueError(f"resample={resample!r}; expected 'linear' or 'fft'")
        self.vocab_size, self.Cvae, self.using_znorm = int(vocab_size), int(Cvae), bool(using_znorm)
        self.v_patch_nums = tuple(int(p) for p in v_patch_nums)
        self.tokens_per_pos = int(tokens_per_pos)
        self.group_dim = self.Cvae // self.tokens_per_pos
        self.per_scale_codebook = bool(per_scale_codebook)
        self.resample = resample
        SN = len(self.v_patch_nums)
        self.n_books = SN if self.per_scale_codebook else 1

        self.quant_resi_ratio = quant_resi
        if share_quant_resi == 0:
            self.quant_resi = PhiNonShared([(Phi(Cvae, quant_resi) if abs(quant_resi) > 1e-6 else nn.Identity())
                                            for _ in range(default_qresi_counts or SN)])
        elif share_quant_resi == 1:
            self.quant_resi = PhiShared(Phi(Cvae, quant_resi) if abs(quant_resi) > 1e-6 else nn.Identity())
        else:
            self.quant_resi = PhiPartiallyShared(nn.ModuleList([(Phi(Cvae, quant_resi) if abs(quant_resi) > 1e-6
                                                                 else nn.Identity()) for _ in range(share_quant_resi)]))

        # port: rows (book, group, code) flattened into one table: row = (book * G + g) * V + idx.
        self.embedding = nn.Embedding(self.n_books * self.tokens_per_pos * self.vocab_size, self.group_dim)
        nn.init.normal_(self.embedding.weight, std=0.02)
        self.register_buffer('ema_vocab_hit_SV', torch.zeros(SN, self.tokens_per_pos * self.vocab_size))
        self.record_hit = 0
        self.beta = beta
        self.prog_si = -1
        # Residual samples of the last training batch per scale, used to re-seed dead codes (not saved).
        self._last_rest: List[Optional[torch.Tensor]] = [None] * SN

    def eini(self, eini: float) -> None:
        if eini > 0:
            nn.init.trunc_normal_(self.embedding.weight.data, std=eini)
        elif eini < 0:
            self.embedding.weight.data.uniform_(-abs(eini) / self.vocab_size, abs(eini) / self.vocab_size)

    def extra_repr(self) -> str:
        return (f'{self.v_patch_nums}, znorm={self.using_znorm}, beta={self.beta} | S={len(self.v_patch_nums)}, '
                f'quant_resi={self.quant_resi_ratio}, G={self.tokens_per_pos}, per_scale_codebook={self.per_scale_codebook}, '
                f'resample={self.resample}')

    # ----------------------------------------------------------------------------------------------
    # codebook helpers
    def _book(self, si: int) -> int:
        return si if self.per_scale_codebook else 0

    def codebook_GVd(self, si: int) -> torch.Tensor:
        """Scale si's G codebooks, shape (G, V, d)."""
        G, V = self.tokens_per_pos, self.vocab_size
        b = self._book(si)
        return self.embedding.weight[b * G * V:(b + 1) * G * V].view(G, V, self.group_dim)

    def _lookup(self, si: int, rest_BCl: torch.Tensor) -> torch.Tensor:
        """Nearest code per (position, group): (B, Cvae, pn) -> idx (B, pn, G) long."""
        B, C, pn = rest_BCl.shape
        G, d = self.tokens_per_pos, self.group_dim
        z_GNd = rest_BCl.permute(0, 2, 1).reshape(B * pn, G, d).float().transpose(0, 1)
        E_GVd = self.codebook_GVd(si).detach().float()
        if self.using_znorm:
            sim_GNV = torch.bmm(F.normalize(z_GNd, dim=-1), F.normalize(E_GVd, dim=-1).transpose(1, 2))
            idx_NG = sim_GNV.argmax(dim=-1).transpose(0, 1)
        else:
            # argmin ||z - e||^2 = argmin (||e||^2 - 2 z.e): ||z||^2 is constant per row; one fused baddbmm
            d_GNV = torch.baddbmm(E_GVd.square().sum(-1).unsqueeze(1), z_GNd, E_GVd.transpose(1, 2), alpha=-2.0)
            idx_NG = d_GNV.argmin(dim=-1).transpose(0, 1)
        return idx_NG.reshape(B, pn, G)

    def _embed_BlG(self, si: int, idx_BlG: torch.Tensor) -> torch.Tensor:
        """Dequantise idx (B, pn, G) -> h (B, Cvae, pn), combining the G groups."""
        B, pn, G = idx_BlG.shape
        offs_G = (self._book(si) * G + torch.arange(G, device=idx_BlG.device)) * self.vocab_size
        h_BlGd = self.embedding(idx_BlG + offs_G)
        return h_BlGd.reshape(B, pn, self.Cvae).permute(0, 2, 1)

    # ----------------------------------------------------------------------------------------------
    # ===================== `forward` is only used in VAE training =====================
    def forward(self, f_BCl: torch.Tensor, ret_usages: bool = False, ret_all_fhat: bool = False):
        """Quantize a latent, scale by scale (training and evaluation of the tokenizer).

        Parameters
        ----------
        f_BCl : Tensor, shape (B, Cvae, L), model units
        ret_usages : bool
            Also return the per-scale codebook usage (%).
        ret_all_fhat : bool
            Return the list of cumulative f_hat after every scale instead of only the last one.

        Returns
        -------
        f_hat : Tensor (B, Cvae, L), or list of SN of them when ``ret_all_fhat``
            Straight-through: value of the quantised latent; gradients reach the encoder (identity) and,
            port: also the codebook and Phi through the decoder loss (value f_hat + f - stopgrad(f)).
        usages : list of float or None
        vq_loss : Tensor, scalar
        """
        dtype = f_BCl.dtype
        if dtype != torch.float32:
            f_BCl = f_BCl.float()
        B, C, L = f_BCl.shape
        f_no_grad = f_BCl.detach()
        f_rest = f_no_grad.clone()
        f_hat = torch.zeros_like(f_rest)
        G, V = self.tokens_per_pos, self.vocab_size
        mean_vq_loss: torch.Tensor = 0.0  # type: ignore[assignment]
        outs: List[torch.Tensor] = []
        SN = len(self.v_patch_nums)
        do_dist = self.training and tdist.is_available() and tdist.is_initialized()
        for si, pn in enumerate(self.v_patch_nums):
            rest_BCl = area_down(f_rest, pn, self.resample) if si != SN - 1 else f_rest
            if self.training:
                self._last_rest[si] = rest_BCl.detach()
            idx_BlG = self._lookup(si, rest_BCl)
            if self.training:
                hit_GV = torch.stack([idx_BlG[..., g].reshape(-1).bincount(minlength=V) for g in range(G)]).float()
                if do_dist:
                    tdist.all_reduce(hit_GV)
                hit_V = hit_GV.reshape(-1)
                # fix(upstream): the EMA warm-up counts batches, not scales (upstream's record_hit counted scales).
                if self.record_hit == 0:
                    self.ema_vocab_hit_SV[si].copy_(hit_V)
                elif self.record_hit < 100:
                    self.ema_vocab_hit_SV[si].mul_(0.9).add_(hit_V.mul(0.1))
                else:
                    self.ema_vocab_hit_SV[si].mul_(0.99).add_(hit_V.mul(0.01))
            h_BCl = self._embed_BlG(si, idx_BlG)
            h_BCl = up_to(h_BCl, L, self.resample) if si != SN - 1 else h_BCl
            h_BCl = self.quant_resi[si / (SN - 1) if SN > 1 else 0.0](h_BCl)
            f_hat = f_hat + h_BCl
            f_rest = f_rest - h_BCl.detach()
            mean_vq_loss = mean_vq_loss + F.mse_loss(f_hat.data, f_BCl).mul_(self.beta) + F.mse_loss(f_hat, f_no_grad)
            if ret_all_fhat:
                outs.append((f_hat + (f_BCl - f_no_grad)).to(dtype))
        if self.training:
            self.record_hit += 1
        mean_vq_loss = mean_vq_loss * (1.0 / SN)
        f_hat_ste = (f_hat + (f_BCl - f_no_grad)).to(dtype)
        usages = self.usages(B) if ret_usages else None
        return (outs if ret_all_fhat else f_hat_ste), usages, mean_vq_loss

    # ===================== `forward` is only used in VAE training =====================

    def usages(self, batch_size: int) -> List[float]:
        """Per-scale % of codes whose EMA hit count reaches upstream's margin (0.08 x the uniform rate)."""
        ws = tdist.get_world_size() if (tdist.is_available() and tdist.is_initialized()) else 1
        # fix(upstream): upstream required a process group here; a single process counts as world size 1.
        out = []
        for si, pn in enumerate(self.v_patch_nums):
            margin = ws * batch_size * pn / self.vocab_size * 0.08
            out.append(float((self.ema_vocab_hit_SV[si] >= margin).float().mean().item() * 100))
        return out

    @torch.no_grad()
    def reseed_dead_codes_(self, batch_size: int, generator: Optional[torch.Generator] = None,
                           margin_ratio: float = 0.08) -> List[int]:
        """Re-seed codes below the usage margin with residual vectors of the last training batch.

        A code is dead when its EMA hit count is below ``margin_ratio`` x the count every code would
        get under uniform use (upstream's usage margin is 0.08).

        Runs on every rank; with a process group rank 0's codebook is broadcast afterwards so all
        ranks stay identical. Returns the number of re-seeded codes per scale (or per book).
        """
        G, V, d = self.tokens_per_pos, self.vocab_size, self.group_dim
        ws = tdist.get_world_size() if (tdist.is_available() and tdist.is_initialized()) else 1
        counts = []
        W = self.embedding.weight.data
        scales = range(len(self.v_patch_nums))
        for si in scales:
            rest = self._last_rest[si]
            if rest is None:
                counts.append(0)
                continue
            if not self.per_scale_codebook and si != len(self.v_patch_nums) - 1:
                continue  # shared codebook: judged once, on the summed hits of all scales
            if self.per_scale_codebook:
                hits_GV = self.ema_vocab_hit_SV[si].view(G, V)
                margin = ws * batch_size * self.v_patch_nums[si] / V * margin_ratio
                rests = [rest]
            else:
                hits_GV = self.ema_vocab_hit_SV.sum(0).view(G, V)
                margin = ws * batch_size * sum(self.v_patch_nums) / V * margin_ratio
                rests = [r for r in self._last_rest if r is not None]
            z_NGd = torch.cat([r.permute(0, 2, 1).reshape(-1, G, d) for r in rests], dim=0)
            n = 0
            b = self._book(si)
            for g in range(G):
                dead = (hits_GV[g] < margin).nonzero().flatten()
                if dead.numel() == 0:
                    continue
                pick = torch.randint(0, z_NGd.shape[0], (dead.numel(),), generator=generator, device='cpu').to(z_NGd.device)
                W[(b * G + g) * V + dead] = z_NGd[pick, g].to(W.dtype)
                for s2 in ([si] if self.per_scale_codebook else scales):
                    self.ema_vocab_hit_SV[s2].view(G, V)[g, dead] = margin * 2 / (1 if self.per_scale_codebook else len(self.v_patch_nums))
                n += int(dead.numel())
            counts.append(n)
        if tdist.is_available() and tdist.is_initialized():
            tdist.broadcast(W, src=0)
            tdist.broadcast(self.ema_vocab_hit_SV, src=0)
        return counts

    @torch.no_grad()
    def init_codebook_from_(self, f_BCl: torch.Tensor, generator: Optional[torch.Generator] = None,
                            reseed: bool = True, lloyd_iters: int = 0) -> None:
        """Fit the codebooks to one batch of latents, scale by scale along the residual (broadcast from rank 0).

        Each scale's codebooks are seeded with residual vectors of the batch (``reseed``; else the current
        codes are the start), then refined by ``lloyd_iters`` k-means (Lloyd) steps on that scale's residuals:
        every code moves to the mean of the vectors it wins, and a code that wins none takes the worst-coded
        vector. A shared codebook is fitted on the first scale's residuals.

        Parameters
        ----------
        f_BCl : Tensor, shape (B, Cvae, L), model units
        generator : torch.Generator | None
            For the seeding draws.
        reseed : bool
        lloyd_iters : int
        """
        was = self.training
        self.train()
        G, V, d = self.tokens_per_pos, self.vocab_size, self.group_dim
        W = self.embedding.weight.data
        f_rest = f_BCl.detach().float().clone()
        L = f_rest.shape[-1]
        SN = len(self.v_patch_nums)
        for si, pn in enumerate(self.v_patch_nums):
            rest_BCl = area_down(f_rest, pn, self.resample) if si != SN - 1 else f_rest
            if self.per_scale_codebook or si == 0:
                z_NGd = rest_BCl.permute(0, 2, 1).reshape(-1, G, d)
                b = self._book(si)
                for g in range(G):
                    if reseed:
                        pick = torch.randint(0, z_NGd.shape[0], (V,), generator=generator)
                        W[(b * G + g) * V:(b * G + g + 1) * V] = z_NGd[pick.to(z_NGd.device), g] \
                            + 0.01 * z_NGd[:, g].std() * torch.randn(V, d, generator=generator).to(z_NGd.device)
                for _ in range(lloyd_iters):
                    idx_NG = self._lookup_chunked(si, rest_BCl).reshape(-1, G)
                    for g in range(G):
                        E = W[(b * G + g) * V:(b * G + g + 1) * V]
                        z, a = z_NGd[:, g], idx_NG[:, g]
                        cnt = torch.bincount(a, minlength=V).to(z.dtype)
                        live = cnt > 0
                        E[live] = (torch.zeros_like(E, dtype=z.dtype).index_add_(0, a, z)[live] / cnt[live, None]).to(E.dtype)
                        if not live.all():
                            err = (z - E[a].to(z.dtype)).square().sum(dim=1)
                            E[~live] = z[err.topk(min(int((~live).sum()), len(z))).indices].to(E.dtype)
            idx_BlG = self._lookup_chunked(si, rest_BCl)
            h_BCl = self._embed_BlG(si, idx_BlG)
            h_BCl = up_to(h_BCl, L, self.resample) if si != SN - 1 else h_BCl
            f_rest = f_rest - self.quant_resi[si / (SN - 1) if SN > 1 else 0.0](h_BCl)
        if tdist.is_available() and tdist.is_initialized():
            tdist.broadcast(W, src=0)
        self.train(was)

    def _lookup_chunked(self, si: int, rest_BCl: torch.Tensor, max_rows: int = 65536) -> torch.Tensor:
        """:meth:`_lookup` over slices of the batch, so that a large fitting set never builds one huge distance table."""
        per = max(1, max_rows // max(1, rest_BCl.shape[-1]))
        return torch.cat([self._lookup(si, rest_BCl[i:i + per]) for i in range(0, rest_BCl.shape[0], per)])

    # ----------------------------------------------------------------------------------------------
    def embed_idx(self, si: int, idx_Bl: torch.Tensor) -> torch.Tensor:
        """Dequantised embedding of scale si's tokens, before upsampling and Phi.

        Parameters
        ----------
        si : int
        idx_Bl : LongTensor, shape (B, pn * G), position-major

        Returns
        -------
        h_BCl : Tensor, shape (B, Cvae, pn)
        """
        B = idx_Bl.shape[0]
        return self._embed_BlG(si, idx_Bl.reshape(B, -1, self.tokens_per_pos))

    def embed_to_fhat(self, ms_h_BCl: List[torch.Tensor], all_to_max_scale: bool = True,
                      last_one: bool = False) -> List[torch.Tensor] | torch.Tensor:
        """Sum per-scale embeddings (B, Cvae, pn_si) into cumulative f_hat (B, Cvae, L).

        Returns the list of cumulative f_hat clones, or only the final one if ``last_one``.
        """
        ls_f_hat_BCl = []
        B = ms_h_BCl[0].shape[0]
        L = self.v_patch_nums[-1]
        SN = len(self.v_patch_nums)
        if all_to_max_scale:
            f_hat = ms_h_BCl[0].new_zeros(B, self.Cvae, L, dtype=torch.float32)
            for si in range(len(ms_h_BCl)):
                h_BCl = ms_h_BCl[si]
                if si < SN - 1:
                    h_BCl = up_to(h_BCl.float(), L, self.resample)
                h_BCl = self.quant_resi[si / (SN - 1) if SN > 1 else 0.0](h_BCl.float())
                f_hat = f_hat + h_BCl
                if last_one:
                    ls_f_hat_BCl = f_hat
                else:
                    ls_f_hat_BCl.append(f_hat.clone())
        else:
            # Experimental in upstream (not used in training or inference): accumulate at native scale sizes.
            f_hat = ms_h_BCl[0].new_zeros(B, self.Cvae, self.v_patch_nums[0], dtype=torch.float32)
            for si, pn in enumerate(self.v_patch_nums[:len(ms_h_BCl)]):
                f_hat = up_to(f_hat, pn, self.resample)
                h_BCl = self.quant_resi[si / (SN - 1) if SN > 1 else 0.0](ms_h_BCl[si].float())
                f_hat = f_hat + h_BCl
                if last_one:
                    ls_f_hat_BCl = f_hat
                else:
                    ls_f_hat_BCl.append(f_hat.clone())
        return ls_f_hat_BCl

    @torch.no_grad()
    def f_to_idxBl_or_fhat(self, f_BCl: torch.Tensor, to_fhat: bool,
                           v_patch_nums: Optional[Sequence[int]] = None) -> List[torch.Tensor]:
        """Quantize a latent without loss or usage tracking.

        Parameters
        ----------
        f_BCl : Tensor, shape (B, Cvae, L)
        to_fhat : bool
            Return cumulative f_hat clones (B, Cvae, L) per scale instead of token maps (B, pn * G).
        v_patch_nums : sequence of int, optional
            Override schedule; must end at L and have as many scales as the model (Phi/codebook choice).
        """
        B, C, L = f_BCl.shape
        f_no_grad = f_BCl.detach().float()
        f_rest = f_no_grad.clone()
        f_hat = torch.zeros_like(f_rest)
        f_hat_or_idx_Bl: List[torch.Tensor] = []
        patch_nums = tuple(v_patch_nums) if v_patch_nums is not None else self.v_patch_nums
        if patch_nums[-1] != L:
            raise ValueError(f'v_patch_nums[-1]={patch_nums[-1]} must equal the latent length L={L}')
        SN = len(patch_nums)
        for si, pn in enumerate(patch_nums):
            if 0 <= self.prog_si < si:
                break  # progressive training: only scales <= prog_si
            rest_BCl = area_down(f_rest, pn, self.resample) if si != SN - 1 else f_rest
            idx_BlG = self._lookup(si, rest_BCl)
            h_BCl = self._embed_BlG(si, idx_BlG)
            h_BCl = up_to(h_BCl, L, self.resample) if si != SN - 1 else h_BCl
            h_BCl = self.quant_resi[si / (SN - 1) if SN > 1 else 0.0](h_BCl)
            f_hat.add_(h_BCl)
            f_rest.sub_(h_BCl)
            f_hat_or_idx_Bl.append(f_hat.clone() if to_fhat else idx_BlG.reshape(B, pn * self.tokens_per_pos))
        return f_hat_or_idx_Bl

    # ===================== idxBl_to_var_input: only used in VAR training, for getting teacher-forcing input =====================
    def idxBl_to_var_input(self, gt_ms_idx_Bl: List[torch.Tensor]) -> Optional[torch.Tensor]:
        """Teacher-forcing input of the VAR transformer.

        Parameters
        ----------
        gt_ms_idx_Bl : list of LongTensor, each (B, pn_si * G)

        Returns
        -------
        Tensor, shape (B, sum(pn) - pn[0], Cvae), float32, or None when nothing is produced
            For scale k >= 1: the cumulative f_hat after scales < k, area-downsampled to pn_k, tokens-last.
        """
        next_scales = []
        B = gt_ms_idx_Bl[0].shape[0]
        C, L = self.Cvae, self.v_patch_nums[-1]
        SN = len(self.v_patch_nums)
        f_hat = gt_ms_idx_Bl[0].new_zeros(B, C, L, dtype=torch.float32)
        pn_next = self.v_patch_nums[0]
        for si in range(SN - 1):
            if self.prog_si == 0 or (0 <= self.prog_si - 1 < si):
                break  # progressive training: not supported in VAR; kept as upstream
            h_BCl = up_to(self.embed_idx(si, gt_ms_idx_Bl[si]).float(), L, self.resample)
            f_hat.add_(self.quant_resi[si / (SN - 1)](h_BCl))
            pn_next = self.v_patch_nums[si + 1]
            next_scales.append(area_down(f_hat, pn_next, self.resample).transpose(1, 2))
        return torch.cat(next_scales, dim=1) if len(next_scales) else None

    # ===================== get_next_autoregressive_input: only used in VAR inference, for getting next step's input =====================
    def get_next_autoregressive_input(self, si: int, SN: int, f_hat: torch.Tensor,
                                      h_BCl: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Add scale si's embedding (B, Cvae, pn_si) to f_hat (B, Cvae, L) in place.

        Returns (f_hat, next_BCl) with next_BCl = f_hat area-downsampled to pn_{si+1}, or f_hat itself at
        the last scale.
        """
        L = self.v_patch_nums[-1]
        if si != SN - 1:
            h = self.quant_resi[si / (SN - 1)](up_to(h_BCl.float(), L, self.resample))
            f_hat.add_(h)
            return f_hat, area_down(f_hat, self.v_patch_nums[si + 1], self.resample)
        h = self.quant_resi[si / (SN - 1) if SN > 1 else 0.0](h_BCl.float())
        f_hat.add_(h)
        return f_hat, f_hat
