"""The main job's report: one ``report.html`` (PNGs beside it) and the same headline numbers on the terminal.

Reads what ``scripts/main.sh`` left in its run folder and judges each part of the model against the
reference that says whether it learned anything:

============  ==========================================  ===========================================
part          measured                                    reference
============  ==========================================  ===========================================
prototype     validation MSE of the next-stage model      "adds nothing" (stage k+1 := stage k)
tokenizer     SNR of each decoded stage (val)             transform codec at the same bits per window
VAR           validation NLL per token                    token frequencies alone (unigram), uniform
samples       per-band PSD error, C2ST AUC vs real val    real training windows (real-vs-real floor),
                                                          phase-randomised real windows
zero-shot     SNR inside a filled gap                     straight-line interpolation
============  ==========================================  ===========================================

Run folder layout (as main.sh writes it): ``data/`` (dataset root), ``prototype/metrics.json``,
``prototype/rollout.png``, ``tokenizer/recon_val.npz``, ``tokenizer/log.txt``, ``var/log.txt``,
``token_nll/token_nll.json``, ``samples.npz``, ``gap.npz``, ``timings.json``, ``settings.json``. Missing parts
are reported as missing, not guessed.

Usage::

    python -m utils.main_report RUN_DIR [--data DIR] [--max-windows 400]

Writes ``RUN_DIR/report/report.html``, its PNGs and ``numbers.json``. Shape letters: N windows, K stages,
C channels, T samples.
"""
from __future__ import annotations

import html
import json
import logging
import os
from typing import Any, Sequence

import numpy as np

from .cli import ArgumentParser, run_cli, setup_logging
from .eeg_bands import band_names, stage_names
from .eeg_baselines import fill_gap_linear, phase_randomize
from .eeg_c2st import auc_spread, c2st_auc, overlap_groups
from .eeg_codec import stage_codec_snr
from .eeg_dataset import EEGWindowDataset
from .eeg_metrics import band_power_spread, psd_band_error_db, snr_db, welch_psd
from .errors import UserError

PROG = "python -m utils.main_report"
logger = logging.getLogger(__name__)
PSD_F_MAX = 45.0  # eegmat is low-passed at 45 Hz by its publishers: judge spectra below it
#: Disjoint sets the samples file is cut into for the C2ST's set-to-set spread (scripts/main.sh draws 5 x 48 a class)
SAMPLE_SETS = 5


def _read_json(path: str) -> Any | None:
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _read_log(path: str) -> list[dict]:
    """The metric lines of a training log.txt (JSON lines after a header line)."""
    if not os.path.exists(path):
        return []
    rows = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if line.startswith("{") and '"ep"' in line:
                rows.append(json.loads(line))
    return rows


def load_split(root: str, split: str, max_windows: int, seed: int = 0,
               with_draws: bool = False) -> tuple[np.ndarray, ...]:
    """Up to ``max_windows`` windows of one split, spread evenly over it: stages (N, K, C, T) µV, labels (N,),
    source ids (N,) (one group per recording, for the C2ST folds). With ``with_draws`` also (N,) C2ST group ids for
    a test that treats the windows as separate draws, the way generated windows are treated
    (``utils.eeg_c2st.overlap_groups``: each window its own group unless it overlaps another of its recording)."""
    ds = EEGWindowDataset(root, split)
    idx = np.unique(np.linspace(0, len(ds) - 1, min(max_windows, len(ds))).round().astype(int))
    wins = [ds.window(int(i)) for i in idx]
    stages = np.stack([w.stages_KCT for w in wins]).astype(np.float64)
    labels = np.where(ds.labels[idx] < 0, 0, ds.labels[idx])
    sources = np.asarray([str(getattr(w.header, "source", "") or w.header.path) for w in wins])
    if not with_draws:
        return stages, labels, sources
    if any(w.header.start is None for w in wins):
        raise UserError(f"{root}: the {split} split's windows carry no start sample, so overlapping windows cannot be "
                        "grouped; rebuild the dataset with python -m utils.data_eeg build")
    return stages, labels, sources, overlap_groups(sources, [int(w.header.start) for w in wins], int(ds.n_times))


# ---------------------------------------------------------------------------------------------- numbers
def prototype_numbers(metrics: dict | None) -> dict | None:
    """Best validation MSE against the "adds nothing" baseline (both in the run's loss units)."""
    if not metrics:
        return None
    best, base = float(metrics["best_val_loss"]), float(metrics["val_loss_add_nothing"])
    return {"best_val_loss": best, "add_nothing": base, "best_epoch": metrics.get("best_epoch"),
            "gain_pct": 100 * (base - best) / base, "beats_baseline": best < base,
            "epochs": [{"epoch": e["epoch"], "val_loss": e["val_loss"], "train_loss": e.get("train_loss")}
                       for e in metrics.get("epochs", [])]}


