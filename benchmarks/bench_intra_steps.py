"""Tokens inside a scale: VAR with --intra_steps=S and with --intra_ar=R (left to right) against plain
next-scale prediction (S = 1), same run.

Trains (or resumes) one VAR per S, and one with the left-to-right head, on the same tokenizer and dataset, then
reports, each beside its floor:

1. token NLL per scale on validation windows (exact under each model's own order), against token frequencies
   (unigram) and the same-scale left-neighbour bigram;
2. spectral shape of generated vs **reconstructed** validation windows of the same class (tokens in, decoder
   out: the best a sample can look): mean |dB| over 1-Hz bins 1-45 Hz, alpha peak frequency and prominence,
   the step across each stage edge. Floor: reconstructed training vs reconstructed validation windows;
3. C2ST AUC (utils/eeg_c2st.py) of generated vs reconstructed validation windows, beside the floor and beside
   phase-randomised reconstructed training windows;
4. sampling speed at batch 1 and 32 for every step schedule, against the next-token baseline (random
   weights, same depth) in the same run;
5. window-to-window spread of band power of the samples, beside real and reconstructed windows (across
   recordings, and inside one recording).

``--level-clusters K`` also trains the coarse-path model with per-window power levels (VAR/train.py
--level_clusters=K, utils/eeg_levels.py: K k-means clusters per class of the window's channel-mean log band
powers; VAR is conditioned on class and level and draws the level first from its training frequency). Its NLL
row is the NLL given each validation window's level plus the level's own cost (-log2 of its training
frequency): an upper bound on the exact NLL.
"""
from __future__ import annotations

import logging
import math
import os
import time
from typing import Sequence

import numpy as np
import torch

from benchmarks import bench_parser, figure_path, machine_info, parse_ints, save_result
from utils.cli import run_cli, setup_logging
from utils.var_path import ensure_var_importable
from utils.errors import UserError

logger = logging.getLogger(__name__)
NAME = "intra_steps"


def build_parser():
    p = bench_parser("python -m benchmarks.bench_intra_steps", __doc__.split("\n\n")[0])
    p.add_argument("--vae-ckpt", default=None, help="tokenizer checkpoint (VAR/train_vae.py) of the dataset (default: "
                   "the one python -m benchmarks.bench_tokenizer trained, <results-dir>/raw/tokenizer_run)")
    p.add_argument("--runs-dir", default=None, help="folder of the VAR runs: var_S<S>.pt per S (reused when its "
                   "settings match) and var_S<S>-ar-ckpt.pth, the same model as VAR/train.py writes it (for sample.py, "
                   "complete.py, bench_zeroshot --ckpt) (default: <results-dir>/raw/intra_runs)")
    p.add_argument("--steps", default="1,4", help="--intra_steps of the VARs to train and compare")
    p.add_argument("--intra-nbr", type=int, default=4, help="VAR/train.py --intra_nbr of the models with S > 1 "
                   "(placed neighbours handed to each query; 0 = attention only)")
    p.add_argument("--intra-ar", type=int, default=16, help="also train VAR --intra_ar=R (one pass per scale, then "
                   "its tokens drawn left to right, each seeing the R before it; VAR/train.py's default) and compare "
                   "it; 0 = not")
    p.add_argument("--intra-ar-fhat", type=int, default=2, help="also train the --intra-ar model whose code term sees "
                   "the coarser reconstruction at positions i-r..i+r (model AR<R>F<r>; VAR/train.py "
                   "--intra_ar_fhat; 0 = not)")
    p.add_argument("--level-clusters", type=int, default=0, help="also train the coarse-path model with K per-window "
                   "power levels per class (VAR/train.py --level_clusters; 0 = not)")
    p.add_argument("--depth", type=int, default=2, help="VAR depth (2: a 2-core CPU trains both models in under an "
                   "hour; a depth-4 step at batch 32 takes ~10x longer)")
    p.add_argument("--ep", type=int, default=3, help="VAR epochs")
    p.add_argument("--bs", type=int, default=16, help="VAR batch size")
    p.add_argument("--tblr", type=float, default=8e-3, help="VAR base learning rate per 256 windows")
    p.add_argument("--cfg", type=float, default=1.5, help="classifier-free guidance of the samples")
    p.add_argument("--n-per-class", type=int, default=96, help="generated windows per class and schedule")
    p.add_argument("--ar-top-k", default="100", help="comma-separated top-k values to sample the --intra-ar model "
                   "with as extra rows (sampling knob; empty: none)")
    p.add_argument("--speed-repeats", type=int, default=3, help="timed repeats per speed point")
    p.add_argument("--train-only", action="store_true", help="train the VARs and stop (no evaluation)")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--limit", type=int, default=None, help="at most N windows per split (default: all; quick: 160)")
    return p


