"""Complete real EEG windows zero-shot with a trained VAR: band completion, gap filling, forecasting.

Usage (from the repository root)::

    python VAR/complete.py --mode=complete_bands --k=2 --ckpt=local_output/ar-ckpt-best.pth \\
        --data_path=DIR --split=val --n=8 --n_samples=8 --out=bands.npz --plot=bands.png
    python VAR/complete.py --mode=fill_gap --gap=1.0:1.5 ...      # same gap in every window
    python VAR/complete.py --mode=fill_gap --gap_file=gaps.json ...  # [[[start, stop], ...], ...] per window
    python VAR/complete.py --mode=forecast --horizon=0.5 ...

Band completion trusts stages 1..k of each window (its ``cumulative_bands[k-1]``), keeps their tokens and
samples the finer scales; the output is the observed stage plus the model's higher bands, which get the band gain
of the window's class and level as samples do (``--no_gains``: plain decodes). Gap filling and
forecasting keep, at every scale, the tokens whose time support is observed (``--rule``) and sample the
rest; observed samples come back unchanged, joined to the completion over ``--fade`` seconds.

The output npz holds ``draws`` (S, N, C, T) float32 µV, ``signal`` (N, C, T) their mean (the point
estimate), ``target`` (N, C, T) the true full-band windows, ``observed`` (N, C, T) what the model saw
(masked samples set to NaN, or the low-passed stage), ``mask`` (N, T) bool (True = completed; all True
for band completion), ``k``, ``labels``, ``sfreq``, ``ch_names``, ``bands``, ``mode``, ``band_gains`` (whether
the completed bands got their band gain) and the settings.

Shape letters: S draws, N windows, K stages, C channels, T samples.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Sequence

import numpy as np
import torch

from utils.cli import ArgumentParser, run_cli, setup_logging
from utils.errors import DatasetError, UserError

logger = logging.getLogger("complete")

MODES = ("complete_bands", "fill_gap", "forecast")


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="complete.py", description="Zero-shot band completion, gap filling and forecasting of "
                       "real EEG windows with a trained VAR checkpoint (outputs in µV).")
    p.add_argument("--mode", required=True, choices=MODES, help="what to complete")
    p.add_argument("--ckpt", required=True, help="VAR checkpoint (ar-ckpt-best.pth / ar-ckpt-last.pth)")
    p.add_argument("--data_path", required=True, help="dataset root holding the windows to complete")
    p.add_argument("--split", default="val", choices=("train", "val"), help="which split's windows")
    p.add_argument("--n", type=int, default=8, help="number of windows (the first N of the split)")
    p.add_argument("--out", required=True, help="output .npz file")
    p.add_argument("--k", type=int, default=None, help="complete_bands: observed stages 1..k (1..K-1)")
    p.add_argument("--gap", default=None, help="fill_gap: START:STOP in seconds (comma-separated spans), every window")
    p.add_argument("--gap_file", default=None, help="fill_gap: JSON list, per window, of [start, stop] spans in seconds")
    p.add_argument("--horizon", type=float, default=None, help="forecast: seconds at the end of the window to predict")
    p.add_argument("--n_samples", type=int, default=8, help="draws per window; their mean is the point estimate")
    p.add_argument("--seed", type=int, default=0, help="draw s uses seed + s")
    p.add_argument("--class_label", default="null", help="'null' (unconditional, upstream's in-painting choice), "
                   "'own' (each window's label) or a class name / index")
    p.add_argument("--no_gains", action="store_true", help="complete_bands: leave the completed bands as plain "
                   "decodes (by default they get the band gain of the window's class and level, as sample.py's samples, "
                   "when the checkpoint stores one)")
    p.add_argument("--level", default="auto", help="for a model trained with --level_clusters: 'auto' (each window's "
                   "power level estimated from what is observed of it; unknown with --class_label=null), 'unknown', "
                   "or a level index 0..L-1")
    p.add_argument("--cfg", type=float, default=0.0, help="classifier-free guidance (0 = off)")
    p.add_argument("--top_k", type=int, default=0, help="sample among the k most likely tokens (0 = off)")
    p.add_argument("--top_p", type=float, default=0.0, help="nucleus sampling mass (0 = off)")
    from sample import add_temperature_flag
    add_temperature_flag(p)
    p.add_argument("--rule", default="overlap", choices=("inside", "overlap"),
                   help="keep a position when all ('inside') or any ('overlap') of its samples are observed")
    p.add_argument("--prefill", default="linear", choices=("linear", "zeros"),
                   help="what masked samples hold when the window is tokenized (never the true values)")
    p.add_argument("--fade", type=float, default=0.05, help="join length in seconds at each gap boundary")
    p.add_argument("--allow_empty", action="store_true", help="fill_gap: accept windows with nothing masked (returned as is)")
    p.add_argument("--allow_full", action="store_true", help="fill_gap: accept windows masked entirely (unconditional samples)")
    p.add_argument("--batch", type=int, default=32, help="windows per forward pass")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--plot", default=None, help="also write a PNG: observed, true and completed signal")
    p.add_argument("--overwrite", action="store_true", help="replace existing --out / --plot files")
    return p


def _label(text: str, class_names: Sequence[str], own_N: np.ndarray) -> torch.Tensor | int:
    t = str(text).strip()
    if t == "null":
        return -1
    if t == "own":
        return torch.as_tensor(np.where(own_N < 0, -1, own_N) % max(1, len(class_names)), dtype=torch.long)
    if t in class_names:
        return list(class_names).index(t)
    try:
        idx = int(t)
    except ValueError:
        raise UserError(f"--class_label={t!r}; expected 'null', 'own', one of {list(class_names)} or an index") from None
    if not 0 <= idx < len(class_names):
        raise UserError(f"--class_label={idx}: this model has classes 0..{len(class_names) - 1} ({list(class_names)})")
    return idx


def _level(text: str, var, meta: dict, label: torch.Tensor | int) -> torch.Tensor | int | str | None:
    """Parse ``--level``: None (model without levels), -1 (unknown), an index, or 'auto' (estimated later)."""
    text = str(text).strip().lower()
    if var.num_levels == 0:
        if text not in ("auto", "unknown"):
            raise UserError(f"--level={text}: {meta['path']} was trained without levels (--level_clusters=0); drop --level")
        return None
    null = isinstance(label, int) and label < 0
    if text == "unknown" or (text == "auto" and null):
        return -1
    if text == "auto":
        if not meta.get("levels"):
            raise UserError(f"--level=auto: {meta['path']} holds no level clusters to estimate levels with; pass "
                            "--level=unknown or an index")
        return "auto"
    try:
        idx = int(text)
    except ValueError:
        raise UserError(f"--level={text!r}: expected 'auto', 'unknown' or an index 0..{var.num_levels - 1}") from None
    if not 0 <= idx < var.num_levels:
        raise UserError(f"--level={idx}: {meta['path']} has levels 0..{var.num_levels - 1}")
    if null:
        raise UserError(f"--level={idx} with --class_label=null: a level needs a class (training drops both together); "
                        "pass --class_label=own or a class name")
    return idx


def _masks(args, n: int, sfreq: float, n_times: int) -> np.ndarray:
    from zero_shot import check_time_mask, forecast_mask, parse_spans, spans_to_mask
    if args.mode == "forecast":
        if args.horizon is None:
            raise UserError("--mode=forecast needs --horizon=SECONDS (e.g. --horizon=0.5)")
        return np.broadcast_to(forecast_mask(args.horizon, sfreq, n_times), (n, n_times)).copy()
    if (args.gap is None) == (args.gap_file is None):
        raise UserError("--mode=fill_gap needs exactly one of --gap=START:STOP (every window) and --gap_file=FILE.json")
    if args.gap is not None:
        m = np.broadcast_to(spans_to_mask(parse_spans(args.gap), sfreq, n_times), (n, n_times)).copy()
    else:
        try:
            with open(args.gap_file, encoding="utf-8") as fh:
                per_window = json.load(fh)
        except (OSError, ValueError) as e:
            raise UserError(f"--gap_file={args.gap_file}: cannot read JSON ({e.__class__.__name__}); expected a list, per "
                            "window, of [start, stop] spans in seconds") from None
        if not isinstance(per_window, list) or len(per_window) != n:
            raise UserError(f"--gap_file={args.gap_file}: expected a list of {n} entries (one per window, --n={n}); got "
                            f"{len(per_window) if isinstance(per_window, list) else type(per_window).__name__}")
        rows = []
        for i, spans in enumerate(per_window):
            try:
                sp = [(float(a), float(b)) for a, b in spans]
            except (TypeError, ValueError):
                raise UserError(f"--gap_file={args.gap_file}: entry {i} is {spans!r}; expected [[start, stop], ...] in s") from None
            bad = [s for s in sp if not s[1] > s[0]]
            if bad:
                raise UserError(f"--gap_file={args.gap_file}: entry {i} has empty or reversed span {bad[0]}")
            rows.append(spans_to_mask(sp, sfreq, n_times, where=f"--gap_file entry {i}"))
        m = np.stack(rows)
    return check_time_mask(m, allow_empty=args.allow_empty, allow_full=args.allow_full, where="--gap" if args.gap else "--gap_file")


def plot_completion(path: str, target_NCT: np.ndarray, observed_NCT: np.ndarray, signal_NCT: np.ndarray,
                    draws_SNCT: np.ndarray, mask_NT: np.ndarray, sfreq: float, ch_names: Sequence[str], title: str,
                    n_windows: int = 2, n_channels: int = 4) -> None:
    """Observed, true and completed signal (mean and draws) for a few channels, masked span shaded."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nw = min(n_windows, len(target_NCT))
    chans = list(range(min(n_channels, target_NCT.shape[1])))
    T = target_NCT.shape[-1]
    t = np.arange(T) / sfreq
    fig, axes = plt.subplots(1, nw, figsize=(7.5 * nw, 1.3 + 1.3 * len(chans)), squeeze=False)
    spread = 5 * float(np.median(np.std(target_NCT[:nw], axis=-1))) + 1e-6
    for j in range(nw):
        ax = axes[0, j]
        m = mask_NT[j]
        d = np.diff(np.concatenate([[0], m.astype(np.int8), [0]]))
        for a, b in zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1)):
            ax.axvspan(a / sfreq, b / sfreq, color="0.85", zorder=0)
        for i, ch in enumerate(chans):
            off = -i * spread
            for s in range(min(3, len(draws_SNCT))):
                ax.plot(t, draws_SNCT[s, j, ch] + off, color="C2", lw=0.4, alpha=0.5,
                        label="draws" if (i == 0 and s == 0) else None)
            ax.plot(t, target_NCT[j, ch] + off, color="k", lw=0.8, label="true" if i == 0 else None)
            ax.plot(t, observed_NCT[j, ch] + off, color="C0", lw=0.8, label="observed" if i == 0 else None)
            ax.plot(t, signal_NCT[j, ch] + off, color="C3", lw=0.9, ls="--", label="completed (mean)" if i == 0 else None)
        ax.set_yticks([-i * spread for i in range(len(chans))], [ch_names[c] for c in chans], fontsize=7)
        ax.set_xlabel("s")
        ax.set_title(f"window {j} (µV, channels offset by {spread:.0f} µV)", fontsize=8)
        ax.legend(fontsize=7, loc="upper right")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    setup_logging()
    args = build_parser().parse_args(argv)
    from sample import check_sampling_cli, load_var_checkpoint, parse_temperature, resolve_device
    for flag in ("n", "n_samples"):
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag}={getattr(args, flag)}: expected >= 1")
    if args.fade < 0:
        raise UserError(f"--fade={args.fade}: expected >= 0 seconds")
    check_sampling_cli(args)
    unused = {"complete_bands": ("gap", "gap_file", "horizon"), "fill_gap": ("k", "horizon"),
              "forecast": ("k", "gap", "gap_file")}[args.mode]
    for flag in unused:
        if getattr(args, flag) is not None:
            raise UserError(f"--{flag} has no meaning with --mode={args.mode}; drop it")
    if args.no_gains and args.mode != "complete_bands":
        raise UserError(f"--no_gains has no meaning with --mode={args.mode} (only band completion applies band gains); "
                        "drop it")
    if not os.path.isdir(args.data_path):
        raise DatasetError(f"--data_path={args.data_path}: not a folder; pass a dataset root holding {args.split}/")

    from utils.eeg_dataset import EEGWindowDataset
    from vae_checkpoint import check_dataset_matches, stage_scale_indices
    from zero_shot import complete_windows

    device = resolve_device(args.device)
    var, vae, meta = load_var_checkpoint(args.ckpt, device=device)
    tok = meta["tokenizer"]
    ds = EEGWindowDataset(args.data_path, args.split, limit=args.n)
    check_dataset_matches(tok, ds, meta["path"])  # windows whose layout differs from the checkpoint: one line
    if len(ds) < args.n:
        raise UserError(f"--n={args.n}: {args.data_path}/{args.split} has only {len(ds)} windows; lower --n")
    stages_NKCT = np.stack([ds.window(i).stages_KCT for i in range(args.n)]).astype(np.float32)
    labels_N = np.asarray(ds.labels[:args.n])
    K = stages_NKCT.shape[1]
    sfreq, T = float(tok["sfreq"]), stages_NKCT.shape[-1]
    uv = float(tok["uv_scale"])
    target = stages_NKCT[:, -1]
    label = _label(args.class_label, meta["class_names"], labels_N)
    level = _level(args.level, var, meta, label)
    kw = dict(n_samples=args.n_samples, seed=args.seed, cfg=args.cfg, top_k=args.top_k, top_p=args.top_p,
              temperature=parse_temperature(args.temperature, len(var.patch_nums)))
    if args.mode == "complete_bands":
        if args.k is None or not 1 <= args.k <= K - 1:
            raise UserError(f"--k={args.k}: expected the number of observed stages, 1..{K - 1} (the checkpoint has "
                            f"K={K} stages: {[f'{a:g}-{b:g} Hz' for a, b in tok['bands']]})")
        observed = stages_NKCT[:, args.k - 1]
        mask = np.ones((args.n, T), bool)
        n_keep = stage_scale_indices(tok)[args.k - 1] + 1
        from vae_checkpoint import band_gain
        gain = band_gain(tok) if not args.no_gains and meta.get("level_gain_db") is not None else None
        if gain is not None:
            kw.update(gain=gain, gain_table=np.asarray(meta["level_gain_db"]))
    else:
        mask = _masks(args, args.n, sfreq, T)
        observed = np.where(mask[:, None, :], np.nan, target).astype(np.float32)
    if isinstance(level, str):  # 'auto': from the observed part of each window
        from utils.eeg_levels import LevelClusters, observed_levels
        clusters = LevelClusters.from_dict(meta["levels"])
        lab_N = label.cpu().numpy() if isinstance(label, torch.Tensor) else np.full(args.n, label)
        level = torch.as_tensor(observed_levels(clusters, np.nan_to_num(observed), lab_N, sfreq,
                                                mask_NT=None if args.mode == "complete_bands" else mask,
                                                n_bands_observed=args.k if args.mode == "complete_bands" else None))
        logger.info("levels from the observed signal: %s", np.bincount(level.numpy(), minlength=var.num_levels).tolist())
    draws, means = [], []
    for b0 in range(0, args.n, args.batch):
        sl = slice(b0, b0 + args.batch)
        lab = label[sl] if isinstance(label, torch.Tensor) else label
        kw["level_B"] = level[sl] if isinstance(level, torch.Tensor) else level
        if args.mode == "complete_bands":
            out = complete_windows(var, vae, torch.as_tensor(observed[sl]), uv, n_keep_scales=n_keep, label_B=lab, **kw)
        else:
            x_in = np.where(mask[sl, None, :], 0.0, target[sl]).astype(np.float32)  # the truth never reaches the model
            out = complete_windows(var, vae, torch.as_tensor(x_in), uv, mask_BT=torch.as_tensor(mask[sl]), label_B=lab,
                                   rule=args.rule, prefill=args.prefill, fade=int(round(args.fade * sfreq)), **kw)
        draws.append(out["draws"].cpu().numpy().astype(np.float32))
        means.append(out["mean"].cpu().numpy().astype(np.float32))
    draws_SNCT = np.concatenate(draws, axis=1)
    signal = np.concatenate(means, axis=0)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out[:-4] + ".tmp.npz"
    np.savez(tmp, draws=draws_SNCT, signal=signal, target=target, observed=observed, mask=mask,
             k=np.int64(args.k or 0), labels=labels_N.astype(np.int64), sfreq=np.float32(sfreq),
             ch_names=np.asarray(tok.get("ch_names") or []), bands=np.asarray(tok["bands"], dtype=np.float32),
             mode=np.asarray(args.mode), n_samples=np.int64(args.n_samples), seed=np.int64(args.seed),
             cfg=np.float32(args.cfg), top_k=np.int64(args.top_k), top_p=np.float32(args.top_p),
             temperature=np.asarray(kw["temperature"], dtype=np.float32),
             rule=np.asarray(args.rule), class_label=np.asarray(args.class_label),
             band_gains=np.bool_("gain" in kw),
             levels=(level.numpy() if isinstance(level, torch.Tensor) else np.full(args.n, -1)).astype(np.int64),
             ckpt=np.asarray(os.path.abspath(meta["path"])))
    os.replace(tmp, args.out)
    from utils.eeg_metrics import snr_db
    m = mask[:, None, :].repeat(target.shape[1], axis=1)
    ref = target - observed if args.mode == "complete_bands" else target
    est = signal - observed if args.mode == "complete_bands" else signal
    snr = float(snr_db(ref[m], est[m]))
    logger.info("wrote %s: draws %s µV, SNR of the mean on the completed part %.2f dB", args.out, draws_SNCT.shape, snr)
    print(json.dumps({"mode": args.mode, "windows": args.n, "draws": args.n_samples, "snr_db_completed": snr}))
    if args.plot:
        ch_names = tok.get("ch_names") or [f"ch{i}" for i in range(target.shape[1])]
        what = {"complete_bands": f"bands above {tok['bands'][args.k - 1][1]:g} Hz completed (k={args.k})"
                if args.k else "", "fill_gap": "gap filled", "forecast": f"last {args.horizon} s forecast"}[args.mode]
        obs_plot = observed
        plot_completion(args.plot, target, obs_plot, signal, draws_SNCT, mask, sfreq, ch_names,
                        f"VAR zero-shot: {what}; {args.n_samples} draws, SNR of the mean {snr:.2f} dB "
                        f"({os.path.basename(meta['path'])})")
        logger.info("wrote %s", args.plot)
    return 0


if __name__ == "__main__":
    run_cli(main, prog="complete.py")
