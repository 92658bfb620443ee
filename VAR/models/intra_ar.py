"""Left-to-right token head inside a scale (EEG port, not upstream VAR).

Next-scale prediction draws the tokens of a scale independently given the coarser scales. For EEG that
makes every scale's token map white noise inside its band: a decoded sample's spectrum is flat inside each
band and cannot hold an alpha peak, whose shape lives in how neighbouring tokens of one scale relate.

This head keeps one transformer pass per scale (KV cache, next-band semantics and partial decodes are
unchanged) and makes the draw inside a scale sequential: the logits of position i come from the
transformer's hidden state at i plus the codebook vectors of the ``R`` positions before it in the same
scale, mixed by a small MLP, plus a term in codebook space: a linear prediction ``mu`` of position i's
codebook vector from the window scores every code v by ``<c_v, mu> - w_s |c_v|^2 / 2`` (a Gaussian
autoregression on the code vectors, shared by all codes, so it needs little data); with ``fhat_r`` > 0, ``mu``
also gets a linear function of the coarser scales' reconstruction at positions i-r..i+r, which a residual scale
partly cancels. The likelihood is exact
under left-to-right order; sampling costs ``sum(patch_nums)`` small steps per window on top of the
transformer passes. Measured on eegmat: ``benchmarks/bench_intra_steps.py``; design: ``docs/design.md`` §3.

Shapes: B batch, l positions of one scale, C transformer width, Cv = Cvae latent channels (the codebook
vector of a position, all G groups concatenated), R receptive field in positions.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["ScaleARHead", "ScaleStepper", "left_window"]


def left_window(h_BlCv: torch.Tensor, R: int) -> torch.Tensor:
    """For every position i, the codebook vectors of positions i-1, i-2, ..., i-R (nearest first; zeros
    before position 0): (B, l, R * Cv)."""
    B, l, Cv = h_BlCv.shape
    padded = F.pad(h_BlCv, (0, 0, R, 0))  # (B, R + l, Cv): padded[:, R + j] = h[:, j]
    # offset d = 1..R: position i reads padded[:, R + i - d]
    return torch.cat([padded[:, R - d:R - d + l] for d in range(1, R + 1)], dim=2)


def _book_scores(mu_XCv: torch.Tensor, book_GVd: torch.Tensor) -> torch.Tensor:
    """``<c_v, mu>`` per group for every code, ``mu`` (..., Cv) split into the G groups' d channels: (..., G, V)."""
    G, V, d = book_GVd.shape
    return torch.einsum("...gd,gvd->...gv", mu_XCv.reshape(*mu_XCv.shape[:-1], G, d), book_GVd.to(mu_XCv.dtype))


_SQRT_HALF = 0.7071067811865476


def _gelu_scaled(q: torch.Tensor) -> torch.Tensor:
    """``sqrt(2) * gelu(sqrt(2) q)`` as ``q (1 + erf q)``: exact GELU in two cheap ops (``F.gelu`` has a large fixed
    cost per call on CPU); the caller keeps pre-activations divided by sqrt(2) and folds 1 / sqrt(2) into fc2."""
    return torch.addcmul(q, q, torch.erf(q))


