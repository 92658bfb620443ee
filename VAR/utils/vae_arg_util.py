"""``VAEArgs``: command-line configuration of the band tokenizer's training entry ``VAR/train_vae.py``.

Built on :class:`utils.arg_util.BaseArgs` (same ``--name=value`` flags, derivation, seeding, log.txt);
adds the tokenizer's architecture, scale-layout and loss fields. Checkpoints are ``vae-ckpt-last.pth``
and ``vae-ckpt-best.pth`` in ``--local_out_dir_path``.
"""
from __future__ import annotations

import re
import typing
from dataclasses import dataclass

from utils.arg_util import BaseArgs, arg
from utils.errors import UserError

__all__ = ['VAEArgs', 'parse_int_list', 'parse_float_list', 'DEFAULT_V_PATCH_NUMS']

#: The default scale layout (5-s windows at 100 Hz, downsampling 2: latent length 250).
DEFAULT_V_PATCH_NUMS = '50_90_130_249_250'


def parse_int_list(text: str, flag: str) -> tuple[int, ...]:
    """'1_2_4' / '1,2,4' -> (1, 2, 4); '' -> ()."""
    parts = [p for p in re.split(r'[_,\s]+', str(text).strip()) if p]
    try:
        return tuple(int(p) for p in parts)
    except ValueError:
        raise UserError(f"--{flag}={text!r}: expected integers separated by '_' or ',' (e.g. 1_2_4)") from None


def parse_float_list(text: str, flag: str) -> tuple[float, ...]:
    parts = [p for p in re.split(r'[_,\s]+', str(text).strip()) if p]
    try:
        return tuple(float(p) for p in parts)
    except ValueError:
        raise UserError(f"--{flag}={text!r}: expected numbers separated by ',' (e.g. 2,1,1,1,1)") from None


