"""Ingestion speed: recording-hours turned into a dataset per wall-clock hour (x real time).

Builds the eegmat recordings (19 channels, 500 Hz -> 100 Hz, 5 cumulative stages, 5-s windows,
compressed npz written) with :func:`utils.eeg_build.build_dataset`, after one untimed warm-up build
(imports, montage and filter caches), and reports:

- the whole build, ``--jobs 1`` and ``--jobs 2`` (median of repeats), with the default ``fast``
  compression and with numpy's ``zlib`` compression for comparison;
- a per-step CPU-time profile on one process: MNE read + channel mapping + resampling, the stage filter (the
  one-pass FFT path and the reference :func:`utils.eeg_stages.cumulative_frequency_levels`), and
  window writing;
- the cold command line (a fresh Python process, imports included), once.

Usage::

    python -m benchmarks.bench_ingest [--quick] [--inputs DIR_OR_FILES...] [--results-dir DIR]

Results go to ``benchmarks/results/ingest.json``. Target: >= 1000x real time on a 2-core machine.
"""
from __future__ import annotations

import logging
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Sequence

import numpy as np

from benchmarks import bench_parser, machine_info, peak_rss_mb, save_result
from utils.cli import run_cli, setup_logging
from utils.project_info import REPO_ROOT

logger = logging.getLogger("benchmarks.bench_ingest")

DEFAULT_INPUTS = os.path.join(os.path.dirname(REPO_ROOT), "shared", "data", "physionet-eegmat")
TARGET_X_REALTIME = 1000.0


EEGMAT_LABELS = r"regex:_1\.edf$=rest,_2\.edf$=arithmetic"


def _build(paths: list[str], out: str, jobs: int, compress: str, label_from: str = EEGMAT_LABELS
           ) -> tuple[float, float, dict]:
    from utils.eeg_build import build_dataset
    from utils.eeg_ingest import IngestConfig

    config = IngestConfig(sfreq=100, window_sec=5, stride_sec=5, channels="1020-19", split_by="subject",
                          val_fraction=0.2, compress=compress, label_from=label_from)
    shutil.rmtree(out, ignore_errors=True)
    t0, cpu0 = time.perf_counter(), _cpu_seconds()
    manifest = build_dataset(paths, out, config, jobs=jobs, progress=False)
    return time.perf_counter() - t0, _cpu_seconds() - cpu0, manifest