def tokenizer_numbers(recon: dict | None, train_stages_NKCT: np.ndarray, names_K: Sequence[str]) -> dict | None:
    """Per-stage SNR of the tokenizer's decodes vs a transform codec (PCA fitted on training windows of each
    stage) given the same bits per window after that stage."""
    if recon is None:
        return None
    tgt, rec = recon["target_cumulative"].astype(np.float64), recon["recon_cumulative"].astype(np.float64)
    sfreq = float(recon["sfreq"])
    _, _, C, T = tgt.shape
    bits_K = [float(b) * C * T / sfreq for b in recon["stage_bits_per_second_per_channel"]]
    tok = [float(snr_db(tgt[:, k], rec[:, k])) for k in range(tgt.shape[1])]
    codec = stage_codec_snr(train_stages_NKCT, tgt, sfreq, bits_K)
    return {"stages": list(names_K), "snr_db": tok, "codec_snr_db": [float(v) for v in codec],
            "bits_per_window": bits_K, "beats_codec": bool(np.mean(tok) > np.mean(codec)),
            "stages_beating_codec": int(sum(t > c for t, c in zip(tok, codec)))}


def var_numbers(token_nll: dict | None) -> dict | None:
    """VAR's validation NLL against the unigram and uniform token models (nats/token, averaged over tokens)."""
    if not token_nll:
        return None
    n_tok = [pn * int(token_nll["tokens_per_pos"]) for pn in token_nll["patch_nums"]]
    mean = lambda v: float(np.dot(n_tok, v) / sum(n_tok))  # noqa: E731 - per-token mean over all scales
    nll = token_nll["nll_nats"]
    out = {"scales": token_nll["scales"], "val_nll": mean(nll["var_val"]), "unigram": mean(nll["unigram"]),
           "uniform": mean(nll["uniform"]), "train_nll": mean(nll["var_train"]),
           "per_scale": {k: nll[k] for k in ("var_val", "unigram", "uniform")}}
    out["gain_over_unigram_pct"] = 100 * (out["unigram"] - out["val_nll"]) / out["unigram"]
    out["beats_unigram"] = out["val_nll"] < out["unigram"]
    return out


def sample_numbers(gen_NCT: np.ndarray, gen_labels: np.ndarray, val_NCT: np.ndarray, val_labels: np.ndarray,
                   val_groups: np.ndarray, train_NCT: np.ndarray, train_labels: np.ndarray,
                   train_groups: np.ndarray, sfreq: float, bands, class_names: Sequence[str],
                   train_draw_groups: np.ndarray | None = None) -> dict:
    """Per class: per-band PSD error (dB) and C2ST AUC of generated, real-training (floor) and phase-randomised
    windows, each against the real validation windows of that class, and each set's window-to-window spread of
    band power beside the validation windows' own. With ``train_draw_groups`` (:func:`load_split`'s ``with_draws``) also
    "real train, ungrouped": the training windows tested the way generated windows are, each its own draw."""
    f_max = min(PSD_F_MAX, sfreq / 2)
    per_class, spread_val = {}, {}
    for c, name in enumerate(class_names):
        val, gen, tr = val_NCT[val_labels == c], gen_NCT[gen_labels == c], train_NCT[train_labels == c]
        if len(val) < 2 or len(gen) < 2 or len(tr) < 2:
            continue
        phase = phase_randomize(val, rng=c)
        g_val = val_groups[val_labels == c]
        sets = {"generated": (gen, None), "real train (floor)": (tr, train_groups[train_labels == c]),
                "phase-randomised val": (phase, g_val)}
        if train_draw_groups is not None:
            sets["real train, ungrouped"] = (tr, train_draw_groups[train_labels == c])
        row = {}
        for kind, (x, groups) in sets.items():
            err = psd_band_error_db(val, x, sfreq, bands, f_max=f_max)
            auc = c2st_auc(val, x, sfreq, groups_a=g_val, groups_b=groups, bands=bands, f_max=f_max).auc
            row[kind] = {"psd_error_db": err, "max_psd_error_db": max(err.values()), "c2st_auc": auc,
                         "band_power_spread": _spread(x, sfreq, bands, f_max, list(err)), "n": int(len(x))}
        per_class[name] = row
        spread_val[name] = _spread(val, sfreq, bands, f_max, list(err))
    return {"per_class": per_class, "val_band_power_spread": spread_val, "f_max_hz": f_max,
            "n_val": int(len(val_NCT)), "n_generated": int(len(gen_NCT))}


