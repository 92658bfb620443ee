"""Run-time helpers for training entries: rank-aware printing, stdout/stderr tee, metric and TensorBoard
loggers, and auto-resume (upstream ``utils/misc.py``, without its shell helpers and PNG packer).

fix(upstream): upstream replaced ``builtins.print`` for the whole process; here :func:`print0` is an
explicit rank-aware function. Clock strings are UTC (upstream hard-coded Asia/Shanghai via pytz).
"""
from __future__ import annotations

import datetime
import glob
import logging
import os
import sys
import time
from collections import defaultdict, deque
from typing import Any, Iterable, Iterator

import torch

import dist
from utils.checkpoint import load_checkpoint
from utils.errors import CheckpointError

logger = logging.getLogger(__name__)


def time_str(fmt: str = "[%m-%d %H:%M:%S]") -> str:
    """Current UTC time formatted with ``fmt``."""
    return datetime.datetime.now(datetime.timezone.utc).strftime(fmt)


def print0(*args: Any, force: bool = False, clean: bool = False, **kwargs: Any) -> None:
    """Print on local rank 0 (every rank with ``force=True``), prefixed with the UTC time unless ``clean``."""
    if not (force or dist.is_local_master()):
        return
    if clean:
        print(*args, **kwargs)
    else:
        prefix = time_str() if dist.get_world_size() == 1 else f"{time_str()} [rk{dist.get_rank():02d}]"
        print(prefix, *args, **kwargs)
    (kwargs.get("file") or sys.stdout).flush()


class SyncPrint:
    """A tee: writes go to the terminal stream and to ``<out_dir>/stdout.txt`` (or ``stderr.txt``)."""

    def __init__(self, local_output_dir: str, sync_stdout: bool = True) -> None:
        self.sync_stdout = sync_stdout
        self.terminal_stream = sys.stdout if sync_stdout else sys.stderr
        fname = os.path.join(local_output_dir, "stdout.txt" if sync_stdout else "stderr.txt")
        existing = os.path.exists(fname)
        self.file_stream = open(fname, "a", encoding="utf-8")
        if existing:
            self.file_stream.write("\n" * 3 + "=" * 30 + f"  RESTART {time_str()}  " + "=" * 30 + "\n")
        self.file_stream.flush()
        self.enabled = True

    def write(self, message: str) -> None:
        self.terminal_stream.write(message)
        if self.enabled:
            self.file_stream.write(message)

    def flush(self) -> None:
        self.terminal_stream.flush()
        if self.enabled:
            self.file_stream.flush()

    def isatty(self) -> bool:
        return self.terminal_stream.isatty()

    def fileno(self) -> int:
        return self.terminal_stream.fileno()

    def close(self) -> None:
        """Close the file and put the original stream back (idempotent)."""
        if not self.enabled:
            return
        self.enabled = False
        self.file_stream.close()
        if self.sync_stdout and sys.stdout is self:
            sys.stdout = self.terminal_stream
        elif not self.sync_stdout and sys.stderr is self:
            sys.stderr = self.terminal_stream

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def start_tee(local_output_dir: str) -> tuple[SyncPrint, SyncPrint] | None:
    """On local rank 0, copy stdout/stderr into ``stdout.txt`` / ``stderr.txt``; returns the tees (or None)."""
    if not dist.is_local_master():
        return None
    os.makedirs(local_output_dir, exist_ok=True)
    out, err = SyncPrint(local_output_dir, sync_stdout=True), SyncPrint(local_output_dir, sync_stdout=False)
    sys.stdout, sys.stderr = out, err
    # logging handlers created earlier hold the old stream: point them at the tee
    for h in logging.getLogger().handlers:
        if isinstance(h, logging.StreamHandler) and h.stream in (out.terminal_stream, err.terminal_stream):
            h.setStream(err if h.stream is err.terminal_stream else out)
    return out, err


def stop_tee(tees: tuple[SyncPrint, SyncPrint] | None) -> None:
    """Undo :func:`start_tee`."""
    if not tees:
        return
    for t in tees:
        for h in logging.getLogger().handlers:
            if isinstance(h, logging.StreamHandler) and h.stream is t:
                h.setStream(t.terminal_stream)
        t.close()


class DistLogger:
    """Forwards attribute access to ``lg`` when ``verbose``; otherwise every method is a no-op."""

    def __init__(self, lg: Any, verbose: bool) -> None:
        self._lg, self._verbose = lg, verbose

    @staticmethod
    def do_nothing(*args: Any, **kwargs: Any) -> None:
        return None

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._lg, attr) if self._verbose else DistLogger.do_nothing


