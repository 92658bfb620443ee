"""Reconstruct EEG windows through a trained band tokenizer and score the partial decodes.

Usage (from the repository root)::

    python VAR/reconstruct.py --vae_ckpt=local_output/vae-ckpt-best.pth --data_path=DIR --split=val --out=rec.npz

Every window goes through the real codec path: encode -> token maps (``eeg_to_idxBl``) -> decode the
cumulative sum after each band's scale (``idxBl_to_eeg``). A tokenizer with band-gain codes
(``train_vae.py --gain_step_db``, on by default) also measures each window's codes and applies them to its
decodes (``models/band_gain.py``); ``--no_gains`` gives the plain decode. Decodes go through the tokenizer's band
mix when it holds one (``models/band_mix.py``); ``--no_mix`` leaves it out. Writes ``target_cumulative`` and
``recon_cumulative`` (N, K, C, T) µV, ``gain_codes`` (N, C, K; absent without codes), ``sfreq``, ``bands``,
``ch_names``, ``band_mix`` (whether decodes went through it), ``bits_per_second`` (whole window, all channels, codes included),
``bits_per_second_per_channel`` and ``stage_bits_per_second_per_channel`` (K,) (cumulative bits up to each
stage, codes included), and prints JSON: per-stage SNR (dB), per-band PSD error (dB), bits/s/channel (tokens
and codes apart), codebook usage per scale (% of codes hit, relative to the most the split could hit).

Shape letters: N windows, K stages, C electrodes, T samples, S scales.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Dict, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from utils.cli import ArgumentParser, run_cli, setup_logging
from utils.eeg_bands import stage_names
from utils.eeg_dataset import EEGWindowDataset
from utils.eeg_metrics import psd_band_error_db, snr_db
from utils.errors import UserError
from models.band_gain import apply_gain_codes, encode_gain_codes
from vae_checkpoint import band_gain, bits_per_second, check_dataset_matches, gain_bits_per_second, load_vae, \
    stage_scale_indices

logger = logging.getLogger(__name__)

PROG = 'reconstruct.py'


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog=PROG, description=__doc__.split('\n\n')[0])
    p.add_argument('--vae_ckpt', required=True, help='tokenizer checkpoint (vae-ckpt-best.pth / vae-ckpt-last.pth)')
    p.add_argument('--data_path', required=True, help='dataset root with train/ and val/ window files')
    p.add_argument('--split', default='val', choices=('train', 'val'), help='which split to reconstruct')
    p.add_argument('--out', required=True, help='output .npz file')
    p.add_argument('--limit', type=int, default=0, help='only the first N windows (0 = all)')
    p.add_argument('--bs', type=int, default=32, help='windows per batch')
    p.add_argument('--f_max', type=float, default=None,
                   help='clip bands to this frequency for the PSD error (e.g. 45 for eegmat); default: no clipping')
    p.add_argument('--noise_seed', type=int, default=None,
                   help="add the tokenizer's calibrated residual noise drawn with this seed (restores band power, "
                        "costs SNR) instead of applying its band-gain codes; default: none")
    p.add_argument('--no_gains', action='store_true',
                   help="decode without the tokenizer's band-gain codes (the tokens alone)")
    p.add_argument('--no_mix', action='store_true',
                   help="decode without the tokenizer's band mix (the decoder alone: a little more SNR, channels more "
                        "correlated than the inputs')")
    p.add_argument('--overwrite', action='store_true', help='replace --out if it exists')
    return p


@torch.no_grad()
def reconstruct(vae, info: Dict[str, Any], ds: EEGWindowDataset, bs: int = 32, noise_seed: int | None = None,
                gains: bool = True) -> tuple[np.ndarray, np.ndarray, list, np.ndarray | None]:
    """Targets and reconstructions (N, K, C, T) µV, the token maps of every window (list over scales, (N, pn*G))
    and its band-gain codes (N, C, K) int8, or None.

    Decoding goes through the tokens, exactly as the VAR transformer's outputs will be decoded. With
    ``noise_seed``, batch b adds the residual noise drawn with seed ``noise_seed + b`` and no gain codes are
    used; otherwise the tokenizer's gain codes are measured and applied when it has them and ``gains``.
    """
    uv = float(info['uv_scale'])
    scale_idx = stage_scale_indices(info)
    gain = band_gain(info) if gains and noise_seed is None else None
    tgt, rec, toks, codes = [], [], [], []
    for b, (stages_BKCT, _) in enumerate(DataLoader(ds, batch_size=bs, shuffle=False)):
        x_BCT = stages_BKCT[:, -1].float() / uv
        idx_S = vae.eeg_to_idxBl(x_BCT)
        recs_S = vae.idxBl_to_eeg(idx_S, last_one=False, noise_seed=None if noise_seed is None else noise_seed + b)
        if gain is not None:
            codes.append(encode_gain_codes(vae, gain, x_BCT, idx_S))
            recs_S = apply_gain_codes(gain, recs_S, codes[-1], int(info.get('n_extra_coarse', 0)))
        rec.append(torch.stack([recs_S[s] for s in scale_idx], dim=1).numpy() * uv)
        tgt.append(stages_BKCT.numpy())
        toks.append([i.numpy() for i in idx_S])
    toks_S = [np.concatenate([t[si] for t in toks]) for si in range(len(toks[0]))]
    codes_NCK = torch.cat(codes).numpy() if codes else None
    return np.concatenate(tgt).astype(np.float32), np.concatenate(rec).astype(np.float32), toks_S, codes_NCK


def codebook_usage_pct(toks_S: Sequence[np.ndarray], info: Dict[str, Any]) -> list[float]:
    """Per scale: % of codes hit at least once (mean over groups), relative to min(V, windows x pn)."""
    G, V = int(info['tokens_per_pos']), int(info['vocab_size'])
    out = []
    for idx_NL in toks_S:
        N, LG = idx_NL.shape
        grp = idx_NL.reshape(N, LG // G, G)
        used = np.mean([np.unique(grp[..., g]).size for g in range(G)])
        out.append(float(used / min(V, N * LG // G) * 100))
    return out


def score(tgt_NKCT: np.ndarray, rec_NKCT: np.ndarray, info: Dict[str, Any], toks_S: Sequence[np.ndarray],
          f_max: float | None = None, gains: bool = False) -> Dict[str, Any]:
    """Per-stage SNR, per-band PSD error (full stage), bits/s/channel and codebook usage, as plain types.

    ``gains``: the decodes used the tokenizer's band-gain codes, whose fixed-length bits are then counted in
    ``bits_per_second_per_channel`` and the stage bits (``gain_bits_per_second_per_channel`` apart).
    """
    names = stage_names(info['bands'])
    n_extra = int(info.get('n_extra_coarse', 0))
    gain_bits = (lambda k: gain_bits_per_second(info, k)) if gains else (lambda k: 0.0)
    return dict(
        snr_db={n: float(snr_db(tgt_NKCT[:, k], rec_NKCT[:, k])) for k, n in enumerate(names)},
        psd_error_db=psd_band_error_db(tgt_NKCT[:, -1], rec_NKCT[:, -1], info['sfreq'], info['bands'], f_max=f_max),
        bits_per_second_per_channel=bits_per_second(info) + gain_bits(None),
        token_bits_per_second_per_channel=bits_per_second(info), gain_bits_per_second_per_channel=gain_bits(None),
        stage_bits_per_second_per_channel={n: bits_per_second(info, n_extra + k + 1) + gain_bits(k + 1)
                                           for k, n in enumerate(names)},
        codebook_usage_pct=codebook_usage_pct(toks_S, info),
        v_patch_nums=list(info['v_patch_nums']), tokens_per_pos=int(info['tokens_per_pos']),
        vocab_size=int(info['vocab_size']), n_windows=int(tgt_NKCT.shape[0]))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if os.path.exists(args.out) and not args.overwrite:
        raise UserError(f"--out={args.out} already exists; pass --overwrite to replace it or choose another file")
    if not args.out.endswith('.npz'):
        raise UserError(f"--out={args.out}: expected a file name ending in .npz")
    vae, info = load_vae(args.vae_ckpt)
    if args.no_mix:
        vae.mix = None
    ds = EEGWindowDataset(args.data_path, args.split, limit=args.limit or None)
    check_dataset_matches(info, ds, args.vae_ckpt)
    if args.noise_seed is not None and (vae.noise is None or not vae.noise.is_calibrated(len(info['v_patch_nums']) - 1)):
        raise UserError(f"--noise_seed: tokenizer {args.vae_ckpt} holds no calibrated residual noise (trained before "
                        "--residual_noise or with it off); drop --noise_seed")
    tgt, rec, toks_S, codes = reconstruct(vae, info, ds, bs=args.bs, noise_seed=args.noise_seed,
                                          gains=not args.no_gains)
    result = score(tgt, rec, info, toks_S, f_max=args.f_max, gains=codes is not None)
    folder = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(folder, exist_ok=True)
    tmp = args.out[:-4] + '.tmp.npz'
    np.savez(tmp, target_cumulative=tgt, recon_cumulative=rec, sfreq=np.float32(info['sfreq']),
             bands=np.asarray(info['bands'], dtype=np.float32),
             ch_names=np.asarray(info['ch_names'] if info.get('ch_names') else [f'ch{i}' for i in range(tgt.shape[2])]),
             band_mix=np.bool_(vae.mix is not None and vae.mix.is_calibrated()),
             bits_per_second=np.float32(result['bits_per_second_per_channel'] * info['n_channels']),
             bits_per_second_per_channel=np.float32(result['bits_per_second_per_channel']),
             stage_bits_per_second_per_channel=np.asarray(list(result['stage_bits_per_second_per_channel'].values()),
                                                          dtype=np.float32),
             **({} if codes is None else dict(gain_codes=codes, gain_step_db=np.float32(info['gain_step_db']))))
    os.replace(tmp, args.out)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == '__main__':
    setup_logging()
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    run_cli(main, prog=PROG)