def sample_sets(labels_N: np.ndarray, n_sets: int) -> list[np.ndarray]:
    """Indices of ``n_sets`` disjoint sets of generated windows, set k holding the k-th of ``n_sets`` consecutive
    shares of every class's windows (in file order); one set when a class has fewer than 2 windows per set."""
    labels_N = np.asarray(labels_N)
    classes = np.unique(labels_N)
    if n_sets < 1 or min(int((labels_N == c).sum()) for c in classes) < 2 * n_sets:
        n_sets = 1
    chunks = [np.array_split(np.flatnonzero(labels_N == c), n_sets) for c in classes]
    return [np.sort(np.concatenate([ch[k] for ch in chunks])) for k in range(n_sets)]


def c2st_over_sets(gen_NCT: np.ndarray, gen_labels: np.ndarray, val_NCT: np.ndarray, val_labels: np.ndarray,
                   val_groups: np.ndarray, sfreq: float, bands, class_names: Sequence[str],
                   n_sets: int = SAMPLE_SETS) -> dict:
    """Per class, the C2ST AUC of each of :func:`sample_sets`' sets against the validation windows (grouped by
    recording; samples ungrouped, as in :func:`sample_numbers`), with their mean and sd (ddof 1): how much the
    number moves from one set of samples to the next."""
    f_max = min(PSD_F_MAX, sfreq / 2)
    sets = sample_sets(gen_labels, n_sets)
    out = {}
    for c, name in enumerate(class_names):
        in_v = val_labels == c
        aucs = [c2st_auc(val_NCT[in_v], gen_NCT[idx[gen_labels[idx] == c]], sfreq, groups_a=val_groups[in_v],
                         bands=bands, f_max=f_max).auc
                for idx in sets if (gen_labels[idx] == c).sum() >= 2 and in_v.sum() >= 2]
        if aucs:
            out[name] = auc_spread(aucs) | {"n_per_set": int((gen_labels[sets[0]] == c).sum())}
    return out


def _spread(x_NCT: np.ndarray, sfreq: float, bands, f_max: float, names: Sequence[str]) -> dict:
    """Window-to-window spread of log10 band power per band (see ``band_power_spread``)."""
    return dict(zip(names, band_power_spread(x_NCT, sfreq, bands=bands, f_max=f_max).tolist()))


def gap_numbers(gap: dict | None) -> dict | None:
    """SNR (dB) inside the masked span: VAR's fill (mean of its draws) vs straight-line interpolation."""
    if gap is None:
        return None
    target, fill, mask = gap["target"].astype(np.float64), gap["signal"].astype(np.float64), gap["mask"].astype(bool)
    observed = np.where(np.isnan(gap["observed"]), 0.0, gap["observed"]).astype(np.float64)
    linear = fill_gap_linear(observed, mask)
    sel = np.broadcast_to(mask[:, None, :], target.shape)
    var_snr = float(snr_db(target[sel], fill[sel]))
    lin_snr = float(snr_db(target[sel], linear[sel]))
    return {"var_snr_db": var_snr, "linear_snr_db": lin_snr, "gap_sec": float(mask[0].sum() / float(gap["sfreq"])),
            "n_windows": int(target.shape[0]), "beats_linear": var_snr > lin_snr}