class TensorboardLogger:
    """A SummaryWriter with upstream's step gating (iteration scalars at step 0 and every 500th step)."""

    def __init__(self, log_dir: str, filename_suffix: str = "") -> None:
        from torch.utils.tensorboard import SummaryWriter
        self.writer = SummaryWriter(log_dir=log_dir, filename_suffix=filename_suffix)
        self.step = 0

    def set_step(self, step: int | None = None) -> None:
        self.step = self.step + 1 if step is None else step

    def loggable(self) -> bool:
        return self.step == 0 or (self.step + 1) % 500 == 0

    def update(self, head: str = "scalar", step: int | None = None, **kwargs: Any) -> None:
        """Write ``head/key`` scalars; ``step=None`` uses the internal step (gated), else always writes."""
        if step is None:
            step = self.step
            if not self.loggable():
                return
        for k, v in kwargs.items():
            if v is None:
                continue
            if hasattr(v, "item"):
                v = v.item()
            self.writer.add_scalar(f"{head}/{k}", v, step)

    def log_tensor_as_distri(self, tag: str, tensor1d: torch.Tensor, step: int | None = None) -> None:
        if step is None:
            step = self.step
            if not self.loggable():
                return
        self.writer.add_histogram(tag=tag, values=tensor1d.detach().float().cpu(), global_step=step)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class SmoothedValue:
    """A series of values: window median/average and the global average.

    fix(upstream) §18.3: synchronisation goes through :mod:`dist` (a no-op without a process group)
    instead of calling torch.distributed on CUDA directly.
    """

    def __init__(self, window_size: int = 30, fmt: str | None = None) -> None:
        self.deque: deque = deque(maxlen=window_size)
        self.total, self.count = 0.0, 0
        self.fmt = fmt or "{median:.4f} ({global_avg:.4f})"

    def update(self, value: float, n: int = 1) -> None:
        self.deque.append(value)
        self.count += n
        self.total += value * n

    def synchronize_between_processes(self) -> None:
        """Sum count and total over ranks (the window stays local)."""
        t = torch.tensor([self.count, self.total], dtype=torch.float64)
        dist.barrier()
        dist.allreduce(t)
        self.count, self.total = int(t[0].item()), float(t[1].item())

    @property
    def median(self) -> float:
        return float(torch.tensor(list(self.deque)).median().item()) if self.deque else 0.0

    @property
    def avg(self) -> float:
        return float(torch.tensor(list(self.deque), dtype=torch.float32).mean().item()) if self.deque else 0.0

    @property
    def global_avg(self) -> float:
        return self.total / max(self.count, 1)

    @property
    def max(self) -> float:
        return max(self.deque) if self.deque else 0.0

    @property
    def value(self) -> float:
        return self.deque[-1] if self.deque else 0.0

    def time_preds(self, counts: int) -> tuple[float, str, str]:
        """(remaining seconds, 'H:MM:SS', UTC finish time) for ``counts`` more items at the median rate."""
        remain_secs = counts * self.median
        finish = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=remain_secs)
        return remain_secs, str(datetime.timedelta(seconds=round(remain_secs))), finish.strftime("%Y-%m-%d %H:%M")

    def __str__(self) -> str:
        return self.fmt.format(median=self.median, avg=self.avg, global_avg=self.global_avg, max=self.max,
                               value=self.value)


