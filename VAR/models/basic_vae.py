"""Building blocks of the band tokenizer's CNN: 1D ResNet blocks, attention, up/down-sampling, Encoder, Decoder.

Port of upstream's ``models/basic_vae.py`` (taming / Stable-Diffusion style) from 2D images to 1D EEG:
every Conv2d is a Conv1d over time, the input channels are EEG electrodes, and the latent is
``f_BCl`` with ``Cvae`` channels and ``l = T / 2**(len(ch_mult) - 1)`` positions.

Shape letters: B batch, C channels of the tensor at hand (electrodes for ``x_BCT``, width inside the
network, ``Cvae`` for the latent), T time samples, l latent positions.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ['Encoder', 'Decoder', 'PatchEncoder', 'PatchDecoder', 'Normalize', 'ResnetBlock', 'AttnBlock', 'Upsample2x', 'Downsample2x']


def Normalize(in_channels: int, num_groups: int = 32) -> nn.GroupNorm:
    """GroupNorm with upstream's 32 groups, reduced to a divisor of ``in_channels`` for narrow widths."""
    # port: narrow EEG tokenizers use widths that are not multiples of 32; pick the largest divisor <= 32.
    groups = math.gcd(int(in_channels), num_groups)
    return nn.GroupNorm(num_groups=groups, num_channels=in_channels, eps=1e-6, affine=True)


class Upsample2x(nn.Module):
    """Nearest-neighbour x2 along time, then Conv1d k3. (B, C, l) -> (B, C, 2l)."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, in_channels, kernel_size=3, stride=1, padding=1)

    def forward(self, x_BCl: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x_BCl, scale_factor=2, mode='nearest'))


class Downsample2x(nn.Module):
    """Pad one sample on the right, then Conv1d k3 stride 2. (B, C, 2l) -> (B, C, l)."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, in_channels, kernel_size=3, stride=2, padding=0)

    def forward(self, x_BCl: torch.Tensor) -> torch.Tensor:
        # port: upstream pads right+bottom; in 1D only the right end of the time axis is padded.
        return self.conv(F.pad(x_BCl, pad=(0, 1), mode='constant', value=0))


class ResnetBlock(nn.Module):
    """GN-SiLU-Conv twice with a (1x1 conv when widths differ) shortcut. (B, Cin, l) -> (B, Cout, l)."""

    def __init__(self, *, in_channels: int, out_channels: int | None = None, dropout: float = 0.0):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, (in_channels if out_channels is None else out_channels)
        self.norm1 = Normalize(in_channels)
        self.conv1 = nn.Conv1d(in_channels, self.out_channels, kernel_size=3, stride=1, padding=1)
        self.norm2 = Normalize(self.out_channels)
        self.dropout = nn.Dropout(dropout) if dropout > 1e-6 else nn.Identity()
        self.conv2 = nn.Conv1d(self.out_channels, self.out_channels, kernel_size=3, stride=1, padding=1)
        if self.in_channels != self.out_channels:
            self.nin_shortcut = nn.Conv1d(in_channels, self.out_channels, kernel_size=1, stride=1, padding=0)
        else:
            self.nin_shortcut = nn.Identity()

    def forward(self, x_BCl: torch.Tensor) -> torch.Tensor:
        h_BCl = self.conv1(F.silu(self.norm1(x_BCl)))
        h_BCl = self.conv2(self.dropout(F.silu(self.norm2(h_BCl))))
        return self.nin_shortcut(x_BCl) + h_BCl


