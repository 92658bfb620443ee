"""Generate EEG with a trained VAR checkpoint: full-spectrum windows in µV and their cumulative band
stages, for chosen classes; optionally plot them beside real windows (docs/design.md §7).

Usage (from the repository root)::

    python VAR/sample.py --ckpt=local_output/ar-ckpt-best.pth --n=8 --out=samples.npz \\
        [--class_label=rest,arithmetic] [--level=draw] [--cfg=1.5] [--top_k=0] [--top_p=0] [--seed=0] \\
        [--plot=samples.png --data_path=DIR]

``--n`` windows are generated for every class in ``--class_label`` (default: every class), so the file
holds N = n x classes windows. The output npz has ``signal`` (N, C, T) float32 µV, ``cumulative_bands``
(N, K, C, T) float32 µV (stage k = the tokenizer's decode of the partial sum f_hat after band k),
``labels`` (N,), ``levels`` (N,) (each window's power level, -1 = none), ``class_names``, ``sfreq``,
``ch_names``, ``bands`` (K, 2) Hz, ``band_gains`` (whether the decodes got their class and level's band gain),
``calibrated`` (whether that gain was measured on the model's own samples), and the sampling settings.

Band gains: at the end of training VAR/train.py draws a batch of samples per class (``--calib_n``) and stores, per
class, power level, channel and band, the gain that gives them the mean log band power of the real training windows
of their group (``sample_gain_db``); samples get the gain of their class and level. Runs from before that, or
``--no_calib``, use the gain measured on the real tokens' decodes (``level_gain_db``, tokenizers with band-gain
codes); ``--no_gains`` gives the plain decode.
The same checkpoint, settings, seed and ``--batch`` give the same windows.

Shape letters: N windows, K stages, C channels, T samples.
"""
from __future__ import annotations

import logging
import os
import sys
from typing import Any, Sequence

import numpy as np
import torch

from utils.checkpoint import load_checkpoint
from utils.cli import ArgumentParser, check_new_outputs, run_cli, setup_logging
from utils.errors import CheckpointError, UserError

logger = logging.getLogger("sample")


#: Softmax temperature of the token draws of sample.py, complete.py and ``generate`` (docs/design.md §3). A trained
#: model's per-token distributions are broader than the data's, and drawing from them at 1 makes each scale's
#: token sequence too white: flat band spectra, an alpha peak too low and too flat. Measured on eegmat
#: (benchmarks/results/samples.json, two VAR seeds): 0.9 brings the samples closer to the training windows (C2ST,
#: alpha peak, steps at band edges and scale cutoffs); 0.85 and 0.8 overshoot the alpha peak.
DEFAULT_TEMPERATURE = 0.9
#: Classifier-free guidance at the last scale (upstream's default), of sample.py and ``generate``.
DEFAULT_CFG = 1.5