def compute_numbers(run_dir: str, data_root: str, max_windows: int = 400) -> tuple[dict, dict]:
    """Every number of the report, and the arrays its figures need."""
    npz = lambda p: dict(np.load(p, allow_pickle=False)) if os.path.exists(p) else None  # noqa: E731
    val, val_lab, val_src = load_split(data_root, "val", max_windows)
    try:  # the floor also entered the way samples are (each window its own draw); older datasets lack window starts
        train, train_lab, train_src, train_draws = load_split(data_root, "train", max_windows, with_draws=True)
    except UserError:
        (train, train_lab, train_src), train_draws = load_split(data_root, "train", max_windows), None
    ds = EEGWindowDataset(data_root, "val", limit=1)
    sfreq, bands = float(ds.sfreq), np.asarray(ds.bands)
    samples, recon, gap = npz(os.path.join(run_dir, "samples.npz")), npz(os.path.join(run_dir, "tokenizer",
                                                                                      "recon_val.npz")), \
        npz(os.path.join(run_dir, "gap.npz"))
    class_names = [str(c) for c in samples["class_names"]] if samples is not None else ["all"]
    nums: dict[str, Any] = {
        "settings": _read_json(os.path.join(run_dir, "settings.json")) or {},
        "timings_s": _read_json(os.path.join(run_dir, "timings.json")) or {},
        "data": {"root": os.path.basename(os.path.normpath(data_root)), "sfreq": sfreq,
                 "n_channels": int(val.shape[2]), "window_sec": val.shape[-1] / sfreq, "bands": bands.tolist(),
                 "n_val_used": int(len(val)), "n_train_used": int(len(train))},
        "prototype": prototype_numbers(_read_json(os.path.join(run_dir, "prototype", "metrics.json"))),
        "tokenizer": tokenizer_numbers(recon, train, stage_names(bands)),
        "var": var_numbers(_read_json(os.path.join(run_dir, "token_nll", "token_nll.json"))),
        "samples": None if samples is None else sample_numbers(
            samples["signal"].astype(np.float64), samples["labels"], val[:, -1], val_lab, val_src, train[:, -1],
            train_lab, train_src, sfreq, bands, class_names, train_draw_groups=train_draws)
        | {"c2st_sets": c2st_over_sets(samples["signal"].astype(np.float64), samples["labels"], val[:, -1], val_lab,
                                       val_src, sfreq, bands, class_names)},
        "zero_shot": gap_numbers(gap),
        "training_curves": {"tokenizer": _read_log(os.path.join(run_dir, "tokenizer", "log.txt")),
                            "var": _read_log(os.path.join(run_dir, "var", "log.txt"))},
    }
    arrays = {"val": val[:, -1], "val_labels": val_lab, "train": train[:, -1], "train_labels": train_lab,
              "samples": samples, "gap": gap, "class_names": class_names, "sfreq": sfreq, "bands": bands}
    return nums, arrays


# ---------------------------------------------------------------------------------------------- headline
def headline(nums: dict) -> list[tuple[str, str, str, str]]:
    """(check, measured, reference, verdict) rows: the summary printed on the terminal and atop the report."""
    rows = []
    p = nums.get("prototype")
    if p:
        rows.append(("prototype: val MSE, next stage", f"{p['best_val_loss']:.4g}", f"{p['add_nothing']:.4g} "
                     "(adds nothing)", f"{'better' if p['beats_baseline'] else 'NOT better'} by {p['gain_pct']:.1f} %"))
    t = nums.get("tokenizer")
    if t:
        rows.append(("tokenizer: mean SNR over stages", f"{np.mean(t['snr_db']):.2f} dB",
                     f"{np.mean(t['codec_snr_db']):.2f} dB (transform codec, same bits)",
                     f"{'beats' if t['beats_codec'] else 'does NOT beat'} the codec "
                     f"({t['stages_beating_codec']}/{len(t['stages'])} stages)"))
    v = nums.get("var")
    if v:
        rows.append(("VAR: val NLL per token", f"{v['val_nll']:.4f} nats", f"{v['unigram']:.4f} (unigram), "
                     f"{v['uniform']:.4f} (uniform)", f"{'below' if v['beats_unigram'] else 'NOT below'} unigram by "
                     f"{v['gain_over_unigram_pct']:.2f} %"))
    s = nums.get("samples")
    if s:
        for cname, row in s["per_class"].items():
            g, f, ph = row["generated"], row["real train (floor)"], row["phase-randomised val"]
            rows.append((f"samples ({cname}): max band PSD error", f"{g['max_psd_error_db']:.2f} dB",
                         f"{f['max_psd_error_db']:.2f} dB (real-vs-real floor)",
                         f"{g['max_psd_error_db'] - f['max_psd_error_db']:+.2f} dB vs floor"))
            fu = row.get("real train, ungrouped")
            sets = s.get("c2st_sets", {}).get(cname)
            over_sets = (f" ({len(sets['auc'])} sets of {sets['n_per_set']}: {sets['mean']:.2f} ± {sets['sd']:.2f})"
                         if sets and len(sets["auc"]) > 1 else "")
            rows.append((f"samples ({cname}): C2ST AUC", f"{g['c2st_auc']:.2f}{over_sets}",
                         f"{f['c2st_auc']:.2f} (floor)" + (f", {fu['c2st_auc']:.2f} (floor entered as samples are)"
                                                           if fu else "")
                         + f", {ph['c2st_auc']:.2f} (phase-randomised)", "0.5 = indistinguishable"))
            ref = s.get("val_band_power_spread", {}).get(cname)
            if ref and "band_power_spread" in g:
                ratio = lambda q: float(np.mean([q[b] / ref[b] for b in ref]))  # noqa: E731
                rows.append((f"samples ({cname}): band-power spread", f"{ratio(g['band_power_spread']):.2f} x val",
                             f"{ratio(f['band_power_spread']):.2f} x val (real train)",
                             "1 = varies as much from window to window as real validation windows"))
    z = nums.get("zero_shot")
    if z:
        rows.append((f"zero-shot: SNR in a {z['gap_sec']:g}-s gap", f"{z['var_snr_db']:.2f} dB",
                     f"{z['linear_snr_db']:.2f} dB (linear interpolation)",
                     "better" if z["beats_linear"] else "NOT better"))
    return rows


