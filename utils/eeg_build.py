"""Building a dataset from many recordings: checks, splits, labels, resume, parallel workers, manifest.

:func:`build_dataset` is the Python API behind ``python -m utils.data_eeg build``::

    from utils.eeg_build import build_dataset
    from utils.eeg_ingest import IngestConfig
    manifest = build_dataset(["recordings/"], "datasets/mine", IngestConfig(sfreq=100, window_sec=5))

Order of work: validate the settings -> find the recordings -> check the output folder (resume, or
refuse another dataset unless ``overwrite``) -> survey every header (fails fast) -> subjects, splits
(by subject or recording: whole recordings to one split; by time: every recording to both, its end
held out, :mod:`utils.eeg_splits`), label names, the channel layout -> process pending recordings in parallel, rewriting the manifest
atomically after each one -> final counts. A killed build resumes where it stopped: recordings the
manifest marks ``done`` with an unchanged hash and all their window files present are skipped.
"""
from __future__ import annotations

import concurrent.futures
import glob
import logging
import multiprocessing
import os
import sys
import time
from collections import Counter
from typing import Any, Callable, Sequence

from .eeg_ingest import (IngestConfig, RecordingPlan, assign_recording_ids, process_recording, split_gap_samples,
                         survey_recording)
from .eeg_labels import LabelRule, annotation_names, parse_label_rule
from .eeg_manifest import MANIFEST_FORMAT, load_manifest, manifest_path, summarise, write_manifest
from .eeg_read import RecordingError, file_sha256, find_recordings
from .eeg_schema import SPLITS
from .eeg_splits import BOTH, assign_splits
from .errors import UserError
from .project_info import code_version

logger = logging.getLogger(__name__)


def split_rule_text(config: IngestConfig) -> str:
    """The split rule in words, for the manifest."""
    if config.split_by == "time":
        gap = split_gap_samples(config)
        why = "--split-gap-sec" if config.split_gap_sec is not None else \
            "default: the longer of the window and the stage filter"
        return (f"by time; every recording in both splits: boundary b = floor({1 - config.val_fraction:g} * "
                f"n_samples) at {config.sfreq:g} Hz, train = windows ending at or before b, val = windows starting "
                f"at or after b + gap, gap = {gap / config.sfreq:g} s ({gap} samples, {why}); windows in between "
                "dropped as split_gap")
    if config.val_groups:
        return f"by {config.split_by}; val = {list(config.val_groups)} (explicit --val-groups)"
    return (f"by {config.split_by}; groups sorted, shuffled with numpy default_rng(seed={config.seed}), first "
            f"round({config.val_fraction:g} * n_groups) (>= 1, <= n_groups - 1) to val")


def _check_out(out: str, config: IngestConfig, overwrite: bool) -> dict | None:
    """Cheap checks of ``out`` before any work: the previous manifest of the same settings, or None.

    Raises
    ------
    UserError
        When ``out`` holds another dataset (other settings) or unrelated files, and ``overwrite`` is
        false.
    """
    if overwrite or not os.path.isdir(out):
        return None
    old = load_manifest(out)
    if old is None:
        leftovers = [n for n in os.listdir(out) if not n.startswith(".")]
        has_windows = any(glob.glob(os.path.join(out, s, "*.npz")) for s in SPLITS)
        if has_windows or any(n not in SPLITS for n in leftovers):
            raise UserError(f"--out {out} is not empty and holds no manifest.json from this builder; choose an "
                            "empty or new folder, or pass --overwrite to replace its train/ val/ windows")
        return None
    if old.get("format") != MANIFEST_FORMAT:
        raise UserError(f"--out {out} holds a dataset of format {old.get('format')!r}, not {MANIFEST_FORMAT!r}; "
                        "pass --overwrite or choose another --out")
    old_settings, new_settings = old.get("settings", {}), config.to_dict()
    diff = [k for k in sorted(set(old_settings) | set(new_settings)) if old_settings.get(k) != new_settings.get(k)]
    if diff:
        k = diff[0]
        also = f"; {', '.join(diff[1:])} differ too" if len(diff) > 1 else ""
        raise UserError(f"--out {out} holds another dataset: it was built with {k}={old_settings.get(k)!r} but this "
                        f"run has {k}={new_settings.get(k)!r}{also}; pass --overwrite to replace it, or choose "
                        "another --out")
    return old


