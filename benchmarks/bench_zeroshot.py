"""Zero-shot completion with the trained tokenizer + VAR against classical baselines.

Usage::

    python -m benchmarks.bench_zeroshot [--quick] [--ckpt AR_CKPT] [--data-root DIR] [--results-dir DIR]
                                        [--device cpu|cuda]

On the validation windows of the dataset (``--data-root``) it measures, for the VAR point estimate (mean of S draws)
and for the baselines:

- **gap filling** (gaps of 0.1, 0.25, 0.5, 1 s at a random place per window): SNR (dB) and MSE (µV²) on
  the masked samples; baselines zeros, linear interpolation, AR forward, AR forward-backward (a linear
  VAR model fitted by least squares on training windows);
- **forecasting** (the last 0.1, 0.25, 0.5 s): the same, baselines zeros and AR forward;
- **band completion** (stages 1..k observed, k = 1..4): SNR of the completed bands (the part of the
  full signal above stage k), and the per-band PSD error (dB) of the completed bands for single draws and
  for the mean; baseline zeros (adds nothing: the completed bands have none of their power). The completed
  bands get the band gain of the null class (``complete.py``'s default, when the checkpoint stores one); the
  same draws as plain decodes are reported beside (``--no-gains``: plain decodes only), and the same error of the
  real training windows (the subject floor: how far the training subjects' power in those bands is from the
  held-out windows'). With a VAR that has power levels, the same completions are also drawn with each window's own
  class and its level estimated from the observed stage (``complete.py --class_label=own``).

Targets: gap filling and forecasting beat the best baseline's SNR at every setting up to 0.5 s; band
completion keeps the PSD error of the completed bands <= 1 dB. Writes ``<results-dir>/zeroshot.json``
and ``zeroshot.png``.

``--device cuda`` runs the VAR checkpoint and its completions on the GPU (the baselines and metrics stay on
the CPU) and writes ``zeroshot_cuda.json`` and ``zeroshot_cuda.png`` instead (the CPU results are kept); its
default checkpoint is ``var_run[_quick]_cuda`` (bench_var --device cuda) when present.

``--split-by time`` (issue 13's second protocol) completes windows of the last 30 % of every recording of all 26
subjects with ``bench_samples --split-by time``'s VAR (``raw/samples_var_new_time``) and writes ``zeroshot_time.json``
and ``zeroshot_time.png``.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Sequence

import numpy as np
import torch

from benchmarks import bench_parser, figure_path, machine_info, peak_rss_mb, save_result
from benchmarks.bench_baselines import (DEFAULT_DATA_ROOT, add_split_flag, default_var_run, ensure_bench_dataset,
                                        ensure_default_dataset, load_split, split_suffix, split_title)
from utils.cli import run_cli, setup_logging
from utils.eeg_bands import band_names
from utils.eeg_dataset import read_manifest
from utils.eeg_baselines import LinearVAR, fill_gap_ar, fill_gap_linear, fill_gap_zeros
from utils.eeg_metrics import band_powers, mse, snr_db, welch_psd
from utils.errors import CheckpointError, UserError
from utils.var_path import ensure_var_importable

logger = logging.getLogger("benchmarks.bench_zeroshot")

NAME = "zeroshot"
TAKES_SPLIT_BY = True  # run_all --split-by passes its protocol on


def _band_err_db(ref_NCT: np.ndarray, est_NCT: np.ndarray, sfreq: float, bands: np.ndarray, names: Sequence[str]) -> dict:
    """|10 log10(P_est / P_ref)| per band (Welch, mean over windows and channels); None where no PSD bin."""
    nper = int(min(ref_NCT.shape[-1], round(2 * sfreq)))
    f, p_ref = welch_psd(ref_NCT, sfreq, nper)
    _, p_est = welch_psd(est_NCT, sfreq, nper)
    out = {}
    for name, (lo, hi) in zip(names, bands):
        sel = (f >= lo) & (f < hi)
        if not sel.any():
            out[name] = None
            continue
        bp_r = float(band_powers(f, p_ref, [(lo, hi)])[0])
        bp_e = float(band_powers(f, p_est, [(lo, hi)])[0])
        out[name] = float(abs(10 * np.log10(max(bp_e, 1e-30) / max(bp_r, 1e-30))))
    return out


def _score(x_NCT: np.ndarray, est_NCT: np.ndarray, mask_NT: np.ndarray) -> dict:
    m = np.broadcast_to(mask_NT[:, None, :], x_NCT.shape)
    return {"snr_db": float(snr_db(x_NCT[m], est_NCT[m])), "mse_uv2": float(mse(x_NCT[m], est_NCT[m]))}


def _segment_NCT(x_NCT: np.ndarray, mask_NT: np.ndarray) -> np.ndarray:
    """The masked samples of each window as (N, C, g) (every window has one run of the same length)."""
    g = int(mask_NT[0].sum())
    return np.stack([x_NCT[i][:, mask_NT[i]] for i in range(len(x_NCT))]).reshape(len(x_NCT), x_NCT.shape[1], g)


def main(argv: Sequence[str] | None = None) -> dict:
    p = bench_parser("bench_zeroshot", "Zero-shot gap filling, forecasting and band completion with VAR vs baselines.")
    p.add_argument("--ckpt", default=None, help="VAR checkpoint ar-ckpt-*.pth (default: the one bench_var trained, "
                   "<results-dir>/raw/var_run[_quick]/ar-ckpt-best.pth)")
    p.add_argument("--n-windows", type=int, default=None, help="validation windows (default 48, quick 8)")
    p.add_argument("--n-samples", type=int, default=None, help="draws per window (default 8, quick 2)")
    p.add_argument("--train-windows", type=int, default=None, help="training windows for the AR fit (default all, quick 60)")
    p.add_argument("--top-k", type=int, default=0, help="VAR sampling top-k (0 = off)")
    p.add_argument("--cfg", type=float, default=0.0, help="classifier-free guidance (0 = off; null class)")
    p.add_argument("--rule", default="overlap", choices=("inside", "overlap"), help="keep rule of the time mask")
    p.add_argument("--prefill", default="ar", choices=("linear", "zeros", "ar"),
                   help="what the masked samples hold when the window is tokenized (ar = the AR forward-backward fill)")
    p.add_argument("--proto-ckpt", default=None, help="prototype checkpoint (best.pt of prototypes.eeg_scale_ar_pipeline "
                   "trained on the same dataset) for the band-completion baseline; skipped when not given")
    p.add_argument("--seed", type=int, default=0, help="seed for gap positions and sampling")
    p.add_argument("--temperature", default=None, help="complete.py --temperature of the draws (default: sample.py's)")
    p.add_argument("--no-gains", action="store_true", help="band completion without the band gain of the class and "
                   "level (complete.py --no_gains); by default the completed bands get it when the checkpoint stores one "
                   "and the plain decodes of the same draws are reported beside")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where VAR completes the windows "
                   "(baselines and metrics stay on the CPU); cuda writes zeroshot_cuda.json and zeroshot_cuda.png")
    add_split_flag(p)
    args = p.parse_args(argv)
    sfx = split_suffix(args.split_by)
    setup_logging(verbose=args.verbose)
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        raise UserError("--device=cuda: torch sees no CUDA device on this machine; use --device cpu")
    dev = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    where = torch.cuda.get_device_name(dev) if cuda else "this CPU"
    torch.set_num_threads(1)
    ensure_var_importable()
    from sample import DEFAULT_TEMPERATURE, load_var_checkpoint, parse_temperature
    from zero_shot import complete_windows

    t0 = time.time()
    n_win = args.n_windows or (8 if args.quick else 48)
    S = args.n_samples or (2 if args.quick else 8)
    n_train = args.train_windows or (60 if args.quick else None)
    run_name, trainer = default_var_run(args.split_by, args.quick)
    ckpt = os.path.join(args.results_dir, "raw", run_name, "ar-ckpt-best.pth")
    if cuda and os.path.exists(os.path.join(args.results_dir, "raw", run_name + "_cuda", "ar-ckpt-best.pth")):
        ckpt = os.path.join(args.results_dir, "raw", run_name + "_cuda", "ar-ckpt-best.pth")  # bench_var --device cuda
    ckpt = args.ckpt or ckpt
    if not os.path.exists(ckpt):
        raise CheckpointError(f"--ckpt={ckpt}: not found; run `python -m benchmarks.{trainer}` first or pass "
                              "--ckpt=ar-ckpt-best.pth")
    if args.data_root:
        root = ensure_default_dataset(args.data_root)
    elif sfx:
        root = ensure_bench_dataset(os.path.join(args.results_dir, "raw"), args.split_by)
    else:
        root = ensure_default_dataset(DEFAULT_DATA_ROOT)
    rng = np.random.default_rng(args.seed)
    train = load_split(root, "train", n_train, rng)
    val = load_split(root, "val", n_win, rng)
    var, vae, meta = load_var_checkpoint(ckpt, device=dev)  # VAR and its tokenizer on ``dev``, eval mode
    tok = meta["tokenizer"]
    uv = float(tok["uv_scale"])
    sfreq, x = val.sfreq, val.full_NCT
    n, _, n_t = x.shape
    names = band_names(val.bands)
    fwd = LinearVAR(max_order=20).fit(train.full_NCT)
    bwd = LinearVAR(order=fwd.order).fit(train.full_NCT[..., ::-1])
    logger.info("AR order %d fitted on %d training windows; %d val windows, %d draws", fwd.order, len(train.full_NCT), n, S)
    temps = parse_temperature(args.temperature or str(DEFAULT_TEMPERATURE), len(var.patch_nums))
    common = dict(n_samples=S, seed=args.seed, label_B=-1, cfg=args.cfg, top_k=args.top_k, rule=args.rule,
                  temperature=temps)

    def var_fill(mask_NT: np.ndarray, prefill_NCT: np.ndarray) -> np.ndarray:
        # complete_windows moves the windows and the mask to VAR's device; the result comes back to the CPU
        out = complete_windows(var, vae, torch.as_tensor(prefill_NCT, dtype=torch.float32, device=dev), uv,
                               mask_BT=torch.as_tensor(mask_NT, device=dev),
                               prefill="zeros" if args.prefill == "zeros" else "given", **common)
        return out["mean"].cpu().double().numpy()

    out_name = NAME + sfx + ("_cuda" if cuda else "")
    res: dict = {"name": out_name, "split_by": args.split_by, "quick": bool(args.quick),
                 "ckpt": os.path.abspath(meta["path"]),
                 "device": where, "device_type": dev.type, "data_root": os.path.abspath(root),
                 "split_rule": (read_manifest(root) or {}).get("split_rule"),
                 "settings": {"n_windows": n, "n_samples": S, "top_k": args.top_k, "cfg": args.cfg, "rule": args.rule,
                              "temperature": temps,
                              "prefill": args.prefill, "ar_order": fwd.order, "train_windows": len(train.full_NCT),
                              "class": "null (unconditional)"},
                 "gaps": {}, "forecast": {}, "band_completion": {}}
    gaps = [0.1, 0.25, 0.5] if args.quick else [0.1, 0.25, 0.5, 1.0]
    horizons = [0.1, 0.25, 0.5]
    margin = fwd.order + 1
    for g_sec in gaps:
        g = int(round(g_sec * sfreq))
        starts = rng.integers(margin, n_t - g - margin + 1, size=n)
        mask = np.zeros((n, n_t), bool)
        for i, s in enumerate(starts):
            mask[i, s:s + g] = True
        ar_fb = fill_gap_ar(x, mask, fwd, bwd)
        pre = ar_fb if args.prefill == "ar" else fill_gap_linear(x, mask)
        est = {"VAR (mean of draws)": var_fill(mask, pre), "zeros": fill_gap_zeros(x, mask),
               "linear interpolation": fill_gap_linear(x, mask), "AR forward": fill_gap_ar(x, mask, fwd),
               "AR forward-backward": ar_fb}
        seg_true = _segment_NCT(x, mask)
        res["gaps"][f"{g_sec:g}"] = {k: {**_score(x, v, mask), "psd_error_db": _band_err_db(seg_true, _segment_NCT(v, mask), sfreq, val.bands, names)}
                                     for k, v in est.items()}
        logger.info("gap %.2f s: %s", g_sec, {k: round(v["snr_db"], 2) for k, v in res["gaps"][f"{g_sec:g}"].items()})
    for h_sec in horizons:
        h = int(round(h_sec * sfreq))
        mask = np.zeros((n, n_t), bool)
        mask[:, n_t - h:] = True
        ar_f = fill_gap_ar(x, mask, fwd)
        pre = ar_f if args.prefill == "ar" else fill_gap_linear(x, mask)
        est = {"VAR (mean of draws)": var_fill(mask, pre), "zeros": fill_gap_zeros(x, mask), "AR forward": ar_f}
        seg_true = _segment_NCT(x, mask)
        res["forecast"][f"{h_sec:g}"] = {k: {**_score(x, v, mask), "psd_error_db": _band_err_db(seg_true, _segment_NCT(v, mask), sfreq, val.bands, names)}
                                         for k, v in est.items()}
        logger.info("horizon %.2f s: %s", h_sec, {k: round(v["snr_db"], 2) for k, v in res["forecast"][f"{h_sec:g}"].items()})
    n_extra = int(tok.get("n_extra_coarse", 0))
    K = val.stages_NKCT.shape[1]
    proto = _load_proto(args.proto_ckpt) if args.proto_ckpt else None
    if proto is not None:
        res["settings"]["proto_ckpt"] = os.path.abspath(args.proto_ckpt)
    from vae_checkpoint import band_gain
    gain = band_gain(tok) if meta.get("level_gain_db") is not None and not args.no_gains else None
    gain_kw = dict(gain=gain, gain_table=np.asarray(meta["level_gain_db"])) if gain is not None else {}
    res["settings"]["band_completion_gains"] = gain is not None
    # the subject floor: how far the training subjects' own power in each band is from the held-out windows'
    floor_db = _band_err_db(x, train.full_NCT, sfreq, val.bands, names)
    for k in range(1, K):
        obs = val.stages_NKCT[:, k - 1]
        bc = dict(n_keep_scales=n_extra + k, n_samples=S, seed=args.seed, label_B=-1, cfg=args.cfg, top_k=args.top_k,
                  temperature=temps)
        obs_t = torch.as_tensor(obs, dtype=torch.float32, device=dev)
        out = complete_windows(var, vae, obs_t, uv, **bc, **gain_kw)
        draws = out["draws"].cpu().double().numpy()
        mean = draws.mean(0)
        done = names[k:]
        hi_bands = val.bands[k:]
        r_true = x - obs
        row = {"observed_up_to": names[k - 1]}
        cands = [("VAR (mean of draws)", mean), ("zeros", obs)]
        if proto is not None:
            cands.append(("prototype (deterministic)", _proto_complete(*proto, obs, k)))
        for label, est in cands:
            row[label] = {"snr_db_completed_part": float(snr_db(r_true, est - obs)),
                          "mse_uv2_completed_part": float(mse(r_true, est - obs)),
                          "psd_error_db": _band_err_db(x, est, sfreq, hi_bands, done)}

        def single_draws(draws_SNCT: np.ndarray) -> dict:
            """PSD error of the completed bands over every draw, and the draws' mean SNR on the completed part."""
            return {"psd_error_db": _band_err_db(x, draws_SNCT.reshape(-1, *x.shape[1:]), sfreq, hi_bands, done),
                    "snr_db_completed_part": float(np.mean([snr_db(r_true, d - obs) for d in draws_SNCT]))}
        row["VAR (single draws)"] = single_draws(draws)
        if gain is not None:  # the same draws as plain decodes: what the band gain adds
            row["VAR (single draws, plain decode)"] = single_draws(
                complete_windows(var, vae, obs_t, uv, **bc)["draws"].cpu().double().numpy())
        if var.num_levels > 0 and meta.get("levels") and (val.labels >= 0).all():
            # each window's own class and its level estimated from the observed stage (complete.py --class_label=own)
            from utils.eeg_levels import LevelClusters, observed_levels
            lvl = observed_levels(LevelClusters.from_dict(meta["levels"]), obs, val.labels, sfreq, n_bands_observed=k)
            row["VAR (single draws, own class and level)"] = single_draws(complete_windows(
                var, vae, obs_t, uv, **{**bc, "label_B": torch.as_tensor(val.labels, device=dev)},
                level_B=torch.as_tensor(lvl, device=dev), **gain_kw)["draws"].cpu().double().numpy())
        row["real training windows (floor)"] = {"psd_error_db": {b: floor_db[b] for b in done}}
        res["band_completion"][str(k)] = row
        logger.info("band completion k=%d: draws PSD err %s", k, row["VAR (single draws)"]["psd_error_db"])

    # targets
    def best_base(d: dict) -> tuple[str, float]:
        b = max((m for m in d if not m.startswith("VAR")), key=lambda m: d[m]["snr_db"])
        return b, d[b]["snr_db"]
    tg = {}
    for kind in ("gaps", "forecast"):
        for s, d in res[kind].items():
            if float(s) <= 0.5:
                b, v = best_base(d)
                tg[f"{kind} {s} s"] = {"var_snr_db": d["VAR (mean of draws)"]["snr_db"], "best_baseline": b,
                                       "best_baseline_snr_db": v, "met": d["VAR (mean of draws)"]["snr_db"] > v}
    for k, row in res["band_completion"].items():
        errs = [e for e in row["VAR (single draws)"]["psd_error_db"].values() if e is not None]
        tg[f"band completion k={k}"] = {"max_psd_error_db_single_draws": max(errs), "met": max(errs) <= 1.0}
    res["targets"] = tg
    res["all_targets_met"] = all(v["met"] for v in tg.values())
    fig = figure_path(args.results_dir, f"{out_name}.png")
    _plot(res, fig)
    res["figure_file"] = os.path.basename(fig)
    res["timing_s"] = time.time() - t0
    res["report"] = _report(res)
    res["machine"] = machine_info()
    res["peak_rss_mb"] = peak_rss_mb()
    if cuda:
        res["peak_cuda_mb"] = torch.cuda.max_memory_allocated(dev) / 2 ** 20
    save_result(out_name, res, args.results_dir)
    logger.info("targets: %s", {k: v["met"] for k, v in tg.items()})
    return res


