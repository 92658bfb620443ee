"""Run every benchmark of the project, write summary.json and a Markdown page of every result.

Usage::

    python -m benchmarks.run_all                 # full mode (longer), into runs/benchmarks/ (untracked)
    python -m benchmarks.run_all --quick         # minutes
    python -m benchmarks.run_all --write-results # into the tracked benchmarks/results/ and benchmarks/RESULTS.md
    python -m benchmarks.run_all --only baselines tokenizer
    python -m benchmarks.run_all --reuse         # run only what has no saved result yet
    python -m benchmarks.run_all --split-by time # the second protocol, on the benchmarks that take it
    python -m benchmarks.run_all --list

Benchmarks are the ``benchmarks/bench_<name>.py`` modules (see :mod:`benchmarks` for their contract). Each
runs in its own Python process (so peak memory and thread settings are its own, and one failure does not
stop the others) with ``OMP_NUM_THREADS`` set to ``--threads``. A failed benchmark is recorded with its error
in ``summary.json`` and makes the exit code 1; the Markdown page is still regenerated from what succeeded.
Tracked files (``benchmarks/results/``, ``benchmarks/RESULTS.md``) change only with ``--write-results``.
"""
from __future__ import annotations

import glob
import logging
import os
import pkgutil
import subprocess
import sys
import time
from typing import Sequence

import benchmarks
from benchmarks import RESULTS_DIR, bench_name, load_result, machine_info, save_result
from benchmarks.bench_baselines import BENCH_DATASETS, split_suffix
from benchmarks.report import write_results_md
from utils.cli import ArgumentParser, run_cli, setup_logging
from utils.errors import UserError
from utils.project_info import REPO_ROOT

logger = logging.getLogger("benchmarks.run_all")
SCRATCH_RESULTS_DIR = os.path.join(REPO_ROOT, "runs", "benchmarks", "results")

#: Preferred order; benchmarks not listed run after these, alphabetically.
ORDER = ("ingest", "tokenizer", "baselines", "var")


def discover() -> list[str]:
    """Names (without ``bench_``) of the benchmark modules in this package, in run order."""
    names = [bench_name(m.name) for m in pkgutil.iter_modules(benchmarks.__path__) if m.name.startswith("bench_")]
    return sorted(names, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))


def takes_split_by(name: str) -> bool:
    """Whether ``bench_<name>`` judges against held-out eegmat windows and so takes ``--split-by``."""
    import importlib
    return bool(getattr(importlib.import_module(f"benchmarks.bench_{name}"), "TAKES_SPLIT_BY", False))


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m benchmarks.run_all",
                            description="Run the project's benchmarks, save JSON results and figures, and "
                                        "write RESULTS.md beside the results folder.")
    parser.add_argument("--quick", action="store_true", help="small settings (minutes instead of hours)")
    parser.add_argument("--only", nargs="+", metavar="NAME", default=None,
                        help="run only these benchmarks (e.g. baselines tokenizer; 'bench_' prefix optional)")
    parser.add_argument("--results-dir", default=None, help="folder for <name>.json, summary.json, figures (default: "
                        "runs/benchmarks/results, untracked; with --write-results: benchmarks/results)")
    parser.add_argument("--write-results", action="store_true", help="write into the tracked benchmarks/results/ "
                        "and regenerate benchmarks/RESULTS.md (what the README links to)")
    parser.add_argument("--data-root", default=None, help="dataset root passed to every benchmark")
    parser.add_argument("--no-markdown", action="store_true", help="do not write RESULTS.md")
    parser.add_argument("--threads", type=int, default=max(1, min(4, os.cpu_count() or 1)),
                        help="OMP/torch threads per benchmark process")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds per benchmark before it is stopped (default: none)")
    parser.add_argument("--reuse", action="store_true",
                        help="skip benchmarks whose saved result (same --quick mode) already exists in --results-dir; "
                             "they are reported from that result")
    parser.add_argument("--split-by", default="subject", choices=tuple(BENCH_DATASETS),
                        help="protocol of the benchmarks that judge against held-out eegmat windows: held-out "
                             "subjects (subject) or the last 30%% of every recording (time: only the benchmarks "
                             "that take --split-by run, and their results get _time in their names)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks found (those that take "
                        "--split-by with --split-by time) and exit")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def results_dir_for(args) -> str:
    """``--results-dir`` if given; else the tracked ``benchmarks/results`` with ``--write-results``, else the
    untracked ``runs/benchmarks/results`` (a plain run never changes tracked files)."""
    if args.results_dir is not None:
        return args.results_dir
    return RESULTS_DIR if args.write_results else SCRATCH_RESULTS_DIR


def _child_argv(args) -> list[str]:
    argv = ["--results-dir", os.path.abspath(args.results_dir)]
    if args.quick:
        argv.append("--quick")
    if args.data_root:
        argv += ["--data-root", os.path.abspath(args.data_root)]
    if args.split_by != "subject":
        argv += ["--split-by", args.split_by]
    return argv