class ScaleARHead(nn.Module):
    """h_BlC (B, l, C) and the left window (B, l, R * Cv) -> h'_BlC (B, l, C), fed to VAR's output head, and
    the codebook-space logits added to that head's output (:meth:`code_logits`).

    The last layers start at zero, so an untrained head leaves the transformer's logits as they are.
    """

    def __init__(self, C: int, Cvae: int, R: int, n_scales: int, hidden: int | None = None, fhat_r: int = 0) -> None:
        super().__init__()
        self.fhat_r = int(fhat_r)
        # coarser reconstruction at positions i-r..i+r -> a second part of mu (residual scales cancel the coarser ones)
        self.fc_fhat = nn.Linear((2 * self.fhat_r + 1) * Cvae, Cvae, bias=False) if self.fhat_r > 0 else None
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
        self._push_tables: dict[int, tuple] = {}  # si -> (weights key, table): the sampler's cache

    #: the sampler's push table (see :meth:`push_table`) is used up to this size per scale
    TABLE_MAX_BYTES = 64 << 20

    def table_fits(self, GV: int) -> bool:
        """Whether a scale's push table with G * V codes fits :attr:`TABLE_MAX_BYTES` (float32)."""
        return GV * self.R * (self.fc2.in_features + GV) * 4 <= self.TABLE_MAX_BYTES

    @torch.no_grad()
    def push_table(self, book_GVd: torch.Tensor, si: int) -> torch.Tensor:
        """What placing code v of group g adds to the k-th position after it, for the sampler: (G * V, R, X),
        X = hidden + G * V: ``fc1_w``'s part of the pre-activation (divided by sqrt(2), see ``_gelu_scaled``)
        and the code scores ``<c_v', fc_code part>`` of every code v'. Cached per scale until the head's window
        weights or the codebook change."""
        G, V, d = book_GVd.shape
        W1, Wc = self.fc1_w.weight, self.fc_code.weight
        # version counters miss writes through ``.data``; the sums catch those
        key = tuple((t.data_ptr(), t._version, float(t.sum())) for t in (W1, Wc, book_GVd)) + (str(book_GVd.device),)
        cache = self._push_tables
        if si in cache and cache[si][0] == key:
            return cache[si][1]
        H, R, Cv = W1.shape[0], self.R, self.Cvae
        book = book_GVd.float()
        W = torch.cat((W1 * _SQRT_HALF, Wc), dim=0).float().view(H + Cv, R, G, d)  # nearest first: k = offset - 1
        push_GVRx = torch.einsum("xkgd,gvd->gvkx", W, book)  # (G, V, R, H + Cv)
        scores = _book_scores(push_GVRx[..., H:], book).reshape(G, V, R, G * V)
        table = torch.cat((push_GVRx[..., :H], scores), dim=-1).reshape(G * V, R, H + G * V).contiguous()
        cache[si] = (key, table)
        return table

    def zero_last(self) -> None:
        for p in (self.fc2.weight, self.fc2.bias, self.fc_code.weight, self.norm_w):
            nn.init.zeros_(p)
        if self.fc_fhat is not None:
            nn.init.zeros_(self.fc_fhat.weight)

    def fhat_mu(self, f_BlCv: torch.Tensor) -> torch.Tensor:
        """The coarser reconstruction's part of mu: fc_fhat of positions i-r..i+r (zeros outside): (B, l, Cv)."""
        r, l = self.fhat_r, f_BlCv.shape[1]
        padded = F.pad(f_BlCv, (0, 0, r, r))
        return self.fc_fhat(torch.cat([padded[:, o:o + l] for o in range(2 * r + 1)], dim=2))

    def fhat_logits(self, f_BlCv: torch.Tensor, book_GVd: torch.Tensor) -> torch.Tensor:
        """``<c_v, fhat_mu>`` for every code: (B, l, G * V) (the sampler's per-position constant)."""
        B, l = f_BlCv.shape[:2]
        return _book_scores(self.fhat_mu(f_BlCv), book_GVd).reshape(B, l, -1)

    def code_logits(self, win_BlX: torch.Tensor, book_GVd: torch.Tensor, si: int,
                    f_BlCv: torch.Tensor | None = None) -> torch.Tensor:
        """``<c_v, mu> - w_si |c_v|^2 / 2`` for every code of scale ``si``'s codebooks (G, V, d):
        (B, l, G * V); ``mu`` = ``fc_code(window)`` (plus :meth:`fhat_mu` of the coarser reconstruction
        ``f_BlCv`` when given) split into the G groups' d = Cv / G channels."""
        B, l = win_BlX.shape[:2]
        mu = self.fc_code(win_BlX)
        if f_BlCv is not None:
            mu = mu + self.fhat_mu(f_BlCv)
        book = book_GVd.to(mu.dtype)
        return (_book_scores(mu, book) - 0.5 * self.norm_w[si] * book.square().sum(-1)).reshape(B, l, -1)

    def oldest_first_weight(self) -> torch.Tensor:
        """``fc1_w`` and ``fc_code`` stacked, (hidden + Cv, R * Cv), for a window laid out oldest first
        (positions i-R..i-1): the sampler then reads it as one contiguous slice of a left-padded buffer."""
        W = torch.cat((self.fc1_w.weight, self.fc_code.weight), dim=0)
        return W.view(W.shape[0], self.R, self.Cvae).flip(1).reshape(W.shape[0], self.R * self.Cvae)

    def project_h(self, h_BlC: torch.Tensor) -> torch.Tensor:
        """The window-free part of the first layer: (B, l, hidden)."""
        return self.fc1_h(F.layer_norm(h_BlC, (self.C,)))

    def forward(self, h_BlC: torch.Tensor, win_BlX: torch.Tensor) -> torch.Tensor:
        return h_BlC + self.fc2(F.gelu(self.project_h(h_BlC) + self.fc1_w(win_BlX.to(h_BlC.dtype))))


