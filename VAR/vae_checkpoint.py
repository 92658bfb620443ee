"""Load a trained band tokenizer and check a dataset against it.

A tokenizer checkpoint (``vae-ckpt-last.pth`` / ``vae-ckpt-best.pth``, written by ``VAR/train_vae.py``
through :func:`utils.checkpoint.save_checkpoint`) holds, besides the weights, a plain dict
``state['tokenizer']`` (also stored as ``meta['config']``) with everything needed to rebuild the
model and go back to µV: the VQVAE constructor config, the scale layout, tokens per position, V,
sfreq, bands, channels, window length, ``uv_scale`` (µV per model unit) and the band-gain side codes'
step and range (``gain_step_db``, 0 or absent = none; ``gain_max_steps``; see ``models/band_gain.py``).

Shape letters: B batch, C electrodes, T samples, K stages.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Sequence, Tuple

import numpy as np
import torch

from models.band_gain import BandGain
from models.vqvae import VQVAE
from utils.checkpoint import load_checkpoint
from utils.eeg_bands import bands_equal, validate_bands, validate_scale_layout
from utils.errors import CheckpointError

logger = logging.getLogger(__name__)

__all__ = ['TOKENIZER_KEY', 'ARCH_KEYS', 'tokenizer_info', 'load_vae', 'check_dataset_matches',
           'stage_scale_indices', 'bits_per_second', 'band_gain', 'gain_bits_per_second']

TOKENIZER_KEY = 'tokenizer'
# Keys of the tokenizer info that must agree between a checkpoint and the run resuming from it.
ARCH_KEYS = ('vae_config', 'v_patch_nums', 'tokens_per_pos', 'vocab_size', 'sfreq', 'bands', 'n_channels',
             'n_times', 'ch_names', 'n_extra_coarse')


def tokenizer_info(vae: VQVAE, *, sfreq: float, bands: Sequence[Sequence[float]], ch_names: Sequence[str] | None,
                   uv_scale: float, n_extra_coarse: int, tokens_per_nyquist: float, gain_step_db: float = 0.0,
                   gain_max_steps: int = 2) -> Dict[str, Any]:
    """The plain-typed description stored with a tokenizer (see the module docstring)."""
    return dict(
        vae_config=vae.get_config(), v_patch_nums=list(vae.v_patch_nums), tokens_per_pos=int(vae.tokens_per_pos),
        vocab_size=int(vae.vocab_size), sfreq=float(sfreq), bands=[[float(a), float(b)] for a, b in bands],
        n_channels=int(vae.in_channels), n_times=int(vae.n_times), downsample=int(vae.downsample),
        ch_names=None if ch_names is None else [str(c) for c in ch_names], uv_scale=float(uv_scale),
        n_extra_coarse=int(n_extra_coarse), tokens_per_nyquist=float(tokens_per_nyquist),
        gain_step_db=float(gain_step_db), gain_max_steps=int(gain_max_steps))


def band_gain(info: Dict[str, Any]) -> BandGain | None:
    """The tokenizer's band-gain side codes, or None when it has none (``gain_step_db`` 0 or absent)."""
    step = float(info.get('gain_step_db', 0.0) or 0.0)
    if step <= 0:
        return None
    return BandGain(info['bands'], info['sfreq'], info['n_times'], step, int(info.get('gain_max_steps', 2)))


def gain_bits_per_second(info: Dict[str, Any], n_bands: int | None = None) -> float:
    """Fixed-length bits per second per channel of the gain codes of the first ``n_bands`` bands (0 without)."""
    gain = band_gain(info)
    if gain is None:
        return 0.0
    K = gain.n_bands if n_bands is None else int(n_bands)
    return gain.bits_per_second(info['sfreq']) * K / gain.n_bands


def stage_scale_indices(info: Dict[str, Any]) -> list[int]:
    """Scale index whose cumulative f_hat reconstructs each stage k (extra coarse scales come first)."""
    n_extra = int(info.get('n_extra_coarse', 0))
    return [n_extra + k for k in range(len(info['bands']))]


def bits_per_second(info: Dict[str, Any], n_scales: int | None = None) -> float:
    """Bits per second of EEG per channel for the first ``n_scales`` scales (all by default)."""
    pns = info['v_patch_nums'][:n_scales] if n_scales is not None else info['v_patch_nums']
    window_sec = info['n_times'] / info['sfreq']
    return float(sum(pns) * info['tokens_per_pos'] * np.log2(info['vocab_size']) / window_sec / info['n_channels'])


