"""The VAR transformer on 1D multi-scale token maps (upstream ``models/var.py``).

Shape letters: B batch; L positions over all scales (``sum(patch_nums)``), l positions in one scale;
G tokens per position (``tokens_per_pos`` of the tokenizer; 1 = upstream); C width (= D, condition
width); Cvae latent channels; V vocabulary size per token group. A scale ``si`` has ``pn`` positions and
``pn * G`` tokens, laid out position-major; logits come as (B, L * G, V) to line up with
``torch.cat(gt_idx_Bl, dim=1)``.

This module knows nothing about EEG: the tokenizer (``vae_local``), the scale layout and the number of
classes arrive as constructor arguments.
"""
from __future__ import annotations

import math
from functools import partial
from typing import Optional, Sequence

import torch
import torch.nn as nn

from models.basic_var import AdaLNBeforeHead, AdaLNSelfAttn
from models.helpers import gumbel_softmax_with_rng, mask_to_top_k_, sample_with_top_k_top_p_, sampling_rng_and_labels, \
    sampling_temperatures
from models.intra_ar import ScaleARHead, ScaleStepper, left_window
from models.intra_scale import CONTENT, QUERY, TokenAttrs, attend_bias, check_steps, chunk_bounds as _chunks, \
    chunk_of_groups, groups_of_positions, neighbour_features

__all__ = ["VAR", "SharedAdaLin"]


class SharedAdaLin(nn.Linear):
    """Linear D -> 6C whose output is reshaped to (B, 1, 6, C) (shared AdaLN)."""

    def forward(self, cond_BD: torch.Tensor) -> torch.Tensor:
        C = self.weight.shape[0] // 6
        return super().forward(cond_BD).view(-1, 1, 6, C)


