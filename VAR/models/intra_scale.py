"""Steps inside a scale: which positions of a scale are predicted together, and who may attend to whom.

Next-scale prediction draws every token of a scale at once, each conditionally independent given the
coarser scales. Here a scale of ``pn`` positions is split into ``S`` interleaved *groups* (group 0 is every
S-th position, the later groups fill in between), and the groups are predicted one after another, each
seeing the tokens already placed. The likelihood is exact under that fixed order.

Two kinds of tokens share the transformer's sequence:

- **query** tokens (``Q``), one per position, carry what next-scale prediction always had: the coarser
  scales' upsampled reconstruction at that position. Their outputs are the logits.
- **content** tokens (``C``), one per position of groups ``0 .. S-2``, carry the token placed at that position
  (its codebook vector). They exist only to be attended by later groups of the same scale.

The groups can be merged into fewer *chunks* at sampling time (``n_chunks``; 1 = plain next-scale
prediction, ``S`` = exact ancestral sampling): a query sees the contents of the chunks before its own only.
Every rule below is a function of token attributes, so the training mask, the KV-cached sampler and any
chunk schedule agree by construction. Later scales attend only to earlier scales' queries, never to their
contents, so a scale's reconstruction (what later scales see) is the same whatever the schedule.

Shape letters: l positions of one scale, N tokens of a sequence, K keys (tokens in the cache).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

QUERY, CONTENT = 0, 1

__all__ = ["QUERY", "CONTENT", "group_residue_order", "groups_of_positions", "chunk_bounds", "chunk_of_groups",
           "neighbour_features", "TokenAttrs", "attend_bias", "check_steps"]


def group_residue_order(S: int) -> list[int]:
    """Residues mod S in the order their groups are predicted: farthest-first on the circle.

    Group 0 is residue 0; each next group takes the residue farthest from those already taken (ties: the
    smallest), so every prefix of groups covers the scale as evenly as it can (S = 4 gives 0, 2, 1, 3).
    """
    if S < 1:
        raise ValueError(f"steps per scale must be >= 1, got {S}")
    order = [0]
    while len(order) < S:
        def gap(r: int) -> int:
            return min(min((r - t) % S, (t - r) % S) for t in order)
        order.append(max((r for r in range(S) if r not in order), key=lambda r: (gap(r), -r)))
    return order


def groups_of_positions(pn: int, S: int) -> torch.Tensor:
    """Group of each position of a scale: (pn,) long, position p in group ``order.index(p % S)``."""
    if S > pn:
        raise ValueError(f"{S} steps per scale do not fit a scale of {pn} positions")
    rank = torch.empty(S, dtype=torch.long)
    rank[torch.tensor(group_residue_order(S))] = torch.arange(S)
    return rank[torch.arange(pn) % S]


def chunk_bounds(S: int, n_chunks: int) -> list[tuple[int, int]]:
    """Split groups ``0..S-1`` into ``n_chunks`` contiguous chunks ``[begin, end)`` of near-equal size."""
    if not 1 <= n_chunks <= S:
        raise ValueError(f"{n_chunks} sampling steps per scale need 1 <= steps <= {S} (the model's --intra_steps)")
    return [(c * S // n_chunks, (c + 1) * S // n_chunks) for c in range(n_chunks)]


def chunk_of_groups(S: int, n_chunks: int) -> torch.Tensor:
    """Chunk index of every group ``0..S-1`` under ``n_chunks`` chunks: (S,) long."""
    out = torch.empty(S, dtype=torch.long)
    for c, (b, e) in enumerate(chunk_bounds(S, n_chunks)):
        out[b:e] = c
    return out


def neighbour_features(h_BlC: torch.Tensor, chunk_l: torch.Tensor, pos_q: torch.Tensor, radius: int) -> torch.Tensor:
    """What a query sees of its placed neighbours: (B, n, 2 * radius * (C + 1)).

    Attention reaches placed tokens through learned absolute positions, which a small model learns slowly;
    this hands each query the codebook vectors at offsets ``-radius..-1, 1..radius`` directly, each with a
    flag, zeroed unless that neighbour lies in an earlier chunk than the query (placed before it).

    h_BlC : (B, l, C) codebook vectors of the scale's tokens (unplaced positions may hold anything).
    chunk_l : (l,) chunk of every position; pos_q : (n,) the query positions.
    """
    l = h_BlC.shape[1]
    offs = [d for d in range(-radius, radius + 1) if d != 0]
    pos_q = pos_q.to(h_BlC.device)
    chunk_l = chunk_l.to(h_BlC.device)
    j_nD = pos_q[:, None] + torch.tensor(offs, device=h_BlC.device)[None, :]
    inside = (j_nD >= 0) & (j_nD < l)
    j_nD = j_nD.clamp(0, l - 1)
    known_nD = (inside & (chunk_l[j_nD] < chunk_l[pos_q][:, None])).to(h_BlC.dtype)
    h_BnDC = h_BlC[:, j_nD] * known_nD[None, :, :, None]
    flags = known_nD[None, :, :, None].expand(h_BlC.shape[0], -1, -1, 1)
    return torch.cat((h_BnDC, flags), dim=-1).flatten(2)


def check_steps(n_chunks: int, S_train: int, patch_nums: Sequence[int]) -> None:
    """One-line error for a sampling schedule the model cannot follow."""
    if n_chunks > min(patch_nums):
        raise ValueError(f"intra_steps={n_chunks} is larger than the smallest scale ({min(patch_nums)} positions "
                         f"of {list(patch_nums)}); use at most {min(min(patch_nums), S_train)}")
    if not 1 <= n_chunks <= S_train:
        raise ValueError(f"intra_steps={n_chunks} but the model was trained with --intra_steps={S_train}; "
                         f"use 1..{S_train}")


@dataclass
class TokenAttrs:
    """Per-token attributes of a sequence, each a (N,) long tensor."""
    scale: torch.Tensor
    kind: torch.Tensor
    group: torch.Tensor

    @staticmethod
    def cat(parts: Sequence["TokenAttrs"]) -> "TokenAttrs":
        return TokenAttrs(*(torch.cat([getattr(p, f) for p in parts]) for f in ("scale", "kind", "group")))

    @staticmethod
    def make(scale: int, kind: int, group_N: torch.Tensor) -> "TokenAttrs":
        n = group_N.numel()
        return TokenAttrs(torch.full((n,), scale, dtype=torch.long), torch.full((n,), kind, dtype=torch.long),
                          group_N.long().cpu())


def attend_bias(q: TokenAttrs, k: TokenAttrs, S: int, n_chunks: int, device=None,
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Additive attention bias (1, 1, Nq, Nk): 0 where query token i may attend key token j, -inf elsewhere.

    - earlier scales: queries only (contents serve their own scale);
    - same scale, a query of group g: queries of groups <= g, contents of the chunks before g's chunk;
    - same scale, a content of group g: queries and contents of groups up to the end of g's chunk.
    """
    bounds = chunk_bounds(S, n_chunks)
    cstart, cend = torch.empty(S, dtype=torch.long), torch.empty(S, dtype=torch.long)
    for b, e in bounds:
        cstart[b:e], cend[b:e] = b, e - 1
    qs, qk, qg = q.scale[:, None], q.kind[:, None], q.group[:, None]
    ks, kk, kg = k.scale[None, :], k.kind[None, :], k.group[None, :]
    earlier = (ks < qs) & (kk == QUERY)
    same = ks == qs
    q_is_query = qk == QUERY
    from_query = q_is_query & (((kk == QUERY) & (kg <= qg)) | ((kk == CONTENT) & (kg < cstart[q.group][:, None])))
    from_content = ~q_is_query & (kg <= cend[q.group][:, None])
    allowed = earlier | (same & (from_query | from_content))
    bias = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, float("-inf"))
    return bias.view(1, 1, *allowed.shape).to(device)
