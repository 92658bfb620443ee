"""Band tokenizer on real EEG: per-stage SNR beside the transform codec at equal bits, RD curve, speed.

Usage::

    python -m benchmarks.bench_tokenizer --vae_ckpt PATH --data_path DIR [--quick] [--extra_ckpts P1 P2 ...]

Without ``--vae_ckpt`` a tokenizer is trained first with ``VAR/train_vae.py`` into
``<results-dir>/raw/tokenizer_run`` (quick: 6 epochs; full: the final recipe, train_vae.py's defaults,
``FINAL_TRAIN_FLAGS``) and, in full mode, the earlier recipe (``BEFORE_TRAIN_FLAGS``: the previous default,
without the channel-correlation loss) into ``raw/tokenizer_run_before`` for the side-by-side rows (or pass
``--before_ckpt``). Without
``--data_path`` the benchmark dataset is built into ``raw/eegmat100_s25_val4``: all 26 eegmat subjects,
19 ch, 100 Hz, 5-s windows every 2.5 s, ``EEGMAT_VAL_SUBJECTS`` (4 subjects) held out. ``--split-by time`` is the second
protocol: the same windows of all 26 subjects with the last 30 % of every recording held out
(``raw/eegmat100_t25``); the tokenizer trains into ``raw/tokenizer_run_time`` and the results go to
``tokenizer_time.json`` and ``tokenizer_time_*.png`` (no earlier recipe and no k-means scan unless asked for).

Measured on the validation split (codec and PCA fitted on the training split):
per-stage SNR of the partial decodes (decoded from the tokens) and of the transform codec applied to that
stage at the same cumulative bits; the Gaussian rate-distortion bound there; per-band PSD error; realism of
each tokenizer's decodes, plain and with its seeded residual noise (per-stage SNR, per-band PSD error, C2ST AUC
of decodes vs inputs with a logistic classifier and an MLP on richer features, beside the floor of the same
test between interleaved halves of the real windows);
bits/s/channel; codebook usage per scale; encode + decode speed (x real time, median of repetitions,
one thread); the full-spectrum RD curve of the codec and the bound, with the tokenizer's point(s)
(``--extra_ckpts`` adds tokenizers trained at other rates); and the ceiling of the tokenizer's transform and
layout: its SNR when every codebook is refitted by k-means on the validation windows themselves.

A saved run in ``raw/tokenizer_run`` is resumed only when it was trained with the same settings; a run of
another recipe is moved aside to ``raw/tokenizer_run.old-<time>`` and a fresh one is trained.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from typing import Any, Sequence

import numpy as np
import torch

from benchmarks import RESULTS_DIR, bench_parser, figure_path, machine_info, median_time, save_result
from benchmarks.bench_baselines import HELD_OUT, add_split_flag, ensure_bench_dataset, split_suffix, split_title
from utils.cli import run_cli, setup_logging
from utils.eeg_bands import stage_names
from utils.eeg_c2st import c2st_auc, c2st_features
from utils.eeg_c2st_mlp import c2st_mlp_auc, rich_features
from utils.eeg_codec import TransformCodec, gaussian_rd_bound
from utils.eeg_dataset import EEGWindowDataset
from utils.eeg_metrics import psd_band_error_db, snr_db
from utils.errors import UserError
from utils.project_info import REPO_ROOT
from utils.var_path import ensure_var_importable

ensure_var_importable()
import reconstruct  # noqa: E402
from models.band_gain import apply_gain_codes, encode_gain_codes  # noqa: E402
from models.band_noise import ResidualNoise, calibrate_vae_noise_  # noqa: E402
from vae_checkpoint import band_gain, check_dataset_matches, gain_bits_per_second, load_vae, stage_scale_indices  # noqa: E402

logger = logging.getLogger('benchmarks.bench_tokenizer')

NAME = 'tokenizer'
TAKES_SPLIT_BY = True  # run_all --split-by passes its protocol on
#: The tokenizer configuration this benchmark trains when no checkpoint is given (D = 2, G = 1, V = 256).
DEFAULT_TRAIN_FLAGS = ['--seed=0', '--save_ep=5']
#: The final eegmat tokenizer (full mode): train_vae.py's defaults (40 epochs, scales 50/90/130/249/250, re-seed
#: margin 0.5, the channel-correlation loss at 10, band-gain codes of 2-dB steps, no sub-band power loss, a per-band
#: channel mix and residual noise calibrated on the training windows), on 2.5-s-stride windows.
FINAL_TRAIN_FLAGS: list[str] = []
#: The previous default, trained beside the final one for the side-by-side tables (full mode): the same recipe
#: without the channel-correlation loss.
BEFORE_TRAIN_FLAGS = ['--corr_w=0']
#: Frequencies judged by the PSD error and the C2ST features (eegmat is low-passed at 45 Hz).
F_MAX = 45.0


#: Layouts scanned with k-means tokenizers in full mode on 5-s windows at 100 Hz (``D:G:V:Cvae:scales``, all at
#: ~62 bits/s/channel): the final layout, a larger codebook, and G tokens per position with the bits moved
#: from the coarse scales to the full-resolution one (D = 2 and 4).
DEFAULT_KMEANS_LAYOUTS = ('2:1:256:32:50_90_130_220_250', '2:1:1024:32:40_70_100_132_250',
                          '2:2:256:32:15_25_35_45_250', '4:2:256:64:25_45_65_110_125',
                          '4:3:256:63:15_25_35_46_125', '4:4:256:64:8_12_17_23_125')


def build_parser():
    p = bench_parser('python -m benchmarks.bench_tokenizer', __doc__.split('\n\n')[0])
    p.add_argument('--vae_ckpt', default=None, help='tokenizer checkpoint; default: train one first')
    p.add_argument('--data_path', default=None, help='dataset root (same as --data-root)')
    p.add_argument('--before_ckpt', default=None,
                   help='the earlier tokenizer measured beside --vae_ckpt; default in full mode: train BEFORE_TRAIN_FLAGS')
    p.add_argument('--noise_seed', type=int, default=0, help='seed of the residual noise in the decode+noise rows')
    p.add_argument('--extra_ckpts', nargs='*', default=[], help='more tokenizers (other rates) for the RD curve')
    p.add_argument('--threads', type=int, default=1, help='torch threads for the speed measurement')
    add_split_flag(p)
    p.add_argument('--kmeans_layouts', nargs='*', default=None, metavar='D:G:V:CVAE:SCALES',
                   help="layouts to scan with k-means tokenizers (PCA transform + residual k-means fitted on the training "
                        "windows, no gradient training), e.g. 4:2:256:64:25_45_65_110_125; default: "
                        "DEFAULT_KMEANS_LAYOUTS in full mode on 5-s windows at 100 Hz, none otherwise")
    return p


def _load_split(ds: EEGWindowDataset, limit: int | None = None) -> np.ndarray:
    n = len(ds) if limit is None else min(limit, len(ds))
    return np.stack([ds.window(i).stages_KCT for i in range(n)]).astype(np.float64)


#: Settings that do not change what a tokenizer run learns (bookkeeping, paths, I/O).
_BOOKKEEPING = frozenset({'data_path', 'local_out_dir_path', 'exp_name', 'save_ep', 'save_it', 'workers',
                          'max_nonfinite', 'skip_bad', 'afuse', 'tf32', 'cmd', 'code_version', 'tb_log_dir_path',
                          'log_txt_path', 'last_ckpt_path', 'world_size', 'batch_size', 'glb_batch_size'})


def recipe_changes(out: str, flags: Sequence[str]) -> list[str]:
    """Settings in which the run saved in ``out`` differs from ``train_vae.py flags`` (its code defaults included).

    Empty when there is no run yet or it matches, so re-running the benchmark resumes it; otherwise
    ``['reseed_margin: 0.08 -> 0.5', ...]``.
    """
    last = os.path.join(out, 'vae-ckpt-last.pth')
    if not os.path.exists(last):
        return []
    from utils.checkpoint import load_checkpoint
    from utils.vae_arg_util import VAEArgs
    state, _ = load_checkpoint(last, map_location='cpu')
    saved = state.get('args') if isinstance(state, dict) else None
    if not isinstance(saved, dict):
        return ['args: not recorded']
    want = VAEArgs.parse(list(flags))
    want.derive(world_size=int(saved.get('world_size', 1)))  # learning rate, warm-up: as the run derived them
    return [f'{k}: {saved.get(k, "(unset)")} -> {v}' for k, v in sorted(want.state_dict().items())
            if k not in _BOOKKEEPING and saved.get(k) != v]


def _train_default(data: str, out: str, quick: bool, recipe: Sequence[str] | None = None) -> str:
    path = os.path.join(out, 'vae-ckpt-best.pth')
    recipe = FINAL_TRAIN_FLAGS if recipe is None else recipe
    flags = [f'--data_path={data}', f'--local_out_dir_path={out}', *(['--ep=6'] if quick else recipe),
             *DEFAULT_TRAIN_FLAGS]
    changed = recipe_changes(out, flags)
    if changed:  # an earlier recipe's run: keep it beside, never resume it under the new settings
        old = f'{out}.old-{time.strftime("%Y%m%d-%H%M%S")}'
        logger.info('%s was trained with other settings (%s); moved to %s, training afresh', out, '; '.join(changed), old)
        os.replace(out, old)
    cmd = [sys.executable, os.path.join(REPO_ROOT, 'VAR', 'train_vae.py'), *flags]
    logger.info('training a tokenizer: %s', ' '.join(cmd))
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get('OMP_NUM_THREADS', '1'))
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f'train_vae.py failed ({proc.returncode}): {proc.stderr[-2000:]}')
    return path


def _speed(vae, x_BCT: torch.Tensor, window_sec: float, repeats: int, threads: int, noise_seed: int | None = None,
           gain=None) -> tuple[dict, dict | None, dict | None]:
    """Encode (to tokens) and decode (tokens to the full-spectrum signal) speed in x real time; also, with
    ``noise_seed`` and a tokenizer holding residual noise, the decode with the noise, and with ``gain`` (its
    :class:`~models.band_gain.BandGain`) encode + decode with the band-gain codes (encode = tokens + one full decode
    to measure the codes; decode = decode + one rFFT pair). Returns (plain, with noise or None, with gains or None).
    """
    n_sec = x_BCT.shape[0] * window_sec
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            idx = vae.eeg_to_idxBl(x_BCT)
            t_enc = median_time(lambda: vae.eeg_to_idxBl(x_BCT), repeats=repeats)
            t_dec = median_time(lambda: vae.idxBl_to_eeg(idx, last_one=True), repeats=repeats)
            speed_noise = speed_gains = None
            if noise_seed is not None and vae.noise is not None:
                t_noise = median_time(lambda: vae.idxBl_to_eeg(idx, last_one=True, noise_seed=noise_seed),
                                      repeats=repeats)
                speed_noise = dict(decode_s=t_noise, encode_decode_x_realtime=n_sec / (t_enc + t_noise))
            if gain is not None:
                def enc():
                    idx_S = vae.eeg_to_idxBl(x_BCT)
                    return idx_S, encode_gain_codes(vae, gain, x_BCT, idx_S)
                _, codes = enc()
                t_genc = median_time(enc, repeats=repeats)
                t_gdec = median_time(lambda: gain.apply(vae.idxBl_to_eeg(idx, last_one=True), codes), repeats=repeats)
                speed_gains = dict(encode_s=t_genc, decode_s=t_gdec, encode_decode_x_realtime=n_sec / (t_genc + t_gdec))
    finally:
        torch.set_num_threads(prev)
    speed = dict(windows=int(x_BCT.shape[0]), threads=threads, encode_s=t_enc, decode_s=t_dec,
                 encode_x_realtime=n_sec / t_enc, decode_x_realtime=n_sec / t_dec,
                 encode_decode_x_realtime=n_sec / (t_enc + t_dec))
    return speed, speed_noise, speed_gains


def evaluate_ckpt(path: str, val: EEGWindowDataset, limit: int | None) -> tuple[dict, dict, np.ndarray, np.ndarray]:
    vae, info = load_vae(path)
    check_dataset_matches(info, val, path)
    ds = val if limit is None else torch.utils.data.Subset(val, range(min(limit, len(val))))
    tgt, rec, toks, _ = reconstruct.reconstruct(vae, info, ds, gains=False)
    return reconstruct.score(tgt, rec, info, toks, f_max=45.0), info, tgt, rec


def parse_layout(text: str) -> tuple[int, int, int, int, tuple[int, ...]]:
    """``'D:G:V:Cvae:s1_s2_..'`` -> (D, G, V, Cvae, scales); a malformed layout is a :class:`UserError`."""
    try:
        d, g, v, z, pns = text.split(':')
        out = (int(d), int(g), int(v), int(z), tuple(int(x) for x in pns.split('_')))
    except ValueError:
        raise UserError(f"--kmeans_layouts: {text!r}; expected D:G:V:CVAE:SCALES, e.g. 4:2:256:64:25_45_65_110_125") from None
    D, G, V, z, pns = out
    if D < 1 or D & (D - 1) or G < 1 or V < 2 or z % G or not pns:
        raise UserError(f"--kmeans_layouts: {text!r}; D must be a power of two, G >= 1 dividing CVAE, V >= 2")
    return out


@torch.no_grad()
def kmeans_tokenizer(layout: str, x_train_BCT: torch.Tensor, x_val_BCT: torch.Tensor, sfreq: float,
                     n_iter: int = 12, seed: int = 0) -> dict:
    """A tokenizer without gradient training: block-PCA transform + residual k-means codebooks on training windows.

    It isolates what a layout can carry at its rate from how well a tokenizer is trained (on eegmat the
    trained final layout is ~0.6 dB above its k-means version). Returns bits/s/channel and full-band SNR
    on both splits.

    Parameters
    ----------
    layout : str
        ``'D:G:V:Cvae:scales'`` (see :func:`parse_layout`); the last scale must be ``T / D``.
    x_train_BCT, x_val_BCT : Tensor, shape (B, C, T), model units
    """
    from models import VQVAE
    D, G, V, z, pns = parse_layout(layout)
    C, T = x_train_BCT.shape[1:]
    if T % D or pns[-1] != T // D or list(pns) != sorted(set(pns)):
        raise UserError(f"--kmeans_layouts: {layout!r} does not fit {T}-sample windows: scales must increase strictly "
                        f"and end at T / D = {T / D:g}")
    torch.manual_seed(seed)
    vae = VQVAE(in_channels=C, vocab_size=V, z_channels=z, ch_mult=(1,) * (D.bit_length()), arch='patch',
                v_patch_nums=pns, tokens_per_pos=G, per_scale_codebook=True, resample='fft', quant_resi=0.0,
                test_mode=False)
    vae.init_from_pca_(x_train_BCT)
    vae.eval()
    vae.quantize.init_codebook_from_(vae.encode_BCl(x_train_BCT), generator=torch.Generator().manual_seed(seed),
                                     lloyd_iters=n_iter)
    snr = {name: float(snr_db(x.double().numpy(), vae.eeg_to_reconstructed_eeg(x, last_one=True).double().numpy()))
           for name, x in (('train', x_train_BCT), ('val', x_val_BCT))}
    return dict(layout=layout, downsample=D, tokens_per_pos=G, vocab_size=V, z_channels=z, v_patch_nums=list(pns),
                bits_per_sec_per_channel=sum(pns) * G * float(np.log2(V)) / (T / sfreq) / C,
                train_snr_db=snr['train'], val_snr_db=snr['val'])


@torch.no_grad()
def in_sample_codebooks_snr_db(vae, x_BCT: torch.Tensor, n_iter: int = 25) -> float:
    """Full-band SNR (dB) of ``x_BCT`` when every codebook is refitted by k-means on ``x_BCT`` itself.

    Codebooks fitted to the very windows they code are an optimistic ceiling for this transform, layout
    and rate: a tokenizer that generalises cannot expect more from its codebooks. ``vae`` is not modified.

    Parameters
    ----------
    vae : VQVAE
    x_BCT : Tensor, shape (B, C, T), model units
    """
    import copy
    fitted = copy.deepcopy(vae).eval()
    fitted.quantize.init_codebook_from_(fitted.encode_BCl(x_BCT), reseed=False, lloyd_iters=n_iter)
    rec = fitted.eeg_to_reconstructed_eeg(x_BCT, last_one=True)
    return float(snr_db(x_BCT.double().numpy(), rec.double().numpy()))


# ------------------------------------------------------------------------------- realism of the decodes
@torch.no_grad()
def decode_stages(vae, info: dict, stages_NKCT: np.ndarray, noise_seed: int | None = None, noise=None,
                  bs: int = 64, gains: bool = False) -> np.ndarray:
    """Every stage's partial decode through the tokens, (N, K, C, T) µV; with ``noise_seed`` plus residual noise,
    with ``gains`` scaled by the tokenizer's band-gain codes.

    ``noise``: a calibrated :class:`ResidualNoise` to use instead of the tokenizer's own (older checkpoints hold
    none). Batch b draws with seed ``noise_seed + b``, so a decode is reproducible.
    """
    uv, scale_idx = float(info['uv_scale']), stage_scale_indices(info)
    noise = noise if noise is not None else vae.noise
    gain = band_gain(info) if gains else None
    out = []
    for b, i in enumerate(range(0, len(stages_NKCT), bs)):
        x_BCT = torch.from_numpy(stages_NKCT[i:i + bs, -1]).float() / uv
        idx_S = vae.eeg_to_idxBl(x_BCT)
        recs_S = vae.idxBl_to_eeg(idx_S, last_one=False)
        if noise_seed is not None:
            recs_S = [noise.add_(r, si, noise_seed + b) for si, r in enumerate(recs_S)]
        if gain is not None:
            recs_S = apply_gain_codes(gain, recs_S, encode_gain_codes(vae, gain, x_BCT, idx_S),
                                      int(info.get('n_extra_coarse', 0)))
        out.append(torch.stack([recs_S[s] for s in scale_idx], dim=1).numpy() * uv)
    return np.concatenate(out).astype(np.float64)


def calibrated_noise(vae, info: dict, train_NKCT: np.ndarray, max_windows: int = 512) -> ResidualNoise:
    """The tokenizer's stored noise, or (older checkpoints) one fitted here on the training windows."""
    if vae.noise is not None and all(vae.noise.is_calibrated(s) for s in stage_scale_indices(info)):
        return vae.noise
    noise = ResidualNoise(len(info['v_patch_nums']), info['n_channels'], info['n_times'])
    idx = np.unique(np.linspace(0, len(train_NKCT) - 1, min(len(train_NKCT), max_windows)).round().astype(int))
    f_hi_bins = [int(round(hi * info['n_times'] / info['sfreq'])) + 1 for _, hi in info['bands']]
    calibrate_vae_noise_(noise, vae, torch.from_numpy(train_NKCT[idx]).float() / float(info['uv_scale']),
                         stage_scale_indices(info), f_hi_bins)
    return noise


