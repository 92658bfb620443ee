"""Band tokenizer on real EEG: per-stage SNR beside the transform codec at equal bits, RD curve, speed.

Usage::

    python -m benchmarks.bench_tokenizer --vae_ckpt PATH --data_path DIR [--quick] [--extra_ckpts P1 P2 ...]

Without ``--vae_ckpt`` a tokenizer is trained first with ``VAR/train_vae.py`` into
``<results-dir>/raw/tokenizer_run`` (quick: 6 epochs on the evaluation dataset; full: the final recipe,
``FINAL_TRAIN_FLAGS``: 80 epochs on the same subjects' windows at a 2.5-s stride, scales 50/90/130/220/250,
i.e. more tokens for the coarse bands than one per Nyquist sample, 62.3 bits/s/channel); without ``--data_path`` / ``--data-root`` the eegmat benchmark
dataset is built as in ``bench_baselines`` (19 ch, 100 Hz, 5-s windows, Subject05 = validation).

Measured on the validation split (codec and PCA fitted on the training split):
per-stage SNR of the partial decodes (decoded from the tokens) and of the transform codec applied to that
stage at the same cumulative bits; the Gaussian rate-distortion bound there; per-band PSD error;
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
from utils.cli import run_cli, setup_logging
from utils.eeg_bands import stage_names
from utils.eeg_codec import TransformCodec, gaussian_rd_bound
from utils.eeg_dataset import EEGWindowDataset
from utils.eeg_metrics import snr_db
from utils.errors import UserError
from utils.project_info import REPO_ROOT
from utils.var_path import ensure_var_importable

ensure_var_importable()
import reconstruct  # noqa: E402
from vae_checkpoint import check_dataset_matches, load_vae  # noqa: E402

logger = logging.getLogger('benchmarks.bench_tokenizer')

NAME = 'tokenizer'
#: The tokenizer configuration this benchmark trains when no checkpoint is given (D = 2, G = 1, V = 256).
DEFAULT_TRAIN_FLAGS = ['--seed=0', '--save_ep=5']
#: The final eegmat tokenizer (full mode). The layout gives delta and theta ~25 % and ~12 % more tokens than the
#: band-derived 40/80/130/249/250 and takes them from the beta scale: +0.35 / +0.75 dB on the first two stages,
#: full band unchanged (9.3 dB) at fewer bits. With train_vae's default --reseed_margin=0.5 (upstream: 0.08)
#: first-scale codebook use on the held-out subject is 85-88 % over three seeds (77-84 % before) and the full
#: band 9.36-9.40 dB.
FINAL_TRAIN_FLAGS = ['--ep=80', '--v_patch_nums=50_90_130_220_250']


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
    p.add_argument('--extra_ckpts', nargs='*', default=[], help='more tokenizers (other rates) for the RD curve')
    p.add_argument('--threads', type=int, default=1, help='torch threads for the speed measurement')
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


def _train_default(data: str, out: str, quick: bool) -> str:
    path = os.path.join(out, 'vae-ckpt-best.pth')
    flags = [f'--data_path={data}', f'--local_out_dir_path={out}', *(['--ep=6'] if quick else FINAL_TRAIN_FLAGS),
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


def _speed(vae, x_BCT: torch.Tensor, window_sec: float, repeats: int, threads: int) -> dict:
    """Encode (to tokens) and decode (tokens to the full-spectrum signal) speed in x real time."""
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            idx = vae.eeg_to_idxBl(x_BCT)
            t_enc = median_time(lambda: vae.eeg_to_idxBl(x_BCT), repeats=repeats)
            t_dec = median_time(lambda: vae.idxBl_to_eeg(idx, last_one=True), repeats=repeats)
    finally:
        torch.set_num_threads(prev)
    sec = x_BCT.shape[0] * window_sec
    return dict(windows=int(x_BCT.shape[0]), threads=threads, encode_s=t_enc, decode_s=t_dec,
                encode_x_realtime=sec / t_enc, decode_x_realtime=sec / t_dec,
                encode_decode_x_realtime=sec / (t_enc + t_dec))


def evaluate_ckpt(path: str, val: EEGWindowDataset, limit: int | None) -> tuple[dict, dict, np.ndarray, np.ndarray]:
    vae, info = load_vae(path)
    check_dataset_matches(info, val, path)
    ds = val if limit is None else torch.utils.data.Subset(val, range(min(limit, len(val))))
    tgt, rec, toks = reconstruct.reconstruct(vae, info, ds)
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


def stage_table(res: dict, info: dict, tgt: np.ndarray, train_NKCT: np.ndarray) -> list[dict]:
    """Per stage: tokenizer SNR, transform codec and Gaussian bound at the tokenizer's cumulative bits."""
    names = stage_names(info['bands'])
    n_ch, window_sec, n_extra = info['n_channels'], info['n_times'] / info['sfreq'], int(info.get('n_extra_coarse', 0))
    stages = []
    for k, name in enumerate(names):
        bits = sum(info['v_patch_nums'][:n_extra + k + 1]) * info['tokens_per_pos'] * np.log2(info['vocab_size'])
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