def _prepare_out(out: str, old: dict | None, inputs_key: list[list[str]], overwrite: bool) -> dict | None:
    """After the survey: check a resume has the same inputs, or clear the old dataset for ``overwrite``.

    Returns the previous manifest when resuming, else None. Only window files (``train/*.npz``,
    ``val/*.npz``) and ``manifest.json`` are ever deleted, and only with ``overwrite``.

    Raises
    ------
    UserError
        When the inputs (paths or contents) differ from the previous build's.
    """
    if overwrite:
        if os.path.isdir(out):
            for split in SPLITS:
                for path in glob.glob(os.path.join(out, split, "*.npz")) + \
                        glob.glob(os.path.join(out, split, ".tmp-*")):
                    os.unlink(path)
            if os.path.exists(manifest_path(out)):
                os.unlink(manifest_path(out))
        return None
    if old is None:
        return None
    old_key = sorted([e["path"], e["sha256"]] for e in old.get("inputs", []) if "sha256" in e)
    if old_key != sorted(inputs_key):
        old_paths, new_paths = {p for p, _ in old_key}, {p for p, _ in inputs_key}
        changed = sorted(new_paths ^ old_paths) or sorted(p for p, h in inputs_key if [p, h] not in old_key)
        raise UserError(f"--out {out} holds a dataset built from other inputs (first difference: {changed[0]}); "
                        "a resume needs the same recordings with unchanged contents: pass --overwrite to rebuild, "
                        "or choose another --out")
    return old


def _entry_files(entry: dict) -> list[tuple[str, str]]:
    """``(split, file name)`` of every window a manifest entry lists (``window_files`` is per split for 'both')."""
    files = entry.get("window_files") or []
    if isinstance(files, dict):
        return [(split, n) for split in SPLITS for n in files.get(split, [])]
    return [(entry["split"], n) for n in files]


def _is_done(entry: dict | None, out: str) -> bool:
    if not entry or entry.get("status") != "done":
        return False
    files = _entry_files(entry)
    return len(files) == entry.get("n_windows") and \
        all(os.path.exists(os.path.join(out, split, n)) for split, n in files)


def _worker(args: tuple) -> tuple[str, dict[str, Any] | None, str | None]:
    plan, config, out, label_names, order = args
    import mne

    mne.set_log_level("ERROR")
    try:
        return plan.path, process_recording(plan, config, out, label_names, order), None
    except RecordingError as err:
        return plan.path, None, str(err)


def _pool_context() -> multiprocessing.context.BaseContext:
    # fork starts workers in milliseconds with MNE already imported; spawn elsewhere
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods and sys.platform != "darwin" else "spawn")


def build_dataset(inputs: Sequence[str], out: str, config: IngestConfig | None = None, *, jobs: int = 1,
                  overwrite: bool = False, continue_on_error: bool = False, progress: bool | None = None,
                  on_recording: Callable[[str, dict], None] | None = None) -> dict:
    """Build (or resume) a windowed cumulative-band dataset from EEG recordings.

    Parameters
    ----------
    inputs : sequence of str
        Recording files, folders (searched recursively) or glob patterns.
    out : str
        Dataset root; ``train/``, ``val/`` and ``manifest.json`` are written there.
    config : IngestConfig | None
        Settings (defaults when ``None``).
    jobs : int
        Worker processes over recordings.
    overwrite : bool
        Replace the windows and manifest of a dataset already in ``out``.
    continue_on_error : bool
        Skip bad recordings (counted and listed in the manifest) instead of stopping.
    progress : bool | None
        Show a tqdm bar; ``None`` shows it only on a terminal.
    on_recording : callable | None
        Called as ``on_recording(path, manifest_entry)`` after each recording finishes (for tests and
        notebooks).

    Returns
    -------
    dict
        The final manifest.

    Raises
    ------
    UserError
        For bad settings, an output folder holding another dataset, no usable recording, or (without
        ``continue_on_error``) the first bad recording. Windows already written stay on disk and the
        manifest records them, so a re-run resumes.
    """
    import mne

    config = (config or IngestConfig()).validate()
    if jobs < 1:
        raise UserError(f"--jobs got {jobs}; expected 1 or more worker processes")
    rule: LabelRule = parse_label_rule(config.label_from)
    paths = find_recordings(inputs)
    old = _check_out(out, config, overwrite)
    mne.set_log_level("ERROR")
    t0 = time.perf_counter()
    executor = None
    if jobs > 1 and len(paths) > 1:
        _warm_up(config)  # forked workers inherit the imports and caches instead of each paying for them
        executor = concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=_pool_context())
    try:
        return _build(paths, out, old=old, config=config, rule=rule, executor=executor, overwrite=overwrite,
                      continue_on_error=continue_on_error, progress=progress, on_recording=on_recording, t0=t0)
    finally:
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)


