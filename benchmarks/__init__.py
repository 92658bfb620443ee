"""Benchmarks: speed and quality of the project beside classical alternatives.

Run everything with ``python -m benchmarks.run_all [--quick] [--only NAME ...]``; one benchmark alone with
``python -m benchmarks.bench_<name> [--quick] [--results-dir DIR] [--data-root DIR]``.

The contract every ``benchmarks/bench_<name>.py`` follows
----------------------------------------------------------
- It exposes ``main(argv: list[str] | None = None) -> dict`` and builds its parser with
  :func:`bench_parser`, so it accepts the common flags ``--quick``, ``--results-dir`` and
  ``--data-root`` (plus its own).
- It saves its result with :func:`save_result` as ``<results-dir>/<name>.json`` (``name`` without the
  ``bench_`` prefix) and returns the same dict. Figures go next to it (:func:`figure_path`), as PNG.
- The dict is plain JSON. Besides free-form numbers it may hold a ``"report"`` entry that
  :mod:`benchmarks.report` renders into the README::

      {"title": str, "text": [str, ...],
       "tables": [{"title": str, "columns": [str, ...], "rows": [[...], ...]}, ...],
       "figures": [{"title": str, "path": "<file name inside the results dir>"}, ...]}

- A benchmark that judges against held-out eegmat windows takes ``--split-by subject|time`` and sets
  ``TAKES_SPLIT_BY = True``; ``--split-by time`` adds ``_time`` to the names it saves.
- Timings are medians of several repetitions (:func:`median_time`); comparisons are ratios measured in
  the same run.

Previous results are never lost silently: :func:`save_result` keeps the former file as
``<name>.prev.json``.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import re
import platform
import resource
import statistics
import sys
import tempfile
import time
from typing import Any, Callable

from utils.cli import ArgumentParser
from utils.errors import UserError
from utils.project_info import REPO_ROOT, code_version

logger = logging.getLogger(__name__)

#: Default folder for results and figures.
RESULTS_DIR = os.path.join(REPO_ROOT, "benchmarks", "results")

__all__ = ["RESULTS_DIR", "bench_parser", "device_sync", "save_result", "load_result", "figure_path", "machine_info",
           "median_time", "peak_rss_mb", "bench_name", "parse_ints"]


def bench_name(module_name: str) -> str:
    """``'benchmarks.bench_baselines'`` or ``'bench_baselines'`` -> ``'baselines'``."""
    base = module_name.rsplit(".", 1)[-1]
    return base[len("bench_"):] if base.startswith("bench_") else base


def bench_parser(prog: str, description: str) -> ArgumentParser:
    """Argument parser with the flags every benchmark accepts (``--quick``, ``--results-dir``, ``--data-root``)."""
    parser = ArgumentParser(prog=prog, description=description)
    parser.add_argument("--quick", action="store_true", help="small settings that finish in minutes")
    parser.add_argument("--results-dir", default=RESULTS_DIR, help="folder for <name>.json and figures")
    parser.add_argument("--data-root", default=None,
                        help="dataset root (train/, val/, manifest.json); default: the benchmark's own choice")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def parse_ints(text: str, flag: str) -> list[int]:
    """A comma-separated list of positive integers from flag ``flag``; one-line error otherwise."""
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{flag}={text!r}: expected comma-separated integers, e.g. 4,8,16") from None
    if not vals or min(vals) < 1:
        raise UserError(f"{flag}={text!r}: expected positive integers, e.g. 4,8,16")
    return vals


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


# Any absolute path of two or more components (``/tmp/x``, ``/check/clone/...``): the first component is not
# a closed list, since a clone can live anywhere.
_ABS_PATH = re.compile(r"(?<![\w.~-])(?:/[\w.+@=-]+){2,}")


def portable_path(path: str) -> str:
    """A path fit for a shared results file: relative to the repository when inside it, else its last two
    components (``eegmat100_s25/val``, ``var_run/ar-ckpt-best.pth``): the name, never the machine's layout."""
    path = os.path.normpath(path)
    rel = os.path.relpath(path, REPO_ROOT)
    if not rel.startswith(".."):
        return rel.replace(os.sep, "/")
    parts = [p for p in path.split(os.sep) if p]
    return "/".join(parts[-2:])


def portable(obj: Any) -> Any:
    """``obj`` with every absolute path inside its strings made :func:`portable_path` (dicts and lists walked)."""
    if isinstance(obj, str):
        return _ABS_PATH.sub(lambda m: portable_path(m.group(0)), obj)
    if isinstance(obj, dict):
        return {k: portable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [portable(v) for v in obj]
    return obj


def save_result(name: str, result: dict, results_dir: str = RESULTS_DIR) -> str:
    """Write ``result`` to ``<results_dir>/<name>.json`` atomically; an older file becomes ``<name>.prev.json``.

    Non-finite floats are written as ``Infinity``/``NaN`` (Python's json reads them back). Absolute paths in
    strings are written as :func:`portable_path` (results are shared; machine paths mean nothing elsewhere).
    """
    result = portable(result)
    os.makedirs(results_dir, exist_ok=True)
    path = os.path.join(results_dir, f"{name}.json")
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=results_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2, default=_json_default)
            fh.write("\n")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; results are ordinary shared files
        if os.path.exists(path):
            os.replace(path, os.path.join(results_dir, f"{name}.prev.json"))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_result(name: str, results_dir: str = RESULTS_DIR) -> dict | None:
    """The saved result of benchmark ``name``, or ``None`` when absent."""
    path = os.path.join(results_dir, f"{name}.json")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def figure_path(results_dir: str, file_name: str) -> str:
    """Full path for a figure inside the results folder (created if needed)."""
    os.makedirs(results_dir, exist_ok=True)
    return os.path.join(results_dir, file_name)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024.0 * 1024.0) if sys.platform == "darwin" else rss / 1024.0


def device_sync(dev: Any) -> None:
    """Wait for the queued kernels of ``dev`` (a ``torch.device``) when it is a GPU, so wall-clock timers are true."""
    if getattr(dev, "type", None) == "cuda":
        import torch

        torch.cuda.synchronize(dev)


def median_time(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeats`` runs after ``warmup`` untimed runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(statistics.median(times))


def plot_psd_curves(ax: Any, curves: dict, f_max: float | None = None, legend_size: int = 8) -> None:
    """Draw saved mean-PSD curves on a matplotlib axis (log scale): ``curves`` holds ``freqs_hz`` and one
    list per kind (µV²/Hz); the ``'real val'`` curve is drawn thick and black, the others in cycle colours."""
    import numpy as np

    f = np.asarray(curves["freqs_hz"])
    keep = (f > 0) & (f <= (f_max or f.max()))
    for i, key in enumerate(k for k in curves if k != "freqs_hz"):
        ax.semilogy(f[keep], np.asarray(curves[key])[keep], color="k" if key == "real val" else f"C{i}",
                    lw=2 if key == "real val" else 1, label=key)
    ax.set(xlabel="frequency (Hz)", ylabel="PSD (µV²/Hz)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=legend_size)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    """Machine, software versions, date and code version, for the README and summary.json."""
    import numpy
    import scipy

    info: dict[str, Any] = {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "code_version": code_version(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
    }
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            info["memory_gib"] = round(int(fh.readline().split()[1]) / 1024 ** 2, 1)
    except (OSError, ValueError, IndexError):
        pass
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        info["torch"] = None
    try:
        import mne

        info["mne"] = mne.__version__
    except ImportError:
        pass
    return info
