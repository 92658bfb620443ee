"""Learning-rate / weight-decay schedules and the decay / no-decay parameter split (upstream ``lr_control.py``)."""
from __future__ import annotations

import logging
import math
from typing import Iterable

import torch

logger = logging.getLogger(__name__)


def lr_ratio(sche_type: str, cur_it: int, wp_it: float, max_it: int, wp0: float = 0.005,
             wpe: float = 0.001) -> float:
    """The multiplier on the peak lr at iteration ``cur_it`` (warm-up, then the named schedule).

    Parameters
    ----------
    sche_type : str
        'cos', 'lin', 'lin0', 'lin00', 'lin<T>' (e.g. 'lin0.8'), or 'exp'.
    cur_it, max_it : int
        Current global iteration and total iterations of the run.
    wp_it : float
        Warm-up iterations (rounded to an int).
    wp0, wpe : float
        Ratio at the start of warm-up and at the last iteration.
    """
    wp_it = round(wp_it)
    if cur_it < wp_it:
        return wp0 + (1 - wp0) * cur_it / wp_it
    pasd = (cur_it - wp_it) / max(max_it - 1 - wp_it, 1)
    pasd = min(max(pasd, 0.0), 1.0)
    rest = 1 - pasd
    if sche_type == "cos":
        return wpe + (1 - wpe) * (0.5 + 0.5 * math.cos(math.pi * pasd))
    if sche_type == "lin":
        T = 0.15
        return 1.0 if pasd < T else wpe + (1 - wpe) * rest / (1 - T)
    if sche_type == "lin0":
        T = 0.05
        return 1.0 if pasd < T else wpe + (1 - wpe) * rest / (1 - T)
    if sche_type == "lin00":
        return wpe + (1 - wpe) * rest
    if sche_type.startswith("lin"):
        T = float(sche_type[3:])
        mid = (1 + wpe + (1 - wpe) * (1 - T)) / 2
        if pasd < T:
            return 1 + (mid - 1) * pasd / T
        return wpe + (mid - wpe) * rest / (1 - T)
    if sche_type == "exp":
        T = 0.15
        return 1.0 if pasd < T else math.exp((pasd - T) / (1 - T) * math.log(wpe))
    raise NotImplementedError(f"unknown lr schedule {sche_type!r}")


def lr_wd_annealing(sche_type: str, optimizer: torch.optim.Optimizer, peak_lr: float, wd: float, wd_end: float,
                    cur_it: int, wp_it: float, max_it: int, wp0: float = 0.005,
                    wpe: float = 0.001) -> tuple[float, float, float, float]:
    """Set lr and weight decay of every param group for ``cur_it``; return (min lr, max lr, min wd, max wd).

    The weight decay follows a half cosine from ``wd`` to ``wd_end`` over the whole run (warm-up ignored),
    as upstream. Each group's ``lr_sc`` / ``wd_sc`` (default 1) scale its values.
    """
    cur_lr = lr_ratio(sche_type, cur_it, wp_it, max_it, wp0, wpe) * peak_lr
    cur_wd = wd_end + (wd - wd_end) * (0.5 + 0.5 * math.cos(math.pi * cur_it / max(max_it - 1, 1)))
    inf = 1e6
    min_lr, max_lr, min_wd, max_wd = inf, -1.0, inf, -1.0
    for group in optimizer.param_groups:
        group["lr"] = cur_lr * group.get("lr_sc", 1.0)
        min_lr, max_lr = min(min_lr, group["lr"]), max(max_lr, group["lr"])
        group["weight_decay"] = cur_wd * group.get("wd_sc", 1.0)
        max_wd = max(max_wd, group["weight_decay"])
        if group["weight_decay"] > 0:
            min_wd = min(min_wd, group["weight_decay"])
    if min_lr == inf:
        min_lr = -1.0
    if min_wd == inf:
        min_wd = -1.0
    return min_lr, max_lr, min_wd, max_wd


def filter_params(model: torch.nn.Module, nowd_keys: Iterable[str] = ()) -> tuple[list[str], list[torch.nn.Parameter], list[dict]]:
    """Split trainable parameters into a decay group ('D') and a no-decay group ('ND').

    No decay for 1-D parameters, biases, and any name containing one of ``nowd_keys`` (substring, as
    upstream). Frozen parameters are skipped (fix(upstream): upstream asserted they do not exist).

    Returns
    -------
    names, paras, param_groups
        Parameter names and tensors in order, and the two optimizer groups (with ``lr_sc``/``wd_sc``).
    """
    nowd_keys = tuple(nowd_keys)
    groups: dict[str, dict] = {"D": {"params": [], "names": [], "lr_sc": 1.0, "wd_sc": 1.0},
                               "ND": {"params": [], "names": [], "lr_sc": 1.0, "wd_sc": 0.0}}
    names, paras = [], []
    for name, para in model.named_parameters():
        name = name.replace("_fsdp_wrapped_module.", "")
        if not para.requires_grad:
            continue
        names.append(name)
        paras.append(para)
        key = "ND" if (para.ndim == 1 or name.endswith("bias") or any(k in name for k in nowd_keys)) else "D"
        groups[key]["params"].append(para)
        groups[key]["names"].append(name)
    for key, g in groups.items():
        logger.info("param group %s: %d tensors, %d elements", key, len(g["params"]),
                    sum(p.numel() for p in g["params"]))
    param_groups = [{"params": g["params"], "lr_sc": g["lr_sc"], "wd_sc": g["wd_sc"]} for g in groups.values()
                    if g["params"]]
    return names, paras, param_groups
