"""Train the VAR transformer on the band tokens of a frozen EEG tokenizer (upstream ``train.py``).

Launch (from the repository root; every flag is ``--name=value``, see ``python VAR/train.py --help``)::

    # one process (CPU or one GPU)
    python VAR/train.py --depth=8 --bs=64 --ep=20 --data_path=DIR --vae_ckpt=local_output_vae/vae-ckpt-best.pth
    # N processes on one machine (gloo on CPU, NCCL on GPUs)
    torchrun --nproc_per_node=N VAR/train.py --depth=16 --bs=768 --ep=200 --fp16=2 --data_path=DIR --vae_ckpt=PATH
    # two nodes of 8 GPUs
    torchrun --nproc_per_node=8 --nnodes=2 --node_rank=0 --master_addr=HOST --master_port=PORT VAR/train.py ...

Outputs in ``--local_out_dir_path`` (default ``<repo>/local_output``): ``ar-ckpt-last.pth`` (every
``--save_ep`` epochs and every ``--save_it`` iterations, with the sampler position),
``ar-ckpt-best.pth`` (lowest validation loss over all scales), ``log.txt``, ``stdout.txt`` /
``stderr.txt`` and TensorBoard events. Re-running the same command resumes from the checkpoint with
the most progress, also after a kill mid-epoch, and sees the same batches as an uninterrupted run.
"""
from __future__ import annotations

import gc
import logging
import math
import os
import sys
import time
from typing import Any, Sequence

import numpy as np
import torch
from torch.distributed.elastic.multiprocessing.errors import record
from torch.utils.data import DataLoader

import dist
from utils import arg_util, misc
from utils.amp_sc import AmpOptimizer
from utils.checkpoint import check_config, save_checkpoint
from utils.cli import run_cli, setup_logging, user_error_exit
from utils.data import build_dataset, dataset_level_features
from utils.data_sampler import DistInfiniteBatchSampler, EvalDistributedSampler
from utils.eeg_bands import band_names
from utils.errors import CheckpointError, UserError
from utils.lr_control import filter_params, lr_wd_annealing
from utils.misc import print0

logger = logging.getLogger("train")

CKPT_PATTERN = "ar-ckpt*.pth"
NOWD_KEYS = {"cls_token", "start_token", "task_token", "cfg_uncond", "pos_embed", "pos_1LC", "pos_start", "start_pos",
             "lvl_embed", "gamma", "beta", "ada_gss", "moe_bias", "scale_mul"}


class NonFiniteError(RuntimeError):
    """Too many optimizer steps in a row had a non-finite loss or gradient."""


