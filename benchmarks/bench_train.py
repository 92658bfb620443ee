"""Training throughput and peak memory of VAR per depth on this machine, and peak memory of sampling.

Usage::

    python -m benchmarks.bench_train [--quick] [--depths 4,8,16] [--bs 2] [--sample-batch 4]

    python -m benchmarks.bench_train --device cuda --amp bf16 --depths 16,20 --bs 64   # on a GPU

Each measurement runs in its own Python process, so its peak resident memory (``ru_maxrss``) is its own.
Training: VAR on the final eegmat tokenizer's layout (random weights, random token maps; the cost does not
depend on the values), teacher-forced forward, cross-entropy, backward, AdamW step, in fp32 or under bf16
autocast (``--amp``); samples/s = batch / median step time after warm-up steps. Sampling: one
``autoregressive_infer_cfg`` call (guidance on, so the transformer runs on twice the batch).

Model FLOPs per step are counted once with ``torch.utils.flop_counter.FlopCounterMode`` on the real step
(matrix products and attention, forward and backward; attention is added analytically where the counter has
no entry for the SDPA kernel, as on the CPU), so MFU = FLOPs per step / step time / peak, with
the peak given by ``--peak-tflops`` (default on CUDA: a bf16 8192^3 matrix product measured in the same
process, i.e. the rate this GPU really reaches; the datasheet's dense bf16 rate is reported beside it).

Results: ``<results-dir>/train.json``.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from typing import Sequence

from benchmarks import bench_parser, device_sync, machine_info, save_result
from utils.cli import run_cli, setup_logging
from utils.errors import UserError
from utils.project_info import REPO_ROOT

logger = logging.getLogger("benchmarks.bench_train")

NAME = "train"


def measured_matmul_tflops(device: str, n: int = 8192, repeats: int = 10) -> float:
    """bf16 ``n^3`` matrix-product rate on ``device`` in TFLOP/s (mean of ``repeats`` after 3 warm-ups)."""
    import torch
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    torch.cuda.synchronize()
    return 2 * n ** 3 * repeats / (time.perf_counter() - t0) / 1e12


def child(kind: str, depth: int, batch: int, steps: int, quick: bool, device: str, amp: str = "fp32") -> dict:
    """Run one measurement in this process (called in a fresh child); returns its numbers."""
    import contextlib

    import torch

    from benchmarks import median_time, peak_rss_mb
    from benchmarks.bench_speed import load_tokenizer
    from utils.var_path import ensure_var_importable
    ensure_var_importable()
    from models import build_var
    torch.manual_seed(0)
    vae, _ = load_tokenizer(None, quick)
    vae = vae.to(device)
    var = build_var(vae, device, num_classes=2, depth=depth)
    params_M = sum(p.numel() for p in var.parameters()) / 1e6
    rss0 = peak_rss_mb()
    cuda = device.startswith("cuda")
    sync = lambda: device_sync(torch.device(device))  # noqa: E731
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True  # as VAR/train.py's --tf32=1 default
        torch.backends.cudnn.allow_tf32 = True
    autocast = (torch.autocast(device.split(":")[0], dtype=torch.bfloat16) if amp == "bf16"
                else contextlib.nullcontext())
    extra: dict = {}
    if kind == "train":
        var.train()
        g = torch.Generator().manual_seed(0)
        L, V = var.L * var.G, var.V
        gt_BL = torch.randint(0, V, (batch, L), generator=g).to(device)
        x_in = torch.randn(batch, var.L - var.first_l, var.Cvae, generator=g).to(device)
        lab = (torch.arange(batch) % 2).to(device)
        opt = torch.optim.AdamW(var.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05)

        def step() -> None:
            with autocast:
                logits = var(lab, x_in)
            loss = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), gt_BL)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sync()

        sec = median_time(step, repeats=steps, warmup=2 if cuda else 1)
        from torch.utils.flop_counter import FlopCounterMode
        counter = FlopCounterMode(display=False)
        with counter:
            step()
        flops = float(counter.get_total_flops())
        sdpa_counted = any("scaled_dot_product" in str(op) for op in counter.get_flop_counts().get("Global", {}))
        if not sdpa_counted:  # CPU SDPA kernels are not in the counter's table: add QK^T and AV, fwd + 2x bwd
            flops += 12.0 * batch * var.L ** 2 * var.C * len(var.blocks)
        out = {"seconds_per_step": sec, "samples_per_s": batch / sec, "tokens_per_s": batch * L / sec,
               "model_tflop_per_step": flops / 1e12, "achieved_tflops": flops / sec / 1e12,
               "attention_flops": "counted" if sdpa_counted else "added analytically (12 B L^2 C per block)"}
        if cuda:
            extra["peak_cuda_mb_train"] = torch.cuda.max_memory_allocated() / 2 ** 20
    else:
        var.eval()
        lab = (torch.arange(batch) % 2).to(device)

        def run() -> None:
            with autocast:
                var.autoregressive_infer_cfg(B=batch, label_B=lab, g_seed=0, cfg=1.5)
            sync()

        if cuda:
            sec = median_time(run, repeats=steps, warmup=1)
        else:  # one call: on a CPU a depth-16 batch takes minutes
            t0 = time.perf_counter()
            run()
            sec = time.perf_counter() - t0
        out = {"seconds_per_batch": sec, "windows_per_s": batch / sec}
    out.update(kind=kind, depth=depth, batch=batch, params_M=params_M, peak_rss_mb=peak_rss_mb(),
               rss_after_build_mb=rss0, device=device, threads=torch.get_num_threads(), amp=amp, **extra)
    if cuda:
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
        out["gpu"] = torch.cuda.get_device_name(0)
    return out


def build_report(result: dict) -> dict:
    """The README section of a saved ``train[_cuda].json`` (only its numbers are used)."""
    rows, bs, sb, amp = result["rows"], result["train_batch"], result["sample_batch"], result.get("amp", "fp32")
    peak, peak_source = result.get("peak_tflops"), result.get("peak_source")
    ok = [r for r in rows if "error" not in r]
    depths = result.get("depths") or sorted({r["depth"] for r in rows})
    steps = result.get("steps", 2)
    sampled = not result.get("skip_sampling") and any(r["kind"] == "sample" for r in ok)
    tr = {r["depth"]: r for r in ok if r["kind"] == "train"}
    sa = {r["depth"]: r for r in ok if r["kind"] == "sample"}
    gpu_name = next((r["gpu"] for r in ok if "gpu" in r), None)
    where = f"{gpu_name} (CUDA)" if gpu_name else f"this CPU, {rows[0].get('threads', '?') if rows else '?'} thread(s)"
    text = [f"VAR on the final tokenizer layout (random weights) on {where}, {amp}; training batch {bs} "
            f"(warm-up, then median of {steps} steps)"
            + (f", sampling batch {sb} with guidance (2x batch)" if sampled else ", sampling not measured here")
            + ". Peak RSS = the whole measuring process (Python, torch, model, optimizer state, activations)."]
    if peak:
        text.append(f"MFU = model FLOPs per step (counted by torch's FlopCounterMode: matrix products and attention, "
                    f"forward + backward) / step time / {peak:.0f} TFLOP/s ({peak_source}).")
    tables = []
    if not gpu_name:
        table = [[d, round(tr[d]["params_M"], 1) if d in tr else None,
                  round(tr[d]["samples_per_s"], 3) if d in tr else None,
                  round(tr[d]["seconds_per_step"], 2) if d in tr else None,
                  round(tr[d]["peak_rss_mb"]) if d in tr else None,
                  round(sa[d]["windows_per_s"], 3) if d in sa else None,
                  round(sa[d]["peak_rss_mb"]) if d in sa else None] for d in depths]
        tables.append({"title": "Per depth", "columns": ["depth", "params (M)", "train samples/s", "s/step",
                                                         "train peak RSS (MiB)", "sampling windows/s",
                                                         "sampling peak RSS (MiB)"], "rows": table})
    else:
        gpu_table = [[d, round(tr[d]["params_M"], 1), amp, bs, round(1e3 * tr[d]["seconds_per_step"], 1),
                      round(tr[d]["samples_per_s"], 1), round(tr[d]["tokens_per_s"]),
                      round(tr[d]["model_tflop_per_step"], 2), round(tr[d]["achieved_tflops"], 1),
                      round(100 * tr[d]["mfu"], 1) if "mfu" in tr[d] else None,
                      round(tr[d].get("peak_cuda_mb", 0) / 1024, 1)] for d in depths if d in tr]
        tables.append({"title": "GPU training step", "columns": [
            "depth", "params (M)", "precision", "batch", "ms/step", "samples/s", "tokens/s", "TFLOP/step",
            "TFLOP/s", "MFU (%)", "peak GPU memory (GiB)"], "rows": gpu_table})
    errors = result.get("errors") or []
    return {"title": "Training throughput and memory per depth" + (" on the GPU" if gpu_name else ""),
            "text": text + ([f"Failed: {'; '.join(errors)}"] if errors else []), "tables": tables, "figures": []}


def run_child(kind: str, depth: int, batch: int, steps: int, quick: bool, device: str, timeout: float,
              amp: str = "fp32") -> dict:
    code = ("import json, sys, torch; torch.set_num_threads(int(sys.argv[7])); "
            "from benchmarks.bench_train import child; "
            "print(json.dumps(child(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), "
            "sys.argv[5] == '1', sys.argv[6], sys.argv[8])))")
    import torch
    cmd = [sys.executable, "-c", code, kind, str(depth), str(batch), str(steps), "1" if quick else "0", device,
           str(torch.get_num_threads()), amp]
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO_ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    try:
        proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"kind": kind, "depth": depth, "batch": batch, "error": f"stopped after {timeout:g} s"}
    if proc.returncode != 0:
        return {"kind": kind, "depth": depth, "batch": batch,
                "error": (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: Sequence[str] | None = None) -> dict:
    p = bench_parser("python -m benchmarks.bench_train", "VAR training samples/s and peak resident memory per "
                     "depth, and peak memory of sampling, each in its own process.")
    p.add_argument("--depths", default=None, help="comma-separated depths (default 4,8,16; quick 2)")
    p.add_argument("--bs", type=int, default=None, help="training batch size (default 2 on CPU: one depth-16 step "
                   "on 749 tokens is ~2 TFLOP; quick 2)")
    p.add_argument("--sample-batch", type=int, default=None, help="windows per sampling call (default 4; quick 2)")
    p.add_argument("--steps", type=int, default=None, help="timed training steps after one warm-up (default 2)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--amp", default="fp32", choices=("fp32", "bf16"), help="precision of the forward pass (bf16 = "
                   "autocast, as VAR/train.py --fp16=2)")
    p.add_argument("--peak-tflops", type=float, default=None, help="peak rate for MFU in TFLOP/s (default on CUDA: a "
                   "bf16 8192^3 matrix product measured in this run; on CPU MFU is not reported)")
    p.add_argument("--skip-sampling", action="store_true", help="measure training only")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per measurement before it is stopped")
    args = p.parse_args(argv)
    try:
        depths = [int(d) for d in (args.depths or ("2" if args.quick else "4,8,16")).split(",") if d.strip()]
    except ValueError:
        raise UserError(f"--depths={args.depths!r}: expected comma-separated integers, e.g. 4,8,16") from None
    if not depths or min(depths) < 1:
        raise UserError(f"--depths={args.depths!r}: expected positive integers")
    if args.device not in ("cpu", "cuda"):
        raise UserError(f"--device={args.device!r}: expected cpu or cuda")
    bs, sb, steps = args.bs or 2, args.sample_batch or (2 if args.quick else 4), args.steps or 2
    if min(bs, sb, steps) < 1:
        raise UserError("--bs, --sample-batch and --steps must be >= 1")
    t0 = time.time()
    peak, peak_source = args.peak_tflops, "--peak-tflops"
    if peak is None and args.device == "cuda":
        import torch
        if not torch.cuda.is_available():
            raise UserError("--device=cuda: torch sees no CUDA device on this machine; use --device cpu")
        peak, peak_source = measured_matmul_tflops("cuda"), "bf16 8192^3 matrix product measured in this run"
        logger.info("measured bf16 matrix-product peak: %.0f TFLOP/s", peak)
    rows = []
    kinds = (("train", bs),) if args.skip_sampling else (("train", bs), ("sample", sb))
    for d in depths:
        for kind, batch in kinds:
            r = run_child(kind, d, batch, steps, args.quick, args.device, args.timeout, args.amp)
            if peak and "achieved_tflops" in r:
                r["mfu"] = r["achieved_tflops"] / peak
            logger.info("%s depth %d: %s", kind, d, {k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()})
            rows.append(r)
    errors = [f"{r['kind']} depth {r['depth']}: {r['error']}" for r in rows if "error" in r]
    result = {"machine": machine_info(), "quick": args.quick, "device": args.device, "amp": args.amp,
              "train_batch": bs, "sample_batch": sb, "rows": rows, "errors": errors, "total_seconds": time.time() - t0,
              "peak_tflops": peak, "peak_source": peak_source if peak else None, "depths": depths, "steps": steps,
              "skip_sampling": args.skip_sampling}
    result["report"] = build_report(result)
    save_result(NAME if args.device == "cpu" else f"{NAME}_{args.device}", result, args.results_dir)
    return result


def _cli(argv: Sequence[str] | None = None) -> int:
    setup_logging()
    res = main(argv)
    print(json.dumps(res["report"]["tables"][0]["rows"]))
    return 0


if __name__ == "__main__":
    run_cli(_cli, prog="python -m benchmarks.bench_train")
