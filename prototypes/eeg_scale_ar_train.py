"""Training and evaluation loops of the prototype (one epoch at a time, deterministic per seed and epoch).

Shape letters: B batch, C channels, T time samples.

Randomness is a function of ``(seed, epoch)`` only: the shuffling order comes from a ``torch.Generator``
seeded per epoch and dropout from the global generator re-seeded at the start of each epoch. A run
resumed after epoch k therefore continues exactly as the uninterrupted run would (tested). Mid-epoch
checkpoints (``save_every``) also record the step reached, the running epoch statistics and the global
RNG state; :func:`make_loader` with ``skip_batches`` and :func:`train_one_epoch` with ``resume`` continue
such an epoch with exactly the remaining batches and dropout masks (tested).
"""
from __future__ import annotations

import logging
import math
import sys
import time
from typing import Any, Callable, Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from utils.errors import UserError

logger = logging.getLogger(__name__)


def epoch_seed(seed: int, epoch: int) -> int:
    """Seed of everything random in epoch ``epoch`` (0-based) of a run seeded with ``seed``."""
    return (int(seed) * 1_000_003 + int(epoch) * 7_919 + 17) % (2**63 - 1)


class EpochOrderSampler(Sampler[int]):
    """Indices ``0..n-1`` in an order fixed by ``(seed, epoch)`` (identity order unless ``shuffle``), from
    position ``start`` on: batch ``b`` of a loader over it is always the same samples, so skipping the
    first ``start // batch_size`` batches of an epoch is exact and loads nothing."""

    def __init__(self, n: int, *, shuffle: bool, seed: int = 0, epoch: int = 0, start: int = 0):
        self.n, self.shuffle, self.seed, self.epoch, self.start = int(n), shuffle, seed, epoch, min(int(start), int(n))

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.start, self.n))
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch)))
        return iter(order[self.start:].tolist())

    def __len__(self) -> int:
        return self.n - self.start


def make_loader(dataset: Dataset, batch_size: int, *, shuffle: bool, seed: int = 0, epoch: int = 0,
                num_workers: int = 0, skip_batches: int = 0) -> DataLoader:
    """A DataLoader whose order depends only on ``(seed, epoch)``; ``skip_batches`` leaves out the first
    batches of that order (resuming a mid-epoch checkpoint)."""
    sampler = EpochOrderSampler(len(dataset), shuffle=shuffle, seed=seed, epoch=epoch,  # type: ignore[arg-type]
                                start=skip_batches * batch_size)
    # the loader's own generator only seeds worker processes; without one it would draw from the global RNG
    generator = torch.Generator().manual_seed(epoch_seed(seed, epoch) + 2) if shuffle else None
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, generator=generator,
                      num_workers=num_workers, drop_last=False, persistent_workers=False)


def make_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on biases, norms or the embeddings' 1-D vectors)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr)


class NonFiniteError(UserError):
    """Too many optimizer steps in a row had a non-finite loss or gradient."""


