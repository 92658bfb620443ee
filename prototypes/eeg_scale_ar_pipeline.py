"""Command line of the prototype: train, resume or just infer, then roll a validation window out stage by stage.

Shape letters: K stages, C channels, T time samples.

Usage::

    python -m prototypes.eeg_scale_ar_pipeline --data-root DIR --checkpoint-dir runs/eeg_demo [--epochs 20] ...
    python -m prototypes.eeg_scale_ar_pipeline --data-root DIR --checkpoint-dir runs/eeg_demo \\
        --resume runs/eeg_demo/last.pt --epochs 40          # continue to 40 epochs in total
    python -m prototypes.eeg_scale_ar_pipeline --data-root DIR --checkpoint-dir runs/eeg_demo \\
        --resume runs/eeg_demo/best.pt --epochs 1           # inference only (the checkpoint has >= 1 epoch)

Outputs in ``--checkpoint-dir``: ``last.pt`` (every epoch, and every ``--save-every-steps`` steps within
one, with the position in the epoch), ``best.pt`` (lowest validation loss),
``metrics.json`` (per-epoch train/val loss, per-stage val loss, gradient norm) and ``demo_prediction.pt``
(the best model's rollout from a validation window's first stage, with the true stages, in µV).

Run-folder rules: a folder already holding a run is never overwritten by a fresh run; ``--resume`` may
write into the folder of the run it resumes (same ``run_id``); ``--overwrite`` replaces the run's files.
``--epochs`` is the total number of epochs: resuming a checkpoint that already has that many only infers.
"""
from __future__ import annotations

import copy
import json
import logging
import math
import os
import tempfile
import uuid
from typing import Any, Sequence

import torch

from utils.checkpoint import check_config, load_checkpoint, previous_path, save_checkpoint
from utils.cli import ArgumentParser, run_cli, setup_logging
from utils.eeg_bands import bands_equal, stage_names
from utils.errors import CheckpointError, UserError

from .eeg_frequency_dataset import EEGStagePairDataset, open_pair_datasets
from .eeg_scale_ar_model import ARCH_KEYS, EEGScaleAutoregressiveModel, autoregressive_inference, \
    teacher_forced_predictions
from .eeg_scale_ar_train import evaluate, make_loader, make_optimizer, train_one_epoch
from .rollout_metrics import rollout_metrics

__all__ = ["EEGScaleAutoregressiveModel", "autoregressive_inference", "main", "build_parser"]

logger = logging.getLogger(__name__)

CKPT_KIND = "prototype-scale-ar"
RUN_FILES: tuple[str, ...] = ("best.pt", "last.pt", "metrics.json", "demo_prediction.pt")
MODEL_DEFAULTS: dict[str, Any] = {"d_model": 128, "nhead": 4, "num_layers": 2, "dropout": 0.1}


