"""Classical references on real EEG: codec RD curve + Gaussian bound, generation floors, completion baselines.

Usage::

    python -m benchmarks.bench_baselines [--quick] [--data-root DIR] [--results-dir DIR]

Without ``--data-root`` the eegmat dataset (PhysioNet mental arithmetic, 19 channels, 100 Hz, 5-s windows,
Subject05 for validation) is built once into ``benchmarks/results/raw/eegmat100`` with
``python -m utils.data_eeg build`` from ``../shared/data/physionet-eegmat``.

What it measures (all on the validation split, models fitted on the training split):

1. **Rate-distortion**: SNR of the transform codec (spatial PCA + DCT, 16 bits per kept
   coefficient) and the Gaussian rate-distortion bound versus bits/s/channel, full band and per
   cumulative stage; codec speed (× real time).
2. **Generation floors and anchors**, per class: real windows of the same recordings in
   other time blocks (the floor), real windows of the training subjects, phase-randomised real windows,
   and samples of a linear VAR model fitted by least squares — per-band PSD error, channel-correlation
   distance, C2ST AUC.
3. **Completion baselines**: gap filling (zeros, linear interpolation, AR forward,
   AR forward-backward) for gaps of 0.1-1 s and forecasting (zeros, AR) for horizons of 0.1-0.5 s:
   SNR and MSE on the unobserved samples; band completion with the zero baseline (keep stages 1..k).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import sys
import time
from typing import Sequence

import numpy as np

from benchmarks import (RESULTS_DIR, bench_parser, figure_path, machine_info, median_time, peak_rss_mb, plot_psd_curves,
                        save_result)
from utils.cli import run_cli, setup_logging
from utils.eeg_bands import band_names, stage_names
from utils.eeg_baselines import LinearVAR, fill_gap_ar, fill_gap_linear, fill_gap_zeros, forecast_zeros, phase_randomize
from utils.eeg_codec import TransformCodec, gaussian_rd_bound
from utils.eeg_dataset import EEGWindowDataset, label_names
from utils.eeg_metrics import clip_bands, mse, psd_band_error_db, snr_db, welch_psd
from utils.eeg_quality import generation_quality
from utils.errors import DatasetError, UserError
from utils.project_info import REPO_ROOT

logger = logging.getLogger("benchmarks.bench_baselines")

NAME = "baselines"
DEFAULT_DATA_ROOT = os.path.join(RESULTS_DIR, "raw", "eegmat100")
EEGMAT_DIR = os.path.join(os.path.dirname(REPO_ROOT), "shared", "data", "physionet-eegmat")


#: held-out subjects of the 26-subject protocol (bench_tokenizer, bench_intra_steps): spread over the subject ids
EEGMAT_VAL_SUBJECTS = ("Subject05", "Subject11", "Subject18", "Subject24")


def eegmat_build_args(stride_sec: float = 5.0, split_by: str = "subject",
                      val_subjects: Sequence[str] = ("Subject05",)) -> list[str]:
    """``python -m utils.data_eeg build`` flags of every eegmat benchmark dataset (19 ch, 100 Hz, 5-s windows).

    ``split_by='subject'``: ``val_subjects`` (default Subject05; the 26-subject benchmarks pass
    :data:`EEGMAT_VAL_SUBJECTS`) are validation; ``'time'``: the last 30 % of every recording is (behind the
    default guard gap). ``benchmarks/device_check.sh`` reads them from here too.
    """
    if split_by not in ("subject", "time"):
        raise UserError(f"split_by={split_by!r}; expected 'subject' or 'time'")
    split = (["--split-by", "subject", "--val-groups", ",".join(val_subjects)] if split_by == "subject"
             else ["--split-by", "time", "--val-fraction", "0.3"])
    return ["--sfreq", "100", "--window-sec", "5", "--stride-sec", f"{stride_sec:g}", "--channels", "1020-19", *split,
            "--label-from", r"regex:_1\.edf$=rest,_2\.edf$=arithmetic", "--seed", "0"]


EEGMAT_BUILD_ARGS = eegmat_build_args()


#: Folder (under ``raw/``) of the benchmark dataset of each protocol.
BENCH_DATASETS = {"subject": "eegmat100_s25_val4", "time": "eegmat100_t25"}
#: What each protocol holds out, as figures and reports name it.
HELD_OUT = {"subject": "the held-out subjects", "time": "the last 30 % of every recording"}


def split_suffix(split_by: str) -> str:
    """What a protocol adds to the names of results, figures and runs: "" (subject split) or "_time"."""
    if split_by not in BENCH_DATASETS:
        raise UserError(f"--split-by={split_by!r}; expected one of {', '.join(BENCH_DATASETS)}")
    return "" if split_by == "subject" else "_" + split_by


def split_title(split_by: str) -> str:
    """What a protocol adds to report titles: "" (subject split) or ", time split"."""
    return f", {split_by} split" if split_suffix(split_by) else ""


def ensure_bench_dataset(raw: str, split_by: str = "subject") -> str:
    """Build the benchmark dataset of a protocol into ``raw/BENCH_DATASETS[split_by]`` unless present: all 26 eegmat
    subjects, 5-s windows every 2.5 s; ``EEGMAT_VAL_SUBJECTS`` held out (subject) or the last 30 % of every recording
    (time). Returns its root."""
    split_suffix(split_by)  # the one-line error for an unknown protocol
    flags = eegmat_build_args(2.5, split_by, **({"val_subjects": EEGMAT_VAL_SUBJECTS} if split_by == "subject" else {}))
    return ensure_default_dataset(os.path.join(raw, BENCH_DATASETS[split_by]), flags)


def default_var_run(split_by: str, quick: bool = False) -> tuple[str, str]:
    """Folder under ``raw/`` of the VAR run that the token-NLL and zero-shot benchmarks read by default, and the
    benchmark that trains it: ``bench_var``'s on the subject split, ``bench_samples``' on another protocol."""
    sfx = split_suffix(split_by)
    if not sfx:
        return ("var_run_quick" if quick else "var_run"), "bench_var"
    return f"samples_var_new{sfx}", f"bench_samples --split-by {split_by}"


def add_split_flag(p) -> None:
    """``--split-by``: the protocol of a benchmark that judges against held-out eegmat windows."""
    p.add_argument("--split-by", default="subject", choices=tuple(BENCH_DATASETS),
                   help="held-out windows: 4 subjects (subject) or the last 30%% of every recording of all 26 (time); "
                        "'time' adds _time to the names of results, figures and runs")


@dataclasses.dataclass
class Split:
    """All windows of one split in memory: ``stages_NKCT`` µV plus per-window metadata."""

    stages_NKCT: np.ndarray
    labels: np.ndarray
    source: np.ndarray
    start: np.ndarray
    subject: np.ndarray
    sfreq: float
    bands: np.ndarray

    @property
    def full_NCT(self) -> np.ndarray:
        return self.stages_NKCT[:, -1]


def ensure_default_dataset(root: str, build_args: Sequence[str] | None = None) -> str:
    """Build an eegmat benchmark dataset (``build_args``, default :data:`EEGMAT_BUILD_ARGS`) into ``root`` unless
    it is already there."""
    if os.path.exists(os.path.join(root, "manifest.json")):
        return root
    if not os.path.isdir(EEGMAT_DIR):
        raise DatasetError(f"{EEGMAT_DIR} not found and no --data-root given; pass --data-root DIR (a dataset "
                           "built with `python -m utils.data_eeg build`)")
    logger.info("building the eegmat benchmark dataset into %s (once)", root)
    cmd = [sys.executable, "-m", "utils.data_eeg", "build", "--inputs", EEGMAT_DIR, "--out", root,
           *(EEGMAT_BUILD_ARGS if build_args is None else build_args), "--progress", "off"]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise DatasetError(f"building {root} failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
    return root


def load_split(root: str, split: str, max_windows: int | None, rng: np.random.Generator) -> Split:
    """Read a split into memory; with ``max_windows``, a random subset of whole recordings' windows."""
    ds = EEGWindowDataset(root, split)
    idx = np.arange(len(ds))
    if max_windows is not None and len(ds) > max_windows:
        idx = np.sort(rng.choice(len(ds), size=max_windows, replace=False))
    stages = np.stack([ds.window(int(i)).stages_KCT for i in idx]).astype(np.float64)
    heads = [ds.headers[int(i)] for i in idx]
    return Split(stages_NKCT=stages, labels=ds.labels[idx],
                 source=np.asarray([h.source or os.path.basename(h.path) for h in heads]),
                 start=np.asarray([h.start if h.start is not None else i for i, h in zip(idx, heads)]),
                 subject=np.asarray([h.subject or "?" for h in heads]), sfreq=float(ds.sfreq), bands=ds.bands)


