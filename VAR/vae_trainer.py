"""``VAETrainer``: one training step, validation and checkpoint state of the band tokenizer.

The tokenizer's counterpart of upstream's ``trainer.py`` (``train_step``, ``eval_ep``, ``state_dict``,
``get_config``). Windows arrive in µV as cumulative stages ``stages_BKCT`` and are divided by the
dataset scale ``uv_scale`` (µV per model unit). Loss = Σ_k w_k NMSE(decode(f_hat_≤k), x_≤k)
+ spec_w · multi-resolution log-spectral loss (full stage) + psd_w · Σ_k sub-band power loss(decode_≤k, x_≤k)
+ corr_w · per-band channel-correlation loss (full stage) + vq_w · quantizer loss; optionally (``disc_w`` or
``fm_w`` > 0, from global iteration ``disc_start_it``) + disc_w · hinge adversarial loss + fm_w · feature matching
of a waveform discriminator (``models/eeg_discriminator.py``) on the full decode, trained in the same step.

Shape letters: B batch, K stages, C electrodes, T samples, S scales, V codebook size.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Dict, Sequence

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

import dist
from models.band_losses import (SNRAccumulator, band_bins, band_corr_loss, band_power_loss, log_spectral_loss,
                                stage_recon_loss)
from models.eeg_discriminator import (WaveDiscriminator, discriminator_hinge_loss, feature_matching_loss,
                                      generator_hinge_loss)
from models.vqvae import VQVAE
from utils.amp_sc import AmpOptimizer
from utils.misc import MetricLogger, TensorboardLogger

logger = logging.getLogger(__name__)

__all__ = ['VAETrainer']


class VAETrainer:
    """Owns the tokenizer (with and without DDP), its optimizer and the loss configuration.

    Parameters
    ----------
    device : torch.device or str
    vae_wo_ddp : VQVAE
        The model (train mode, trainable).
    vae : VQVAE or DDP
        The same model, wrapped in DDP when training with several processes.
    vae_opt : AmpOptimizer
    stage_scale_idx : sequence of int
        Scale whose cumulative f_hat reconstructs stage k.
    stage_weights : sequence of float
        w_k of the per-stage reconstruction loss.
    uv_scale : float
        µV per model unit.
    spec_w, vq_w : float
        Weights of the log-spectral and quantizer losses.
    reseed_every : int
        Re-seed dead codes every N optimizer steps (0 = never).
    reseed_margin : float
        A code is dead below this fraction of the uniform usage rate (upstream's margin: 0.08).
    psd_w : float
        Weight of the sub-band power loss on every partial decode (mean over stages).
    stage_edges : sequence of K lists of (lo, hi) rFFT bins
        Sub-bands of each stage's frequency range (``band_losses.subband_edges``); needed when psd_w > 0.
    corr_w : float
        Weight of the per-window, per-band channel-correlation loss on the full-spectrum decode.
    band_F : sequence of int
        Band index per rFFT bin of a window (-1 outside every band); needed when corr_w > 0.
    seed : int
        Seed of the re-seeding generator (mixed with the global iteration, so resume is exact).
    disc : WaveDiscriminator or None
        The discriminator (train mode); needed when ``disc_w`` or ``fm_w`` > 0.
    disc_ddp : WaveDiscriminator or DDP or None
        The same, wrapped in DDP with several processes (its own training step goes through it).
    disc_opt : AmpOptimizer or None
    disc_w, fm_w : float
        Weights of the adversarial and feature-matching terms in the tokenizer's loss.
    disc_start_it : int
        Global iteration from which the discriminator trains and its terms join the loss.
    """

    def __init__(self, device: torch.device | str, vae_wo_ddp: VQVAE, vae: VQVAE | DDP, vae_opt: AmpOptimizer,
                 stage_scale_idx: Sequence[int], stage_weights: Sequence[float], uv_scale: float,
                 spec_w: float = 0.05, vq_w: float = 1.0, reseed_every: int = 25, seed: int = 0,
                 reseed_margin: float = 0.08, psd_w: float = 0.0,
                 stage_edges: Sequence[Sequence[tuple[int, int]]] = (), corr_w: float = 0.0,
                 band_F: Sequence[int] = (), disc: WaveDiscriminator | None = None,
                 disc_ddp: WaveDiscriminator | DDP | None = None, disc_opt: AmpOptimizer | None = None,
                 disc_w: float = 0.0, fm_w: float = 0.0, disc_start_it: int = 0):
        self.device = torch.device(device)
        self.vae_wo_ddp, self.vae, self.vae_opt = vae_wo_ddp, vae, vae_opt
        self.stage_scale_idx = [int(s) for s in stage_scale_idx]
        self.stage_weights = [float(w) for w in stage_weights]
        self.uv_scale = float(uv_scale)
        self.spec_w, self.vq_w = float(spec_w), float(vq_w)
        self.reseed_every, self.seed = int(reseed_every), int(seed)
        self.reseed_margin = float(reseed_margin)
        self.psd_w = float(psd_w)
        self.stage_edges = [[(int(lo), int(hi)) for lo, hi in e] for e in stage_edges]
        if self.psd_w > 0 and len(self.stage_edges) != len(self.stage_scale_idx):
            raise ValueError(f'psd_w > 0 needs sub-band edges for each of the {len(self.stage_scale_idx)} stages')
        self.corr_w = float(corr_w)
        self.band_bins = band_bins(list(band_F), self.device)  # once per run: the loss gathers them every step
        if self.corr_w > 0 and not self.band_bins:
            raise ValueError('corr_w > 0 needs a band index per rFFT bin (band_F)')
        self.n_reseeded = 0
        self.disc_w, self.fm_w, self.disc_start_it = float(disc_w), float(fm_w), int(disc_start_it)
        if (self.disc_w > 0 or self.fm_w > 0) and (disc is None or disc_opt is None):
            raise ValueError('disc_w or fm_w > 0 needs a discriminator and its optimizer')
        self.disc, self.disc_opt = disc, disc_opt
        self.disc_ddp = disc_ddp if disc_ddp is not None else disc

    def adversarial_at(self, g_it: int) -> bool:
        """Whether the discriminator trains and its terms are in the loss at global iteration ``g_it``."""
        return self.disc is not None and (self.disc_w > 0 or self.fm_w > 0) and g_it >= self.disc_start_it

    def to_model_units(self, stages_BKCT: torch.Tensor) -> torch.Tensor:
        return stages_BKCT.to(self.device, non_blocking=True).float() / self.uv_scale

    def compute_loss(self, stages_BKCT: torch.Tensor, adversarial: bool = False) -> tuple[torch.Tensor, Dict[str, Any]]:
        """Loss on one batch (µV in); returns (loss, parts) with detached per-stage NMSE and, with ``adversarial``,
        the detached full decode and its input (``fake``, ``real``, model units) for the discriminator's step."""
        x_BKCT = self.to_model_units(stages_BKCT)
        with self.vae_opt.amp_ctx:
            recs_S, _, vq_loss = self.vae(x_BKCT[:, -1], ret_usages=False, ret_all=True)
        recs_K = [recs_S[s].float() for s in self.stage_scale_idx]
        rec_loss, nmse_K = stage_recon_loss(recs_K, x_BKCT, self.stage_weights)
        # the log-spectral loss is applied to the full-spectrum stage only (it costs more than the decoder)
        spec = log_spectral_loss(recs_K[-1], x_BKCT[:, -1]) if self.spec_w > 0 else rec_loss.new_zeros(())
        # every partial decode keeps its stage's sub-band powers (squared error alone shrinks the unpredictable part)
        psd = (torch.stack([band_power_loss(r, x_BKCT[:, k], self.stage_edges[k]) for k, r in enumerate(recs_K)]).mean()
               if self.psd_w > 0 else rec_loss.new_zeros(()))
        # each window keeps its own spatial pattern (squared error pulls it toward the average one)
        corr = (band_corr_loss(recs_K[-1], x_BKCT[:, -1], self.band_bins) if self.corr_w > 0
                else rec_loss.new_zeros(()))
        loss = rec_loss + self.spec_w * spec + self.psd_w * psd + self.corr_w * corr + self.vq_w * vq_loss
        adv = fm = rec_loss.new_zeros(())
        extra = {}
        if adversarial:
            disc = self.disc
            disc.requires_grad_(False)  # the tokenizer's step moves only the tokenizer
            with self.vae_opt.amp_ctx:
                with torch.no_grad():
                    _, real_feats = disc(x_BKCT[:, -1])
                fake_logits, fake_feats = disc(recs_K[-1])
            disc.requires_grad_(True)
            adv = generator_hinge_loss([lo.float() for lo in fake_logits])
            fm = feature_matching_loss([f.float() for f in real_feats], [f.float() for f in fake_feats])
            loss = loss + self.disc_w * adv + self.fm_w * fm
            extra = dict(fake=recs_K[-1].detach(), real=x_BKCT[:, -1])
        return loss, dict(rec=rec_loss.detach(), spec=spec.detach(), psd=psd.detach(), corr=corr.detach(),
                          vq=vq_loss.detach(), adv=adv.detach(), fm=fm.detach(),
                          nmse_K=nmse_K, **extra)

    def disc_step(self, stepping: bool, real_BCT: torch.Tensor, fake_BCT: torch.Tensor) -> float:
        """One hinge-loss step of the discriminator on real windows and (detached) decodes; returns its loss."""
        self.disc_ddp.train()
        with self.disc_opt.amp_ctx:
            logits, _ = self.disc_ddp(torch.cat([real_BCT, fake_BCT.to(real_BCT.dtype)]))  # one pass for DDP
        B = real_BCT.shape[0]
        loss = discriminator_hinge_loss([lo[:B].float() for lo in logits], [lo[B:].float() for lo in logits])
        self.disc_opt.backward_clip_step(stepping=stepping, loss=loss)
        return float(loss.detach())

    def train_step(self, it: int, g_it: int, stepping: bool, metric_lg: MetricLogger, tb_lg: TensorboardLogger,
                   stages_BKCT: torch.Tensor) -> tuple[torch.Tensor | None, float | None]:
        """Forward, backward and (when ``stepping``) an optimizer step; dead-code re-seeding every N steps.

        Parameters
        ----------
        it, g_it : int
            Iteration in the epoch and global iteration.
        stepping : bool
            Whether this micro-step ends a gradient-accumulation cycle.
        stages_BKCT : Tensor, shape (B, K, C, T), µV

        Returns
        -------
        grad_norm, scale_log2
        """
        self.vae.train()
        adversarial = self.adversarial_at(g_it)
        loss, parts = self.compute_loss(stages_BKCT, adversarial=adversarial)
        grad_norm, scale_log2 = self.vae_opt.backward_clip_step(stepping=stepping, loss=loss)
        if adversarial:
            ld = self.disc_step(stepping, parts['real'], parts['fake'])
            metric_lg.update(Ladv=parts['adv'].item(), Lfm=parts['fm'].item(), Ldisc=ld)
        if stepping and self.reseed_every > 0 and (g_it + 1) % self.reseed_every == 0:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + g_it)
            counts = self.vae_wo_ddp.quantize.reseed_dead_codes_(batch_size=stages_BKCT.shape[0], generator=g,
                                                                 margin_ratio=self.reseed_margin)
            self.n_reseeded += sum(counts)
        snr_K = (-10 * torch.log10(parts['nmse_K'].clamp_min(1e-12))).tolist()
        metric_lg.update(Lrec=parts['rec'].item(), Lspec=parts['spec'].item(), Lpsd=parts['psd'].item(),
                         Lcorr=parts['corr'].item(), Lvq=parts['vq'].item(),
                         snr_full=snr_K[-1], snr_first=snr_K[0])
        if grad_norm is not None:
            metric_lg.update(tnm=float(grad_norm))
        if dist.is_master() and (g_it % 50 == 0 or it == 0):
            usages = self.vae_wo_ddp.quantize.usages(stages_BKCT.shape[0])
            tb_lg.update(head='train_loss', step=g_it, rec=parts['rec'].item(), spec=parts['spec'].item(),
                         corr=parts['corr'].item(), vq=parts['vq'].item())
            tb_lg.update(head='train_snr_db', step=g_it, **{f'stage{k}': v for k, v in enumerate(snr_K)})
            tb_lg.update(head='train_usage_pct', step=g_it, **{f'scale{si}': u for si, u in enumerate(usages)})
        return grad_norm, scale_log2

    @torch.no_grad()
    def eval_ep(self, ld_val) -> Dict[str, Any]:
        """Pooled per-stage SNR (dB) of the decodes (``snr_db``) and of the decoder alone without the band mix
        (``snr_db_plain``), and per-scale codebook usage on a validation loader (all ranks).

        Usage here is the % of codes hit at least once, divided by the most the loader could hit
        (min(V, windows x pn) per group), so short validation sets are not penalised.
        """
        t0 = time.time()
        was = self.vae_wo_ddp.training
        self.vae_wo_ddp.eval()
        q = self.vae_wo_ddp.quantize
        SN, G, V = len(q.v_patch_nums), q.tokens_per_pos, q.vocab_size
        acc = SNRAccumulator(len(self.stage_scale_idx))
        acc_plain = SNRAccumulator(len(self.stage_scale_idx))  # the decoder alone, without the band mix
        hits_SGV = torch.zeros(SN, G, V, dtype=torch.float64)
        n = torch.zeros(1, dtype=torch.float64)
        for stages_BKCT, _ in ld_val:
            x_BKCT = self.to_model_units(stages_BKCT)
            f_BCl = self.vae_wo_ddp.encode_BCl(x_BKCT[:, -1])
            idx_S = q.f_to_idxBl_or_fhat(f_BCl, to_fhat=False)
            ms_h = [q.embed_idx(si, idx) for si, idx in enumerate(idx_S)]
            f_hats = q.embed_to_fhat(ms_h, all_to_max_scale=True, last_one=False)
            plain_K = [self.vae_wo_ddp.decode_plain(f_hats[s]) for s in self.stage_scale_idx]
            mix = self.vae_wo_ddp.mix
            acc.update(plain_K if mix is None else [mix(r) for r in plain_K], x_BKCT)
            acc_plain.update(plain_K, x_BKCT)
            for si, idx in enumerate(idx_S):
                idx_BlG = idx.reshape(idx.shape[0], -1, G)
                for g in range(G):
                    hits_SGV[si, g] += idx_BlG[..., g].reshape(-1).bincount(minlength=V).double().cpu()
            n += x_BKCT.shape[0]
        for t in (acc.sig_K, acc.err_K, acc_plain.sig_K, acc_plain.err_K, hits_SGV, n):
            dist.allreduce(t)
        self.vae_wo_ddp.train(was)
        used = (hits_SGV > 0).double().sum(-1).mean(-1)  # (S,) mean over groups
        possible = torch.tensor([min(V, int(n.item()) * pn) for pn in q.v_patch_nums], dtype=torch.float64)
        return dict(snr_db=acc.snr_db_K(), snr_db_plain=acc_plain.snr_db_K(), usage_pct=(used / possible * 100).tolist(),
                    n_windows=int(n.item()), seconds=time.time() - t0)

    # ----------------------------------------------------------------------------------------------
    def get_config(self) -> Dict[str, Any]:
        return dict(stage_scale_idx=self.stage_scale_idx, stage_weights=self.stage_weights, uv_scale=self.uv_scale,
                    spec_w=self.spec_w, vq_w=self.vq_w, reseed_every=self.reseed_every,
                    reseed_margin=self.reseed_margin, psd_w=self.psd_w,
                    corr_w=self.corr_w, disc_w=self.disc_w, fm_w=self.fm_w, disc_start_it=self.disc_start_it)

    def state_dict(self) -> Dict[str, Any]:
        state = dict(vae_wo_ddp=self.vae_wo_ddp.state_dict(), vae_opt=self.vae_opt.state_dict(),
                     record_hit=int(self.vae_wo_ddp.quantize.record_hit), n_reseeded=int(self.n_reseeded),
                     config=self.get_config())
        if self.disc is not None:
            state.update(disc=self.disc.state_dict(), disc_opt=self.disc_opt.state_dict())
        return state

    def load_state_dict(self, state: Dict[str, Any], strict: bool = True) -> None:
        self.vae_wo_ddp.load_state_dict(state['vae_wo_ddp'], strict=strict)
        self.vae_opt.load_state_dict(state['vae_opt'])
        self.vae_wo_ddp.quantize.record_hit = int(state.get('record_hit', 0))
        self.n_reseeded = int(state.get('n_reseeded', 0))
        if self.disc is not None and 'disc' in state:
            self.disc.load_state_dict(state['disc'])
            self.disc_opt.load_state_dict(state['disc_opt'])
        elif self.disc is not None:
            logger.warning('the checkpoint has no discriminator: it starts untrained')