def load_var_checkpoint(path: str, device: str | torch.device = "cpu"):
    """Rebuild VAR and its tokenizer from an ``ar-ckpt-*.pth`` file (no other file needed).

    Returns
    -------
    var : VAR
        In eval mode on ``device``.
    vae : VQVAE
        The frozen tokenizer the model was trained on.
    meta : dict
        ``tokenizer`` (info dict with sfreq, bands, ch_names, uv_scale, ...), ``class_names``,
        ``num_classes``, ``epoch``, ``iter``.

    Raises
    ------
    CheckpointError
        Missing, damaged or non-VAR checkpoint.
    """
    from models import VAR, VQVAE
    if os.path.isdir(path):  # a run folder: take its best checkpoint, else its last
        found = [os.path.join(path, n) for n in ("ar-ckpt-best.pth", "ar-ckpt-last.pth")
                 if os.path.isfile(os.path.join(path, n))]
        if not found:
            raise CheckpointError(f"--ckpt={path} is a folder without ar-ckpt-best.pth or ar-ckpt-last.pth; pass a "
                                  "VAR/train.py output folder or one of those files")
        path = found[0]
    elif not os.path.isfile(path):
        raise CheckpointError(f"--ckpt={path}: file not found; pass ar-ckpt-best.pth or ar-ckpt-last.pth from VAR/train.py")
    state, used = load_checkpoint(path, map_location="cpu")
    trainer = state.get("trainer")
    if not isinstance(trainer, dict) or "var_wo_ddp" not in trainer or "tokenizer" not in state:
        raise CheckpointError(f"{used}: not a VAR checkpoint (keys {sorted(state)[:6]}); pass ar-ckpt-*.pth "
                              "written by VAR/train.py")
    tok = state["tokenizer"]
    from trainer import with_legacy_defaults
    cfg = with_legacy_defaults(trainer["config"])
    vae = VQVAE.from_config(tok["vae_config"], test_mode=True)
    vae.load_state_dict(trainer["vae_local"], strict=True)
    vae = vae.to(device).eval()
    var = VAR(vae_local=vae, num_classes=int(cfg["num_classes"]), depth=int(cfg["depth"]),
              embed_dim=int(cfg["embed_dim"]), num_heads=int(cfg["num_heads"]), mlp_ratio=float(cfg["mlp_ratio"]),
              drop_path_rate=float(cfg["drop_path_rate"]), norm_eps=float(cfg["norm_eps"]),
              shared_aln=bool(cfg["shared_aln"]), cond_drop_rate=float(cfg["cond_drop_rate"]),
              attn_l2_norm=bool(cfg["attn_l2_norm"]), patch_nums=tuple(cfg["patch_nums"]),
              intra_steps=int(cfg["intra_steps"]), intra_mix=float(cfg["intra_mix"]),
              intra_nbr=int(cfg["intra_nbr"]), intra_ar=int(cfg["intra_ar"]),
              intra_ar_fhat=int(cfg["intra_ar_fhat"]), num_levels=int(cfg["num_levels"]))
    var.load_state_dict(trainer["var_wo_ddp"], strict=True)
    var = var.to(device).eval()
    for p in var.parameters():
        p.requires_grad_(False)
    meta = dict(tokenizer=tok, class_names=list(state.get("class_names") or [f"class{i}" for i in range(var.num_classes)]),
                num_classes=var.num_classes, epoch=int(state.get("epoch", 0)), iter=int(state.get("iter", 0)), path=used,
                levels=state.get("levels"), level_gain_db=state.get("level_gain_db"),
                sample_gain_db=state.get("sample_gain_db"), sample_calib=state.get("sample_calib"))
    return var, vae, meta


def resolve_classes(text: str | None, class_names: Sequence[str]) -> list[int]:
    """Parse ``--class_label``: comma-separated names or indices; None/'' = every class."""
    if text is None or text.strip() in ("", "all"):
        return list(range(len(class_names)))
    out = []
    for tok in text.split(","):
        tok = tok.strip()
        if tok in class_names:
            out.append(list(class_names).index(tok))
            continue
        try:
            idx = int(tok)
        except ValueError:
            raise UserError(f"--class_label got {tok!r}; expected one of {list(class_names)} or an index "
                            f"0..{len(class_names) - 1}") from None
        if not 0 <= idx < len(class_names):
            raise UserError(f"--class_label got {idx}; this model has classes 0..{len(class_names) - 1} "
                            f"({list(class_names)})")
        out.append(idx)
    return out


def resolve_level(text: str, num_levels: int, ckpt: str) -> int | None:
    """Parse ``--level``: 'draw' -> None, 'unknown' -> -1, or an index 0..num_levels-1."""
    text = str(text).strip().lower()
    if text == "draw":
        return None
    if num_levels == 0:
        raise UserError(f"--level={text}: {ckpt} was trained without levels (--level_clusters=0); drop --level")
    if text == "unknown":
        return -1
    try:
        idx = int(text)
    except ValueError:
        raise UserError(f"--level={text!r}: expected 'draw', 'unknown' or an index 0..{num_levels - 1}") from None
    if not 0 <= idx < num_levels:
        raise UserError(f"--level={idx}: {ckpt} has levels 0..{num_levels - 1}")
    return idx


