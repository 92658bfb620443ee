"""One call that judges a set of generated (or surrogate) windows against real ones (docs/design.md §8).

Shape letters: N windows, C channels, T time samples.

:func:`generation_quality` bundles the per-band PSD error, the channel-correlation distance and the
classifier two-sample test, so the baselines benchmark, the VAR benchmark and ``VAR/sample.py`` report
the same numbers computed the same way.
"""
from __future__ import annotations

import logging
from typing import Iterable, Sequence

import numpy as np

from .eeg_bands import DEFAULT_BANDS
from .eeg_c2st import c2st_auc
from .eeg_metrics import channel_corr_distance, psd_band_error_db
from .errors import UserError

logger = logging.getLogger(__name__)

__all__ = ["generation_quality"]


def generation_quality(real_NCT: np.ndarray, gen_NCT: np.ndarray, sfreq: float,
                       bands: Iterable[Sequence[float]] = DEFAULT_BANDS, f_max: float | None = None,
                       groups_real: Sequence | None = None, groups_gen: Sequence | None = None,
                       n_folds: int = 5, seed: int = 0) -> dict:
    """Per-band PSD error, channel-correlation distance and C2ST AUC of ``gen_NCT`` against ``real_NCT``.

    Parameters
    ----------
    real_NCT : ndarray, shape (N, C, T), µV
        Real reference windows (e.g. validation windows of one class).
    gen_NCT : ndarray, shape (M, C, T), µV
        Windows to judge.
    sfreq : float
        Sampling frequency in Hz.
    bands : sequence of (f_lo, f_hi), Hz
    f_max : float | None
        Judge spectra only up to this frequency (45 Hz on eegmat, which is low-passed there).
    groups_real, groups_gen : sequence | None
        Group (recording) ids for the C2ST folds; see :func:`utils.eeg_c2st.c2st_auc`.
    n_folds : int
        C2ST folds.
    seed : int
        C2ST fold seed.

    Returns
    -------
    dict
        ``psd_error_db`` ({band: dB}), ``psd_error_db_max``, ``psd_error_db_mean``, ``corr_distance``,
        ``c2st_auc``, ``c2st_auc_std``, ``c2st_folds`` (None with ``c2st_error`` set when the sets are
        too small for grouped cross-validation), ``n_real``, ``n_gen``.
    """
    err = psd_band_error_db(real_NCT, gen_NCT, sfreq, bands=bands, f_max=f_max)
    out = {"psd_error_db": err, "psd_error_db_max": float(max(err.values())),
           "psd_error_db_mean": float(np.mean(list(err.values()))),
           "corr_distance": channel_corr_distance(real_NCT, gen_NCT),
           "c2st_auc": None, "c2st_auc_std": None, "c2st_folds": None,
           "n_real": int(len(real_NCT)), "n_gen": int(len(gen_NCT))}
    try:
        res = c2st_auc(real_NCT, gen_NCT, sfreq, groups_a=groups_real, groups_b=groups_gen, n_folds=n_folds,
                       bands=bands, f_max=f_max, seed=seed)
        out.update(c2st_auc=res.auc, c2st_auc_std=res.auc_std, c2st_folds=res.n_folds)
    except UserError as exc:
        logger.warning("C2ST skipped: %s", exc)
        out["c2st_error"] = str(exc)
    return out