class MetricLogger:
    """Named :class:`SmoothedValue` meters with periodic console lines (``log_every``)."""

    def __init__(self, delimiter: str = "  ") -> None:
        self.meters: dict[str, SmoothedValue] = defaultdict(SmoothedValue)
        self.delimiter = delimiter
        self.iter_end_t = time.time()
        self.log_iters: set[int] = set()
        self.iter_time = SmoothedValue(fmt="{avg:.4f}")

    def update(self, **kwargs: Any) -> None:
        for k, v in kwargs.items():
            if v is None:
                continue
            if hasattr(v, "item"):
                v = v.item()
            self.meters[k].update(float(v))

    def __getattr__(self, attr: str) -> Any:
        if attr in ("meters", "delimiter"):
            raise AttributeError(attr)
        if attr in self.meters:
            return self.meters[attr]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{attr}'")

    def __str__(self) -> str:
        return self.delimiter.join(f"{name}: {meter}" for name, meter in self.meters.items() if meter.count > 0)

    def synchronize_between_processes(self) -> None:
        for meter in self.meters.values():
            meter.synchronize_between_processes()

    def add_meter(self, name: str, meter: SmoothedValue) -> None:
        self.meters[name] = meter

    def log_every(self, start_it: int, max_iters: int, itrt: Iterable | Iterator, print_freq: int,
                  header: str = "") -> Iterator[tuple[int, Any]]:
        """Yield ``(it, item)`` for ``it`` in ``[start_it, max_iters)`` from ``itrt``, printing ``print_freq`` lines.

        The log iterations are ``print_freq`` evenly spaced iterations plus ``start_it``; they are in
        :attr:`log_iters` so the caller can compute costly metrics only there.
        """
        start_time = time.time()
        self.log_iters = {int(round(x)) for x in torch.linspace(0, max_iters - 1, max(print_freq, 1)).tolist()}
        self.log_iters.add(start_it)
        data_time = SmoothedValue(fmt="{avg:.4f}")
        self.iter_time = SmoothedValue(fmt="{avg:.4f}")
        space_fmt = f":{len(str(max_iters))}d"
        log_msg = self.delimiter.join([header, "[{0" + space_fmt + "}/{1}]", "eta: {eta}", "{meters}",
                                       "time: {time}", "data: {data}"])
        self.iter_end_t = time.time()
        iterator = iter(itrt)
        for it in range(start_it, max_iters):
            obj = next(iterator)
            data_time.update(time.time() - self.iter_end_t)
            yield it, obj
            self.iter_time.update(time.time() - self.iter_end_t)
            if it in self.log_iters:
                eta = self.iter_time.global_avg * (max_iters - it)
                print0(log_msg.format(it, max_iters, eta=str(datetime.timedelta(seconds=int(eta))),
                                      meters=str(self), time=str(self.iter_time), data=str(data_time)))
            self.iter_end_t = time.time()
        total = time.time() - start_time
        n = max(max_iters - start_it, 1)
        print0(f"{header}   Total time:      {datetime.timedelta(seconds=int(total))}   ({total / n:.3f} s / it)")


def progress_of(state: dict) -> tuple[int, int]:
    """The recorded training progress ``(epoch, iter)`` of a checkpoint state (next position to run)."""
    return int(state.get("epoch", 0)), int(state.get("iter", 0))


def auto_resume(local_out_dir_path: str, pattern: str = "ar-ckpt*.pth",
                map_location: str = "cpu") -> tuple[list[str], int, int, dict, str | None]:
    """Find the checkpoint with the most recorded progress in ``local_out_dir_path`` and load it.

    fix(upstream) §18.5: upstream picked the newest-modified file; here every candidate matching
    ``pattern`` (``.prev`` twins excluded; they are only fallbacks of a damaged file) is loaded with
    :func:`utils.checkpoint.load_checkpoint` and the largest ``(epoch, iter)`` wins (``*-last`` on ties).

    Returns
    -------
    info : list of str
        Human-readable lines about what was found.
    start_ep, start_it : int
        Where to continue (0, 0 when nothing was found).
    state : dict
        The loaded checkpoint (empty when nothing was found).
    used_path : str | None
        The file actually loaded.
    """
    files = sorted(f for f in glob.glob(os.path.join(local_out_dir_path, pattern)) if ".prev." not in f)
    info: list[str] = []
    if not files:
        info.append(f"[auto_resume] no checkpoint matching {pattern!r} in {local_out_dir_path}; starting from scratch")
        return info, 0, 0, {}, None
    best: tuple[tuple[int, int, int], dict, str] | None = None
    errors = []
    for f in files:
        try:
            state, used = load_checkpoint(f, map_location=map_location)
        except CheckpointError as err:
            errors.append(str(err))
            continue
        key = (*progress_of(state), 1 if "last" in os.path.basename(f) else 0)
        if best is None or key > best[0]:
            best = (key, state, used)
    if best is None:
        raise CheckpointError(f"{local_out_dir_path}: every checkpoint is unusable ({'; '.join(errors)}); "
                              "delete them or choose a new --local_out_dir_path")
    for e in errors:
        info.append(f"[auto_resume] ignored: {e}")
    (ep, it, _), state, used = best
    info.append(f"[auto_resume] resuming from {used} at epoch {ep}, iteration {it}")
    return info, ep, it, state, used