class AttnBlock(nn.Module):
    """Single-head self-attention over latent time positions with a residual connection. (B, C, l) -> same."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.C = in_channels
        self.norm = Normalize(in_channels)
        self.qkv = nn.Conv1d(in_channels, 3 * in_channels, kernel_size=1, stride=1, padding=0)
        self.w_ratio = int(in_channels) ** (-0.5)
        self.proj_out = nn.Conv1d(in_channels, in_channels, kernel_size=1, stride=1, padding=0)

    def forward(self, x_BCl: torch.Tensor) -> torch.Tensor:
        qkv_B3Cl = self.qkv(self.norm(x_BCl))
        B, _, l = qkv_B3Cl.shape
        q_BCl, k_BCl, v_BCl = qkv_B3Cl.reshape(B, 3, self.C, l).unbind(1)
        w_Bll = torch.bmm(q_BCl.transpose(1, 2), k_BCl).mul_(self.w_ratio).softmax(dim=2)  # query x key
        h_BCl = torch.bmm(v_BCl, w_Bll.transpose(1, 2))
        return x_BCl + self.proj_out(h_BCl)


def make_attn(in_channels: int, using_sa: bool = True) -> nn.Module:
    return AttnBlock(in_channels) if using_sa else nn.Identity()


class Encoder(nn.Module):
    """EEG window -> latent. (B, in_channels, T) -> (B, z_channels, T / 2**(len(ch_mult)-1)).

    Parameters
    ----------
    ch : int
        Base width.
    ch_mult : tuple of int
        Width multipliers per level; every level but the last halves the time axis.
    num_res_blocks : int
        ResNet blocks per level (0 gives a shallow, nearly linear conv stack).
    dropout : float
        Dropout inside ResNet blocks.
    in_channels : int
        EEG electrodes.
    z_channels : int
        Latent width (``Cvae`` after ``quant_conv``).
    using_sa, using_mid_sa : bool
        Attention after the blocks of the last level / in the middle.
    kernel_in : int
        Kernel of ``conv_in`` (odd; port: EEG benefits from a wider first filter than images' 3).
    """

    def __init__(self, *, ch: int = 64, ch_mult: tuple[int, ...] = (1, 2, 2), num_res_blocks: int = 1,
                 dropout: float = 0.0, in_channels: int = 19, z_channels: int = 32, double_z: bool = False,
                 using_sa: bool = False, using_mid_sa: bool = False, kernel_in: int = 3):
        super().__init__()
        self.ch, self.num_resolutions, self.num_res_blocks = ch, len(ch_mult), num_res_blocks
        self.downsample_ratio = 2 ** (len(ch_mult) - 1)
        self.conv_in = nn.Conv1d(in_channels, ch, kernel_size=kernel_in, stride=1, padding=kernel_in // 2)
        in_ch_mult = (1,) + tuple(ch_mult)
        self.down = nn.ModuleList()
        block_in = ch
        for i_level in range(self.num_resolutions):
            block, attn = nn.ModuleList(), nn.ModuleList()
            block_in, block_out = ch * in_ch_mult[i_level], ch * ch_mult[i_level]
            for _ in range(num_res_blocks):
                block.append(ResnetBlock(in_channels=block_in, out_channels=block_out, dropout=dropout))
                block_in = block_out
                if i_level == self.num_resolutions - 1 and using_sa:
                    attn.append(make_attn(block_in, using_sa=True))
            down = nn.Module()
            down.block, down.attn = block, attn
            if i_level != self.num_resolutions - 1:
                # port: with num_res_blocks=0 the level width changes inside the downsample's conv.
                down.downsample = nn.Sequential(
                    nn.Conv1d(block_in, ch * ch_mult[i_level], 1) if block_in != ch * ch_mult[i_level] else nn.Identity(),
                    Downsample2x(ch * ch_mult[i_level]))
                block_in = ch * ch_mult[i_level]
            self.down.append(down)
        if num_res_blocks == 0 and block_in != ch * ch_mult[-1]:
            self.widen = nn.Conv1d(block_in, ch * ch_mult[-1], 1)
            block_in = ch * ch_mult[-1]
        else:
            self.widen = nn.Identity()
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(in_channels=block_in, out_channels=block_in, dropout=dropout) if num_res_blocks else nn.Identity()
        self.mid.attn_1 = make_attn(block_in, using_sa=using_mid_sa)
        self.mid.block_2 = ResnetBlock(in_channels=block_in, out_channels=block_in, dropout=dropout) if num_res_blocks else nn.Identity()
        self.norm_out = Normalize(block_in) if num_res_blocks else nn.Identity()
        self.act_out = nn.SiLU() if num_res_blocks else nn.Identity()
        self.conv_out = nn.Conv1d(block_in, (2 * z_channels if double_z else z_channels), kernel_size=3, stride=1, padding=1)

    def forward(self, x_BCT: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x_BCT)
        for i_level in range(self.num_resolutions):
            for i_block in range(self.num_res_blocks):
                h = self.down[i_level].block[i_block](h)
                if len(self.down[i_level].attn) > 0:
                    h = self.down[i_level].attn[i_block](h)
            if i_level != self.num_resolutions - 1:
                h = self.down[i_level].downsample(h)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(self.widen(h))))
        return self.conv_out(self.act_out(self.norm_out(h)))


class Decoder(nn.Module):
    """Latent -> EEG window; mirrors :class:`Encoder`. (B, z_channels, l) -> (B, in_channels, l * 2**(len(ch_mult)-1)).

    ``in_channels`` is the number of electrodes it outputs (upstream's name kept). Parameters as in
    :class:`Encoder`; each level has ``num_res_blocks + 1`` blocks (upstream), or none when 0.
    """

    def __init__(self, *, ch: int = 64, ch_mult: tuple[int, ...] = (1, 2, 2), num_res_blocks: int = 1,
                 dropout: float = 0.0, in_channels: int = 19, z_channels: int = 32,
                 using_sa: bool = False, using_mid_sa: bool = False, kernel_in: int = 3):
        super().__init__()
        self.ch, self.num_resolutions, self.num_res_blocks = ch, len(ch_mult), num_res_blocks
        n_blocks = num_res_blocks + 1 if num_res_blocks > 0 else 0
        block_in = ch * ch_mult[-1]
        self.conv_in = nn.Conv1d(z_channels, block_in, kernel_size=3, stride=1, padding=1)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(in_channels=block_in, out_channels=block_in, dropout=dropout) if num_res_blocks else nn.Identity()
        self.mid.attn_1 = make_attn(block_in, using_sa=using_mid_sa)
        self.mid.block_2 = ResnetBlock(in_channels=block_in, out_channels=block_in, dropout=dropout) if num_res_blocks else nn.Identity()
        self.up = nn.ModuleList()
        for i_level in reversed(range(self.num_resolutions)):
            block, attn = nn.ModuleList(), nn.ModuleList()
            block_out = ch * ch_mult[i_level]
            for _ in range(n_blocks):
                block.append(ResnetBlock(in_channels=block_in, out_channels=block_out, dropout=dropout))
                block_in = block_out
                if i_level == self.num_resolutions - 1 and using_sa:
                    attn.append(make_attn(block_in, using_sa=True))
            up = nn.Module()
            up.block, up.attn = block, attn
            if i_level != 0:
                up.upsample = nn.Sequential(
                    nn.Conv1d(block_in, block_out, 1) if block_in != block_out else nn.Identity(), Upsample2x(block_out))
                block_in = block_out
            self.up.insert(0, up)
        self.norm_out = Normalize(block_in) if num_res_blocks else nn.Identity()
        self.act_out = nn.SiLU() if num_res_blocks else nn.Identity()
        self.conv_out = nn.Conv1d(block_in, in_channels, kernel_size=kernel_in, stride=1, padding=kernel_in // 2)

    def forward(self, z_BCl: torch.Tensor) -> torch.Tensor:
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(self.conv_in(z_BCl))))
        for i_level in reversed(range(self.num_resolutions)):
            for i_block in range(len(self.up[i_level].block)):
                h = self.up[i_level].block[i_block](h)
                if len(self.up[i_level].attn) > 0:
                    h = self.up[i_level].attn[i_block](h)
            if i_level != 0:
                h = self.up[i_level].upsample(h)
        return self.conv_out(self.act_out(self.norm_out(h)))


class PatchEncoder(nn.Module):
    """Linear block transform: one Conv1d with kernel = stride = downsample. (B, C, T) -> (B, z, T / downsample).

    port: EEG is close to Gaussian, so a (PCA-initialised) linear transform followed by the residual
    VQ is a strong, easy-to-train tokenizer; see ``VQVAE.init_from_pca_``.
    """

    def __init__(self, *, in_channels: int, z_channels: int, downsample: int):
        super().__init__()
        self.downsample_ratio = downsample
        self.conv = nn.Conv1d(in_channels, z_channels, kernel_size=downsample, stride=downsample)

    def forward(self, x_BCT: torch.Tensor) -> torch.Tensor:
        return self.conv(x_BCT)


class PatchDecoder(nn.Module):
    """Inverse of :class:`PatchEncoder`: ConvTranspose1d with kernel = stride = downsample."""

    def __init__(self, *, in_channels: int, z_channels: int, downsample: int):
        super().__init__()
        self.conv = nn.ConvTranspose1d(z_channels, in_channels, kernel_size=downsample, stride=downsample)

    def forward(self, z_BCl: torch.Tensor) -> torch.Tensor:
        return self.conv(z_BCl)
