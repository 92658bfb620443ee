"""Process-group helpers following torchrun's contract (upstream ``dist.py``, rewritten).

Module-level state: rank, local rank, world size, device, and whether a process group exists. Read
the values through the getters; collectives are no-ops in a single process, so every caller works
with ``python VAR/train.py`` (one process) and ``torchrun --nproc_per_node=N VAR/train.py`` alike.

fix(upstream): upstream went single-process whenever CUDA was missing (even under torchrun), took the
device from RANK modulo the GPU count, and never read LOCAL_RANK. Here RANK / LOCAL_RANK / WORLD_SIZE
come from the environment, a process group is created whenever WORLD_SIZE > 1 (gloo on CPU, NCCL on
GPU), and the device is ``cuda:LOCAL_RANK``.
"""
from __future__ import annotations

import datetime
import functools
import logging
import os
import sys
from typing import Any, Callable, NoReturn

import torch
import torch.distributed as tdist

logger = logging.getLogger(__name__)

__rank, __local_rank, __world_size = 0, 0, 1
__device = "cpu"
__initialized = False
__backend = "none"


def initialize(backend: str | None = None, timeout: int = 30, device: str | None = None) -> None:
    """Read the torchrun environment, pick the device and create a process group if WORLD_SIZE > 1.

    Parameters
    ----------
    backend : str | None
        ``'nccl'``, ``'gloo'`` or ``None`` (NCCL when CUDA is available, else gloo).
    timeout : int
        Process-group timeout in minutes.
    device : str | None
        Force ``'cpu'`` (tests); ``None`` uses ``cuda:LOCAL_RANK`` when CUDA exists, else the CPU.
    """
    global __rank, __local_rank, __world_size, __device, __initialized, __backend
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device != "cpu"
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} CUDA device(s) are "
                               "visible; launch at most that many processes per node")
        torch.cuda.set_device(local_rank)
        dev = f"cuda:{local_rank}"
    else:
        dev = "cpu"
        if torch.cuda.is_available() is False and device is None:
            logger.warning("CUDA is not available: training on the CPU")
    if world_size > 1 and not tdist.is_initialized():
        backend = backend or ("nccl" if use_cuda else "gloo")
        if backend == "nccl" and not use_cuda:
            raise RuntimeError("the NCCL backend needs CUDA; use gloo on the CPU")
        kwargs: dict[str, Any] = {"backend": backend, "timeout": datetime.timedelta(minutes=timeout)}
        if backend == "nccl":
            kwargs["device_id"] = torch.device(dev)
        restart = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
        if restart > 0 and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
            # workers restarted by `torchrun --max-restarts` share the agent's store with the dead attempt, whose
            # rank addresses are still there (gloo then connects to dead ports); a prefix per attempt isolates them
            store = tdist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size,
                                   is_master=False, timeout=kwargs["timeout"])
            kwargs.update(store=tdist.PrefixStore(f"/var_restart_{restart}", store), rank=rank, world_size=world_size)
        tdist.init_process_group(**kwargs)
        __backend = backend
        __initialized = True
        logger.info("process group: backend=%s rank=%d local_rank=%d world_size=%d device=%s",
                    backend, rank, local_rank, world_size, dev)
    elif tdist.is_initialized():
        __initialized = True
        __backend = tdist.get_backend()
    __rank, __local_rank, __world_size, __device = rank, local_rank, world_size, dev


def initialized() -> bool:
    return __initialized


def get_rank() -> int:
    return __rank


def get_local_rank() -> int:
    return __local_rank


def get_world_size() -> int:
    return __world_size


def get_device() -> torch.device:
    return torch.device(__device)


def get_backend() -> str:
    return __backend


def is_master() -> bool:
    return __rank == 0


def is_local_master() -> bool:
    return __local_rank == 0