def build_parser() -> ArgumentParser:
    """The argument parser of the pipeline (both ``--a-b`` and ``--a_b`` spellings are accepted)."""
    p = ArgumentParser(prog="python -m prototypes.eeg_scale_ar_pipeline",
                       description="Train the prototype next-band Transformer (stage k -> stage k+1, MSE) on a dataset "
                                   "root with train/ and val/ npz windows, keep best.pt/last.pt/metrics.json, and roll "
                                   "a validation window out from its first stage into demo_prediction.pt.")
    p.add_argument("--data-root", required=True, help="dataset root holding train/ and val/ folders of *.npz windows")
    p.add_argument("--epochs", type=int, default=20, help="total number of epochs (with --resume: train until this "
                   "many; a checkpoint that already has them is only used for inference)")
    p.add_argument("--batch-size", type=int, default=16, help="(stage k, stage k+1) pairs per step")
    p.add_argument("--d-model", type=int, default=None,
                   help=f"Transformer width (default {MODEL_DEFAULTS['d_model']}, or the checkpoint's with --resume)")
    p.add_argument("--nhead", type=int, default=None,
                   help=f"attention heads (default {MODEL_DEFAULTS['nhead']}, or the checkpoint's)")
    p.add_argument("--num-layers", type=int, default=None,
                   help=f"Transformer layers (default {MODEL_DEFAULTS['num_layers']}, or the checkpoint's)")
    p.add_argument("--dropout", type=float, default=None,
                   help=f"dropout (default {MODEL_DEFAULTS['dropout']}, or the checkpoint's)")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (constant)")
    p.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay (weight matrices only)")
    p.add_argument("--grad-clip", type=float, default=1.0, help="max global gradient norm; 0 disables clipping")
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument("--log-interval", type=int, default=50, help="log loss and gradient norm every N steps")
    p.add_argument("--checkpoint-dir", default="runs/eeg_demo", help="output folder for checkpoints, metrics and "
                   "the demo rollout")
    p.add_argument("--seed", type=int, default=0, help="seed of initialisation, shuffling and dropout")
    p.add_argument("--device", default="auto", help="'auto' (CUDA when available), 'cpu', 'cuda' or 'cuda:N'; "
                   "CUDA requested but unavailable falls back to CPU with a warning")
    p.add_argument("--resume", default=None, metavar="CKPT", help="checkpoint (last.pt or best.pt) to continue "
                   "training from, or to run inference with")
    p.add_argument("--limit-train-samples", type=int, default=None, help="use only the first N train windows")
    p.add_argument("--limit-val-samples", type=int, default=None, help="use only the first N val windows")
    p.add_argument("--demo-index", type=int, default=0, help="val window whose first stage seeds the demo rollout")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --checkpoint-dir")
    p.add_argument("--max-nonfinite", type=int, default=10, help="a step with a NaN/Inf loss or gradient is skipped "
                   "and counted; stop after this many in a row (the last good epoch stays in last.pt)")
    p.add_argument("--save-every-steps", type=int, default=0, metavar="N", help="also write last.pt every N "
                   "steps within an epoch (with the step reached, the RNG state and the running epoch statistics), "
                   "so a kill loses at most N steps; --resume continues from that step exactly; 0 = only at epoch "
                   "ends")
    p.add_argument("--skip-bad", action="store_true", help="skip window files that fail validation or reading "
                   "(each reported with its path, counted in the log and metrics.json) instead of stopping")
    return p


def _check_args(args) -> None:
    checks = [("--epochs", args.epochs, 0 if args.resume else 1), ("--batch-size", args.batch_size, 1),
              ("--num-workers", args.num_workers, 0), ("--log-interval", args.log_interval, 1),
              ("--demo-index", args.demo_index, 0), ("--max-nonfinite", args.max_nonfinite, 1),
              ("--save-every-steps", args.save_every_steps, 0)]
    for flag, value, low in checks:
        if value < low:
            raise UserError(f"{flag}: got {value}, expected an integer >= {low}")
    for flag, value in (("--limit-train-samples", args.limit_train_samples),
                        ("--limit-val-samples", args.limit_val_samples), ("--d-model", args.d_model),
                        ("--nhead", args.nhead), ("--num-layers", args.num_layers)):
        if value is not None and value < 1:
            raise UserError(f"{flag}: got {value}, expected a positive integer")
    for flag, value in (("--lr", args.lr), ("--weight-decay", args.weight_decay), ("--grad-clip", args.grad_clip)):
        if not math.isfinite(value) or value < 0 or (flag == "--lr" and value == 0):
            kind = "positive" if flag == "--lr" else "non-negative"
            raise UserError(f"{flag}: got {value}, expected a finite {kind} number")