def load_vae(path: str, device: str | torch.device = 'cpu') -> Tuple[VQVAE, Dict[str, Any]]:
    """Rebuild a trained tokenizer from its checkpoint.

    Parameters
    ----------
    path : str
        ``vae-ckpt-best.pth`` or ``vae-ckpt-last.pth``.
    device : str or torch.device

    Returns
    -------
    vqvae : VQVAE
        In eval mode with frozen parameters (model units in and out).
    info : dict
        ``vae_config, v_patch_nums, tokens_per_pos, vocab_size, sfreq, bands (K, 2 list), n_channels,
        n_times, downsample, ch_names, uv_scale (µV per model unit), n_extra_coarse, tokens_per_nyquist``.

    Raises
    ------
    CheckpointError
        If the file is missing, damaged or not a tokenizer checkpoint.
    """
    import os
    if not os.path.exists(path):
        raise CheckpointError(f"--vae_ckpt={path}: file not found; pass vae-ckpt-best.pth or vae-ckpt-last.pth "
                              "written by VAR/train_vae.py")
    state, used = load_checkpoint(path, map_location='cpu')
    if TOKENIZER_KEY not in state or 'vae_wo_ddp' not in state:
        raise CheckpointError(f"{used}: not a band-tokenizer checkpoint (keys {sorted(state)[:6]}...); pass a "
                              "vae-ckpt-*.pth file written by VAR/train_vae.py")
    info = dict(state[TOKENIZER_KEY])
    validate_scale_layout(info['v_patch_nums'], info['n_times'] // info['downsample'], where=f"{used}: v_patch_nums")
    vae = VQVAE.from_config(info['vae_config'], test_mode=True)
    vae.load_state_dict(state['vae_wo_ddp'], strict=True)
    vae = vae.to(device)
    vae.eval()
    [p.requires_grad_(False) for p in vae.parameters()]
    info['path'] = used
    logger.info('loaded tokenizer %s: v_patch_nums=%s, G=%d, V=%d, %.1f bits/s/ch', used, info['v_patch_nums'],
                info['tokens_per_pos'], info['vocab_size'], bits_per_second(info))
    return vae, info


def check_dataset_matches(info: Dict[str, Any], dataset: Any, path: str) -> None:
    """Refuse a dataset whose sfreq, window, bands or channels differ from the tokenizer's.

    Parameters
    ----------
    info : dict
        From :func:`load_vae` (or ``state['tokenizer']``).
    dataset : EEGWindowDataset
        Anything with ``sfreq``, ``n_times``, ``bands``, ``n_channels``, ``ch_names`` and ``root``.
    path : str
        The checkpoint path, named in the error.

    Raises
    ------
    CheckpointError
        Naming both values and the fix.
    """
    where = getattr(dataset, 'root', 'dataset')
    fix = 'use a dataset built with the same settings or train a tokenizer on this one'
    if abs(float(dataset.sfreq) - float(info['sfreq'])) > 1e-6:
        raise CheckpointError(f"{where}: sfreq is {float(dataset.sfreq):g} Hz but tokenizer {path} was trained at "
                              f"{float(info['sfreq']):g} Hz; {fix}")
    if int(dataset.n_times) != int(info['n_times']):
        raise CheckpointError(f"{where}: windows have {int(dataset.n_times)} samples but tokenizer {path} expects "
                              f"{int(info['n_times'])}; {fix}")
    bands_ds = validate_bands(np.asarray(dataset.bands), float(dataset.sfreq), where=str(where))
    if not bands_equal(bands_ds, np.asarray(info['bands'])):
        raise CheckpointError(f"{where}: bands are {bands_ds.tolist()} but tokenizer {path} was trained with "
                              f"{info['bands']}; {fix}")
    if int(dataset.n_channels) != int(info['n_channels']):
        raise CheckpointError(f"{where}: windows have {int(dataset.n_channels)} channels but tokenizer {path} "
                              f"expects {int(info['n_channels'])}; {fix}")
    ch_ds = getattr(dataset, 'ch_names', None)
    if info.get('ch_names') is not None and ch_ds is not None and list(ch_ds) != list(info['ch_names']):
        raise CheckpointError(f"{where}: channels are {list(ch_ds)} but tokenizer {path} was trained with "
                              f"{list(info['ch_names'])}; {fix}")