# --------------------------------------------------------------------------------------- 1. RD curve
def rate_distortion(train: Split, val: Split, rates: Sequence[float], repeats: int) -> dict:
    """Codec SNR and Gaussian bound per rate, full band and per stage; codec speed."""
    names = stage_names(train.bands)
    out: dict = {"rates_bits_per_sec_per_channel": list(map(float, rates)), "stages": names,
                 "codec_snr_db": {}, "gaussian_bound_snr_db": {}, "gaussian_bound_oracle_snr_db": {}}
    for k, name in enumerate(names):
        codec = TransformCodec(train.sfreq).fit(train.stages_NKCT[:, k])
        x = val.stages_NKCT[:, k]
        out["codec_snr_db"][name] = [snr_db(x, codec.roundtrip(x, r).x_hat_NCT) for r in rates]
        out["gaussian_bound_snr_db"][name] = gaussian_rd_bound(codec, x, rates).tolist()
        out["gaussian_bound_oracle_snr_db"][name] = gaussian_rd_bound(codec, x, rates, allocation="val").tolist()
    codec = TransformCodec(train.sfreq).fit(train.full_NCT)
    x = val.full_NCT
    rate = 64.0 if 64.0 in rates else float(rates[len(rates) // 2])
    sec = median_time(lambda: codec.roundtrip(x, rate), repeats=repeats)
    out["codec_speed"] = {"rate": rate, "windows": len(x), "seconds": sec,
                          "x_realtime": len(x) * x.shape[-1] / train.sfreq / sec}
    return out


def plot_rd(rd: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = rd["rates_bits_per_sec_per_channel"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    full = rd["stages"][-1]
    axes[0].plot(rates, rd["gaussian_bound_snr_db"][full], "k--o", label="Gaussian RD bound")
    axes[0].plot(rates, rd["codec_snr_db"][full], "C0-o", label="transform codec (PCA+DCT)")
    axes[0].set(xlabel="bits / s / channel", ylabel="SNR (dB)", title="full band, validation windows")
    axes[0].grid(alpha=0.3)
    axes[0].legend()
    for k, name in enumerate(rd["stages"]):
        axes[1].plot(rates, rd["codec_snr_db"][name], "-o", color=f"C{k}", label=name.split("+")[-1] if "+" in name
                     else name, ms=3)
    axes[1].set(xlabel="bits / s / channel", ylabel="codec SNR (dB)", title="codec per cumulative stage (up to)")
    axes[1].grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------- 2. generation floors
def _time_blocks(split: Split, sel: np.ndarray, block_windows: int) -> tuple[np.ndarray, np.ndarray]:
    """(half, group) per selected window: blocks of consecutive windows of each recording, alternately
    assigned to half 0 and half 1, so both halves span the whole recording.

    The C2ST group is a *pair* of neighbouring blocks (one of each half), shared by both sets: a fold then
    removes as many windows of one half as of the other from a recording, so the classifier cannot score
    by recording identity (leaving out one half's block alone biases the AUC below 0.5).
    """
    half = np.zeros(int(sel.sum()), dtype=int)
    group = np.empty(int(sel.sum()), dtype=object)
    src, start = split.source[sel], split.start[sel]
    for s in np.unique(src):
        m = np.flatnonzero(src == s)
        order = m[np.argsort(start[m], kind="stable")]
        for j, i in enumerate(order):
            half[i] = (j // block_windows) % 2
            group[i] = f"{s}#{j // (2 * block_windows)}"
    return half, group


def generation_floors(train: Split, val: Split, classes: list[str], f_max: float | None, max_order: int,
                      n_folds: int, seed: int, order: int | None = None) -> tuple[dict, dict, dict]:
    """Quality rows of the floors and anchors per reference split and class; PSD curves and one example
    window (C, T) per kind and class for the figures.

    Two references: the validation windows (what generated EEG is judged against; a model trained on the
    training subjects also pays for the subject shift) and the training windows (in-distribution: how
    well a model reproduces what it was fitted on).
    """
    out: dict = {"validation": {}, "training": {}}
    curves: dict = {}
    examples: dict = {}
    rng = np.random.default_rng(seed)
    sf, bands = val.sfreq, val.bands
    for ci, cname in enumerate(classes):
        sel_v = val.labels == ci if classes != ["all"] else np.ones(len(val.labels), bool)
        sel_t = train.labels == ci if classes != ["all"] else np.ones(len(train.labels), bool)
        if sel_v.sum() < 4 or sel_t.sum() < 4:
            logger.warning("class %s: too few windows (val %d, train %d); skipped", cname, sel_v.sum(), sel_t.sum())
            continue
        t0 = time.perf_counter()
        var_model = LinearVAR(order=order, max_order=max_order).fit(train.full_NCT[sel_t])
        var_name = f"linear VAR (order {var_model.order}, least squares)"
        for ref_name, split, sel in (("validation", val, sel_v), ("training", train, sel_t)):
            ref = split.full_NCT[sel]
            half, blocks = _time_blocks(split, sel, block_windows=3)
            if min((half == 0).sum(), (half == 1).sum()) < 2:  # short recordings (e.g. a time split's val part)
                half, blocks = _time_blocks(split, sel, block_windows=1)
            res: dict = {}
            if min((half == 0).sum(), (half == 1).sum()) >= 2:
                res["real: same recordings, alternate blocks (floor)"] = generation_quality(
                    ref[half == 0], ref[half == 1], sf, bands, f_max, blocks[half == 0], blocks[half == 1], n_folds,
                    seed)
            else:
                logger.warning("class %s, %s: too few windows per recording for the alternate-block floor; skipped",
                               cname, ref_name)
            if ref_name == "validation":
                res["real: training windows"] = generation_quality(
                    ref, train.full_NCT[sel_t], sf, bands, f_max, blocks, train.source[sel_t], n_folds, seed)
            pr = phase_randomize(ref, rng)
            res["phase-randomised real"] = generation_quality(ref, pr, sf, bands, f_max, blocks, blocks, n_folds, seed)
            samples = var_model.sample(len(ref), ref.shape[-1], rng=rng)
            res[var_name] = generation_quality(ref, samples, sf, bands, f_max, blocks, None, n_folds, seed)
            res[var_name]["order"] = var_model.order
            out[ref_name][cname] = res
            if ref_name == "validation":
                freqs, p_ref = welch_psd(ref, sf)
                examples[cname] = {"real val": ref[0], "phase-randomised": pr[0], "linear VAR": samples[0]}
                curves[cname] = {"freqs_hz": freqs.tolist(), "real val": p_ref.tolist(),
                                 "real train": welch_psd(train.full_NCT[sel_t], sf)[1].tolist(),
                                 "phase-randomised": welch_psd(pr, sf)[1].tolist(),
                                 "linear VAR": welch_psd(samples, sf)[1].tolist()}
        logger.info("class %s: floors in %.1f s", cname, time.perf_counter() - t0)
    return out, curves, examples


def plot_psd(curves: dict, f_max: float | None, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(5.5 * len(curves), 4), squeeze=False)
    for ax, (cname, c) in zip(axes[0], curves.items()):
        plot_psd_curves(ax, c, f_max, legend_size=8)
        ax.set_title(f"class {cname}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_examples(examples: dict, sfreq: float, path: str, n_channels: int = 4) -> None:
    """One window per kind and class, first ``n_channels`` channels stacked (µV)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = list(next(iter(examples.values())))
    fig, axes = plt.subplots(len(examples), len(kinds), figsize=(4.5 * len(kinds), 3 * len(examples)),
                             squeeze=False, sharex=True)
    for row, (cname, ex) in zip(axes, examples.items()):
        for ax, kind in zip(row, kinds):
            x_CT = ex[kind][:n_channels]
            t = np.arange(x_CT.shape[-1]) / sfreq
            step = 4 * float(np.std(ex["real val"][:n_channels])) or 1.0
            for c in range(x_CT.shape[0]):
                ax.plot(t, x_CT[c] - c * step, lw=0.6, color="k" if kind == "real val" else "C0")
            ax.set(title=f"{kind} ({cname})", xlabel="time (s)", yticks=[])
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


# ---------------------------------------------------------------------------- 3. completion baselines
def completion_baselines(train: Split, val: Split, gaps_sec: Sequence[float], horizons_sec: Sequence[float],
                         max_order: int, seed: int, order: int | None = None) -> dict:
    """SNR/MSE on the unobserved samples for gap filling and forecasting baselines (full band)."""
    rng = np.random.default_rng(seed)
    sfreq = val.sfreq
    x = val.full_NCT
    n, _, n_t = x.shape
    fwd = LinearVAR(order=order, max_order=max_order).fit(train.full_NCT)
    bwd = LinearVAR(order=fwd.order).fit(train.full_NCT[..., ::-1])
    uni = LinearVAR(order=order, max_order=max_order, multivariate=False).fit(train.full_NCT)
    uni_bwd = LinearVAR(order=uni.order, multivariate=False).fit(train.full_NCT[..., ::-1])
    out: dict = {"ar_order": fwd.order, "ar_order_per_channel": uni.order, "gaps": {}, "forecast": {},
                 "band_completion": {}}
    # band completion, zero baseline: trust stages 1..k, add nothing above (the completed bands stay empty)
    names = band_names(val.bands)
    for k in range(1, val.stages_NKCT.shape[1]):
        est = val.stages_NKCT[:, k - 1]
        err = psd_band_error_db(x, est, sfreq, val.bands)  # adjacent band: only filter-transition leakage
        out["band_completion"][str(k)] = {
            "observed_up_to": names[k - 1], "snr_db_full_band": snr_db(x, est),
            "psd_error_db_completed_bands": {b: err[b] for b in names[k:]}}

    def score(est: np.ndarray, mask_NT: np.ndarray) -> dict:
        m = np.broadcast_to(mask_NT[:, None, :], x.shape)
        return {"snr_db": snr_db(x[m], est[m]), "mse_uv2": mse(x[m], est[m])}

    for g_sec in gaps_sec:
        g = int(round(g_sec * sfreq))
        margin = fwd.order + 1
        if g < 1 or g + 2 * margin > n_t:
            continue
        starts = rng.integers(margin, n_t - g - margin + 1, size=n)
        mask_NT = np.zeros((n, n_t), bool)
        for i, s in enumerate(starts):
            mask_NT[i, s:s + g] = True
        out["gaps"][f"{g_sec:g}"] = {
            "zeros": score(fill_gap_zeros(x, mask_NT), mask_NT),
            "linear interpolation": score(fill_gap_linear(x, mask_NT), mask_NT),
            "AR forward": score(fill_gap_ar(x, mask_NT, fwd), mask_NT),
            "AR forward-backward": score(fill_gap_ar(x, mask_NT, fwd, bwd), mask_NT),
            "AR per channel forward-backward": score(fill_gap_ar(x, mask_NT, uni, uni_bwd), mask_NT),
        }
    for h_sec in horizons_sec:
        h = int(round(h_sec * sfreq))
        if h < 1 or n_t - h < fwd.order:
            continue
        ctx, truth = x[:, :, : n_t - h], x[:, :, n_t - h:]

        def fc(est: np.ndarray) -> dict:
            return {"snr_db": snr_db(truth, est), "mse_uv2": mse(truth, est)}

        out["forecast"][f"{h_sec:g}"] = {"zeros": fc(forecast_zeros(ctx, h)), "AR forward": fc(fwd.forecast(ctx, h)),
                                         "AR per channel": fc(uni.forecast(ctx, h))}
    return out


# ------------------------------------------------------------------------------------------------ main
def _report(result: dict, f_max: float | None) -> dict:
    rd, floors, comp = result["rate_distortion"], result["generation"], result["completion"]
    full = rd["stages"][-1]
    tables = [{"title": "Transform codec vs Gaussian rate-distortion bound (full band, SNR dB on validation)",
               "columns": ["bits/s/channel", "codec SNR (dB)", "Gaussian bound (dB)", "bound, val-oracle (dB)"]
               + [f"codec on stage '{s}'" for s in rd["stages"][:-1]],
               "rows": [[r, rd["codec_snr_db"][full][i], rd["gaussian_bound_snr_db"][full][i],
                         rd["gaussian_bound_oracle_snr_db"][full][i]]
                        + [rd["codec_snr_db"][s][i] for s in rd["stages"][:-1]]
                        for i, r in enumerate(rd["rates_bits_per_sec_per_channel"])]}]
    for ref_name, by_class in floors.items():
        for cname, res in by_class.items():
            bands = list(next(iter(res.values()))["psd_error_db"])
            tables.append({
                "title": f"Generation floors and anchors, class '{cname}', against real {ref_name} windows",
                "columns": ["windows"] + [f"PSD err {b} (dB)" for b in bands] + ["corr. distance", "C2ST AUC"],
                "rows": [[k] + [v["psd_error_db"][b] for b in bands]
                         + [v["corr_distance"], (f"{v['c2st_auc']:.2f} ± {v['c2st_auc_std']:.2f}"
                                                 if v["c2st_auc"] is not None else "–")] for k, v in res.items()]})
    if comp["gaps"]:
        methods = list(next(iter(comp["gaps"].values())))
        tables.append({"title": "Gap filling baselines: SNR (dB) on the masked samples (full band, validation)",
                       "columns": ["gap (s)"] + methods,
                       "rows": [[g] + [v[m]["snr_db"] for m in methods] for g, v in comp["gaps"].items()]})
    if comp["forecast"]:
        methods = list(next(iter(comp["forecast"].values())))
        tables.append({"title": "Forecasting baselines: SNR (dB) on the forecast horizon (full band, validation)",
                       "columns": ["horizon (s)"] + methods,
                       "rows": [[h] + [v[m]["snr_db"] for m in methods] for h, v in comp["forecast"].items()]})
    if comp["band_completion"]:
        bc = comp["band_completion"]
        tables.append({"title": "Band completion, zero baseline (keep stages 1..k, nothing above): full-band SNR "
                                "and PSD error of the completed bands (dB)",
                       "columns": ["k", "observed up to", "full-band SNR (dB)", "PSD error of completed bands (dB)"],
                       "rows": [[k, v["observed_up_to"], v["snr_db_full_band"],
                                 ", ".join(f"{b} {e:.1f}" for b, e in v["psd_error_db_completed_bands"].items())]
                                for k, v in bc.items()]})
    d = result["data"]
    root = os.path.relpath(d["root"], REPO_ROOT) if d["root"].startswith(REPO_ROOT + os.sep) else d["root"]
    what = (" (eegmat: PhysioNet mental arithmetic, 6 subjects; validation = held-out Subject05)"
            if os.path.abspath(d["root"]) == os.path.abspath(DEFAULT_DATA_ROOT) else "")
    text = [f"Data: `{root}`{what} — {d['n_train']} training / {d['n_val']} validation windows, {d['n_channels']} "
            f"channels, {d['sfreq']:g} Hz, {d['window_sec']:g}-s windows; models fitted on training, measured on "
            "validation." + (f" Spectra judged up to {f_max:g} Hz." if f_max else ""),
            f"Codec speed: encode+decode at {rd['codec_speed']['rate']:g} bits/s/ch runs at "
            f"{rd['codec_speed']['x_realtime']:.0f}× real time (median of repeats); linear VAR sampling "
            f"{result['speed']['linear_var_sampling_windows_per_sec']:.0f} windows/s.",
            "Floors: real windows against real windows of the same recordings (alternate blocks of 3 windows) show "
            "what sampling noise alone gives with this many windows (small classes have higher floors); real "
            "windows of the training subjects show the subject shift a model trained on them starts from; "
            "phase-randomised windows keep every (cross-)spectrum and nothing else; the linear VAR model is the "
            "Gaussian anchor a generative model must beat. C2ST AUC: mean ± std over grouped folds; with few "
            "windows, values below 0.5 are cross-validation noise, not a better-than-real score."]
    return {"title": "Classical baselines (codec, Gaussian bound, generation floors, completion)",
            "text": [t for t in text if t], "tables": tables,
            "figures": [{"title": "codec RD curve vs Gaussian bound", "path": "baselines_rd.png"},
                        {"title": "PSD of real vs baseline windows", "path": "baselines_psd.png"}]}


def main(argv: Sequence[str] | None = None) -> dict:
    parser = bench_parser("python -m benchmarks.bench_baselines", __doc__.split("\n\n")[0])
    parser.add_argument("--rates", default=None,
                        help="comma-separated rates in bits/s/channel (default 8,16,28,40,55,64,80,100,128; "
                             "quick: 16,28,55,64)")
    parser.add_argument("--max-order", type=int, default=None, help="largest AR/VAR order tried by AIC "
                        "(default 20; quick: 10)")
    parser.add_argument("--var-order", type=int, default=None,
                        help="fixed order of the linear VAR/AR models (default: chosen by AIC up to --max-order)")
    parser.add_argument("--f-max", type=float, default=45.0,
                        help="judge spectra up to this frequency in Hz (eegmat is low-passed at 45 Hz); 0 = Nyquist")
    parser.add_argument("--max-windows", type=int, default=None,
                        help="cap on windows read per split (default: all; quick: 160 train, 60 val)")
    parser.add_argument("--folds", type=int, default=5, help="C2ST cross-validation folds")
    parser.add_argument("--seed", type=int, default=0, help="seed for subsets, surrogates, samples and folds")
    args = parser.parse_args(argv)
    if args.max_order is not None and args.max_order < 1:
        raise UserError(f"--max-order must be >= 1, got {args.max_order}")
    if args.var_order is not None and args.var_order < 1:
        raise UserError(f"--var-order must be >= 1, got {args.var_order}")
    try:
        rates = ([float(r) for r in args.rates.split(",")] if args.rates else
                 ([16, 28, 55, 64] if args.quick else [8, 16, 28, 40, 55, 64, 80, 100, 128]))
    except ValueError:
        raise UserError(f"--rates got {args.rates!r}; expected numbers like '16,28,64'") from None
    max_order = args.max_order or (10 if args.quick else 20)
    f_max = args.f_max or None
    rng = np.random.default_rng(args.seed)
    root = args.data_root or ensure_default_dataset(DEFAULT_DATA_ROOT)
    max_train = args.max_windows or (160 if args.quick else None)
    max_val = args.max_windows or (60 if args.quick else None)
    t0 = time.perf_counter()
    train = load_split(root, "train", max_train, rng)
    val = load_split(root, "val", max_val, rng)
    if train.stages_NKCT.shape[1:] != val.stages_NKCT.shape[1:]:
        raise DatasetError(f"{root}: train windows are {train.stages_NKCT.shape[1:]} but val windows are "
                           f"{val.stages_NKCT.shape[1:]}; rebuild the dataset")
    if f_max is not None:
        f_max = min(f_max, val.sfreq / 2)
        clip_bands(val.bands, f_max)  # fails early with a clear message when f_max is below every band
    classes = label_names(root)
    if len(classes) == 1 or np.all(val.labels < 0):
        classes = ["all"]
    logger.info("data: %s, train %s, val %s", root, train.stages_NKCT.shape, val.stages_NKCT.shape)

    t_rd = time.perf_counter()
    rd = rate_distortion(train, val, rates, repeats=3 if args.quick else 5)
    t_gen = time.perf_counter()
    floors, curves, examples = generation_floors(train, val, classes, f_max, max_order, args.folds, args.seed,
                                                 order=args.var_order)
    t_comp = time.perf_counter()
    gaps = [0.1, 0.25, 0.5] if args.quick else [0.1, 0.25, 0.5, 1.0]
    horizons = [0.1, 0.25, 0.5]
    comp = completion_baselines(train, val, gaps, horizons, max_order, args.seed, order=args.var_order)
    t_end = time.perf_counter()
    var_model = LinearVAR(order=comp["ar_order"]).fit(train.full_NCT)
    n_s = 16
    s_time = median_time(lambda: var_model.sample(n_s, val.full_NCT.shape[-1], rng=0), repeats=3, warmup=0)

    result = {
        "name": NAME, "quick": bool(args.quick), "machine": machine_info(),
        "data": {"root": root, "n_train": int(len(train.labels)), "n_val": int(len(val.labels)),
                 "n_channels": int(val.stages_NKCT.shape[2]), "sfreq": val.sfreq,
                 "window_sec": val.stages_NKCT.shape[-1] / val.sfreq, "bands": val.bands.tolist(),
                 "band_names": band_names(val.bands), "classes": classes, "f_max_hz": f_max},
        "rate_distortion": rd, "generation": floors, "completion": comp,
        "speed": {"linear_var_sampling_windows_per_sec": n_s / s_time,
                  "codec_x_realtime": rd["codec_speed"]["x_realtime"]},
        "timing_s": {"load": t_rd - t0, "rate_distortion": t_gen - t_rd, "generation": t_comp - t_gen,
                     "completion": t_end - t_comp},
        "peak_rss_mb": peak_rss_mb(),
        "settings": {"rates": rates, "max_order": max_order, "var_order": args.var_order, "folds": args.folds,
                     "seed": args.seed,
                     "gaps_sec": gaps, "horizons_sec": horizons},
    }
    os.makedirs(args.results_dir, exist_ok=True)
    plot_rd(rd, figure_path(args.results_dir, "baselines_rd.png"))
    if curves:
        plot_psd(curves, f_max, figure_path(args.results_dir, "baselines_psd.png"))
        plot_examples(examples, val.sfreq, figure_path(args.results_dir, "baselines_examples.png"))
    result["psd_curves"] = curves
    result["report"] = _report(result, f_max)
    if not curves:
        result["report"]["figures"] = result["report"]["figures"][:1]
    else:
        result["report"]["figures"].append({"title": "example windows: real vs baselines",
                                            "path": "baselines_examples.png"})
    save_result(NAME, result, args.results_dir)
    logger.info("bench_baselines done in %.1f s", time.perf_counter() - t0)
    return result


def _cli(argv: Sequence[str] | None = None) -> int:
    setup_logging("-v" in (argv or sys.argv[1:]))
    main(argv)
    return 0


if __name__ == "__main__":
    run_cli(_cli, prog="python -m benchmarks.bench_baselines")
