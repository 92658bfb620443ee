"""The VAR transformer on eegmat band tokens: per-stage validation loss/accuracy, per-band PSD error of
generated EEG per class, and sampling throughput.

Usage::

    python -m benchmarks.bench_var [--quick] [--data-root DIR] [--vae-ckpt PATH] [--results-dir DIR]
                                   [--split-by subject|time] [--device cpu|cuda] [--fp16 0|1|2]

Pipeline (each step is the project's own command line, run as a subprocess):

1. Dataset: eegmat (rest vs mental arithmetic, 19 channels, 100 Hz, 5-s windows) built once with
   ``python -m utils.data_eeg build`` (stride 2.5 s; validation windows overlap by half too, metrics use
   them all). ``--split-by subject`` (default): Subject05 held out for validation, so the PSD error
   includes how far one unseen subject is from the five training subjects. ``--split-by time``: every
   recording's last 30 % is validation (behind the builder's guard gap), so validation windows come from
   the same subjects and recordings as training, and the error measures the model alone.
2. Tokenizer: ``--vae-ckpt`` (the final band tokenizer); else the one ``bench_tokenizer`` trained into
   ``<results-dir>/raw/tokenizer_run``; else one is trained once with ``VAR/train_vae.py`` into
   ``<results-dir>/raw/var_tokenizer`` (quick mode: a random tokenizer with data-initialised codebooks).
3. ``VAR/train.py`` with a fixed number of epochs (the stated CPU budget is the measured wall time);
   re-running the benchmark resumes the run in ``<results-dir>/raw/var_run`` (``--fresh`` restarts).
4. Generation for every class with ``VAR/sample.py``'s ``generate`` at a few guidance strengths; per
   band PSD error (dB, 1-45 Hz as eegmat is low-passed), channel-correlation distance and C2ST AUC
   against the real validation windows of the same class (``utils.eeg_quality.generation_quality``).
5. Sampling throughput (windows/s on this CPU, cfg on, batch 16) for depth 4, 8, 16 (random weights:
   cost does not depend on training).

Results: ``<results-dir>/var.json``, figures ``var_psd.png`` and ``var_samples.png``; a run with
``--split-by time`` adds ``_time`` to these names, one with ``--device cuda`` adds ``_cuda``.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from typing import Sequence

import numpy as np
import torch

from benchmarks import RESULTS_DIR, bench_parser, figure_path, machine_info, median_time, peak_rss_mb, save_result
from benchmarks.bench_baselines import BENCH_DATASETS, EEGMAT_DIR, eegmat_build_args, split_suffix
from utils.cli import run_cli, setup_logging
from utils.eeg_bands import band_names
from utils.eeg_dataset import EEGWindowDataset, label_names
from utils.errors import DatasetError, UserError
from utils.project_info import REPO_ROOT
from utils.var_path import ensure_var_importable

ensure_var_importable()

logger = logging.getLogger("benchmarks.bench_var")

NAME = "var"
TAKES_SPLIT_BY = True  # run_all --split-by passes its protocol on
F_MAX = 45.0
TARGET_DB = 0.5


def _run(cmd: list[str], what: str, timeout: float | None = None) -> str:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, *cmd], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        if proc.returncode == 2:  # the child's one-line user error (bad flag or file): pass it on as one line
            raise UserError(f"{what}: {tail.split(': error: ', 1)[-1]}")
        raise RuntimeError(f"{what} failed (exit {proc.returncode}): {tail}")
    return proc.stdout


def ensure_dataset(root: str, stride_sec: float, split_by: str = "subject") -> str:
    """Build the eegmat dataset (5-s windows, ``stride_sec`` hop, split by subject or time) into ``root``
    unless present."""
    if os.path.exists(os.path.join(root, "manifest.json")):
        return root
    if not os.path.isdir(EEGMAT_DIR):
        raise DatasetError(f"{EEGMAT_DIR} not found; pass --data-root DIR (built with python -m utils.data_eeg build)")
    logger.info("building %s (once)", root)
    _run(["-m", "utils.data_eeg", "build", "--inputs", EEGMAT_DIR, "--out", root, *eegmat_build_args(stride_sec, split_by),
          "--progress", "off"],
         "dataset build")
    return root


def random_tokenizer(data_root: str, path: str, V: int = 64, G: int = 2) -> str:
    """A random VQVAE with codebooks initialised from data (quick mode only)."""
    from models import VQVAE
    from utils.checkpoint import save_checkpoint
    from utils.eeg_bands import scale_lengths_for_bands
    from vae_checkpoint import TOKENIZER_KEY, tokenizer_info
    ds = EEGWindowDataset(data_root, "train")
    pns = scale_lengths_for_bands(ds.bands, ds.sfreq, ds.n_times // 4)
    torch.manual_seed(0)
    vae = VQVAE(in_channels=ds.n_channels, vocab_size=V, z_channels=16, ch=32, ch_mult=(1, 2, 2), num_res_blocks=1,
                v_patch_nums=pns, tokens_per_pos=G, test_mode=True)
    x = torch.stack([ds[i][0][-1] for i in range(0, len(ds), max(1, len(ds) // 128))])
    uv = float(x.std(dim=-1).median())
    with torch.no_grad():
        vae.quantize.init_codebook_from_(vae.encode_BCl(x / uv), generator=torch.Generator().manual_seed(0))
    info = tokenizer_info(vae, sfreq=ds.sfreq, bands=ds.bands.tolist(), ch_names=ds.ch_names, uv_scale=uv,
                          n_extra_coarse=0, tokens_per_nyquist=1.0)
    save_checkpoint(path, {TOKENIZER_KEY: info, "vae_wo_ddp": vae.state_dict(), "epoch": 1, "iter": 0}, config=info)
    return path


def ensure_tokenizer(args, data_root: str, raw: str) -> str:
    if args.vae_ckpt:
        if not os.path.isfile(args.vae_ckpt):
            raise UserError(f"--vae-ckpt={args.vae_ckpt}: file not found")
        return args.vae_ckpt
    shared = os.path.join(raw, "tokenizer_run", "vae-ckpt-best.pth")  # written by bench_tokenizer (runs first)
    if not args.quick and os.path.isfile(shared):
        return shared
    out = os.path.join(raw, "var_tokenizer_quick" if args.quick else "var_tokenizer")
    path = os.path.join(out, "vae-ckpt-best.pth")
    if os.path.isfile(path):
        return path
    os.makedirs(out, exist_ok=True)
    if args.quick:
        return random_tokenizer(data_root, path)
    logger.info("training a tokenizer for the benchmark into %s", out)
    _run(["VAR/train_vae.py", f"--data_path={data_root}", "--ep=30", "--save_ep=5", "--vocab_size=256",
          "--tokens_per_pos=1", "--ch_mult=1_2_2", "--seed=0", f"--local_out_dir_path={out}"],
         "tokenizer training")
    return path


def train_var(args, data_root: str, vae_ckpt: str, out: str) -> tuple[float, list[dict]]:
    """Run (or resume) VAR/train.py; returns (wall seconds of this call, log.txt records)."""
    if args.fresh and os.path.isdir(out):
        shutil.rmtree(out)
    flags = [f"--data_path={data_root}", f"--vae_ckpt={vae_ckpt}", f"--local_out_dir_path={out}",
             f"--depth={args.depth}", f"--bs={args.bs}", f"--ep={args.ep}", f"--tblr={args.tblr}", "--seed=0",
             f"--save_it={args.save_it}", f"--save_ep={args.save_ep}", f"--alng={args.alng}", "--wp=1",
             f"--fp16={args.fp16}"]
    t0 = time.time()
    try:
        _run(["VAR/train.py", *flags], "VAR training")
    except UserError as err:
        if "choose a new --local_out_dir_path" in str(err):  # the saved run belongs to other settings or a tokenizer
            raise UserError(f"{err} (for this benchmark: add --fresh to retrain its VAR in {out})") from None
        raise
    sec = time.time() - t0
    lines = open(os.path.join(out, "log.txt")).read().splitlines()[1:]
    return sec, [json.loads(ln) for ln in lines if ln.strip()]


def _tokenizer_name(path: str) -> str:
    """The tokenizer's run folder (e.g. ``tokenizer_run``), or its file name where the folder is hidden/temporary."""
    folder = os.path.basename(os.path.dirname(os.path.abspath(path)))
    return os.path.basename(path) if not folder or folder.startswith((".", "tmp")) else folder


