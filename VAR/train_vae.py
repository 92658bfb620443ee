"""Train the EEG band tokenizer (1D multi-scale residual VQ over cumulative frequency bands).

Launch (from the repository root)::

    python VAR/train_vae.py --data_path=DIR                                  # one process
    torchrun --nproc_per_node=2 VAR/train_vae.py --data_path=DIR             # DDP (gloo on CPU, NCCL on GPU)

The defaults are the recipe measured best by ``benchmarks/bench_tokenizer.py`` on eegmat (5-s windows at
100 Hz every 2.5 s): 40 epochs, scales 50/90/130/249/250, a per-window channel-correlation loss
(``--corr_w``), band-gain side codes of 2-dB steps
(``--gain_step_db``; measured by the encoder at use, nothing to train) instead of the sub-band power loss
(``--psd_w``, off), and, fitted on the training windows at every checkpoint, a per-band channel mix that every
decode applies (``--band_mix``) and residual noise (``--residual_noise``; decoding adds it only when given a
noise seed).

Writes into ``--local_out_dir_path`` (default ``<repo>/local_output``): ``vae-ckpt-last.pth``,
``vae-ckpt-best.pth`` (best validation full-spectrum SNR of the decoder before the band mix), ``log.txt``
(one JSON line per epoch), stdout/stderr copies and TensorBoard scalars (per-stage SNR, per-scale codebook
usage). Re-running the same command resumes exactly from the checkpoint with the most recorded progress;
changing an architecture flag against an existing checkpoint is an error naming both values.

The scale layout comes from the dataset's bands, sfreq and window (``utils.eeg_bands.
scale_lengths_for_bands`` with ``--extra_coarse`` and ``--tokens_per_nyquist``) and is stored in the
checkpoint with the µV scale (``--uv_scale``, default the median per-channel std of the training set).
"""
from __future__ import annotations

import logging
import math
import os
import time
from typing import Any, Dict, Sequence

import numpy as np
import torch
from torch.distributed.elastic.multiprocessing.errors import record
from torch.utils.data import DataLoader, Dataset

import dist
from models.band_losses import subband_edges
from models.band_mix import band_index_F
from models.band_noise import calibrate_vae_noise_
from models.eeg_discriminator import WaveDiscriminator
from models.vqvae import VQVAE
from utils import arg_util, misc
from utils.amp_sc import AmpOptimizer
from utils.checkpoint import check_config, save_checkpoint
from utils.cli import run_cli
from utils.data_sampler import DistInfiniteBatchSampler, EvalDistributedSampler
from utils.eeg_bands import scale_lengths_for_bands, stage_names, validate_scale_layout
from utils.eeg_dataset import EEGWindowDataset, open_dataset
from utils.errors import CheckpointError, DatasetError, UserError
from utils.lr_control import filter_params, lr_wd_annealing
from utils.vae_arg_util import DEFAULT_V_PATCH_NUMS, VAEArgs, parse_int_list
from vae_checkpoint import ARCH_KEYS, TOKENIZER_KEY, bits_per_second, gain_bits_per_second, stage_scale_indices, tokenizer_info
from vae_trainer import VAETrainer

logger = logging.getLogger(__name__)

_CACHE_LIMIT_BYTES = 2 * 1024 ** 3


class NonFiniteError(UserError):
    """Too many optimizer steps in a row had a non-finite loss or gradient (exit code 2, one line)."""


class _CachedWindows(Dataset):
    """Keeps a small split in memory (decompressing npz files every epoch dominates tiny-model runs)."""

    def __init__(self, ds: EEGWindowDataset):
        self.ds = ds
        self.items = [ds[i] for i in range(len(ds))]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.items[i]


def maybe_cache(ds: EEGWindowDataset) -> Dataset:
    size = len(ds) * ds.n_stages * ds.n_channels * ds.n_times * 4
    return _CachedWindows(ds) if size <= _CACHE_LIMIT_BYTES else ds


def estimate_uv_scale(ds: EEGWindowDataset, max_windows: int = 256) -> float:
    """Median per-channel standard deviation (µV) of the full-spectrum stage over training windows."""
    idx = np.linspace(0, len(ds) - 1, min(len(ds), max_windows)).round().astype(int)
    stds = [ds.window(int(i)).stages_KCT[-1].std(axis=-1) for i in np.unique(idx)]
    return float(np.median(np.concatenate(stds)))