def _load_proto(path: str):
    """The prototype's next-stage model and its µV scale."""
    from prototypes.eeg_scale_ar_model import EEGScaleAutoregressiveModel
    from utils.checkpoint import load_checkpoint
    state, _ = load_checkpoint(path, map_location="cpu")
    if "model_config" not in state or "model" not in state:
        raise CheckpointError(f"--proto-ckpt={path}: not a prototype checkpoint; pass best.pt of "
                              "prototypes.eeg_scale_ar_pipeline")
    model = EEGScaleAutoregressiveModel.from_config(state["model_config"])
    model.load_state_dict(state["model"])
    return model.eval(), float(state["scale_uv"])


@torch.no_grad()
def _proto_complete(model, scale_uv: float, obs_NCT: np.ndarray, k: int) -> np.ndarray:
    """Roll the prototype from observed stage k (1-based) to the full spectrum: stage j -> j+1 for j = k..K-1."""
    x = torch.as_tensor(obs_NCT / scale_uv, dtype=torch.float32)
    out = []
    for i in range(0, len(x), 16):
        h = x[i:i + 16]
        for j in range(k - 1, model.num_stages - 1):
            h = model(h, j)
        out.append(h)
    return torch.cat(out).double().numpy() * scale_uv


def _plot(res: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for ax, kind, xl in ((axes[0], "gaps", "gap (s)"), (axes[1], "forecast", "horizon (s)")):
        settings = list(res[kind])
        methods = list(res[kind][settings[0]])
        for m in methods:
            ax.plot([float(s) for s in settings], [res[kind][s][m]["snr_db"] for s in settings], "o-", label=m)
        ax.set_xlabel(xl)
        ax.set_ylabel("SNR on the masked samples (dB)")
        ax.set_title(kind)
        ax.legend(fontsize=7)
    ax = axes[2]
    ks = list(res["band_completion"])
    for label in ("VAR (single draws)", "VAR (single draws, plain decode)", "VAR (single draws, own class and level)",
                  "VAR (mean of draws)", "real training windows (floor)", "zeros", "prototype (deterministic)"):
        if label not in res["band_completion"][ks[0]]:
            continue
        vals = []
        for k in ks:
            e = [v for v in res["band_completion"][k][label]["psd_error_db"].values() if v is not None]
            vals.append(max(e))
        ax.semilogy([int(k) for k in ks], np.maximum(vals, 1e-3), "o-", label=label)
    ax.axhline(1.0, color="k", lw=0.8, ls="--")
    ax.set_xlabel("observed stages k")
    ax.set_ylabel("max PSD error of completed bands (dB)")
    ax.set_title("band completion")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _report(res: dict) -> dict:
    tables = []
    for kind, title in (("gaps", "Gap filling: SNR (dB) on the masked samples"),
                        ("forecast", "Forecasting: SNR (dB) on the horizon")):
        settings = list(res[kind])
        methods = list(res[kind][settings[0]])
        tables.append({"title": title, "columns": ["span (s)"] + methods,
                       "rows": [[s] + [round(res[kind][s][m]["snr_db"], 2) for m in methods] for s in settings]})
    rows = []
    plain = "VAR (single draws, plain decode)"
    has_plain = any(plain in row for row in res["band_completion"].values())
    floor = "real training windows (floor)"
    own = "VAR (single draws, own class and level)"
    has_own = any(own in row for row in res["band_completion"].values())
    has_floor = all(floor in row for row in res["band_completion"].values())

    def _errs(d: dict, digits: int) -> str:
        return ", ".join(f"{b} {v:.{digits}f}" for b, v in d["psd_error_db"].items() if v is not None)
    for k, row in res["band_completion"].items():
        rows.append([k, row["observed_up_to"],
                     round(row["VAR (single draws)"]["snr_db_completed_part"], 2),
                     round(row["VAR (mean of draws)"]["snr_db_completed_part"], 2),
                     _errs(row["VAR (single draws)"], 2)]
                    + ([_errs(row[plain], 2) if plain in row else ""] if has_plain else [])
                    + ([_errs(row[own], 2) if own in row else ""] if has_own else [])
                    + ([_errs(row[floor], 2)] if floor in row else [])
                    + [_errs(row["zeros"], 1)])
    gained = res["settings"].get("band_completion_gains")
    tables.append({"title": "Band completion: completed bands (above stage k)"
                   + (", with the band gain of the null class" if gained else ""),
                   "columns": ["k", "observed up to", "SNR draw (dB)", "SNR mean (dB)", "PSD err draws (dB)"]
                   + (["PSD err draws, plain decode (dB)"] if has_plain else [])
                   + (["PSD err draws, own class and level (dB)"] if has_own else [])
                   + (["PSD err real training windows (floor, dB)"] if has_floor else []) + ["PSD err zeros (dB)"],
                   "rows": rows})
    s = res["settings"]
    text = [f"VAR checkpoint {os.path.basename(res['ckpt'])}, {s['n_windows']} validation windows, {s['n_samples']} draws, "
            f"null class, cfg {s['cfg']}, top-k {s['top_k']}, temperature "
            f"{'/'.join(f'{t:g}' for t in s.get('temperature', [1.0]))}, keep rule '{s['rule']}', prefill '{s['prefill']}'.",
            "Targets: " + "; ".join(f"{k}: {'met' if v['met'] else 'NOT met'}" for k, v in res["targets"].items())]
    if res.get("data_root"):
        text.insert(1, f"Data {os.path.basename(os.path.normpath(res['data_root']))}, split "
                       f"{res.get('split_rule') or 'as its manifest says'}.")
    cuda = res.get("device_type") == "cuda"
    if cuda:
        text.insert(0, f"Device: {res.get('device')} (VAR completions there; baselines and metrics on the CPU); "
                       f"wall time of the whole benchmark {res.get('timing_s', float('nan')):.1f} s.")
    split = split_title(res.get("split_by", "subject"))
    return {"title": f"Zero-shot completion{split}{' (GPU run)' if cuda else ''}", "text": text, "tables": tables,
            "figures": [{"title": "SNR and band-completion PSD error", "path": res.get("figure_file", "zeroshot.png")}]}


def _cli(argv: Sequence[str] | None = None) -> int:
    main(argv)
    return 0


if __name__ == "__main__":
    run_cli(_cli, prog="python -m benchmarks.bench_zeroshot")
