"""Zero-shot uses of a trained VAR: band completion, gap filling and forecasting (docs/design.md §3).

Upstream edits images zero-shot by keeping the source image's tokens wherever a keep-mask is set, at
every scale, and sampling only the rest. Here the same mechanism works on the 1D
band-token pyramid of an EEG window:

- **band completion**: every token of the scales of stages 1..k is kept, the finer scales are sampled;
- **gap filling / forecasting**: a time mask (True = missing) is mapped onto every scale; a position is
  kept when its time support is observed (rule ``'inside'``: all of its samples observed; ``'overlap'``:
  at least one), the others are sampled.

This module holds the masks, the keep rules, the sampling loop that mixes kept tokens into each scale
(:func:`complete_tokens`), and the splice that returns observed samples unchanged with a smooth join
(:func:`splice_observed`). :func:`complete_windows` chains them on µV windows.

Shape letters: B windows, C electrodes, T samples, K stages, L latent length, l / pn one scale's
positions, G tokens per position, V vocabulary, S draws.
"""
from __future__ import annotations

import logging
from typing import Optional, Sequence

import numpy as np
import torch

from utils.errors import UserError

logger = logging.getLogger(__name__)

__all__ = ["KEEP_RULES", "parse_spans", "spans_to_mask", "forecast_mask", "check_time_mask", "scale_keep_masks",
           "band_keep_masks", "complete_tokens", "splice_observed", "complete_windows"]

KEEP_RULES = ("inside", "overlap")


# ------------------------------------------------------------------------------------------ time masks
def parse_spans(text: str, where: str = "--gap") -> list[tuple[float, float]]:
    """Parse ``"1.0:1.5,3:3.25"`` into ``[(1.0, 1.5), (3.0, 3.25)]`` (seconds from the window start)."""
    spans = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        try:
            a, b = (float(v) for v in part.split(":"))
        except ValueError:
            raise UserError(f"{where}={text!r}: cannot read span {part!r}; expected START:STOP in seconds, "
                            "e.g. 1.0:1.5 (several separated by commas)") from None
        if not (np.isfinite(a) and np.isfinite(b)) or b <= a:
            raise UserError(f"{where}={text!r}: span {part!r} is empty or reversed; expected START < STOP in seconds")
        spans.append((a, b))
    if not spans:
        raise UserError(f"{where}={text!r}: no span given; expected START:STOP in seconds, e.g. 1.0:1.5")
    return spans


def spans_to_mask(spans: Sequence[tuple[float, float]], sfreq: float, n_times: int, where: str = "--gap") -> np.ndarray:
    """Missing-sample mask (T,) bool from spans in seconds; sample t is missing when START <= t/sfreq < STOP.

    Raises
    ------
    UserError
        A span that reaches outside the window ``[0, n_times / sfreq]``.
    """
    dur = n_times / float(sfreq)
    mask_T = np.zeros(n_times, dtype=bool)
    for a, b in spans:
        if a < 0 or b > dur + 1e-9:
            raise UserError(f"{where}: span {a:g}:{b:g} s lies outside the window 0:{dur:g} s; choose spans inside it")
        lo, hi = int(np.ceil(a * sfreq - 1e-9)), int(np.ceil(b * sfreq - 1e-9))
        mask_T[lo:min(hi, n_times)] = True
    return mask_T


def forecast_mask(horizon_sec: float, sfreq: float, n_times: int, where: str = "--horizon") -> np.ndarray:
    """Mask (T,) of the last ``horizon_sec`` seconds of the window."""
    dur = n_times / float(sfreq)
    if not 0 < horizon_sec < dur:
        raise UserError(f"{where}={horizon_sec:g}: expected a horizon in seconds between 0 and the window's "
                        f"{dur:g} s (exclusive)")
    h = int(round(horizon_sec * sfreq))
    if h < 1:
        raise UserError(f"{where}={horizon_sec:g}: shorter than one sample at {sfreq:g} Hz; choose >= {1 / sfreq:g} s")
    mask_T = np.zeros(n_times, dtype=bool)
    mask_T[n_times - h:] = True
    return mask_T


def check_time_mask(mask_NT: np.ndarray, allow_empty: bool = False, allow_full: bool = False,
                    where: str = "mask") -> np.ndarray:
    """Refuse masks that hide nothing or everything (unless allowed). Returns the mask as bool (N, T)."""
    m = np.asarray(mask_NT, dtype=bool)
    if m.ndim != 2:
        raise UserError(f"{where}: shape {m.shape}; expected (N, T) booleans (True = missing)")
    for i, row in enumerate(m):
        if not allow_empty and not row.any():
            raise UserError(f"{where}: window {i} has no missing sample, so there is nothing to complete; "
                            "give a span inside the window")
        if not allow_full and row.all():
            raise UserError(f"{where}: window {i} is missing entirely, so nothing is observed; use VAR/sample.py "
                            "for unconditional generation or give a shorter span")
    return m