def interleaved_halves(source: np.ndarray, start: np.ndarray, block: int = 2) -> np.ndarray:
    """Boolean mask of half A: alternate blocks of ``block`` consecutive windows of every recording.

    Both halves then hold every recording (a split by subject differs by subject and scores ~1.0).
    """
    mask = np.zeros(len(source), dtype=bool)
    for rec in np.unique(source):
        idx = np.flatnonzero(source == rec)
        idx = idx[np.argsort(start[idx], kind='stable')]
        mask[idx] = (np.arange(len(idx)) // block) % 2 == 0
    return mask


def c2st_groups(source: np.ndarray, start: np.ndarray, min_groups: int = 4, block: int = 8) -> np.ndarray:
    """Cross-validation group per window: its recording, or (fewer than ``min_groups`` recordings) runs of
    ``block`` consecutive windows of a recording."""
    if len(np.unique(source)) >= min_groups:
        return np.asarray(source)
    out = np.empty(len(source), dtype=object)
    for rec in np.unique(source):
        idx = np.flatnonzero(source == rec)
        idx = idx[np.argsort(start[idx], kind='stable')]
        out[idx] = [f'{rec}#{j // block}' for j in range(len(idx))]
    return out.astype(str)


def c2st_scores(feat_a: dict, feat_b: dict, groups: np.ndarray, half_a: np.ndarray, seed: int = 0) -> dict:
    """Linear and MLP C2ST AUC between windows ``a`` of half A and ``b`` of half B, and B vs A, averaged.

    ``feat_*``: ``{'linear': (N, D1), 'rich': (N, D2)}`` features of the same N windows (real or decoded).
    """
    out = {}
    for kind in ('linear', 'rich'):
        aucs = []
        for m_a, m_b in ((half_a, ~half_a), (~half_a, half_a)):
            Fa, Fb = feat_a[kind][m_a], feat_b[kind][m_b]
            if kind == 'linear':
                aucs.append(c2st_auc(Fa, Fb, 0, groups_a=groups[m_a], groups_b=groups[m_b], seed=seed,
                                     features=(Fa, Fb)).auc)
            else:
                aucs.append(c2st_mlp_auc(Fa, Fb, groups[m_a], groups[m_b], seed=seed).auc)
        out['c2st_auc_linear' if kind == 'linear' else 'c2st_auc_mlp'] = float(np.mean(aucs))
    return out


def window_features(x_NCT: np.ndarray, sfreq: float, bands, f_max: float) -> dict:
    return dict(linear=c2st_features(x_NCT, sfreq, bands, f_max), rich=rich_features(x_NCT, sfreq, bands, f_max))


def realism(vae, info: dict, val, train_NKCT: np.ndarray, f_max: float, noise_seed: int = 0,
            real_feats: dict | None = None) -> dict:
    """Per variant (plain decode, decode + band-gain codes when the tokenizer has them, decode + residual noise):
    per-stage SNR, per-band PSD error, C2ST AUCs, and for the gains their fixed and entropy-coded bits/s/channel.

    ``val``: a ``bench_baselines.Split`` (windows, recording ids, starts); ``real_feats``: the real windows'
    features when already computed.
    """
    x_NKCT = val.stages_NKCT
    bands, sfreq = info['bands'], info['sfreq']
    names = stage_names(bands)
    half_a = interleaved_halves(val.source, val.start)
    real_feats = real_feats or window_features(x_NKCT[:, -1], sfreq, bands, f_max)
    noise = calibrated_noise(vae, info, train_NKCT)
    out = {}
    gain = band_gain(info)
    variants = [('decode', None, False)] + ([('decode+gains', None, True)] if gain else []) + \
        [('decode+noise', noise_seed, False)]
    for variant, seed, gains in variants:
        rec = decode_stages(vae, info, x_NKCT, noise_seed=seed, noise=noise, gains=gains)
        res = dict(snr_db={n: float(snr_db(x_NKCT[:, k], rec[:, k])) for k, n in enumerate(names)},
                   psd_error_db=psd_band_error_db(x_NKCT[:, -1], rec[:, -1], sfreq, bands, f_max=f_max),
                   stage_psd_error_db={n: psd_band_error_db(x_NKCT[:, k], rec[:, k], sfreq, bands[:k + 1], f_max=f_max)
                                       for k, n in enumerate(names)})
        res.update(c2st_scores(real_feats, window_features(rec[:, -1], sfreq, bands, f_max),
                               c2st_groups(val.source, val.start), half_a))
        if gains:
            uv = float(info['uv_scale'])
            x_BCT = torch.from_numpy(x_NKCT[:, -1]).float() / uv
            codes = encode_gain_codes(vae, gain, x_BCT, vae.eeg_to_idxBl(x_BCT))
            res.update(gain_bits_per_second_per_channel=gain_bits_per_second(info),
                       gain_entropy_bits_per_second_per_channel=gain.entropy_bits_per_second(codes, sfreq),
                       gain_code_counts=np.bincount(codes.numpy().ravel() + gain.max_steps, minlength=gain.levels).tolist())
        out[variant] = res
    return out


def realism_floor(val, info: dict, f_max: float) -> tuple[dict, dict]:
    """C2ST AUC of real half A vs real half B (the floor), and the real windows' features."""
    feats = window_features(val.stages_NKCT[:, -1], info['sfreq'], info['bands'], f_max)
    half_a = interleaved_halves(val.source, val.start)
    return c2st_scores(feats, feats, c2st_groups(val.source, val.start), half_a), feats


def stage_table(res: dict, info: dict, tgt: np.ndarray, train_NKCT: np.ndarray, gains: bool = False) -> list[dict]:
    """Per stage: tokenizer SNR, transform codec and Gaussian bound at the tokenizer's cumulative bits (with
    ``gains``, those of the band-gain codes of the stage's bands included)."""
    names = stage_names(info['bands'])
    n_ch, window_sec, n_extra = info['n_channels'], info['n_times'] / info['sfreq'], int(info.get('n_extra_coarse', 0))
    stages = []
    for k, name in enumerate(names):
        bits = sum(info['v_patch_nums'][:n_extra + k + 1]) * info['tokens_per_pos'] * np.log2(info['vocab_size'])
        if gains:
            bits += gain_bits_per_second(info, k + 1) * window_sec * n_ch
        codec = TransformCodec(info['sfreq']).fit(train_NKCT[:, k])
        x_NCT = tgt[:, k].astype(np.float64)
        rate = bits / window_sec / n_ch
        stages.append(dict(stage=name, cum_bits_per_window=float(bits), bits_per_sec_per_channel=rate,
                           tokenizer_snr_db=res['snr_db'][name],
                           codec_snr_db=float(snr_db(x_NCT, codec.roundtrip(x_NCT, bits=bits).x_hat_NCT)),
                           gaussian_bound_snr_db=float(gaussian_rd_bound(codec, x_NCT, rate))))
        stages[-1]['beats_codec'] = bool(stages[-1]['tokenizer_snr_db'] > stages[-1]['codec_snr_db'])
    return stages


def _plot(path: str, rates: np.ndarray, codec_db: list, bound_db: list, points: list, names: list,
          tok_k: list, codec_k: list, bound_k: list) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    a.plot(rates, bound_db, 'k--', label='Gaussian RD bound')
    a.plot(rates, codec_db, 'o-', color='gray', label='transform codec (PCA + DCT)')
    for i, (r, s, lab) in enumerate(points):
        a.plot([r], [s], 's' if i == 0 else 'D', ms=9, label=lab)
    a.set_xlabel('bits / s / channel'); a.set_ylabel('full-spectrum SNR (dB)'); a.grid(alpha=.3); a.legend(fontsize=8)
    a.set_title('rate-distortion (validation subject)')
    x = np.arange(len(names)); w = 0.27
    b.bar(x - w, tok_k, w, label='tokenizer (partial decode)')
    b.bar(x, codec_k, w, label='codec, same cumulative bits')
    b.bar(x + w, bound_k, w, label='Gaussian bound, same bits', color='lightgray')
    b.set_xticks(x); b.set_xticklabels(['<=' + n.split('+')[-1] for n in names], rotation=0)
    b.set_ylabel('SNR (dB)'); b.set_title('per-stage SNR'); b.legend(fontsize=8); b.grid(axis='y', alpha=.3)
    fig.tight_layout(); fig.savefig(path, dpi=110); plt.close(fig)


def _plot_psd(path: str, real_NCT: np.ndarray, decodes: dict, sfreq: float,
              held_out: str = HELD_OUT['subject']) -> None:
    """Mean PSD of the real validation windows and of each decode (log scale)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from utils.eeg_metrics import welch_psd
    fig, ax = plt.subplots(figsize=(7, 4))
    f, p = welch_psd(real_NCT, sfreq)
    keep = (f > 0) & (f <= F_MAX)  # the DC bin of a decode is near zero and would stretch the axis
    ax.semilogy(f[keep], p[keep], 'k', lw=2, label='real')
    for lab, x in decodes.items():
        f, p = welch_psd(x, sfreq)
        ax.semilogy(f[keep], p[keep], lw=1, ls='--' if 'noise' in lab else (':' if 'gains' in lab else '-'), label=lab)
    ax.set_xlim(0, F_MAX); ax.set_xlabel('Hz'); ax.set_ylabel('PSD (µV²/Hz)'); ax.grid(alpha=.3); ax.legend(fontsize=8)
    ax.set_title(f'{held_out}: real vs decoded')
    fig.tight_layout(); fig.savefig(path, dpi=90); plt.close(fig)


def main(argv: Sequence[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    sfx = split_suffix(args.split_by)
    raw = os.path.join(args.results_dir, 'raw')
    data = args.data_path or args.data_root or ensure_bench_dataset(raw, args.split_by)
    ckpt = args.vae_ckpt or _train_default(data, os.path.join(raw, 'tokenizer_run' + sfx), args.quick)
    before = args.before_ckpt
    if before is None and not args.vae_ckpt and not args.quick and not sfx:
        before = _train_default(data, os.path.join(raw, 'tokenizer_run_before'), False, BEFORE_TRAIN_FLAGS)
    from benchmarks.bench_baselines import load_split
    train = EEGWindowDataset(data, 'train')
    val = EEGWindowDataset(data, 'val')
    limit = 16 if args.quick else None
    res, info, tgt, rec = evaluate_ckpt(ckpt, val, limit)
    names = stage_names(info['bands'])
    n_t, sfreq = info['n_times'], info['sfreq']
    f_max = min(F_MAX, sfreq / 2)
    window_sec = n_t / sfreq
    train_NKCT = _load_split(train, 64 if args.quick else None)
    stages = stage_table(res, info, tgt, train_NKCT)
    # realism: the same held-out windows through each tokenizer, plain and with its residual noise
    val_split = load_split(data, 'val', limit, np.random.default_rng(0))
    floor, real_feats = realism_floor(val_split, info, f_max)
    tokenizers = [('new', ckpt)] + ([('before', before)] if before else [])
    real_rows, decodes = {}, {}
    for tag, path in tokenizers:
        vae_t, info_t = load_vae(path)
        check_dataset_matches(info_t, val, path)
        r = realism(vae_t, info_t, val_split, train_NKCT, f_max, args.noise_seed, real_feats)
        for variant, v in r.items():
            # each variant against the codec at its own bits (the gain codes' bits counted for decode+gains)
            r_stages = stage_table(dict(snr_db=v['snr_db']), info_t, val_split.stages_NKCT, train_NKCT,
                                   gains=variant == 'decode+gains')
            real_rows[f'{tag}: {variant}'] = dict(v, path=os.path.abspath(path), stages=r_stages
                                                  if variant in ('decode', 'decode+gains') else None,
                                                  beats_codec_every_stage=all(
                                                      v['snr_db'][s['stage']] > s['codec_snr_db'] for s in r_stages))
        decodes[f'{tag}: decode'] = decode_stages(vae_t, info_t, val_split.stages_NKCT)[:, -1]
        if 'decode+gains' in r:
            decodes[f'{tag}: decode+gains'] = decode_stages(vae_t, info_t, val_split.stages_NKCT, gains=True)[:, -1]
        decodes[f'{tag}: decode+noise'] = decode_stages(vae_t, info_t, val_split.stages_NKCT, args.noise_seed,
                                                        calibrated_noise(vae_t, info_t, train_NKCT))[:, -1]
    # full-spectrum RD curve
    codec_full = TransformCodec(sfreq).fit(train_NKCT[:, -1])
    rates = np.array([8, 16, 28, 40, 55, 64, 80, 100], dtype=float)
    codec_db = [float(snr_db(tgt[:, -1], codec_full.roundtrip(tgt[:, -1].astype(np.float64),
                                                               bits_per_sec_per_channel=r).x_hat_NCT)) for r in rates]
    bound_db = [float(v) for v in gaussian_rd_bound(codec_full, tgt[:, -1].astype(np.float64), rates)]
    points = [(res['bits_per_second_per_channel'], res['snr_db'][names[-1]],
               f"tokenizer D={info['downsample']} G={info['tokens_per_pos']} V={info['vocab_size']} (main)")]
    extra = []
    for p in args.extra_ckpts:
        r2, i2, tgt2, _ = evaluate_ckpt(p, val, limit)
        c2 = codec_full.roundtrip(tgt[:, -1].astype(np.float64), bits_per_sec_per_channel=r2['bits_per_second_per_channel'])
        extra.append(dict(path=p, bits_per_sec_per_channel=r2['bits_per_second_per_channel'],
                          snr_db=r2['snr_db'][names[-1]], codec_snr_db=float(snr_db(tgt[:, -1], c2.x_hat_NCT)),
                          v_patch_nums=i2['v_patch_nums'], vocab_size=i2['vocab_size'], downsample=i2['downsample'],
                          tokens_per_pos=i2['tokens_per_pos'], usage_pct=r2['codebook_usage_pct'],
                          stages=stage_table(r2, i2, tgt2, train_NKCT)))
        points.append((r2['bits_per_second_per_channel'], r2['snr_db'][names[-1]],
                       f"tokenizer D={i2['downsample']} G={i2['tokens_per_pos']} V={i2['vocab_size']}"))
    # speed
    vae, _ = load_vae(ckpt)
    x_BCT = torch.from_numpy(tgt[:, -1]).float() / info['uv_scale']
    speed, speed_noise, speed_gains = _speed(vae, x_BCT, window_sec, repeats=3 if args.quick else 7,
                                             threads=args.threads, noise_seed=args.noise_seed, gain=band_gain(info))
    ceiling_db = in_sample_codebooks_snr_db(vae, x_BCT, n_iter=5 if args.quick else 25)
    layouts = args.kmeans_layouts
    if layouts is None:
        layouts = list(DEFAULT_KMEANS_LAYOUTS) if (not args.quick and not sfx and n_t == 500 and sfreq == 100) else []
    x_train_BCT = torch.from_numpy(train_NKCT[:, -1]).float() / info['uv_scale']
    kmeans = []
    for lay in layouts:
        kmeans.append(kmeans_tokenizer(lay, x_train_BCT, x_BCT, sfreq))
        logger.info('k-means tokenizer %s: %.1f bits/s/ch, val %.2f dB', lay, kmeans[-1]['bits_per_sec_per_channel'],
                    kmeans[-1]['val_snr_db'])
    fig, fig_psd = f'{NAME}{sfx}_rd.png', f'{NAME}{sfx}_psd.png'
    _plot(figure_path(args.results_dir, fig), rates, codec_db, bound_db, points, names,
          [s['tokenizer_snr_db'] for s in stages], [s['codec_snr_db'] for s in stages],
          [s['gaussian_bound_snr_db'] for s in stages])
    held_out = HELD_OUT[args.split_by]
    _plot_psd(figure_path(args.results_dir, fig_psd), val_split.stages_NKCT[:, -1], decodes, sfreq, held_out)
    full = stages[-1]
    new_noise = real_rows['new: decode+noise']
    new_gains = real_rows.get('new: decode+gains')
    result: dict[str, Any] = dict(
        machine=machine_info(), quick=bool(args.quick), vae_ckpt=os.path.abspath(ckpt), data_root=os.path.abspath(data),
        split_by=args.split_by, before_ckpt=os.path.abspath(before) if before else None,
        val_subjects=sorted(set(val_split.subject.tolist())),
        n_val_windows=int(tgt.shape[0]), v_patch_nums=info['v_patch_nums'], tokens_per_pos=info['tokens_per_pos'],
        vocab_size=info['vocab_size'], bits_per_sec_per_channel=res['bits_per_second_per_channel'],
        stages=stages, psd_error_db=res['psd_error_db'], codebook_usage_pct=res['codebook_usage_pct'],
        realism=dict(floor=floor, f_max=f_max, noise_seed=args.noise_seed, tokenizers=real_rows),
        rd_curve=dict(rates=rates.tolist(), codec_snr_db=codec_db, gaussian_bound_snr_db=bound_db),
        extra_tokenizers=extra, speed=speed, speed_with_noise=speed_noise, speed_with_gains=speed_gains,
        in_sample_codebooks_snr_db=ceiling_db,
        band_mix_alpha=None if vae.mix is None else [round(float(a), 3) for a in vae.mix.alpha_K],
        kmeans_tokenizers=kmeans,
        targets=dict(must_full_beats_codec=full['beats_codec'], must_every_stage_beats_codec=all(s['beats_codec'] for s in stages),
                     goal_12db_at_64bps=bool(full['tokenizer_snr_db'] >= 12 and res['bits_per_second_per_channel'] <= 64),
                     usage_80pct_every_scale=bool(min(res['codebook_usage_pct']) >= 80),
                     speed_1000x=bool(speed['encode_decode_x_realtime'] >= 1000),
                     psd_error_025db_every_band_with_noise=bool(max(new_noise['psd_error_db'].values()) <= 0.25),
                     c2st_mlp_within_005_of_floor_with_noise=bool(new_noise['c2st_auc_mlp'] <= floor['c2st_auc_mlp'] + 0.05),
                     **({} if new_gains is None else dict(
                         every_stage_beats_codec_with_gains=new_gains['beats_codec_every_stage'],
                         psd_error_025db_every_band_with_gains=bool(max(new_gains['psd_error_db'].values()) <= 0.25),
                         c2st_mlp_within_005_of_floor_with_gains=bool(new_gains['c2st_auc_mlp'] <= floor['c2st_auc_mlp'] + 0.05),
                         speed_1000x_with_gains=bool(speed_gains['encode_decode_x_realtime'] >= 1000)))))
    band_cols = list(res['psd_error_db'])
    n_subj = len(result['val_subjects'])
    where = ', '.join(result['val_subjects']) if not sfx else f'{held_out} ({n_subj} subjects)'
    result['report'] = dict(
        title='Band tokenizer' + split_title(args.split_by),
        text=[f"Tokenizer {os.path.basename(ckpt)}: scales {info['v_patch_nums']}, G={info['tokens_per_pos']}, "
              f"V={info['vocab_size']}, {res['bits_per_second_per_channel']:.1f} bits/s/channel; {tgt.shape[0]} validation "
              f"windows of {where}. Encode+decode {speed['encode_decode_x_realtime']:.0f}x "
              f"real time on {args.threads} thread(s)" + (f" ({speed_noise['encode_decode_x_realtime']:.0f}x with the "
                                                          "residual noise" if speed_noise else '')
              + (f", {speed_gains['encode_decode_x_realtime']:.0f}x with the band-gain codes" if speed_gains else '')
              + (')' if speed_noise else '') + '.',
              'Targets: ' + ', '.join(f'{k}={v}' for k, v in result['targets'].items()),
              f"Ceiling of this transform and layout: with every codebook refitted by k-means on the validation windows "
              f"themselves, the full band reaches {ceiling_db:.2f} dB (trained codebooks: {full['tokenizer_snr_db']:.2f} dB).",
              "Realism: 'decode' is the deterministic decode of the tokens" + (
                  " through the tokenizer's band mix (the new one's mixing factor per band: "
                  + '/'.join(f'{a:g}' for a in result['band_mix_alpha']) + ')' if result['band_mix_alpha'] else '')
              + "; 'decode+gains' scales each band of it by "
              "the window's band-gain codes (measured by the encoder, sent beside the tokens" + (
                  f": {new_gains['gain_bits_per_second_per_channel']:.2f} bits/s/channel fixed-length, "
                  f"{new_gains['gain_entropy_bits_per_second_per_channel']:.2f} entropy-coded; 'beats codec' compares "
                  "with the codec at the tokens' plus the codes' bits" if new_gains else '') + "); 'decode+noise' adds "
              "the residual noise calibrated on the training windows (seeded; it restores band power at a cost in "
              "SNR). C2ST AUC: input "
              "windows of one half vs decodes of the other half (alternate 2-window blocks of every recording), "
              "folds grouped by recording, both ways averaged; the floor is the same test on the real halves."],
        tables=[dict(title='Per-stage SNR at equal cumulative bits (dB)',
                     columns=['stage', 'bits/s/ch', 'tokenizer', 'codec', 'Gaussian bound'],
                     rows=[[s['stage'], round(s['bits_per_sec_per_channel'], 1), round(s['tokenizer_snr_db'], 2),
                            round(s['codec_snr_db'], 2), round(s['gaussian_bound_snr_db'], 2)] for s in stages]),
                dict(title=f'Realism on {held_out}: full-band SNR (dB), per-band PSD error (dB), C2ST AUC',
                     columns=['decoder', 'SNR per stage', 'beats codec', *band_cols, 'C2ST linear', 'C2ST MLP'],
                     rows=[['real halves (floor)', '', '', *([''] * len(band_cols)),
                            round(floor['c2st_auc_linear'], 3), round(floor['c2st_auc_mlp'], 3)]]
                     + [[tag, '/'.join(f'{v:.2f}' for v in r['snr_db'].values()), r['beats_codec_every_stage'],
                         *[round(v, 2) for v in r['psd_error_db'].values()], round(r['c2st_auc_linear'], 3),
                         round(r['c2st_auc_mlp'], 3)] for tag, r in real_rows.items()]),
                dict(title='Codebook usage per scale (%)', columns=[f's{si}:{pn}' for si, pn in enumerate(info['v_patch_nums'])],
                     rows=[[round(u, 1) for u in res['codebook_usage_pct']]])]
        + ([dict(title='Layouts at equal rate, k-means tokenizers (block PCA + residual k-means on the training windows, '
                       'no gradient training): full-band SNR (dB)',
                 columns=['D', 'G', 'V', 'scales', 'bits/s/ch', 'train', 'validation'],
                 rows=[[k['downsample'], k['tokens_per_pos'], k['vocab_size'], '/'.join(map(str, k['v_patch_nums'])),
                        round(k['bits_per_sec_per_channel'], 1), round(k['train_snr_db'], 2), round(k['val_snr_db'], 2)]
                       for k in kmeans])] if kmeans else []),
        figures=[dict(title='RD curve and per-stage SNR', path=fig), dict(title='PSD: real vs decoded', path=fig_psd)])
    save_result(NAME + sfx, result, args.results_dir)
    logger.info('full-spectrum SNR %.2f dB at %.1f bits/s/ch (codec %.2f); stages %s', full['tokenizer_snr_db'],
                res['bits_per_second_per_channel'], full['codec_snr_db'],
                [(round(s['tokenizer_snr_db'], 2), round(s['codec_snr_db'], 2)) for s in stages])
    return result


if __name__ == '__main__':
    run_cli(lambda argv: (main(argv), 0)[1], prog='python -m benchmarks.bench_tokenizer')
