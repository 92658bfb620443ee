"""Plot a prototype rollout (``demo_prediction.pt``) stage by stage over the ground truth, and score it.

Shape letters: K stages, C channels, T time samples.

Usage::

    python -m prototypes.scripts.plot_rollout runs/eeg_demo/demo_prediction.pt runs/eeg_demo/rollout.png \\
        --channel 0 --data-root DIR --split val --sample-idx 0 --json-out runs/eeg_demo/rollout_metrics.json

The PNG has one panel per cumulative stage (prediction over ground truth for one channel); the JSON holds,
per stage, MSE (µV²), cumulative MSE and SNR (dB) over all channels, with the "add nothing" baseline and
the teacher-forced one-step predictions (definitions: :mod:`prototypes.rollout_metrics`). Ground truth
comes from ``--data-root`` when given (the window must be the one the rollout was conditioned on), else
from the copy stored in the prediction file.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
from typing import Any, Sequence

import numpy as np

from utils.checkpoint import load_checkpoint
from utils.cli import ArgumentParser, run_cli, setup_logging
from utils.eeg_bands import bands_equal
from utils.eeg_dataset import EEGWindowDataset
from utils.errors import UserError

from ..rollout_metrics import rollout_metrics

logger = logging.getLogger(__name__)

PRED_KEYS: tuple[str, ...] = ("rollout_KCT", "target_KCT", "stage_names", "bands", "sfreq", "split", "sample_idx",
                              "source_file")


def build_parser() -> ArgumentParser:
    """The argument parser of plot_rollout (both ``--a-b`` and ``--a_b`` spellings are accepted)."""
    p = ArgumentParser(prog="python -m prototypes.scripts.plot_rollout",
                       description="Plot a demo_prediction.pt rollout (one panel per stage, prediction over ground "
                                   "truth) and write per-stage MSE, cumulative MSE and SNR (dB) as JSON.")
    p.add_argument("prediction", help="demo_prediction.pt written by prototypes.eeg_scale_ar_pipeline")
    p.add_argument("output", help="PNG file to write")
    p.add_argument("--channel", type=int, default=0, help="channel index to plot (metrics use all channels)")
    p.add_argument("--data-root", default=None, help="dataset root to read the ground truth from (default: the copy "
                   "stored in the prediction file)")
    p.add_argument("--split", default=None, choices=("train", "val"), help="split of the ground-truth window "
                   "(default: the one the rollout used)")
    p.add_argument("--sample-idx", type=int, default=None, help="index of the ground-truth window in --split "
                   "(default: the one the rollout used)")
    p.add_argument("--json-out", default=None, help="write the metrics as JSON here")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    return p


def load_prediction(path: str) -> dict[str, Any]:
    """Read and check a ``demo_prediction.pt`` (plain tensors and types only)."""
    pred, _ = load_checkpoint(path, fallback=False)
    missing = [k for k in PRED_KEYS if k not in pred]
    if missing:
        raise UserError(f"{path}: not a prototype rollout file (missing {missing}); pass the demo_prediction.pt "
                        "written by prototypes.eeg_scale_ar_pipeline")
    return pred


def ground_truth(pred: dict[str, Any], pred_path: str, data_root: str | None, split: str | None,
                 sample_idx: int | None) -> tuple[np.ndarray, str]:
    """The true stages (K, C, T) in µV and where they came from; checks they match the rollout's window."""
    split = split or pred["split"]
    sample_idx = int(pred["sample_idx"]) if sample_idx is None else sample_idx
    if data_root is None:
        if split != pred["split"] or sample_idx != int(pred["sample_idx"]):
            raise UserError(f"--split/--sample-idx ask for {split}[{sample_idx}] but {pred_path} stores only "
                            f"{pred['source_file']}; pass --data-root to read that window")
        return pred["target_KCT"].numpy(), f"{pred['source_file']} (stored in {os.path.basename(pred_path)})"
    windows = EEGWindowDataset(data_root, split)
    if not 0 <= sample_idx < len(windows):
        raise UserError(f"--sample-idx: got {sample_idx} but {data_root}/{split} has {len(windows)} window(s); "
                        f"use 0..{len(windows) - 1}")
    win = windows.window(sample_idx)
    rel = os.path.relpath(win.header.path, data_root)
    if os.path.normpath(rel) != os.path.normpath(pred["source_file"]):
        raise UserError(f"--sample-idx {sample_idx} of --split {split} is {rel} but {pred_path} was conditioned on "
                        f"{pred['source_file']}; pass the matching --split/--sample-idx or omit them")
    if win.stages_KCT.shape != tuple(pred["rollout_KCT"].shape) or not bands_equal(win.header.bands, pred["bands"]):
        raise UserError(f"{win.header.path}: stages {win.stages_KCT.shape} with bands {list(win.header.bands)} do "
                        f"not match the rollout's {tuple(pred['rollout_KCT'].shape)} with {pred['bands']}; pass the "
                        "--data-root the model was run on")
    return win.stages_KCT.astype(np.float64), win.header.path