# ------------------------------------------------------------------------------------------ keep rules
def scale_keep_masks(mask_BT: torch.Tensor, patch_nums: Sequence[int], rule: str = "inside") -> list[torch.Tensor]:
    """Map a missing-sample mask onto every scale: which token positions to keep.

    Position i of a scale with ``pn`` positions covers samples ``[i T / pn, (i + 1) T / pn)`` (the latent
    is a uniform grid over the window).

    Parameters
    ----------
    mask_BT : BoolTensor, shape (B, T)
        True = missing.
    patch_nums : sequence of int
        Positions per scale.
    rule : {'inside', 'overlap'}
        ``'inside'`` keeps positions whose support is entirely observed; ``'overlap'`` keeps positions
        with at least one observed sample (only positions wholly inside the gap are sampled).

    Returns
    -------
    list of BoolTensor, each (B, pn)
        True = keep the source token.
    """
    if rule not in KEEP_RULES:
        raise UserError(f"keep rule {rule!r}; expected one of {list(KEEP_RULES)}")
    B, T = mask_BT.shape
    miss_BT = mask_BT.float()
    out = []
    for pn in patch_nums:
        edges = np.linspace(0, T, pn + 1)
        lo = np.floor(edges[:-1]).astype(int)
        hi = np.maximum(np.ceil(edges[1:]).astype(int), lo + 1)
        cum_BT1 = torch.cat([miss_BT.new_zeros(B, 1), miss_BT.cumsum(dim=1)], dim=1)
        n_miss_Bl = cum_BT1[:, hi] - cum_BT1[:, lo]
        n_all_l = torch.as_tensor(hi - lo, dtype=miss_BT.dtype, device=miss_BT.device)  # (pn,): same device as n_miss_Bl
        keep = n_miss_Bl == 0 if rule == "inside" else n_miss_Bl < n_all_l
        out.append(keep.to(mask_BT.device))
    return out


def band_keep_masks(B: int, patch_nums: Sequence[int], n_keep_scales: int,
                    device: torch.device | str = "cpu") -> list[torch.Tensor]:
    """Band completion: keep every position of the first ``n_keep_scales`` scales, sample the rest."""
    return [torch.full((B, pn), si < n_keep_scales, dtype=torch.bool, device=device) for si, pn in enumerate(patch_nums)]


# ------------------------------------------------------------------------------------------ sampling
@torch.no_grad()
def complete_tokens(var, src_idx: Sequence[torch.Tensor], keep: Sequence[torch.Tensor],
                    label_B: Optional[torch.Tensor | int] = -1, g_seed: Optional[int] = None, cfg: float = 0.0,
                    top_k: int = 0, top_p: float = 0.0, intra_steps: Optional[int] = None,
                    level_B: Optional[torch.Tensor | int] = None, temperature: float | Sequence[float] = 1.0):
    """Sample a token pyramid scale by scale, keeping the source tokens where ``keep`` is set.

    This is :meth:`VAR.autoregressive_infer_cfg` with upstream's zero-shot edit step: after each forward
    pass, kept positions are overwritten by the source tokens, so later groups of the same scale, f_hat and
    the next scales are built from the mixed map. Sampling draws the same random numbers whatever the
    mask, so an all-False mask gives exactly ``autoregressive_infer_cfg`` under the same seed.

    Parameters
    ----------
    var : VAR
    src_idx : list of LongTensor, each (B, pn * G)
        The source window's tokens per scale (``vae.eeg_to_idxBl``).
    keep : list of BoolTensor, each (B, pn)
        True = keep the source token at that position (all G tokens of the position).
    label_B : LongTensor (B,) | int | None
        Class; negative int = the null class (upstream's choice for in/out-painting).
    g_seed : int | None
        Seed of ``var.rng``.
    cfg, top_k, top_p, intra_steps, level_B, temperature : float, int, float, int | None, LongTensor | int | None, float
        As in ``autoregressive_infer_cfg`` (cfg 0 = no guidance; level_B None draws the level for a class and
        leaves it unknown for the null class).

    Returns
    -------
    x_BCT : Tensor, shape (B, C, T), model units
    idx_Bl : list of LongTensor, each (B, pn * G)
        The mixed token maps.
    fhat_BCL : list of Tensor, each (B, Cvae, L)
        Cumulative f_hat after every scale.
    """
    if len(src_idx) != len(var.patch_nums) or len(keep) != len(var.patch_nums):
        raise ValueError(f"need one token map and one keep mask per scale ({len(var.patch_nums)}); got "
                         f"{len(src_idx)} and {len(keep)}")
    B = src_idx[0].shape[0]
    return var.autoregressive_infer_cfg(B, label_B, g_seed=g_seed, cfg=cfg, top_k=top_k, top_p=top_p,
                                        ret_stages=True, intra_steps=intra_steps, keep_src=(src_idx, keep),
                                        level_B=level_B, temperature=temperature)