def scale_layout(args: VAEArgs, ds: EEGWindowDataset, downsample: int) -> tuple[int, ...]:
    """The 1D scale layout for this dataset; a window not divisible by the downsampling is an error."""
    if ds.n_times % downsample != 0:
        raise DatasetError(f"{ds.root}: windows have {ds.n_times} samples, not divisible by the tokenizer's "
                           f"downsampling factor {downsample} (--ch_mult={args.ch_mult}); choose a window length that "
                           f"is a multiple of {downsample} or fewer --ch_mult levels")
    latent_len = ds.n_times // downsample
    if args.v_patch_nums == DEFAULT_V_PATCH_NUMS and parse_int_list(args.v_patch_nums, 'v_patch_nums')[-1] != latent_len:
        misc.print0(f"[tokenizer] the default layout {DEFAULT_V_PATCH_NUMS} is for a latent length of 250; this dataset's "
                    f"is {latent_len}: using the Nyquist rule ('auto')")
    elif args.v_patch_nums not in ('auto', ''):
        pns = validate_scale_layout(parse_int_list(args.v_patch_nums, 'v_patch_nums'), latent_len,
                                    where=f"--v_patch_nums={args.v_patch_nums} (latent length = {ds.n_times} samples / "
                                          f"downsampling {downsample})")
        if len(pns) < ds.n_stages:
            raise DatasetError(f"--v_patch_nums={args.v_patch_nums} has {len(pns)} scales but the dataset has "
                               f"{ds.n_stages} stages; give at least one scale per stage")
        return pns
    return scale_lengths_for_bands(ds.bands, ds.sfreq, latent_len,
                                   extra_coarse=parse_int_list(args.extra_coarse, 'extra_coarse'),
                                   tokens_per_nyquist=args.tokens_per_nyquist or downsample)


@torch.no_grad()
def _init_from_data(args: VAEArgs, vae: VQVAE, ds: EEGWindowDataset, uv_scale: float) -> None:
    """Fresh runs: block-PCA transform ('patch' arch) and codebooks seeded from training windows.

    Every rank reads the same windows and uses the same generator, so all ranks start identical.
    """
    idx = np.linspace(0, len(ds) - 1, min(len(ds), 256)).round().astype(int)
    x_BCT = torch.stack([torch.from_numpy(ds.window(int(i)).stages_KCT[-1]) for i in np.unique(idx)])
    x_BCT = x_BCT.to(args.device).float() / uv_scale
    if args.arch == 'patch' and args.pca_init:
        evals = vae.init_from_pca_(x_BCT)
        kept = sum(evals) / (x_BCT.square().mean().item() * vae.downsample * x_BCT.shape[1])
        misc.print0(f"[tokenizer] block-PCA init: {vae.Cvae} components keep {kept * 100:.1f}% of the energy")
    if args.init_codebook:
        g = torch.Generator().manual_seed((args.seed or 0) + 12345)
        vae.quantize.init_codebook_from_(vae.encode_BCl(x_BCT), generator=g)