def train_var(args, S: int, vae, num_classes: int, x_tr: torch.Tensor, y_tr: torch.Tensor, x_va: torch.Tensor,
              y_va: torch.Tensor, out: str, R: int = 0, fhat: int = 0, extra_settings: dict | None = None,
              levels=None):
    """Train VAR --intra_steps=S (or --intra_ar=R) in this process on pre-tokenised windows (bench_generation's loop: AdamW,
    warm-up then linear decay, lowest validation NLL kept), or load the saved result of the same settings.
    With ``levels`` (:class:`utils.eeg_levels.LevelClusters`) the labels are (N, 2): class and level."""
    from benchmarks.bench_generation import train_model
    from models import build_var
    from utils.checkpoint import load_checkpoint, save_checkpoint
    nbr = args.intra_nbr if S > 1 else 0
    settings = dict(S=S, depth=args.depth, ep=args.ep, bs=args.bs, tblr=args.tblr, n_train=len(x_tr))
    if S > 1:
        settings["intra_nbr"] = nbr
    if R > 0:
        settings["intra_ar"] = R
    if fhat:
        settings["intra_ar_fhat"] = fhat
    settings.update(extra_settings or {})
    torch.manual_seed(0)
    var = build_var(vae, "cpu", num_classes=num_classes, depth=args.depth, init_adaln_gamma=1e-3, intra_steps=S, intra_nbr=nbr,
                    intra_ar=R, intra_ar_fhat=fhat, cond_drop_rate=0.1 if num_classes > 1 else 0.0,
                    num_levels=levels.num_levels if levels is not None else 0)
    if levels is not None:
        var.set_level_prior(torch.from_numpy(levels.prior))
    if os.path.exists(out):
        saved, _ = load_checkpoint(out)
        if saved.get("settings") == settings:
            var.load_state_dict(saved["state"])
            return var.eval(), saved["log"]
        logger.info("%s holds another setting (%s); retraining", out, saved.get("settings"))
    log = train_model(var, "var", vae, x_tr, y_tr, ep=args.ep, bs=args.bs, lr=args.tblr * args.bs / 256, wp_ep=1,
                      val=(x_va, y_va))
    save_checkpoint(out, {"settings": settings, "state": var.state_dict(), "log": log})
    return var.eval(), log


def export_ar_ckpt(var, vae, tok: dict, class_names: Sequence[str], path: str, levels=None) -> str:
    """Write ``var`` as VAR/train.py writes ``ar-ckpt-best.pth`` (so sample.py, complete.py and
    bench_zeroshot --ckpt take it); returns ``path``."""
    from utils.checkpoint import save_checkpoint
    extra = {"levels": levels.to_dict()} if levels is not None else {}
    save_checkpoint(path, {"trainer": {"var_wo_ddp": var.state_dict(), "vae_local": vae.state_dict(),
                                       "config": var.get_config()},
                           "tokenizer": tok, "class_names": list(class_names), "epoch": 0, "iter": 0, **extra})
    return path


def _class_names(root: str) -> list[str]:
    from utils.eeg_dataset import EEGWindowDataset, label_names
    return label_names(root, EEGWindowDataset(root, "train"))