def format_terminal(nums: dict) -> str:
    rows = [("check", "measured", "reference", "verdict")] + headline(nums)
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    t = nums.get("timings_s") or {}
    if t:
        lines.append("time per step (s): " + ", ".join(f"{k} {v:.0f}" for k, v in t.items()))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- figures
def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def figure_traces(path: str, arrays: dict, n_channels: int = 6) -> str | None:
    """Generated beside real validation windows per class, channels stacked, with a µV scale bar."""
    from .eeg_plot import plot_stacked, stack_offset

    s = arrays["samples"]
    if s is None:
        return None
    plt = _plt()
    names = arrays["class_names"]
    ch = [str(c) for c in s["ch_names"]] if len(s["ch_names"]) else [f"ch{i}" for i in range(s["signal"].shape[1])]
    chans = list(range(min(n_channels, len(ch))))
    t = np.arange(s["signal"].shape[-1]) / arrays["sfreq"]
    fig, axes = plt.subplots(len(names), 2, figsize=(11, 2.6 + 0.35 * len(chans) * len(names)), squeeze=False)
    for row, name in enumerate(names):
        g = s["signal"][s["labels"] == row]
        r = arrays["val"][arrays["val_labels"] == row]
        off = stack_offset(g[:1, chans], r[:1, chans])
        for col, (kind, x, color) in enumerate((("generated", g, "C0"), ("real validation", r, "C1"))):
            ax = axes[row, col]
            if len(x):
                plot_stacked(ax, t, x[0, chans], [ch[i] for i in chans], off, color=color)
            ax.set_title(f"{name}: {kind} window", fontsize=9)
    fig.suptitle(f"EEG in µV, {len(chans)} of {len(ch)} channels (scale bar right of each panel)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return os.path.basename(path)


def figure_psd(path: str, arrays: dict) -> str | None:
    """Mean PSD per class: generated, real validation, real training (the real-vs-real floor)."""
    s = arrays["samples"]
    if s is None:
        return None
    plt = _plt()
    names, sfreq = arrays["class_names"], arrays["sfreq"]
    fig, axes = plt.subplots(1, len(names), figsize=(5.2 * len(names), 3.6), squeeze=False)
    for c, name in enumerate(names):
        ax = axes[0, c]
        for label, x, style in (("generated", s["signal"][s["labels"] == c], dict(color="C0", lw=1.6)),
                                ("real validation", arrays["val"][arrays["val_labels"] == c], dict(color="C1", lw=1.6)),
                                ("real training (floor)", arrays["train"][arrays["train_labels"] == c],
                                 dict(color="0.4", lw=1.0, ls="--"))):
            if len(x):
                f, p = welch_psd(x, sfreq)
                keep = (f >= 0.5) & (f <= min(PSD_F_MAX, sfreq / 2))
                ax.semilogy(f[keep], p[keep], label=f"{label} (n={len(x)})", **style)
        ax.set_title(f"{name}: mean PSD over windows and channels", fontsize=9)
        ax.set_xlabel("frequency (Hz)")
        ax.set_ylabel("µV²/Hz")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return os.path.basename(path)


def figure_quality(path: str, nums: dict) -> str | None:
    """Per-band PSD error and C2ST AUC of generated, floor and phase-randomised windows, per class."""
    s = nums.get("samples")
    if not s or not s["per_class"]:
        return None
    plt = _plt()
    classes = list(s["per_class"])
    fig, axes = plt.subplots(1, len(classes) + 1, figsize=(4.6 * (len(classes) + 1), 3.4), squeeze=False)
    kinds = ["generated", "real train (floor)", "phase-randomised val"]
    for c, cname in enumerate(classes):
        ax = axes[0, c]
        bands = list(s["per_class"][cname]["generated"]["psd_error_db"])
        x = np.arange(len(bands))
        for i, kind in enumerate(kinds):
            ax.bar(x + (i - 1) * 0.27, [s["per_class"][cname][kind]["psd_error_db"][b] for b in bands], 0.27,
                   label=kind)
        ax.set_xticks(x, bands, fontsize=8)
        ax.set_ylabel("|PSD error| vs real val (dB)")
        ax.set_title(f"{cname}: per-band PSD error", fontsize=9)
        ax.legend(fontsize=7)
    ax = axes[0, -1]
    x = np.arange(len(classes))
    for i, kind in enumerate(kinds):
        ax.bar(x + (i - 1) * 0.27, [s["per_class"][c][kind]["c2st_auc"] for c in classes], 0.27, label=kind)
    ax.axhline(0.5, color="k", lw=0.8, ls=":")
    ax.set_xticks(x, classes)
    ax.set_ylim(0, 1.05)
    ax.set_title("C2ST AUC vs real val (0.5 = indistinguishable)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return os.path.basename(path)


def figure_tokenizer(path: str, nums: dict) -> str | None:
    t = nums.get("tokenizer")
    if not t:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.4))
    x = np.arange(len(t["stages"]))
    ax.bar(x - 0.2, t["snr_db"], 0.4, label="band tokenizer (decode after scale k)")
    ax.bar(x + 0.2, t["codec_snr_db"], 0.4, label="transform codec, same bits")
    ax.set_xticks(x, t["stages"], fontsize=7, rotation=15)
    ax.set_ylabel("SNR on validation windows (dB)")
    ax.set_title("Reconstruction of each cumulative stage", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return os.path.basename(path)


def figure_curves(path: str, nums: dict) -> str | None:
    """Training curves: prototype val MSE vs adds-nothing, tokenizer val SNR, VAR val loss vs unigram/uniform."""
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.4))
    p = nums.get("prototype")
    if p and p["epochs"]:
        ep = [e["epoch"] for e in p["epochs"]]
        axes[0].plot(ep, [e["val_loss"] for e in p["epochs"]], "o-", label="val MSE")
        axes[0].plot(ep, [e["train_loss"] for e in p["epochs"]], "o-", alpha=0.6, label="train MSE")
        axes[0].axhline(p["add_nothing"], color="k", ls="--", label="adds nothing (val)")
        axes[0].legend(fontsize=7)
    axes[0].set_title("prototype", fontsize=9)
    tok = nums["training_curves"]["tokenizer"]
    if tok:
        for name in tok[-1].get("val_snr_db", {}):
            axes[1].plot([r["ep"] for r in tok], [r["val_snr_db"][name] for r in tok], label=name)
        axes[1].set_ylabel("val SNR (dB)")
        axes[1].legend(fontsize=6)
    axes[1].set_title("band tokenizer", fontsize=9)
    var = [r for r in nums["training_curves"]["var"] if "vL_mean" in r]
    if var:
        axes[2].plot([r["ep"] for r in var], [r["vL_mean"] for r in var], "o-", label="VAR val loss")
        axes[2].plot([r["ep"] for r in var], [r["L_mean"] for r in var], "o-", alpha=0.6, label="VAR train loss")
    v = nums.get("var")
    if v:
        axes[2].axhline(v["unigram"], color="k", ls="--", label="unigram (token frequencies)")
        axes[2].axhline(v["uniform"], color="0.5", ls=":", label="uniform")
    if var or v:
        axes[2].set_ylabel("cross-entropy (nats/token)")
        axes[2].legend(fontsize=7)
    axes[2].set_title("VAR transformer", fontsize=9)
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return os.path.basename(path)


