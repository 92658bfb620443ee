"""Generation quality side by side: VAR, the next-token AR baseline, a linear VAR model, phase-randomised
real windows and a real-vs-real floor, judged the same way on held-out validation windows.

Usage::

    python -m benchmarks.bench_generation [--quick] [--data-root DIR] [--var-ckpt ar-ckpt-best.pth]
                                          [--vae-ckpt vae-ckpt-best.pth] [--ep N] [--depth D] [--bs B]
                                          [--device cpu|cuda] [--amp fp32|bf16]

Models and budget
-----------------
- **VAR**: the checkpoint ``--var-ckpt`` written by ``VAR/train.py`` (its tokenizer comes with it); without
  it, VAR is trained here on ``--vae-ckpt`` with the loop below.
- **AR baseline** (``VAR/models/ar_baseline.py``, ``pyramid`` sequence: the same tokens VAR generates, one
  per step): trained here with the same data, depth, batch size, epochs, learning rate and schedule as the
  VAR run (read from the checkpoint's arguments when given): AdamW (0.9, 0.95), weight decay 0.05, linear
  warm-up then linear decay to 0 (VAR's ``lin0``), grad-norm clip 2. Both are sampled with the same
  guidance (``--cfg``). The same baseline can also be trained with VAR's own trainer and checkpoints:
  ``python VAR/train.py --ar_baseline=1 ...`` (same flags as a VAR run).
- **Linear VAR** (least squares, order by AIC), **phase-randomised** validation windows and the **floor**
  (same recordings, alternate blocks) come from :func:`benchmarks.bench_baselines.generation_floors`.

Metrics (``utils.eeg_quality.generation_quality``, per class against the validation windows of that class,
C2ST folds grouped by recording blocks): per-band PSD error (dB, up to 45 Hz), channel-correlation
distance, C2ST AUC (0.5 = indistinguishable). Both transformers also report their validation negative
log-likelihood per token (same tokens, so directly comparable).

Device and precision: ``--device cuda`` trains, evaluates and samples both transformers (and the tokenizer)
on the GPU; the metrics stay on the CPU. ``--amp bf16`` runs the training forward passes under
``torch.autocast(dtype=bfloat16)`` (loss in float32), as ``VAR/train.py --fp16=2``; the default is the
precision of the ``--var-ckpt`` run (its ``fp16`` argument), else fp32. Validation NLL and sampling run in fp32.
On CUDA, float32 matrix products use TF32, as ``VAR/train.py``'s default ``--tf32=1``.

Results: ``<results-dir>/generation.json``, ``generation_psd.png`` (PSD per class and per-band PSD error),
``generation_examples.png`` (one window per kind and class); with ``--device cuda`` ``generation_cuda.json``,
``generation_psd_cuda.png`` and ``generation_examples_cuda.png`` (the CPU results are kept).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks import (bench_parser, device_sync, figure_path, machine_info, peak_rss_mb, plot_psd_curves,
                        save_result)
from benchmarks.bench_baselines import _time_blocks, generation_floors, load_split, plot_examples
from utils.cli import run_cli, setup_logging
from utils.eeg_dataset import label_names, read_manifest
from utils.eeg_metrics import welch_psd
from utils.eeg_quality import generation_quality
from utils.errors import DatasetError, UserError
from utils.var_path import ensure_var_importable

ensure_var_importable()

logger = logging.getLogger("benchmarks.bench_generation")

NAME = "generation"
F_MAX = 45.0


# ------------------------------------------------------------------------------------------ training
def _device_of(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def _targets(model, kind: str, vae, x_NCT: torch.Tensor, chunk: int = 64) -> dict:
    """Teacher-forcing inputs and targets for every window, computed once (the tokenizer is frozen).

    ``x_NCT`` may stay on the CPU: each chunk is moved to the model's device (where the tokenizer must be
    too), and the targets are kept there.
    """
    dev = _device_of(model)
    out: dict = {"gt": [], "inp": []}
    for s in range(0, len(x_NCT), chunk):
        x = x_NCT[s:s + chunk].to(dev)
        if kind == "var":
            idx_Bl = vae.eeg_to_idxBl(x)
            out["gt"].append(torch.cat(idx_Bl, dim=1))
            out["inp"].append(vae.quantize.idxBl_to_var_input(idx_Bl))
        else:
            out["gt"].append(model.tokens_from_eeg(x))
    out["gt"] = torch.cat(out["gt"])
    out["inp"] = torch.cat(out["inp"]) if out["inp"] else None
    return out


def _logits(model, kind: str, label_B: torch.Tensor, tg: dict, b: torch.Tensor) -> torch.Tensor:
    """Teacher-forced logits; ``label_B`` (B,) classes, or (B, 2) class and level for a VAR with levels."""
    if label_B.ndim == 2:
        return model(label_B[:, 0], tg["inp"][b], tg["gt"][b], level_B=label_B[:, 1])
    return model(label_B, tg["inp"][b], tg["gt"][b]) if kind == "var" else model(label_B, tg["gt"][b])


def _amp_ctx(dev: torch.device, amp: str):
    """bf16 autocast on ``dev`` (as VAR/train.py --fp16=2), or nothing for fp32."""
    if amp == "bf16":
        return torch.autocast(device_type=dev.type, dtype=torch.bfloat16)
    if amp != "fp32":
        raise ValueError(f"amp={amp!r}; expected 'fp32' or 'bf16'")
    return contextlib.nullcontext()


def train_model(model, kind: str, vae, x_NCT: torch.Tensor, y_N: torch.Tensor, ep: int, bs: int, lr: float,
                wp_ep: float, wd: float = 0.05, clip: float = 2.0, seed: int = 0, amp: str = "fp32",
                val: tuple[torch.Tensor, torch.Tensor] | None = None, val_every: int = 1) -> dict:
    """Train ``model`` ('var' or 'ar') with teacher forcing; returns wall seconds, steps and the loss curve.

    Runs on the model's device (the tokenizer ``vae`` must be on it too); the training order comes from a
    CPU generator, so it is the same on every device. ``amp='bf16'``: forward passes under bf16 autocast,
    the loss in float32.

    Parameters
    ----------
    x_NCT : Tensor, shape (N, C, T)
        Training windows in model units (µV / ``uv_scale``).
    y_N : LongTensor, shape (N,) or (N, 2)
        Class per window (and its level, for a VAR with ``num_levels``).
    ep, bs, lr, wp_ep : int, int, float, float
        Epochs, batch size, peak learning rate, warm-up epochs (from 0.005 * lr).
    val : (x_NCT, y_N) | None
        Validation windows: every ``val_every`` epochs (and after the last) their NLL is measured and the
        weights with the lowest one are kept, as VAR/train.py keeps ``ar-ckpt-best.pth`` (same model selection
        for both transformers; without it a small corpus ends with an over-fitted model).
    """
    dev = _device_of(model)
    tg = _targets(model, kind, vae, x_NCT)
    y_N = y_N.to(dev)
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim >= 2 and "emb" not in n
             and "pos_" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and not any(p is q for q in decay)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.95))
    n = len(x_NCT)
    iters = max(1, n // bs)
    total, wp = ep * iters, max(1, int(round(wp_ep * iters)))
    g = torch.Generator(device="cpu").manual_seed(seed)  # the order only; batches are indexed on ``dev``
    device_sync(dev)
    curve, t0, step = [], time.perf_counter(), 0
    best: tuple[float, int, dict] | None = None
    val_curve: list[dict] = []
    model.train()
    for e in range(ep):
        perm = torch.randperm(n, generator=g)
        for it in range(iters):
            cur = 0.005 + (1 - 0.005) * step / wp if step < wp else max(0.0, (total - step) / max(1, total - wp))
            for group in opt.param_groups:
                group["lr"] = lr * cur
            b = perm[it * bs:(it + 1) * bs].to(dev)
            model.train_rng.manual_seed(seed * 1_000_003 + step)  # a CPU generator (condition drop, drop path)
            with _amp_ctx(dev, amp):
                logits_BNV = _logits(model, kind, y_N[b], tg, b)
            loss = F.cross_entropy(logits_BNV.float().transpose(1, 2), tg["gt"][b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
            step += 1
            if it == iters - 1:
                curve.append({"ep": e + 1, "loss": loss.item()})
        logger.info("%s epoch %d/%d: loss %.3f (%.0f s)", kind, e + 1, ep, curve[-1]["loss"], time.perf_counter() - t0)
        if val is not None and ((e + 1) % max(1, val_every) == 0 or e + 1 == ep):
            v = val_nll(model, kind, vae, *val)
            val_curve.append({"ep": e + 1, "val_nll": v})
            if best is None or v < best[0]:
                best = (v, e + 1, {k: t.detach().to("cpu", copy=True) for k, t in model.state_dict().items()})
            model.train()
    device_sync(dev)
    wall = time.perf_counter() - t0
    out = {"wall_seconds": wall, "steps": total, "epochs": ep, "batch": bs, "lr": lr, "device": str(dev),
           "amp": amp, "curve": curve}
    if best is not None:
        model.load_state_dict(best[2])
        out.update(selected_epoch=best[1], selected_val_nll=best[0], val_every=val_every, val_curve=val_curve)
    model.eval()
    return out


@torch.no_grad()
def val_nll(model, kind: str, vae, x_NCT: torch.Tensor, y_N: torch.Tensor, bs: int = 32) -> float:
    """Mean negative log-likelihood per token (nats) of validation windows, condition = true class."""
    dev = _device_of(model)
    tg = _targets(model, kind, vae, x_NCT)
    y_N = y_N.to(dev)
    model.eval()
    tot, cnt = 0.0, 0
    for s in range(0, len(x_NCT), bs):
        b = torch.arange(s, min(s + bs, len(x_NCT)), device=dev)
        logits = _logits(model, kind, y_N[b], tg, b)
        tot += float(F.cross_entropy(logits.float().transpose(1, 2), tg["gt"][b], reduction="sum"))
        cnt += tg["gt"][b].numel()
    return tot / cnt


@torch.no_grad()
def sample_windows(model, labels: Sequence[int], uv_scale: float, cfg: float, batch: int, seed: int) -> np.ndarray:
    """Generated windows (N, C, T) in µV for the given classes (sampled on the model's device, returned on the CPU)."""
    dev = _device_of(model)
    out = []
    lab = torch.as_tensor(list(labels), dtype=torch.long)
    for i, s in enumerate(range(0, len(lab), batch)):
        lab_B = lab[s:s + batch].to(dev)
        x = model.autoregressive_infer_cfg(B=len(lab_B), label_B=lab_B, g_seed=seed + i, cfg=cfg)
        out.append((x.float() * uv_scale).cpu().numpy())
    return np.concatenate(out).astype(np.float64)


# ------------------------------------------------------------------------------------------ figures
def plot_psd_and_errors(curves: dict, quality: dict, kinds: list[str], path: str) -> None:
    """Row 1: mean PSD per class (real val in black); row 2: per-band |PSD error| per kind and class."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    classes = list(curves)
    fig, axes = plt.subplots(2, len(classes), figsize=(6 * len(classes), 8), squeeze=False)
    for j, cname in enumerate(classes):
        c = curves[cname]
        ax = axes[0, j]
        plot_psd_curves(ax, c, F_MAX, legend_size=7)
        ax.set_title(f"{cname}: mean PSD, validation windows")
        ax = axes[1, j]
        bands = list(quality[cname][kinds[0]]["psd_error_db"])
        w = 0.8 / len(kinds)
        for i, k in enumerate(kinds):
            ax.bar(np.arange(len(bands)) + i * w, [abs(quality[cname][k]["psd_error_db"][b]) for b in bands], width=w,
                   label=k)
        ax.set_xticks(np.arange(len(bands)) + w * (len(kinds) - 1) / 2, bands)
        ax.set(ylabel="|PSD error| (dB)", title=f"{cname}: per-band PSD error vs real val")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# ------------------------------------------------------------------------------------------ main
def _fmt_row(kind: str, cname: str, q: dict) -> list:
    return [kind, cname, *[round(v, 2) for v in q["psd_error_db"].values()], round(q["psd_error_db_max"], 2),
            round(q["corr_distance"], 3), None if q.get("c2st_auc") is None else round(q["c2st_auc"], 3)]


def main(argv: Sequence[str] | None = None) -> dict:
    p = bench_parser("python -m benchmarks.bench_generation", "Generation quality of VAR, the next-token AR "
                     "baseline (same budget and data), a linear VAR model, phase-randomised windows and a "
                     "real-vs-real floor on held-out validation windows.")
    p.add_argument("--var-ckpt", default=None, help="VAR checkpoint from VAR/train.py (default: the one bench_var "
                   "trained into <results-dir>/raw/var_run when present, else VAR is trained here with the same "
                   "loop as the AR baseline)")
    p.add_argument("--vae-ckpt", default=None, help="tokenizer when no --var-ckpt is given (default: the one "
                   "bench_tokenizer trained into <results-dir>/raw/tokenizer_run; quick: a random one)")
    p.add_argument("--depth", type=int, default=None, help="depth of models trained here (default: the VAR "
                   "checkpoint's, else 4; quick 2)")
    p.add_argument("--ep", type=int, default=None, help="epochs (default: the VAR checkpoint's, else 6; quick 1)")
    p.add_argument("--bs", type=int, default=None, help="batch size (default: the VAR checkpoint's, else 16)")
    p.add_argument("--tlr", type=float, default=None, help="peak learning rate (default: the VAR checkpoint's, "
                   "else 8e-3 * bs / 256)")
    p.add_argument("--cfg", type=float, default=1.5, help="guidance strength for both transformers")
    p.add_argument("--n-per-class", type=int, default=None, help="generated windows per class (default 48; quick 8)")
    p.add_argument("--max-train", type=int, default=None, help="cap on training windows (default all; quick 48)")
    p.add_argument("--folds", type=int, default=None, help="C2ST folds (default 5; quick 3)")
    p.add_argument("--seed", type=int, default=0, help="seed for training order, samples and folds")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where both transformers and the "
                   "tokenizer are trained, evaluated and sampled (metrics stay on the CPU); cuda writes "
                   "generation_cuda.json and *_cuda.png")
    p.add_argument("--amp", default=None, choices=("fp32", "bf16"), help="precision of the training forward passes "
                   "(bf16 = autocast as VAR/train.py --fp16=2; default: the --var-ckpt run's, else fp32)")
    args = p.parse_args(argv)
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        raise UserError("--device=cuda: torch sees no CUDA device on this machine; use --device cpu")
    dev = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    where = torch.cuda.get_device_name(dev) if cuda else "this CPU"
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True  # as VAR/train.py's --tf32=1 default
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(args.seed)
    from models import build_var
    from models.ar_baseline import build_ar_baseline
    raw = os.path.join(args.results_dir, "raw")
    t_start = time.time()
    # ---- tokenizer / VAR checkpoint and its recipe
    var_ckpt_run = None
    shared_var = os.path.join(raw, "var_run", "ar-ckpt-best.pth")  # written by bench_var (runs before this one)
    if cuda and os.path.isfile(os.path.join(raw, "var_run_cuda", "ar-ckpt-best.pth")):
        shared_var = os.path.join(raw, "var_run_cuda", "ar-ckpt-best.pth")  # bench_var --device cuda
    if not args.var_ckpt and not args.vae_ckpt and not args.quick and os.path.isfile(shared_var):
        args.var_ckpt = shared_var
    if args.var_ckpt:
        if not os.path.isfile(args.var_ckpt):
            raise UserError(f"--var-ckpt={args.var_ckpt}: file not found; pass ar-ckpt-best.pth from VAR/train.py")
        import sample
        from utils.checkpoint import load_checkpoint
        var, vae, meta = sample.load_var_checkpoint(args.var_ckpt, device=dev)  # both on ``dev``, eval mode
        tok = meta["tokenizer"]
        state, _ = load_checkpoint(args.var_ckpt, map_location="cpu")
        run_args = state.get("args") or {}
        var_ckpt_run = {"path": args.var_ckpt, "epoch": meta["epoch"], "iter": meta["iter"],
                        **{k: run_args.get(k) for k in ("ep", "bs", "tlr", "depth", "alng", "wp", "data_path",
                                                        "fp16") if k in run_args}}
        var_fp16 = int(run_args.get("fp16") or 0)
        if args.amp is None:
            args.amp = "bf16" if var_fp16 == 2 else "fp32"
            if var_fp16 == 1:
                logger.warning("the VAR run used fp16 autocast + loss scaling (--fp16=1); the AR baseline is "
                               "trained in fp32 here (pass --amp bf16 for bf16 autocast)")
        depth = args.depth or var.depth
        ep = args.ep or int(run_args.get("ep") or meta["epoch"] or 6)
        bs = args.bs or int(run_args.get("bs") or 16)
        tlr = args.tlr or float(run_args.get("tlr") or 8e-3 * bs / 256)
        alng = float(run_args.get("alng") or 1e-3)
        wp = float(run_args.get("wp") or 1.0)
        val_every = int(run_args.get("save_ep") or 1)  # VAR/train.py validates (and keeps the best) this often
        data_root = args.data_root or run_args.get("data_path")
    else:
        from benchmarks.bench_var import ensure_dataset, random_tokenizer
        from vae_checkpoint import load_vae
        data_root = args.data_root or ensure_dataset(os.path.join(raw, "eegmat100_s25"), 2.5)
        path = args.vae_ckpt or os.path.join(raw, "tokenizer_run", "vae-ckpt-best.pth")
        if not os.path.isfile(path):
            if not args.quick and args.vae_ckpt:
                raise UserError(f"--vae-ckpt={path}: file not found")
            if not args.quick:
                raise UserError(f"no tokenizer: {path} not found; pass --vae-ckpt or --var-ckpt (or run "
                                "python -m benchmarks.bench_tokenizer first)")
            path = os.path.join(raw, "generation_tokenizer_quick.pth")
            random_tokenizer(data_root, path)
        vae, tok = load_vae(path, device=dev)  # eval mode, frozen, on ``dev``
        meta = None
        depth = args.depth or (2 if args.quick else 4)
        ep = args.ep or (1 if args.quick else 6)
        bs = args.bs or (8 if args.quick else 16)
        tlr = args.tlr or 8e-3 * bs / 256
        alng, wp, val_every = 1e-3, 1.0, 1
        var = None
    if not data_root or not os.path.isdir(str(data_root)):
        raise DatasetError(f"dataset {data_root!r} not found; pass --data-root DIR")
    args.amp = args.amp or "fp32"
    uv = float(tok["uv_scale"])
    sfreq, bands = float(tok["sfreq"]), tok["bands"]
    rng = np.random.default_rng(args.seed)
    train = load_split(data_root, "train", args.max_train or (48 if args.quick else None), rng)
    val = load_split(data_root, "val", 40 if args.quick else None, rng)
    if train.full_NCT.shape[1:] != (tok["n_channels"], tok["n_times"]):
        raise DatasetError(f"{data_root}: windows are {train.full_NCT.shape[1:]} but the tokenizer expects "
                           f"({tok['n_channels']}, {tok['n_times']}); pass the dataset it was trained on")
    classes = label_names(data_root)
    x_tr = torch.from_numpy(train.full_NCT / uv).float()
    y_tr = torch.from_numpy(np.where(train.labels < 0, 0, train.labels)).long()
    x_va = torch.from_numpy(val.full_NCT / uv).float()
    y_va = torch.from_numpy(np.where(val.labels < 0, 0, val.labels)).long()
    # ---- train
    budget: dict = {}
    if var is None:
        torch.manual_seed(args.seed)
        var = build_var(vae, dev, num_classes=len(classes), depth=depth, init_adaln_gamma=alng)
        budget["VAR"] = train_model(var, "var", vae, x_tr, y_tr, ep, bs, tlr, wp, seed=args.seed, amp=args.amp,
                                    val=(x_va, y_va), val_every=val_every)
    else:
        budget["VAR"] = {"trained_by": "VAR/train.py", **var_ckpt_run}
    torch.manual_seed(args.seed)
    ar = build_ar_baseline(vae, dev, num_classes=len(classes), depth=depth, sequence="pyramid",
                           init_adaln_gamma=alng)
    budget["AR"] = train_model(ar, "ar", vae, x_tr, y_tr, ep, bs, tlr, wp, seed=args.seed, amp=args.amp,
                               val=(x_va, y_va), val_every=val_every)
    budget["AR"]["where"] = where
    if "wall_seconds" in budget["VAR"]:
        budget["VAR"]["where"] = where
    nll = {"VAR": val_nll(var, "var", vae, x_va, y_va), "AR": val_nll(ar, "ar", vae, x_va, y_va)}
    logger.info("validation NLL per token: VAR %.3f, AR %.3f nats", nll["VAR"], nll["AR"])
    # ---- references and classical baselines
    f_max = min(F_MAX, sfreq / 2)
    n_folds = args.folds or (3 if args.quick else 5)
    floors, curves, examples = generation_floors(train, val, classes, f_max, max_order=10 if args.quick else 20,
                                                 n_folds=n_folds, seed=args.seed)
    # ---- generate and judge
    n_pc = args.n_per_class or (8 if args.quick else 48)
    gen_seconds, quality = {}, {}
    for name, model in (("VAR", var), ("AR next-token", ar)):
        labels = [c for c in range(len(classes)) for _ in range(n_pc)]
        device_sync(dev)
        t0 = time.perf_counter()
        g = sample_windows(model, labels, uv, args.cfg, batch=32, seed=args.seed)  # numpy, on the CPU
        gen_seconds[name] = time.perf_counter() - t0
        lab = np.asarray(labels)
        for ci, cname in enumerate(classes):
            sel_v = val.labels == ci
            if cname not in floors["validation"]:
                continue
            _, blocks = _time_blocks(val, sel_v, block_windows=3)
            q = generation_quality(val.full_NCT[sel_v], g[lab == ci], sfreq, bands, f_max, blocks, None, n_folds,
                                   args.seed)
            quality.setdefault(cname, {})[name] = q
            curves[cname][name] = welch_psd(g[lab == ci], sfreq)[1].tolist()
            examples[cname][name] = g[lab == ci][0]
        logger.info("%s: %d windows generated in %.1f s", name, len(labels), gen_seconds[name])
    for cname, rows in floors["validation"].items():
        for kind, q in rows.items():
            quality.setdefault(cname, {})[kind] = q
    kinds = ["VAR", "AR next-token"] + [k for k in next(iter(floors["validation"].values()))]
    sfx = "_cuda" if cuda else ""
    psd_png = figure_path(args.results_dir, f"generation_psd{sfx}.png")
    plot_psd_and_errors(curves, quality, kinds, psd_png)
    ex_png = figure_path(args.results_dir, f"generation_examples{sfx}.png")
    plot_examples(examples, sfreq, ex_png)
    worse = {c: quality[c]["VAR"]["psd_error_db_mean"] <= quality[c]["AR next-token"]["psd_error_db_mean"]
             for c in quality if "VAR" in quality[c]}
    result = {"machine": machine_info(), "quick": args.quick, "data_root": data_root,
              "split_rule": (read_manifest(data_root) or {}).get("split_rule"),
              "tokenizer": {k: tok.get(k) for k in ("path", "v_patch_nums", "vocab_size", "uv_scale")},
              "depth": depth, "cfg": args.cfg, "budget": budget, "val_nll_per_token": nll,
              "generation_seconds": gen_seconds, "n_per_class": n_pc, "quality_vs_val": quality,
              "quality_vs_train_floors": floors["training"], "var_psd_mean_le_ar": worse,
              "prototype_rollout": "not included: the prototype's rollout is conditioned on the real coarse stage "
                                   "and was not trained on eegmat in this project",
              "device": where, "device_type": dev.type, "amp": args.amp, "tf32": cuda,
              "figure_files": {"psd": os.path.basename(psd_png), "examples": os.path.basename(ex_png)},
              "peak_rss_mb": peak_rss_mb(), "total_seconds": time.time() - t_start}
    if cuda:
        result["peak_cuda_mb"] = torch.cuda.max_memory_allocated(dev) / 2 ** 20
    result["report"] = build_report(result)
    save_result(f"{NAME}_cuda" if cuda else NAME, result, args.results_dir)
    return result


def build_report(result: dict) -> dict:
    """The README section of a saved ``generation.json`` (only its numbers are used)."""
    quality, budget, nll = result["quality_vs_val"], result["budget"], result["val_nll_per_token"]
    tok = result["tokenizer"]
    first = next(iter(quality.values()))
    kinds = ["VAR", "AR next-token"] + [k for k in first if k not in ("VAR", "AR next-token")]
    band_cols = list(first["VAR"]["psd_error_db"])
    rows = [_fmt_row(k, c, quality[c][k]) for c in quality for k in kinds if k in quality[c]]
    n_val = sum(q["VAR"]["n_real"] for q in quality.values())

    def budget_txt(b: dict) -> str:
        if "wall_seconds" in b:
            sel = (f"; weights of epoch {b['selected_epoch']} kept (lowest validation NLL, checked every "
                   f"{b['val_every']} epoch(s))" if "selected_epoch" in b else "; last weights (no validation-based "
                   "selection in this run)")
            return (f"{b['epochs']} epoch(s), batch {b['batch']}, {b['steps']} steps, peak lr {b['lr']:.2g}, "
                    f"{b.get('amp', 'fp32')}, trained in {b['wall_seconds'] / 60:.1f} min "
                    f"({b['wall_seconds']:.1f} s) on {b.get('where', 'this CPU')}{sel}")
        prec = "" if b.get("fp16") is None else f", {['fp32', 'fp16', 'bf16'][int(b['fp16'])]}"
        where = "/".join(str(b.get("path", "?")).replace(os.sep, "/").split("/")[-2:])
        return (f"checkpoint of VAR/train.py ({b.get('ep')} epochs, batch {b.get('bs')}{prec}, {where}: the "
                f"epoch with the lowest validation loss)")

    v_ep, a_ep = budget["VAR"].get("epochs", budget["VAR"].get("ep")), budget["AR"].get("epochs")
    v_bs, a_bs = budget["VAR"].get("batch", budget["VAR"].get("bs")), budget["AR"].get("batch")
    same = (v_ep, v_bs) == (a_ep, a_bs)
    v_fp16 = budget["VAR"].get("fp16")
    v_amp = budget["VAR"].get("amp") or (None if v_fp16 is None else ["fp32", "fp16", "bf16"][int(v_fp16)])
    a_amp = budget["AR"].get("amp", "fp32")

    worse = result["var_psd_mean_le_ar"]
    cuda = result.get("device_type") == "cuda"
    figs = result.get("figure_files") or {"psd": "generation_psd.png", "examples": "generation_examples.png"}
    return {
        "title": "Generation quality: VAR vs next-token AR vs classical surrogates"
                 f"{' (GPU run)' if cuda else ''}",
        "text": [*([f"Device: {result.get('device')} (models trained, evaluated and sampled there; metrics on the "
                    f"CPU); training precision {result.get('amp', 'fp32')}."] if cuda else []),
                 f"Data {os.path.basename(os.path.normpath(str(result['data_root'])))} (eegmat, 19 channels, 100 Hz, "
                 f"5-s windows; judged against its {n_val} validation windows, split "
                 f"{result.get('split_rule', 'as its manifest says')}; C2ST folds grouped by recording blocks). Depth "
                 f"{result['depth']}, same tokenizer ({tok.get('v_patch_nums')}, V={tok.get('vocab_size')}), "
                 f"guidance {result['cfg']}, {result['n_per_class']} generated windows per class.",
                 (f"Equal budget and data: VAR {budget_txt(budget['VAR'])}; AR {budget_txt(budget['AR'])}." if same
                  else f"UNEQUAL budget (set by --ep/--bs): VAR {budget_txt(budget['VAR'])}; AR "
                       f"{budget_txt(budget['AR'])}; the comparison favours the model trained longer."),
                 *([f"Training precision differs: VAR {v_amp}, AR {a_amp} (pass --amp to match)."]
                   if v_amp is not None and v_amp != a_amp else []),
                 *([f"The budget ({budget['AR']['steps']} optimizer steps each) is far below what either model "
                    "needs; the rows compare the two generation orders at equal cost, not trained models."]
                   if same and budget["AR"].get("steps", 10 ** 9) < 200 else []),
                 f"Validation NLL per token (same 749-token pyramids): VAR {nll['VAR']:.3f}, AR {nll['AR']:.3f} nats "
                 f"(uniform: {np.log(tok.get('vocab_size') or 2):.3f}).",
                 "Mean per-band PSD error, VAR <= AR: " + ", ".join(f"{c}: {'yes' if v else 'no'}"
                                                                    for c, v in worse.items()) + ".",
                 "The prototype's rollout is not in the table: it continues the real coarse stage of a window "
                 "(conditional), and no eegmat prototype checkpoint exists in this project."],
        "tables": [{"title": "Against real validation windows of the same class (absolute PSD error per band in "
                             "dB; C2ST AUC 0.5 = indistinguishable, 1 = always told apart)",
                    "columns": ["kind", "class", *[f"{b} dB" for b in band_cols], "max dB", "corr dist", "C2ST AUC"],
                    "rows": rows}],
        "figures": [{"title": "PSD of real vs generated per class, per-band PSD error", "path": figs["psd"]},
                    {"title": "Example windows, real vs generated", "path": figs["examples"]}],
    }


def _cli(argv: Sequence[str] | None = None) -> int:
    setup_logging()
    res = main(argv)
    print(json.dumps({"val_nll_per_token": res["val_nll_per_token"], "var_psd_mean_le_ar": res["var_psd_mean_le_ar"]}))
    return 0


if __name__ == "__main__":
    run_cli(_cli, prog="python -m benchmarks.bench_generation")