def _plain(obj: Any) -> Any:
    """numpy scalars/arrays -> python types, recursively (checkpoints hold plain types only)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return obj


def scale_names_for(info: dict) -> list[str]:
    """Metric names of the scales: ``c0..`` for extra coarse scales, then the band names."""
    n_extra = int(info.get("n_extra_coarse", 0))
    return [f"c{i}" for i in range(n_extra)] + band_names(info["bands"])


def step_seed(seed_base: int, g_it: int, rank: int, world_size: int) -> int:
    """Seed of the training generator at global iteration ``g_it`` on ``rank`` (resume-invariant)."""
    return (seed_base * 1_000_003 + g_it * world_size + rank) % (2 ** 63)


def build_everything(args: arg_util.Args):
    """Resume state, tokenizer, data, model, optimizer, trainer; checks come before anything heavy."""
    # --- auto-resume: the checkpoint with the most recorded progress
    info_lines, start_ep, start_it, resume_state, resume_path = misc.auto_resume(args.local_out_dir_path, CKPT_PATTERN)
    for line in info_lines:
        print0(line)

    # --- tokenizer and data, checked against each other before building anything
    from vae_checkpoint import ARCH_KEYS as TOK_KEYS, band_gain, check_dataset_matches, load_vae
    vae_local, tok_info = load_vae(args.vae_ckpt, device="cpu")
    num_classes, class_names, train_set, val_set, raw_train, raw_val = build_dataset(args.data_path, tok_info["uv_scale"],
                                                                                         skip_bad=args.skip_bad)
    check_dataset_matches(tok_info, raw_train, args.vae_ckpt)
    check_dataset_matches(tok_info, raw_val, args.vae_ckpt)
    args.set_tokenizer_geometry(vae_local.v_patch_nums, vae_local.downsample, tok_info["n_times"])
    if not args.ar_baseline and args.intra_steps > min(args.patch_nums):
        raise UserError(f"--intra_steps={args.intra_steps} does not fit the tokenizer's smallest scale "
                        f"({min(args.patch_nums)} positions of {list(args.patch_nums)}); use at most {min(args.patch_nums)}")
    if args.pg > 0 and not 0 <= args.pg0 < len(args.patch_nums):
        raise UserError(f"--pg0={args.pg0}: expected a scale index in [0, {len(args.patch_nums) - 1}] for the "
                        f"tokenizer's {len(args.patch_nums)} scales")
    cond_drop = args.cond_drop if num_classes > 1 else 0.0  # one class = unconditional: nothing to drop
    num_levels = 0 if args.ar_baseline else args.level_clusters
    if resume_state:
        saved_cfg = resume_state.get("trainer", {}).get("config")
        current = dict(depth=args.depth, num_classes=num_classes, shared_aln=args.saln, attn_l2_norm=args.anorm,
                       patch_nums=list(args.patch_nums), tokens_per_pos=vae_local.tokens_per_pos,
                       vocab_size=vae_local.vocab_size)
        if not args.ar_baseline:
            current["intra_steps"] = args.intra_steps
            current["intra_nbr"] = args.intra_nbr if args.intra_steps > 1 else 0
            current["intra_ar"] = args.intra_ar
            current["intra_ar_fhat"] = args.intra_ar_fhat if args.intra_ar > 0 else 0
            current["num_levels"] = num_levels
            if saved_cfg is not None:
                from trainer import with_legacy_defaults
                saved_cfg = with_legacy_defaults(saved_cfg)
                if int(saved_cfg["num_levels"]) != num_levels:  # e.g. a run started before levels were the default
                    raise CheckpointError(f"{resume_path} was trained with --level_clusters={saved_cfg['num_levels']}, "
                                          f"this run asks for {num_levels}; pass --level_clusters="
                                          f"{saved_cfg['num_levels']} to resume it or choose a new --local_out_dir_path")
        check_config(saved_cfg, current, list(current), resume_path,
                     fix="pass the same flags (or the same dataset) or choose a new --local_out_dir_path")
        saved_tok = resume_state.get("tokenizer")
        if saved_tok is not None:
            check_config(saved_tok, _plain(tok_info), [k for k in TOK_KEYS if k != "vae_config"], resume_path,
                         fix="pass the --vae_ckpt this run started with or choose a new --local_out_dir_path")
        if saved_tok is not None and _plain(saved_tok.get("vae_config")) != _plain(tok_info.get("vae_config")):
            raise CheckpointError(f"{resume_path} was trained on tokens of another tokenizer config than --vae_ckpt="
                                  f"{args.vae_ckpt}; pass the tokenizer this run started with or choose a new "
                                  "--local_out_dir_path")
        # the same config with other weights (e.g. a retrained tokenizer) would silently change every token
        saved_vae = resume_state.get("trainer", {}).get("vae_local")
        if isinstance(saved_vae, dict):
            current_vae = vae_local.state_dict()
            differ = [k for k, v in saved_vae.items()
                      if k not in current_vae or not torch.equal(torch.as_tensor(v).cpu(), current_vae[k].cpu())]
            if differ:
                raise CheckpointError(f"{resume_path} was trained with other tokenizer weights than --vae_ckpt="
                                      f"{args.vae_ckpt} (same config, {len(differ)} tensors differ, e.g. {differ[0]}); "
                                      "pass the tokenizer this run started with or choose a new --local_out_dir_path")

    # --- per-window levels: fitted once on the training windows, then kept with the run (a resumed run reuses them)
    levels = None
    if num_levels > 0:
        levels = attach_levels(args, num_levels, num_classes, tok_info, train_set, val_set, raw_train, raw_val,
                               resume_state, resume_path)

    # --- the band gain a sample of each class and level gets (tokenizers with band-gain codes), kept with the run
    level_gain_db = (resume_state or {}).get("level_gain_db")
    gain = band_gain(tok_info)
    if gain is not None and level_gain_db is None:
        from models.band_gain import group_gain_db
        from utils.data import dataset_band_powers
        Px, Prec = dataset_band_powers(raw_train, vae_local, gain, tok_info["uv_scale"])
        level_gain_db = group_gain_db(Px, Prec, train_set.labels, train_set.levels, num_classes, num_levels).tolist()
        pooled = np.asarray(level_gain_db)[-1, -1].mean(0)
        print0(f"[band gains] samples' decodes get their class and level's band gain; pooled over channels "
               f"{[round(float(g), 2) for g in pooled]} dB")

    # --- TensorBoard (rank 0 only)
    if dist.is_master():
        os.makedirs(args.tb_log_dir_path, exist_ok=True)
        tb_lg = misc.DistLogger(misc.TensorboardLogger(log_dir=args.tb_log_dir_path,
                                                       filename_suffix=f"__{misc.time_str('%m%d_%H%M')}"), verbose=True)
    else:
        tb_lg = misc.DistLogger(None, verbose=False)
    dist.barrier()

    print0(f"global bs={args.glb_batch_size * args.ac}, local bs={args.batch_size}, ac={args.ac}")
    print0(f"initial args:\n{args}")

    # --- loaders
    world, rank = dist.get_world_size(), dist.get_rank()
    pin = str(args.device).startswith("cuda")
    ld_val = DataLoader(val_set, num_workers=0, pin_memory=pin, batch_size=max(1, round(args.batch_size * 1.5)),
                        sampler=EvalDistributedSampler(val_set, num_replicas=world, rank=rank), shuffle=False,
                        drop_last=False)
    sampler = DistInfiniteBatchSampler(world_size=world, rank=rank, dataset_len=len(train_set),
                                       glb_batch_size=args.glb_batch_size,
                                       same_seed_for_all_ranks=args.same_seed_for_all_ranks, shuffle=True,
                                       fill_last=True, start_ep=start_ep, start_it=start_it)
    ld_train = DataLoader(dataset=train_set, num_workers=args.workers, pin_memory=pin,
                          generator=args.get_different_generator_for_each_rank(), batch_sampler=sampler)
    iters_train = len(sampler)
    if start_it >= iters_train:
        raise CheckpointError(f"{resume_path}: saved at iteration {start_it} of an epoch but this run has "
                              f"{iters_train} iterations per epoch (--bs or the dataset changed); restore them or "
                              "choose a new --local_out_dir_path")
    ld_train = iter(ld_train)
    print0(f"[dataloader] train {len(train_set)} windows, {iters_train} it/ep; val {len(val_set)} windows; "
           f"classes {class_names}")

    # --- models
    from models import build_var
    from torch.nn.parallel import DistributedDataParallel as DDP
    from trainer import NullDDP, VARTrainer
    vae_local = vae_local.to(args.device)
    if args.ar_baseline:  # next-token baseline on the same tokens (benchmarks/bench_generation.py)
        from models.ar_baseline import build_ar_baseline
        if args.saln:
            raise UserError("--ar_baseline=1 does not support --saln=1; drop one of them")
        var_wo_ddp = build_ar_baseline(vae_local, args.device, num_classes=num_classes, depth=args.depth,
                                       attn_l2_norm=args.anorm, cond_drop_rate=cond_drop, init_adaln=args.aln,
                                       init_adaln_gamma=args.alng, init_head=args.hd, init_std=args.ini)
    else:
        var_wo_ddp = build_var(vae_local, args.device, num_classes=num_classes, depth=args.depth,
                               shared_aln=args.saln, attn_l2_norm=args.anorm, flash_if_available=args.fuse,
                               fused_if_available=args.fuse, init_adaln=args.aln, init_adaln_gamma=args.alng,
                               init_head=args.hd, init_std=args.ini, cond_drop_rate=cond_drop,
                               intra_steps=args.intra_steps, intra_mix=args.intra_mix,
                               intra_nbr=args.intra_nbr, intra_ar=args.intra_ar,
                               intra_ar_fhat=args.intra_ar_fhat if args.intra_ar > 0 else 0, num_levels=num_levels)
        if levels is not None:
            var_wo_ddp.set_level_prior(torch.from_numpy(levels.prior))
    vae_local = args.compile_model(vae_local, args.vfast)
    var_compiled = args.compile_model(var_wo_ddp, args.tfast)
    if dist.initialized():
        var = DDP(var_compiled, device_ids=[dist.get_local_rank()] if pin else None, find_unused_parameters=False,
                  broadcast_buffers=False)
    else:
        var = NullDDP(var_compiled)
    print0(f"[INIT] VAR model = {var_wo_ddp}\n\n")
    count = lambda m: sum(p.numel() for p in m.parameters()) / 1e6  # noqa: E731
    print0(f"[INIT][#para] VAE={count(vae_local):.2f} M, VAE.enc={count(vae_local.encoder):.2f} M, "
           f"VAE.dec={count(vae_local.decoder):.2f} M, VAE.quant={count(vae_local.quantize):.2f} M, "
           f"VAR={count(var_wo_ddp):.2f} M")

    # --- optimizer
    names, paras, para_groups = filter_params(var_wo_ddp, nowd_keys=NOWD_KEYS)
    fused = bool(args.afuse) and pin
    if args.afuse and not pin:
        logger.info("--afuse=1 ignored: the fused AdamW kernel is used on CUDA only")
    opt = torch.optim.AdamW(para_groups, lr=args.tlr, weight_decay=0, betas=(0.9, 0.95), fused=fused)
    var_optim = AmpOptimizer(mixed_precision=args.fp16, optimizer=opt, names=names, paras=paras,
                             grad_clip=args.tclip, n_gradient_accumulation=args.ac,
                             device_type=torch.device(args.device).type)
    trainer = VARTrainer(device=torch.device(args.device), patch_nums=args.patch_nums, resos=args.resos,
                         vae_local=vae_local, var_wo_ddp=var_wo_ddp, var=var, var_opt=var_optim,
                         label_smooth=args.ls, scale_names=scale_names_for(tok_info))
    run_state: dict[str, Any] = {"seed_base": args.seed if args.seed is not None else int.from_bytes(os.urandom(6), "little"),
                                 "best_val_L_mean": 999.0, "nonfinite_total": 0}
    if resume_state:
        trainer.load_state_dict(resume_state["trainer"], strict=True, skip_vae=True, path=resume_path)
        run_state.update(resume_state.get("run", {}))
        # ranks must continue from the same step
        pos = torch.tensor([start_ep, start_it], dtype=torch.long)
        all_pos = dist.allgather(pos.view(1, 2), cat=True)
        if not bool((all_pos == pos).all()):
            raise CheckpointError(f"ranks loaded different checkpoints ({all_pos.tolist()}); use one shared "
                                  "--local_out_dir_path")
    meta = dict(class_names=list(class_names), num_classes=num_classes, tokenizer=_plain(tok_info))
    if levels is not None:
        meta["levels"] = levels.to_dict()
    if level_gain_db is not None:
        meta["level_gain_db"] = level_gain_db
    del resume_state
    dist.barrier()
    calib_src = (raw_train, train_set.labels, train_set.levels if levels is not None else None, tok_info)
    return tb_lg, trainer, start_ep, start_it, iters_train, ld_train, ld_val, run_state, meta, calib_src


def attach_levels(args: arg_util.Args, num_levels: int, num_classes: int, tok_info: dict, train_set, val_set,
                  raw_train, raw_val, resume_state: dict | None, resume_path: str | None):
    """Fit (or, resuming, reload) the level clusters and give every training and validation window its level."""
    from utils.eeg_levels import LevelClusters, fit_level_clusters
    bands = [list(map(float, b)) for b in tok_info["bands"]]
    feats_tr = dataset_level_features(raw_train, bands)
    saved = (resume_state or {}).get("levels")
    if saved is not None:
        levels = LevelClusters.from_dict(saved)
        if levels.num_levels != num_levels or levels.num_classes != num_classes:
            raise CheckpointError(f"{resume_path} has {levels.num_levels} level clusters for {levels.num_classes} "
                                  f"classes, this run {num_levels} for {num_classes}; pass --level_clusters="
                                  f"{levels.num_levels} or choose a new --local_out_dir_path")
    else:
        levels = fit_level_clusters(feats_tr, train_set.labels, num_classes, num_levels, bands)
    train_set.levels = levels.assign(feats_tr, train_set.labels)
    val_set.levels = levels.assign(dataset_level_features(raw_val, bands), val_set.labels) if len(val_set) else \
        np.zeros(0, dtype=np.int64)
    print0(f"[levels] {num_levels} per class; training windows per level "
           f"{[np.bincount(train_set.levels[train_set.labels == c], minlength=num_levels).tolist() for c in range(num_classes)]}")
    return levels


def save_state(args: arg_util.Args, trainer, ep_next: int, it_next: int, run_state: dict, meta: dict,
               best: bool = False) -> None:
    """Write ar-ckpt-last.pth (and ar-ckpt-best.pth) on global rank 0; every rank waits."""
    if dist.is_master():
        state = {"epoch": int(ep_next), "iter": int(it_next), "trainer": trainer.state_dict(),
                 "args": _plain(args.state_dict()), "run": _plain(run_state), **meta}
        config = dict(trainer.get_config(), depth=args.depth)
        save_checkpoint(args.last_ckpt_path, state, config=config)
        if best:
            save_checkpoint(os.path.join(args.local_out_dir_path, "ar-ckpt-best.pth"), state, config=config)
        print0(f"[saving ckpt] epoch {ep_next} iter {it_next} -> {args.last_ckpt_path}" + (" (best)" if best else ""))
    dist.barrier()


@record
def main_training(argv: Sequence[str] | None = None) -> int:
    try:
        args, tees = arg_util.init_dist_and_get_args(argv, cls=arg_util.Args)
        if not dist.is_master():
            logging.getLogger().setLevel(logging.WARNING)
        try:
            return _train(args)
        finally:
            misc.stop_tee(tees)
            dist.finalize()
    except UserError as err:
        # one line and exit code 2, also under torchrun (SystemExit is not recorded as a crash with a traceback)
        user_error_exit("train.py", str(err))


def _train(args: arg_util.Args) -> int:
    tb_lg, trainer, start_ep, start_it, iters_train, ld_train, ld_val, run_state, meta, calib_src = build_everything(args)
    start_time = time.time()
    best_vals: dict[str, float] = {}
    nonfinite_run = 0
    for ep in range(start_ep, args.ep):
        tb_lg.set_step(ep * iters_train)
        stats, (sec, remain_time, finish_time), nonfinite_run = train_one_ep(
            ep, ep == start_ep, start_it if ep == start_ep else 0, args, tb_lg, ld_train, iters_train, trainer,
            run_state, meta, nonfinite_run)
        metrics: dict[str, Any] = {"ep": ep + 1, "it": (ep + 1) * iters_train, "lr": stats.get("tlr"),
                                   "grad_norm": stats.get("tnm"), "L_mean": stats.get("Lm"), "L_tail": stats.get("Lt"),
                                   "acc_mean": stats.get("Accm"), "acc_tail": stats.get("Acct"),
                                   "cur_ep": f"{ep + 1}/{args.ep}", "remain_time": remain_time,
                                   "finish_time": finish_time, "nonfinite_total": run_state["nonfinite_total"]}
        if (ep + 1) % args.save_ep == 0 or ep + 1 == args.ep:
            val = trainer.eval_ep(ld_val)
            # fix(upstream) §18.10: "best" is the lowest validation loss over all scales (not the tail only)
            best_updated = val["L_mean"] < run_state["best_val_L_mean"]
            if best_updated:
                run_state["best_val_L_mean"] = val["L_mean"]
            metrics.update({f"v{k}": v for k, v in val.items()})
            best_vals = {k: min(best_vals.get(k, math.inf), v) if k.startswith("L") else max(best_vals.get(k, -math.inf), v)
                         for k, v in val.items() if k not in ("n", "seconds")}
            print0(f" [*] [ep{ep}]  (val {val['n']})  Lm: {val['L_mean']:.4f}, Lt: {val['L_tail']:.4f}, "
                   f"Acc m&t: {val['acc_mean']:.2f} {val['acc_tail']:.2f},  Val cost: {val['seconds']:.2f}s")
            tb_lg.update(head="AR_ep_val", step=ep + 1, **{k: v for k, v in val.items() if k not in ("n", "seconds")})
            save_state(args, trainer, ep + 1, 0, run_state, meta, best=best_updated)
        print0(f"     [ep{ep}]  (training )  Lm: {stats.get('Lm', 0):.3f}, Lt: {stats.get('Lt', 0):.3f},  "
               f"Acc m&t: {stats.get('Accm', 0):.2f} {stats.get('Acct', 0):.2f},  Remain: {remain_time},  "
               f"Finish: {finish_time}")
        tb_lg.update(head="AR_ep_loss", step=ep + 1, L_mean=stats.get("Lm"), L_tail=stats.get("Lt"),
                     acc_mean=stats.get("Accm"), acc_tail=stats.get("Acct"))
        tb_lg.update(head="AR_z_burnout", step=ep + 1, rest_hours=round(sec / 3600, 2))
        args.dump_log(metrics)
        tb_lg.flush()
    total_time = f"{(time.time() - start_time) / 3600:.3f}h"
    print0(f"  [*] [PT finished]  Total cost: {total_time},  best val: {best_vals}")
    args.dump_log({"finished": True, "total_time": total_time, "best_val_L_mean": run_state["best_val_L_mean"]})
    del ld_train
    gc.collect()
    if dist.is_master() and args.calib_n > 0 and not args.ar_baseline:
        calibrate_samples(args, *calib_src)
    tb_lg.flush()
    tb_lg.close()
    dist.barrier()
    return 0


def calibrate_samples(args: arg_util.Args, raw_train, labels_N: np.ndarray, levels_N: np.ndarray | None,
                      tok_info: dict) -> None:
    """Store the samples' band gain (VAR/sample_calib.py) in ar-ckpt-best.pth and ar-ckpt-last.pth where it is
    missing: after training, and on a re-run of a finished run from before this step. Two files of the same
    epoch and iteration share one measurement."""
    from sample_calib import (calibration_gain, has_calibration, measure_calibration, power_db, real_window_indices,
                              write_calibration)
    from utils.data import dataset_band_powers
    todo = []
    for name in ("ar-ckpt-best.pth", "ar-ckpt-last.pth"):
        path = os.path.join(args.local_out_dir_path, name)
        if os.path.isfile(path):
            done, pos = has_calibration(path)
            if not done:
                todo.append((path, pos))
    if not todo:
        return
    gain = calibration_gain(tok_info)
    idx = real_window_indices(len(raw_train))
    real_db = power_db(dataset_band_powers(raw_train, None, gain, tok_info["uv_scale"], indices=idx)[0])
    levels_used = None if levels_N is None else np.asarray(levels_N)[idx]
    measured: dict[tuple[int, int], tuple[np.ndarray, dict]] = {}
    for path, pos in todo:
        if pos not in measured:
            print0(f"[sample gains] drawing {args.calib_n} samples per class from {path}")
            measured[pos] = measure_calibration(path, real_db, np.asarray(labels_N)[idx], levels_used, args.calib_n,
                                                device=args.device)
        write_calibration(path, *measured[pos])
        print0(f"[sample gains] stored in {path}")


def train_one_ep(ep: int, is_first_ep: bool, start_it: int, args: arg_util.Args, tb_lg, ld_or_itrt, iters_train: int,
                 trainer, run_state: dict, meta: dict, nonfinite_run: int):
    """Train one epoch from iteration ``start_it``; returns (meter averages, time prediction, nonfinite run)."""
    me = misc.MetricLogger(delimiter="  ")
    me.add_meter("tlr", misc.SmoothedValue(window_size=1, fmt="{value:.2g}"))
    me.add_meter("tnm", misc.SmoothedValue(window_size=1, fmt="{value:.2f}"))
    for name in ("Lm", "Lt"):
        me.add_meter(name, misc.SmoothedValue(fmt="{median:.3f} ({global_avg:.3f})"))
    for name in ("Accm", "Acct"):
        me.add_meter(name, misc.SmoothedValue(fmt="{median:.2f} ({global_avg:.2f})"))
    header = f"[Ep]: [{ep:4d}/{args.ep}]"
    g_it, max_it = ep * iters_train, args.ep * iters_train
    SN = len(args.patch_nums)
    world, rank = dist.get_world_size(), dist.get_rank()
    for it, (inp, label, *level) in me.log_every(start_it, iters_train, ld_or_itrt, 30 if iters_train > 8000 else 5,
                                                 header):
        g_it = ep * iters_train + it
        inp = inp.to(args.device, non_blocking=True)
        label = label.to(args.device, non_blocking=True)
        wp_it = args.wp * iters_train
        min_tlr, max_tlr, min_twd, max_twd = lr_wd_annealing(args.sche, trainer.var_opt.optimizer, args.tlr, args.twd,
                                                             args.twde, g_it, wp_it, max_it, wp0=args.wp0, wpe=args.wpe)
        if args.pg:
            if g_it <= wp_it:
                prog_si = args.pg0
            elif g_it >= args.pg * max_it:
                prog_si = SN - 1
            else:
                delta = SN - 1 - args.pg0
                progress = min(max((g_it - wp_it) / (args.pg * max_it - wp_it), 0), 1)
                prog_si = args.pg0 + round(progress * delta)
        else:
            prog_si = -1
        stepping = (g_it + 1) % args.ac == 0
        trainer.var_wo_ddp.train_rng.manual_seed(step_seed(int(run_state["seed_base"]), g_it, rank, world))
        grad_norm, scale_log2, skipped = trainer.train_step(
            it=it, g_it=g_it, stepping=stepping, metric_lg=me, tb_lg=tb_lg, inp_BCT=inp, label_B=label,
            prog_si=prog_si, prog_wp_it=args.pgwp * iters_train, level_B=level[0] if level else None)
        if skipped:
            nonfinite_run += 1
            run_state["nonfinite_total"] = int(run_state["nonfinite_total"]) + 1
            logger.warning("non-finite loss or gradient at epoch %d iteration %d: step skipped (%d in a row)",
                           ep, it, nonfinite_run)
            if nonfinite_run >= args.max_nonfinite:
                last_good = (f"the last good state is in {args.last_ckpt_path}" if os.path.exists(args.last_ckpt_path)
                             else "no checkpoint was written yet")
                raise NonFiniteError(f"{nonfinite_run} optimizer steps in a row had a non-finite loss or gradient "
                                     f"(epoch {ep}, iteration {it}); {last_good}; lower --tblr, keep --tclip > 0 or "
                                     "use --fp16=2 (bf16), then re-run to resume")
        elif stepping:
            nonfinite_run = 0
        me.update(tlr=max_tlr)
        if it in me.log_iters or it == start_it:
            tb_lg.update(head="AR_opt_lr", step=g_it, lr_min=min_tlr, lr_max=max_tlr)
            tb_lg.update(head="AR_opt_wd", step=g_it, wd_max=max_twd, wd_min=min_twd)
            tb_lg.update(head="AR_opt_grad", step=g_it, fp16=scale_log2)
            if grad_norm is not None:
                tb_lg.update(head="AR_opt_grad", step=g_it, grad=grad_norm.item(), grad_clip=args.tclip)
        if args.save_it and stepping and (it + 1) % args.save_it == 0 and it + 1 < iters_train:
            save_state(args, trainer, ep, it + 1, run_state, meta)
    me.synchronize_between_processes()
    stats = {k: meter.global_avg for k, meter in me.meters.items() if meter.count > 0}
    return stats, me.iter_time.time_preds(max_it - (g_it + 1)), nonfinite_run


def main(argv: Sequence[str] | None = None) -> int:
    setup_logging()
    try:
        return main_training(argv)
    except NonFiniteError as err:
        print(f"{os.path.basename(sys.argv[0]) or 'train.py'}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    dist.run_then_exit_worker(lambda: run_cli(main, prog="train.py"))  # under torchrun: no teardown that could abort