def _warm_up(config: IngestConfig) -> None:
    """Import and cache what every recording needs (filter design, montage names, resampling)."""
    import numpy as np
    import mne

    from .eeg_channels import canonical_name
    from .eeg_fastfilter import stage_kernels

    stage_kernels(config.sfreq, config.bands, n_times=1 << 30)
    canonical_name("Fp1")
    mne.filter.resample(np.zeros((1, 64)), up=1.0, down=2.0, verbose="error")


def _survey_one(args: tuple) -> tuple[str, RecordingPlan | None, str | None]:
    path, config, rule, label_names = args
    import mne

    mne.set_log_level("ERROR")
    try:
        return path, survey_recording(path, config, rule, label_names), None
    except RecordingError as err:
        return path, None, str(err)


def _survey_all(paths: list[str], config: IngestConfig, rule: LabelRule, label_names: list[str],
                executor: concurrent.futures.Executor | None, continue_on_error: bool
                ) -> tuple[list[RecordingPlan], list[tuple[str, str, str]]]:
    """Header checks (and hashes) of every input, in parallel when ``executor`` is given."""
    tasks = [(path, config, rule, label_names) for path in paths]
    results = executor.map(_survey_one, tasks) if executor is not None else map(_survey_one, tasks)
    plans, failed = [], []
    for path, plan, error in results:
        if error is None:
            plans.append(plan)
        elif not continue_on_error:
            raise RecordingError(error)
        else:
            failed.append((path, file_sha256(path), error))
            logger.warning("skipping %s", error)
    return plans, failed


def _common_layout(plans: list[RecordingPlan], continue_on_error: bool
                   ) -> tuple[list[str], list[RecordingPlan], list[tuple[str, str, str]]]:
    """With ``--channels all``: the majority channel layout, the recordings that have it, and the others."""
    layouts = Counter(frozenset(p.ch_names) for p in plans)
    best = max(layouts.values())
    reference = next(p for p in plans if layouts[frozenset(p.ch_names)] == best)  # ties: the first input
    order = list(reference.ch_names)
    keep, failed = [], []
    for plan in plans:
        if frozenset(plan.ch_names) == frozenset(order) and len(plan.ch_names) == len(order):
            keep.append(plan)
            continue
        extra = [n for n in plan.ch_names if n not in order][:6]
        absent = [n for n in order if n not in plan.ch_names][:6]
        msg = (f"{plan.path}: with --channels all every recording needs one channel layout, but it has "
               f"{len(plan.ch_names)} EEG channels (extra {extra}, missing {absent}) against {len(order)} in "
               f"{reference.path} (the layout of {best} of {len(plans)} recordings); use --channels 1020-19 or "
               "build one dataset per layout")
        if not continue_on_error:
            raise UserError(msg)
        failed.append((plan.path, plan.sha256, msg))
    return order, keep, failed


