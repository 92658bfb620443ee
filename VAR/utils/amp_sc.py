"""``AmpOptimizer``: autocast, loss scaling, gradient accumulation, clipping and the optimizer step (upstream ``amp_sc.py``)."""
from __future__ import annotations

import contextlib
import logging
import math

import torch

logger = logging.getLogger(__name__)


class NullCtx:
    """A context manager that does nothing (fp32 runs)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class AmpOptimizer:
    """Wraps an optimizer with mixed precision, accumulation and clipping.

    Parameters
    ----------
    mixed_precision : int
        0 fp32, 1 fp16 autocast + GradScaler, 2 bf16 autocast.
    optimizer : torch.optim.Optimizer
    names, paras : list
        Names and tensors of the trainable parameters (clipping runs over ``paras``).
    grad_clip : float
        Clip the global grad norm to this value; <= 0 disables clipping (the norm is still computed).
    n_gradient_accumulation : int
        Micro-steps per optimizer step; each loss is multiplied by ``1 / n``.
    device_type : str
        ``'cuda'`` or ``'cpu'``. fix(upstream): upstream always used CUDA autocast; here autocast runs
        on the device that holds the model (CPU bf16 included).

    Attributes
    ----------
    last_step_skipped : bool
        True when the last stepping call skipped the update because the grad norm was not finite
        (fp16: the GradScaler's own skip is reported the same way).
    """

    def __init__(self, mixed_precision: int, optimizer: torch.optim.Optimizer, names: list[str],
                 paras: list[torch.nn.Parameter], grad_clip: float, n_gradient_accumulation: int = 1,
                 device_type: str = "cuda") -> None:
        if mixed_precision not in (0, 1, 2):
            raise ValueError(f"mixed_precision must be 0, 1 or 2, got {mixed_precision}")
        self.device_type = device_type
        if mixed_precision > 0:
            dtype = torch.float16 if mixed_precision == 1 else torch.bfloat16
            self.amp_ctx = torch.autocast(device_type, enabled=True, dtype=dtype, cache_enabled=True)
            self.scaler = torch.amp.GradScaler(device_type, init_scale=2.0 ** 11, growth_interval=1000) \
                if mixed_precision == 1 else None
        else:
            self.amp_ctx = NullCtx()
            self.scaler = None
        self.mixed_precision = mixed_precision
        self.optimizer, self.names, self.paras = optimizer, names, paras
        self.grad_clip = grad_clip
        self.early_clipping = grad_clip > 0 and not hasattr(optimizer, "global_grad_norm")
        self.late_clipping = grad_clip > 0 and hasattr(optimizer, "global_grad_norm")
        self.r_accu = 1.0 / n_gradient_accumulation
        self.last_step_skipped = False

    def backward_clip_step(self, stepping: bool, loss: torch.Tensor) -> tuple[torch.Tensor | None, float | None]:
        """Backward ``loss``; on stepping micro-steps unscale, clip, step and zero the grads.

        Returns
        -------
        grad_norm : Tensor | None
            The global grad norm before clipping, on every stepping call (also with clipping off;
            fix(upstream) §18.2: upstream returned None there and crashed when logging it); None on
            accumulation-only calls.
        scale_log2 : float | None
            log2 of the fp16 loss scale used for this step; None without fp16.
        """
        loss = loss.mul(self.r_accu)
        orig_norm = scaler_sc = None
        if self.scaler is not None:
            self.scaler.scale(loss).backward(retain_graph=False, create_graph=False)
        else:
            loss.backward(retain_graph=False, create_graph=False)
        if not stepping:
            return None, None
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        max_norm = self.grad_clip if self.early_clipping else math.inf
        orig_norm = torch.nn.utils.clip_grad_norm_(self.paras, max_norm=max_norm)
        finite = bool(torch.isfinite(orig_norm))
        if self.scaler is not None:
            scaler_sc = self.scaler.get_scale()
            self.scaler.step(self.optimizer)  # skips the update itself when grads are not finite
            if scaler_sc > 32768.0:  # as upstream: cap the fp16 loss scale at 2**15
                self.scaler.update(new_scale=32768.0)
            else:
                self.scaler.update()
            scaler_sc = float(math.log2(scaler_sc)) if scaler_sc > 0 else None
        elif finite:
            self.optimizer.step()
        self.last_step_skipped = not finite
        if self.late_clipping and finite:
            orig_norm = self.optimizer.global_grad_norm
        self.optimizer.zero_grad(set_to_none=True)
        return orig_norm, scaler_sc

    def skip_micro_step(self) -> None:
        """Drop the gradients accumulated so far (used when a loss is not finite)."""
        self.optimizer.zero_grad(set_to_none=True)

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict()} if self.scaler is None else {
            "scaler": self.scaler.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict, strict: bool = True) -> None:
        """Load optimizer (and scaler) state. fix(upstream): a scaler that cannot be restored is an error."""
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        elif self.scaler is not None and strict:
            logger.warning("checkpoint has no GradScaler state; starting from the initial loss scale")
        self.optimizer.load_state_dict(state["optimizer"])

    def autocast(self) -> contextlib.AbstractContextManager:
        """The autocast context of this optimizer (fp32: a no-op)."""
        return self.amp_ctx
