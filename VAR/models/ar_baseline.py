"""Raster-order next-token baseline for VAR: same blocks, depth, width and tokenizer, one token per step.

Shape letters as in :mod:`models.var`: B batch; N tokens in the flattened sequence; C width (= D, condition
width); Cvae latent channels; V vocabulary size per token group; G tokens per position.

Two token sequences of the same tokenizer are supported (``sequence=``):

- ``"pyramid"`` (default): every token VAR generates, scale after scale, each scale in time order
  (``N = sum(patch_nums) * G``). It decodes exactly like VAR's output, so sample quality compares the
  two generation orders on identical tokens; it needs ``N`` forward passes per window.
- ``"last"``: only the full-resolution token map, i.e. the latent quantised with the last scale's codebook
  alone (``N = patch_nums[-1] * G``), the single-scale sequence an image AR baseline would use. With a
  multi-scale tokenizer this codebook holds residuals, so its reconstruction is poor (1.8 dB SNR versus
  9.3 dB for the pyramid with the final eegmat tokenizer); it is kept for the speed comparison.

Sampling uses the blocks' KV cache (one new token per forward pass) and the same classifier-free
guidance as VAR, with the guidance strength ramped linearly over the sequence.
"""
from __future__ import annotations

import math
from functools import partial
from typing import Optional

import torch
import torch.nn as nn

from models.basic_var import AdaLNBeforeHead, AdaLNSelfAttn
from models.helpers import sample_with_top_k_top_p_, sampling_rng_and_labels
from models.var import VAR

__all__ = ["ARBaseline", "build_ar_baseline", "SEQUENCES"]

SEQUENCES = ("pyramid", "last")