def load_val(data_root: str, split: str = "val", limit: int | None = None) -> tuple[np.ndarray, np.ndarray, EEGWindowDataset]:
    """Full-band windows (N, C, T) in µV as float64, labels (unlabelled -> 0) and the dataset of one split."""
    ds = EEGWindowDataset(data_root, split, limit=limit)
    x = np.stack([ds.window(i).stages_KCT[-1] for i in range(len(ds))]).astype(np.float64)
    return x, np.where(ds.labels < 0, 0, ds.labels), ds


def throughput(vae_ckpt: str, depths: Sequence[int], batch: int, repeats: int) -> dict:
    from models import build_var
    from vae_checkpoint import load_vae
    vae, _ = load_vae(vae_ckpt)
    res = {}
    for d in depths:
        torch.manual_seed(0)
        var = build_var(vae, "cpu", num_classes=2, depth=d).eval()
        labels = torch.arange(batch) % 2
        sec = median_time(lambda: var.autoregressive_infer_cfg(B=batch, label_B=labels, g_seed=0, cfg=1.5),
                          repeats=repeats, warmup=1)
        res[str(d)] = {"windows_per_s": batch / sec, "seconds_per_batch": sec, "batch": batch,
                       "params_M": sum(p.numel() for p in var.parameters()) / 1e6}
        logger.info("depth %d: %.2f windows/s (batch %d, %.2f s)", d, batch / sec, batch, sec)
        del var
    return res