@torch.no_grad()
def generate(var, vae, meta: dict, labels_N: Sequence[int], cfg: float = DEFAULT_CFG, top_k: int = 0, top_p: float = 0.0,
             seed: int | None = 0, batch: int = 64, more_smooth: bool = False,
             stages: bool = True, intra_steps: int | None = None,
             level: int | None = None, gains: bool = True, calibrated: bool = True,
             temperature: float | Sequence[float] = DEFAULT_TEMPERATURE) -> dict[str, np.ndarray]:
    """Sample windows for the given labels.

    Parameters
    ----------
    labels_N : sequence of int
        Class of each window.
    seed : int | None
        Batch b uses generator seed ``seed + b``; None = nondeterministic.
    stages : bool
        Also decode every cumulative stage.
    intra_steps : int | None
        Forward passes per scale (None = the model's own ``intra_steps``, exact ancestral sampling).
    level : int | None
        For a model with levels: None draws each window's level from its training frequency in the class
        (batch b's generator seeded ``seed + b``); an int fixes it (negative = unknown).
    gains : bool
        Give the decodes their class and level's band gain when the checkpoint holds one (False: plain decodes).
    calibrated : bool
        With ``gains``: the gain measured on the model's own samples (``meta['sample_gain_db']``, written at the
        end of VAR/train.py) when the checkpoint holds it; False, or an older checkpoint: the gain measured on the
        real tokens' decodes (``meta['level_gain_db']``). Both (classes + 1, levels + 1, C, K) dB.
    temperature : float | sequence of float
        Softmax temperature of the token draws, one for all scales or one per scale (1 = the model's own;
        default :data:`DEFAULT_TEMPERATURE`).

    Returns
    -------
    dict
        ``signal`` (N, C, T) float32 µV, ``cumulative_bands`` (N, K, C, T) float32 µV (if ``stages``),
        ``labels`` (N,) int64, ``levels`` (N,) int64 (-1 = none or unknown), ``band_gains`` (bool) and
        ``calibrated`` (bool: the gains were the samples' own).
    """
    tok = meta["tokenizer"]
    uv_scale = float(tok["uv_scale"])
    n_extra = int(tok.get("n_extra_coarse", 0))
    stage_si = [n_extra + k for k in range(len(tok["bands"]))]
    dev = next(var.parameters()).device
    labels = torch.as_tensor(list(labels_N), dtype=torch.long)
    gain, table, calibrated = sample_gain_table(meta, gains, calibrated)
    sig, cum, lvl = [], [], []
    for b, start in enumerate(range(0, len(labels), batch)):
        lab_B = labels[start:start + batch].to(dev)
        g_seed = None if seed is None else seed + b
        level_B = var.sampling_levels(lab_B, level, g_seed)  # drawn here, as the model would, so the file records them
        lvl.append(torch.full_like(lab_B, -1).cpu() if level_B is None
                   else torch.where(level_B == var.num_levels, -1, level_B).cpu())
        x_BCT, _, ms_fhat = var.autoregressive_infer_cfg(B=lab_B.shape[0], label_B=lab_B,
                                                         g_seed=g_seed, cfg=cfg, top_k=top_k,
                                                         top_p=top_p, more_smooth=more_smooth, ret_stages=True,
                                                         intra_steps=intra_steps, level_B=level_B,
                                                         temperature=temperature)
        dec = (lambda x, n: x) if gain is None else _level_gain(gain, table, lab_B, level_B,
                                                                 gain.n_bands - len(tok["bands"]))
        sig.append((dec(x_BCT, None).float() * uv_scale).cpu())  # port: model units -> µV
        if stages:
            cum.append(torch.stack([dec(vae.fhat_to_eeg(ms_fhat[si]), k + 1).float() * uv_scale
                                    for k, si in enumerate(stage_si)], dim=1).cpu())
    out = {"signal": torch.cat(sig).numpy().astype(np.float32), "labels": labels.numpy().astype(np.int64),
           "levels": torch.cat(lvl).numpy().astype(np.int64), "band_gains": gain is not None, "calibrated": calibrated}
    if stages:
        out["cumulative_bands"] = torch.cat(cum).numpy().astype(np.float32)
    return out