def main(argv: Sequence[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    data = args.data_path or args.data_root
    if data is None:
        from benchmarks.bench_baselines import DEFAULT_DATA_ROOT, ensure_default_dataset
        data = ensure_default_dataset(os.path.join(args.results_dir, 'raw', 'eegmat100')
                                      if args.results_dir != RESULTS_DIR else DEFAULT_DATA_ROOT)
    train_data = data
    if not args.vae_ckpt and not args.quick and not (args.data_path or args.data_root):
        from benchmarks.bench_var import ensure_dataset  # same subjects and split, windows every 2.5 s
        train_data = ensure_dataset(os.path.join(args.results_dir, 'raw', 'eegmat100_s25'), 2.5)
    ckpt = args.vae_ckpt or _train_default(train_data, os.path.join(args.results_dir, 'raw', 'tokenizer_run'),
                                           args.quick)
    train = EEGWindowDataset(data, 'train')
    val = EEGWindowDataset(data, 'val')
    limit = 16 if args.quick else None
    res, info, tgt, rec = evaluate_ckpt(ckpt, val, limit)
    names = stage_names(info['bands'])
    n_t, sfreq = info['n_times'], info['sfreq']
    window_sec = n_t / sfreq
    train_NKCT = _load_split(train, 64 if args.quick else None)
    stages = stage_table(res, info, tgt, train_NKCT)
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
    speed = _speed(vae, x_BCT, window_sec, repeats=3 if args.quick else 7, threads=args.threads)
    ceiling_db = in_sample_codebooks_snr_db(vae, x_BCT, n_iter=5 if args.quick else 25)
    layouts = args.kmeans_layouts
    if layouts is None:
        layouts = list(DEFAULT_KMEANS_LAYOUTS) if (not args.quick and n_t == 500 and sfreq == 100) else []
    x_train_BCT = torch.from_numpy(train_NKCT[:, -1]).float() / info['uv_scale']
    kmeans = []
    for lay in layouts:
        kmeans.append(kmeans_tokenizer(lay, x_train_BCT, x_BCT, sfreq))
        logger.info('k-means tokenizer %s: %.1f bits/s/ch, val %.2f dB', lay, kmeans[-1]['bits_per_sec_per_channel'],
                    kmeans[-1]['val_snr_db'])
    fig = 'tokenizer_rd.png'
    _plot(figure_path(args.results_dir, fig), rates, codec_db, bound_db, points, names,
          [s['tokenizer_snr_db'] for s in stages], [s['codec_snr_db'] for s in stages],
          [s['gaussian_bound_snr_db'] for s in stages])
    full = stages[-1]
    result: dict[str, Any] = dict(
        machine=machine_info(), quick=bool(args.quick), vae_ckpt=os.path.abspath(ckpt), data_root=os.path.abspath(data),
        n_val_windows=int(tgt.shape[0]), v_patch_nums=info['v_patch_nums'], tokens_per_pos=info['tokens_per_pos'],
        vocab_size=info['vocab_size'], bits_per_sec_per_channel=res['bits_per_second_per_channel'],
        stages=stages, psd_error_db=res['psd_error_db'], codebook_usage_pct=res['codebook_usage_pct'],
        rd_curve=dict(rates=rates.tolist(), codec_snr_db=codec_db, gaussian_bound_snr_db=bound_db),
        extra_tokenizers=extra, speed=speed, in_sample_codebooks_snr_db=ceiling_db, kmeans_tokenizers=kmeans,
        targets=dict(must_full_beats_codec=full['beats_codec'], must_every_stage_beats_codec=all(s['beats_codec'] for s in stages),
                     goal_12db_at_64bps=bool(full['tokenizer_snr_db'] >= 12 and res['bits_per_second_per_channel'] <= 64),
                     usage_80pct_every_scale=bool(min(res['codebook_usage_pct']) >= 80),
                     speed_1000x=bool(speed['encode_decode_x_realtime'] >= 1000)))
    result['report'] = dict(
        title='Band tokenizer',
        text=[f"Tokenizer {os.path.basename(ckpt)}: scales {info['v_patch_nums']}, G={info['tokens_per_pos']}, "
              f"V={info['vocab_size']}, {res['bits_per_second_per_channel']:.1f} bits/s/channel; {tgt.shape[0]} validation "
              f"windows. Encode+decode {speed['encode_decode_x_realtime']:.0f}x real time on {args.threads} thread(s).",
              'Targets: ' + ', '.join(f'{k}={v}' for k, v in result['targets'].items()),
              f"Ceiling of this transform and layout: with every codebook refitted by k-means on the validation windows "
              f"themselves, the full band reaches {ceiling_db:.2f} dB (trained codebooks: {full['tokenizer_snr_db']:.2f} dB)."],
        tables=[dict(title='Per-stage SNR at equal cumulative bits (dB)',
                     columns=['stage', 'bits/s/ch', 'tokenizer', 'codec', 'Gaussian bound'],
                     rows=[[s['stage'], round(s['bits_per_sec_per_channel'], 1), round(s['tokenizer_snr_db'], 2),
                            round(s['codec_snr_db'], 2), round(s['gaussian_bound_snr_db'], 2)] for s in stages]),
                dict(title='Codebook usage per scale (%)', columns=[f's{si}:{pn}' for si, pn in enumerate(info['v_patch_nums'])],
                     rows=[[round(u, 1) for u in res['codebook_usage_pct']]]),
                # a decoded sample inherits this: VQ reconstructions carry less power than the signal, most in the high
                # bands, so it bounds how close any generated EEG decoded by this tokenizer can come to real band powers
                dict(title='Per-band PSD error of the full-band reconstruction vs the real windows (dB)',
                     columns=list(res['psd_error_db']), rows=[[round(v, 2) for v in res['psd_error_db'].values()]])]
        + ([dict(title='Layouts at equal rate, k-means tokenizers (block PCA + residual k-means on the training windows, '
                       'no gradient training): full-band SNR (dB)',
                 columns=['D', 'G', 'V', 'scales', 'bits/s/ch', 'train', 'validation'],
                 rows=[[k['downsample'], k['tokens_per_pos'], k['vocab_size'], '/'.join(map(str, k['v_patch_nums'])),
                        round(k['bits_per_sec_per_channel'], 1), round(k['train_snr_db'], 2), round(k['val_snr_db'], 2)]
                       for k in kmeans])] if kmeans else []),
        figures=[dict(title='RD curve and per-stage SNR', path=fig)])
    save_result(NAME, result, args.results_dir)
    logger.info('full-spectrum SNR %.2f dB at %.1f bits/s/ch (codec %.2f); stages %s', full['tokenizer_snr_db'],
                res['bits_per_second_per_channel'], full['codec_snr_db'],
                [(round(s['tokenizer_snr_db'], 2), round(s['codec_snr_db'], 2)) for s in stages])
    return result


if __name__ == '__main__':
    run_cli(lambda argv: (main(argv), 0)[1], prog='python -m benchmarks.bench_tokenizer')