def plot(pred: dict[str, Any], true_KCT: np.ndarray, channel: int, metrics: Sequence[dict], title: str,
         out_png: str) -> None:
    """One panel per stage: ground truth (black) and rollout (orange) of ``channel``, SNRs in the titles."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rollout_KCT = pred["rollout_KCT"].numpy()
    K, _, T = rollout_KCT.shape
    t_T = np.arange(T) / float(pred["sfreq"])
    fig, axes = plt.subplots(K, 1, figsize=(11, 1.9 * K + 0.8), sharex=True, squeeze=False)
    for k, ax in enumerate(axes[:, 0]):
        m = metrics[k]
        ax.plot(t_T, true_KCT[k, channel], color="black", lw=1.3, label="ground truth")
        ax.plot(t_T, rollout_KCT[k, channel], color="tab:orange", lw=1.1, alpha=0.9,
                label="given input" if k == 0 else "rollout")
        lo, hi = m.get("band_hz", (None, None))
        band = f" ({lo:g}-{hi:g} Hz)" if lo is not None else ""
        if m["given"]:
            info = "given (the rollout starts here)"
        else:
            info = (f"SNR {_db(m['snr_db'])} (add-nothing {_db(m['snr_db_hold'])}); new-band SNR "
                    f"{_db(m['added_band_snr_db'])}")
        ax.set_title(f"stage {k + 1}: {m['name']}{band} - {info}", fontsize=9.5, loc="left")
        ax.set_ylabel("µV")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right", fontsize=8, ncol=2)  # every panel: the model's line is "rollout" from stage 2
    axes[-1, 0].set_xlabel("time (s)")
    fig.suptitle(title, fontsize=10.5)
    fig.tight_layout()
    _atomic(out_png, lambda fh: fig.savefig(fh, format="png", dpi=110))
    plt.close(fig)


def _db(value: float | None) -> str:
    return "inf dB" if value is None else f"{value:.1f} dB"


def _atomic(path: str, write) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def main(argv: Sequence[str] | None = None) -> int:
    """Run plot_rollout on ``argv`` (default ``sys.argv[1:]``); user mistakes raise ``UserError``."""
    args = build_parser().parse_args(argv)
    setup_logging()
    if not args.output.lower().endswith(".png"):
        raise UserError(f"output: got {args.output!r}; expected a .png file name")
    for path in (args.output, args.json_out):
        if path and os.path.exists(path) and not args.overwrite:
            raise UserError(f"{path}: already exists; pass --overwrite to replace it or choose another name")
    pred = load_prediction(args.prediction)
    C = int(pred["rollout_KCT"].shape[1])
    if not 0 <= args.channel < C:
        raise UserError(f"--channel: got {args.channel} but the rollout has {C} channels; use 0..{C - 1}")
    true_KCT, source = ground_truth(pred, args.prediction, args.data_root, args.split, args.sample_idx)
    teacher = pred.get("teacher_forced_KCT")
    metrics = rollout_metrics(true_KCT, pred["rollout_KCT"].numpy(),
                              teacher.numpy() if teacher is not None else None, pred["stage_names"], pred["bands"])
    ch_names = pred.get("ch_names")
    ch = ch_names[args.channel] if ch_names else f"channel {args.channel}"
    title = f"{pred['source_file']} - {ch} - rollout from the first stage vs ground truth"
    plot(pred, true_KCT, args.channel, metrics, title, args.output)
    report = {"prediction": os.path.abspath(args.prediction), "ground_truth": source, "channel": args.channel,
              "channel_name": ch, "sfreq": float(pred["sfreq"]), "units": "uV", "stages": metrics}
    if args.json_out:
        _atomic(args.json_out, lambda fh: fh.write(json.dumps(report, indent=2).encode()))
    for m in metrics[1:]:
        logger.info("stage %d %-32s MSE %9.4g uV^2  SNR %s  (add-nothing %s, teacher-forced %s)", m["stage"],
                    m["name"], m["mse_uv2"], _db(m["snr_db"]), _db(m["snr_db_hold"]),
                    _db(m.get("snr_db_teacher_forced")))
    logger.info("wrote %s%s", args.output, f" and {args.json_out}" if args.json_out else "")
    return 0


if __name__ == "__main__":
    run_cli(main, prog="plot_rollout")