def _windows(root: str, split: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from benchmarks.bench_var import load_val
    x, lab, ds = load_val(root, split, limit)
    return x, lab, np.asarray([str(h.source) for h in ds.headers])  # group = recording (C2ST folds)


@torch.no_grad()
def reconstruct(vae, x_NCT: np.ndarray, uv: float, bs: int = 64) -> np.ndarray:
    """Tokens in, decoder out: what a perfect transformer's samples would look like, µV."""
    return np.concatenate([vae.eeg_to_reconstructed_eeg(torch.from_numpy(x_NCT[i:i + bs] / uv).float(),
                                                        last_one=True).float().numpy() * uv
                           for i in range(0, len(x_NCT), bs)]).astype(np.float64)


@torch.no_grad()
def scale_tokens(vae, x_NCT: np.ndarray, uv: float, bs: int = 64) -> list[np.ndarray]:
    """The tokenizer's token maps of windows (µV), per scale (N, pn * G)."""
    per = [vae.eeg_to_idxBl(torch.from_numpy(x_NCT[i:i + bs] / uv).float()) for i in range(0, len(x_NCT), bs)]
    return [np.concatenate([b[si].numpy() for b in per]) for si in range(len(per[0]))]


def count_model_bits(toks_tr: list[np.ndarray], toks_va: list[np.ndarray], V: int, G: int) -> dict:
    """Bits per validation window and scale of the count models fitted on training tokens: token frequencies
    (unigram) and the same-scale left neighbour (bigram; the first position costs the unigram)."""
    from benchmarks.bench_token_nll import choose_parent_prior, parent_bigram_nll, unigram_nll
    uni, left = [], []
    for tr, va in zip(toks_tr, toks_va):
        pn = tr.shape[1] // G
        uni.append(unigram_nll(tr, va, V))
        tr_c, tr_p, va_c, va_p = tr[:, G:], tr[:, :-G], va[:, G:], va[:, :-G]
        nll_left = parent_bigram_nll(tr_c, tr_p, va_c, va_p, V, choose_parent_prior(tr_c, tr_p, V))
        left.append(((pn - 1) * nll_left + uni[-1]) / pn)
    return {"unigram": _bits(uni, toks_va), "left_bigram": _bits(left, toks_va)}


def var_bits(var, vae, x_va: np.ndarray, lab_va: np.ndarray, uv: float) -> list[float]:
    """VAR's validation NLL in bits per window and scale (exact under the model's own order)."""
    from benchmarks.bench_token_nll import var_nll
    nll, toks_va = var_nll(var, vae, torch.from_numpy(x_va / uv).float(), torch.as_tensor(lab_va))
    return _bits(nll, toks_va)


def _bits(nll_per_token: Sequence[float], toks: list[np.ndarray]) -> list[float]:
    """Nats per token -> bits per window, per scale."""
    return [t.shape[1] * v / math.log(2) for t, v in zip(toks, nll_per_token)]


def quality(gen: np.ndarray, gen_lab: np.ndarray, rec_va: np.ndarray, lab_va: np.ndarray, sfreq: float, edges,
            groups_va: np.ndarray) -> dict:
    """Spectral shape (per class, then averaged) and C2ST of generated vs reconstructed validation windows."""
    from utils.eeg_c2st import c2st_auc
    from utils.eeg_metrics import spectral_shape
    per = {}
    for c in sorted(set(gen_lab.tolist())):
        per[int(c)] = spectral_shape(rec_va[lab_va == c], gen[gen_lab == c], sfreq, edges)
    auc = c2st_auc(rec_va, gen, sfreq, groups_a=groups_va, f_max=45.0).auc
    return {"per_class": per, "c2st_auc": auc, **summarise(per)}


def summarise(per: dict) -> dict:
    vals = list(per.values())
    return {"mean_abs_db": float(np.mean([v["mean_abs_db"] for v in vals])),
            "alpha_hz_err": float(np.mean([abs(v["alpha_hz_est"] - v["alpha_hz_ref"]) for v in vals])),
            "alpha_prom_err_db": float(np.mean([abs(v["alpha_prom_db_est"] - v["alpha_prom_db_ref"]) for v in vals])),
            "max_edge_step_db": float(np.mean([max(abs(s) for s in v["edge_step_db"].values()) for v in vals]))}


@torch.no_grad()
def generate(var, labels: Sequence[int], uv: float, cfg: float, steps: int, batch: int = 48, seed: int = 0,
             contributions: bool = False, top_k: int = 0):
    """Samples (N, C, T) µV; with ``contributions``, also each scale's part of them (see :func:`scale_parts`)."""
    out, parts = [], []
    lab = torch.as_tensor(list(labels))
    vae = var.vae_proxy[0]
    for b, i in enumerate(range(0, len(lab), batch)):
        got = var.autoregressive_infer_cfg(B=len(lab[i:i + batch]), label_B=lab[i:i + batch], g_seed=seed + b,
                                           cfg=cfg, intra_steps=steps, ret_stages=contributions, top_k=top_k)
        x, fhats = (got[0], got[2]) if contributions else (got, None)
        out.append(x.float().numpy() * uv)
        if contributions:
            parts.append(scale_parts([vae.fhat_to_eeg(f).float().numpy() * uv for f in fhats]))
    x = np.concatenate(out).astype(np.float64)
    if not contributions:
        return x
    return x, [np.concatenate(p) for p in zip(*parts)]


def scale_parts(stage_decodes: Sequence[np.ndarray]) -> list[np.ndarray]:
    """What each scale adds to the decode: stage 0, then stage k minus stage k-1 (the decoder is linear in the
    accumulated latent, so these add up to the window)."""
    return [stage_decodes[0]] + [stage_decodes[k] - stage_decodes[k - 1] for k in range(1, len(stage_decodes))]


@torch.no_grad()
def reconstructed_parts(vae, x_NCT: np.ndarray, uv: float, bs: int = 64) -> list[np.ndarray]:
    """:func:`scale_parts` of the tokenizer's reconstructions of ``x_NCT`` (µV)."""
    per = [scale_parts([s.float().numpy() * uv for s in vae.eeg_to_reconstructed_eeg(
        torch.from_numpy(x_NCT[i:i + bs] / uv).float())]) for i in range(0, len(x_NCT), bs)]
    return [np.concatenate(p).astype(np.float64) for p in zip(*per)]


def plot_parts(path: str, curves: dict, patch_nums: Sequence[int], sfreq: float) -> None:
    """Mean PSD of each scale's part of the decode; ``curves`` maps a label to (list of parts, style)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from utils.eeg_metrics import mean_psd_db
    n = len(patch_nums)
    window_s = next(iter(curves.values()))[0][0].shape[-1] / sfreq
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 3.4), squeeze=False)
    for si, ax in enumerate(axes[0]):
        nyq = patch_nums[si] / (2 * window_s)  # a scale of pn tokens holds frequencies up to pn / (2 * window)
        for label, (parts, style) in curves.items():
            f, db = mean_psd_db(parts[si], sfreq)
            sel = (f >= 0.5) & (f <= min(45.0, nyq + 3))
            ax.plot(f[sel], db[sel], style, lw=1.2, label=label)
        ax.set_title(f"scale {si} ({patch_nums[si]} tokens)", fontsize=9)
        ax.set_xlabel("Hz")
    axes[0][0].set_ylabel("dB (10 log10 µV²/Hz)")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle("What each scale adds to the decoded window: mean PSD, validation reconstructions vs samples",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def sampling_speed(model, B: int, cfg: float, repeats: int, **kw) -> float:
    """Median windows per second of ``model.autoregressive_infer_cfg`` at batch B."""
    from benchmarks import median_time
    lab = torch.arange(B) % max(model.num_classes, 1)
    sec = median_time(lambda: model.autoregressive_infer_cfg(B=B, label_B=lab, g_seed=0, cfg=cfg, **kw),
                      repeats=repeats, warmup=1)
    return B / sec


def plot_psd(path: str, curves: dict, class_names: Sequence[str], edges) -> None:
    """Mean PSD curves per class; ``curves`` maps a class index to {label: (freqs, dB, style)}."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(curves), figsize=(6 * len(curves), 4), squeeze=False)
    for ax, c in zip(axes[0], curves):
        name = class_names[c]
        for label, (f, db, style) in curves[c].items():
            sel = (f >= 1) & (f <= 45)
            ax.plot(f[sel], db[sel], style, lw=1.2, label=label)
        for e in edges:
            ax.axvline(e, color="0.8", lw=0.8, zorder=0)
        ax.set_title(f"{name}: mean PSD of validation-class windows")
        ax.set_xlabel("Hz")
        ax.set_ylabel("dB (10 log10 µV²/Hz)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    steps = parse_ints(args.steps, "--steps")
    args.ar_top_k = ",".join(str(k) for k in parse_ints(args.ar_top_k, "--ar-top-k")) if args.ar_top_k.strip() else ""
    raw = os.path.join(args.results_dir, "raw")
    if args.data_root is None:  # bench_tokenizer's: all 26 eegmat subjects, four held out, 5-s windows every 2.5 s
        from benchmarks.bench_baselines import ensure_bench_dataset
        args.data_root = ensure_bench_dataset(raw)
    if args.vae_ckpt is None:
        args.vae_ckpt = os.path.join(raw, "tokenizer_run", "vae-ckpt-best.pth")
        if not os.path.exists(args.vae_ckpt):
            raise UserError(f"{args.vae_ckpt} not found; run python -m benchmarks.bench_tokenizer first or pass --vae-ckpt")
    args.runs_dir = args.runs_dir or os.path.join(raw, "intra_runs")
    if args.quick:
        args.depth, args.ep, args.n_per_class, args.speed_repeats = 2, 1, 8, 1
        args.limit = args.limit or 160
    for flag, path in (("--data-root", args.data_root), ("--vae-ckpt", args.vae_ckpt)):
        if not os.path.exists(path):
            raise UserError(f"{flag}={path}: not found")
    ensure_var_importable()
    torch.set_num_threads(max(1, args.threads))
    os.makedirs(args.runs_dir, exist_ok=True)
    from utils.eeg_baselines import phase_randomize
    from utils.eeg_c2st import c2st_auc
    from utils.eeg_bands import DEFAULT_BANDS, band_names
    from utils.eeg_metrics import band_power_spread, mean_psd_db, spectral_shape
    from models.ar_baseline import build_ar_baseline
    from vae_checkpoint import load_vae

    vae, tok = load_vae(args.vae_ckpt, device="cpu")
    vae.eval()
    x_tr, lab_tr, groups_tr = _windows(args.data_root, "train", args.limit)
    x_va, lab_va, groups_va = _windows(args.data_root, "val", args.limit)
    class_names = _class_names(args.data_root)
    uv = float(tok["uv_scale"])
    to_t = lambda x: torch.from_numpy(x / uv).float()  # noqa: E731
    sfreq = float(tok["sfreq"])
    rec_tr, rec_va = reconstruct(vae, x_tr, uv), reconstruct(vae, x_va, uv)
    models = {}  # name -> (var, log, S, R, level clusters)
    specs = [(f"S{S}", S, 0, 0, 0) for S in steps] + ([(f"AR{args.intra_ar}", 1, args.intra_ar, 0, 0)] if args.intra_ar > 0 else [])
    if args.intra_ar > 0 and args.intra_ar_fhat > 0:
        specs.append((f"AR{args.intra_ar}F{args.intra_ar_fhat}", 1, args.intra_ar, args.intra_ar_fhat, 0))
        if args.level_clusters > 0:  # as VAR/train.py --level_clusters: clusters of the input windows' levels
            from utils.eeg_levels import fit_level_clusters, window_levels
            specs.append((f"AR{args.intra_ar}F{args.intra_ar_fhat}L{args.level_clusters}", 1, args.intra_ar,
                          args.intra_ar_fhat, args.level_clusters))
            feats_tr = window_levels(x_tr, sfreq, tok["bands"])
            clusters = fit_level_clusters(feats_tr, lab_tr, len(class_names), args.level_clusters, tok["bands"])
            lvl_tr = clusters.assign(feats_tr, lab_tr)
            lvl_va = clusters.assign(window_levels(x_va, sfreq, tok["bands"]), lab_va)
    for name, S, R, Fr, L in specs:
        logger.info("VAR --intra_steps=%d --intra_ar=%d fhat=%d level clusters=%d", S, R, Fr, L)
        y_tr, y_va = (np.stack([lab_tr, lvl_tr], 1), np.stack([lab_va, lvl_va], 1)) if L else (lab_tr, lab_va)
        models[name] = (*train_var(args, S, vae, len(class_names), to_t(x_tr), torch.as_tensor(y_tr),
                                   to_t(x_va), torch.as_tensor(y_va), os.path.join(args.runs_dir, f"var_{name}.pt"),
                                   R=R, fhat=Fr, extra_settings={"level_clusters": L, "levels_of": "input windows, outliers out of the fit"}
                                   if L else None, levels=clusters if L else None), S, R, L)
        export_ar_ckpt(models[name][0], vae, tok, class_names, os.path.join(args.runs_dir, f"var_{name}-ar-ckpt.pth"),
                       levels=clusters if L else None)
    if args.train_only:
        return {}
    edges = sorted({float(hi) for _, hi in tok["bands"]})[:-1]
    classes = [c for c in range(len(class_names)) if (lab_tr == c).any() and (lab_va == c).any()]
    rng = np.random.default_rng(0)
    sub = rng.choice(len(rec_tr), size=min(len(rec_tr), len(rec_va)), replace=False)
    floor = {"per_class": {int(c): spectral_shape(rec_va[lab_va == c], rec_tr[lab_tr == c], sfreq, edges)
                           for c in classes},
             "c2st_auc": c2st_auc(rec_va, rec_tr[sub], sfreq, groups_a=groups_va, f_max=45.0).auc,
             "c2st_auc_phase_randomised": c2st_auc(rec_va, phase_randomize(rec_tr[sub], 0), sfreq, groups_a=groups_va,
                                                   f_max=45.0).auc}
    floor.update(summarise(floor["per_class"]))
    real_vs_rec = {"per_class": {int(c): spectral_shape(x_va[lab_va == c], rec_va[lab_va == c], sfreq, edges)
                                 for c in classes}}
    real_vs_rec.update(summarise(real_vs_rec["per_class"]))
    # window-to-window spread of band power: the references a sample's spread is read against
    spread = {"real val": band_power_spread(x_va, sfreq, lab_va, f_max=45.0),
              "reconstructed val": band_power_spread(rec_va, sfreq, lab_va, f_max=45.0),
              "reconstructed train": band_power_spread(rec_tr, sfreq, lab_tr, f_max=45.0),
              "reconstructed train, inside one recording": band_power_spread(rec_tr, sfreq, lab_tr, groups_tr,
                                                                             f_max=45.0)}

    labels = [c for c in classes for _ in range(args.n_per_class)]
    gen_lab = np.asarray(labels)
    curves = {c: {"real val": (*mean_psd_db(x_va[lab_va == c], sfreq), "k-"),
                  "reconstructed val": (*mean_psd_db(rec_va[lab_va == c], sfreq), "k--"),
                  "reconstructed train (floor)": (*mean_psd_db(rec_tr[lab_tr == c], sfreq), "k:")}
              for c in classes}
    counts = count_model_bits(scale_tokens(vae, x_tr, uv), scale_tokens(vae, x_va, uv), vae.vocab_size,
                              vae.tokens_per_pos)
    rows = {}
    parts_curves = {"reconstructed val": (reconstructed_parts(vae, x_va, uv), "k-")}
    for name, (var, log, S, R, L) in models.items():
        if L:  # given each validation window's level, plus the level's cost: an upper bound on the exact NLL
            nll = {"var": var_bits(var, vae, x_va, np.stack([lab_va, lvl_va], 1), uv),
                   "level_bits": float(-np.log2(np.maximum(clusters.prior[lab_va, lvl_va], 1e-12)).mean())}
        else:
            nll = {"var": var_bits(var, vae, x_va, lab_va, uv), **counts}
        draw_labels = labels  # (a model with levels draws each window's level from its training frequency)
        top_ks = [int(k) for k in args.ar_top_k.split(",") if k.strip()] if R and not L else []
        label = model_label(S, R, var.intra_ar_fhat, L)
        for s, k in [(s, 0) for s in sorted({1, S} | ({2} if S >= 2 else set()))] + [(1, k) for k in top_ks]:
            t0 = time.time()
            gen, parts = generate(var, draw_labels, uv, args.cfg, s, contributions=True, top_k=k)
            if s == S and not k:
                parts_curves[f"VAR {label}"] = (parts, "-")
            q = quality(gen, gen_lab, rec_va, lab_va, sfreq, edges, groups_va)
            # the same samples against what the model was fitted to: separates learning from subject shift
            q_tr = quality(gen, gen_lab, rec_tr, lab_tr, sfreq, edges, groups_tr)
            q["vs_train"] = {k_: q_tr[k_] for k_ in ("mean_abs_db", "alpha_hz_err", "alpha_prom_err_db",
                                                     "max_edge_step_db", "c2st_auc")}
            q["band_power_spread"] = band_power_spread(gen, sfreq, gen_lab, f_max=45.0).tolist()
            q["sample_seconds"] = time.time() - t0
            q["windows_per_s"] = {B: sampling_speed(var, B, args.cfg, args.speed_repeats, intra_steps=s, top_k=k)
                                  for B in (1, 32)}
            rows[f"{name}/steps{s}" + (f"/topk{k}" if k else "")] = {"train_steps": S, "sample_steps": s,
                                                                    "intra_ar": R, "top_k": k,
                                                                    "intra_ar_fhat": var.intra_ar_fhat,
                                                                    "level_clusters": L, **q}
            logger.info("%s steps=%d top-k=%d: %s", name, s, k,
                        {k_: q[k_] for k_ in ("mean_abs_db", "alpha_hz_err", "c2st_auc")})
            if s == S and not k:
                for c in classes:
                    curves[c][f"VAR {label}"] = (*mean_psd_db(gen[gen_lab == c], sfreq), "-")
        rows[f"{name}/steps{S}"]["nll_bits"] = nll
        rows[f"{name}/steps{S}"]["train"] = {k: log.get(k) for k in ("wall_seconds", "selected_epoch",
                                                                       "selected_val_nll", "val_curve")}
    torch.manual_seed(0)
    var0 = next(iter(models.values()))[0]  # (the AR baseline below has random weights: speed only)
    ar = build_ar_baseline(vae, "cpu", num_classes=var0.num_classes, depth=args.depth).eval()
    ar_speed = {B: sampling_speed(ar, B, args.cfg, args.speed_repeats) for B in (1, 32)}
    png = figure_path(args.results_dir, "intra_steps_psd.png")
    plot_psd(png, curves, class_names, edges)
    png_parts = figure_path(args.results_dir, "intra_steps_scale_parts.png")
    plot_parts(png_parts, parts_curves, var0.patch_nums, sfreq)
    res = {"name": NAME, "machine": machine_info(), "data": os.path.basename(args.data_root.rstrip("/")),
           "n_train": len(x_tr), "n_val": len(x_va), "depth": args.depth, "ep": args.ep, "cfg": args.cfg,
           "intra_nbr": args.intra_nbr,
           "floor": floor, "real_vs_reconstructed": real_vs_rec, "rows": rows,
           "band_power_spread": {k: v.tolist() for k, v in spread.items()},
           "spread_bands": list(band_names(DEFAULT_BANDS)),
           "ar_windows_per_s": ar_speed, "patch_nums": list(var0.patch_nums), "figure": os.path.basename(png),
           "figure_parts": os.path.basename(png_parts)}
    res["report"] = build_report(res)
    save_result(NAME, res, args.results_dir)
    return res


def model_label(S: int, R: int = 0, fhat: int = 0, levels: int = 0) -> str:
    return ((f"S=1, left to right R={R}" + (f" + coarse {fhat}" if fhat else "")
             + (f" + {levels} level clusters" if levels else "")) if R else f"S={S}")


def row_label(r: dict) -> str:
    """A sampling row's name: model, steps, and top-k when set."""
    k = r.get("top_k", 0)
    return (f"{model_label(r['train_steps'], r.get('intra_ar', 0), r.get('intra_ar_fhat', 0), r.get('level_clusters', 0))}, "
            f"{r['sample_steps']} step(s)" + (f", top-k {k}" if k else ""))


def build_report(res: dict) -> dict:
    """Title, text, tables and figure of a saved result (benchmarks/report.py renders them)."""
    fl = res["floor"]
    rows = []
    for key, r in res["rows"].items():
        rows.append([row_label(r), round(r["mean_abs_db"], 2),
                     round(r["alpha_hz_err"], 2), round(r["alpha_prom_err_db"], 2), round(r["max_edge_step_db"], 2),
                     round(r["c2st_auc"], 3), round(r["windows_per_s"]["1"] if "1" in r["windows_per_s"]
                                                    else r["windows_per_s"][1], 2),
                     round(r["windows_per_s"]["32"] if "32" in r["windows_per_s"] else r["windows_per_s"][32], 2)])
    train_rows = [[row_label(r)]
                  + [round(r["vs_train"][k], 3 if k == "c2st_auc" else 2) for k in
                     ("mean_abs_db", "alpha_hz_err", "alpha_prom_err_db", "max_edge_step_db", "c2st_auc")]
                  for r in res["rows"].values() if "vs_train" in r]
    ar = {str(k): v for k, v in res["ar_windows_per_s"].items()}
    rows.append(["floor: reconstructed train", round(fl["mean_abs_db"], 2), round(fl["alpha_hz_err"], 2),
                 round(fl["alpha_prom_err_db"], 2), round(fl["max_edge_step_db"], 2), round(fl["c2st_auc"], 3), "", ""])
    rows.append(["phase-randomised reconstructed train", "", "", "", "", round(fl["c2st_auc_phase_randomised"], 3),
                 "", ""])
    rows.append(["next-token AR (random weights)", "", "", "", "", "", round(ar["1"], 3), round(ar["32"], 3)])
    nll_rows = []
    for key, r in res["rows"].items():
        if "nll_bits" not in r or "var" not in r["nll_bits"]:
            continue
        n = r["nll_bits"]
        lvl = n.get("level_bits")
        label = model_label(r['train_steps'], r.get('intra_ar', 0), r.get('intra_ar_fhat', 0), r.get('level_clusters', 0))
        if lvl is not None:
            label += f" (given the level; total adds its {lvl:.1f} bits)"
        nll_rows.append([label] + [round(v, 0) for v in n["var"]] + [round(sum(n["var"]) + (lvl or 0.0), 0)])
        if "unigram" in n:
            counts = n
    for name, key in (("unigram", "unigram"), ("same-scale left-neighbour bigram", "left_bigram")):
        nll_rows.append([name] + [round(v, 0) for v in counts[key]] + [round(sum(counts[key]), 0)])
    spread_rows = [[row_label(r)] + [round(v, 3) for v in r["band_power_spread"]]
                   for r in res["rows"].values() if "band_power_spread" in r]
    spread_rows += [[name] + [round(v, 3) for v in vals] for name, vals in res.get("band_power_spread", {}).items()]
    budget = "; ".join(f"{model_label(r['train_steps'], r.get('intra_ar', 0), r.get('intra_ar_fhat', 0), r.get('level_clusters', 0))}: {r['train']['wall_seconds'] / 60:.0f} min"
                       for r in res["rows"].values() if r.get("train", {}).get("wall_seconds"))
    rep = {
        "title": "Tokens inside a scale: steps and the left-to-right head",
        "text": [f"VAR depth {res['depth']}, {res['ep']} epochs (lowest validation NLL kept), on {res['n_train']} "
                 f"training / {res['n_val']} validation windows of {res['data']} (26 eegmat subjects, 4 held out); "
                 f"samples with guidance {res['cfg']}. Generated windows are compared with the tokenizer's "
                 "reconstructions of the validation windows of the same class; the floor row compares reconstructed "
                 "training windows with them. Sampling speed in windows/s on this CPU.",
                 f"Models with S > 1 use --intra_nbr={res.get('intra_nbr', 0)}. CPU budget of each training run "
                 f"(wall time, one thread, both runs sharing the 2 cores): {budget}."],
        "tables": [{"title": "Generated vs reconstructed validation windows (means over classes)",
                    "columns": ["model, sampling", "mean abs dB diff, 1-45 Hz", "alpha peak err (Hz)",
                                "alpha prominence err (dB)", "largest edge step (dB)", "C2ST AUC",
                                "windows/s (batch 1)", "windows/s (batch 32)"], "rows": rows},
                   {"title": "The same samples vs reconstructed training windows (what the models were fitted to; "
                             "the floor row of the table above is the held-out subjects' distance from them)",
                    "columns": ["model, sampling", "mean abs dB diff, 1-45 Hz", "alpha peak err (Hz)",
                                "alpha prominence err (dB)", "largest edge step (dB)", "C2ST AUC"],
                    "rows": train_rows},
                   {"title": "Validation NLL per scale (bits/window), exact under each model's order; count "
                             "models fitted on the training tokens below",
                    "columns": ["model"] + [f"scale {i}" for i in range(len(res["patch_nums"]))] + ["total"],
                    "rows": nll_rows},
                   {"title": "Window-to-window spread of band power: standard deviation of log10 band power over "
                             "the windows of one class, mean over channels and classes (samples that vary less than "
                             "real windows are too alike)",
                    "columns": ["windows"] + list(res.get("spread_bands", [])), "rows": spread_rows}],
        "figures": [{"title": "Mean PSD per class", "path": res["figure"]}]
        + ([{"title": "What each scale adds (mean PSD of stage k minus stage k-1)", "path": res["figure_parts"]}]
           if res.get("figure_parts") else []),
    }
    rep["tables"] = [t for t in rep["tables"] if t["rows"]]  # results saved before a table existed
    return rep


def _cli(argv: Sequence[str] | None = None) -> int:
    setup_logging("-v" in (argv or []))
    res = main(argv)
    if res:
        rep = res["report"]
        print("\n".join(rep["text"]))
        for t in rep["tables"]:
            print(f"\n{t['title']}\n" + " | ".join(t["columns"]))
            for r in t["rows"]:
                print(" | ".join(str(v) for v in r))
    return 0


if __name__ == "__main__":
    run_cli(_cli, prog="python -m benchmarks.bench_intra_steps")