def plot_samples(path: str, gen: dict, real_NCT: np.ndarray | None, real_labels: np.ndarray | None, meta: dict,
                 n_show: int = 2, n_channels: int = 4) -> None:
    """Generated windows next to real ones (per class), plus the mean PSD of both, into a PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.signal import welch

    from utils.eeg_plot import plot_stacked, stack_offset

    tok = meta["tokenizer"]
    sfreq = float(tok["sfreq"])
    ch_names = tok.get("ch_names") or [f"ch{i}" for i in range(gen["signal"].shape[1])]
    classes = sorted(set(int(c) for c in gen["labels"]))
    n_cols = 2 * n_show + 1
    fig, axes = plt.subplots(len(classes), n_cols, figsize=(3.2 * n_cols, 2.8 * len(classes)), squeeze=False)
    T = gen["signal"].shape[-1]
    t = np.arange(T) / sfreq
    chans = list(range(min(n_channels, gen["signal"].shape[1])))
    for row, c in enumerate(classes):
        name = meta["class_names"][c] if c < len(meta["class_names"]) else str(c)
        g = gen["signal"][gen["labels"] == c]
        r = real_NCT[real_labels == c] if real_NCT is not None else np.zeros((0,) + g.shape[1:])
        spread = stack_offset(g, r)
        for j in range(n_show):
            for kind, arr, col in (("generated", g, j), ("real", r, n_show + j)):
                ax = axes[row, col]
                if j < len(arr):
                    plot_stacked(ax, t, arr[j, chans], [ch_names[ch] for ch in chans], spread,
                                 color="C0" if kind == "generated" else "C1")
                ax.set_title(f"{name}: {kind} #{j}", fontsize=8)
        ax = axes[row, -1]
        f, p_g = welch(g, fs=sfreq, nperseg=min(T, int(2 * sfreq)), axis=-1)
        ax.semilogy(f, p_g.mean(axis=(0, 1)), color="C0", label=f"generated (n={len(g)})")
        if len(r):
            f, p_r = welch(r, fs=sfreq, nperseg=min(T, int(2 * sfreq)), axis=-1)
            ax.semilogy(f, p_r.mean(axis=(0, 1)), color="C1", label=f"real val (n={len(r)})")
        ax.set_title(f"{name}: mean PSD (µV²/Hz)", fontsize=8)
        ax.set_xlabel("Hz", fontsize=7)
        ax.legend(fontsize=7)
    fig.suptitle(f"VAR samples ({os.path.basename(meta['path'])}, µV, {len(chans)} of {len(ch_names)} channels)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def warn_calibration_settings(meta: dict, gen: dict, cfg: float, temps: Sequence[float], top_k: int,
                              top_p: float) -> None:
    """Log when samples got the calibrated gain but were drawn with other settings than the calibration batch."""
    calib = meta.get("sample_calib") or {}
    if not gen.get("calibrated") or not calib:
        return
    now = {"cfg": float(cfg), "temperature": [float(t) for t in temps], "top_k": int(top_k), "top_p": float(top_p)}
    differ = [k for k, v in now.items() if k in calib and calib[k] != v]
    if differ:
        logger.warning("the band gains were measured on samples drawn with %s; these were drawn with %s, so their band "
                       "power may be off by a little (--no_calib: the gains of the real tokens)",
                       ", ".join(f"{k}={calib[k]}" for k in differ), ", ".join(f"{k}={now[k]}" for k in differ))


def sample_gain_table(meta: dict, gains: bool = True, calibrated: bool = True):
    """What :func:`generate` scales the decodes by: ``(BandGain | None, table | None, calibrated)``.

    The table is (classes + 1, levels + 1, C, bands) dB: the samples' own (``sample_gain_db``, with a first column for
    the bins below the first band, :func:`sample_calib.calibration_gain`) when ``calibrated`` and the checkpoint holds
    it, which needs no band-gain codes in the tokenizer; else the class-and-level gain of the tokenizer's band-gain
    codes (``level_gain_db``); else none (plain decodes).
    """
    from vae_checkpoint import band_gain
    tok = meta["tokenizer"]
    if not gains:
        return None, None, False
    if calibrated and meta.get("sample_gain_db") is not None:
        from sample_calib import calibration_gain
        gain = calibration_gain(tok)
        table = torch.as_tensor(meta["sample_gain_db"], dtype=torch.float64)
        if table.shape[-1] != gain.n_bands:
            raise CheckpointError(f"{meta['path']}: its sample gains have {table.shape[-1]} columns, this code expects "
                                  f"{gain.n_bands} (below the first band, then each band); re-run VAR/train.py on the "
                                  "run to measure them again, or sample with --no_calib")
        return gain, table, True
    gain = band_gain(tok) if meta.get("level_gain_db") is not None else None
    return gain, (torch.as_tensor(meta["level_gain_db"], dtype=torch.float64) if gain is not None else None), False


def _level_gain(gain, table_GLCK: torch.Tensor, lab_B: torch.Tensor, level_B: torch.Tensor | None, first: int = 0):
    """A decode -> decode with each window's class-and-level band gain (``n`` bands: a partial decode's; ``first``
    columns of the table come before the first band and apply to every decode)."""
    from models.band_gain import lookup_group_gain_db
    gain_db_BCK = lookup_group_gain_db(table_GLCK, lab_B, level_B, lab_B.shape[0])
    return lambda x_BCT, n: gain.apply_db(x_BCT, gain_db_BCK, None if n is None else n + first)


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="sample.py", description="Generate EEG windows (µV) and their cumulative band stages with a "
                       "trained VAR checkpoint.")
    p.add_argument("--ckpt", required=True, help="VAR checkpoint (ar-ckpt-best.pth / ar-ckpt-last.pth), or the "
                   "VAR/train.py output folder holding them (best is taken)")
    p.add_argument("--n", type=int, default=8, help="windows per requested class")
    p.add_argument("--out", required=True, help="output .npz file")
    p.add_argument("--class_label", default=None, help="comma-separated class names or indices (default: every class)")
    p.add_argument("--cfg", type=float, default=DEFAULT_CFG, help="classifier-free guidance at the last scale (0 = off)")
    p.add_argument("--level", default="draw", help="for a model trained with --level_clusters: 'draw' (each window's "
                   "power level from its training frequency in the class), 'unknown', or a level index 0..L-1 (0 = the "
                   "quietest cluster)")
    p.add_argument("--no_gains", action="store_true", help="plain decodes: without the band gain of each window's class "
                   "and level")
    p.add_argument("--no_calib", action="store_true", help="the class-and-level gain of the tokenizer's band-gain codes "
                   "(measured on real tokens) instead of the one VAR/train.py measured on the model's own samples")
    p.add_argument("--top_k", type=int, default=0, help="sample among the k most likely tokens (0 = off)")
    add_temperature_flag(p)
    p.add_argument("--top_p", type=float, default=0.0, help="nucleus sampling mass (0 = off)")
    p.add_argument("--seed", type=int, default=0, help="random seed (batch b uses seed + b)")
    p.add_argument("--batch", type=int, default=64, help="windows per forward pass")
    p.add_argument("--intra_steps", type=int, default=None,
                   help="forward passes per scale, 1..the model's --intra_steps (default: all of them; fewer is faster)")
    p.add_argument("--more_smooth", type=int, default=0, choices=(0, 1), help="Gumbel-soft code mixing (visualisation)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--plot", default=None, help="also write a PNG of generated next to real windows")
    p.add_argument("--data_path", default=None, help="dataset root whose val windows are shown in --plot")
    p.add_argument("--overwrite", action="store_true", help="replace existing --out / --plot files")
    return p


def add_temperature_flag(p) -> None:
    """``--temperature`` of every sampling CLI (this one and complete.py)."""
    p.add_argument("--temperature", default=str(DEFAULT_TEMPERATURE), help="softmax temperature of the token draws: "
                   "one number, or one per scale separated by commas (1 = the model's own distribution; below 1 the "
                   "draws follow its prediction more closely)")


def parse_temperature(text: str, n_scales: int) -> list[float]:
    """``--temperature``: one number for every scale or ``n_scales`` comma-separated numbers, each > 0."""
    from models.helpers import sampling_temperatures
    try:
        values = [float(v) for v in str(text).split(",")]
        return sampling_temperatures(values, n_scales)
    except ValueError as e:
        raise UserError(f"--temperature={text}: {e}") from None


def check_sampling_cli(args) -> None:
    """The flag checks of every sampling CLI (this one and complete.py): ``--batch``, ``--top_k``/``--top_p``,
    a ``.npz`` ``--out``, and ``--out``/``--plot`` not overwritten without ``--overwrite``."""
    if args.batch < 1:
        raise UserError(f"--batch={args.batch}: expected >= 1")
    if not 0 <= args.top_p < 1:
        raise UserError(f"--top_p={args.top_p}: expected a mass in [0, 1) (0 = off)")
    if args.top_k < 0:
        raise UserError(f"--top_k={args.top_k}: expected >= 0 (0 = off)")
    if not args.out.endswith(".npz"):
        raise UserError(f"--out={args.out}: expected a .npz file name")
    check_new_outputs({"out": args.out, "plot": args.plot}, args.overwrite)


def resolve_device(name: str) -> str:
    """``--device``: 'auto' is CUDA when torch sees a GPU, else the CPU; any other name is used as given."""
    return ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name


def main(argv: Sequence[str] | None = None) -> int:
    setup_logging()
    args = build_parser().parse_args(argv)
    if args.n < 1:
        raise UserError(f"--n={args.n}: expected at least 1 window per class")
    check_sampling_cli(args)
    if args.plot and args.data_path and not os.path.isdir(args.data_path):
        raise UserError(f"--data_path={args.data_path}: not a folder; pass the dataset root holding val/")
    device = resolve_device(args.device)
    var, vae, meta = load_var_checkpoint(args.ckpt, device=device)
    if args.intra_steps is not None:
        from models.intra_scale import check_steps
        try:
            check_steps(args.intra_steps, var.intra_steps, var.patch_nums)
        except ValueError as e:
            raise UserError(f"--intra_steps: {e} ({meta['path']})") from None
    classes = resolve_classes(args.class_label, meta["class_names"])
    level = resolve_level(args.level, var.num_levels, meta["path"])
    temps = parse_temperature(args.temperature, len(var.patch_nums))
    tok = meta["tokenizer"]
    real, real_labels = None, None
    if args.plot and args.data_path:  # read and check the real windows before anything is written
        from utils.eeg_dataset import EEGWindowDataset
        from vae_checkpoint import check_dataset_matches
        ds = EEGWindowDataset(args.data_path, "val")
        check_dataset_matches(tok, ds, meta["path"])
        labs = np.where(ds.labels < 0, 0, ds.labels)
        keep = [i for c in classes for i in np.flatnonzero(labs == c)[:max(args.n, 32)]]
        real = np.stack([ds.window(i).stages_KCT[-1] for i in keep]) if keep else None
        real_labels = labs[keep] if keep else None
    labels = [c for c in classes for _ in range(args.n)]
    gen = generate(var, vae, meta, labels, cfg=args.cfg, top_k=args.top_k, top_p=args.top_p, seed=args.seed,
                   batch=args.batch, more_smooth=bool(args.more_smooth), intra_steps=args.intra_steps, level=level,
                   gains=not args.no_gains, calibrated=not args.no_calib, temperature=temps)
    warn_calibration_settings(meta, gen, args.cfg, temps, args.top_k, args.top_p)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out[:-4] + ".tmp.npz"
    np.savez(tmp, signal=gen["signal"], cumulative_bands=gen["cumulative_bands"], labels=gen["labels"],
             levels=gen["levels"], band_gains=np.bool_(gen["band_gains"]), calibrated=np.bool_(gen["calibrated"]),
             class_names=np.asarray(meta["class_names"]), sfreq=np.float32(tok["sfreq"]),
             ch_names=np.asarray(tok.get("ch_names") or []), bands=np.asarray(tok["bands"], dtype=np.float32),
             cfg=np.float32(args.cfg), top_k=np.int64(args.top_k), top_p=np.float32(args.top_p),
             temperature=np.asarray(temps, dtype=np.float32),
             seed=np.int64(args.seed), ckpt=np.asarray(os.path.abspath(meta["path"])))
    try:
        if args.plot:  # the plot first: when it fails, neither output exists and the same command can re-run
            plot_tmp = args.plot + ".tmp.png"
            plot_samples(plot_tmp, gen, real, real_labels, meta)
            os.replace(plot_tmp, args.plot)
            logger.info("wrote %s", args.plot)
    except BaseException:
        os.remove(tmp)
        raise
    os.replace(tmp, args.out)
    logger.info("wrote %s: signal %s µV, cumulative_bands %s, classes %s", args.out, gen["signal"].shape,
                gen["cumulative_bands"].shape, [meta["class_names"][c] for c in classes])
    return 0


if __name__ == "__main__":
    run_cli(main, prog="sample.py")