class VAR(nn.Module):
    """Next-scale prediction transformer.

    Parameters
    ----------
    vae_local : VQVAE
        The frozen tokenizer; kept in a tuple, so it is not a registered submodule (not in
        ``state_dict``, ``parameters()``, ``.to()`` or DDP), as upstream.
    num_classes : int
        Number of classes; row ``num_classes`` of ``class_emb`` is the null class (condition dropout,
        classifier-free guidance). One class = unconditional.
    depth, embed_dim, num_heads, mlp_ratio : int, int, int, float
        Transformer size (upstream's rule: width 64 * depth, heads = depth).
    drop_rate, attn_drop_rate, drop_path_rate : float
        Dropouts; drop path grows linearly from 0 (block 0) to ``drop_path_rate`` (last block).
    norm_eps : float
        LayerNorm epsilon.
    shared_aln : bool
        One condition projection shared by all blocks.
    cond_drop_rate : float
        Probability of replacing a label with the null class during training.
    attn_l2_norm : bool
        Cosine attention.
    patch_nums : sequence of int
        Positions per scale (the tokenizer's ``v_patch_nums``), strictly increasing.
    intra_steps : int
        Groups per scale predicted one after another (see ``models/intra_scale.py``); 1 = upstream VAR,
        every token of a scale at once.
    intra_mix : float
        Training only: probability of a step drawn with a random coarser chunk schedule (1..intra_steps
        chunks), so that sampling with fewer steps than ``intra_steps`` stays in distribution.
    intra_nbr : int
        With ``intra_steps > 1``: each query also gets the placed tokens within this many positions of it
        (``intra_scale.neighbour_features``) through a linear layer; 0 = attention only.
    intra_ar : int
        With ``intra_steps == 1``: draw the tokens of a scale left to right after its one transformer pass,
        each seeing the codebook vectors of the ``intra_ar`` positions before it (``models/intra_ar.py``);
        0 = upstream VAR, every token of a scale at once.
    intra_ar_fhat : int
        With ``intra_ar``: the head's codebook-space term also sees the coarser scales' reconstruction (the
        upsampled f_hat fed as the scale's input) at positions i-r..i+r, r = this value; 0 = off.
    num_levels : int
        Per-window power levels (``utils/eeg_levels.py``): the condition is ``class_emb(class) +
        level_emb(level)``, and sampling draws the level from ``level_prior`` (its training frequency in the
        class) before the first scale; row ``num_levels`` of ``level_emb`` is the unknown level (the null class
        always has it: training drops the level with the class). 0 = class only.
    """

    def __init__(self, vae_local, num_classes: int = 1000, depth: int = 16, embed_dim: int = 1024,
                 num_heads: int = 16, mlp_ratio: float = 4.0, drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, norm_eps: float = 1e-6, shared_aln: bool = False,
                 cond_drop_rate: float = 0.1, attn_l2_norm: bool = False,
                 patch_nums: Sequence[int] = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16),
                 flash_if_available: bool = True, fused_if_available: bool = True, intra_steps: int = 1,
                 intra_mix: float = 0.25, intra_nbr: int = 0, intra_ar: int = 0, intra_ar_fhat: int = 0,
                 num_levels: int = 0) -> None:
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim={embed_dim} is not divisible by num_heads={num_heads}")
        quant = vae_local.quantize
        # port: G tokens per position; V is the size of each group's codebook
        self.Cvae, self.V, self.G = int(quant.Cvae), int(quant.vocab_size), int(quant.tokens_per_pos)
        self.depth, self.C, self.D, self.num_heads = depth, embed_dim, embed_dim, num_heads
        self.cond_drop_rate = cond_drop_rate
        self.prog_si = -1

        self.patch_nums: tuple[int, ...] = tuple(int(p) for p in patch_nums)
        if tuple(quant.v_patch_nums) != self.patch_nums:
            raise ValueError(f"patch_nums={self.patch_nums} differ from the tokenizer's {tuple(quant.v_patch_nums)}")
        self.L = sum(self.patch_nums)  # port: 1D scales have pn positions (upstream: pn ** 2)
        self.first_l = self.patch_nums[0]
        self.begin_ends: list[tuple[int, int]] = []
        cur = 0
        for pn in self.patch_nums:
            self.begin_ends.append((cur, cur + pn))
            cur += pn
        self.num_stages_minus_1 = len(self.patch_nums) - 1
        self.rng = torch.Generator(device="cpu")
        # port: training randomness (condition dropout, drop path) comes from this CPU generator, which the
        # trainer reseeds per step, so a resumed run draws what an uninterrupted run would
        self.train_rng = torch.Generator(device="cpu")

        self.vae_proxy = (vae_local,)
        self.vae_quant_proxy = (quant,)
        self.word_embed = nn.Linear(self.Cvae, self.C)

        init_std = math.sqrt(1 / self.C / 3)
        self.num_classes = int(num_classes)
        self.register_buffer("uniform_prob", torch.full((1, self.num_classes), fill_value=1.0 / self.num_classes,
                                                        dtype=torch.float32), persistent=False)
        self.class_emb = nn.Embedding(self.num_classes + 1, self.C)
        nn.init.trunc_normal_(self.class_emb.weight.data, mean=0, std=init_std)
        self.num_levels = int(num_levels)
        if self.num_levels > 0:
            self.level_emb = nn.Embedding(self.num_levels + 1, self.C)
            nn.init.trunc_normal_(self.level_emb.weight.data, mean=0, std=init_std)
            # row c: level frequencies in class c (set from the training windows by set_level_prior)
            self.register_buffer("level_prior", torch.full((self.num_classes, self.num_levels), 1.0 / self.num_levels))
        self.pos_start = nn.Parameter(torch.empty(1, self.first_l, self.C))
        nn.init.trunc_normal_(self.pos_start.data, mean=0, std=init_std)

        pos_1LC = []
        for pn in self.patch_nums:
            pe = torch.empty(1, pn, self.C)  # port: one learned vector per 1D position of each scale
            nn.init.trunc_normal_(pe, mean=0, std=init_std)
            pos_1LC.append(pe)
        self.pos_1LC = nn.Parameter(torch.cat(pos_1LC, dim=1))
        self.lvl_embed = nn.Embedding(len(self.patch_nums), self.C)
        nn.init.trunc_normal_(self.lvl_embed.weight.data, mean=0, std=init_std)

        self.shared_ada_lin = nn.Sequential(nn.SiLU(inplace=False), SharedAdaLin(self.D, 6 * self.C)) \
            if shared_aln else nn.Identity()

        norm_layer = partial(nn.LayerNorm, eps=norm_eps)
        self.drop_path_rate = drop_path_rate
        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, depth)]
        self.blocks = nn.ModuleList([
            AdaLNSelfAttn(cond_dim=self.D, shared_aln=shared_aln, block_idx=block_idx, embed_dim=self.C,
                          norm_layer=norm_layer, num_heads=num_heads, mlp_ratio=mlp_ratio, drop=drop_rate,
                          attn_drop=attn_drop_rate, drop_path=dpr[block_idx],
                          last_drop_p=0 if block_idx == 0 else dpr[block_idx - 1], attn_l2_norm=attn_l2_norm,
                          flash_if_available=flash_if_available, fused_if_available=fused_if_available)
            for block_idx in range(depth)])
        for m in self.modules():
            if hasattr(m, "drop_prob") and hasattr(m, "rng"):
                m.rng = self.train_rng

        # block-causal mask: a position sees every position of its own scale and of earlier scales
        d_L = torch.cat([torch.full((pn,), i) for i, pn in enumerate(self.patch_nums)])
        self.register_buffer("lvl_1L", d_L.view(1, self.L).contiguous())
        allowed_LL = d_L.view(self.L, 1) >= d_L.view(1, self.L)
        attn_bias_for_masking = torch.where(allowed_LL, 0.0, -torch.inf).reshape(1, 1, self.L, self.L)
        self.register_buffer("attn_bias_for_masking", attn_bias_for_masking.contiguous())

        self.head_nm = AdaLNBeforeHead(self.C, self.D, norm_layer=norm_layer)
        self.head = nn.Linear(self.C, self.G * self.V)  # port: G tokens per position

        # steps inside a scale: content tokens (a placed token's codebook vector) for groups 0..S-2
        self.intra_steps, self.intra_mix = int(intra_steps), float(intra_mix)
        if self.intra_steps < 1 or self.intra_steps > min(self.patch_nums):
            raise ValueError(f"intra_steps={intra_steps} must be in 1..{min(self.patch_nums)} (the smallest scale of "
                             f"{list(self.patch_nums)})")
        if not 0.0 <= self.intra_mix <= 1.0:
            raise ValueError(f"intra_mix={intra_mix} must be in [0, 1]")
        self.intra_nbr = int(intra_nbr) if self.intra_steps > 1 else 0
        if self.intra_nbr < 0:
            raise ValueError(f"intra_nbr={intra_nbr} must be >= 0")
        self.intra_ar = int(intra_ar)
        if self.intra_ar < 0:
            raise ValueError(f"intra_ar={intra_ar} must be >= 0")
        if self.intra_ar > 0 and self.intra_steps > 1:
            raise ValueError(f"intra_ar={intra_ar} and intra_steps={intra_steps}: choose one way of drawing the tokens "
                             "inside a scale (left to right, or in steps)")
        self.intra_ar_fhat = int(intra_ar_fhat) if self.intra_ar > 0 else 0
        if self.intra_ar_fhat < 0:
            raise ValueError(f"intra_ar_fhat={intra_ar_fhat} must be >= 0")
        self.intra_ar_head = ScaleARHead(self.C, self.Cvae, self.intra_ar, len(self.patch_nums),
                                         fhat_r=self.intra_ar_fhat) if self.intra_ar > 0 else None
        self.groups_per_scale = [groups_of_positions(pn, self.intra_steps) for pn in self.patch_nums]
        if self.intra_steps > 1:
            self.content_embed = nn.Linear(self.Cvae, self.C)
            if self.intra_nbr > 0:
                self.neighbour_embed = nn.Linear(2 * self.intra_nbr * (self.Cvae + 1), self.C)
            q_attrs = TokenAttrs.cat([TokenAttrs.make(si, QUERY, g) for si, g in enumerate(self.groups_per_scale)])
            c_pos, c_parts = [], []
            for si, ((bg, _), g) in enumerate(zip(self.begin_ends, self.groups_per_scale)):
                has_c = torch.nonzero(g < self.intra_steps - 1).flatten()
                c_pos.append(bg + has_c)
                c_parts.append(TokenAttrs.make(si, CONTENT, g[has_c]))
            self._train_attrs = (q_attrs, TokenAttrs.cat(c_parts))
            self.register_buffer("content_pos", torch.cat(c_pos), persistent=False)  # index into L
            self._bias_cache: dict = {}

    @property
    def needs_gt_tokens(self) -> bool:
        """Whether ``forward`` reads the ground-truth tokens of a scale (steps or a left-to-right head)."""
        return self.intra_steps > 1 or self.intra_ar > 0

    def _n_scales_to(self, ed: int) -> int:
        """Number of scales in positions ``[0, ed)`` (``ed`` is the end of a scale)."""
        return next(si for si, (_, e) in enumerate(self.begin_ends) if e == ed) + 1

    def _code_vectors(self, gt_BL: torch.Tensor, n_sc: int, dev) -> torch.Tensor:
        """Codebook vectors of the ground-truth tokens of the first ``n_sc`` scales: (B, L', Cvae)."""
        quant = self.vae_quant_proxy[0]
        return torch.cat([quant.embed_idx(si, gt_BL[:, b * self.G:e * self.G].to(dev).long())
                          for si, (b, e) in enumerate(self.begin_ends[:n_sc])], dim=2).transpose(1, 2)

    # ------------------------------------------------------------------------------------------
    def condition(self, label_B: torch.Tensor, level_B: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The condition vector (B, C): class embedding, plus the level's with ``num_levels``."""
        cond_BD = self.class_emb(label_B)
        if self.num_levels > 0:
            if level_B is None:
                level_B = torch.full_like(label_B, self.num_levels)
            cond_BD = cond_BD + self.level_emb(level_B)
        return cond_BD

    def resolve_levels(self, label_B: torch.Tensor, level_B: Optional[torch.Tensor | int],
                       rng: Optional[torch.Generator]) -> Optional[torch.Tensor]:
        """Levels of a sampling call (None when the model has none): a tensor as is, an int for all (negative =
        unknown), None drawn from ``level_prior[label]`` with ``rng`` (unknown for the null class)."""
        if self.num_levels == 0:
            if level_B is not None and not (isinstance(level_B, int) and level_B < 0):
                raise ValueError("this VAR has no levels (num_levels=0); drop level_B")
            return None
        dev = label_B.device
        if level_B is None:
            null = label_B >= self.num_classes
            probs = self.level_prior.to(dev)[label_B.clamp(max=self.num_classes - 1)].float()
            drawn = torch.multinomial(probs, num_samples=1, generator=rng).reshape(-1)
            return torch.where(null, self.num_levels, drawn)
        if isinstance(level_B, int):
            level_B = torch.full_like(label_B, self.num_levels if level_B < 0 else level_B)
        level_B = level_B.to(dev).long()
        if level_B.shape != label_B.shape or bool(((level_B < 0) | (level_B > self.num_levels)).any()):
            raise ValueError(f"level_B {tuple(level_B.shape)} must hold one level in 0..{self.num_levels} "
                             f"({self.num_levels} = unknown) per sample")
        return level_B

    def sampling_levels(self, label_B: torch.Tensor, level_B: Optional[torch.Tensor | int],
                        g_seed: Optional[int]) -> Optional[torch.Tensor]:
        """The levels ``autoregressive_infer_cfg`` uses (see :meth:`resolve_levels`), on ``label_B``'s device.

        Drawn levels come from their own CPU generator seeded ``g_seed``, not from the token draws, so a caller
        that gets them here first and passes them in (sample.py records them) samples the same tokens.
        """
        if self.num_levels == 0:
            return self.resolve_levels(label_B, level_B, None)  # (checks that none was asked for)
        level_gen = torch.Generator().manual_seed(int(g_seed)) if g_seed is not None else None
        return self.resolve_levels(label_B.cpu(), level_B, level_gen).to(label_B.device)

    def set_level_prior(self, prior_KL: torch.Tensor) -> None:
        """Store the level frequencies per class (K, L)."""
        prior = torch.as_tensor(prior_KL, dtype=torch.float32)
        if prior.shape != (self.num_classes, self.num_levels):
            raise ValueError(f"level prior of shape {tuple(prior.shape)}; expected ({self.num_classes}, {self.num_levels})")
        self.level_prior.copy_(prior.to(self.level_prior.device))

    def get_logits(self, h_or_h_and_residual, cond_BD: Optional[torch.Tensor]) -> torch.Tensor:
        """Head on the last hidden states: (B, l, C) -> (B, l, G * V), in float32."""
        if not isinstance(h_or_h_and_residual, torch.Tensor):
            h, resi = h_or_h_and_residual
            h = resi + self.blocks[-1].drop_path(h)
        else:
            h = h_or_h_and_residual
        return self.head(self.head_nm(h.float(), cond_BD).float()).float()

    def _autocast_off(self, device: torch.device):
        return torch.autocast(device_type=device.type, enabled=False)

    @torch.no_grad()
    def autoregressive_infer_cfg(self, B: int, label_B: Optional[torch.Tensor | int], g_seed: Optional[int] = None,
                                 cfg: float = 1.5, top_k: int = 0, top_p: float = 0.0, more_smooth: bool = False,
                                 gt_prefix_idx_Bl: Optional[Sequence[torch.Tensor]] = None, ret_stages: bool = False,
                                 intra_steps: Optional[int] = None,
                                 keep_src: Optional[tuple[Sequence[torch.Tensor], Sequence[torch.Tensor]]] = None,
                                 level_B: Optional[torch.Tensor | int] = None,
                                 temperature: float | Sequence[float] = 1.0):
        """Sample B token pyramids scale by scale (and group by group inside a scale) with a KV cache and
        classifier-free guidance.

        Parameters
        ----------
        B : int
            Number of samples.
        label_B : LongTensor (B,) | int | None
            Class per sample; an int is used for all (negative = the null class); None draws uniformly.
        g_seed : int | None
            Seed of ``self.rng`` (a generator on the model's device); None uses the global RNG.
        cfg : float
            Guidance strength at the last scale; it grows linearly from 0 at scale 0. 0 disables guidance
            (and the doubled batch).
        top_k, top_p : int, float
            Sampling filters (0 = off).
        more_smooth : bool
            Soft Gumbel code mixing (visualisation only).
        gt_prefix_idx_Bl : sequence of LongTensor (B, pn * G) | None
            Token maps to teacher-force for the first ``len(...)`` scales instead of sampling
            (band completion: observed low stages are kept, the rest is generated).
        ret_stages : bool
            Also return the token maps and the cumulative f_hat after every scale.
        intra_steps : int | None
            Forward passes per scale (chunks of the model's ``intra_steps`` groups); None = all of them
            (exact ancestral sampling), 1 = every token of a scale at once.
        keep_src : (src_idx, keep) | None
            Zero-shot editing: per scale, source tokens (B, pn * G) and a keep mask (B, pn); after each pass the
            kept positions take the source tokens, so later groups and scales see them. Random draws do not
            depend on the mask.
        level_B : LongTensor (B,) | int | None
            With ``num_levels``: the level per sample; an int is used for all (negative = unknown); None draws
            each from ``level_prior`` of its class with a CPU generator seeded ``g_seed`` (apart from the
            token draws, so passing those levels explicitly gives the same tokens).
        temperature : float | sequence of float
            Softmax temperature of the draws (logits / T after guidance), one for all scales or one per scale;
            1 = the model's own distribution. Below 1 the draws follow the model's prediction more closely.

        Returns
        -------
        x_BCT : Tensor, shape (B, C, T)
            port: the tokenizer's decoder output in model units (upstream mapped [-1, 1] images to
            [0, 1]); the caller multiplies by the dataset scale to get µV.
        ms_idx_Bl, ms_fhat_BCl : lists (only with ``ret_stages``)
            Per scale: (B, pn * G) tokens, and (B, Cvae, L) cumulative f_hat (decode each for stage k).
        """
        S = self.intra_steps
        n_chunks = S if intra_steps is None else int(intra_steps)
        check_steps(n_chunks, S, self.patch_nums)
        temps = sampling_temperatures(temperature, len(self.patch_nums))
        dev = self.lvl_1L.device
        rng, label_B = sampling_rng_and_labels(self, B, label_B, g_seed, dev)
        level_B = self.sampling_levels(label_B, level_B, g_seed)
        use_cfg = cfg != 0
        nB = 2 * B if use_cfg else B
        G, V = self.G, self.V
        with self._autocast_off(dev):
            labels = torch.cat((label_B, torch.full_like(label_B, fill_value=self.num_classes))) if use_cfg else label_B
            if level_B is not None:  # the unguided half knows neither class nor level
                level_B = torch.cat((level_B, torch.full_like(level_B, self.num_levels))) if use_cfg else level_B
            sos = cond_BD = self.condition(labels, level_B)
            lvl_pos = self.lvl_embed(self.lvl_1L) + self.pos_1LC
            next_token_map = sos.unsqueeze(1).expand(nB, self.first_l, -1) + self.pos_start.expand(nB, self.first_l, -1) \
                + lvl_pos[:, :self.first_l]
        quant = self.vae_quant_proxy[0]
        SN = len(self.patch_nums)
        f_hat = sos.new_zeros(B, self.Cvae, self.patch_nums[-1], dtype=torch.float32)
        ms_idx_Bl, ms_fhat = [], []
        cache_attrs: list[TokenAttrs] = []
        for b in self.blocks:
            b.attn.kv_caching(True)
        coarse_BlCv = sos.new_zeros(B, self.patch_nums[0], self.Cvae)  # the coarser reconstruction (none at scale 0)
        try:
            for si, pn in enumerate(self.patch_nums):
                ratio = si / self.num_stages_minus_1 if self.num_stages_minus_1 > 0 else 1.0
                temp = temps[si]
                bg = self.begin_ends[si][0]
                cond_BD_or_gss = self.shared_ada_lin(cond_BD)
                grp = self.groups_per_scale[si]
                teacher = gt_prefix_idx_Bl is not None and si < len(gt_prefix_idx_Bl)
                if teacher:
                    given_BlG = gt_prefix_idx_Bl[si].to(dev).long().view(B, pn, G)
                if keep_src is not None:
                    src_BlG = keep_src[0][si].to(dev).long().view(B, pn, G)
                    keep_Bl = keep_src[1][si].to(dev).bool()
                idx_BlG = torch.zeros(B, pn, G, dtype=torch.long, device=dev)
                soft_BlGV = sos.new_zeros(B, pn, G, V) if more_smooth and not teacher else None
                prev_pos = None
                chunk_l = chunk_of_groups(S, n_chunks)[grp] if self.intra_nbr > 0 else None
                h_BlC = sos.new_zeros(B, pn, self.Cvae) if chunk_l is not None else None  # placed tokens' vectors
                for ga, gb in _chunks(S, n_chunks):
                    pos_q = torch.nonzero((grp >= ga) & (grp < gb)).flatten()
                    xs, attrs = [], []
                    if prev_pos is not None:  # contents of the chunk just placed
                        pp = prev_pos.to(dev)
                        h_BnC = quant.embed_idx(si, idx_BlG[:, pp].reshape(B, -1)).transpose(1, 2).float()
                        if h_BlC is not None:
                            h_BlC[:, pp] = h_BnC
                        cx = self.content_embed(h_BnC) + lvl_pos[:, bg + pp]
                        xs.append(cx.repeat(2, 1, 1) if use_cfg else cx)
                        attrs.append(TokenAttrs.make(si, CONTENT, grp[prev_pos]))
                    q_in = next_token_map[:, pos_q.to(dev)]
                    if chunk_l is not None:  # placed neighbours, as in training (see neighbour_features)
                        nb = self.neighbour_embed(neighbour_features(h_BlC, chunk_l, pos_q, self.intra_nbr))
                        q_in = q_in + (nb.repeat(2, 1, 1) if use_cfg else nb)
                    xs.append(q_in)
                    attrs.append(TokenAttrs.make(si, QUERY, grp[pos_q]))
                    new_attrs = TokenAttrs.cat(attrs)
                    cache_attrs.append(new_attrs)
                    bias = None if S == 1 else self._pass_bias(len(cache_attrs) - 1, cache_attrs, n_chunks, dev)
                    x = torch.cat(xs, dim=1) if len(xs) > 1 else xs[0]
                    for b in self.blocks:
                        x = b(x=x, cond_BD=cond_BD_or_gss, attn_bias=bias)
                    n = pos_q.numel()

                    def draw(logits_BlV: torch.Tensor, pq: torch.Tensor, guided: bool = False,
                             noised: Optional[torch.Tensor] = None):
                        """Tokens (B, n, G) of positions ``pq`` from their logits (nB, n * G, V); ``guided``: the
                        logits are (B, n * G, V) with guidance applied; ``noised``: Gumbel noise of that shape
                        (draw by argmax)."""
                        n_ = pq.numel()
                        if use_cfg and not guided:
                            t = cfg * ratio
                            logits_BlV = (1 + t) * logits_BlV[:B] - t * logits_BlV[B:]
                        if temp != 1.0:
                            logits_BlV = logits_BlV / temp
                        if teacher:
                            out = given_BlG[:, pq]
                        elif noised is not None:  # Gumbel-max: argmax(logits + Gumbel noise) ~ softmax(logits)
                            if top_k > 0:  # the same draw restricted to the k most likely codes
                                logits_BlV = mask_to_top_k_(logits_BlV, top_k)
                            out = (logits_BlV + noised).argmax(dim=-1).view(B, n_, G)
                        elif not more_smooth:
                            out = sample_with_top_k_top_p_(logits_BlV, rng=rng, top_k=top_k, top_p=top_p,
                                                           num_samples=1)[:, :, 0].view(B, n_, G)
                        else:
                            gum_t = max(0.27 * (1 - ratio * 0.95), 0.005)
                            soft = gumbel_softmax_with_rng(logits_BlV.mul(1 + ratio), tau=gum_t, hard=False, dim=-1,
                                                           rng=rng).view(B, n_, G, V)
                            soft_BlGV[:, pq] = soft
                            out = soft.argmax(dim=-1)
                        if keep_src is not None:
                            out = torch.where(keep_Bl[:, pq, None], src_BlG[:, pq], out)
                        return out

                    pq = pos_q.to(dev)
                    if self.intra_ar_head is None or teacher:
                        idx_BlG[:, pq] = draw(self.get_logits(x[:, -n:], cond_BD).view(nB, n * G, V), pq)
                    else:  # left to right after the scale's one pass: forward's head, re-laid for one step
                        # without top-p or soft mixing: Gumbel-max, the scale's noise drawn up front (one RNG call)
                        gumbel = not (top_p > 0 or more_smooth)
                        noise = -torch.empty(B, pn, G, V, device=dev).exponential_(generator=rng).log() \
                            if gumbel else None
                        folded = gumbel and top_k <= 0  # the noise joins the stepper's constants: argmax is the draw
                        book_GVd = quant.codebook_GVd(si).detach().float()
                        extra = self.intra_ar_head.fhat_logits(coarse_BlCv, book_GVd) if self.intra_ar_fhat > 0 else None
                        step = ScaleStepper(self.intra_ar_head, x[:, -n:].float(), self.head_nm,
                                            self.head_nm.modulation(cond_BD), self.head, book_GVd, si, B,
                                            cfg * ratio if use_cfg else None, extra,
                                            # argmax(l + T g) draws from softmax(l / T) like argmax(l / T + g)
                                            noise.view(B, pn, G * V) * temp if folded else None)
                        noise_l = [None] * pn if noise is None or folded else noise.unbind(1)
                        keep_l = keep_Bl.unbind(1) if keep_src is not None else None
                        toks = []
                        for i in range(pn):
                            if folded:
                                tok_BG = step.logits(i).argmax(dim=-1)
                                if keep_l is not None:
                                    tok_BG = torch.where(keep_l[i][:, None], src_BlG[:, i], tok_BG)
                            else:
                                tok_BG = draw(step.logits(i), pq[i:i + 1], guided=True, noised=noise_l[i])[:, 0]
                            toks.append(tok_BG)
                            step.place(i, tok_BG)
                        idx_BlG[:] = torch.stack(toks, dim=1)
                    prev_pos = pos_q
                idx_Bl = idx_BlG.view(B, pn * G)
                if soft_BlGV is not None and keep_src is None:
                    book_GVd = quant.codebook_GVd(si)
                    h_BCl = torch.einsum("blgv,gvd->blgd", soft_BlGV, book_GVd.float()).reshape(B, pn, self.Cvae).transpose(1, 2)
                else:
                    h_BCl = quant.embed_idx(si, idx_Bl)
                f_hat, next_BCl = quant.get_next_autoregressive_input(si, SN, f_hat, h_BCl)
                if ret_stages:
                    ms_idx_Bl.append(idx_Bl)
                    ms_fhat.append(f_hat.clone())
                if si != self.num_stages_minus_1:
                    coarse_BlCv = next_BCl.transpose(1, 2).float()
                    ed = self.begin_ends[si + 1]
                    next_token_map = self.word_embed(coarse_BlCv) + lvl_pos[:, ed[0]:ed[1]]
                    if use_cfg:
                        next_token_map = next_token_map.repeat(2, 1, 1)
        finally:
            for b in self.blocks:
                b.attn.kv_caching(False)
        x_BCT = self.vae_proxy[0].fhat_to_eeg(f_hat)
        if ret_stages:
            return x_BCT, ms_idx_Bl, ms_fhat
        return x_BCT

    def _pass_bias(self, pass_i: int, cache_attrs: list[TokenAttrs], n_chunks: int, dev) -> torch.Tensor:
        """Attention bias of sampling pass ``pass_i`` (its tokens against the whole cache); every schedule's
        passes are the same for every call, so each bias is built once."""
        key = ("pass", n_chunks, pass_i, dev)
        if key not in self._bias_cache:
            self._bias_cache[key] = attend_bias(cache_attrs[-1], TokenAttrs.cat(cache_attrs), self.intra_steps,
                                                n_chunks, dev)
        return self._bias_cache[key]

    def forward(self, label_B: torch.LongTensor, x_BLCv_wo_first_l: Optional[torch.Tensor],
                gt_BL: Optional[torch.Tensor] = None, intra_steps: Optional[int] = None,
                level_B: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Teacher-forced logits for every token.

        Parameters
        ----------
        label_B : LongTensor, shape (B,)
        x_BLCv_wo_first_l : Tensor, shape (B, L - first_l, Cvae) | None
            ``quantize.idxBl_to_var_input`` of the ground-truth tokens (None when ``prog_si == 0``).
        gt_BL : LongTensor, shape (B, L * G) | None
            The ground-truth tokens (``torch.cat(gt_idx_Bl, 1)``); needed when ``intra_steps > 1``, where
            placed tokens are the content tokens of later groups.
        intra_steps : int | None
            Chunk schedule of the attention mask; None = every group its own chunk (exact likelihood under
            the group order) in eval mode, and a random schedule with probability ``intra_mix`` in training.
        level_B : LongTensor, shape (B,) | None
            With ``num_levels``: each window's level (None = unknown). Training drops it to unknown with
            probability ``cond_drop_rate``, and always with the class.

        Returns
        -------
        logits_BLV : Tensor, shape (B, ed * G, V)
            ``ed`` = L, or the end of scale ``prog_si`` in progressive training.
        """
        bg, ed = self.begin_ends[self.prog_si] if self.prog_si >= 0 else (0, self.L)
        if self.needs_gt_tokens and gt_BL is None:
            raise ValueError(f"this VAR has intra_steps={self.intra_steps}, intra_ar={self.intra_ar}: forward needs "
                             "the ground-truth tokens (gt_BL) of the scale it predicts")
        B = label_B.shape[0]
        dev = label_B.device
        with self._autocast_off(dev):
            # fix(upstream) §18.1: condition dropout only in training (upstream also dropped labels in eval_ep)
            if self.num_levels > 0 and level_B is None:
                level_B = torch.full_like(label_B, self.num_levels)
            if self.training and self.cond_drop_rate > 0:
                drop_B = torch.rand(B, generator=self.train_rng) < self.cond_drop_rate
                label_B = torch.where(drop_B.to(dev), self.num_classes, label_B)
                if self.num_levels > 0:  # unknown level: with the class, and on its own at the same rate
                    drop_B = drop_B | (torch.rand(B, generator=self.train_rng) < self.cond_drop_rate)
                    level_B = torch.where(drop_B.to(dev), self.num_levels, level_B)
            sos = cond_BD = self.condition(label_B, level_B)
            sos = sos.unsqueeze(1).expand(B, self.first_l, -1) + self.pos_start.expand(B, self.first_l, -1)
            if self.prog_si == 0 or x_BLCv_wo_first_l is None:
                x_BLC = sos
            else:
                x_BLC = torch.cat((sos, self.word_embed(x_BLCv_wo_first_l.float())), dim=1)
            x_BLC = x_BLC + self.lvl_embed(self.lvl_1L[:, :ed].expand(B, -1)) + self.pos_1LC[:, :ed]
            if self.intra_steps > 1:
                lvl_pos = self.lvl_embed(self.lvl_1L[:, :ed]) + self.pos_1LC[:, :ed]
                x_BLC, attn_bias = self._with_contents(x_BLC, lvl_pos, gt_BL, ed, intra_steps)
            else:
                attn_bias = self.attn_bias_for_masking[:, :, :ed, :ed]
        cond_BD_or_gss = self.shared_ada_lin(cond_BD)

        temp = x_BLC.new_ones(8, 8)
        main_type = torch.matmul(temp, temp).dtype  # the autocast compute dtype (if any)
        x_BLC = x_BLC.to(dtype=main_type)
        cond_BD_or_gss = cond_BD_or_gss.to(dtype=main_type)
        attn_bias = attn_bias.to(dtype=main_type)
        for b in self.blocks:
            x_BLC = b(x=x_BLC, cond_BD=cond_BD_or_gss, attn_bias=attn_bias)
        h_BLC = x_BLC[:, :ed].float()
        if self.intra_ar_head is not None:  # each position also sees the R tokens before it in its scale
            n_sc = self._n_scales_to(ed)
            h_BLCv = self._code_vectors(gt_BL, n_sc, dev).float()
            win = torch.cat([left_window(h_BLCv[:, b:e], self.intra_ar) for b, e in self.begin_ends[:n_sc]], dim=1)
            h_BLC = self.intra_ar_head(h_BLC, win)
        logits = self.get_logits(h_BLC, cond_BD)
        if self.intra_ar_head is not None:
            quant = self.vae_quant_proxy[0]
            f_BLCv = None
            if self.intra_ar_fhat > 0:  # the coarser reconstruction at each position, as fed to the transformer
                coarse = x_BLCv_wo_first_l.float() if (self.prog_si != 0 and x_BLCv_wo_first_l is not None) \
                    else h_BLC.new_zeros(B, ed - self.first_l, self.Cvae)
                f_BLCv = torch.cat((h_BLC.new_zeros(B, self.first_l, self.Cvae), coarse[:, :ed - self.first_l]), dim=1)
            logits = logits + torch.cat([self.intra_ar_head.code_logits(
                win[:, b:e], quant.codebook_GVd(si).detach().float(), si, None if f_BLCv is None else f_BLCv[:, b:e])
                for si, (b, e) in enumerate(self.begin_ends[:n_sc])], dim=1)
        if self.prog_si == 0:
            # keep word_embed in the graph (DDP runs with find_unused_parameters=False)
            logits[0, 0, 0] += self.word_embed.weight[0, 0] * 0 + self.word_embed.bias[0] * 0
        if self.intra_steps > 1:  # a one-chunk schedule attends no content token: same reason
            logits[0, 0, 0] += self.content_embed.weight[0, 0] * 0 + self.content_embed.bias[0] * 0
        return logits.view(B, ed * self.G, self.V)

    def _with_contents(self, x_BLC: torch.Tensor, lvl_pos_BLC: torch.Tensor, gt_BL: Optional[torch.Tensor], ed: int,
                       intra_steps: Optional[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Append the content tokens of the ground truth to the queries; return them and the attention bias.

        x_BLC (B, ed, C) queries -> (B, ed + Nc, C); bias (1, 1, ed + Nc, ed + Nc).
        """
        S = self.intra_steps
        if intra_steps is not None:
            n_chunks = int(intra_steps)
        elif self.training and self.intra_mix > 0 and torch.rand((), generator=self.train_rng).item() < self.intra_mix:
            n_chunks = int(torch.randint(1, S + 1, (), generator=self.train_rng).item())
        else:
            n_chunks = S
        check_steps(n_chunks, S, self.patch_nums)
        B, dev = x_BLC.shape[0], x_BLC.device
        n_sc = self._n_scales_to(ed)
        h_BLCv = self._code_vectors(gt_BL, n_sc, dev)
        q_attrs, c_attrs = self._train_attrs
        n_c = int((c_attrs.scale < n_sc).sum())  # contents are laid out scale by scale
        c_pos = self.content_pos[:n_c]
        c_BNC = self.content_embed(h_BLCv[:, c_pos].float()) + lvl_pos_BLC[:, c_pos]
        if self.intra_nbr > 0:
            chunk_of = chunk_of_groups(S, n_chunks)
            nb = [neighbour_features(h_BLCv[:, b:e].float(), chunk_of[self.groups_per_scale[si]], torch.arange(e - b),
                                     self.intra_nbr) for si, (b, e) in enumerate(self.begin_ends[:n_sc])]
            x_BLC = x_BLC + self.neighbour_embed(torch.cat(nb, dim=1)).to(x_BLC.dtype)
        key = ("train", n_sc, n_chunks, dev)
        if key not in self._bias_cache:
            attrs = TokenAttrs.cat([TokenAttrs(q_attrs.scale[:ed], q_attrs.kind[:ed], q_attrs.group[:ed]),
                                    TokenAttrs(c_attrs.scale[:n_c], c_attrs.kind[:n_c], c_attrs.group[:n_c])])
            self._bias_cache[key] = attend_bias(attrs, attrs, S, n_chunks, dev)
        return torch.cat((x_BLC, c_BNC.to(x_BLC.dtype)), dim=1), self._bias_cache[key]

    def init_weights(self, init_adaln: float = 0.5, init_adaln_gamma: float = 1e-5, init_head: float = 0.02,
                     init_std: float = 0.02, conv_std_or_gain: float = 0.02) -> None:
        """Upstream's init: trunc-normal Linear/Embedding, small head, near-zero residual gates."""
        if init_std < 0:
            init_std = (1 / self.C / 3) ** 0.5
        for m in self.modules():
            with_weight = hasattr(m, "weight") and m.weight is not None
            with_bias = hasattr(m, "bias") and m.bias is not None
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight.data, std=init_std)
                if with_bias:
                    m.bias.data.zero_()
            elif isinstance(m, nn.Embedding):
                nn.init.trunc_normal_(m.weight.data, std=init_std)
                if m.padding_idx is not None:
                    m.weight.data[m.padding_idx].zero_()
            elif isinstance(m, (nn.LayerNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm,
                                nn.GroupNorm, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)):
                if with_weight:
                    m.weight.data.fill_(1.0)
                if with_bias:
                    m.bias.data.zero_()
            elif isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d)):
                if conv_std_or_gain > 0:
                    nn.init.trunc_normal_(m.weight.data, std=conv_std_or_gain)
                else:
                    nn.init.xavier_normal_(m.weight.data, gain=-conv_std_or_gain)
                if with_bias:
                    m.bias.data.zero_()
        if init_head >= 0:
            if isinstance(self.head, nn.Linear):
                self.head.weight.data.mul_(init_head)
                self.head.bias.data.zero_()
        if isinstance(self.head_nm, AdaLNBeforeHead):
            self.head_nm.ada_lin[-1].weight.data.mul_(init_adaln)
            if self.head_nm.ada_lin[-1].bias is not None:
                self.head_nm.ada_lin[-1].bias.data.zero_()
        depth = len(self.blocks)
        for sab in self.blocks:
            sab.attn.proj.weight.data.div_(math.sqrt(2 * depth))
            sab.ffn.fc2.weight.data.div_(math.sqrt(2 * depth))
            if hasattr(sab, "ada_lin"):
                sab.ada_lin[-1].weight.data[2 * self.C:].mul_(init_adaln)
                sab.ada_lin[-1].weight.data[:2 * self.C].mul_(init_adaln_gamma)
                if sab.ada_lin[-1].bias is not None:
                    sab.ada_lin[-1].bias.data.zero_()
            elif hasattr(sab, "ada_gss"):
                sab.ada_gss.data[:, :, 2:].mul_(init_adaln)
                sab.ada_gss.data[:, :, :2].mul_(init_adaln_gamma)
        if getattr(self, "intra_ar_head", None) is not None:  # (ARBaseline reuses this init and has no head)
            self.intra_ar_head.zero_last()  # an untrained head leaves the transformer's logits alone

    def get_config(self) -> dict:
        """Constructor arguments as plain types (the tokenizer is stored separately)."""
        return dict(num_classes=self.num_classes, depth=self.depth, embed_dim=self.C, num_heads=self.num_heads,
                    mlp_ratio=self.blocks[0].ffn.fc1.out_features / self.C if len(self.blocks) else 4.0,
                    drop_path_rate=self.drop_path_rate, norm_eps=self.head_nm.ln_wo_grad.eps,
                    shared_aln=not isinstance(self.shared_ada_lin, nn.Identity), cond_drop_rate=self.cond_drop_rate,
                    attn_l2_norm=self.blocks[0].attn.attn_l2_norm if len(self.blocks) else False,
                    patch_nums=list(self.patch_nums), intra_steps=self.intra_steps, intra_mix=self.intra_mix,
                    intra_nbr=self.intra_nbr, intra_ar=self.intra_ar, intra_ar_fhat=self.intra_ar_fhat,
                    num_levels=self.num_levels)

    def extra_repr(self) -> str:
        return f"drop_path_rate={self.drop_path_rate:g}, G={self.G}, V={self.V}, L={self.L}"
