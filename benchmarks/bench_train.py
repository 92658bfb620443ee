"""Training throughput and peak memory of VAR per depth on this machine, and peak memory of sampling (issue 7).

Usage::

    python -m benchmarks.bench_train [--quick] [--depths 4,8,16] [--bs 2] [--sample-batch 4]

Each measurement runs in its own Python process, so its peak resident memory (``ru_maxrss``) is its own.
Training: VAR on the final eegmat tokenizer's layout (random weights, random token maps; the cost does not
depend on the values), teacher-forced forward, cross-entropy, backward, AdamW step, fp32; samples/s = batch
/ median step time after one warm-up step. Sampling: one ``autoregressive_infer_cfg`` call (guidance on,
so the transformer runs on twice the batch). On a machine with CUDA the same code runs on the GPU
(``--device cuda``); bf16 step time and MFU are not measured in this version.

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

from benchmarks import bench_parser, machine_info, save_result
from utils.cli import run_cli, setup_logging
from utils.errors import UserError
from utils.project_info import REPO_ROOT

logger = logging.getLogger("benchmarks.bench_train")

NAME = "train"


def child(kind: str, depth: int, batch: int, steps: int, quick: bool, device: str) -> dict:
    """Run one measurement in this process (called in a fresh child); returns its numbers."""
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
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    if kind == "train":
        var.train()
        g = torch.Generator().manual_seed(0)
        L, V = var.L * var.G, var.V
        gt_BL = torch.randint(0, V, (batch, L), generator=g).to(device)
        x_in = torch.randn(batch, var.L - var.first_l, var.Cvae, generator=g).to(device)
        lab = (torch.arange(batch) % 2).to(device)
        opt = torch.optim.AdamW(var.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05)

        def step() -> None:
            logits = var(lab, x_in)
            loss = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), gt_BL)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sync()

        sec = median_time(step, repeats=steps, warmup=1)
        out = {"seconds_per_step": sec, "samples_per_s": batch / sec, "tokens_per_s": batch * L / sec}
    else:
        var.eval()
        lab = (torch.arange(batch) % 2).to(device)

        def run() -> None:
            var.autoregressive_infer_cfg(B=batch, label_B=lab, g_seed=0, cfg=1.5)
            sync()

        t0 = time.perf_counter()
        run()
        sec = time.perf_counter() - t0
        out = {"seconds_per_batch": sec, "windows_per_s": batch / sec}
    out.update(kind=kind, depth=depth, batch=batch, params_M=params_M, peak_rss_mb=peak_rss_mb(),
               rss_after_build_mb=rss0, device=device, threads=torch.get_num_threads())
    if device.startswith("cuda"):
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
    return out


def run_child(kind: str, depth: int, batch: int, steps: int, quick: bool, device: str, timeout: float) -> dict:
    code = ("import json, sys, torch; torch.set_num_threads(int(sys.argv[7])); "
            "from benchmarks.bench_train import child; "
            "print(json.dumps(child(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), "
            "sys.argv[5] == '1', sys.argv[6])))")
    import torch
    cmd = [sys.executable, "-c", code, kind, str(depth), str(batch), str(steps), "1" if quick else "0", device,
           str(torch.get_num_threads())]
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
    rows = []
    for d in depths:
        for kind, batch in (("train", bs), ("sample", sb)):
            r = run_child(kind, d, batch, steps, args.quick, args.device, args.timeout)
            logger.info("%s depth %d: %s", kind, d, {k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()})
            rows.append(r)
    ok = [r for r in rows if "error" not in r]
    tr = {r["depth"]: r for r in ok if r["kind"] == "train"}
    sa = {r["depth"]: r for r in ok if r["kind"] == "sample"}
    table = [[d, round(tr[d]["params_M"], 1) if d in tr else None,
              round(tr[d]["samples_per_s"], 3) if d in tr else None,
              round(tr[d]["seconds_per_step"], 2) if d in tr else None,
              round(tr[d]["peak_rss_mb"]) if d in tr else None,
              round(sa[d]["windows_per_s"], 3) if d in sa else None,
              round(sa[d]["peak_rss_mb"]) if d in sa else None] for d in depths]
    errors = [f"{r['kind']} depth {r['depth']}: {r['error']}" for r in rows if "error" in r]
    result = {"machine": machine_info(), "quick": args.quick, "device": args.device, "train_batch": bs,
              "sample_batch": sb, "rows": rows, "errors": errors, "total_seconds": time.time() - t0,
              "gpu": None if args.device == "cuda" else "not measured: no GPU lent to this session"}
    result["report"] = {
        "title": "Training throughput and memory per depth (issue 7)",
        "text": [f"VAR on the final tokenizer layout (random weights), {args.device}, fp32, "
                 f"{rows[0].get('threads', '?')} thread(s); training batch {bs} (one warm-up + median of {steps} "
                 f"steps), sampling batch {sb} with guidance (2x batch). Peak RSS = the whole measuring process "
                 "(Python, torch, model, optimizer state, activations). bf16 step time and MFU on a GPU: not "
                 "measured (no GPU in this session)."] + ([f"Failed: {'; '.join(errors)}"] if errors else []),
        "tables": [{"title": "Per depth", "columns": ["depth", "params (M)", "train samples/s", "s/step",
                                                      "train peak RSS (MiB)", "sampling windows/s",
                                                      "sampling peak RSS (MiB)"], "rows": table}],
        "figures": [],
    }
    save_result(NAME, result, args.results_dir)
    return result


def _cli(argv: Sequence[str] | None = None) -> int:
    setup_logging()
    res = main(argv)
    print(json.dumps(res["report"]["tables"][0]["rows"]))
    return 0


if __name__ == "__main__":
    run_cli(_cli, prog="python -m benchmarks.bench_train")