# ------------------------------------------------------------------------------------------ splicing
def splice_observed(obs_BCT: torch.Tensor, gen_BCT: torch.Tensor, mask_BT: torch.Tensor, fade: int = 5) -> torch.Tensor:
    """Observed samples unchanged, generated ones in the gaps, joined without a jump.

    Inside each gap the generated signal is shifted by the mismatch ``obs - gen`` at the last observed
    sample on each side; the shift falls linearly to zero over ``fade`` samples into the gap (a
    cross-fade from the observed level to the generated one), so the output is continuous at every
    boundary while no observed sample changes.

    Parameters
    ----------
    obs_BCT, gen_BCT : Tensor, shape (B, C, T), µV
    mask_BT : BoolTensor, shape (B, T), True = missing
    fade : int
        Join length in samples (0 = plain splice).
    """
    out = torch.where(mask_BT[:, None, :], gen_BCT, obs_BCT).clone()
    if fade <= 0:
        return out
    T = mask_BT.shape[1]
    for i in range(mask_BT.shape[0]):
        m = mask_BT[i].cpu().numpy()
        d = np.diff(np.concatenate([[0], m.astype(np.int8), [0]]))
        for start, stop in zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1)):
            g = stop - start
            n = min(fade, g)
            w = torch.linspace(1.0, 0.0, n + 2, dtype=out.dtype, device=out.device)[1:-1]
            if start > 0:
                off_C = obs_BCT[i, :, start - 1] - gen_BCT[i, :, start - 1]
                out[i, :, start:start + n] += off_C[:, None] * w
            if stop < T:
                off_C = obs_BCT[i, :, stop] - gen_BCT[i, :, stop]
                out[i, :, stop - n:stop] += off_C[:, None] * w.flip(0)
    return out


