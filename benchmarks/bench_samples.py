"""What a tokenizer gives VAR's samples: the default VAR trained on each tokenizer's tokens, samples against real EEG.

Usage::

    python -m benchmarks.bench_samples [--tokenizers NAME=PATH ...] [--ep 8] [--n-per-class 160]

For every tokenizer (default: the two ``bench_tokenizer`` trains, ``raw/tokenizer_run`` and
``raw/tokenizer_run_before``), ``VAR/train.py`` with its defaults (levels, left-to-right head) at ``--depth``
and ``--ep`` trains into ``raw/samples_var_<NAME>`` (an existing run is resumed, a finished one reused), then
``sample.py``'s ``generate`` draws ``--n-per-class`` windows per class, with the band gain of their class and
level (when the tokenizer has band-gain codes) and as plain decodes. Each set is judged against the **real**
held-out windows of its class, beside its floors from the same windows (``utils.main_report.sample_numbers``):
per-band PSD error, C2ST AUC (logistic, grouped folds), window-to-window spread of band power; floors are real
training windows (the subject floor) and phase-randomised validation windows; the training windows also enter the
C2ST the way the samples do, ungrouped (``utils.eeg_c2st.overlap_groups``). The same numbers against the
real training windows say how well the model learned its own data. A third table says what gives the samples away:
the held-out C2ST on band powers alone and on channel correlations alone, and the spread of band power inside one
power level against the training windows of that level (histograms in ``samples_band_power.png``).

``--split-by time`` is the second protocol: the held-out windows are the last 30 % of every recording of all 26
subjects (``bench_tokenizer --split-by time`` trains its tokenizer, ``raw/tokenizer_run_time``); runs, results and
figures get ``_time`` in their names (``raw/samples_var_new_time``, ``samples_time.json``).
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from typing import Sequence

import numpy as np
import torch

from benchmarks import bench_parser, figure_path, machine_info, plot_psd_curves, save_result
from benchmarks.bench_baselines import HELD_OUT, add_split_flag, ensure_bench_dataset, split_suffix, split_title
from utils.cli import run_cli, setup_logging
from utils.errors import UserError
from utils.project_info import REPO_ROOT
from utils.var_path import ensure_var_importable

logger = logging.getLogger(__name__)
NAME = "samples"
TAKES_SPLIT_BY = True  # run_all --split-by passes its protocol on


def build_parser():
    p = bench_parser("python -m benchmarks.bench_samples", __doc__.split("\n\n")[0])
    p.add_argument("--tokenizers", nargs="*", default=None, metavar="NAME=PATH",
                   help="tokenizer checkpoints to compare (default: new=raw/tokenizer_run/vae-ckpt-best.pth and "
                        "before=raw/tokenizer_run_before/vae-ckpt-best.pth of the results folder)")
    p.add_argument("--depth", type=int, default=2, help="VAR depth")
    p.add_argument("--ep", type=int, default=8, help="VAR epochs")
    p.add_argument("--bs", type=int, default=16, help="VAR batch size")
    p.add_argument("--n-per-class", type=int, default=160, help="generated windows per class")
    p.add_argument("--max-real", type=int, default=400, help="real windows per split to judge against")
    p.add_argument("--train-only", action="store_true", help="train the VARs and stop")
    p.add_argument("--temperature", nargs="*", default=None, metavar="T", help="sample.py --temperature of the samples "
                   "(each one number or one per scale, comma-separated); several are judged side by side, the first "
                   "under the plain names (default: sample.py's, then 1 = the model's own distribution)")
    p.add_argument("--draws", type=int, default=5, help="sets of samples drawn with sampling seeds 0, 1000, 2000, ... "
                   "for the C2ST against the reconstructions (mean and sd over the sets: one set's AUC moves by a "
                   "few hundredths from seed to seed); the other numbers come from the first set")
    p.add_argument("--seed", type=int, default=0, help="VAR training seed; runs of seed N > 0 go to "
                   "raw/samples_var_<NAME>_seed<N> (the spread between seeds)")
    add_split_flag(p)
    return p


def parse_tokenizers(items: Sequence[str] | None, raw: str, sfx: str = "") -> list[tuple[str, str]]:
    """``['new=PATH', ...]`` -> [(name, path)]; default: the tokenizer benchmark's runs that exist (its quick mode
    trains only the new one) of the protocol whose name suffix is ``sfx``
    (:func:`~benchmarks.bench_baselines.split_suffix`)."""
    if not items:
        items = [f"{name}={path}" for name, path in
                 (("new", os.path.join(raw, f"tokenizer_run{sfx}", "vae-ckpt-best.pth")),
                  ("before", os.path.join(raw, f"tokenizer_run_before{sfx}", "vae-ckpt-best.pth")))
                 if os.path.isfile(path)]
        if not items:
            split = f" --split-by {sfx[1:]}" if sfx else ""
            raise UserError(f"no tokenizer in {raw}: run python -m benchmarks.bench_tokenizer{split} first (it trains "
                            f"raw/tokenizer_run{sfx}) or pass --tokenizers NAME=PATH")
    out = []
    for it in items:
        name, sep, path = it.partition("=")
        if not sep or not name or not path:
            raise UserError(f"--tokenizers: {it!r}; expected NAME=PATH")
        if not os.path.isfile(path):
            raise UserError(f"--tokenizers: {path} not found; run python -m benchmarks.bench_tokenizer first or pass "
                            "NAME=PATH of a vae-ckpt-best.pth")
        out.append((name, path))
    return out


def train_var(data: str, vae_ckpt: str, out: str, depth: int, ep: int, bs: int, seed: int = 0) -> str:
    """VAR/train.py with its defaults into ``out`` (resumed or reused when there); returns ar-ckpt-best.pth."""
    cmd = [sys.executable, os.path.join(REPO_ROOT, "VAR", "train.py"), f"--data_path={data}",
           f"--vae_ckpt={vae_ckpt}", f"--local_out_dir_path={out}", f"--depth={depth}", f"--ep={ep}", f"--bs={bs}",
           f"--seed={seed}", "--workers=0"]
    logger.info("training VAR: %s", " ".join(cmd))
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"VAR/train.py failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return os.path.join(out, "ar-ckpt-best.pth")


def _temp_name(temps: Sequence[float]) -> str:
    """A temperature list as it was given: one number when all scales share it."""
    return f"{temps[0]:g}" if len(set(temps)) == 1 else ",".join(f"{t:g}" for t in temps)


def judge(gen: dict, real: dict, sfreq: float, bands, class_names: Sequence[str], draws: dict | None = None) -> dict:
    """``main_report.sample_numbers`` of the samples against the real validation and the real training windows;
    ``draws``: per split, the C2ST groups that treat its windows as separate draws
    (``utils.main_report.load_split(..., with_draws=True)``), for the floor tested the way the samples are."""
    from utils.main_report import sample_numbers
    va, vl, vs = real["val"]
    tr, tl, ts = real["train"]
    d = draws or {}
    g, gl = gen["signal"].astype(np.float64), gen["labels"]
    return {"vs_val": sample_numbers(g, gl, va[:, -1], vl, vs, tr[:, -1], tl, ts, sfreq, bands, class_names,
                                     train_draw_groups=d.get("train")),
            "vs_train": sample_numbers(g, gl, tr[:, -1], tl, ts, va[:, -1], vl, vs, sfreq, bands, class_names,
                                       train_draw_groups=d.get("val"))}


def scale_cutoffs_hz(tok: dict) -> list[float]:
    """Signal frequencies where a scale's token map stops: scale k's L_k positions resolve latent frequencies up to
    ``L_k / (2 T_sec)``, and a latent frequency f stands for the signal frequencies ``m sfreq / D ± f`` (the D samples
    of a latent position fold the spectrum), within 1 Hz of neither 0 nor Nyquist. The last scale (full latent rate)
    has none."""
    sfreq, T, D = float(tok["sfreq"]), int(tok["n_times"]), int(tok["downsample"])
    nyq, lat_rate = sfreq / 2, sfreq / D
    out = set()
    for L in tok["v_patch_nums"][:-1]:
        f = L * sfreq / (2 * T)
        for m in range(D + 1):
            for g in (m * lat_rate - f, m * lat_rate + f):
                if 1.0 < g < nyq - 1.0:
                    out.add(round(g, 3))
    return sorted(out)


def reconstructions(vae, tok: dict, real: dict, gains: bool) -> dict:
    """The tokenizer's full decodes of both splits' real windows, µV (N, C, T) per split (with the band-gain codes
    when ``gains``)."""
    from benchmarks.bench_tokenizer import decode_stages
    return {s: decode_stages(vae, tok, real[s][0], gains=gains)[:, -1] for s in ("val", "train")}


def shape_numbers(rec: dict, tok: dict, gen: dict, real: dict, class_names: Sequence[str],
                  draws: dict | None = None) -> dict:
    """Spectral shape (``utils.eeg_metrics.spectral_shape``: mean |dB| over 1-Hz bins from 1 to 45 Hz, alpha peak
    frequency and prominence, the drop across each stage edge) of the samples against the tokenizer's
    reconstructions ``rec`` of the real windows of each split and class (:func:`reconstructions`: the best a sample
    can look), beside the floor: the other split's reconstructions against the same reference. The same
    drop is also measured across every scale cutoff (:func:`scale_cutoffs_hz`) away from the alpha peak, where
    samples can step although no band ends there.

    Also issue 13's C2ST (``utils.eeg_c2st``, folds grouped by subject) against the same reconstructions, beside
    the other split's reconstructions (the floor) and those phase-randomised (the goal: at or below them). The floor's
    windows are grouped by recording in the folds, which keeps the classifier from learning their subjects; the
    samples enter ungrouped, and a perfect sampler of the training subjects would reproduce those subjects. So with
    ``draws`` (per split, from ``utils.main_report.load_split(..., with_draws=True)``) both floors are also tested the way the samples
    are, each window its own draw ("floor, ungrouped", "phase-randomised floor, ungrouped"): the like-for-like
    comparison for samples when the splits share no subject. Where they share recordings (the time split) that floor
    falls below chance, because a classifier that meets a recording's training windows calls its held-out windows
    'training' too; there the grouped floor is the goal."""
    from utils.eeg_baselines import phase_randomize
    from utils.eeg_c2st import c2st_auc, c2st_features, feature_groups
    from utils.eeg_metrics import spectral_shape
    sfreq = float(tok["sfreq"])
    edges = sorted({float(hi) for _, hi in tok["bands"]})[:-1]
    cutoffs = [f for f in scale_cutoffs_hz(tok) if all(abs(f - e) > 0.5 for e in edges)]
    out = {}
    for ref, other in (("val", "train"), ("train", "val")):
        for c, cname in enumerate(class_names):
            in_r, in_o = real[ref][1] == c, real[other][1] == c
            r, o = rec[ref][in_r], rec[other][in_o]
            g = gen["signal"][gen["labels"] == c].astype(np.float64)
            if min(len(r), len(o), len(g)) < 2:
                continue
            g_r, g_o = real[ref][2][in_r], real[other][2][in_o]
            feats = lambda x: c2st_features(x, sfreq, tok["bands"], f_max=45.0)
            F_r, F_o, F_p = feats(r), feats(o), feats(phase_randomize(o, rng=c))
            sets = {"generated": (feats(g), None), "floor": (F_o, g_o), "phase-randomised floor": (F_p, g_o)}
            if draws is not None:
                d_o = draws[other][in_o]
                sets.update({"floor, ungrouped": (F_o, d_o), "phase-randomised floor, ungrouped": (F_p, d_o)})
            groups = {"all": slice(None), **feature_groups(F_r.shape[1], r.shape[1])}
            auc = {grp: {k: c2st_auc(F_r, F_x, sfreq, groups_a=g_r, groups_b=gx,
                                     features=(F_r[:, cols], F_x[:, cols])).auc for k, (F_x, gx) in sets.items()}
                   for grp, cols in groups.items()}
            out[f"{ref}/{cname}"] = {
                "generated": _shape_summary(spectral_shape(r, g, sfreq, edges + cutoffs), edges),
                "floor": _shape_summary(spectral_shape(r, o, sfreq, edges + cutoffs), edges),
                "c2st_auc": auc.pop("all"), "c2st_auc_by_features": auc}
    return out


def draw_seed(d: int) -> int:
    """Sampling seed of set ``d`` (set 0 is the one every other number comes from). ``generate`` gives batch b seed
    ``seed + b``, so sets 1000 apart share no batch seed."""
    return 1000 * int(d)


def c2st_over_draws(draw, n_draws: int, rec: dict, tok: dict, real: dict, class_names: Sequence[str]) -> dict:
    """Issue 13's C2ST (all features, the reference windows grouped by recording, samples ungrouped: as
    :func:`shape_numbers`) of ``n_draws`` sets of samples against the reconstructions ``rec`` of each split and class.

    ``draw(seed) -> {"signal": (N, C, T) µV, "labels": (N,)}`` draws one set (:func:`draw_seed`). Returns, per
    ``"<split>/<class>"``, the AUCs, their mean and sd (ddof 1): one set of 160 windows per class moves the AUC by a
    few hundredths, as large as the gaps the floors are read against."""
    from utils.eeg_c2st import auc_spread, c2st_auc, c2st_features
    if n_draws < 1:
        raise UserError(f"--draws={n_draws}: expected at least one set of samples")
    sfreq = float(tok["sfreq"])
    feats = lambda x: c2st_features(x, sfreq, tok["bands"], f_max=45.0)
    refs = {}
    for ref in ("val", "train"):
        for c, cname in enumerate(class_names):
            in_r = real[ref][1] == c
            if in_r.sum() >= 2:
                refs[f"{ref}/{cname}"] = (c, feats(rec[ref][in_r]), real[ref][2][in_r])
    aucs = {key: [] for key in refs}
    for d in range(n_draws):
        gen = draw(draw_seed(d))
        for key, (c, F_r, g_r) in refs.items():
            g = gen["signal"][gen["labels"] == c].astype(np.float64)
            if len(g) >= 2:
                F_g = feats(g)
                aucs[key].append(float(c2st_auc(F_r, F_g, sfreq, groups_a=g_r, features=(F_r, F_g)).auc))
    return {key: auc_spread(a) for key, a in aucs.items() if a}


def real_level_spread(real: dict, meta: dict, class_names: Sequence[str]) -> dict | None:
    """Per class, the spread of band power inside a power level (``utils.eeg_metrics.band_power_spread`` with the
    level as the group) of the real training windows, whose levels come from the run's level clusters: (K,) per
    class. None for a model without levels. Computed once per run; :func:`level_spread` divides by it."""
    from utils.eeg_levels import LevelClusters, window_levels
    from utils.eeg_metrics import band_power_spread
    if not meta.get("levels"):
        return None
    tok = meta["tokenizer"]
    sfreq, bands = float(tok["sfreq"]), tok["bands"]
    x, lab = real["train"][0][:, -1], real["train"][1]
    lev = LevelClusters.from_dict(meta["levels"]).assign(window_levels(x, sfreq, bands), lab)
    return {cname: band_power_spread(x[lab == c], sfreq, groups_N=lev[lab == c], bands=bands, f_max=45.0)
            for c, cname in enumerate(class_names) if (lab == c).sum() >= 2}


def level_spread(gen: dict, real_spread: dict | None, meta: dict, class_names: Sequence[str]) -> dict | None:
    """The samples' spread of band power inside a power level over the real training windows' (``real_spread``, from
    :func:`real_level_spread`): per class, one ratio per band (1 = as varied as real windows of one level). None for
    a model without levels or samples without them."""
    from utils.eeg_metrics import band_power_spread
    if real_spread is None or (gen["levels"] < 0).any():
        return None
    tok = meta["tokenizer"]
    out = {}
    for c, cname in enumerate(class_names):
        in_g = gen["labels"] == c
        if in_g.sum() < 2 or cname not in real_spread:
            continue
        s_g = band_power_spread(gen["signal"][in_g].astype(np.float64), float(tok["sfreq"]),
                                groups_N=gen["levels"][in_g], bands=tok["bands"], f_max=45.0)
        out[cname] = [float(a / b) for a, b in zip(s_g, real_spread[cname])]
    return out


def _draws_text(d: dict | None) -> str:
    """``mean ± sd (n)`` of :func:`c2st_over_draws`' entry, or "-"."""
    return "-" if not d else f"{d['mean']:.3f} ± {d['sd']:.3f} ({len(d['auc'])})"


