"""A dataset's summary: windows per split, subjects, channels, sfreq, bands, labels, µV statistics.

Shape letters: K stages, C channels, T time samples.

Used by ``python -m utils.data_eeg info DIR``. Reads every window header (cheap) and the signals of
at most ``max_windows`` evenly spaced windows per split for the amplitude statistics.
"""
from __future__ import annotations

import os
from collections import Counter
from typing import Any

import numpy as np

from .eeg_bands import stage_names
from .eeg_manifest import load_manifest
from .eeg_schema import SPLITS, NO_LABEL, check_compatible, list_split_files, read_header, read_window
from .errors import DatasetError


def dataset_summary(root: str, max_windows: int = 200) -> dict[str, Any]:
    """Summarise a dataset root (plain types).

    Parameters
    ----------
    root : str
        Folder holding ``train/``, ``val/`` and (optionally) ``manifest.json``.
    max_windows : int
        Windows per split whose samples are read for the µV statistics.

    Raises
    ------
    DatasetError
        If the root has no readable split, or windows disagree on shape, bands or sfreq.
    """
    manifest = load_manifest(root) or {}
    label_names = manifest.get("label_names") or []
    summary: dict[str, Any] = {"root": os.path.abspath(root), "splits": {}}
    ref = None
    for split in SPLITS:
        try:
            files = list_split_files(root, split)
        except DatasetError:
            if split == "train":
                raise
            continue
        headers = [read_header(path) for path in files]
        for header in headers:
            ref = ref or header
            check_compatible(ref, header)
        labels = Counter(h.label for h in headers)
        pick = np.unique(np.linspace(0, len(files) - 1, min(max_windows, len(files))).round().astype(int))
        stage_std, stage_ptp, full_abs = [], [], []
        for i in pick:
            win = read_window(files[i], headers[i])
            stage_std.append(win.stages_KCT.std(axis=-1).mean(axis=-1))  # (K,)
            full_abs.append(np.abs(win.stages_KCT[-1]).max())
            stage_ptp.append(np.ptp(win.signal_CT, axis=-1).mean())
        summary["splits"][split] = {
            "windows": len(files),
            "recordings": len({h.source for h in headers}),
            "subjects": sorted({str(h.subject) for h in headers}),
            "labels": {(label_names[k] if 0 <= k < len(label_names) else ("none" if k == NO_LABEL else str(k))): n
                       for k, n in sorted(labels.items())},
            "stage_std_uv": [round(float(v), 3) for v in np.mean(stage_std, axis=0)],
            "full_band_abs_max_uv_p50_p99": [round(float(np.percentile(full_abs, q)), 3) for q in (50, 99)],
            "signal_ptp_uv_mean": round(float(np.mean(stage_ptp)), 3),
            "windows_read_for_stats": int(len(pick)),
        }
    summary.update(sfreq=ref.sfreq, n_channels=ref.n_channels, n_times=ref.n_times,
                   window_sec=ref.n_times / ref.sfreq, ch_names=list(ref.ch_names or []),
                   bands=[list(b) for b in ref.bands], stages=stage_names(ref.bands), label_names=label_names)
    if manifest:
        summary["dropped"] = manifest.get("dropped")
        summary["skipped"] = manifest.get("skipped")
        summary["settings"] = manifest.get("settings")
        summary["code_version"] = manifest.get("code_version")
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    """Human-readable lines for :func:`dataset_summary`'s result."""
    lines = [f"dataset {summary['root']}",
             f"  sfreq {summary['sfreq']:g} Hz, window {summary['window_sec']:g} s ({summary['n_times']} samples), "
             f"{summary['n_channels']} channels: {' '.join(summary['ch_names'])}",
             "  cumulative stages: " + ", ".join(f"{n} ({summary['bands'][0][0]:g}-{hi:g} Hz)"
                                                 for n, (_, hi) in zip(summary["stages"], summary["bands"])),
             f"  labels: {summary['label_names'] or 'none (unconditional)'}"]
    for split, s in summary["splits"].items():
        lines.append(f"  {split}: {s['windows']} windows from {s['recordings']} recording(s), "
                     f"{len(s['subjects'])} subject(s) {s['subjects'][:8]}{'...' if len(s['subjects']) > 8 else ''}")
        lines.append(f"    windows per label {s['labels']}")
        lines.append(f"    µV: per-stage std {s['stage_std_uv']}, full-band |x| max p50/p99 "
                     f"{s['full_band_abs_max_uv_p50_p99']}, signal peak-to-peak mean {s['signal_ptp_uv_mean']} "
                     f"(from {s['windows_read_for_stats']} windows)")
    if summary.get("dropped") is not None:
        lines.append(f"  dropped windows: {summary['dropped']}")
    if summary.get("skipped"):
        lines.append(f"  skipped recordings: {len(summary['skipped'])}")
        lines.extend(f"    {s['path']}: {s['reason']}" for s in summary["skipped"])
    return "\n".join(lines)