@torch.no_grad()
def complete_windows(var, vae, x_BCT_uv: torch.Tensor, uv_scale: float, *, mask_BT: Optional[torch.Tensor] = None,
                     n_keep_scales: Optional[int] = None, observed_BCT_uv: Optional[torch.Tensor] = None,
                     n_samples: int = 1, seed: Optional[int] = 0, label_B: Optional[torch.Tensor | int] = -1,
                     cfg: float = 0.0, top_k: int = 0, top_p: float = 0.0, rule: str = "inside", fade: int = 5,
                     prefill: str = "linear", relative: bool = True,
                     level_B: Optional[torch.Tensor | int] = None, gain=None,
                     gain_table=None, temperature: float | Sequence[float] = 1.0) -> dict[str, torch.Tensor]:
    """Complete µV windows: S draws and their mean (the point estimate).

    Exactly one of ``mask_BT`` (gap filling / forecasting) and ``n_keep_scales`` (band completion) is given.

    Parameters
    ----------
    x_BCT_uv : Tensor, shape (B, C, T), µV
        The windows; for gap filling the masked samples are never read (they are replaced by ``prefill``
        before tokenizing); for band completion, the observed low-passed signal.
    uv_scale : float
        µV per model unit (the tokenizer's).
    mask_BT : BoolTensor (B, T) | None
        True = missing.
    n_keep_scales : int | None
        Band completion: number of leading scales whose tokens are kept.
    observed_BCT_uv : Tensor (B, C, T) | None
        Band completion: the observed stage-k signal added back in place of the model's own decode of
        the kept scales (default ``x_BCT_uv``); the output is ``observed + (decode(all) - decode(kept))``.
    n_samples : int
        S draws; draw s uses seed ``seed + s``.
    rule : {'inside', 'overlap'}
        Keep rule of :func:`scale_keep_masks`.
    fade : int
        Join length of :func:`splice_observed`.
    prefill : {'linear', 'zeros', 'given'}
        What the masked samples hold when the window is tokenized (never the truth): a linear
        interpolation, zeros, or ``'given'`` = the values already in ``x_BCT_uv`` (a caller's fill).
    relative : bool
        Gap filling: the completion is ``prefill + (decode(mixed tokens) - decode(source tokens))``, i.e.
        the model's change to the prefilled window, free of the tokenizer's reconstruction error (with every
        token kept it returns the prefill exactly; a window with nothing kept gets the plain decode, i.e. an
        unconditional sample). False: the plain decode of the mixed tokens.
    level_B : LongTensor (B,) | int | None
        A VAR with levels: each window's level (e.g. ``utils.eeg_levels.observed_levels``; negative int =
        unknown); None = drawn from the class's training frequency (unknown for the null class).
    gain, gain_table : BandGain, array (classes + 1, levels + 1, C, K) dB | None
        Band completion: the tokenizer's band gain (``vae_checkpoint.band_gain``) and the checkpoint's
        ``level_gain_db``. The completed bands (stages k+1..K) of every draw get the gain of its class and level
        (the pooled row for the null class, the pooled column for an unknown level), as ``sample.py`` gives its
        samples: a plain decode lacks part of their power. The observed bands are untouched. Gap filling ignores
        them.
    temperature : float | sequence of float
        Softmax temperature of the draws (``autoregressive_infer_cfg``).

    Returns
    -------
    dict
        ``draws`` (S, B, C, T) µV, ``mean`` (B, C, T) µV, ``keep`` list of (B, pn) masks.
    """
    if (mask_BT is None) == (n_keep_scales is None):
        raise ValueError("give exactly one of mask_BT (gap filling / forecasting) and n_keep_scales (band completion)")
    if (gain is None) != (gain_table is None):
        raise ValueError("give both gain and gain_table, or neither")
    dev = var.lvl_1L.device
    x = x_BCT_uv.to(dev).float()
    B, C, T = x.shape
    if mask_BT is not None:
        mask_BT = mask_BT.to(dev).bool()
        if prefill == "linear":
            from utils.eeg_baselines import fill_gap_linear
            src = torch.as_tensor(fill_gap_linear(x.cpu().numpy(), mask_BT.cpu().numpy()), dtype=torch.float32, device=dev)
        elif prefill == "zeros":
            src = torch.where(mask_BT[:, None, :], torch.zeros_like(x), x)
        elif prefill == "given":
            src = x  # the caller already filled the masked samples (e.g. with an AR forecast)
        else:
            raise UserError(f"prefill {prefill!r}; expected 'linear', 'zeros' or 'given'")
        keep = scale_keep_masks(mask_BT, var.patch_nums, rule)
    else:
        src = x
        keep = band_keep_masks(B, var.patch_nums, int(n_keep_scales), device=dev)
    k_obs = None
    if gain is not None and mask_BT is None:
        from models.band_gain import lookup_group_gain_db
        from models.helpers import sampling_rng_and_labels
        k_obs = int(n_keep_scales) - (len(var.patch_nums) - gain.n_bands)  # minus the extra coarse scales
    src_idx = vae.eeg_to_idxBl((src / uv_scale).float())
    src_dec_uv = vae.idxBl_to_eeg(src_idx, last_one=True).float() * uv_scale if (mask_BT is not None and relative) else None
    draws = []
    for s in range(int(n_samples)):
        g_seed = None if seed is None else int(seed) + s
        lab_s, lvl_s = label_B, level_B
        if k_obs is not None:  # the draw's classes and levels, fixed here (as the sampler resolves them) to pick its gain
            _, classes_B = sampling_rng_and_labels(var, B, label_B, g_seed, dev)
            # seeded, the sampler draws the same classes again (its tokens then match a draw without gains)
            lab_s = label_B if g_seed is not None else classes_B
            lvl_s = var.sampling_levels(classes_B, level_B, g_seed)
            hi_gain_db = lookup_group_gain_db(gain_table, classes_B, lvl_s, B)
            hi_gain_db[..., :max(k_obs, 0)] = 0.0  # the observed bands keep their power
        x_gen, _, ms_fhat = complete_tokens(var, src_idx, keep, label_B=lab_s, g_seed=g_seed, cfg=cfg, top_k=top_k,
                                            top_p=top_p, level_B=lvl_s, temperature=temperature)
        gen_uv = x_gen.float() * uv_scale
        if mask_BT is not None:
            if src_dec_uv is not None:
                # a window with no kept token (everything missing) is a plain unconditional sample
                any_kept_B = torch.stack([k.any(dim=1) for k in keep], dim=1).any(dim=1)
                gen_uv = torch.where(any_kept_B[:, None, None], src + (gen_uv - src_dec_uv), gen_uv)
            out = splice_observed(x, gen_uv, mask_BT, fade=fade)
        else:
            obs = x if observed_BCT_uv is None else observed_BCT_uv.to(dev).float()
            low_uv = vae.fhat_to_eeg(ms_fhat[int(n_keep_scales) - 1]).float() * uv_scale
            if k_obs is not None:
                gen_uv = gain.apply_db(gen_uv, hi_gain_db)
            out = obs + (gen_uv - low_uv)  # port: the observed stage stays exact; the model adds the missing bands
        draws.append(out)
    draws_SBCT = torch.stack(draws)
    return {"draws": draws_SBCT, "mean": draws_SBCT.mean(dim=0), "keep": keep}