def plot_psd(path: str, gen: dict, real_NCT: np.ndarray, real_lab: np.ndarray, sfreq: float, class_names, quality):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.signal import welch
    classes = sorted(set(int(c) for c in real_lab))
    fig, axes = plt.subplots(2, len(classes), figsize=(5.5 * len(classes), 7), squeeze=False)
    for j, c in enumerate(classes):
        ax = axes[0, j]
        f, p = welch(real_NCT[real_lab == c], fs=sfreq, nperseg=int(2 * sfreq), axis=-1)
        ax.semilogy(f, p.mean(axis=(0, 1)), "k", lw=2, label="real val")
        for cfg, g in gen.items():
            sel = g["labels"] == c
            f, p = welch(g["signal"][sel], fs=sfreq, nperseg=int(2 * sfreq), axis=-1)
            ax.semilogy(f, p.mean(axis=(0, 1)), lw=1, label=f"VAR cfg={cfg}")
        ax.set_xlim(0, sfreq / 2)
        ax.axvline(F_MAX, color="grey", ls=":")
        ax.set_title(f"{class_names[c]}: mean PSD (µV²/Hz)")
        ax.set_xlabel("Hz")
        ax.legend(fontsize=8)
        ax = axes[1, j]
        names = list(next(iter(quality.values()))[class_names[c]]["psd_error_db"].keys())
        w = 0.8 / max(len(quality), 1)
        for i, (cfg, q) in enumerate(quality.items()):
            errs = [q[class_names[c]]["psd_error_db"][n] for n in names]
            ax.bar(np.arange(len(names)) + i * w, errs, width=w, label=f"VAR cfg={cfg}")
        ax.axhline(TARGET_DB, color="r", ls="--", label=f"target {TARGET_DB} dB")
        ax.set_xticks(np.arange(len(names)) + w * (len(quality) - 1) / 2, names)
        ax.set_ylabel("|PSD error| (dB)")
        ax.set_title(f"{class_names[c]}: per-band PSD error vs real val")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> dict:
    p = bench_parser("python -m benchmarks.bench_var", "VAR on eegmat band tokens: per-stage validation metrics, "
                     "per-band PSD error of generated EEG per class, sampling throughput.")
    p.add_argument("--vae-ckpt", default=None, help="tokenizer checkpoint (default: trained once by this benchmark)")
    p.add_argument("--depth", type=int, default=None, help="VAR depth (default 4; quick 2)")
    p.add_argument("--ep", type=int, default=None, help="epochs (default 10; quick 2)")
    p.add_argument("--bs", type=int, default=16, help="global batch size")
    p.add_argument("--tblr", type=float, default=8e-3, help="base lr per 256 windows")
    p.add_argument("--alng", type=float, default=1e-3, help="AdaLN gate init (README recipes use 1e-3 for small depths)")
    p.add_argument("--cfgs", default=None, help="comma-separated guidance strengths (default 0,1.5,3; quick 1.5)")
    p.add_argument("--throughput-depths", default=None, help="comma-separated depths (default 4,8,16; quick 2,4)")
    p.add_argument("--fresh", action="store_true", help="discard a previous benchmark training run")
    p.add_argument("--split-by", default="subject", choices=tuple(BENCH_DATASETS),
                   help="validation = Subject05 (subject) or the last 30%% of every recording (time)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where VAR trains and samples")
    p.add_argument("--fp16", type=int, default=0, choices=(0, 1, 2), help="VAR/train.py --fp16 (2 = bf16)")
    p.add_argument("--save-ep", type=int, default=1, help="VAR/train.py --save_ep (validation + checkpoint)")
    p.add_argument("--save-it", type=int, default=20, help="VAR/train.py --save_it (mid-epoch checkpoints; 0 = off)")
    p.add_argument("--n-per-class", type=int, default=None, help="generated windows per class (default 64; quick 16)")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device=cuda: torch sees no CUDA device on this machine; use --device cpu")
    args.depth = args.depth or (2 if args.quick else 4)
    args.ep = args.ep or (2 if args.quick else 10)
    cfgs = [float(c) for c in (args.cfgs or ("1.5" if args.quick else "0,1.5,3")).split(",")]
    tp_arg = args.throughput_depths if args.throughput_depths is not None else ("2,4" if args.quick else "4,8,16")
    tp_depths = [int(d) for d in tp_arg.split(",") if d.strip()]  # '' = skip the throughput measurement
    suffix = split_suffix(args.split_by) + ("_cuda" if args.device == "cuda" else "")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    raw = os.path.join(args.results_dir, "raw")
    data_root = args.data_root or ensure_dataset(
        os.path.join(raw, "eegmat100_t25" if args.split_by == "time" else "eegmat100_s25"), 2.5, args.split_by)
    vae_ckpt = ensure_tokenizer(args, data_root, raw)
    run_dir = os.path.join(raw, ("var_run_quick" if args.quick else "var_run") + suffix)
    where = torch.cuda.get_device_name(0) if args.device == "cuda" else "this CPU"
    t_start = time.time()
    train_sec, log = train_var(args, data_root, vae_ckpt, run_dir)
    val_epochs = [d for d in log if "vL_mean" in d]
    last = val_epochs[-1]
    import sample
    var, vae, meta = sample.load_var_checkpoint(os.path.join(run_dir, "ar-ckpt-best.pth"), device=args.device)
    tok = meta["tokenizer"]
    sfreq, bands = float(tok["sfreq"]), tok["bands"]
    names = band_names(bands)
    x_val, lab_val, ds_val = load_val(data_root)
    class_names = meta["class_names"]
    from utils.eeg_quality import generation_quality
    x_tr, lab_tr, _ = load_val(data_root, "train")
    # references: how far the real training subjects are from the held-out subject (what a perfect model of
    # the training data would score against val), per class
    reference = {cname: generation_quality(x_val[lab_val == c], x_tr[lab_tr == c], sfreq, bands=bands, f_max=F_MAX,
                                           n_folds=3 if args.quick else 5) for c, cname in enumerate(class_names)}
    gen, quality, quality_train = {}, {}, {}
    n_per_class = args.n_per_class or (16 if args.quick else 64)
    t_gen = time.time()
    for cfg in cfgs:
        labels = [c for c in range(len(class_names)) for _ in range(n_per_class)]
        g = sample.generate(var, vae, meta, labels, cfg=cfg, seed=0, batch=32, stages=False)
        gen[cfg] = g
        quality[cfg], quality_train[cfg] = {}, {}
        for c, cname in enumerate(class_names):
            g_c = g["signal"][g["labels"] == c].astype(np.float64)
            quality[cfg][cname] = generation_quality(x_val[lab_val == c], g_c, sfreq, bands=bands, f_max=F_MAX,
                                                     n_folds=3 if args.quick else 5)
            quality_train[cfg][cname] = generation_quality(x_tr[lab_tr == c], g_c, sfreq, bands=bands, f_max=F_MAX,
                                                           n_folds=3 if args.quick else 5)
    gen_sec = time.time() - t_gen
    best_cfg = min(cfgs, key=lambda c: max(quality[c][n]["psd_error_db_max"] for n in class_names))
    tp = throughput(vae_ckpt, tp_depths, batch=4 if args.quick else 16, repeats=2 if args.quick else 3)
    os.makedirs(args.results_dir, exist_ok=True)
    psd_png = figure_path(args.results_dir, f"var_psd{suffix}.png")
    plot_psd(psd_png, gen, x_val, lab_val, sfreq, class_names, quality)
    samples_png = figure_path(args.results_dir, f"var_samples{suffix}.png")
    sel = {k: v for k, v in gen[best_cfg].items()}
    sample.plot_samples(samples_png, sel, x_val.astype(np.float32), lab_val, meta)
    stage_rows = [[n, last.get(f"vL_{n}"), last.get(f"vacc_{n}")] for n in
                  [f"c{i}" for i in range(int(tok.get("n_extra_coarse", 0)))] + names]
    psd_rows = []
    for cfg in cfgs:
        for cname in class_names:
            q = quality[cfg][cname]
            psd_rows.append([cfg, cname, *[round(q["psd_error_db"].get(n, float("nan")), 3) for n in q["psd_error_db"]],
                             round(q["psd_error_db_max"], 3), round(q["corr_distance"], 3),
                             None if q["c2st_auc"] is None else round(q["c2st_auc"], 3)])
    for cname in class_names:
        q = reference[cname]
        psd_rows.append(["real train windows", cname, *[round(v, 3) for v in q["psd_error_db"].values()],
                         round(q["psd_error_db_max"], 3), round(q["corr_distance"], 3),
                         None if q["c2st_auc"] is None else round(q["c2st_auc"], 3)])
    train_rows = []
    for cfg in cfgs:
        for cname in class_names:
            q = quality_train[cfg][cname]
            train_rows.append([cfg, cname, *[round(v, 3) for v in q["psd_error_db"].values()],
                               round(q["psd_error_db_max"], 3), round(q["corr_distance"], 3),
                               None if q["c2st_auc"] is None else round(q["c2st_auc"], 3)])
    band_cols = list(next(iter(quality[cfgs[0]].values()))["psd_error_db"].keys())
    met = all(quality[best_cfg][n]["psd_error_db_max"] <= TARGET_DB for n in class_names)
    result = {
        "machine": machine_info(), "quick": args.quick, "data_root": data_root, "vae_ckpt": vae_ckpt,
        "tokenizer": {k: tok[k] for k in ("v_patch_nums", "tokens_per_pos", "vocab_size", "uv_scale", "n_times")},
        "train": {"depth": args.depth, "ep": args.ep, "bs": args.bs, "tblr": args.tblr, "alng": args.alng,
                  "wall_seconds_this_call": train_sec, "cpu_threads": torch.get_num_threads(),
                  "val_curve": [{"ep": d["ep"], "vL_mean": d["vL_mean"], "vacc_mean": d["vacc_mean"]} for d in val_epochs]},
        "val_last": {k: v for k, v in last.items() if k.startswith("v")},
        "generation": {str(c): quality[c] for c in cfgs}, "generation_vs_train": {str(c): quality_train[c] for c in cfgs},
        "reference_train_subjects_vs_val": reference, "best_cfg": best_cfg, "n_per_class": n_per_class,
        "generation_seconds": gen_sec, "target_psd_db": TARGET_DB, "target_met": met,
        "sampling_throughput_cpu": tp, "device": where, "split_by": args.split_by, "fp16": args.fp16,
        "peak_rss_mb": peak_rss_mb(), "total_seconds": time.time() - t_start,
    }
    split_text = ("validation = the last 30% of every recording of all six subjects (time split)"
                  if args.split_by == "time" else "validation = Subject05, unseen in training (subject split)")
    result["report"] = {
        "title": f"VAR transformer on eegmat band tokens, {'time' if args.split_by == 'time' else 'subject'} split"
                 f"{', trained on ' + where if args.device == 'cuda' else ''}",
        "text": [f"VAR depth {args.depth}, {args.ep} epochs, batch {args.bs}, "
                 f"{['fp32', 'fp16', 'bf16'][args.fp16]}, trained in {train_sec / 60:.1f} min on {where} (this "
                 f"call); {split_text}; tokenizer {_tokenizer_name(vae_ckpt)} "
                 f"(scales {tok['v_patch_nums']}, G={tok['tokens_per_pos']}, V={tok['vocab_size']}).",
                 f"Per-band PSD error of generated vs real validation windows (1-{F_MAX:g} Hz), best guidance "
                 f"cfg={best_cfg}: target <= {TARGET_DB} dB in every band {'met' if met else 'NOT met'}."],
        "tables": [
            {"title": "Validation cross-entropy (nats/token) and top-1 accuracy (%) per scale, last epoch",
             "columns": ["scale", "val loss", "val acc %"], "rows": stage_rows},
            {"title": "Generated vs real validation EEG per class; last rows: real training windows vs the same "
                      "validation windows",
             "columns": ["cfg", "class", *[f"{b} dB" for b in band_cols], "max dB", "corr dist", "C2ST AUC"],
             "rows": psd_rows},
            {"title": "Generated EEG vs real TRAINING windows of the same class (in-distribution reference)",
             "columns": ["cfg", "class", *[f"{b} dB" for b in band_cols], "max dB", "corr dist", "C2ST AUC"],
             "rows": train_rows},
            {"title": "Sampling throughput on this CPU (cfg on, random weights)",
             "columns": ["depth", "params (M)", "windows/s"],
             "rows": [[d, round(v["params_M"], 1), round(v["windows_per_s"], 2)] for d, v in tp.items()]}],
        "figures": [{"title": "VAR: PSD per class and per-band PSD error", "path": os.path.basename(psd_png)},
                    {"title": "VAR samples beside real validation windows", "path": os.path.basename(samples_png)}],
    }
    if not tp:
        result["report"]["tables"].pop()  # no throughput measured (--throughput-depths '')
    save_result(NAME + suffix, result, args.results_dir)
    return result


def _cli(argv: Sequence[str] | None = None) -> int:
    setup_logging()
    res = main(argv)
    print(json.dumps({k: res[k] for k in ("val_last", "best_cfg", "target_met", "sampling_throughput_cpu")}, default=str))
    return 0


if __name__ == "__main__":
    run_cli(_cli, prog="python -m benchmarks.bench_var")