class ARBaseline(nn.Module):
    """Next-token transformer over one flattened token sequence of a band tokenizer.

    Parameters
    ----------
    vae_local : VQVAE
        The frozen tokenizer (kept in a tuple, not a submodule, as in VAR).
    num_classes : int
        Classes; row ``num_classes`` of ``class_emb`` is the null class.
    depth, embed_dim, num_heads, mlp_ratio : int, int, int, float
        Transformer size (same rule as VAR: width 64 * depth, heads = depth, via :func:`build_ar_baseline`).
    drop_path_rate, norm_eps, cond_drop_rate, attn_l2_norm, shared_aln :
        As in :class:`models.var.VAR`.
    sequence : {"pyramid", "last"}
        Which token sequence is modelled (see the module docstring).
    """

    def __init__(self, vae_local, num_classes: int = 2, depth: int = 4, embed_dim: int = 256, num_heads: int = 4,
                 mlp_ratio: float = 4.0, drop_path_rate: float = 0.0, norm_eps: float = 1e-6,
                 cond_drop_rate: float = 0.1, attn_l2_norm: bool = True, shared_aln: bool = False,
                 sequence: str = "pyramid") -> None:
        super().__init__()
        if sequence not in SEQUENCES:
            raise ValueError(f"sequence={sequence!r}; expected one of {SEQUENCES}")
        if shared_aln:
            raise ValueError("shared_aln=True is not supported by the AR baseline")
        if embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim={embed_dim} is not divisible by num_heads={num_heads}")
        quant = vae_local.quantize
        self.vae_proxy, self.vae_quant_proxy = (vae_local,), (quant,)
        self.Cvae, self.V, self.G = int(quant.Cvae), int(quant.vocab_size), int(quant.tokens_per_pos)
        self.patch_nums = tuple(int(p) for p in quant.v_patch_nums)
        self.sequence = sequence
        self.depth, self.C, self.D, self.num_heads = depth, embed_dim, embed_dim, num_heads
        self.num_classes, self.cond_drop_rate, self.drop_path_rate = int(num_classes), cond_drop_rate, drop_path_rate
        self.prog_si = -1  # VAR's trainer interface; unused
        self.takes_tokens = sequence == "pyramid"  # VARTrainer feeds it gt tokens, not VAR's f_hat inputs
        # scales in the sequence: all (pyramid) or only the last one
        self.seq_scales = tuple(range(len(self.patch_nums))) if sequence == "pyramid" else (len(self.patch_nums) - 1,)
        lens = [self.patch_nums[si] * self.G for si in self.seq_scales]
        self.N = int(sum(lens))
        # port: token t's codebook (scale book and group g), as an offset into one shared embedding table
        book_N = torch.cat([torch.full((n,), quant._book(si)) for si, n in zip(self.seq_scales, lens)])
        grp_N = torch.cat([torch.arange(n) % self.G for n in lens])
        self.register_buffer("tok_offset_1N", ((book_N * self.G + grp_N) * self.V).view(1, self.N), persistent=False)
        lvl_N = torch.cat([torch.full((n,), i) for i, n in enumerate(lens)])
        self.register_buffer("lvl_1N", lvl_N.view(1, self.N), persistent=False)
        n_books = int(book_N.max()) + 1

        init_std = math.sqrt(1 / self.C / 3)
        self.register_buffer("uniform_prob", torch.full((1, self.num_classes), 1.0 / self.num_classes),
                             persistent=False)
        self.class_emb = nn.Embedding(self.num_classes + 1, self.C)
        self.tok_emb = nn.Embedding(n_books * self.G * self.V, self.C)
        self.pos_start = nn.Parameter(torch.empty(1, 1, self.C))
        self.pos_1NC = nn.Parameter(torch.empty(1, self.N, self.C))
        self.lvl_embed = nn.Embedding(len(lens), self.C)
        for t in (self.class_emb.weight, self.pos_start, self.pos_1NC, self.lvl_embed.weight):
            nn.init.trunc_normal_(t.data, mean=0, std=init_std)
        self.shared_ada_lin = nn.Identity()
        norm_layer = partial(nn.LayerNorm, eps=norm_eps)
        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, depth)]
        self.train_rng = torch.Generator(device="cpu")
        self.rng = torch.Generator(device="cpu")
        self.blocks = nn.ModuleList([
            AdaLNSelfAttn(cond_dim=self.D, shared_aln=False, block_idx=i, embed_dim=self.C, norm_layer=norm_layer,
                          num_heads=num_heads, mlp_ratio=mlp_ratio, drop=0.0, attn_drop=0.0, drop_path=dpr[i],
                          last_drop_p=0 if i == 0 else dpr[i - 1], attn_l2_norm=attn_l2_norm)
            for i in range(depth)])
        for m in self.modules():
            if hasattr(m, "drop_prob") and hasattr(m, "rng"):
                m.rng = self.train_rng
        causal_NN = torch.ones(self.N, self.N, dtype=torch.bool).tril()
        self.register_buffer("attn_bias_11NN", torch.where(causal_NN, 0.0, -torch.inf).view(1, 1, self.N, self.N),
                             persistent=False)
        self.head_nm = AdaLNBeforeHead(self.C, self.D, norm_layer=norm_layer)
        self.head = nn.Linear(self.C, self.V)

    # ------------------------------------------------------------------------------------------ tokens
    @torch.no_grad()
    def tokens_from_eeg(self, x_BCT: torch.Tensor) -> torch.Tensor:
        """EEG in model units (B, C, T) -> the modelled token sequence idx_BN (LongTensor)."""
        vae, quant = self.vae_proxy[0], self.vae_quant_proxy[0]
        if self.sequence == "pyramid":
            return torch.cat(vae.eeg_to_idxBl(x_BCT), dim=1)
        f_BCl = vae.encode_BCl(x_BCT)
        return quant._lookup(len(self.patch_nums) - 1, f_BCl.float()).reshape(x_BCT.shape[0], self.N)

    @torch.no_grad()
    def tokens_to_eeg(self, idx_BN: torch.Tensor) -> torch.Tensor:
        """Token sequence (B, N) -> decoded EEG (B, C, T) in model units."""
        vae, quant = self.vae_proxy[0], self.vae_quant_proxy[0]
        if self.sequence == "pyramid":
            sizes = [pn * self.G for pn in self.patch_nums]
            return vae.idxBl_to_eeg(list(torch.split(idx_BN, sizes, dim=1)), last_one=True)
        si = len(self.patch_nums) - 1
        h_BCl = quant.embed_idx(si, idx_BN)
        return vae.fhat_to_eeg(quant.quant_resi[1.0](h_BCl.float()))

    def _embed_tokens(self, idx_Bn: torch.Tensor, start: int) -> torch.Tensor:
        """Embed tokens at sequence positions start .. start + n - 1: (B, n) -> (B, n, C)."""
        n = idx_Bn.shape[1]
        return self.tok_emb(idx_Bn + self.tok_offset_1N[:, start:start + n])

    def _pos(self, start: int, n: int) -> torch.Tensor:
        """Position + level embedding of inputs start .. start + n - 1: (1, n, C)."""
        return self.pos_1NC[:, start:start + n] + self.lvl_embed(self.lvl_1N[:, start:start + n])

    get_logits = VAR.get_logits

    # ------------------------------------------------------------------------------------------ training
    def forward(self, label_B: torch.LongTensor, idx_BN: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits: input i is token i - 1 (the class start token for i = 0).

        Parameters
        ----------
        label_B : LongTensor, shape (B,)
        idx_BN : LongTensor, shape (B, N)
            Ground-truth sequence (:meth:`tokens_from_eeg`).

        Returns
        -------
        logits_BNV : Tensor, shape (B, N, V)
        """
        B = label_B.shape[0]
        if self.training and self.cond_drop_rate > 0:
            drop_B = torch.rand(B, generator=self.train_rng) < self.cond_drop_rate
            label_B = torch.where(drop_B.to(label_B.device), self.num_classes, label_B)
        cond_BD = self.class_emb(label_B)
        sos_B1C = cond_BD.unsqueeze(1) + self.pos_start
        x_BNC = torch.cat((sos_B1C, self._embed_tokens(idx_BN[:, :-1], 0)), dim=1) + self._pos(0, self.N)
        for b in self.blocks:
            x_BNC = b(x=x_BNC, cond_BD=cond_BD, attn_bias=self.attn_bias_11NN)
        return self.get_logits(x_BNC, cond_BD)

    # ------------------------------------------------------------------------------------------ sampling
    @torch.no_grad()
    def autoregressive_infer_cfg(self, B: int, label_B: Optional[torch.Tensor | int], g_seed: Optional[int] = None,
                                 cfg: float = 1.5, top_k: int = 0, top_p: float = 0.0,
                                 ret_tokens: bool = False):
        """Sample B windows one token per forward pass with a KV cache (same interface as VAR's).

        Parameters
        ----------
        B : int
        label_B : LongTensor (B,) | int | None
            Class per sample; an int is used for all (negative = null class); None draws uniformly.
        g_seed : int | None
            Seed of the sampling generator (None: global RNG).
        cfg : float
            Guidance strength at the last token, ramped linearly from 0 at the first; 0 disables it.
        top_k, top_p : int, float
            Sampling filters (0 = off).
        ret_tokens : bool
            Also return the sampled sequence (B, N).

        Returns
        -------
        x_BCT : Tensor, shape (B, C, T)
            Decoded EEG in model units (multiply by the tokenizer's ``uv_scale`` for µV).
        """
        dev = self.pos_1NC.device
        rng, label_B = sampling_rng_and_labels(self, B, label_B, g_seed, dev)
        use_cfg = cfg != 0
        labels = torch.cat((label_B, torch.full_like(label_B, self.num_classes))) if use_cfg else label_B
        cond_BD = self.class_emb(labels)
        x_B1C = cond_BD.unsqueeze(1) + self.pos_start + self._pos(0, 1)
        idx_BN = torch.empty(B, self.N, dtype=torch.long, device=dev)
        for b in self.blocks:
            b.attn.kv_caching(True)
        try:
            for t in range(self.N):
                h = x_B1C
                for b in self.blocks:
                    h = b(x=h, cond_BD=cond_BD, attn_bias=None)  # one query over the cache: no mask needed
                logits_B1V = self.get_logits(h, cond_BD)
                if use_cfg:
                    s = cfg * t / max(self.N - 1, 1)
                    logits_B1V = (1 + s) * logits_B1V[:B] - s * logits_B1V[B:]
                idx_B1 = sample_with_top_k_top_p_(logits_B1V, rng=rng, top_k=top_k, top_p=top_p, num_samples=1)[:, :, 0]
                idx_BN[:, t] = idx_B1[:, 0]
                if t + 1 < self.N:
                    x_B1C = self._embed_tokens(idx_B1, t) + self._pos(t + 1, 1)
                    if use_cfg:
                        x_B1C = x_B1C.repeat(2, 1, 1)
        finally:
            for b in self.blocks:
                b.attn.kv_caching(False)
        x_BCT = self.tokens_to_eeg(idx_BN)
        return (x_BCT, idx_BN) if ret_tokens else x_BCT

    # ------------------------------------------------------------------------------------------ misc
    def init_weights(self, **kwargs) -> None:
        """VAR's initialisation (trunc-normal, small head, near-zero AdaLN gates); same keyword arguments."""
        VAR.init_weights(self, **kwargs)

    def get_config(self) -> dict:
        """Constructor arguments as plain types (the tokenizer is stored separately)."""
        return dict(num_classes=self.num_classes, depth=self.depth, embed_dim=self.C, num_heads=self.num_heads,
                    mlp_ratio=self.blocks[0].ffn.fc1.out_features / self.C, drop_path_rate=self.drop_path_rate,
                    norm_eps=self.head_nm.ln_wo_grad.eps, cond_drop_rate=self.cond_drop_rate,
                    attn_l2_norm=self.blocks[0].attn.attn_l2_norm, sequence=self.sequence)

    def extra_repr(self) -> str:
        return f"sequence={self.sequence}, N={self.N}, G={self.G}, V={self.V}"


def build_ar_baseline(vae_local, device: str | torch.device, num_classes: int, depth: int,
                      sequence: str = "pyramid", attn_l2_norm: bool = True, cond_drop_rate: float = 0.1,
                      init_adaln: float = 0.5, init_adaln_gamma: float = 1e-5, init_head: float = 0.02,
                      init_std: float = -1) -> ARBaseline:
    """Build and initialise the baseline with VAR's depth rule (width 64 * depth, heads = depth)."""
    model = ARBaseline(vae_local, num_classes=num_classes, depth=depth, embed_dim=64 * depth, num_heads=depth,
                       drop_path_rate=0.1 * depth / 24, cond_drop_rate=cond_drop_rate, attn_l2_norm=attn_l2_norm,
                       sequence=sequence).to(device)
    model.init_weights(init_adaln=init_adaln, init_adaln_gamma=init_adaln_gamma, init_head=init_head,
                       init_std=init_std)
    return model
