"""How close a stage-by-stage rollout is to the true stages: per-stage MSE, cumulative MSE and SNR (dB).

Shape letters: K stages, C channels, T time samples.

Definitions (all on µV signals, over every channel and sample of the window)
--------------------------------------------------------------------------------
- ``mse_uv2`` of stage k: mean of ``(pred_k - true_k)**2``.
- ``cumulative_mse_uv2`` of stage k: mean of ``mse_uv2`` over the *generated* stages 2..k (stage 1 is
  the given conditioning input, so it is excluded; ``None`` there).
- ``snr_db`` of stage k: ``10 log10(sum true_k**2 / sum (true_k - pred_k)**2)`` (docs/design.md §2).
- ``snr_db_hold``: the same for the "add nothing" baseline that repeats the given first stage.
- ``added_band_snr_db``: SNR of what stage k adds (``true_k - true_{k-1}`` against ``pred_k - pred_{k-1}``);
  0 dB is what adding nothing scores, so > 0 dB means the model predicts the new band.
- ``*_teacher_forced``: the same for one-step predictions from the true previous stage.
The given first stage has ``"given": true`` and ``None`` for every score; infinite values (a perfect
match) are written as ``None`` too.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def snr_db(true: np.ndarray, pred: np.ndarray) -> float:
    """``10 log10(||true||² / ||true - pred||²)`` in dB; ``inf`` for an exact match."""
    signal = float(np.sum(np.asarray(true, dtype=np.float64) ** 2))
    noise = float(np.sum((np.asarray(true, dtype=np.float64) - np.asarray(pred, dtype=np.float64)) ** 2))
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def rollout_metrics(true_KCT: np.ndarray, rollout_KCT: np.ndarray, teacher_forced_KCT: np.ndarray | None = None,
                    stage_names: Sequence[str] | None = None,
                    bands: Sequence[Sequence[float]] | None = None) -> list[dict]:
    """Per-stage metrics of a rollout (see the module docstring for the definitions).

    Parameters
    ----------
    true_KCT, rollout_KCT : ndarray, shape (K, C, T), µV
        Ground-truth stages and the rollout (whose stage 1 is the given input).
    teacher_forced_KCT : ndarray, shape (K, C, T), µV, optional
        One-step predictions from the true previous stage.
    stage_names : sequence of str, optional
    bands : sequence of (f_lo, f_hi), optional
        The individual bands in Hz; stage k's pass-band is ``(bands[0][0], bands[k][1])``.

    Returns
    -------
    list of dict
        One dict per stage, JSON-ready.
    """
    true_KCT = np.asarray(true_KCT, dtype=np.float64)
    rollout_KCT = np.asarray(rollout_KCT, dtype=np.float64)
    if true_KCT.shape != rollout_KCT.shape or true_KCT.ndim != 3:
        raise ValueError(f"ground truth {true_KCT.shape} and rollout {rollout_KCT.shape} must both be (K, C, T)")
    K = true_KCT.shape[0]
    out, generated_mse = [], []
    for k in range(K):
        mse = float(np.mean((rollout_KCT[k] - true_KCT[k]) ** 2))
        entry: dict = {"stage": k + 1, "name": stage_names[k] if stage_names else f"stage{k + 1}", "given": k == 0}
        if bands is not None:
            entry["band_hz"] = [float(bands[0][0]), float(bands[k][1])]
        if k > 0:
            generated_mse.append(mse)
        given = k == 0
        entry.update(
            mse_uv2=mse,
            cumulative_mse_uv2=None if given else float(np.mean(generated_mse)),
            snr_db=None if given else _finite(snr_db(true_KCT[k], rollout_KCT[k])),
            snr_db_hold=None if given else _finite(snr_db(true_KCT[k], rollout_KCT[0])),
            added_band_snr_db=(_finite(snr_db(true_KCT[k] - true_KCT[k - 1], rollout_KCT[k] - rollout_KCT[k - 1]))
                               if k > 0 else None),
        )
        if teacher_forced_KCT is not None:
            tf_KCT = np.asarray(teacher_forced_KCT, dtype=np.float64)
            entry["snr_db_teacher_forced"] = None if given else _finite(snr_db(true_KCT[k], tf_KCT[k]))
            entry["added_band_snr_db_teacher_forced"] = (
                _finite(snr_db(true_KCT[k] - true_KCT[k - 1], tf_KCT[k] - true_KCT[k - 1])) if k > 0 else None)
        out.append(entry)
    return out