def train_one_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer, *, epoch: int,
                    seed: int, grad_clip: float, device: torch.device, log_interval: int,
                    progress: bool | None = None, max_nonfinite: int = 10,
                    nonfinite_run: int = 0, save_every: int = 0,
                    on_save: Callable[[dict[str, Any]], None] | None = None,
                    resume: dict[str, Any] | None = None) -> dict[str, float]:
    """One pass over ``loader`` minimising MSE between predicted and true stage k+1.

    Parameters
    ----------
    epoch : int
        0-based epoch (seeds dropout together with ``seed``).
    grad_clip : float
        Max global gradient norm; ``0`` disables clipping (the norm is still measured).
    log_interval : int
        Log loss and gradient norm every this many steps.
    progress : bool | None
        Show a tqdm bar; ``None`` shows it only when stderr is a terminal.
    max_nonfinite : int
        A step whose loss or gradient norm is NaN/Inf is skipped (no update) and counted; this many in a
        row (counted across epochs through ``nonfinite_run``) raise :class:`NonFiniteError`.
    nonfinite_run : int
        Skipped steps in a row at the end of the previous epoch (ignored with ``resume``).
    save_every : int
        Call ``on_save(partial)`` after every ``save_every``-th step (batch, applied or skipped) of the
        epoch except the last; ``0`` never. ``partial`` (plain types and tensors) holds ``step`` (batches
        done), ``steps_in_epoch``, the running sums (``loss_sum``, ``samples``, ``grad_norms``,
        ``nonfinite_steps``, ``nonfinite_run``, ``seconds``) and ``rng_state`` (``torch.get_rng_state()``,
        plus ``cuda_rng_state`` on CUDA).
    resume : dict | None
        Such a ``partial``: continue the epoch after its ``step`` with its sums and RNG state. ``loader``
        must then leave out the batches done (``make_loader(..., skip_batches=partial['step'])``).

    Returns
    -------
    dict
        ``train_loss`` (mean MSE over the samples of applied steps, model units²), ``grad_norm`` (mean
        pre-clip norm), ``grad_norm_max``, ``steps`` (applied), ``nonfinite_steps`` (skipped),
        ``nonfinite_run`` (skipped in a row at the end), ``seconds`` (summed over interrupted parts).
        A resumed epoch returns exactly the values of an uninterrupted one (except ``seconds``).

    Raises
    ------
    NonFiniteError
        After ``max_nonfinite`` skipped steps in a row; the model holds the last good parameters.
    """
    torch.manual_seed(epoch_seed(seed, epoch) + 1)  # dropout: the only consumer of the global generator here
    model.train()
    total, count, norms, skipped, start, seconds0 = 0.0, 0, [], 0, 0, 0.0
    if resume is not None:
        total, count = float(resume["loss_sum"]), int(resume["samples"])
        norms = [float(v) for v in resume["grad_norms"]]
        skipped, nonfinite_run = int(resume["nonfinite_steps"]), int(resume["nonfinite_run"])
        start, seconds0 = int(resume["step"]), float(resume["seconds"])
        torch.set_rng_state(resume["rng_state"])
        if device.type == "cuda" and resume.get("cuda_rng_state") is not None:
            torch.cuda.set_rng_state(resume["cuda_rng_state"], device)
    n_steps = start + len(loader)
    t0 = time.perf_counter()
    show = sys.stderr.isatty() if progress is None else progress
    with logging_redirect_tqdm():
        bar = tqdm(loader, desc=f"epoch {epoch + 1}", unit="batch", disable=not show, leave=False,
                   initial=start, total=n_steps)
        for step, (x_BCT, y_BCT, k_B) in enumerate(bar, start=start + 1):
            x_BCT, y_BCT, k_B = x_BCT.to(device), y_BCT.to(device), k_B.to(device)
            loss = nn.functional.mse_loss(model(x_BCT, k_B), y_BCT)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            max_norm = grad_clip if grad_clip > 0 else math.inf
            norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm))
            if not (math.isfinite(float(loss.detach())) and math.isfinite(norm)):
                optimizer.zero_grad(set_to_none=True)
                skipped += 1
                nonfinite_run += 1
                logger.warning("epoch %d step %d/%d: non-finite loss (%s) or gradient norm (%s); step skipped "
                               "(%d in a row)", epoch + 1, step, n_steps, float(loss.detach()), norm,
                               nonfinite_run)
                if nonfinite_run >= max_nonfinite:
                    kept = "the state before this epoch" if not save_every else \
                        "the state before this epoch or its last mid-epoch checkpoint"
                    raise NonFiniteError(f"training diverged in epoch {epoch + 1}: {nonfinite_run} steps in a row "
                                         "had a non-finite loss or gradient (--max-nonfinite "
                                         f"{max_nonfinite}); last.pt keeps {kept}; lower --lr or keep "
                                         "--grad-clip > 0, then --resume from last.pt")
            else:
                nonfinite_run = 0
                optimizer.step()
                total += float(loss.detach()) * x_BCT.shape[0]
                count += x_BCT.shape[0]
                norms.append(norm)
                bar.set_postfix(loss=f"{float(loss.detach()):.4g}", gnorm=f"{norm:.3g}")
                if step % log_interval == 0 or step == n_steps:
                    logger.info("epoch %d step %d/%d: loss %.5g (epoch mean %.5g), grad norm %.3g", epoch + 1,
                                step, n_steps, float(loss.detach()), total / count, norm)
            if save_every and on_save is not None and step % save_every == 0 and step < n_steps:
                partial: dict[str, Any] = {
                    "step": step, "steps_in_epoch": n_steps, "loss_sum": total, "samples": count,
                    "grad_norms": list(norms), "nonfinite_steps": skipped, "nonfinite_run": nonfinite_run,
                    "seconds": seconds0 + time.perf_counter() - t0, "rng_state": torch.get_rng_state()}
                if device.type == "cuda":
                    partial["cuda_rng_state"] = torch.cuda.get_rng_state(device)
                on_save(partial)
    return {"train_loss": total / max(count, 1), "grad_norm": sum(norms) / max(len(norms), 1),
            "grad_norm_max": max(norms, default=0.0), "steps": len(norms), "nonfinite_steps": skipped,
            "nonfinite_run": nonfinite_run, "seconds": seconds0 + time.perf_counter() - t0}


@torch.no_grad()
def evaluate(model: nn.Module | None, loader: DataLoader, num_pairs: int,
             device: torch.device) -> tuple[float, list[float]]:
    """Mean MSE over ``loader`` and per stage transition.

    Parameters
    ----------
    model : nn.Module | None
        ``None`` evaluates the "add nothing" baseline (predict stage k+1 = stage k).
    num_pairs : int
        Number of transitions K - 1.

    Returns
    -------
    loss : float
        Mean MSE over all pairs, model units².
    per_stage : list of float
        ``per_stage[k]``: mean MSE of the transition stage k -> k+1 (0-based).
    """
    if model is not None:
        model.eval()
    sse = torch.zeros(num_pairs, dtype=torch.float64)
    n = torch.zeros(num_pairs, dtype=torch.float64)
    for x_BCT, y_BCT, k_B in loader:
        x_BCT, y_BCT = x_BCT.to(device), y_BCT.to(device)
        pred_BCT = x_BCT if model is None else model(x_BCT, k_B.to(device))
        err_B = ((pred_BCT - y_BCT) ** 2).mean(dim=(1, 2)).double().cpu()
        sse.index_add_(0, k_B, err_B)
        n.index_add_(0, k_B, torch.ones_like(err_B))
    per_stage = (sse / n.clamp(min=1)).tolist()
    return float(sse.sum() / n.sum().clamp(min=1)), per_stage