def _shape_summary(sh: dict, edges: Sequence[float]) -> dict:
    """Errors of one ``spectral_shape``; its drops split into the stage edges (``edges``) and the scale cutoffs. A
    cutoff within 2 Hz of the reference's alpha peak is left out: the drop there is the peak's flank, which the alpha
    columns measure."""
    names = {f"{e:g}" for e in edges}
    at_edges = {k: v for k, v in sh["edge_step_db"].items() if k in names}
    at_cuts = {k: v for k, v in sh["edge_step_db"].items()
               if k not in names and abs(float(k) - sh["alpha_hz_ref"]) > 2.0}
    return {"mean_abs_db": sh["mean_abs_db"], "alpha_hz_err": abs(sh["alpha_hz_est"] - sh["alpha_hz_ref"]),
            "alpha_prom_err_db": abs(sh["alpha_prom_db_est"] - sh["alpha_prom_db_ref"]),
            "max_edge_step_db": max(abs(v) for v in at_edges.values()), "edge_step_db": at_edges,
            "max_cutoff_step_db": max((abs(v) for v in at_cuts.values()), default=0.0), "cutoff_step_db": at_cuts}


def _plot_band_power(path: str, gens: dict, real: dict, sfreq: float, bands, class_names: Sequence[str]) -> None:
    """Per class and band: histograms of the windows' channel-mean log10 band power (``utils.eeg_levels.window_levels``)
    of the real windows of both splits and of every set in ``gens``: how varied the samples are, not only their mean."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from utils.eeg_bands import band_names
    from utils.eeg_levels import window_levels
    names = band_names(bands)
    fig, axes = plt.subplots(len(class_names), len(names), figsize=(3.2 * len(names), 2.6 * len(class_names)),
                             squeeze=False)
    for c, cname in enumerate(class_names):
        sets = {"real val": real["val"][0][real["val"][1] == c, -1],
                "real train": real["train"][0][real["train"][1] == c, -1],
                **{k: g["signal"][g["labels"] == c] for k, g in gens.items()}}
        lv = {k: window_levels(np.asarray(x, dtype=np.float64), sfreq, bands) for k, x in sets.items() if len(x)}
        for b, bname in enumerate(names):
            ax = axes[c, b]
            lo = min(v[:, b].min() for v in lv.values())
            hi = max(v[:, b].max() for v in lv.values())
            edges = np.linspace(lo, hi, 31)
            for k, v in lv.items():
                ax.hist(v[:, b], bins=edges, density=True, histtype="step", label=k,
                        linewidth=2.0 if k.startswith("real") else 1.2)
            ax.set_title(f"{cname}: {bname}", fontsize=9)
            ax.set_xlabel("log10 band power (µV², channel mean)", fontsize=7)
            ax.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _plot_psd(path: str, gens: dict, real: dict, sfreq: float, class_names: Sequence[str],
              held_out: str = HELD_OUT["subject"]) -> None:
    """Per class: mean Welch PSD of the real windows of both splits, the training windows' reconstructions and every set
    of samples, up to 45 Hz and, below, up to 20 Hz (the alpha peak, the lower band edges and scale cutoffs)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from utils.eeg_metrics import welch_psd
    fig, axes = plt.subplots(2, len(class_names), figsize=(6 * len(class_names), 7.5), squeeze=False)
    for c, cname in enumerate(class_names):
        sets = {"real val": real["val"][0][real["val"][1] == c, -1],
                "real train": real["train"][0][real["train"][1] == c, -1],
                **{k: g["signal"][g["labels"] == c] for k, g in gens.items()}}
        curves = {}
        for key, x in sets.items():
            f, p = welch_psd(np.asarray(x, dtype=np.float64), sfreq)
            curves.setdefault("freqs_hz", f)
            curves[key] = p
        for row, f_max in enumerate((45.0, 20.0)):
            ax = axes[row, c]
            plot_psd_curves(ax, curves, f_max=f_max, legend_size=7)
            ax.set_title(f"{cname} (real val = {held_out}){', up to 20 Hz' if row else ''}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    if args.seed < 0:
        raise UserError(f"--seed={args.seed}: expected a training seed >= 0")
    if args.draws < 1:
        raise UserError(f"--draws={args.draws}: expected at least one set of samples")
    setup_logging(args.verbose)
    torch.set_num_threads(1)
    ensure_var_importable()
    raw = os.path.join(args.results_dir, "raw")
    sfx = split_suffix(args.split_by)
    toks = parse_tokenizers(args.tokenizers, raw, sfx)
    data = args.data_root or ensure_bench_dataset(raw, args.split_by)
    ep, n = (1, 16) if args.quick else (args.ep, args.n_per_class)
    suffix = sfx + (f"_seed{args.seed}" if args.seed else "")
    ckpts = {name: train_var(data, path, os.path.join(raw, f"samples_var_{name}{suffix}"), args.depth, ep, args.bs,
                             args.seed) for name, path in toks}
    if args.train_only:
        return {}
    import sample
    from utils.main_report import load_split
    loaded = {s: load_split(data, s, 64 if args.quick else args.max_real, with_draws=True) for s in ("val", "train")}
    real = {s: v[:3] for s, v in loaded.items()}
    draws = {s: v[3] for s, v in loaded.items()}
    rows, shape_rows, away_rows, result_toks, psd = [], [], [], {}, {}
    for name, path in toks:
        var, vae, meta = sample.load_var_checkpoint(ckpts[name])
        specs = args.temperature or [str(sample.DEFAULT_TEMPERATURE), "1"]
        temps = [sample.parse_temperature(t, len(var.patch_nums)) for t in dict.fromkeys(specs)]
        tok = meta["tokenizer"]
        labels = [c for c in range(var.num_classes) for _ in range(n)]
        res = {"vae_ckpt": os.path.abspath(path), "var_ckpt": os.path.abspath(ckpts[name]), "epoch": meta["epoch"]}
        # (name, band gains, calibrated): the plain decode, the band-gain codes' class-and-level gain (measured on real
        # tokens) and the gain measured on the model's own samples (VAR/sample_calib.py, what sample.py gives)
        decodes = ([("plain decode", False, False)]
                   + ([("with band gains", True, False)] if meta.get("level_gain_db") else [])
                   + ([("calibrated gains", True, True)] if meta.get("sample_gain_db") else []))
        # the first temperature under the plain names; the others named by their temperature
        variants = [(d if i == 0 else f"{d}, temperature {_temp_name(t)}", g, cal, t)
                    for i, t in enumerate(temps) for d, g, cal in decodes]
        # the best a sample can look: the real windows through the tokenizer, decoded once per decode kind
        from vae_checkpoint import band_gain
        plot_gains = band_gain(tok) is not None  # the plot: with the tokenizer's band-gain codes if it has them
        recs = {g: reconstructions(vae, tok, real, g) for g in {g for _, g, _ in decodes} | {plot_gains}}
        real_spread = real_level_spread(real, meta, meta["class_names"])  # shared by every variant
        from utils.eeg_metrics import low_power_share
        f_lo = float(tok["bands"][0][0])
        real_low = {cname: {s: low_power_share(real[s][0][real[s][1] == c, -1], float(tok["sfreq"]), f_lo)
                            for s in ("train", "val")} for c, cname in enumerate(meta["class_names"])}
        psd[f"{name}: training windows reconstructed"] = {"signal": recs[plot_gains]["train"], "labels": real["train"][1]}
        for variant, gains, calibrated, temp in variants:
            gen = sample.generate(var, vae, meta, labels, seed=0, batch=64, stages=False, gains=gains,
                                  calibrated=calibrated, temperature=temp)
            res[variant] = judge(gen, real, float(tok["sfreq"]), tok["bands"], meta["class_names"], draws)
            res[variant]["shape"] = shape_numbers(recs[gains], tok, gen, real, meta["class_names"], draws)
            res[variant]["level_spread"] = spread = level_spread(gen, real_spread, meta, meta["class_names"])
            if (gains, calibrated) == decodes[-1][1:] and temp is temps[0]:  # what sample.py gives: the C2ST's spread
                def draw(seed: int) -> dict:  # called right here, so the loop's current values
                    return gen if seed == 0 else sample.generate(var, vae, meta, labels, seed=seed, batch=64,
                                                                 stages=False, gains=gains, calibrated=calibrated,
                                                                 temperature=temp)
                res[variant]["c2st_draws"] = c2st_over_draws(draw, 1 if args.quick else args.draws, recs[gains], tok,
                                                             real, meta["class_names"])
            # what the band-power features (from the first band's lower edge up) never see: drift and offsets
            res[variant]["low_power_share"] = low = {
                cname: {"generated": low_power_share(gen["signal"][gen["labels"] == c], float(tok["sfreq"]), f_lo),
                        "real train": real_low[cname]["train"], "real held-out": real_low[cname]["val"]}
                for c, cname in enumerate(meta["class_names"]) if (gen["labels"] == c).sum() > 0}
            for c, cname in enumerate(meta["class_names"]):
                sh = res[variant]["shape"].get(f"val/{cname}")
                if sh is None:
                    continue
                by = sh["c2st_auc_by_features"]
                away_rows.append([name, variant, cname, *(f"{by[k]['generated']:.3f} ({by[k]['floor']:.3f}; "
                                                          f"{by[k]['phase-randomised floor']:.3f}"
                                                          + (f"; ungrouped {by[k]['floor, ungrouped']:.3f}; "
                                                             f"{by[k]['phase-randomised floor, ungrouped']:.3f}"
                                                             if "floor, ungrouped" in by[k] else "") + ")"
                                                          for k in by),
                                  "/".join(f"{v:.2f}" for v in spread[cname]) if spread and cname in spread else "-",
                                  f"{100 * low[cname]['generated']:.1f} ({100 * low[cname]['real train']:.1f})"
                                  if cname in low else "-"])
            for key, sh in res[variant]["shape"].items():
                ref, cname = key.split("/", 1)
                g, fl = sh["generated"], sh["floor"]
                auc = sh["c2st_auc"]
                shape_rows.append([name, variant, cname, "held-out" if ref == "val" else "training",
                                   *(f"{g[k]:.2f} ({fl[k]:.2f})" for k in ("mean_abs_db", "alpha_hz_err",
                                                                           "alpha_prom_err_db", "max_edge_step_db",
                                                                           "max_cutoff_step_db")),
                                   f"{auc['generated']:.3f} ({auc['floor']:.3f}; {auc['phase-randomised floor']:.3f})",
                                   f"{auc['floor, ungrouped']:.3f}; {auc['phase-randomised floor, ungrouped']:.3f}",
                                   _draws_text(res[variant].get("c2st_draws", {}).get(key))])
            if (gains, calibrated) == decodes[-1][1:]:  # the plot shows the samples as users get them (sample.py)
                psd[f"{name}: {variant}" + (f", temperature {_temp_name(temp)}" if temp is temps[0] and len(temps) > 1
                                            else "")] = gen
            for c, cname in enumerate(meta["class_names"]):
                for ref in ("vs_val", "vs_train"):
                    row = res[variant][ref]["per_class"].get(cname)
                    if row is None:
                        continue
                    g, fl, ph = row["generated"], row["real train (floor)"], row["phase-randomised val"]
                    fl_u = row["real train, ungrouped"]
                    spread_ref = res[variant][ref]["val_band_power_spread"][cname]
                    rows.append([name, variant, cname, "held-out" if ref == "vs_val" else "training",
                                 "/".join(f"{v:.2f}" for v in g["psd_error_db"].values()),
                                 round(fl["max_psd_error_db"], 2), round(g["c2st_auc"], 3), round(fl["c2st_auc"], 3),
                                 round(fl_u["c2st_auc"], 3), round(ph["c2st_auc"], 3),
                                 round(float(np.mean([g["band_power_spread"][b] / spread_ref[b] for b in spread_ref])), 2)])
        result_toks[name] = res
    result = dict(machine=machine_info(), quick=bool(args.quick), data_root=os.path.abspath(data),
                  split_by=args.split_by, depth=args.depth,
                  ep=ep, bs=args.bs, seed=args.seed, n_per_class=n, temperature=temps[0], other_temperatures=temps[1:],
                  tokenizers=result_toks)
    fig = f"{NAME}{sfx}_psd.png"
    _plot_psd(figure_path(args.results_dir, fig), psd, real, float(tok["sfreq"]), meta["class_names"],
              HELD_OUT[args.split_by])
    fig_bp = f"{NAME}{sfx}_band_power.png"
    _plot_band_power(figure_path(args.results_dir, fig_bp), psd, real, float(tok["sfreq"]), tok["bands"],
                     meta["class_names"])
    result["report"] = dict(
        title="VAR's samples against real EEG: tokenizers and sampling temperatures"
              + split_title(args.split_by),
        text=[f"VAR/train.py defaults (4 power levels, left-to-right head), depth {args.depth}, {ep} epochs, batch "
              f"{args.bs}, training seed {args.seed}, trained on each tokenizer's tokens; {n} samples per class (sampling seed 0, "
              f"temperature {_temp_name(temps[0])}"
              + "".join(f"; rows named 'temperature {_temp_name(t)}' drew at that one" for t in temps[1:])
              + f"), judged against {args.max_real} real windows of "
              + ("the 4 held-out subjects ('held-out') or of the training subjects ('training'). " if not sfx else
                 "the last 30 % of every recording of all 26 subjects ('held-out') or of their first 70 % "
                 "('training'). ")
              + "Decodes: 'plain decode'; 'with band gains', the class-and-level gain of the tokenizer's band-gain codes, "
              "measured on real tokens; 'calibrated gains', the gain measured at the end of training on the model's own "
              "samples (VAR/sample_calib.py; what sample.py gives). "
              "'floor': the other split's real windows against the same reference (the largest band error; C2ST); "
              "'phase-rand.': the reference's own windows, phase-randomised. Spread: the samples' window-to-window sd "
              "of log band power over the reference's, mean over bands (1 = as varied as real windows). Spectral shape "
              "(issue 13's measure): against the tokenizer's reconstructions of the reference windows, the floor being "
              "the other split's reconstructions. C2ST folds keep a floor's windows of one recording together, so the "
              "classifier never meets their subjects in training; samples enter ungrouped, each its own draw. "
              "'ungrouped': the same floor entered the way the samples are (each window its own draw, overlapping "
              "windows of one recording together), what a perfect sampler of the other split's subjects would score. "
              f"'C2ST over draws': the samples sample.py gives, drawn {1 if args.quick else args.draws} times (sampling "
              "seeds 0, 1000, ...), mean ± sd of their C2ST; a single set's AUC is one of these draws."],
        tables=[dict(title="Samples against real windows: per-band PSD error (dB, delta..gamma), C2ST AUC, spread",
                     columns=["tokenizer", "decode", "class", "reference", "PSD error", "floor max", "C2ST",
                              "C2ST floor", "C2ST floor ungrouped", "C2ST phase-rand.", "spread"], rows=rows),
                dict(title="Spectral shape against the tokenizer's reconstructions of real windows (with the codes "
                           "for samples with band gains), floor in brackets: mean |dB| 1-45 Hz, alpha peak error (Hz), "
                           "alpha prominence error (dB), largest change of the drop across a stage edge and across a scale "
                           "cutoff more than 2 Hz from the alpha peak (dB); C2ST AUC against the same reconstructions "
                           "(floor; the floor's windows phase-randomised, issue 13's goal), and the same two with the "
                           "floor's windows ungrouped; for the samples sample.py gives, the C2ST's mean ± sd over "
                           "--draws sets of samples (sampling seeds 0, 1000, ...; their count in brackets)",
                     columns=["tokenizer", "decode", "class", "reference", "mean abs dB", "alpha Hz", "alpha prom. dB",
                              "edge step dB", "cutoff step dB", "C2ST (floor; phase-rand.)",
                              "ungrouped: floor; phase-rand.", "C2ST over draws"], rows=shape_rows),
                dict(title="What gives the samples away: the same C2ST against the held-out subjects' reconstructions "
                           "on one kind of feature (floor; phase-rand.; the same two ungrouped), and the spread of band power inside a power "
                           "level, samples over the training windows of the same class and level (delta..gamma; 1 = as "
                           "varied); the share of power below the first band, which the features do not see (%, real "
                           "training windows in brackets)",
                     columns=["tokenizer", "decode", "class", "C2ST band powers", "C2ST channel correlations",
                              "spread inside a level", "power below the first band %"], rows=away_rows)],
        figures=[dict(title="Mean PSD of the samples beside real windows", path=fig),
                 dict(title="How varied the samples are: per window, channel-mean log band power", path=fig_bp)])
    save_result(NAME + sfx, result, args.results_dir)
    return result


def _cli(argv: Sequence[str] | None = None) -> int:
    res = main(argv)
    if res:
        print("\n".join(res["report"]["text"]))
        t = res["report"]["tables"][0]
        print(" | ".join(t["columns"]))
        for row in t["rows"]:
            print(" | ".join(str(v) for v in row))
    return 0


if __name__ == "__main__":
    run_cli(_cli, prog="python -m benchmarks.bench_samples")
