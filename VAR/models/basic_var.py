"""Transformer blocks of VAR: FFN, self-attention with KV cache, AdaLN blocks (upstream ``models/basic_var.py``).

Shape letters: B batch, L tokens (positions) in the sequence at hand, C width, D condition width,
H heads, c head dim.

port: attention always goes through ``torch.nn.functional.scaled_dot_product_attention`` (PyTorch
picks flash / memory-efficient / math kernels itself); upstream's optional flash-attn, xformers and
fused-MLP imports are dropped, so there is nothing to detect and no silent fallback.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.helpers import DropPath

__all__ = ["FFN", "SelfAttention", "AdaLNSelfAttn", "AdaLNBeforeHead"]


class FFN(nn.Module):
    """fc1 -> GELU(tanh) -> fc2 -> dropout."""

    def __init__(self, in_features: int, hidden_features: int | None = None, out_features: int | None = None,
                 drop: float = 0.0, fused_if_available: bool = True) -> None:
        super().__init__()
        out_features = out_features or in_features
        hidden_features = hidden_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden_features, out_features)
        self.drop = nn.Dropout(drop, inplace=True) if drop > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.act(self.fc1(x))))


class SelfAttention(nn.Module):
    """Multi-head self-attention with q/v biases (no k bias), optional cosine attention and a KV cache.

    Parameters
    ----------
    block_idx : int
    embed_dim, num_heads : int
        Width C and heads H (head dim c = C / H).
    attn_drop, proj_drop : float
    attn_l2_norm : bool
        Cosine attention: q, k L2-normalised per head, logits scaled by a learned per-head temperature
        exp(min(s_h, ln 100)), s_h initialised to ln 4.
    """

    def __init__(self, block_idx: int, embed_dim: int = 768, num_heads: int = 12, attn_drop: float = 0.0,
                 proj_drop: float = 0.0, attn_l2_norm: bool = False, flash_if_available: bool = True) -> None:
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim={embed_dim} is not divisible by num_heads={num_heads}")
        self.block_idx, self.num_heads, self.head_dim = block_idx, num_heads, embed_dim // num_heads
        self.attn_l2_norm = attn_l2_norm
        if self.attn_l2_norm:
            self.scale = 1.0
            self.scale_mul_1H11 = nn.Parameter(torch.full(size=(1, self.num_heads, 1, 1), fill_value=4.0).log(),
                                               requires_grad=True)
            self.max_scale_mul = math.log(100)
        else:
            self.scale = 0.25 / math.sqrt(self.head_dim)
        self.mat_qkv = nn.Linear(embed_dim, embed_dim * 3, bias=False)
        self.q_bias, self.v_bias = nn.Parameter(torch.zeros(embed_dim)), nn.Parameter(torch.zeros(embed_dim))
        self.register_buffer("zero_k_bias", torch.zeros(embed_dim))
        self.proj = nn.Linear(embed_dim, embed_dim)
        self.proj_drop = nn.Dropout(proj_drop, inplace=True) if proj_drop > 0 else nn.Identity()
        self.attn_drop: float = attn_drop
        self.caching, self.cached_k, self.cached_v = False, None, None

    def kv_caching(self, enable: bool) -> None:
        """Switch the KV cache on or off; both clear it."""
        self.caching, self.cached_k, self.cached_v = enable, None, None

    def forward(self, x_BLC: torch.Tensor, attn_bias: torch.Tensor | None) -> torch.Tensor:
        """x_BLC (B, L, C); attn_bias additive, broadcastable to (B, H, L, L_kv), or None (no mask)."""
        B, L, C = x_BLC.shape
        qkv_BL3Hc = F.linear(input=x_BLC, weight=self.mat_qkv.weight,
                             bias=torch.cat((self.q_bias, self.zero_k_bias, self.v_bias))).view(
            B, L, 3, self.num_heads, self.head_dim)
        main_type = qkv_BL3Hc.dtype
        q_BHLc, k_BHLc, v_BHLc = qkv_BL3Hc.permute(2, 0, 3, 1, 4).unbind(dim=0)
        if self.attn_l2_norm:
            scale_mul_1H11 = self.scale_mul_1H11.clamp_max(self.max_scale_mul).exp()
            q_BHLc = F.normalize(q_BHLc, dim=-1).mul(scale_mul_1H11)
            k_BHLc = F.normalize(k_BHLc, dim=-1)
        if self.caching:
            if self.cached_k is None:
                self.cached_k, self.cached_v = k_BHLc, v_BHLc
            else:
                k_BHLc = self.cached_k = torch.cat((self.cached_k, k_BHLc), dim=2)
                v_BHLc = self.cached_v = torch.cat((self.cached_v, v_BHLc), dim=2)
        dropout_p = self.attn_drop if self.training else 0.0
        mask = None if attn_bias is None else attn_bias.to(main_type)
        oup_BHLc = F.scaled_dot_product_attention(q_BHLc.to(main_type), k_BHLc.to(main_type), v_BHLc.to(main_type),
                                                  attn_mask=mask, dropout_p=dropout_p, scale=self.scale)
        oup_BLC = oup_BHLc.transpose(1, 2).reshape(B, L, C)
        return self.proj_drop(self.proj(oup_BLC))

    def extra_repr(self) -> str:
        return f"attn_l2_norm={self.attn_l2_norm}"


class AdaLNSelfAttn(nn.Module):
    """Pre-norm transformer block whose LayerNorm scale/shift and residual gates come from the condition.

    x <- x + DropPath(Attn(LN(x)(1 + scale1) + shift1) * gamma1)
    x <- x + DropPath(FFN (LN(x)(1 + scale2) + shift2) * gamma2)
    """

    def __init__(self, block_idx: int, last_drop_p: float, embed_dim: int, cond_dim: int, shared_aln: bool,
                 norm_layer, num_heads: int, mlp_ratio: float = 4.0, drop: float = 0.0, attn_drop: float = 0.0,
                 drop_path: float = 0.0, attn_l2_norm: bool = False, flash_if_available: bool = False,
                 fused_if_available: bool = True) -> None:
        super().__init__()
        self.block_idx, self.last_drop_p, self.C = block_idx, last_drop_p, embed_dim
        self.C, self.D = embed_dim, cond_dim
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.attn = SelfAttention(block_idx=block_idx, embed_dim=embed_dim, num_heads=num_heads, attn_drop=attn_drop,
                                  proj_drop=drop, attn_l2_norm=attn_l2_norm, flash_if_available=flash_if_available)
        self.ffn = FFN(in_features=embed_dim, hidden_features=round(embed_dim * mlp_ratio), drop=drop,
                       fused_if_available=fused_if_available)
        self.ln_wo_grad = norm_layer(embed_dim, elementwise_affine=False)
        self.shared_aln = shared_aln
        if self.shared_aln:
            self.ada_gss = nn.Parameter(torch.randn(1, 1, 6, embed_dim) / embed_dim ** 0.5)
        else:
            self.ada_lin = nn.Sequential(nn.SiLU(inplace=False), nn.Linear(cond_dim, 6 * embed_dim))

    def forward(self, x: torch.Tensor, cond_BD: torch.Tensor, attn_bias: torch.Tensor | None) -> torch.Tensor:
        """x (B, L, C); cond_BD (B, D), or (B, 1, 6, C) from the shared AdaLN; returns (B, L, C)."""
        if self.shared_aln:
            gamma1, gamma2, scale1, scale2, shift1, shift2 = (self.ada_gss + cond_BD).unbind(2)
        else:
            gamma1, gamma2, scale1, scale2, shift1, shift2 = self.ada_lin(cond_BD).view(-1, 1, 6, self.C).unbind(2)
        x = x + self.drop_path(self.attn(self.ln_wo_grad(x).mul(scale1.add(1)).add_(shift1),
                                         attn_bias=attn_bias).mul_(gamma1))
        x = x + self.drop_path(self.ffn(self.ln_wo_grad(x).mul(scale2.add(1)).add_(shift2)).mul(gamma2))
        return x

    def extra_repr(self) -> str:
        return f"shared_aln={self.shared_aln}"


class AdaLNBeforeHead(nn.Module):
    """LayerNorm (no affine) modulated by (scale, shift) from the condition, before the output head."""

    def __init__(self, C: int, D: int, norm_layer) -> None:
        super().__init__()
        self.C, self.D = C, D
        self.ln_wo_grad = norm_layer(C, elementwise_affine=False)
        self.ada_lin = nn.Sequential(nn.SiLU(inplace=False), nn.Linear(D, 2 * C))

    def modulation(self, cond_BD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, shift), each (B, 1, C): computed once when many calls share a condition."""
        scale, shift = self.ada_lin(cond_BD).view(-1, 1, 2, self.C).unbind(2)
        return scale, shift

    def modulate(self, x_BLC: torch.Tensor, scale_shift: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        scale, shift = scale_shift
        return self.ln_wo_grad(x_BLC).mul(scale.add(1)).add_(shift)

    def forward(self, x_BLC: torch.Tensor, cond_BD: torch.Tensor) -> torch.Tensor:
        return self.modulate(x_BLC, self.modulation(cond_BD))
