"""Stacked EEG traces with a µV scale bar (the one way every figure of the project draws channels).

Channels are stacked with a fixed offset; the y axis then has no amplitude meaning, so each panel
gets a vertical scale bar labelled in µV (a round value near the offset) and channel names as ticks.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def nice_uv(value: float) -> float:
    """The largest of 1, 2, 5 x 10^k not above ``value`` (a scale-bar length), at least 1 µV."""
    value = max(float(value), 1.0)
    exp = np.floor(np.log10(value))
    for m in (5.0, 2.0, 1.0):
        if m * 10 ** exp <= value:
            return float(m * 10 ** exp)
    return float(10 ** exp)


def stack_offset(*arrays_CT: np.ndarray) -> float:
    """Vertical distance between stacked channels: 4 x the median per-channel std of all arrays (µV)."""
    stds = np.concatenate([np.std(a, axis=-1).ravel() for a in arrays_CT if a is not None and a.size])
    return 4 * float(np.median(stds)) + 1e-6


def plot_stacked(ax, t_T: np.ndarray, x_CT: np.ndarray, ch_names: Sequence[str], offset: float,
                 scale_bar: bool = True, **line_kw) -> list:
    """Draw channels ``x_CT`` (µV) stacked ``offset`` apart on ``ax``; return the line of channel 0 (for legends).

    The scale bar (drawn once per axes, right of the traces) is ``nice_uv(offset)`` µV tall.
    """
    label = line_kw.pop("label", None)
    line_kw.setdefault("lw", 0.6)
    lines = []
    for i in range(x_CT.shape[0]):
        lines += ax.plot(t_T, x_CT[i] - i * offset, label=label if i == 0 else None, **line_kw)
    ax.set_yticks([-i * offset for i in range(x_CT.shape[0])], list(ch_names)[:x_CT.shape[0]], fontsize=7)
    if scale_bar and not getattr(ax, "_uv_bar", False):
        bar = nice_uv(offset)
        x = t_T[-1] + 0.02 * (t_T[-1] - t_T[0])
        ax.plot([x, x], [0.5 * offset - bar, 0.5 * offset], color="k", lw=2, clip_on=False)
        ax.text(x, 0.5 * offset - bar / 2, f" {bar:g} µV", fontsize=7, va="center", ha="left")
        ax._uv_bar = True
    ax.set_xlabel("time (s)", fontsize=7)
    return lines[:1]