def figure_gap(path: str, arrays: dict, n_channels: int = 4) -> str | None:
    """One window with a gap: the truth, VAR's fill and a straight line, channels stacked with a µV bar."""
    from .eeg_plot import plot_stacked, stack_offset

    gap = arrays["gap"]
    if gap is None:
        return None
    plt = _plt()
    sfreq = float(gap["sfreq"])
    mask = gap["mask"][0].astype(bool)
    target = gap["target"][0].astype(np.float64)
    observed = np.where(np.isnan(gap["observed"][:1]), 0.0, gap["observed"][:1])
    linear = fill_gap_linear(observed, gap["mask"][:1].astype(bool))[0]
    ch = [str(c) for c in gap["ch_names"]] if len(gap["ch_names"]) else [f"ch{i}" for i in range(target.shape[0])]
    chans = list(range(min(n_channels, target.shape[0])))
    t = np.arange(target.shape[-1]) / sfreq
    off = stack_offset(target[chans])
    fig, ax = plt.subplots(figsize=(11, 1.0 + 0.8 * len(chans)))
    plot_stacked(ax, t, target[chans], [ch[i] for i in chans], off, color="k", lw=1.0, label="true EEG")
    plot_stacked(ax, t, np.where(mask, gap["signal"][0][chans], np.nan), [ch[i] for i in chans], off,
                 scale_bar=False, color="C3", lw=1.2, label="VAR fill (mean of draws)")
    plot_stacked(ax, t, np.where(mask, linear[chans], np.nan), [ch[i] for i in chans], off, scale_bar=False,
                 color="C2", lw=1.0, ls="--", label="straight line")
    runs = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(int), [0]])))
    for a, b in zip(runs[::2], runs[1::2]):
        ax.axvspan(t[a], t[b - 1], color="C3", alpha=0.08)
    ax.legend(fontsize=7, loc="upper right", ncol=3)
    ax.set_title("Zero-shot: a gap filled from the context on both sides (shaded = never seen by the model)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return os.path.basename(path)


# ---------------------------------------------------------------------------------------------- html
def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    fmt = lambda v: f"{v:.3g}" if isinstance(v, float) else html.escape(str(v))  # noqa: E731
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{fmt(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(name: str | None, alt: str) -> str:
    return f'<p><img src="{html.escape(name)}" alt="{html.escape(alt)}"></p>' if name else \
        f"<p><em>{html.escape(alt)}: not available in this run.</em></p>"


def write_html(path: str, nums: dict, figs: dict[str, str | None]) -> None:
    s, t, v, z = nums.get("settings") or {}, nums.get("tokenizer"), nums.get("var"), nums.get("zero_shot")
    d = nums["data"]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>EEG-VAR main job report</title><style>"
        "body{font-family:sans-serif;max-width:1150px;margin:1.5em auto;color:#222}"
        "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #bbb;padding:3px 8px;font-size:13px}"
        "th{background:#eee}img{max-width:100%}h2{margin-top:1.6em;border-bottom:1px solid #ccc}"
        ".smoke{background:#fff3cd;padding:.6em;border:1px solid #e0c060}</style></head><body>",
        "<h1>EEG-VAR: main job report</h1>"]
    if s.get("synthetic"):
        parts.append("<p class='smoke'><b>Smoke test on synthetic EEG.</b> These numbers say the pipeline runs, "
                     "not that the model learned real EEG. Run without --synthetic for the real report.</p>")
    parts.append(f"<p>Data: <b>{html.escape(d['root'])}</b>, {d['n_channels']} channels at {d['sfreq']:g} Hz, "
                 f"{d['window_sec']:g}-s windows; validation subjects: {html.escape(str(s.get('val_groups', '?')))} "
                 f"(never seen in training). Scores use {d['n_val_used']} validation and {d['n_train_used']} training "
                 "windows.</p>")
    parts += ["<h2>Headline</h2>", _table(["check", "measured", "reference", "verdict"], headline(nums)),
              "<p>How to read it: the prototype predicts the next stage's waveform, and a new band's waveform is "
              "mostly not predictable from the lower bands, so \"adds nothing\" is a strong reference for its MSE. "
              "The unigram predicts every token from the token frequencies alone: VAR has learned context only "
              "where it is below it. The real-vs-real floor is how far real training windows of other people "
              "already are from the validation windows.</p>"]
    timings = nums.get("timings_s") or {}
    if timings:
        parts.append("<p>Time per step (s): " + ", ".join(f"{html.escape(k)} {val:.0f}" for k, val in timings.items())
                     + f"; total {sum(timings.values()):.0f} s. Settings: {html.escape(json.dumps(s))}</p>")
    parts += ["<h2>Generated vs real EEG</h2>", _img(figs.get("traces"), "generated vs real traces"),
              _img(figs.get("psd"), "mean PSD per class"), _img(figs.get("quality"), "PSD error and C2ST")]
    smp = nums.get("samples")
    if smp:
        rows = []
        for cname, row in smp["per_class"].items():
            for kind, q in row.items():
                rows.append([cname, kind, q["n"]] + [round(e, 2) for e in q["psd_error_db"].values()]
                            + [round(q["c2st_auc"], 3)])
        first = next(iter(smp["per_class"].values()))["generated"]["psd_error_db"]
        parts.append(_table(["class", "windows", "n"] + [f"{b} dB" for b in first] + ["C2ST AUC"], rows))
        spread_rows = []
        for cname, row in smp["per_class"].items():
            ref = smp.get("val_band_power_spread", {}).get(cname)
            if ref:
                spread_rows.append([cname, "real val"] + [round(v, 3) for v in ref.values()])
            spread_rows += [[cname, kind] + [round(v, 3) for v in q["band_power_spread"].values()]
                            for kind, q in row.items() if "band_power_spread" in q]
        if spread_rows:
            parts.append(_table(["class", "windows"] + [f"{b} spread" for b in first], spread_rows))
            parts.append("<p>Spread = standard deviation over windows of log10 band power, mean over channels: how "
                         "much band power varies from window to window. Samples below the real windows' spread are "
                         "too alike.</p>")
        parts.append(f"<p>PSD error = |10 log10(P / P_real val)| per band (Welch, mean over windows and channels, "
                     f"bands clipped at {smp['f_max_hz']:g} Hz). The real training windows of the same class give the "
                     "floor: how far two sets of real EEG from different people already differ. Its C2ST keeps the windows of "
                     "one recording in one fold, so the classifier never meets their subjects; 'real train, ungrouped' "
                     "enters them the way samples enter, each window its own draw (overlapping windows together): "
                     "what a perfect sampler of the training subjects would score.</p>")
    parts += ["<h2>Band tokenizer</h2>", _img(figs.get("tokenizer"), "tokenizer SNR per stage")]
    if t:
        parts.append(_table(["stage", "tokenizer SNR dB", "codec SNR dB", "bits/window"],
                            [[n, round(a, 2), round(b, 2), round(c)] for n, a, b, c in
                             zip(t["stages"], t["snr_db"], t["codec_snr_db"], t["bits_per_window"])]))
    parts += ["<h2>VAR transformer</h2>"]
    if v:
        parts.append(_table(["scale", "VAR val", "unigram", "uniform"],
                            [[n, round(a, 4), round(b, 4), round(c, 4)] for n, a, b, c in
                             zip(v["scales"], v["per_scale"]["var_val"], v["per_scale"]["unigram"],
                                 v["per_scale"]["uniform"])]))
    parts += ["<h2>Training curves</h2>", _img(figs.get("curves"), "training curves"),
              "<h2>Zero-shot: filling a gap</h2>", _img(figs.get("gap"), "gap filling")]
    if z:
        parts.append(f"<p>Over {z['n_windows']} validation windows, SNR inside the gap: VAR {z['var_snr_db']:.2f} dB, "
                     f"straight line {z['linear_snr_db']:.2f} dB.</p>")
    parts += ["<h2>Prototype rollout</h2>", _img(figs.get("rollout"), "prototype rollout"), "</body></html>"]
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write("\n".join(parts))
    os.replace(tmp, path)


def build_report(run_dir: str, data_root: str | None = None, max_windows: int = 400) -> tuple[str, dict]:
    """Compute the numbers, draw the figures, write ``run_dir/report/``; return (report.html path, numbers)."""
    data_root = data_root or os.path.join(run_dir, "data")
    if not os.path.isdir(os.path.join(data_root, "val")):
        raise UserError(f"{data_root}: no dataset (train/, val/) there; pass --data DIR")
    out = os.path.join(run_dir, "report")
    os.makedirs(out, exist_ok=True)
    nums, arrays = compute_numbers(run_dir, data_root, max_windows)
    figs = {"traces": figure_traces(os.path.join(out, "traces.png"), arrays),
            "psd": figure_psd(os.path.join(out, "psd.png"), arrays),
            "quality": figure_quality(os.path.join(out, "quality.png"), nums),
            "tokenizer": figure_tokenizer(os.path.join(out, "tokenizer.png"), nums),
            "curves": figure_curves(os.path.join(out, "curves.png"), nums),
            "gap": figure_gap(os.path.join(out, "gap.png"), arrays)}
    rollout = os.path.join(run_dir, "prototype", "rollout.png")
    figs["rollout"] = os.path.relpath(rollout, out) if os.path.exists(rollout) else None
    with open(os.path.join(out, "numbers.json"), "w", encoding="utf-8") as fh:
        json.dump(nums, fh, indent=1, default=float)
    path = os.path.join(out, "report.html")
    write_html(path, nums, figs)
    return path, nums


def main(argv: Sequence[str] | None = None) -> int:
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", help="the main job's output folder (scripts/main.sh --out)")
    p.add_argument("--data", default=None, help="dataset root (default: RUN_DIR/data)")
    p.add_argument("--max-windows", type=int, default=400, help="windows per split read for the scores")
    args = p.parse_args(argv)
    if not os.path.isdir(args.run_dir):
        raise UserError(f"{args.run_dir}: not a folder; pass the main job's --out folder")
    path, nums = build_report(args.run_dir, args.data, args.max_windows)
    print(format_terminal(nums))
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    setup_logging()
    run_cli(main, PROG)
