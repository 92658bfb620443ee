"""Sampling helpers (top-k / top-p, Gumbel softmax with a generator) and stochastic depth (upstream ``models/helpers.py``).

Shape letters: B batch, l tokens being sampled, V vocabulary size.
"""
from __future__ import annotations

import math

import torch
from torch import nn as nn
from torch.nn import functional as F



def sampling_rng_and_labels(model: nn.Module, B: int, label_B: torch.Tensor | int | None, g_seed: int | None,
                            dev: torch.device) -> tuple[torch.Generator | None, torch.Tensor]:
    """Seed ``model.rng`` and resolve the class labels of a sampling call, as upstream's sampler does.

    ``g_seed`` None uses the global generator; otherwise ``model.rng`` (re-created on ``dev`` if needed) is
    seeded and returned. ``label_B`` None draws B classes uniformly (class 0 when the model has one class);
    an int gives every window that class (negative = the null class, i.e. unconditional); a tensor is used as is.

    Returns
    -------
    rng : torch.Generator | None
    label_B : LongTensor, shape (B,), on ``dev``
    """
    rng = None
    if g_seed is not None:
        if model.rng.device != dev:
            model.rng = torch.Generator(device=dev)
        model.rng.manual_seed(int(g_seed))
        rng = model.rng
    if label_B is None and model.num_classes == 1:
        label_B = 0
    if label_B is None:
        label_B = torch.multinomial(model.uniform_prob.expand(B, -1), num_samples=1, replacement=True,
                                    generator=rng).reshape(B)
    elif isinstance(label_B, int):
        label_B = torch.full((B,), fill_value=model.num_classes if label_B < 0 else label_B, device=dev)
    return rng, label_B.to(dev).long()

def mask_to_top_k_(logits_BlV: torch.Tensor, top_k: int) -> torch.Tensor:
    """Set every logit below the row's k-th largest to -inf, in place (k >= V keeps all); returns the tensor."""
    k = min(top_k, logits_BlV.shape[-1])
    kth = logits_BlV.topk(k, largest=True, sorted=False, dim=-1)[0].amin(dim=-1, keepdim=True)
    return logits_BlV.masked_fill_(logits_BlV < kth, -torch.inf)


def sampling_temperatures(temperature, n_scales: int) -> list[float]:
    """One sampling temperature per scale from a number or a sequence of ``n_scales`` numbers, each finite and > 0.

    Raises
    ------
    ValueError
        A sequence of another length, or a temperature that is not a positive number (naming both values).
    """
    temps = [temperature] if isinstance(temperature, (int, float)) else list(temperature)
    if len(temps) == 1:
        temps = temps * n_scales
    if len(temps) != n_scales:
        raise ValueError(f"temperature has {len(temps)} values but this model has {n_scales} scales: give one value "
                         f"or {n_scales}")
    out = [float(t) for t in temps]
    if not all(math.isfinite(t) and t > 0 for t in out):
        raise ValueError(f"temperature {out}: every value must be a positive number")
    return out


def sample_with_top_k_top_p_(logits_BlV: torch.Tensor, top_k: int = 0, top_p: float = 0.0,
                             rng: torch.Generator | None = None, num_samples: int = 1) -> torch.Tensor:
    """Sample token indices after top-k / top-p filtering; ``logits_BlV`` is modified in place.

    Parameters
    ----------
    logits_BlV : Tensor, shape (B, l, V)
    top_k : int
        Keep the k most likely tokens per row (0 = off).
    top_p : float
        Keep the smallest set of most likely tokens whose mass reaches top_p (0 = off); the most likely
        token is always kept.
    rng : torch.Generator | None
        Generator on the logits' device (None = global RNG).
    num_samples : int
        Draws per row; >= 0 draws with replacement, < 0 draws ``|num_samples|`` without.

    Returns
    -------
    idx_Bl1 : LongTensor, shape (B, l, |num_samples|)
    """
    B, l, V = logits_BlV.shape
    if top_k > 0:
        mask_to_top_k_(logits_BlV, top_k)
    if top_p > 0:
        sorted_logits, sorted_idx = logits_BlV.sort(dim=-1, descending=False)
        sorted_idx_to_remove = sorted_logits.softmax(dim=-1).cumsum_(dim=-1) <= (1 - top_p)
        sorted_idx_to_remove[..., -1:] = False
        logits_BlV.masked_fill_(sorted_idx_to_remove.scatter(sorted_idx.ndim - 1, sorted_idx, sorted_idx_to_remove),
                                -torch.inf)
    replacement = num_samples >= 0
    num_samples = abs(num_samples)
    probs_NV = logits_BlV.softmax(dim=-1).view(-1, V)
    return torch.multinomial(probs_NV, num_samples=num_samples, replacement=replacement,
                             generator=rng).view(B, l, num_samples)


def gumbel_softmax_with_rng(logits: torch.Tensor, tau: float = 1.0, hard: bool = False, eps: float = 1e-10,
                            dim: int = -1, rng: torch.Generator | None = None) -> torch.Tensor:
    """Gumbel softmax whose noise comes from ``rng`` (None = ``F.gumbel_softmax``)."""
    if rng is None:
        return F.gumbel_softmax(logits=logits, tau=tau, hard=hard, eps=eps, dim=dim)
    gumbels = -torch.empty_like(logits, memory_format=torch.legacy_contiguous_format).exponential_(generator=rng).log()
    y_soft = ((logits + gumbels) / tau).softmax(dim)
    if hard:
        index = y_soft.max(dim, keepdim=True)[1]
        y_hard = torch.zeros_like(logits, memory_format=torch.legacy_contiguous_format).scatter_(dim, index, 1.0)
        return y_hard - y_soft.detach() + y_soft
    return y_soft


def drop_path(x: torch.Tensor, drop_prob: float = 0.0, training: bool = False, scale_by_keep: bool = True,
              rng: torch.Generator | None = None) -> torch.Tensor:
    """Stochastic depth: zero whole samples with probability ``drop_prob`` (identity in eval).

    The per-sample mask is drawn on the CPU from ``rng`` (port: an explicit generator, so a resumed run
    draws the same masks as an uninterrupted one) and moved to ``x``'s device.
    """
    if drop_prob == 0.0 or not training:
        return x
    keep_prob = 1 - drop_prob
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    random_tensor = torch.empty(shape, dtype=torch.float32).bernoulli_(keep_prob, generator=rng)
    if keep_prob > 0.0 and scale_by_keep:
        random_tensor.div_(keep_prob)
    return x * random_tensor.to(device=x.device, dtype=x.dtype)


class DropPath(nn.Module):
    """Stochastic depth per sample; ``rng`` (a CPU generator, or None) is set by the owning model."""

    def __init__(self, drop_prob: float = 0.0, scale_by_keep: bool = True) -> None:
        super().__init__()
        self.drop_prob, self.scale_by_keep = drop_prob, scale_by_keep
        self.rng: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.drop_prob, self.training, self.scale_by_keep, self.rng)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob:.3f}"