def _build(paths: list[str], out: str, *, old: dict | None, config: IngestConfig, rule: LabelRule,
           executor: concurrent.futures.Executor | None, overwrite: bool, continue_on_error: bool,
           progress: bool | None, on_recording: Callable[[str, dict], None] | None, t0: float) -> dict:
    """The body of :func:`build_dataset` once the settings are valid and the inputs found."""
    label_names = rule.names() if rule.kind == "regex" else []
    plans, failed = _survey_all(paths, config, rule, label_names, executor, continue_on_error)
    if rule.kind == "annotations":
        label_names = annotation_names(rule, [d for p in plans for d in p.descriptions])
        if not label_names:
            raise UserError("--label-from annotations: the recordings hold no annotations; use another label rule")
    order: list[str] | None = None
    if config.channels == "all" and plans:
        order, plans, conflicts = _common_layout(plans, continue_on_error)
        failed += conflicts
    if not plans:
        raise UserError(f"none of the {len(paths)} recording(s) can be used; first reason: "
                        f"{failed[0][2] if failed else 'none'}")
    assign_recording_ids(plans)
    ch_names = order if order is not None else list(plans[0].ch_names)
    if config.split_by == "time":
        for plan in plans:
            plan.split = BOTH
        logger.info("%d recording(s), each split by time: %s", len(plans), split_rule_text(config))
    else:
        groups = {p.path: (p.subject if config.split_by == "subject" else p.recording) for p in plans}
        split_of = assign_splits(list(groups.values()), config.val_fraction, config.seed, config.val_groups or None)
        for plan in plans:
            plan.split = split_of[groups[plan.path]]
        val_groups = sorted({groups[p.path] for p in plans if p.split == "val"})
        logger.info("%d recording(s), %d %s group(s); val: %s%s", len(plans), len(set(groups.values())),
                    config.split_by, val_groups[:10], "..." if len(val_groups) > 10 else "")
    logger.info("channels (%s): %s; stages: zero-phase firwin FIR band-passes %s Hz at %g Hz, labels: %s",
                config.channels, " ".join(ch_names[:19]) + (" ..." if len(ch_names) > 19 else ""),
                [(config.bands[0][0], hi) for _, hi in config.bands], config.sfreq, label_names or "none")

    inputs_key = [[p.path, p.sha256] for p in plans] + [[p, h] for p, h, _ in failed]
    old = _prepare_out(out, old, inputs_key, overwrite)
    old_entries = {e["path"]: e for e in (old or {}).get("inputs", [])}
    entries: dict[str, dict] = {}
    for plan in plans:
        entry = dict(path=plan.path, sha256=plan.sha256, size=plan.size, recording=plan.recording, source=plan.source,
                     subject=plan.subject, subject_rule=plan.subject_rule, split=plan.split,
                     label=(label_names[plan.label] if plan.label >= 0 else None), status="pending",
                     sfreq_orig=plan.sfreq_orig, duration_sec=round(plan.duration_sec, 6))
        prev = old_entries.get(plan.path)
        if _is_done(prev, out) and prev.get("split") == plan.split and prev.get("recording") == plan.recording:
            entry = prev
        entries[plan.path] = entry
    for path, sha, reason in failed:
        entries[path] = dict(path=path, sha256=sha, status="skipped", reason=reason)

    manifest = dict(format=MANIFEST_FORMAT, code_version=code_version(), settings=config.to_dict(),
                    split_rule=split_rule_text(config), label_names=label_names, ch_names=ch_names,
                    inputs=[entries[p] for p in sorted(entries)])
    for split in SPLITS:
        os.makedirs(os.path.join(out, split), exist_ok=True)
        for tmp in glob.glob(os.path.join(out, split, ".tmp-*")):
            os.unlink(tmp)  # half-written windows of an interrupted build

    def save() -> None:
        manifest["counts"], manifest["dropped"], manifest["skipped"] = summarise(manifest["inputs"], label_names)
        write_manifest(out, manifest)

    save()
    pending = [p for p in plans if entries[p.path]["status"] != "done"]
    n_resumed = len(plans) - len(pending)
    if n_resumed:
        logger.info("resuming %s: %d recording(s) already done, %d to go", out, n_resumed, len(pending))
    first_error: str | None = None
    tasks = [(plan, config, out, label_names, order) for plan in pending]
    show = sys.stderr.isatty() if progress is None else progress
    from tqdm import tqdm

    bar = tqdm(total=len(tasks), desc="recordings", unit="rec", disable=not show)
    try:
        results = executor.map(_worker, tasks) if executor is not None and len(tasks) > 1 else map(_worker, tasks)
        # results arrive in input order; the manifest is rewritten after each recording
        for (path, result, error), plan in zip(results, pending):
            entry = entries[path]
            if error is None:
                entry.update(status="done", n_windows=result["n_windows"], n_candidates=result["n_candidates"],
                             dropped=result["dropped"], windows_per_label=result["windows_per_label"],
                             retyped=result["retyped"], renamed=result["renamed"],
                             interpolated=result["interpolated"], notch_applied=result["notch_applied"],
                             window_files=_window_files(out, plan))
                if plan.split == BOTH:
                    entry.update(time_split=result["time_split"], per_split=result["per_split"])
            else:
                entry.update(status="skipped", reason=error)
                logger.warning("skipping %s", error)
                if not continue_on_error:
                    first_error = error
                    entry.update(status="pending", reason=error)
            save()
            bar.update(1)
            if on_recording is not None:
                on_recording(path, entry)
            if first_error is not None:
                break
    finally:
        bar.close()
    if first_error is not None:
        raise RecordingError(first_error)
    counts = manifest["counts"]
    if counts["train"]["windows"] == 0:
        raise UserError(f"{out}: no training window was written (dropped: {manifest['dropped']}); check "
                        "--flat-threshold / --max-amplitude-uv and the label rule")
    if counts["val"]["windows"] == 0 and config.split_by == "time":
        logger.warning("%s: val/ holds no window: no recording is long enough for a val window after the %g-s gap "
                       "(dropped: %s); raise --val-fraction or lower --split-gap-sec", out,
                       split_gap_samples(config) / config.sfreq, manifest["dropped"])
    elif config.split_by == "time":
        no_val = [e["recording"] for e in manifest["inputs"] if e.get("status") == "done" and
                  not e["per_split"]["val"]["n_windows"]]
        if no_val:
            logger.warning("%d recording(s) have no val window (too short for one after the %g-s gap on the "
                           "window grid), e.g. %s; raise --val-fraction or lower --split-gap-sec", len(no_val),
                           split_gap_samples(config) / config.sfreq, no_val[:3])
    elif counts["val"]["windows"] == 0 and (config.val_fraction > 0 or config.val_groups):
        logger.warning("%s: val/ holds no window (every val recording was skipped or dropped); pick other "
                       "--val-groups or another --seed", out)
    logger.info("built %s in %.1f s: train %d windows (%d recordings), val %d windows (%d recordings), "
                "dropped %s, skipped %d", out, time.perf_counter() - t0, counts["train"]["windows"],
                counts["train"]["recordings"], counts["val"]["windows"], counts["val"]["recordings"],
                manifest["dropped"], len(manifest["skipped"]))
    return manifest