def _to_comm(t: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """NCCL needs CUDA tensors: copy CPU tensors over and back."""
    if __backend == "nccl" and not t.is_cuda:
        return t.to(__device), True
    return t, False


def barrier() -> None:
    if __initialized:
        tdist.barrier()


def allreduce(t: torch.Tensor, async_op: bool = False, op: str = "sum"):
    """Sum (or max/min) ``t`` in place over ranks; no-op in a single process. Returns a work handle or None."""
    if not __initialized:
        return None
    red = {"sum": tdist.ReduceOp.SUM, "max": tdist.ReduceOp.MAX, "min": tdist.ReduceOp.MIN}[op]
    comm, copied = _to_comm(t)
    work = tdist.all_reduce(comm, op=red, async_op=async_op and not copied)
    if copied:
        t.copy_(comm)
        return None
    return work


def allgather(t: torch.Tensor, cat: bool = True) -> list[torch.Tensor] | torch.Tensor:
    """Gather ``t`` (same shape on every rank); returns the concatenation along dim 0 or the list."""
    if not __initialized:
        return t if cat else [t]
    comm, copied = _to_comm(t.contiguous())
    out = [torch.empty_like(comm) for _ in range(__world_size)]
    tdist.all_gather(out, comm)
    if copied:
        out = [o.to(t.device) for o in out]
    return torch.cat(out, dim=0) if cat else out


def allgather_diff_shape(t: torch.Tensor, cat: bool = True) -> list[torch.Tensor] | torch.Tensor:
    """Gather tensors whose first dimension differs between ranks (padded, gathered, trimmed)."""
    if not __initialized:
        return t if cat else [t]
    size = torch.tensor([t.shape[0]], dtype=torch.long, device=t.device)
    sizes = [int(s) for s in allgather(size, cat=True).tolist()]
    pad = max(sizes)
    padded = torch.zeros((pad, *t.shape[1:]), dtype=t.dtype, device=t.device)
    padded[: t.shape[0]] = t
    parts = allgather(padded, cat=False)
    parts = [p[:n] for p, n in zip(parts, sizes)]
    return torch.cat(parts, dim=0) if cat else parts


def broadcast(t: torch.Tensor, src: int = 0) -> None:
    """Overwrite ``t`` in place with rank ``src``'s value."""
    if not __initialized:
        return
    comm, copied = _to_comm(t)
    tdist.broadcast(comm, src=src)
    if copied:
        t.copy_(comm)


def dist_fmt_vals(val: float, fmt: str | None = "%.2f") -> torch.Tensor | list[str]:
    """Every rank's scalar ``val`` as a world-size vector (or formatted strings)."""
    ts = torch.zeros(__world_size, dtype=torch.float64)
    ts[__rank] = val
    allreduce(ts)
    return ts if fmt is None else [fmt % v for v in ts.tolist()]


def master_only(func: Callable) -> Callable:
    """Run ``func`` on global rank 0 only (all ranks with ``force=True``); then barrier."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        force = kwargs.pop("force", False)
        ret = func(*args, **kwargs) if (force or is_master()) else None
        barrier()
        return ret
    return wrapper


def local_master_only(func: Callable) -> Callable:
    """Run ``func`` on local rank 0 of each node only (all with ``force=True``); then barrier."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        force = kwargs.pop("force", False)
        ret = func(*args, **kwargs) if (force or is_local_master()) else None
        barrier()
        return ret
    return wrapper


def for_visualize(func: Callable) -> Callable:
    """Run ``func`` on global rank 0 only, without a barrier."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        return func(*args, **kwargs) if is_master() else None
    return wrapper


def finalize() -> None:
    """Destroy the process group (if any) and return to single-process state."""
    global __initialized, __backend
    if __initialized and tdist.is_initialized():
        tdist.destroy_process_group()
    __initialized, __backend = False, "none"


def exit_worker(code: int | str | None) -> NoReturn:
    """End an entry point with exit status ``code``; under torchrun (WORLD_SIZE > 1) skip interpreter teardown.

    Why: once a module has been wrapped in DDP, torch keeps the gloo process group and its worker threads alive
    past ``destroy_process_group``. If such a thread drops the last reference to a tensor while the interpreter
    finalizes, it cannot take the GIL back, and the process aborts ("terminate called without an active
    exception"; seen once in about a hundred two-process runs, core dump read with gdb). By this point checkpoints
    are written atomically, the log tee is closed and the process group destroyed, so the worker flushes its
    streams and logging and leaves with ``os._exit``. A single process exits normally.
    """
    if isinstance(code, str):  # SystemExit("message") convention: print it, status 1
        print(code, file=sys.stderr)
        code = 1
    code = int(code or 0)
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        raise SystemExit(code)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken pipe: nothing left to save
            pass
    os._exit(code)


def run_then_exit_worker(entry: Callable[[], int | None]) -> NoReturn:
    """Run an entry point's ``entry()`` and end with its status through :func:`exit_worker`. The status is what it
    returns or the code of the ``SystemExit`` it raises (torchrun's ``@record`` turns ``SystemExit(0)`` into a plain
    return)."""
    try:
        code = entry()
    except SystemExit as done:
        code = done.code
    exit_worker(code)