class ScaleStepper:
    """The head's left-to-right draw of one scale, re-laid so that each step costs a few small ops.

    Gives the logits of ``VAR.forward`` for position i given the tokens placed before it (after guidance),
    with everything that does not depend on the window computed once per scale. Both of the head's window
    terms, ``fc1_w(window)`` and the code scores ``<c_v, fc_code(window)>``, are linear in the window, so a placed
    token's effect on the R positions after it is a fixed table row: with ``tables=True`` (the default where the
    table fits, see :meth:`ScaleARHead.push_table`) placing a token adds its row to an accumulator and a step
    reads one accumulator row; otherwise a step reads its window from a buffer of codebook vectors with one
    matmul. Also:

    - guidance is applied before VAR's output head, which is linear:
      ``(1 + t) head(y_c) - t head(y_u) = head((1 + t) y_c - t y_u)``;
    - the per-position constants (head bias, ``-w_s |c_v|^2 / 2``, the coarse-path scores ``extra_BlX`` and,
      for Gumbel-max sampling, the scale's noise ``noise_BlX``) start in the accumulator;
    - GELU is written with ``erf`` on pre-activations kept divided by sqrt(2).

    Parameters
    ----------
    head : ScaleARHead
    h_nBlC : Tensor (nB, l, C)
        The scale's last hidden states; nB = 2B with guidance (conditional rows first), B without.
    head_nm : AdaLNBeforeHead
        VAR's norm before the output head; ``scale_shift`` its modulation (each (nB, 1, C)).
    out : nn.Linear
        VAR's output head, C -> G * V.
    book_GVd : Tensor (G, V, d)
        The scale's codebooks.
    si : int
        Scale index (selects the head's ``norm_w`` and cached table).
    B : int
    t : float | None
        Guidance strength at this scale (None: no guidance, nB = B).
    extra_BlX, noise_BlX : Tensor (B, l, G * V) | None
        Added to every logit of position i (noise: the returned logits are then the noised ones).
    tables : bool | None
        Use the push table (None: when it fits the head's size limit).
    """

    def __init__(self, head: ScaleARHead, h_nBlC: torch.Tensor, head_nm: nn.Module,
                 scale_shift: tuple[torch.Tensor, torch.Tensor], out: nn.Linear, book_GVd: torch.Tensor, si: int,
                 B: int, t: float | None, extra_BlX: torch.Tensor | None = None,
                 noise_BlX: torch.Tensor | None = None, tables: bool | None = None) -> None:
        nB, l, C = h_nBlC.shape
        G, V, d = book_GVd.shape
        R, Cv = head.R, head.Cvae
        self.B, self.R, self.t, self.G, self.V = B, R, t, G, V
        self.H = H = head.fc2.in_features
        X = H + G * V
        book = book_GVd.float()
        # per position: [pre-activation / sqrt(2) | logits' window-free constants]; R spill rows for the pushes
        self.acc = h_nBlC.new_zeros(B, l + R, X)
        const = out.bias - 0.5 * head.norm_w[si] * book.square().sum(-1).reshape(G * V)
        self.acc[:, :l, H:] = const
        for add in (extra_BlX, noise_BlX):
            if add is not None:
                self.acc[:, :l, H:] += add
        a_lnH = head.project_h(h_nBlC).mul(_SQRT_HALF).transpose(0, 1).contiguous()
        self.a_l = a_lnH.view(l, 2, B, H).unbind(0) if t is not None else a_lnH.unbind(0)
        self.res_l = (h_nBlC + head.fc2.bias).transpose(0, 1).contiguous().unbind(0)
        self.fc2_T = head.fc2.weight.T.mul(_SQRT_HALF).contiguous()
        self.C, self.eps = C, head_nm.ln_wo_grad.eps
        scale, shift = scale_shift
        self.mul_nC, self.shift_nC = scale[:, 0].add(1), shift[:, 0].contiguous()
        self.out_T = out.weight.T.contiguous()
        self.fused_W = None
        if B == 1:  # one sample: AdaLN's (scale, shift) and the guidance mix fold into the output head's weight
            w_n = [1.0 + t, -t] if t is not None else [1.0]
            self.fused_W = torch.cat([w * self.mul_nC[r, :, None] * self.out_T for r, w in enumerate(w_n)])  # (nB*C, GV)
            self.acc[:, :l, H:] += sum(w * self.shift_nC[r] @ self.out_T for r, w in enumerate(w_n))
        self.row_l = self.acc[:, :l].unbind(1)  # (B, X) views
        self.rowH_l = [r[:, :H] for r in self.row_l]
        self.rowV_l = [r[:, H:] for r in self.row_l]
        self.offs_G = torch.arange(G, device=book.device) * V
        self.one_row = B * G == 1 and book.device.type == "cpu"  # place by a view of one table row (int() syncs a GPU)
        use_table = head.table_fits(V * G) if tables is None else tables
        if use_table:
            self.table = head.push_table(book_GVd, si)  # (G * V, R, X)
            self.next_l = [self.acc[:, i + 1:i + 1 + R] for i in range(l)]
        else:
            self.table = None
            W = head.oldest_first_weight().float()  # (H + Cv, R * Cv)
            code_W = torch.einsum("gdx,gvd->xgv", W[H:].view(G, d, R * Cv), book).reshape(R * Cv, G * V)
            self.win_W = torch.cat((W[:H].T * _SQRT_HALF, code_W), dim=1).contiguous()  # (R * Cv, X)
            self.book_X = book.reshape(G * V, d)
            self.buf = h_nBlC.new_zeros(B, R + l, Cv)  # buf[:, R + j]: codebook vector of position j
            self.win_l = [self.buf[:, i:i + R].view(B, R * Cv) for i in range(l)] if B == 1 else None
            self.slot_l = self.buf[:, R:].unbind(1)

    def logits(self, i: int) -> torch.Tensor:
        """Logits of position i after guidance, given the tokens placed at positions < i: (B, G, V)."""
        B, H = self.B, self.H
        if self.table is None:
            win = self.win_l[i] if self.win_l is not None else self.buf[:, i:i + self.R].reshape(B, -1)
            row = torch.addmm(self.row_l[i], win, self.win_W)
            row_H, row_V = row[:, :H], row[:, H:]
        else:
            row_H, row_V = self.rowH_l[i], self.rowV_l[i]
        q = (self.a_l[i] + row_H).view(-1, H)  # (nB, H): both guidance branches share the window
        h = torch.addmm(self.res_l[i], _gelu_scaled(q), self.fc2_T)
        n = F.layer_norm(h, (self.C,), eps=self.eps)
        if self.fused_W is not None:
            return torch.addmm(row_V, n.view(1, -1), self.fused_W).view(1, self.G, self.V)
        y = torch.addcmul(self.shift_nC, n, self.mul_nC)
        if self.t is not None:
            y = torch.lerp(y[B:], y[:B], 1 + self.t)
        return torch.addmm(row_V, y, self.out_T).view(B, self.G, self.V)

    def place(self, i: int, tok_BG: torch.Tensor) -> None:
        """Record position i's tokens (B, G) for the positions after it."""
        flat = (tok_BG + self.offs_G).view(-1) if self.G > 1 else tok_BG.view(-1)
        if self.table is None:
            self.slot_l[i].copy_(self.book_X.index_select(0, flat).view(self.B, -1))
        elif self.one_row:
            self.next_l[i].add_(self.table[int(flat)])
        else:
            rows = self.table.index_select(0, flat)  # (B * G, R, X)
            self.next_l[i].add_(rows.view(self.B, self.G, self.R, -1).sum(1) if self.G > 1 else rows)
