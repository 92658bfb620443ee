"""Next-scale (VAR) vs next-token (AR baseline) sampling speed: forward passes and wall time per window.

Usage::

    python -m benchmarks.bench_speed [--quick] [--vae-ckpt PATH] [--depths 4,8,16] [--batches 1,32]

Both models are built on the same tokenizer with the same depth rule (width 64 * depth, heads = depth) and
the same blocks; weights are random (sampling cost does not depend on training). For every depth and
batch size the same run measures:

- VAR: ``autoregressive_infer_cfg`` end to end (one forward pass per scale, KV cache), median of repeats, for
  each schedule of ``--schedules``: ``plain`` (upstream VAR: every token of a scale drawn at once) and
  ``default`` (``VAR/train.py``'s defaults: power levels and the left-to-right head, which after each scale's
  pass draws its tokens one after another with a small MLP, ``sum(patch_nums)`` sequential draws per window);
- AR, ``pyramid`` sequence (every token VAR generates, one per pass) and ``last`` sequence (the
  full-resolution token map only), both with a KV cache. Where a full AR generation fits the budget
  (``--ar-full-max-tokens``), it is timed end to end; otherwise the time of ``--ar-steps`` decoding
  steps is measured at the start of the sequence and with a full cache at its end, and the total is
  the linear interpolation (per-step cost is constant plus attention linear in the cache length).
  The run also times one configuration both ways and reports the estimate's error.

Results: ``<results-dir>/speed.json`` and ``speed_ratio.png`` (speed-up vs depth per batch size); with
``--threads N`` > 1 on a CPU, ``speed_threadsN.json`` and ``speed_ratio_threadsN.png`` (both models get the N
threads; one thread compares the two per core, N threads what the machine gives).
Time per window = wall time of one batch / batch size. Classifier-free guidance is off by default
(``--cfg``): it doubles the batch of both models alike.
"""
from __future__ import annotations

import json
import logging
import os
import time
from typing import Sequence

import torch

from benchmarks import (bench_parser, device_sync, figure_path, machine_info, median_time, parse_ints, peak_rss_mb,
                        save_result)
from utils.cli import run_cli, setup_logging
from utils.errors import UserError
from utils.var_path import ensure_var_importable

ensure_var_importable()

logger = logging.getLogger("benchmarks.bench_speed")

NAME = "speed"
TARGET_SPEEDUP = 20.0
SCHEDULES = ("plain", "default")


def schedule_kwargs(schedule: str) -> dict:
    """``build_var`` keyword arguments of a sampling schedule: ``plain`` = upstream VAR; ``default`` = the
    inside-scale settings of ``VAR/train.py``'s defaults (left-to-right head, its coarse path, power levels)."""
    if schedule == "plain":
        return {}
    from utils.arg_util import Args
    a = Args()
    return dict(intra_steps=a.intra_steps, intra_ar=a.intra_ar, intra_ar_fhat=a.intra_ar_fhat,
                num_levels=a.level_clusters)


#: The default eegmat tokenizer's layout (19 channels, 500 samples, latent 250, 769 tokens) that the speed results use.
FINAL_LAYOUT = dict(in_channels=19, vocab_size=256, z_channels=32, ch_mult=(1, 2), arch="patch",
                    v_patch_nums=(50, 90, 130, 249, 250), per_scale_codebook=True, resample="fft")
QUICK_LAYOUT = dict(in_channels=4, vocab_size=32, z_channels=8, ch_mult=(1, 2), arch="patch",
                    v_patch_nums=(4, 8, 16), per_scale_codebook=True, resample="fft")


def load_tokenizer(path: str | None, quick: bool):
    """The tokenizer at ``path``, or a random one with the final (or, quick, a tiny) layout, and its description."""
    from models import VQVAE
    if path:
        from vae_checkpoint import load_vae
        if not os.path.isfile(path):
            raise UserError(f"--vae-ckpt={path}: file not found; pass a vae-ckpt-*.pth written by VAR/train_vae.py")
        vae, info = load_vae(path)
        return vae, {"source": path, "v_patch_nums": list(info["v_patch_nums"]), "vocab_size": info["vocab_size"]}
    layout = QUICK_LAYOUT if quick else FINAL_LAYOUT
    torch.manual_seed(0)
    vae = VQVAE(test_mode=True, **layout)
    return vae, {"source": "random weights, " + ("tiny layout" if quick else "layout of the final eegmat tokenizer"),
                 "v_patch_nums": list(layout["v_patch_nums"]), "vocab_size": layout["vocab_size"]}


