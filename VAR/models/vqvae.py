"""``VQVAE``: the band tokenizer (1D encoder -> multi-scale residual VQ -> 1D decoder).

Port of upstream's ``models/vqvae.py``. Inputs and outputs are EEG windows in
MODEL UNITS (µV divided by the dataset scale stored in the checkpoint; see ``VAR/vae_checkpoint.py``).
Decoding the cumulative ``f_hat`` after scale k reconstructs the cumulative band signal of that scale's
stage (docs/design.md §2). The constructor takes plain values only; ``get_config`` / ``from_config``
round-trip them.

Shape letters: B batch, C electrodes (``x_BCT``) or Cvae (``f_BCl``), T time samples, l / L latent
positions, G tokens per position.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn as nn

from .band_mix import BandMix
from .band_noise import ResidualNoise
from .basic_vae import Decoder, Encoder, PatchDecoder, PatchEncoder
from .quant import VectorQuantizer2

__all__ = ['VQVAE']


class VQVAE(nn.Module):
    """Band tokenizer.

    Parameters
    ----------
    in_channels : int
        EEG electrodes C.
    vocab_size : int
        Codebook size V.
    z_channels : int
        Cvae, latent channels.
    ch, ch_mult, num_res_blocks, dropout, using_sa, using_mid_sa, kernel_in
        Encoder/decoder widths and depth (``Encoder``); downsampling = 2 ** (len(ch_mult) - 1).
    arch : {'cnn', 'patch'}
        ``'cnn'``: upstream-style Conv1d ResNet encoder/decoder; ``'patch'``: one linear block transform
        (kernel = stride = downsample), PCA-initialisable with :meth:`init_from_pca_`.
    beta : float
        Commitment weight.
    using_znorm : bool
        Cosine code lookup.
    quant_conv_ks : int
        Kernel of ``quant_conv`` / ``post_quant_conv``.
    quant_resi, share_quant_resi, default_qresi_counts
        Phi configuration (upstream meaning).
    v_patch_nums : sequence of int
        1D scale layout, strictly increasing, last = T / downsample.
    tokens_per_pos : int
        G tokens per latent position.
    per_scale_codebook : bool
        Each scale owns its codebooks.
    resample : {'linear', 'fft'}
        Resampling between scales.
    residual_noise : bool
        Hold a :class:`~models.band_noise.ResidualNoise` (zero until calibrated): decoding with a
        ``noise_seed`` adds seeded noise that restores the band power quantisation removed. Off in
        checkpoints written before it existed.
    mix_bands : int
        Hold a :class:`~models.band_mix.BandMix` over this many bands (identity until calibrated): every decode
        (:meth:`fhat_to_eeg`) gets each band's channel mixing, training's :meth:`forward` does not. 0 = none
        (checkpoints written before it existed).
    test_mode : bool
        Put in eval mode and freeze all parameters (as upstream, for use inside VAR).
    """

    def __init__(self, in_channels: int = 19, vocab_size: int = 1024, z_channels: int = 32, ch: int = 64,
                 ch_mult: Sequence[int] = (1, 2, 2), num_res_blocks: int = 1, dropout: float = 0.0,
                 using_sa: bool = False, using_mid_sa: bool = False, kernel_in: int = 3,
                 beta: float = 0.25, using_znorm: bool = False, quant_conv_ks: int = 3,
                 quant_resi: float = 0.5, share_quant_resi: int = 4, default_qresi_counts: int = 0,
                 v_patch_nums: Sequence[int] = (10, 20, 33, 75, 125), tokens_per_pos: int = 1,
                 per_scale_codebook: bool = False, resample: str = 'linear', arch: str = 'cnn',
                 residual_noise: bool = False, mix_bands: int = 0, test_mode: bool = True):
        super().__init__()
        self._config: Dict[str, Any] = dict(
            in_channels=int(in_channels), vocab_size=int(vocab_size), z_channels=int(z_channels), ch=int(ch),
            ch_mult=[int(m) for m in ch_mult], num_res_blocks=int(num_res_blocks), dropout=float(dropout),
            using_sa=bool(using_sa), using_mid_sa=bool(using_mid_sa), kernel_in=int(kernel_in), beta=float(beta),
            using_znorm=bool(using_znorm), quant_conv_ks=int(quant_conv_ks), quant_resi=float(quant_resi),
            share_quant_resi=int(share_quant_resi), default_qresi_counts=int(default_qresi_counts),
            v_patch_nums=[int(p) for p in v_patch_nums], tokens_per_pos=int(tokens_per_pos),
            per_scale_codebook=bool(per_scale_codebook), resample=str(resample), arch=str(arch))
        if residual_noise:  # only when on, so configs of older checkpoints stay as they were
            self._config['residual_noise'] = True
        if mix_bands:
            self._config['mix_bands'] = int(mix_bands)
        self.test_mode = test_mode
        self.V, self.Cvae = vocab_size, z_channels
        self.in_channels = int(in_channels)
        ddconfig = dict(ch=ch, ch_mult=tuple(ch_mult), num_res_blocks=num_res_blocks, dropout=dropout,
                        in_channels=in_channels, z_channels=z_channels, using_sa=using_sa,
                        using_mid_sa=using_mid_sa, kernel_in=kernel_in)
        self.downsample = 2 ** (len(ch_mult) - 1)
        if arch == 'cnn':
            self.encoder = Encoder(double_z=False, **ddconfig)
            self.decoder = Decoder(**ddconfig)
        elif arch == 'patch':
            self.encoder = PatchEncoder(in_channels=in_channels, z_channels=z_channels, downsample=self.downsample)
            self.decoder = PatchDecoder(in_channels=in_channels, z_channels=z_channels, downsample=self.downsample)
        else:
            raise ValueError(f"arch={arch!r}; expected 'cnn' or 'patch'")
        self.arch = arch
        self.v_patch_nums = tuple(int(p) for p in v_patch_nums)
        self.vocab_size = vocab_size
        self.quantize: VectorQuantizer2 = VectorQuantizer2(
            vocab_size=vocab_size, Cvae=self.Cvae, using_znorm=using_znorm, beta=beta,
            default_qresi_counts=default_qresi_counts, v_patch_nums=self.v_patch_nums, quant_resi=quant_resi,
            share_quant_resi=share_quant_resi, tokens_per_pos=tokens_per_pos,
            per_scale_codebook=per_scale_codebook, resample=resample)
        self.quant_conv = nn.Conv1d(self.Cvae, self.Cvae, quant_conv_ks, stride=1, padding=quant_conv_ks // 2)
        self.post_quant_conv = nn.Conv1d(self.Cvae, self.Cvae, quant_conv_ks, stride=1, padding=quant_conv_ks // 2)
        self.noise: Optional[ResidualNoise] = (ResidualNoise(len(self.v_patch_nums), self.in_channels, self.n_times)
                                               if residual_noise else None)
        self.mix: Optional[BandMix] = BandMix(int(mix_bands), self.in_channels, self.n_times) if mix_bands else None
        if self.test_mode:
            self.eval()
            [p.requires_grad_(False) for p in self.parameters()]

    @torch.no_grad()
    def init_from_pca_(self, x_BCT: torch.Tensor) -> list[float]:
        """Initialise a ``'patch'`` tokenizer as the block PCA of ``x_BCT`` (model units); return eigenvalues.

        The encoder keeps the Cvae leading principal components of (C x downsample) blocks, the decoder is
        their transpose; component j goes to group ``j % G`` so the groups share the energy evenly; the
        quant convs start as identities.
        """
        if self.arch != 'patch':
            raise ValueError("init_from_pca_ needs arch='patch'")
        x_BCT = x_BCT.detach().float().cpu()  # the PCA runs on the CPU; copy_ moves the weights to the model's device
        B, C, T = x_BCT.shape
        D = self.downsample
        P_ND = x_BCT.reshape(B, C, T // D, D).permute(0, 2, 1, 3).reshape(-1, C * D)
        cov_DD = P_ND.T @ P_ND / P_ND.shape[0]
        evals, evecs = torch.linalg.eigh(cov_DD.double())
        # With fewer block dimensions (C x D) than latent channels, the extra latent channels start at zero.
        n_comp = min(self.Cvae, C * D)
        order = torch.argsort(evals, descending=True)[:n_comp]
        U_DZ = evecs[:, order].float()
        G = self.tokens_per_pos
        d = self.Cvae // G
        perm = torch.tensor([(j % G) * d + j // G for j in range(self.Cvae)])
        W_ZCD = torch.zeros(self.Cvae, C, D)
        W_ZCD[perm[:n_comp]] = U_DZ.T.reshape(n_comp, C, D)
        self.encoder.conv.weight.copy_(W_ZCD)
        self.encoder.conv.bias.zero_()
        self.decoder.conv.weight.copy_(W_ZCD)
        self.decoder.conv.bias.zero_()
        for conv in (self.quant_conv, self.post_quant_conv):
            conv.weight.zero_()
            conv.weight[:, :, conv.kernel_size[0] // 2] = torch.eye(self.Cvae)
            conv.bias.zero_()
        return evals[order].float().tolist()

    # ----------------------------------------------------------------------------------------------
    def get_config(self) -> Dict[str, Any]:
        """Plain-typed constructor arguments (without ``test_mode``); ``from_config`` rebuilds the model."""
        return {k: (list(v) if isinstance(v, list) else v) for k, v in self._config.items()}

    @classmethod
    def from_config(cls, cfg: Dict[str, Any], test_mode: bool = True) -> 'VQVAE':
        return cls(**dict(cfg), test_mode=test_mode)

    @property
    def tokens_per_pos(self) -> int:
        return self.quantize.tokens_per_pos

    @property
    def latent_len(self) -> int:
        return self.v_patch_nums[-1]

    @property
    def n_times(self) -> int:
        """Window length T in samples this model expects."""
        return self.v_patch_nums[-1] * self.downsample

    def tokens_per_window(self) -> int:
        return sum(self.v_patch_nums) * self.tokens_per_pos

    # ===================== `forward` is only used in VAE training =====================
    def forward(self, inp_BCT: torch.Tensor, ret_usages: bool = False, ret_all: bool = False):
        """Encode, quantize, decode. Returns (rec, usages, vq_loss).

        ``rec`` is (B, C, T) model units, or with ``ret_all`` a list over scales of the decoded cumulative
        f_hat (partial decodes).
        """
        f_BCl = self.quant_conv(self.encoder(inp_BCT))
        f_hat, usages, vq_loss = self.quantize(f_BCl, ret_usages=ret_usages, ret_all_fhat=ret_all)
        # the plain decoder: the band mix is calibrated on the trained decoder and not trained through
        if ret_all:
            return [self.decode_plain(fh) for fh in f_hat], usages, vq_loss
        return self.decode_plain(f_hat), usages, vq_loss

    def encode_BCl(self, x_BCT: torch.Tensor) -> torch.Tensor:
        """(B, C, T) model units -> latent f (B, Cvae, L) before quantization."""
        return self.quant_conv(self.encoder(x_BCT))

    def decode_plain(self, f_hat_BCl: torch.Tensor) -> torch.Tensor:
        """(B, Cvae, L) -> (B, C, T) model units, the decoder alone (no band mix). port: no clamp (EEG is not
        bounded to [-1, 1])."""
        return self.decoder(self.post_quant_conv(f_hat_BCl))

    def fhat_to_eeg(self, f_hat_BCl: torch.Tensor) -> torch.Tensor:
        """(B, Cvae, L) -> (B, C, T) model units: the decoder, then the band mix when the tokenizer holds one."""
        x_BCT = self.decode_plain(f_hat_BCl)
        return x_BCT if self.mix is None else self.mix(x_BCT)

    def eeg_to_idxBl(self, x_BCT: torch.Tensor, v_patch_nums: Optional[Sequence[int]] = None) -> List[torch.Tensor]:
        """(B, C, T) model units -> list over scales of LongTensor (B, pn * G), position-major."""
        f_BCl = self.quant_conv(self.encoder(x_BCT))
        return self.quantize.f_to_idxBl_or_fhat(f_BCl, to_fhat=False, v_patch_nums=v_patch_nums)

    def add_residual_noise(self, x_BCT: torch.Tensor, si: int, noise_seed: Optional[int]) -> torch.Tensor:
        """Scale ``si``'s decode ``x_BCT`` plus its calibrated noise for ``noise_seed`` (unchanged when the seed is
        None or the tokenizer holds no noise). For decodes made with :meth:`fhat_to_eeg` (VAR sampling)."""
        return x_BCT if self.noise is None else self.noise.add_(x_BCT, si, noise_seed)

    def idxBl_to_eeg(self, ms_idx_Bl: List[torch.Tensor], last_one: bool = False, noise_seed: Optional[int] = None):
        """Token maps -> decoded cumulative signals (list over scales of (B, C, T)), or only the last.

        ``noise_seed``: add the calibrated residual noise drawn with this seed (see ``residual_noise``).
        """
        ms_h_BCl = [self.quantize.embed_idx(si, idx_Bl) for si, idx_Bl in enumerate(ms_idx_Bl)]
        return self.embed_to_eeg(ms_h_BCl=ms_h_BCl, all_to_max_scale=True, last_one=last_one, noise_seed=noise_seed)

    def embed_to_eeg(self, ms_h_BCl: List[torch.Tensor], all_to_max_scale: bool, last_one: bool = False,
                     noise_seed: Optional[int] = None):
        """Per-scale embeddings (B, Cvae, pn) -> decoded cumulative signals (list) or the last (B, C, T)."""
        if last_one:
            x = self.fhat_to_eeg(self.quantize.embed_to_fhat(ms_h_BCl, all_to_max_scale=all_to_max_scale, last_one=True))
            return self.add_residual_noise(x, len(ms_h_BCl) - 1, noise_seed)
        return [self.add_residual_noise(self.fhat_to_eeg(f_hat), si, noise_seed) for si, f_hat in
                enumerate(self.quantize.embed_to_fhat(ms_h_BCl, all_to_max_scale=all_to_max_scale, last_one=False))]

    def eeg_to_reconstructed_eeg(self, x_BCT: torch.Tensor, v_patch_nums: Optional[Sequence[int]] = None,
                                 last_one: bool = False, noise_seed: Optional[int] = None):
        """Encode + quantize + decode every cumulative f_hat (list over scales) or only the last (B, C, T)."""
        f_BCl = self.quant_conv(self.encoder(x_BCT))
        ls_f_hat_BCl = self.quantize.f_to_idxBl_or_fhat(f_BCl, to_fhat=True, v_patch_nums=v_patch_nums)
        if last_one:
            return self.add_residual_noise(self.fhat_to_eeg(ls_f_hat_BCl[-1]), len(ls_f_hat_BCl) - 1, noise_seed)
        return [self.add_residual_noise(self.fhat_to_eeg(f_hat), si, noise_seed) for si, f_hat in enumerate(ls_f_hat_BCl)]

    def load_state_dict(self, state_dict: Dict[str, Any], strict: bool = True, assign: bool = False):
        """Strict load; a usage buffer with another number of scales is replaced by this model's (upstream).

        Residual-noise buffers missing from ``state_dict`` or of another layout stay uncalibrated (zero, so
        decoding adds no noise until :meth:`~models.band_noise.ResidualNoise.calibrate_` fills them); so do
        band-mix buffers (the identity).
        """
        key = 'quantize.ema_vocab_hit_SV'
        if key in state_dict and state_dict[key].shape != self.quantize.ema_vocab_hit_SV.shape:
            state_dict = dict(state_dict)
            state_dict[key] = self.quantize.ema_vocab_hit_SV
        if self.noise is not None:
            own = {f'noise.{k}': v for k, v in self.noise.state_dict().items()}
            if any(k not in state_dict or state_dict[k].shape != v.shape for k, v in own.items()):
                state_dict = {k: v for k, v in state_dict.items() if not k.startswith('noise.')}
                state_dict.update({k: torch.zeros_like(v) for k, v in own.items()})
        if self.mix is not None:
            own = {f'mix.{k}': v for k, v in self.mix.state_dict().items()}
            if any(k not in state_dict or state_dict[k].shape != v.shape for k, v in own.items()):
                self.mix.reset_()
                state_dict = {k: v for k, v in state_dict.items() if not k.startswith('mix.')}
                state_dict.update({f'mix.{k}': v.clone() for k, v in self.mix.state_dict().items()})
        return super().load_state_dict(state_dict=state_dict, strict=strict, assign=assign)

    # upstream names, kept as aliases
    def fhat_to_img(self, f_hat_BCl: torch.Tensor) -> torch.Tensor:
        return self.fhat_to_eeg(f_hat_BCl)

    def img_to_idxBl(self, x_BCT: torch.Tensor, v_patch_nums: Optional[Sequence[int]] = None) -> List[torch.Tensor]:
        return self.eeg_to_idxBl(x_BCT, v_patch_nums)

    def idxBl_to_img(self, ms_idx_Bl: List[torch.Tensor], same_shape: bool = True, last_one: bool = False):
        return self.idxBl_to_eeg(ms_idx_Bl, last_one=last_one)

    def embed_to_img(self, ms_h_BCl: List[torch.Tensor], all_to_max_scale: bool, last_one: bool = False):
        return self.embed_to_eeg(ms_h_BCl, all_to_max_scale, last_one)

    def img_to_reconstructed_img(self, x_BCT: torch.Tensor, v_patch_nums: Optional[Sequence[int]] = None,
                                 last_one: bool = False):
        return self.eeg_to_reconstructed_eeg(x_BCT, v_patch_nums, last_one)
