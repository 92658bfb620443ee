"""Model builders: ``build_vae_var`` (tokenizer + VAR) and ``build_var`` (VAR on an existing tokenizer).

fix(upstream) §18.7: upstream disabled ``reset_parameters`` of torch layers for the whole process;
nothing is patched here (VAR's ``init_weights`` runs anyway, the tokenizer loads its checkpoint).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from models.quant import VectorQuantizer2
from models.var import VAR
from models.vqvae import VQVAE

__all__ = ["VectorQuantizer2", "VAR", "VQVAE", "build_var", "build_vae_var", "depth_rule"]


def depth_rule(depth: int) -> dict:
    """Upstream's depth rule: width 64 * depth, heads = depth, drop_path = 0.1 * depth / 24."""
    return dict(embed_dim=64 * depth, num_heads=depth, drop_path_rate=0.1 * depth / 24)


def build_var(vae_local: VQVAE, device: str | torch.device, num_classes: int, depth: int,
              shared_aln: bool = False, attn_l2_norm: bool = True, flash_if_available: bool = True,
              fused_if_available: bool = True, init_adaln: float = 0.5, init_adaln_gamma: float = 1e-5,
              init_head: float = 0.02, init_std: float = -1, cond_drop_rate: float = 0.1,
              patch_nums: Sequence[int] | None = None, intra_steps: int = 1, intra_mix: float = 0.25,
              intra_nbr: int = 0, intra_ar: int = 0, intra_ar_fhat: int = 0, num_levels: int = 0) -> VAR:
    """Build and initialise VAR for ``vae_local`` following the depth rule."""
    var = VAR(vae_local=vae_local, num_classes=num_classes, depth=depth, mlp_ratio=4.0, drop_rate=0.0,
              attn_drop_rate=0.0, norm_eps=1e-6, shared_aln=shared_aln, cond_drop_rate=cond_drop_rate,
              attn_l2_norm=attn_l2_norm, patch_nums=tuple(patch_nums or vae_local.v_patch_nums),
              flash_if_available=flash_if_available, fused_if_available=fused_if_available,
              intra_steps=intra_steps, intra_mix=intra_mix, intra_nbr=intra_nbr, intra_ar=intra_ar,
              intra_ar_fhat=intra_ar_fhat, num_levels=num_levels, **depth_rule(depth)).to(device)
    var.init_weights(init_adaln=init_adaln, init_adaln_gamma=init_adaln_gamma, init_head=init_head, init_std=init_std)
    return var


def build_vae_var(device: str | torch.device, vae_config: dict[str, Any], num_classes: int = 1000, depth: int = 16,
                  shared_aln: bool = False, attn_l2_norm: bool = True, flash_if_available: bool = True,
                  fused_if_available: bool = True, init_adaln: float = 0.5, init_adaln_gamma: float = 1e-5,
                  init_head: float = 0.02, init_std: float = -1,
                  cond_drop_rate: float = 0.1, intra_steps: int = 1, intra_mix: float = 0.25,
                  intra_nbr: int = 0, intra_ar: int = 0, intra_ar_fhat: int = 0) -> tuple[VQVAE, VAR]:
    """Build a frozen tokenizer from ``vae_config`` (port: upstream hard-coded its config) and VAR on it."""
    vae_local = VQVAE.from_config(vae_config, test_mode=True).to(device)
    var_wo_ddp = build_var(vae_local, device, num_classes=num_classes, depth=depth, shared_aln=shared_aln,
                           attn_l2_norm=attn_l2_norm, flash_if_available=flash_if_available,
                           fused_if_available=fused_if_available, init_adaln=init_adaln,
                           init_adaln_gamma=init_adaln_gamma, init_head=init_head, init_std=init_std,
                           cond_drop_rate=cond_drop_rate, intra_steps=intra_steps, intra_mix=intra_mix, intra_nbr=intra_nbr,
                           intra_ar=intra_ar, intra_ar_fhat=intra_ar_fhat)
    return vae_local, var_wo_ddp