def resolve_device(name: str) -> torch.device:
    """``auto``/``cpu``/``cuda[:N]`` -> a usable device; CUDA without a GPU warns and returns CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device: got {name!r}; expected 'auto', 'cpu', 'cuda' or 'cuda:N'") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            logger.warning("--device %s: CUDA is not available on this machine; falling back to CPU", name)
            return torch.device("cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"--device: got {name!r} but only {torch.cuda.device_count()} GPU(s) are visible; "
                            "use 'cuda:0' or 'auto'")
        return device
    if device.type != "cpu":
        raise UserError(f"--device: got {name!r}; expected 'auto', 'cpu', 'cuda' or 'cuda:N'")
    return device


def _data_config(train: EEGStagePairDataset) -> dict[str, Any]:
    w = train.windows
    return {"channels": w.n_channels, "time_steps": w.n_times, "num_stages": w.n_stages, "sfreq": float(w.sfreq),
            "bands": [[float(lo), float(hi)] for lo, hi in w.bands],
            "ch_names": list(w.ch_names) if w.ch_names is not None else None}


def _check_resume_data(saved: dict, data: dict, ckpt: str, data_root: str) -> None:
    saved_data = saved["data"]
    for key in ("channels", "time_steps", "num_stages"):
        if int(saved_data[key]) != int(data[key]):
            raise CheckpointError(f"{ckpt} was trained on {key}={saved_data[key]} but --data-root {data_root} has "
                                  f"{key}={data[key]}; use data of the same shape or train a new model without "
                                  "--resume")
    if not bands_equal(saved_data["bands"], data["bands"]) or abs(saved_data["sfreq"] - data["sfreq"]) > 1e-3:
        raise CheckpointError(f"{ckpt} was trained on bands {saved_data['bands']} at {saved_data['sfreq']:g} Hz but "
                              f"--data-root {data_root} has {data['bands']} at {data['sfreq']:g} Hz; use a dataset "
                              "built with the same bands and sfreq")


def _check_partial(partial: dict, args, train_pairs: int, ckpt: str) -> None:
    """A mid-epoch checkpoint continues only with the same epoch order: same seed, batch size and train set."""
    for flag, saved_value, value in (("--seed", partial["seed"], args.seed),
                                     ("--batch-size", partial["batch_size"], args.batch_size),
                                     ("train pairs (--data-root / --limit-train-samples)", partial["train_pairs"],
                                      train_pairs)):
        if int(saved_value) != int(value):
            raise CheckpointError(f"{ckpt} stopped mid-epoch (step {partial['step']}/{partial['steps_in_epoch']}) "
                                  f"with {flag} {saved_value} but this run has {value}; resume with the same "
                                  "value to continue that epoch exactly")


def _model_config(args, data: dict, saved: dict | None, ckpt: str | None) -> dict[str, Any]:
    flags = {"d_model": args.d_model, "nhead": args.nhead, "num_layers": args.num_layers, "dropout": args.dropout}
    if saved is None:
        cfg = {k: (v if v is not None else MODEL_DEFAULTS[k]) for k, v in flags.items()}
    else:
        given = {k: v for k, v in flags.items() if v is not None and k in ARCH_KEYS}
        check_config(saved["model_config"], given, ARCH_KEYS, ckpt,
                     fix="drop the flag to use the checkpoint's value, or train a new model without --resume")
        cfg = {k: saved["model_config"][k] for k in flags}
        if args.dropout is not None and args.dropout != cfg["dropout"]:
            logger.info("dropout changed from %g (checkpoint) to %g", cfg["dropout"], args.dropout)
            cfg["dropout"] = args.dropout
    cfg.update(channels=data["channels"], time_steps=data["time_steps"], num_stages=data["num_stages"])
    return cfg


def _run_id_of_dir(folder: str) -> str | None:
    """The ``run_id`` recorded by a run in ``folder`` (``'unknown'`` if its files are unreadable)."""
    try:
        with open(os.path.join(folder, "metrics.json"), encoding="utf-8") as fh:
            return str(json.load(fh)["run_id"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    for name in ("last.pt", "best.pt", "demo_prediction.pt"):
        path = os.path.join(folder, name)
        if os.path.exists(path):
            try:
                return str(load_checkpoint(path, fallback=False)[0].get("run_id", "unknown"))
            except CheckpointError:
                return "unknown"
    return None


def _prepare_run_dir(folder: str, run_id: str | None, overwrite: bool, resume: str | None) -> None:
    """Refuse to mix two runs in one folder (see the module docstring); ``overwrite`` removes the old run."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise UserError(f"--checkpoint-dir {folder}: exists and is not a folder; choose another --checkpoint-dir")
    present = [n for n in RUN_FILES if os.path.exists(os.path.join(folder, n))]
    if not present:
        return
    if overwrite:
        for name in RUN_FILES:
            for path in (os.path.join(folder, name), previous_path(os.path.join(folder, name))):
                if os.path.exists(path):
                    os.unlink(path)
        logger.info("--overwrite: removed the previous run's %s from %s", ", ".join(present), folder)
        return
    existing = _run_id_of_dir(folder)
    if resume is not None and existing == run_id:
        return
    hint = f"pass --resume {os.path.join(folder, 'last.pt')} to continue it, " if resume is None else ""
    raise UserError(f"--checkpoint-dir {folder}: already holds {'another ' if resume else 'a '}run "
                    f"({', '.join(present)}{f', run_id {existing}' if resume else ''}); {hint}pass --overwrite to "
                    "replace it, or choose another --checkpoint-dir")