def _window_files(out: str, plan: RecordingPlan) -> list[str] | dict[str, list[str]]:
    """The window file names of a recording; per split (``{"train": [...], "val": [...]}``) for 'both'."""
    prefix = f"{plan.recording}_w"

    def names(split: str) -> list[str]:
        return sorted(n for n in os.listdir(os.path.join(out, split)) if n.startswith(prefix) and n.endswith(".npz")
                      and n[len(prefix):-4].isdigit())

    return {split: names(split) for split in SPLITS} if plan.split == BOTH else names(plan.split)


def rebuild_from_manifest(manifest_or_root: str | dict, out: str, **kwargs: Any) -> dict:
    """Rebuild a dataset from another dataset's manifest (same settings and inputs; hashes must match).

    Raises
    ------
    UserError
        If the manifest is missing or an input changed since (its sha256 differs).
    """
    manifest = manifest_or_root if isinstance(manifest_or_root, dict) else load_manifest(manifest_or_root)
    if manifest is None:
        raise UserError(f"{manifest_or_root}: no manifest.json found; pass a dataset root built by utils.data_eeg")
    config = IngestConfig.from_dict(manifest["settings"])
    paths = []
    for entry in manifest["inputs"]:
        if not os.path.exists(entry["path"]):
            raise UserError(f"{entry['path']}: input listed in the manifest is missing; restore it to rebuild")
        if file_sha256(entry["path"]) != entry["sha256"]:
            raise UserError(f"{entry['path']}: contents changed since the manifest was written (sha256 differs); "
                            "the rebuild would not be the same dataset")
        paths.append(entry["path"])
    kwargs.setdefault("continue_on_error", any(e.get("status") == "skipped" for e in manifest["inputs"]))
    return build_dataset(paths, out, config, **kwargs)