def run_one(name: str, argv: list[str], threads: int, timeout: float | None) -> dict:
    """Run ``benchmarks.bench_<name>.main(argv)`` in a child process; returns its status record."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    env["PYTHONPATH"] = REPO_ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    code = ("import sys, torch; torch.set_num_threads(int(sys.argv[1])); "
            "from benchmarks.run_all import child_main; child_main(sys.argv[2], sys.argv[3:])")
    cmd = [sys.executable, "-c", code, str(threads), name, *argv]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, timeout=timeout, capture_output=True, text=True)
        status = "ok" if proc.returncode == 0 else "failed"
        err = "" if proc.returncode == 0 else (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        stderr_tail = proc.stderr[-4000:]
    except subprocess.TimeoutExpired as exc:
        status, err = "timeout", f"stopped after {timeout:g} s"
        stderr_tail = (exc.stderr or b"")[-4000:].decode(errors="replace") if isinstance(exc.stderr, bytes) else ""
    wall = time.perf_counter() - t0
    if status != "ok":
        logger.error("benchmark %s %s: %s\n%s", name, status, err, stderr_tail)
    return {"status": status, "wall_s": round(wall, 2), "error": err or None}


def child_main(name: str, argv: Sequence[str]) -> None:
    """Entry point inside the child process: import the module, run ``main(argv)``, save its dict."""
    import importlib

    setup_logging("-v" in argv or "--verbose" in argv)
    module = importlib.import_module(f"benchmarks.bench_{name}")
    results_dir = argv[list(argv).index("--results-dir") + 1] if "--results-dir" in argv else RESULTS_DIR
    split_by = argv[list(argv).index("--split-by") + 1] if "--split-by" in argv else "subject"
    t0 = time.time()
    try:
        result = module.main(list(argv))
    except UserError as err:
        print(f"bench_{name}: error: {err}", file=sys.stderr)
        raise SystemExit(2)
    key = name + split_suffix(split_by)  # the name the benchmark itself saves under
    path = os.path.join(results_dir, f"{key}.json")
    if not isinstance(result, dict):
        print(f"bench_{name}: error: main() returned {type(result).__name__}, expected a dict", file=sys.stderr)
        raise SystemExit(1)
    if not os.path.exists(path) or os.path.getmtime(path) < t0:  # the module did not save it itself
        save_result(key, result, results_dir)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.results_dir = results_dir_for(args)
    setup_logging(args.verbose)
    found = discover()
    runnable = found if args.split_by == "subject" else [n for n in found if takes_split_by(n)]
    if args.list:
        print("\n".join(runnable))
        return 0
    selected = runnable
    if args.only:
        wanted = [bench_name(n) for n in args.only]
        unknown = [n for n in wanted if n not in found]
        if unknown:
            raise UserError(f"--only got {unknown}; benchmarks found: {found}")
        no_split = [n for n in wanted if n not in runnable]
        if no_split:
            raise UserError(f"--only {' '.join(no_split)} with --split-by {args.split_by}: they do not take "
                            f"--split-by; those that do: {' '.join(runnable)}")
        selected = [n for n in found if n in wanted]
    os.makedirs(args.results_dir, exist_ok=True)
    info = machine_info()
    logger.info("running %s (%s mode, %s split) into %s", selected, "quick" if args.quick else "full", args.split_by,
                args.results_dir)
    runs: dict[str, dict] = {}
    for name in selected:
        key = name + split_suffix(args.split_by)
        prev = load_result(key, args.results_dir) if args.reuse else None
        if prev is not None and bool(prev.get("quick")) == bool(args.quick):
            logger.info("benchmark %s: reusing %s", name, os.path.join(args.results_dir, f"{key}.json"))
            runs[name] = {"status": "reused", "wall_s": None, "error": None}
            continue
        logger.info("benchmark %s ...", name)
        runs[name] = run_one(name, _child_argv(args), args.threads, args.timeout)
        logger.info("benchmark %s: %s in %.1f s", name, runs[name]["status"], runs[name]["wall_s"])
    results = {}
    for name in found:  # benchmarks not run this time keep their last saved results in the summary
        # variants of a benchmark, e.g. <name>_cuda (run on a GPU) or var_time (another split)
        variants = sorted(os.path.basename(f)[:-5] for f in glob.glob(os.path.join(args.results_dir, f"{name}_*.json"))
                          if not f.endswith(".prev.json"))
        for key in [name, *variants]:
            res = load_result(key, args.results_dir)
            if res is not None:
                results[key] = res
    summary = {"machine": info, "quick": bool(args.quick), "runs": runs, "results": results}
    save_result("summary", summary, args.results_dir)
    if not args.no_markdown:
        written = write_results_md(summary, args.results_dir)
        logger.info("results page written to %s", written)
    failed = [n for n, r in runs.items() if r["status"] not in ("ok", "reused")]
    if failed:
        logger.error("failed benchmarks: %s", failed)
        return 1
    return 0


if __name__ == "__main__":
    run_cli(main, prog="python -m benchmarks.run_all")