def build_everything(args: VAEArgs):
    """Data, model, optimizer, trainer; resume state. Returns a dict of the pieces."""
    limits = (args.limit_train or None, args.limit_val or None)
    ds_train, ds_val = open_dataset(args.data_path, limits=limits, skip_bad=args.skip_bad)
    mult = parse_int_list(args.ch_mult, 'ch_mult')
    downsample = 2 ** (len(mult) - 1)
    v_patch_nums = scale_layout(args, ds_train, downsample)
    n_extra = len(v_patch_nums) - ds_train.n_stages

    info_lines, start_ep, start_it, state, used = misc.auto_resume(args.local_out_dir_path, 'vae-ckpt*.pth')
    for line in info_lines:
        misc.print0(line)
    uv_scale = args.uv_scale or (float(state[TOKENIZER_KEY]['uv_scale']) if state else estimate_uv_scale(ds_train))

    vae_wo_ddp = VQVAE(in_channels=ds_train.n_channels, vocab_size=args.vocab_size, z_channels=args.z_channels,
                       ch=args.ch, ch_mult=mult, num_res_blocks=args.num_res_blocks, using_sa=args.using_sa,
                       using_mid_sa=args.using_mid_sa, kernel_in=args.kernel_in, beta=args.beta,
                       using_znorm=args.using_znorm, quant_resi=args.quant_resi,
                       share_quant_resi=args.share_quant_resi, v_patch_nums=v_patch_nums,
                       tokens_per_pos=args.tokens_per_pos, per_scale_codebook=args.per_scale_codebook,
                       resample=args.resample, arch=args.arch, residual_noise=args.residual_noise,
                       mix_bands=len(ds_train.bands) if args.band_mix else 0,
                       test_mode=False).to(args.device)
    if not state:
        _init_from_data(args, vae_wo_ddp, ds_train, uv_scale)
    info = tokenizer_info(vae_wo_ddp, sfreq=ds_train.sfreq, bands=ds_train.bands.tolist(), ch_names=ds_train.ch_names,
                          uv_scale=uv_scale, n_extra_coarse=n_extra,
                          tokens_per_nyquist=args.tokens_per_nyquist or downsample,
                          gain_step_db=args.gain_step_db, gain_max_steps=args.gain_max_steps)
    if state:
        had_mix = bool(state[TOKENIZER_KEY].get('vae_config', {}).get('mix_bands'))
        if had_mix != bool(args.band_mix):
            raise CheckpointError(f"{used} was trained {'with' if had_mix else 'without'} the band mix; pass "
                                  f"--band_mix={had_mix} to resume it, or choose a new --local_out_dir_path")
        check_config(state[TOKENIZER_KEY], info, ARCH_KEYS, used,
                     fix='pass the flags it was trained with, or choose a new --local_out_dir_path')
    n_params = sum(p.numel() for p in vae_wo_ddp.parameters())
    misc.print0(f"[tokenizer] v_patch_nums={list(v_patch_nums)} (stages {stage_names(ds_train.bands)}), "
                f"G={args.tokens_per_pos}, V={args.vocab_size}, {sum(v_patch_nums) * args.tokens_per_pos} tokens/window, "
                f"{bits_per_second(info):.1f} bits/s/channel (+{gain_bits_per_second(info):.1f} of band-gain codes), uv_scale={uv_scale:.3f} µV, {n_params / 1e6:.3f} M params")

    names, paras, para_groups = filter_params(vae_wo_ddp, nowd_keys={'embedding', 'norm', 'bias', 'quant_resi'})
    opt = torch.optim.AdamW(para_groups, lr=args.tlr, weight_decay=0, betas=(0.9, 0.95),
                            **({'fused': True} if (args.afuse and args.device.startswith('cuda')) else {}))
    vae_opt = AmpOptimizer(mixed_precision=args.fp16, optimizer=opt, names=names, paras=paras, grad_clip=args.tclip,
                           n_gradient_accumulation=args.ac, device_type='cuda' if args.device.startswith('cuda') else 'cpu')
    if dist.initialized():
        from torch.nn.parallel import DistributedDataParallel as DDP
        vae = DDP(vae_wo_ddp, device_ids=[dist.get_local_rank()] if args.device.startswith('cuda') else None,
                  broadcast_buffers=False)
    else:
        vae = vae_wo_ddp
    disc = disc_ddp = disc_opt = None
    if args.discriminator_on:
        disc = WaveDiscriminator(ds_train.n_channels, hidden=args.disc_ch).to(args.device)
        d_opt = torch.optim.Adam(disc.parameters(), lr=args.disc_lr, betas=(0.5, 0.9))
        disc_opt = AmpOptimizer(mixed_precision=args.fp16, optimizer=d_opt, names=[n for n, _ in disc.named_parameters()],
                                paras=list(disc.parameters()), grad_clip=args.tclip, n_gradient_accumulation=args.ac,
                                device_type='cuda' if args.device.startswith('cuda') else 'cpu')
        if dist.initialized():  # without DDP the trainer steps the discriminator itself
            from torch.nn.parallel import DistributedDataParallel as DDP
            disc_ddp = DDP(disc, device_ids=[dist.get_local_rank()] if args.device.startswith('cuda') else None,
                           broadcast_buffers=False)
    trainer = VAETrainer(args.device, vae_wo_ddp, vae, vae_opt, stage_scale_idx=stage_scale_indices(info),
                         stage_weights=args.stage_weights(ds_train.n_stages), uv_scale=uv_scale, spec_w=args.spec_w,
                         vq_w=args.vq_w, reseed_every=args.reseed_every, seed=args.seed or 0,
                         reseed_margin=args.reseed_margin, psd_w=args.psd_w,
                         stage_edges=[subband_edges(hi, ds_train.sfreq, ds_train.n_times, args.psd_bin_hz)
                                      for _, hi in ds_train.bands],
                         corr_w=args.corr_w, band_F=band_index_F(ds_train.bands, ds_train.sfreq, ds_train.n_times),
                         disc=disc, disc_ddp=disc_ddp, disc_opt=disc_opt, disc_w=args.disc_w, fm_w=args.fm_w)
    best = dict(snr=-math.inf, ep=-1)
    if state:
        trainer.load_state_dict(state['trainer'])
        best = dict(state.get('best', best))
        misc.print0(f"[resume] epoch {start_ep}, iteration {start_it}, best val SNR {best['snr']:.2f} dB")

    train_set = maybe_cache(ds_train)
    val_set = maybe_cache(ds_val)
    sampler = DistInfiniteBatchSampler(dist.get_world_size(), dist.get_rank(), len(train_set), args.glb_batch_size,
                                       same_seed_for_all_ranks=args.same_seed_for_all_ranks, shuffle=True,
                                       fill_last=True, start_ep=start_ep, start_it=start_it)
    trainer.disc_start_it = args.disc_start_ep * len(sampler)
    ld_train = DataLoader(train_set, batch_sampler=sampler, num_workers=args.workers, pin_memory=False)
    ld_val = DataLoader(val_set, batch_size=max(args.batch_size, 16),
                        sampler=EvalDistributedSampler(val_set, dist.get_world_size(), dist.get_rank()),
                        num_workers=args.workers, shuffle=False, drop_last=False)
    return dict(ds_train=ds_train, ds_val=ds_val, ld_train=ld_train, ld_val=ld_val, trainer=trainer, info=info,
                start_ep=start_ep, start_it=start_it, best=best, iters_train=len(sampler),
                nonfinite_total=int(state.get('nonfinite_total', 0)) if state else 0)


