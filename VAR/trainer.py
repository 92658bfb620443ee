"""``VARTrainer``: one teacher-forced training step, validation, and the trainer's checkpoint state
(upstream ``trainer.py``).

Shape letters: B batch, C electrodes, T samples, L positions over all scales, G tokens per position,
V vocabulary size, Cvae latent channels.

Metrics are named per scale: extra coarse scales ``c0, c1, ...`` and band stages by band name
(``delta``, ``theta``, ...); "tail" is the last (full-spectrum) scale, "mean" all tokens.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

import dist
from models import VAR, VQVAE, VectorQuantizer2
from utils.amp_sc import AmpOptimizer
from utils.checkpoint import check_config
from utils.misc import MetricLogger, TensorboardLogger

logger = logging.getLogger(__name__)

# VAR config keys that define the architecture: a checkpoint that differs in one of them cannot be resumed
ARCH_KEYS = ("depth", "embed_dim", "num_heads", "num_classes", "shared_aln", "attn_l2_norm", "patch_nums",
             "tokens_per_pos", "vocab_size", "Cvae", "mlp_ratio", "intra_steps",
             "intra_nbr", "intra_ar", "intra_ar_fhat", "num_levels")
# values of config keys added after a checkpoint was written: what such a checkpoint's model did
LEGACY_CONFIG = {"intra_steps": 1, "intra_mix": 0.0, "intra_nbr": 0, "intra_ar": 0, "intra_ar_fhat": 0,
                 "num_levels": 0}


def with_legacy_defaults(config: dict[str, Any]) -> dict[str, Any]:
    """A saved VAR config with the keys it predates filled in (:data:`LEGACY_CONFIG`)."""
    return {**LEGACY_CONFIG, **config}


class NullDDP(nn.Module):
    """Stands in for DistributedDataParallel in a single process."""

    def __init__(self, module: nn.Module, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self.module = module
        self.require_backward_grad_sync = False

    def forward(self, *args: Any, **kwargs: Any):
        return self.module(*args, **kwargs)


class VARTrainer:
    """Trains VAR on the frozen tokenizer's token pyramids.

    Parameters
    ----------
    device : torch.device
    patch_nums : sequence of int
        Positions per scale.
    resos : sequence of int
        ``pn * patch_size`` per scale (kept for upstream parity).
    vae_local : VQVAE
        Frozen tokenizer.
    var_wo_ddp : VAR
        The model (unwrapped, possibly compiled).
    var : nn.Module
        DDP (or :class:`NullDDP`) wrapper of ``var_wo_ddp``.
    var_opt : AmpOptimizer
    label_smooth : float
    scale_names : sequence of str | None
        Metric name of each scale (default ``s0, s1, ...``).
    """

    def __init__(self, device: torch.device, patch_nums: Sequence[int], resos: Sequence[int], vae_local: VQVAE,
                 var_wo_ddp: VAR, var: nn.Module, var_opt: AmpOptimizer, label_smooth: float,
                 scale_names: Sequence[str] | None = None) -> None:
        self.var, self.vae_local, self.quantize_local = var, vae_local, vae_local.quantize
        self.quantize_local: VectorQuantizer2
        self.var_wo_ddp: VAR = var_wo_ddp
        self.var_opt = var_opt
        del self.var_wo_ddp.rng
        self.var_wo_ddp.rng = torch.Generator(device="cpu")
        self.label_smooth = label_smooth
        self.train_loss = nn.CrossEntropyLoss(label_smoothing=label_smooth, reduction="none")
        self.val_loss = nn.CrossEntropyLoss(label_smoothing=0.0, reduction="mean")
        self.G = var_wo_ddp.G
        self.L = sum(patch_nums)
        self.last_l = patch_nums[-1]
        self.loss_weight = torch.ones(1, self.L * self.G, device=device) / (self.L * self.G)
        self.patch_nums, self.resos = tuple(patch_nums), tuple(resos)
        self.scale_names = list(scale_names) if scale_names else [f"s{i}" for i in range(len(patch_nums))]
        # port: token slices of each scale, in tokens (positions * G)
        self.begin_ends = []
        cur = 0
        for pn in self.patch_nums:
            self.begin_ends.append((cur * self.G, (cur + pn) * self.G))
            cur += pn
        self.prog_it = 0
        self.last_prog_si = -1
        self.first_prog = True
        self.device = device

    # ------------------------------------------------------------------------------------------
    def _targets(self, inp_BCT: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor | None]:
        with torch.no_grad():
            gt_idx_Bl = self.vae_local.eeg_to_idxBl(inp_BCT)
            gt_BL = torch.cat(gt_idx_Bl, dim=1)
            if getattr(self.var_wo_ddp, "takes_tokens", False):  # the next-token baseline reads the tokens
                return gt_idx_Bl, gt_BL, gt_BL
            x_BLCv_wo_first_l = self.quantize_local.idxBl_to_var_input(gt_idx_Bl)
        return gt_idx_Bl, gt_BL, x_BLCv_wo_first_l

    def _content_args(self, gt_BL: torch.Tensor) -> tuple:
        """A VAR with steps or a left-to-right head inside a scale also reads the ground-truth tokens."""
        return (gt_BL,) if getattr(self.var_wo_ddp, "needs_gt_tokens", False) else ()

    def _level_kwargs(self, level_B: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """``level_B`` for the forward pass of a VAR with levels (none for the others)."""
        if level_B is None or getattr(self.var_wo_ddp, "num_levels", 0) == 0:
            return {}
        return {"level_B": level_B.to(self.device, non_blocking=True)}

    @torch.no_grad()
    def eval_ep(self, ld_val) -> dict[str, float]:
        """Mean cross-entropy (nats per token) and top-1 accuracy (%) over the val loader, in fp32.

        Returns
        -------
        dict
            ``L_mean, L_tail, acc_mean, acc_tail`` plus ``L_<scale>``/``acc_<scale>`` per scale,
            ``n`` (windows) and ``seconds``; all-reduced over ranks.
        """
        tot = 0
        SN = len(self.patch_nums)
        sums = torch.zeros(2 * SN + 4, dtype=torch.float64)
        stt = time.time()
        training = self.var_wo_ddp.training
        self.var_wo_ddp.eval()  # fix(upstream) §18.1: no condition dropout while validating (see VAR.forward)
        for inp_BCT, label_B, *level in ld_val:  # (windows, labels[, levels]) as FullSpectrumWindows yields
            B = label_B.shape[0]
            inp_BCT = inp_BCT.to(self.device, non_blocking=True)
            label_B = label_B.to(self.device, non_blocking=True)
            _, gt_BL, x_in = self._targets(inp_BCT)
            logits_BLV = self.var_wo_ddp(label_B, x_in, *self._content_args(gt_BL),
                                         **self._level_kwargs(level[0] if level else None))
            ce_BL = F.cross_entropy(logits_BLV.float().transpose(1, 2), gt_BL, reduction="none")
            acc_BL = (logits_BLV.argmax(dim=-1) == gt_BL).float()
            sums[0] += ce_BL.mean().item() * B
            sums[1] += ce_BL[:, -self.last_l * self.G:].mean().item() * B
            sums[2] += acc_BL.mean().item() * 100 * B
            sums[3] += acc_BL[:, -self.last_l * self.G:].mean().item() * 100 * B
            for si, (bg, ed) in enumerate(self.begin_ends):
                sums[4 + si] += ce_BL[:, bg:ed].mean().item() * B
                sums[4 + SN + si] += acc_BL[:, bg:ed].mean().item() * 100 * B
            tot += B
        self.var_wo_ddp.train(training)
        sums = torch.cat((sums, torch.tensor([float(tot)], dtype=torch.float64)))
        dist.allreduce(sums)
        n = max(sums[-1].item(), 1.0)
        sums = sums[:-1] / n
        out = {"L_mean": sums[0].item(), "L_tail": sums[1].item(), "acc_mean": sums[2].item(),
               "acc_tail": sums[3].item()}
        for si, name in enumerate(self.scale_names):
            out[f"L_{name}"] = sums[4 + si].item()
            out[f"acc_{name}"] = sums[4 + SN + si].item()
        out["n"] = int(n)
        out["seconds"] = time.time() - stt
        return out

    def train_step(self, it: int, g_it: int, stepping: bool, metric_lg: MetricLogger, tb_lg: TensorboardLogger,
                   inp_BCT: torch.Tensor, label_B: torch.LongTensor, prog_si: int,
                   prog_wp_it: float, level_B: torch.LongTensor | None = None
                   ) -> tuple[torch.Tensor | None, float | None, bool]:
        """One (micro-)step of teacher-forced next-scale prediction.

        Parameters
        ----------
        it, g_it : int
            Iteration in the epoch and global iteration.
        stepping : bool
            Whether the optimizer steps after this micro-step (gradient accumulation).
        inp_BCT : Tensor, shape (B, C, T), model units
        label_B : LongTensor, shape (B,)
        prog_si : int
            Progressive-training scale limit (-1 = all scales).
        prog_wp_it : float
            Warm-up iterations of a new progressive stage.
        level_B : LongTensor, shape (B,) | None
            Per-window levels, for a VAR with ``num_levels``.

        Returns
        -------
        grad_norm : Tensor | None
            Global grad norm before clipping (None on accumulation-only micro-steps).
        scale_log2 : float | None
            log2 of the fp16 loss scale.
        skipped : bool
            True if the loss or the gradients were not finite and no update happened.
        """
        # progressive training
        self.var_wo_ddp.prog_si = self.quantize_local.prog_si = prog_si
        if self.last_prog_si != prog_si:
            if self.last_prog_si != -1:
                self.first_prog = False
            self.last_prog_si = prog_si
            self.prog_it = 0
        self.prog_it += 1
        prog_wp = max(min(self.prog_it / max(prog_wp_it, 1e-9), 1), 0.01)
        if self.first_prog:
            prog_wp = 1
        if prog_si == len(self.patch_nums) - 1:
            prog_si = -1

        B = inp_BCT.shape[0]
        self.var.require_backward_grad_sync = stepping
        gt_idx_Bl, gt_BL, x_BLCv_wo_first_l = self._targets(inp_BCT)

        with self.var_opt.amp_ctx:
            logits_BLV = self.var(label_B, x_BLCv_wo_first_l, *self._content_args(gt_BL),
                                  **self._level_kwargs(level_B))
            ce_BL = self.train_loss(logits_BLV.float().transpose(1, 2), gt_BL[:, :logits_BLV.shape[1]])
            if prog_si >= 0:
                bg, ed = self.begin_ends[prog_si]
                lw = self.loss_weight[:, :ed].clone()
                lw[:, bg:ed] *= min(max(prog_wp, 0), 1)
            else:
                lw = self.loss_weight
            loss = ce_BL.mul(lw).sum(dim=-1).mean()

        # port: a non-finite loss on any rank skips the step on every rank (DDP needs all ranks to backward)
        bad = torch.tensor([0.0 if bool(torch.isfinite(loss)) else 1.0])
        dist.allreduce(bad, op="max")
        if bad.item() > 0:
            self.var_opt.skip_micro_step()
            grad_norm, scale_log2, skipped = None, None, True
        else:
            grad_norm, scale_log2 = self.var_opt.backward_clip_step(loss=loss, stepping=stepping)
            skipped = stepping and self.var_opt.last_step_skipped

        # logging
        if it == 0 or it in metric_lg.log_iters:
            with torch.no_grad():
                Lmean = self.val_loss(logits_BLV.detach().float().transpose(1, 2), gt_BL[:, :logits_BLV.shape[1]]).item()
                acc_mean = (logits_BLV.detach().argmax(dim=-1) == gt_BL[:, :logits_BLV.shape[1]]).float().mean().item() * 100
                if prog_si >= 0:
                    Ltail = acc_tail = -1.0
                else:
                    tail = slice(-self.last_l * self.G, None)
                    Ltail = self.val_loss(logits_BLV.detach()[:, tail].float().transpose(1, 2), gt_BL[:, tail]).item()
                    acc_tail = (logits_BLV.detach()[:, tail].argmax(dim=-1) == gt_BL[:, tail]).float().mean().item() * 100
            grad_norm_v = grad_norm.item() if grad_norm is not None else None  # fix(upstream) §18.2: None-safe
            metric_lg.update(Lm=Lmean, Lt=Ltail, Accm=acc_mean, Acct=acc_tail, tnm=grad_norm_v)
            if dist.is_master():
                scalars: dict[str, float] = {}
                with torch.no_grad():
                    pred_BL = logits_BLV.detach().argmax(dim=-1)
                    ce_d_BL = F.cross_entropy(logits_BLV.detach().float().transpose(1, 2), gt_BL[:, :logits_BLV.shape[1]],
                                              reduction="none")
                    for si, (bg, ed) in enumerate(self.begin_ends):
                        if ed > logits_BLV.shape[1]:
                            break
                        scalars[f"acc_{self.scale_names[si]}"] = (pred_BL[:, bg:ed] == gt_BL[:, bg:ed]).float().mean().item() * 100
                        scalars[f"L_{self.scale_names[si]}"] = ce_d_BL[:, bg:ed].mean().item()
                scalars.update(L_mean=Lmean, acc_mean=acc_mean)
                if prog_si < 0:
                    scalars.update(L_tail=Ltail, acc_tail=acc_tail)
                tb_lg.update(head="AR_iter_loss", step=g_it, **scalars)
                tb_lg.update(head="AR_iter_schedule", step=g_it, prog_si=prog_si, prog_wp=prog_wp)
        self.var_wo_ddp.prog_si = self.quantize_local.prog_si = -1
        return grad_norm, scale_log2, skipped

    # ------------------------------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        cfg = dict(self.var_wo_ddp.get_config())
        cfg.update(patch_nums=list(self.patch_nums), resos=list(self.resos), label_smooth=self.label_smooth,
                   tokens_per_pos=self.G, vocab_size=self.var_wo_ddp.V, Cvae=self.var_wo_ddp.Cvae,
                   prog_it=self.prog_it, last_prog_si=self.last_prog_si, first_prog=self.first_prog)
        return cfg

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"config": self.get_config()}
        for k in ("var_wo_ddp", "vae_local", "var_opt"):
            m = getattr(self, k)
            if m is not None:
                if hasattr(m, "_orig_mod"):
                    m = m._orig_mod
                state[k] = m.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any], strict: bool = True, skip_vae: bool = False,
                        path: str = "checkpoint") -> None:
        """Restore model, optimizer and progressive-training state.

        fix(upstream) §18.6: the config check runs only when a config is present, and the architecture
        check is always on (a mismatch raises :class:`~utils.errors.CheckpointError` naming both values).
        """
        config = state.get("config")
        if config is not None:
            config = with_legacy_defaults(config)
            check_config(config, self.get_config(), ARCH_KEYS, path,
                         fix="pass the same architecture flags (e.g. --depth) or choose a new --local_out_dir_path")
        for k in ("var_wo_ddp", "vae_local", "var_opt"):
            if skip_vae and "vae" in k:
                continue
            m = getattr(self, k)
            if m is None or k not in state:
                continue
            if hasattr(m, "_orig_mod"):
                m = m._orig_mod
            if k == "var_opt":
                m.load_state_dict(state[k])
            else:
                m.load_state_dict(state[k], strict=strict)
        if config is not None:
            self.prog_it = int(config.get("prog_it", 0))
            self.last_prog_si = int(config.get("last_prog_si", -1))
            self.first_prog = bool(config.get("first_prog", True))