def _snr_text(stage: dict) -> str:
    if stage["given"]:
        return "given"
    return "inf" if stage["snr_db"] is None else f"{stage['snr_db']:.1f}"


def _fmt(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"


def _write_json(path: str, obj: dict) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=os.path.dirname(os.path.abspath(path)))
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=2)
    os.replace(tmp, path)


def _demo(model: EEGScaleAutoregressiveModel, val: EEGStagePairDataset, index: int, device: torch.device,
          scale_uv: float) -> dict[str, Any]:
    """Rollout from val window ``index``'s first stage, with the true and teacher-forced stages, in µV."""
    true_KCT = val.stages(index)
    K, C, T = true_KCT.shape
    rollout_KCT = autoregressive_inference(model, K, C, T, device, initial=true_KCT[0]) * scale_uv
    forced_KCT = teacher_forced_predictions(model, true_KCT, device) * scale_uv
    window = val.windows.window(index)
    target_KCT = torch.from_numpy(window.stages_KCT)
    rollout_KCT[0] = forced_KCT[0] = target_KCT[0]  # exactly the given input, free of scaling round-off
    header = window.header
    return {"rollout_KCT": rollout_KCT, "target_KCT": target_KCT, "teacher_forced_KCT": forced_KCT,
            "split": val.windows.split, "sample_idx": index,
            "source_file": os.path.relpath(header.path, val.windows.root)}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the pipeline on ``argv`` (default ``sys.argv[1:]``); user mistakes raise ``UserError``."""
    args = build_parser().parse_args(argv)
    setup_logging()
    _check_args(args)
    device = resolve_device(args.device)
    saved, ckpt = None, None
    if args.resume:
        saved, ckpt = load_checkpoint(args.resume, map_location="cpu")
        if saved.get("kind") != CKPT_KIND:
            raise CheckpointError(f"--resume {args.resume}: not a prototype checkpoint (kind={saved.get('kind')!r}); "
                                  "pass a best.pt or last.pt written by prototypes.eeg_scale_ar_pipeline")
    # Everything is validated before anything is written.
    train, val = open_pair_datasets(args.data_root, (args.limit_train_samples, args.limit_val_samples),
                                    scale_uv=saved["scale_uv"] if saved else None, skip_bad=args.skip_bad)
    data = _data_config(train)
    if saved:
        _check_resume_data(saved, data, ckpt, args.data_root)
    if args.demo_index >= len(val.windows):
        raise UserError(f"--demo-index: got {args.demo_index} but val has {len(val.windows)} window(s); "
                        f"use 0..{len(val.windows) - 1}")
    model_cfg = _model_config(args, data, saved, ckpt)
    torch.manual_seed(args.seed)
    model = EEGScaleAutoregressiveModel.from_config(model_cfg).to(device)
    if saved:
        model.load_state_dict(saved["model"])
    run_id = saved["run_id"] if saved else uuid.uuid4().hex[:12]
    folder = args.checkpoint_dir
    _prepare_run_dir(folder, run_id, args.overwrite, args.resume)
    os.makedirs(folder, exist_ok=True)
    logger.info("data %s: %d train / %d val windows, %d stages x %d channels x %d samples at %g Hz, scale %.3g µV",
                args.data_root, len(train.windows), len(val.windows), data["num_stages"], data["channels"],
                data["time_steps"], data["sfreq"], train.scale_uv)
    logger.info("model %s: %.3g M parameters on %s", {k: model_cfg[k] for k in ARCH_KEYS},
                sum(p.numel() for p in model.parameters()) / 1e6, device)
    optimizer = make_optimizer(model, args.lr, args.weight_decay)
    start_epoch = int(saved["epoch"]) if saved else 0
    history: list[dict] = list(saved["history"]) if saved else []
    best_val = float(saved["best_val_loss"]) if saved else math.inf
    best_epoch = int(saved["best_epoch"]) if saved else 0
    best_state = copy.deepcopy(model.state_dict()) if saved else None
    partial = saved.get("partial_epoch") if saved and start_epoch < args.epochs else None
    if partial is not None:
        _check_partial(partial, args, len(train), ckpt)
    if saved and start_epoch < args.epochs:
        optimizer.load_state_dict(saved["optimizer"])
        for group in optimizer.param_groups:  # schedule keys may change on resume; architecture may not
            group["lr"] = args.lr
            if group["weight_decay"] > 0:
                group["weight_decay"] = args.weight_decay
        if partial is not None:
            logger.info("resuming %s (run %s) in epoch %d after step %d/%d, training to epoch %d", ckpt, run_id,
                        start_epoch + 1, partial["step"], partial["steps_in_epoch"], args.epochs)
        else:
            logger.info("resuming %s (run %s) after epoch %d, training to epoch %d", ckpt, run_id, start_epoch,
                        args.epochs)
    elif saved:
        logger.info("%s already has %d epoch(s) >= --epochs %d: inference only", ckpt, start_epoch, args.epochs)

    n_pairs = data["num_stages"] - 1
    val_loader = make_loader(val, args.batch_size, shuffle=False, num_workers=args.num_workers)
    baseline, baseline_stages = evaluate(None, val_loader, n_pairs, device)
    config = {**model_cfg, **{k: v for k, v in vars(args).items() if k not in model_cfg}, "data": data,
              "device_used": str(device), "run_id": run_id}
    nonfinite_run = int(history[-1].get("nonfinite_run", 0)) if history else 0

    def state_now(epochs_done: int) -> dict[str, Any]:
        return {"kind": CKPT_KIND, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "epoch": epochs_done, "best_val_loss": best_val, "best_epoch": best_epoch, "history": history,
                "scale_uv": train.scale_uv, "run_id": run_id, "model_config": model_cfg, "data": data}

    for epoch in range(start_epoch, args.epochs):
        resume_at = partial if epoch == start_epoch else None

        def save_mid_epoch(part: dict[str, Any], epoch: int = epoch) -> None:
            # "epoch" counts finished epochs; "partial_epoch" is the position inside the next one
            part = {**part, "seed": args.seed, "batch_size": args.batch_size, "train_pairs": len(train)}
            save_checkpoint(os.path.join(folder, "last.pt"), {**state_now(epoch), "partial_epoch": part}, config)
            logger.info("epoch %d step %d/%d: mid-epoch checkpoint %s", epoch + 1, part["step"],
                        part["steps_in_epoch"], os.path.join(folder, "last.pt"))

        loader = make_loader(train, args.batch_size, shuffle=True, seed=args.seed, epoch=epoch,
                             num_workers=args.num_workers, skip_batches=resume_at["step"] if resume_at else 0)
        stats = train_one_epoch(model, loader, optimizer, epoch=epoch, seed=args.seed, grad_clip=args.grad_clip,
                                device=device, log_interval=args.log_interval, max_nonfinite=args.max_nonfinite,
                                nonfinite_run=nonfinite_run, save_every=args.save_every_steps,
                                on_save=save_mid_epoch, resume=resume_at)
        nonfinite_run = stats["nonfinite_run"]
        val_loss, val_stages = evaluate(model, val_loader, n_pairs, device)
        if not (math.isfinite(stats["train_loss"]) and math.isfinite(val_loss)):
            raise UserError(f"training diverged in epoch {epoch + 1} (train loss {stats['train_loss']}, val loss "
                            f"{val_loss}); nothing after this epoch's last mid-epoch checkpoint (if any) was saved; "
                            f"lower --lr (now {args.lr:g}) or keep "
                            "--grad-clip > 0, then --resume from last.pt")
        history.append({"epoch": epoch + 1, **stats, "val_loss": val_loss, "val_loss_per_stage": val_stages,
                        "lr": args.lr})
        improved = val_loss < best_val
        if improved:
            best_val, best_epoch = val_loss, epoch + 1
        logger.info("epoch %d/%d: train %.5g, val %.5g (add-nothing baseline %.5g)%s, grad norm %.3g; val per "
                    "stage %s vs baseline %s", epoch + 1, args.epochs, stats["train_loss"], val_loss, baseline,
                    " *best*" if improved else "", stats["grad_norm"], _fmt(val_stages), _fmt(baseline_stages))
        state = state_now(epoch + 1)
        save_checkpoint(os.path.join(folder, "last.pt"), state, config)
        if improved:
            save_checkpoint(os.path.join(folder, "best.pt"), state, config)
            best_state = copy.deepcopy(model.state_dict())
        _write_json(os.path.join(folder, "metrics.json"), {
            "run_id": run_id, "config": config, "scale_uv": train.scale_uv, "loss_units": "(uV / scale_uv)^2",
            "val_loss_add_nothing": baseline, "val_loss_add_nothing_per_stage": baseline_stages,
            "best_epoch": best_epoch, "best_val_loss": best_val, "epochs": history,
            "skipped_files": [{"path": p, "reason": r} for ds in (train, val) for p, r in ds.windows.skipped]})

    if best_state is not None:
        model.load_state_dict(best_state)
    demo = _demo(model, val, args.demo_index, device, train.scale_uv)
    names = stage_names(data["bands"])
    demo.update({"run_id": run_id, "stage_names": names, "bands": data["bands"], "sfreq": data["sfreq"],
                 "ch_names": data["ch_names"], "scale_uv": train.scale_uv, "epoch": best_epoch,
                 "data_root": os.path.abspath(args.data_root)})
    save_checkpoint(os.path.join(folder, "demo_prediction.pt"), demo, keep_previous=False)
    metrics = rollout_metrics(demo["target_KCT"].numpy(), demo["rollout_KCT"].numpy(),
                              demo["teacher_forced_KCT"].numpy(), names, data["bands"])
    logger.info("demo rollout from %s: SNR per stage (dB) %s", demo["source_file"],
                ", ".join(f"{m['name']}={_snr_text(m)}" for m in metrics))
    n_skipped = len(train.windows.skipped) + len(val.windows.skipped)
    if n_skipped:
        logger.warning("--skip-bad: %d bad window file(s) skipped (listed in metrics.json)", n_skipped)
    logger.info("wrote %s", ", ".join(os.path.join(folder, n) for n in RUN_FILES
                                      if os.path.exists(os.path.join(folder, n))))
    return 0


if __name__ == "__main__":
    run_cli(main, prog="eeg_scale_ar_pipeline")