def subject_folds(ds: EEGWindowDataset, idx: np.ndarray) -> np.ndarray:
    """Two folds of windows ``idx`` for the band mix: subjects (else recordings) alternately, by sorted name;
    without either, the first and second half of the windows."""
    keys = [ds.headers[int(i)].subject or ds.headers[int(i)].source for i in idx]
    if any(k is None for k in keys) or len(set(keys)) < 2:
        return (np.arange(len(idx)) >= len(idx) // 2).astype(np.int64)
    rank = {k: r for r, k in enumerate(sorted(set(keys)))}
    return np.asarray([rank[k] % 2 for k in keys], dtype=np.int64)


@torch.no_grad()
def calibrate_decoding(vae: VQVAE, ds: EEGWindowDataset, info: Dict[str, Any], device: str,
                       max_windows: int = 512, batch: int = 128) -> None:
    """Fit the band mix, then the residual noise of every stage, on (up to 512) training windows.

    The mix is fitted to the plain decodes; the noise to the deficit of the mixed ones (what decoding gives).
    """
    if vae.noise is None and vae.mix is None:
        return
    idx = np.unique(np.linspace(0, len(ds) - 1, min(len(ds), max_windows)).round().astype(int))
    x_NKCT = torch.stack([torch.from_numpy(ds.window(int(i)).stages_KCT) for i in idx]).to(device).float()
    x_NKCT = x_NKCT / float(info['uv_scale'])
    was = vae.training
    vae.eval()
    if vae.mix is not None:
        vae.mix.reset_()
        x_NCT = x_NKCT[:, -1]
        rec_NCT = torch.cat([vae.eeg_to_reconstructed_eeg(x_NCT[i:i + batch], last_one=True)
                             for i in range(0, len(x_NCT), batch)])
        vae.mix.calibrate_(x_NCT.double().cpu().numpy(), rec_NCT.double().cpu().numpy(),
                           band_index_F(info['bands'], info['sfreq'], info['n_times']), subject_folds(ds, idx))
    if vae.noise is not None:
        f_hi_bins = [int(round(hi * info['n_times'] / info['sfreq'])) + 1 for _, hi in info['bands']]
        calibrate_vae_noise_(vae.noise, vae, x_NKCT, stage_scale_indices(info), f_hi_bins)
    vae.train(was)


def save_state(args: VAEArgs, path: str, trainer: VAETrainer, info: Dict[str, Any], epoch: int, it: int,
               best: Dict[str, Any], metrics: Dict[str, Any] | None, nonfinite_total: int = 0) -> None:
    """Write a checkpoint (global rank 0 only): weights, optimizer, progress, tokenizer info, skipped steps."""
    if not dist.is_master():
        return
    state = dict(epoch=int(epoch), iter=int(it), trainer=trainer.state_dict(),
                 vae_wo_ddp=trainer.vae_wo_ddp.state_dict(), args=args.state_dict(), best=dict(best),
                 metrics=metrics or {}, nonfinite_total=int(nonfinite_total), **{TOKENIZER_KEY: info})
    save_checkpoint(path, state, config=info)


def main_training(argv: Sequence[str] | None = None) -> int:
    args, tees = arg_util.init_dist_and_get_args(argv, cls=VAEArgs)
    try:
        return _train(args)
    finally:
        misc.stop_tee(tees)
        dist.finalize()


def _train(args: VAEArgs) -> int:
    parts = build_everything(args)
    trainer: VAETrainer = parts['trainer']
    info, best = parts['info'], parts['best']
    iters_train, start_ep, start_it = parts['iters_train'], parts['start_ep'], parts['start_it']
    tb_lg = misc.TensorboardLogger(args.tb_log_dir_path, filename_suffix='') if dist.is_master() else misc.DistLogger(None, False)
    names_K = stage_names(parts['ds_train'].bands)
    max_it = args.ep * iters_train
    wp_it = args.wp * iters_train
    ld_iter = iter(parts['ld_train'])
    best_path = os.path.join(args.local_out_dir_path, 'vae-ckpt-best.pth')
    t_start = time.time()
    nonfinite_run, nonfinite_total = 0, int(parts['nonfinite_total'])
    if start_ep >= args.ep:
        misc.print0(f"[train_vae] already trained for {start_ep} epochs (--ep={args.ep}); nothing to do")
    for ep in range(start_ep, args.ep):
        metric_lg = misc.MetricLogger(delimiter='  ')
        metric_lg.add_meter('tlr', misc.SmoothedValue(window_size=1, fmt='{value:.2g}'))
        header = f'[Ep]: [{ep:4d}/{args.ep}]'
        first_it = start_it if ep == start_ep else 0
        for it, (stages_BKCT, _) in metric_lg.log_every(first_it, iters_train, ld_iter, max(iters_train // 3, 1), header):
            g_it = ep * iters_train + it
            stepping = (g_it + 1) % args.ac == 0
            min_tlr, max_tlr, _, _ = lr_wd_annealing(args.sche, trainer.vae_opt.optimizer, args.tlr, args.twd, args.twde,
                                                     g_it, wp_it, max_it, wp0=args.wp0, wpe=args.wpe)
            metric_lg.update(tlr=max_tlr)
            tb_lg.set_step(g_it)
            trainer.train_step(it, g_it, stepping, metric_lg, tb_lg, stages_BKCT)
            if stepping and trainer.vae_opt.last_step_skipped:
                # the AmpOptimizer already dropped the update (non-finite grad norm); count it and stop after a run
                nonfinite_run += 1
                nonfinite_total += 1
                logger.warning("non-finite loss or gradient at epoch %d iteration %d: step skipped (%d in a row)",
                               ep, it, nonfinite_run)
                if nonfinite_run >= args.max_nonfinite:
                    raise NonFiniteError(f"{nonfinite_run} optimizer steps in a row had a non-finite loss or gradient "
                                         f"(epoch {ep}, iteration {it}); the last good state is in "
                                         f"{args.last_ckpt_path}; lower --tblr or keep --tclip > 0, then re-run to "
                                         "resume")
            elif stepping:
                nonfinite_run = 0
            if args.save_it and (it + 1) % args.save_it == 0 and it + 1 < iters_train:
                save_state(args, args.last_ckpt_path, trainer, info, ep, it + 1, best, None, nonfinite_total)
        metric_lg.synchronize_between_processes()
        is_last = ep + 1 == args.ep
        if (ep + 1) % args.save_ep == 0 or is_last:
            calibrate_decoding(trainer.vae_wo_ddp, parts['ds_train'], info, args.device)  # saved with the weights
            ev = trainer.eval_ep(parts['ld_val'])
            # the best epoch by the decoder's own SNR: the band mix, refitted each time, would add its own noise
            snr_full = ev['snr_db_plain'][-1]
            # with the discriminator, only epochs that trained with it compete (it costs SNR by design)
            improved = snr_full > best['snr'] and (not args.discriminator_on
                                                   or trainer.adversarial_at((ep + 1) * iters_train - 1))
            if improved:
                best = dict(snr=float(snr_full), ep=int(ep))
            usages_train = trainer.vae_wo_ddp.quantize.usages(args.batch_size)
            gan = {k: metric_lg.meters[k].global_avg for k in ('Ladv', 'Lfm', 'Ldisc') if k in metric_lg.meters}
            metrics = dict(ep=ep + 1, **gan, Lrec=metric_lg.meters['Lrec'].global_avg, Lspec=metric_lg.meters['Lspec'].global_avg,
                           Lpsd=metric_lg.meters['Lpsd'].global_avg,
                           Lcorr=metric_lg.meters['Lcorr'].global_avg, Lvq=metric_lg.meters['Lvq'].global_avg,
                           val_snr_db={n: round(v, 3) for n, v in zip(names_K, ev['snr_db'])},
                           val_snr_db_plain={n: round(v, 3) for n, v in zip(names_K, ev['snr_db_plain'])},
                           val_usage_pct=[round(u, 1) for u in ev['usage_pct']],
                           train_usage_pct=[round(u, 1) for u in usages_train],
                           best_val_snr_db=round(best['snr'], 3), best_ep=best['ep'], n_reseeded=trainer.n_reseeded,
                           bits_per_sec_per_channel=round(bits_per_second(info), 2), nonfinite_total=nonfinite_total,
                           time_min=round((time.time() - t_start) / 60, 2))
            misc.print0(f"[ep {ep + 1}] val SNR dB {metrics['val_snr_db']}  usage(train EMA) {metrics['train_usage_pct']}"
                        f"  best {best['snr']:.2f} @ep{best['ep'] + 1}")
            args.dump_log(metrics)
            if dist.is_master():
                tb_lg.update(head='val_snr_db', step=(ep + 1) * iters_train, **dict(zip(names_K, ev['snr_db'])))
                tb_lg.update(head='val_usage_pct', step=(ep + 1) * iters_train,
                             **{f'scale{si}': u for si, u in enumerate(ev['usage_pct'])})
                tb_lg.update(head='train_usage_ema_pct', step=(ep + 1) * iters_train,
                             **{f'scale{si}': u for si, u in enumerate(usages_train)})
                tb_lg.flush()
            save_state(args, args.last_ckpt_path, trainer, info, ep + 1, 0, best, metrics, nonfinite_total)
            if improved:
                save_state(args, best_path, trainer, info, ep + 1, 0, best, metrics, nonfinite_total)
            dist.barrier()
    if dist.is_master():
        tb_lg.close()
    misc.print0(f"[train_vae] done: best val full-spectrum SNR {best['snr']:.2f} dB at epoch {best['ep'] + 1}; "
                f"{args.last_ckpt_path}")
    return 0


@record
def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry: user errors print ``train_vae.py: error: ...`` and exit with code 2."""
    from utils.cli import setup_logging
    setup_logging()
    return run_cli(main_training, prog='train_vae.py', argv=argv)


if __name__ == '__main__':
    dist.run_then_exit_worker(main)  # under torchrun: no interpreter teardown that could abort (dist.exit_worker)