@torch.no_grad()
def ar_step_seconds(ar, B: int, cfg: float, start: int, n_steps: int, repeats: int) -> float:
    """Median seconds of one KV-cached decoding step of ``ar`` at cache length ``start`` .. ``start + n_steps``."""
    from models.helpers import sample_with_top_k_top_p_
    dev = ar.class_emb.weight.device
    nB = 2 * B if cfg else B
    cond_BD = ar.class_emb(torch.zeros(nB, dtype=torch.long, device=dev))
    g = torch.Generator(device=dev).manual_seed(0)

    for b in ar.blocks:
        b.attn.kv_caching(True)
    try:
        if start > 0:  # prefill the cache once with a causal pass over `start` random inputs (not timed)
            x = torch.randn(nB, start, ar.C, generator=g, device=dev)
            for b in ar.blocks:
                x = b(x=x, cond_BD=cond_BD, attn_bias=ar.attn_bias_11NN[:, :, :start, :start])
        snapshot = [(b.attn.cached_k, b.attn.cached_v) for b in ar.blocks]
        times: list[float] = []
        for _ in range(repeats):
            for b, (k, v) in zip(ar.blocks, snapshot):  # every repeat starts from the same cache length
                b.attn.cached_k, b.attn.cached_v = k, v
            device_sync(dev)
            t0 = time.perf_counter()
            x_B1C = torch.randn(nB, 1, ar.C, generator=g, device=dev)
            for t in range(start, start + n_steps):
                h = x_B1C
                for b in ar.blocks:
                    h = b(x=h, cond_BD=cond_BD, attn_bias=None)
                logits = ar.get_logits(h, cond_BD)
                idx_B1 = sample_with_top_k_top_p_(logits[:B], rng=g, top_k=0, top_p=0.0, num_samples=1)[:, :, 0]
                x_B1C = ar._embed_tokens(idx_B1, t) + ar._pos(min(t + 1, ar.N - 1), 1)
                if cfg:
                    x_B1C = x_B1C.repeat(2, 1, 1)
            device_sync(dev)
            times.append((time.perf_counter() - t0) / n_steps)
    finally:
        for b in ar.blocks:
            b.attn.kv_caching(False)
    return float(sorted(times)[len(times) // 2])


def time_generation(model, B: int, cfg: float, repeats: int, max_single_s: float) -> tuple[float, int]:
    """Median seconds of one batch of ``B`` windows (the warm-up run counts alone when it exceeds ``max_single_s``)."""
    dev = model.class_emb.weight.device
    labels = (torch.arange(B) % max(model.num_classes, 1)).to(dev)

    def fn() -> None:
        model.autoregressive_infer_cfg(B=B, label_B=labels, g_seed=0, cfg=cfg)
        device_sync(dev)
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    if first > max_single_s:
        return first, 1
    return median_time(fn, repeats=repeats, warmup=0), repeats


def time_ar(ar, B: int, cfg: float, args) -> dict:
    """Seconds per batch of ``ar``: measured end to end, or interpolated from timed steps (see module doc)."""
    if ar.N * B <= args.ar_full_max_tokens:
        sec, n = time_generation(ar, B, cfg, args.repeats, args.max_single_s)
        return {"seconds_per_batch": sec, "method": "measured end to end", "repeats": n}
    k = min(args.ar_steps, ar.N)
    first = ar_step_seconds(ar, B, cfg, 0, k, args.repeats)
    last = ar_step_seconds(ar, B, cfg, ar.N - k, k, args.repeats)
    return {"seconds_per_batch": ar.N * (first + last) / 2, "method": f"interpolated from {k} timed steps at "
            "the start and the end of the sequence", "step_s_start": first, "step_s_end": last,
            "repeats": args.repeats}


def plot_ratio(rows: list[dict], path: str, where: str = "this CPU") -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    keys = sorted({(r.get("schedule", "plain"), r["ar_sequence"], r["batch"]) for r in rows})
    markers = dict(zip(sorted({k[1:] for k in keys}), "osd^v<>"))
    for sch, seq, B in keys:
        sel = sorted((r for r in rows if (r.get("schedule", "plain"), r["ar_sequence"], r["batch"]) == (sch, seq, B)),
                     key=lambda r: r["depth"])
        ax.plot([r["depth"] for r in sel], [r["speedup"] for r in sel], marker=markers[(seq, B)],
                ls="-" if sch == "default" else ":", label=f"VAR {sch} vs AR {seq}, batch {B}")
    ax.axhline(TARGET_SPEEDUP, color="r", ls="--", label=f"target {TARGET_SPEEDUP:g}x")
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set(xlabel="depth", ylabel="AR time / VAR time per window", yscale="log",
           title=f"Next-scale speed-up over next-token ({where})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def speed_targets(rows: list[dict]) -> dict:
    """The target read two ways: the default schedule at batch 1 against AR over the same tokens (issue 13's
    measure: per depth, met or not), and plain VAR against that AR at every batch (the upstream comparison)."""
    pyr = [r for r in rows if r["ar_sequence"] == "pyramid"] or rows
    plain = [r for r in pyr if r.get("schedule", "plain") == "plain"]
    b1 = sorted((r for r in pyr if r.get("schedule") == "default" and r["batch"] == 1), key=lambda r: r["depth"])
    out = {"min_speedup_pyramid": min((r["speedup"] for r in plain), default=None)}
    out["target_met_pyramid"] = out["min_speedup_pyramid"] is not None and out["min_speedup_pyramid"] >= TARGET_SPEEDUP
    out["default_batch1_speedup_by_depth"] = {str(r["depth"]): r["speedup"] for r in b1}
    met = [r["depth"] for r in b1 if r["speedup"] >= TARGET_SPEEDUP]
    out["default_batch1_target_met_depths"] = met
    out["default_batch1_target_met_all_depths"] = bool(b1) and len(met) == len(b1)
    return out


def main(argv: Sequence[str] | None = None) -> dict:
    p = bench_parser("python -m benchmarks.bench_speed", "Next-scale (VAR) vs next-token (AR baseline) sampling: "
                     "forward passes and wall time per generated window, ratio measured in the same run.")
    p.add_argument("--vae-ckpt", default=None, help="tokenizer checkpoint (default: random weights with the final "
                   "eegmat tokenizer's layout; cost does not depend on the weights)")
    p.add_argument("--depths", default=None, help="comma-separated depths (default 4,8,16; quick 2)")
    p.add_argument("--batches", default=None, help="comma-separated batch sizes (default 1,32; quick 1,4)")
    p.add_argument("--skip", default=None, help="DEPTHxBATCH pairs to skip, comma-separated (default 16x32 on CPU: "
                   "~10 TFLOP per batch; none in quick mode or on a GPU)")
    p.add_argument("--sequences", default="pyramid,last", help="AR token sequences to compare: pyramid, last")
    p.add_argument("--schedules", default=",".join(SCHEDULES),
                   help="VAR sampling schedules to time: plain (upstream, a scale's tokens at once), default "
                        "(VAR/train.py's defaults: levels and the left-to-right head)")
    p.add_argument("--cfg", type=float, default=0.0, help="guidance strength for both models (non-zero doubles "
                   "the batch of both)")
    p.add_argument("--repeats", type=int, default=None, help="timed repetitions per measurement (default 3; quick 2)")
    p.add_argument("--max-single-s", type=float, default=20.0,
                   help="a generation slower than this is timed once (its warm-up run) instead of repeated")
    p.add_argument("--ar-full-max-tokens", type=int, default=None,
                   help="time AR end to end when batch * sequence length <= this (default 1000; quick 10^9)")
    p.add_argument("--ar-steps", type=int, default=24, help="timed AR steps at each end when interpolating")
    p.add_argument("--device", default="cpu", help="cpu or cuda (results then go to speed_cuda.json)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads for both models; more than 1 writes speed_threadsN.json beside speed.json "
                        "(default: the threads set by OMP_NUM_THREADS, results in speed.json)")
    args = p.parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            raise UserError(f"--threads={args.threads}: expected a positive number of threads")
        torch.set_num_threads(args.threads)
    if args.device not in ("cpu", "cuda"):
        raise UserError(f"--device={args.device!r}: expected cpu or cuda")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device=cuda: torch sees no CUDA device on this machine; use --device cpu")
    depths = parse_ints(args.depths or ("2" if args.quick else "2,4,8,16"), "--depths")
    batches = parse_ints(args.batches or ("1,4" if args.quick else "1,32"), "--batches")
    seqs = [s.strip() for s in args.sequences.split(",") if s.strip()]
    if not seqs or any(s not in ("pyramid", "last") for s in seqs):
        raise UserError(f"--sequences={args.sequences!r}: expected a comma-separated subset of pyramid,last")
    schedules = [s.strip() for s in args.schedules.split(",") if s.strip()]
    if not schedules or any(s not in SCHEDULES for s in schedules):
        raise UserError(f"--schedules={args.schedules!r}: expected a comma-separated subset of {','.join(SCHEDULES)}")
    default_skip = "" if args.quick or args.device == "cuda" else "16x32"
    skip = {s.strip() for s in (args.skip if args.skip is not None else default_skip).split(",") if s.strip()}
    args.repeats = args.repeats or (2 if args.quick else 3)
    args.ar_full_max_tokens = args.ar_full_max_tokens or (10 ** 9 if args.quick else 1000)
    from models import build_var
    from models.ar_baseline import build_ar_baseline
    vae, tok = load_tokenizer(args.vae_ckpt, args.quick)
    vae = vae.to(args.device)
    t_start = time.time()
    rows: list[dict] = []
    check: dict | None = None
    for depth in depths:
        torch.manual_seed(0)
        vars_ = {sch: build_var(vae, args.device, num_classes=2, depth=depth, **schedule_kwargs(sch)).eval()
                 for sch in schedules}
        params_M = {sch: sum(p.numel() for p in var.parameters()) / 1e6 for sch, var in vars_.items()}
        ars = {s: build_ar_baseline(vae, args.device, num_classes=2, depth=depth, sequence=s).eval() for s in seqs}
        for B in batches:
            if f"{depth}x{B}" in skip:
                logger.info("depth %d batch %d: skipped (--skip)", depth, B)
                continue
            v_time = {}
            for sch, var in vars_.items():
                v_time[sch] = time_generation(var, B, args.cfg, args.repeats, args.max_single_s)
                logger.info("depth %d batch %d: VAR %s %.3f s per batch", depth, B, sch, v_time[sch][0])
            for s, ar in ars.items():
                a = time_ar(ar, B, args.cfg, args)
                ar_params_M = sum(p.numel() for p in ar.parameters()) / 1e6
                for sch, var in vars_.items():
                    v_sec, v_rep = v_time[sch]
                    rows.append({"depth": depth, "batch": B, "schedule": sch, "ar_sequence": s,
                                 "params_M_var": params_M[sch],
                                 "params_M_ar": ar_params_M,
                                 "var_forward_passes": len(var.patch_nums), "ar_forward_passes": ar.N,
                                 "var_sequential_draws": sum(var.patch_nums) if var.intra_ar > 0 else 0,
                                 "var_tokens": var.L * var.G, "ar_tokens": ar.N,
                                 "var_s_per_window": v_sec / B, "ar_s_per_window": a["seconds_per_batch"] / B,
                                 "speedup": a["seconds_per_batch"] / v_sec, "var_repeats": v_rep,
                                 "ar_method": a["method"], "ar_repeats": a["repeats"]})
                    logger.info("  AR %s: %.3f s per batch (%s) -> %.1fx over VAR %s", s, a["seconds_per_batch"],
                                a["method"], rows[-1]["speedup"], sch)
        if check is None and not args.quick:  # validate the interpolation on the cheapest interpolated config
            ar = ars[seqs[0]]
            B = min(batches)
            full, _ = time_generation(ar, B, args.cfg, 1, 0.0)
            k = min(args.ar_steps, ar.N)
            est = ar.N * (ar_step_seconds(ar, B, args.cfg, 0, k, args.repeats)
                          + ar_step_seconds(ar, B, args.cfg, ar.N - k, k, args.repeats)) / 2
            check = {"depth": depth, "batch": B, "sequence": seqs[0], "measured_s": full, "interpolated_s": est,
                     "relative_error": est / full - 1}
            logger.info("interpolation check: measured %.2f s, interpolated %.2f s", full, est)
        del vars_, ars
    if not rows:
        raise UserError("every depth x batch pair was skipped; change --skip, --depths or --batches")
    cuda = args.device == "cuda"
    where = torch.cuda.get_device_name(0) if cuda else "this CPU"
    n_threads = torch.get_num_threads()
    # one file per kind of run: the GPU, one CPU thread (the reference), or N CPU threads
    suffix = "_cuda" if cuda else (f"_threads{n_threads}" if (args.threads or 1) > 1 else "")
    png = figure_path(args.results_dir, f"speed_ratio{suffix}.png")
    plot_ratio(rows, png, where + (f", {n_threads} threads" if suffix and not cuda else ""))
    tg = speed_targets(rows)
    result = {"machine": machine_info(), "quick": args.quick, "tokenizer": tok, "cfg": args.cfg,
              "threads": torch.get_num_threads(), "schedules": schedules, "rows": rows, "interpolation_check": check,
              "skipped": sorted(skip), "target_speedup": TARGET_SPEEDUP, **tg,
              "min_speedup_last": min((r["speedup"] for r in rows if r["ar_sequence"] == "last"), default=None),
              "peak_rss_mb": peak_rss_mb(), "total_seconds": time.time() - t_start}
    text = [f"Random weights on the tokenizer layout {tok['v_patch_nums']} (V={tok['vocab_size']}); "
            f"{where if cuda else f'{torch.get_num_threads()} CPU thread(s)'}, guidance {'off' if not args.cfg else args.cfg}. Speed-up = AR "
            "time / VAR time per window, measured in the same run (median of repeats). 'pyramid': AR over every "
            "token VAR generates (same tokens, same decoder); 'last': AR over the full-resolution token map only "
            "(fewer tokens, but that token map alone reconstructs poorly). Schedules: 'plain' is upstream VAR (a "
            "scale's tokens drawn at once); 'default' is VAR/train.py's defaults (levels and the left-to-right head: "
            "after each scale's pass its tokens are drawn one after another by a small MLP, 'draws' per window)."]
    by_depth = tg["default_batch1_speedup_by_depth"]
    if by_depth:
        text.append(f"Target >= {TARGET_SPEEDUP:g}x at batch 1 with the default schedule (pyramid): "
                    + ", ".join(f"depth {d}: {v:.1f}x ({'met' if v >= TARGET_SPEEDUP else 'NOT met'})"
                                for d, v in by_depth.items()) + ".")
    if tg["min_speedup_pyramid"] is not None:
        text.append(f"Plain VAR, every batch size (pyramid): {'met' if tg['target_met_pyramid'] else 'NOT met'} "
                    f"(lowest {tg['min_speedup_pyramid']:.1f}x).")
    if check:
        text.append(f"AR interpolation check (depth {check['depth']}, batch {check['batch']}): measured "
                    f"{check['measured_s']:.2f} s, interpolated {check['interpolated_s']:.2f} s "
                    f"({100 * check['relative_error']:+.0f}%).")
    if skip:
        text.append(f"Skipped on this CPU: {', '.join(sorted(skip))} (depth x batch; run with --skip '' to include).")
    result["report"] = {
        "title": "Next-scale vs next-token sampling speed" + (
            " on the GPU" if cuda else (f", {n_threads} CPU threads" if suffix else "")), "text": text,
        "tables": [{"title": "Seconds per generated window and speed-up", "columns": [
            "depth", "batch", "VAR schedule", "AR sequence", "VAR passes + draws", "AR passes", "VAR s/window",
            "AR s/window", "speed-up", "AR timing"],
            "rows": [[r["depth"], r["batch"], r["schedule"], r["ar_sequence"],
                      f"{r['var_forward_passes']} + {r['var_sequential_draws']}",
                      r["ar_forward_passes"], round(r["var_s_per_window"], 4), round(r["ar_s_per_window"], 4),
                      round(r["speedup"], 1), "measured" if r["ar_method"].startswith("measured") else "interpolated"]
                     for r in rows]}],
        "figures": [{"title": "Speed-up of next-scale over next-token sampling vs depth", "path": os.path.basename(png)}],
    }
    result["device"] = where
    save_result(NAME + suffix, result, args.results_dir)
    return result


def _cli(argv: Sequence[str] | None = None) -> int:
    setup_logging()
    res = main(argv)
    print(json.dumps([{k: r[k] for k in ("depth", "batch", "schedule", "ar_sequence", "speedup")} for r in res["rows"]]))
    return 0


if __name__ == "__main__":
    run_cli(_cli, prog="python -m benchmarks.bench_speed")