@dataclass
class VAEArgs(BaseArgs):
    """Band tokenizer training (``VAR/train_vae.py``)."""

    CKPT_PREFIX: typing.ClassVar[str] = 'vae'
    PROG: typing.ClassVar[str] = 'train_vae.py'
    DESCRIPTION: typing.ClassVar[str] = (
        'Train the EEG band tokenizer (1D multi-scale residual VQ over cumulative bands). Writes vae-ckpt-last.pth, '
        'vae-ckpt-best.pth (best validation full-spectrum SNR), log.txt and TensorBoard scalars into '
        '--local_out_dir_path; re-running the same command resumes.')
    # ---- overridden defaults of the shared fields (tokenizer scale)
    bs: int = arg(32, 'global batch size over all processes and accumulation steps')
    ep: int = arg(40, 'epochs (earlier default 100; validation SNR on eegmat is flat after ~15 epochs of 2.5-s-stride windows)')
    tblr: float = arg(0.08, 'base learning rate per 256 windows; peak lr = ac * tblr * glb_batch_size / 256')
    twd: float = arg(0.0, 'initial weight decay (codebooks, norms and biases never decay)')
    tclip: float = arg(5.0, 'clip the global grad norm to this value; <= 0 disables clipping')
    wpe: float = arg(0.05, 'lr ratio at the last iteration')
    save_it: int = arg(0, 'also write a mid-epoch checkpoint every N iterations; 0 = off')
    # ---- architecture
    arch: str = arg('patch', "'patch': PCA-initialised linear block transform (kernel = stride = downsample); "
                    "'cnn': upstream-style Conv1d ResNet encoder/decoder")
    vocab_size: int = arg(256, 'codebook size V (same for every group and scale)')
    z_channels: int = arg(32, 'latent channels Cvae (divisible by tokens_per_pos)')
    ch: int = arg(64, "base width of the 'cnn' encoder/decoder")
    ch_mult: str = arg('1_1', "width multipliers per level, '_'-separated; downsampling = 2 ** (levels - 1)")
    num_res_blocks: int = arg(0, "ResNet blocks per level of the 'cnn' arch (0 = purely convolutional, nearly linear)")
    kernel_in: int = arg(9, "kernel of the first encoder conv and the last decoder conv of the 'cnn' arch (odd)")
    using_sa: bool = arg(False, "attention blocks at the latent level ('cnn')")
    using_mid_sa: bool = arg(False, "attention in the middle block ('cnn')")
    pca_init: bool = arg(True, "initialise the 'patch' transform as the block PCA of training windows")
    tokens_per_pos: int = arg(1, 'G tokens per latent position (product quantisation of the Cvae vector)')
    per_scale_codebook: bool = arg(True, 'each scale owns its codebooks (else one codebook per group shared by scales)')
    using_znorm: bool = arg(False, 'cosine (normalised) code lookup instead of Euclidean')
    resample: str = arg('fft', "resampling between scales: 'fft' (band-limited) or 'linear' (area down, linear up)")
    quant_resi: float = arg(0.5, 'Phi blend ratio (0 = identity)')
    share_quant_resi: int = arg(4, 'Phi sharing: 0 one per scale, 1 shared, K >= 2 partially shared')
    beta: float = arg(0.25, 'commitment weight')
    # ---- scale layout
    v_patch_nums: str = arg(DEFAULT_V_PATCH_NUMS,
                            "explicit scale layout, e.g. 20_40_65_150_250 (strictly increasing, last = latent length, "
                            "the last K scales are the K stages); 'auto' = the Nyquist rule of "
                            "utils.eeg_bands.scale_lengths_for_bands with --extra_coarse / --tokens_per_nyquist. "
                            f"Default {DEFAULT_V_PATCH_NUMS} (measured on 5-s windows at 100 Hz: more tokens for delta and "
                            "theta than the Nyquist rule's 40_80_130_249_250, and its 249 for beta: 220 left 22-28 Hz to "
                            "the last scale, a 2-dB step in decodes and samples); windows of another latent length "
                            "get 'auto'")
    extra_coarse: str = arg('', "extra coarse scales below the first band, e.g. '1_2_4' ('' = none)")
    tokens_per_nyquist: float = arg(0.0, 'multiplier on the Nyquist scale-length rule; 0 = the downsampling factor D, '
                                    'so every scale carries its band at the latent rate sfreq / D')
    # ---- losses / codebook upkeep
    stage_w: str = arg('1', "per-stage loss weights, ',' separated (one value = same for all stages)")
    spec_w: float = arg(0.05, 'weight of the multi-resolution log-spectral (STFT) loss')
    psd_w: float = arg(0.0, 'weight of the sub-band power loss (squared log power ratio in --psd_bin_hz sub-bands) on '
                       'every partial decode; 0 = off (default: the band-gain codes keep band power, and with them '
                       'this loss made decodes easier to tell from their inputs, benchmarks/RESULTS.md). Not in upstream')
    corr_w: float = arg(10.0, 'weight of the channel-correlation loss: per window and band, the squared difference of '
                        "the full decode's channel correlations from its input's (0 = off). Squared error alone pulls "
                        "every window's spatial pattern toward the average one; measured on eegmat (benchmarks/"
                        'RESULTS.md) this loss makes decodes harder to tell from their inputs and leaves the band mix '
                        'little to do. Not in upstream')
    psd_bin_hz: float = arg(2.0, 'width of the sub-bands of the --psd_w loss (Hz)')
    residual_noise: bool = arg(True, 'store calibrated residual noise with the tokenizer (fitted on training windows '
                               'at every checkpoint); decoding with a noise seed restores the band power the '
                               'decoder loses, at a cost in SNR. Not in upstream')
    band_mix: bool = arg(True, 'store a per-band channel mixing with the tokenizer (fitted on training windows at '
                         'every checkpoint, no bits sent) that gives decodes the channel correlations of their inputs; '
                         'every decode applies it. Not in upstream')
    gain_step_db: float = arg(2.0, 'band-gain side codes: per window, channel and band, the input/decode power ratio '
                              'rounded to this step (dB) and sent beside the tokens, so decodes keep their band power '
                              '(K x log2(2 gain_max_steps + 1) bits per window and channel; not trained, measured by '
                              'the encoder); 0 = none. Not in upstream')
    gain_max_steps: int = arg(2, 'band-gain codes run from -N to +N steps (default: +-4 dB at 2-dB steps)')
    disc_w: float = arg(0.0, 'weight of the hinge adversarial loss of a waveform discriminator on the full decode '
                        '(models/eeg_discriminator.py); 0 = off (the default: on eegmat it made decodes easier to tell '
                        'from their inputs, docs/design.md section 2). Not in upstream')
    fm_w: float = arg(0.0, "weight of the discriminator's feature-matching loss (L1 between its hidden activations on "
                      'the decode and on the input, each layer relative to the input\'s); 0 = off. Not in upstream')
    disc_start_ep: int = arg(5, 'epoch from which the discriminator trains and its losses join (with --disc_w or '
                             '--fm_w > 0); the best checkpoint is then chosen among later epochs only')
    disc_ch: int = arg(32, "width of the discriminator's first layer")
    disc_lr: float = arg(2e-4, "the discriminator's Adam learning rate (constant, betas 0.5 / 0.9)")
    vq_w: float = arg(1.0, 'weight of the quantizer loss (codebook + beta * commitment)')
    reseed_every: int = arg(25, 're-seed dead codes from the batch every N iterations (0 = never)')
    # port: upstream counts a code as used above 0.08x the uniform rate; re-seeding everything below 0.5x keeps the
    # codebooks evenly used, so codes also turn up on unseen subjects (eegmat: first-scale use 77-84 % -> 85-88 %)
    reseed_margin: float = arg(0.5, 'a code is dead (re-seeded) below this fraction of the uniform usage rate '
                               "(upstream's usage margin: 0.08)")
    init_codebook: bool = arg(True, 'seed the codebooks from the first training batch (k-means-ish init)')
    uv_scale: float = arg(0.0, 'µV per model unit; 0 = median per-channel std of the training windows')
    limit_train: int = arg(0, 'use only the first N training windows (0 = all)')
    limit_val: int = arg(0, 'use only the first N validation windows (0 = all)')
    skip_bad: bool = arg(False, 'skip window files that fail validation or reading (each reported with its path and '
                         'counted in the log) instead of stopping')

    def validate(self) -> None:
        super().validate()
        mult = parse_int_list(self.ch_mult, 'ch_mult')
        if not mult or min(mult) < 1:
            raise UserError(f"--ch_mult={self.ch_mult!r}: expected positive integers like 1_1_1")
        parse_int_list(self.extra_coarse, 'extra_coarse')
        w = parse_float_list(self.stage_w, 'stage_w')
        if not w or min(w) < 0 or sum(w) <= 0:
            raise UserError(f"--stage_w={self.stage_w!r}: expected non-negative weights with a positive sum")
        if self.tokens_per_pos < 1 or self.z_channels % self.tokens_per_pos != 0:
            raise UserError(f"--tokens_per_pos={self.tokens_per_pos} must be >= 1 and divide --z_channels="
                            f"{self.z_channels}; choose e.g. --tokens_per_pos=2 with --z_channels=32")
        if self.vocab_size < 2:
            raise UserError(f"--vocab_size={self.vocab_size}: expected >= 2")
        if self.kernel_in < 1 or self.kernel_in % 2 == 0:
            raise UserError(f"--kernel_in={self.kernel_in}: expected an odd kernel size")
        if self.arch not in ('patch', 'cnn'):
            raise UserError(f"--arch={self.arch!r}: allowed 'patch', 'cnn'")
        if self.v_patch_nums not in ('auto', ''):
            parse_int_list(self.v_patch_nums, 'v_patch_nums')
        if self.resample not in ('linear', 'fft'):
            raise UserError(f"--resample={self.resample!r}: allowed 'linear', 'fft'")
        if self.tokens_per_nyquist < 0:
            raise UserError(f"--tokens_per_nyquist={self.tokens_per_nyquist}: expected > 0 (or 0 = the downsampling factor)")
        if not 0 <= self.reseed_margin < 1:
            raise UserError(f"--reseed_margin={self.reseed_margin}: expected a fraction of the uniform usage rate in [0, 1)")
        if self.psd_w < 0 or self.psd_bin_hz <= 0:
            raise UserError(f"--psd_w={self.psd_w} / --psd_bin_hz={self.psd_bin_hz}: expected psd_w >= 0 and psd_bin_hz > 0")
        if self.gain_step_db < 0 or self.gain_max_steps < 1:
            raise UserError(f"--gain_step_db={self.gain_step_db} / --gain_max_steps={self.gain_max_steps}: expected "
                            "gain_step_db >= 0 (0 = no gain codes) and gain_max_steps >= 1")
        if self.disc_w < 0 or self.fm_w < 0 or self.disc_start_ep < 0 or self.disc_ch < 1 or self.disc_lr <= 0:
            raise UserError(f"--disc_w={self.disc_w} / --fm_w={self.fm_w} / --disc_start_ep={self.disc_start_ep} / "
                            f"--disc_ch={self.disc_ch} / --disc_lr={self.disc_lr}: expected weights >= 0, a start "
                            "epoch >= 0, a width >= 1 and a learning rate > 0")
        if self.discriminator_on and self.disc_start_ep >= self.ep:
            raise UserError(f"--disc_start_ep={self.disc_start_ep} is not before the last epoch (--ep={self.ep}): the "
                            "discriminator would never train; choose a smaller --disc_start_ep")
        if self.uv_scale < 0:
            raise UserError(f"--uv_scale={self.uv_scale}: expected > 0 (or 0 = from the training data)")

    @property
    def discriminator_on(self) -> bool:
        """Whether training builds and trains the waveform discriminator (--disc_w or --fm_w > 0)."""
        return self.disc_w > 0 or self.fm_w > 0

    def stage_weights(self, n_stages: int) -> tuple[float, ...]:
        """Per-stage loss weights for ``n_stages`` stages."""
        w = parse_float_list(self.stage_w, 'stage_w')
        if len(w) == 1:
            return w * n_stages
        if len(w) != n_stages:
            raise UserError(f"--stage_w={self.stage_w!r} has {len(w)} weights but the dataset has {n_stages} stages; "
                            f"pass one weight or {n_stages}")
        return w

    def tb_name(self) -> str:
        return (f"tb-VAE__V{self.vocab_size}G{self.tokens_per_pos}z{self.z_channels}ch{self.ch}"
                f"__b{self.bs}ep{self.ep}lr{self.tblr:g}")
