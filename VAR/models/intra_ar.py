"""Left-to-right token head inside a scale (EEG port, not upstream VAR).

Next-scale prediction draws the tokens of a scale independently given the coarser scales. For EEG that
makes every scale's token map white noise inside its band: a decoded sample's spectrum is flat inside each
band and cannot hold an alpha peak, whose shape lives in how neighbouring tokens of one scale relate.

This head keeps one transformer pass per scale (KV cache, next-band semantics and partial decodes are
unchanged) and makes the draw inside a scale sequential: the logits of position i come from the
transformer's hidden state at i plus the codebook vectors of the ``R`` positions before it in the same
scale, mixed by a small MLP, plus a term in codebook space: a linear prediction ``mu`` of position i's
codebook vector from the window scores every code v by ``<c_v, mu> - w_s |c_v|^2 / 2`` (a Gaussian
autoregression on the code vectors, shared by all codes, so it needs little data). The likelihood is exact
under left-to-right order; sampling costs ``sum(patch_nums)`` small steps per window on top of the
transformer passes. Measured on eegmat: ``benchmarks/bench_intra_steps.py``; design: ``docs/design.md`` §3.

Shapes: B batch, l positions of one scale, C transformer width, Cv = Cvae latent channels (the codebook
vector of a position, all G groups concatenated), R receptive field in positions.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["ScaleARHead", "left_window"]


def left_window(h_BlCv: torch.Tensor, R: int) -> torch.Tensor:
    """For every position i, the codebook vectors of positions i-1, i-2, ..., i-R (nearest first; zeros
    before position 0): (B, l, R * Cv)."""
    B, l, Cv = h_BlCv.shape
    padded = F.pad(h_BlCv, (0, 0, R, 0))  # (B, R + l, Cv): padded[:, R + j] = h[:, j]
    # offset d = 1..R: position i reads padded[:, R + i - d]
    return torch.cat([padded[:, R - d:R - d + l] for d in range(1, R + 1)], dim=2)


class ScaleARHead(nn.Module):
    """h_BlC (B, l, C) and the left window (B, l, R * Cv) -> h'_BlC (B, l, C), fed to VAR's output head, and
    the codebook-space logits added to that head's output (:meth:`code_logits`).

    The last layers start at zero, so an untrained head leaves the transformer's logits as they are.
    """

    def __init__(self, C: int, Cvae: int, R: int, n_scales: int, hidden: int | None = None) -> None:
        super().__init__()
        if R < 1:
            raise ValueError(f"ScaleARHead needs a receptive field R >= 1, got {R}")
        self.C, self.Cvae, self.R = int(C), int(Cvae), int(R)
        hidden = int(hidden or 2 * C)
        # fc1 acts on (LayerNorm(h), window) concatenated; split in two so the sampler projects h once per scale
        self.fc1_h = nn.Linear(C, hidden)
        self.fc1_w = nn.Linear(R * Cvae, hidden, bias=False)
        self.fc2 = nn.Linear(hidden, C)
        self.fc_code = nn.Linear(R * Cvae, Cvae, bias=False)  # mu: the predicted codebook vector
        self.norm_w = nn.Parameter(torch.zeros(n_scales))  # per scale: weight of -|c_v|^2 / 2

    def zero_last(self) -> None:
        for p in (self.fc2.weight, self.fc2.bias, self.fc_code.weight, self.norm_w):
            nn.init.zeros_(p)

    def code_logits(self, win_BlX: torch.Tensor, book_GVd: torch.Tensor, si: int) -> torch.Tensor:
        """``<c_v, mu> - w_si |c_v|^2 / 2`` for every code of scale ``si``'s codebooks (G, V, d):
        (B, l, G * V); ``mu`` = ``fc_code(window)`` split into the G groups' d = Cv / G channels."""
        B, l = win_BlX.shape[:2]
        return self.code_logits_from_mu(self.fc_code(win_BlX), book_GVd, si).reshape(B, l, -1)

    def code_logits_from_mu(self, mu_XCv: torch.Tensor, book_GVd: torch.Tensor, si: int) -> torch.Tensor:
        """:meth:`code_logits` given ``mu`` (..., Cv): (..., G, V)."""
        G, V, d = book_GVd.shape
        book = book_GVd.to(mu_XCv.dtype)
        mu_XGd = mu_XCv.reshape(*mu_XCv.shape[:-1], G, d)
        return torch.einsum("...gd,gvd->...gv", mu_XGd, book) - 0.5 * self.norm_w[si] * book.square().sum(-1)

    def oldest_first_weight(self) -> torch.Tensor:
        """``fc1_w`` and ``fc_code`` stacked, (hidden + Cv, R * Cv), for a window laid out oldest first
        (positions i-R..i-1): the sampler then reads it as one contiguous slice of a left-padded buffer."""
        W = torch.cat((self.fc1_w.weight, self.fc_code.weight), dim=0)
        return W.view(W.shape[0], self.R, self.Cvae).flip(1).reshape(W.shape[0], self.R * self.Cvae)

    def project_h(self, h_BlC: torch.Tensor) -> torch.Tensor:
        """The window-free part of the first layer: (B, l, hidden)."""
        return self.fc1_h(F.layer_norm(h_BlC, (self.C,)))

    def finish(self, h_BlC: torch.Tensor, a_BlH: torch.Tensor, w_BlH: torch.Tensor) -> torch.Tensor:
        """``forward`` given ``a_BlH = project_h(h_BlC)`` and ``w_BlH = fc1_w(window)``."""
        return h_BlC + self.fc2(F.gelu(a_BlH + w_BlH))

    def forward(self, h_BlC: torch.Tensor, win_BlX: torch.Tensor) -> torch.Tensor:
        return self.finish(h_BlC, self.project_h(h_BlC), self.fc1_w(win_BlX.to(h_BlC.dtype)))