def _cpu_seconds() -> float:
    """User + system CPU time of this process and its reaped children (the build's workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _profile_steps(paths: list[str], work: str) -> dict:
    """Per-step CPU time of this process over all recordings (seconds; CPU, not wall, so that other jobs on
    the machine distort it less)."""
    from utils.eeg_fastfilter import cumulative_stages_one_pass
    from utils.eeg_ingest import IngestConfig, RecordingPlan, load_continuous, window_starts
    from utils.eeg_schema import write_window
    from utils.eeg_stages import cumulative_frequency_levels

    config = IngestConfig()
    clock = time.process_time
    steps = dict(read_map_resample=0.0, stages_one_pass=0.0, stages_reference=0.0, write_fast=0.0, write_zlib=0.0)
    n_windows = 0
    for path in paths:
        plan = RecordingPlan(path=path, sha256="", size=0, recording="r", split="train")
        t0 = clock()
        x_CT, ch_names, _ = load_continuous(plan, config)
        t1 = clock()
        stages_KCT = cumulative_stages_one_pass(x_CT, config.sfreq, config.bands)
        t2 = clock()
        cumulative_frequency_levels(x_CT, config.sfreq, config.bands)
        t3 = clock()
        steps["read_map_resample"] += t1 - t0
        steps["stages_one_pass"] += t2 - t1
        steps["stages_reference"] += t3 - t2
        x_CT = x_CT.astype(np.float32)
        starts = window_starts(x_CT.shape[1], config.window_samples, config.stride_samples)
        for mode, compress in (("write_fast", "fast"), ("write_zlib", True)):
            t0 = clock()
            for i, s in enumerate(starts):
                write_window(os.path.join(work, f"{mode}_{i}.npz"), x_CT[:, s:s + 500], stages_KCT[:, :, s:s + 500],
                             config.bands, config.sfreq, ch_names=ch_names, compress=compress, fsync=False)
            os.sync()
            steps[mode] += clock() - t0
        n_windows += len(starts)
    steps["windows"] = n_windows
    return steps


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the benchmark; return (and save) the result dict."""
    parser = bench_parser("python -m benchmarks.bench_ingest", __doc__.split("\n\n")[0])
    parser.add_argument("--inputs", nargs="+", default=[DEFAULT_INPUTS], help="recordings to ingest (eegmat)")
    parser.add_argument("--label-from", default=EEGMAT_LABELS, help="label rule of the builds (see utils.data_eeg)")
    parser.add_argument("--work-dir", default=None, help="scratch folder for the built datasets (default: a "
                        "temporary folder, deleted afterwards)")
    parser.add_argument("--repeats", type=int, default=None, help="timed builds per setting (default 3, quick 1)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    import mne

    from utils.eeg_read import find_recordings

    mne.set_log_level("ERROR")
    paths = find_recordings(args.inputs)
    repeats = args.repeats or (1 if args.quick else 3)
    load_before = os.getloadavg()[0]
    durations = [mne.io.read_raw(p, preload=False).n_times / mne.io.read_raw(p, preload=False).info["sfreq"]
                 for p in paths]
    rec_sec = float(sum(durations))
    work = tempfile.mkdtemp(prefix="bench_ingest_", dir=args.work_dir)
    try:
        _build(paths[1:3], os.path.join(work, "warmup"), 1, "fast", args.label_from)  # imports, caches (two subjects)
        builds = []
        settings = [(1, "fast"), (2, "fast")] + ([] if args.quick else [(1, "zlib")])
        for jobs, compress in settings:
            times, cpus = [], []
            for _ in range(repeats):
                dt, cpu, manifest = _build(paths, os.path.join(work, "out"), jobs, compress, args.label_from)
                times.append(dt)
                cpus.append(cpu)
            wall, cpu = statistics.median(times), statistics.median(cpus)
            size_mb = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(os.path.join(work, "out"))
                          for f in fs) / 2 ** 20
            builds.append(dict(jobs=jobs, compress=compress, wall_s=round(wall, 3), all_wall_s=[round(t, 3) for t in times],
                               x_realtime=round(rec_sec / wall, 1), cpu_s=round(cpu, 3),
                               x_realtime_per_cpu_core=round(rec_sec / cpu, 1),
                               windows=manifest["counts"]["train"]["windows"] + manifest["counts"]["val"]["windows"],
                               dataset_mb=round(size_mb, 1)))
            logger.warning("jobs=%d compress=%s: %.2f s -> %.0fx real time", jobs, compress, wall, rec_sec / wall)
        profile_dir = os.path.join(work, "profile")
        os.makedirs(profile_dir)
        steps = _profile_steps(paths, profile_dir)
        cold = None
        if not args.quick:
            out = os.path.join(work, "cold")
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "utils.data_eeg", "build", "--inputs", *paths, "--out", out,
                            "--label-from", args.label_from, "--jobs", "2",
                            "--progress", "off"], cwd=REPO_ROOT, check=True, capture_output=True)
            cold = round(time.perf_counter() - t0, 3)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()[0]
    best = max(builds, key=lambda b: b["x_realtime"])
    fast1 = next(b for b in builds if b["jobs"] == 1 and b["compress"] == "fast")
    # on an idle 2-core machine two workers get a core each: the CPU-time figure x 2 bounds the wall figure
    projected_2core = round(2 * fast1["x_realtime_per_cpu_core"], 1)
    step_x = {k: round(rec_sec / v, 1) for k, v in steps.items() if k != "windows" and v > 0}  # per CPU core
    result = dict(
        recordings=len(paths), recording_sec=round(rec_sec, 1), builds=builds,
        best_x_realtime=best["x_realtime"], target_x_realtime=TARGET_X_REALTIME,
        meets_target=best["x_realtime"] >= TARGET_X_REALTIME,
        projected_idle_2core_x_realtime=projected_2core,
        steps_cpu_s={k: (round(v, 4) if isinstance(v, float) else v) for k, v in steps.items()},
        steps_x_realtime_per_cpu_core=step_x,
        cold_cli_jobs2_wall_s=cold, cold_cli_x_realtime=(round(rec_sec / cold, 1) if cold else None),
        load_average_before_after=[round(load_before, 2), round(load_after, 2)], quick=args.quick,
        peak_rss_mb_jobs1=round(peak_rss_mb(), 1),
        machine=machine_info())
    rows = [[b["jobs"], b["compress"], b["wall_s"], b["x_realtime"], b["cpu_s"], b["x_realtime_per_cpu_core"],
             b["dataset_mb"]] for b in builds]
    result["report"] = {
        "title": "Ingestion speed (eegmat: 19 ch, 500 Hz -> 100 Hz, 5 stages, 5-s windows, npz)",
        "text": [f"{len(paths)} recordings, {rec_sec / 60:.1f} min of EEG; best {best['x_realtime']:.0f}x real time "
                 f"(target {TARGET_X_REALTIME:.0f}x) wall-clock; {fast1['x_realtime_per_cpu_core']:.0f}x per CPU "
                 f"core, i.e. ~{projected_2core:.0f}x with 2 idle cores; load average {load_before:.1f} before, "
                 f"{load_after:.1f} after (other jobs share the cores).",
                 "Steps (CPU time of one process, x real time per core): "
                 + ", ".join(f"{k} {v:.0f}x" for k, v in step_x.items())],
        "tables": [{"title": "whole build (warm process)", "columns": ["jobs", "compress", "wall s", "x real time",
                                                                      "CPU s", "x per CPU core", "MB"], "rows": rows}],
        "figures": [],
    }
    save_result("ingest", result, args.results_dir)
    return result


def _cli(argv: Sequence[str] | None = None) -> int:
    import json
    setup_logging()
    print(json.dumps({k: v for k, v in main(argv).items() if k not in ("machine", "report")}, indent=1))
    return 0


if __name__ == "__main__":
    run_cli(_cli, prog="python -m benchmarks.bench_ingest")  # bad input: one line and exit code 2, no traceback
