"""Calibrate a trained VAR's samples: the band gain that gives them their group's mean log band power.

The class-and-level gain of the band-gain codes (``level_gain_db``) is measured on the real tokens' decodes. A
sampler's tokens decode to a band power of their own: on eegmat the arithmetic samples had about 1 dB too much theta
and alpha, the same in every channel, and a classifier told them from held-out subjects mostly by that
(docs/design.md §3). So at the end of training VAR/train.py draws a batch of samples per class from each checkpoint
it wrote, with sample.py's defaults, and stores ``sample_gain_db`` (:func:`models.band_gain.sample_gain_db`, from the
real training windows and those samples' plain decodes) and the settings it drew with (``sample_calib``).
``sample.generate`` then scales each sample's decode by its class and level's row. Nothing is trained; the weights
stay as they are, and a partial decode gets the gains of its own bands only, so every stage stays band-limited.

Shape letters: N windows, C channels, K bands.
"""
from __future__ import annotations

import logging

import numpy as np
import torch

logger = logging.getLogger("sample_calib")

#: Calibration samples are drawn with this seed (batch b: seed + b), apart from sample.py's default seed 0.
CALIB_SEED = 1000


def calibration_bands(tok: dict) -> list[list[float]]:
    """The bands the table has a column for: ``[0, f_lo]`` below the first band (DC included), then the tokenizer's.

    The stages are band-passed from the first band's lower edge, so real windows hold little below it (on eegmat
    4 % of the power of a 5-s window, window leakage). Samples held 12-19 %: drift and offsets of up to 65 µV that the
    band-power features, which start at that edge, never saw. That first column brings it to the real level.
    """
    bands = [list(map(float, b)) for b in tok["bands"]]
    return [[0.0, bands[0][0]]] + bands


def calibration_gain(tok: dict):
    """The :class:`~models.band_gain.BandGain` over :func:`calibration_bands` that measures and applies the table
    (column 0 below the first band, column k + 1 band k)."""
    from models.band_gain import BandGain
    return BandGain(calibration_bands(tok), tok["sfreq"], tok["n_times"])


def power_db(P_NCK: np.ndarray) -> np.ndarray:
    """``10 log10`` of band powers; a band with no power gets -200 dB so that it stays finite."""
    return 10 * np.log10(np.maximum(np.asarray(P_NCK, dtype=np.float64), 1e-20))


def band_power_db(x_NCT: np.ndarray | torch.Tensor, gain) -> np.ndarray:
    """:func:`power_db` of each window's band powers (:meth:`BandGain.band_power`, any units): (N, C, K)."""
    return power_db(gain.band_power(torch.as_tensor(np.asarray(x_NCT, dtype=np.float64))).numpy())


#: At most this many training windows (evenly spaced) give the real side of the table: its group means need
#: hundreds per group, not a pass over a large corpus.
MAX_REAL_WINDOWS = 16384


def real_window_indices(n: int, max_windows: int = MAX_REAL_WINDOWS) -> np.ndarray:
    """Every index below ``n``, or ``max_windows`` of them evenly spaced."""
    return np.arange(n) if n <= max_windows else np.unique(np.linspace(0, n - 1, max_windows).round().astype(np.int64))


def has_calibration(path: str) -> tuple[bool, tuple[int, int]]:
    """Whether the checkpoint holds ``sample_gain_db``, and its (epoch, iter)."""
    from utils.checkpoint import load_checkpoint
    state, _ = load_checkpoint(path, map_location="cpu")
    return state.get("sample_gain_db") is not None, (int(state.get("epoch", 0)), int(state.get("iter", 0)))


def write_calibration(path: str, table: np.ndarray, record: dict) -> None:
    """Rewrite the checkpoint ``path`` with ``sample_gain_db`` and ``sample_calib`` (atomically; the old file is kept
    as ``.prev.pth``)."""
    from utils.checkpoint import META_KEY, load_checkpoint, save_checkpoint
    state, _ = load_checkpoint(path, map_location="cpu")
    config = (state.pop(META_KEY, None) or {}).get("config")
    state["sample_gain_db"] = np.asarray(table, dtype=np.float64).tolist()
    state["sample_calib"] = dict(record)
    save_checkpoint(path, state, config=config)


def measure_calibration(path: str, real_db_NCK: np.ndarray, labels_N: np.ndarray, levels_N: np.ndarray | None,
                        n_per_class: int, batch: int = 64, device: str | torch.device = "cpu") -> tuple[np.ndarray, dict]:
    """The ``sample_gain_db`` table of the VAR checkpoint ``path`` and its ``sample_calib`` record (the settings the
    samples were drawn with); :func:`write_calibration` stores them.

    Parameters
    ----------
    real_db_NCK : (N, C, K + 1)
        :func:`power_db` of the real training windows' band powers over :func:`calibration_gain` (model units or µV:
        only differences count).
    labels_N, levels_N : (N,) int
        Their classes and power levels (None without levels).
    n_per_class : int
        Samples drawn per class, with sample.py's defaults (temperature, guidance, levels drawn from their training
        frequency), seed :data:`CALIB_SEED`.
    """
    import sample
    from models.band_gain import sample_gain_db

    var, vae, meta = sample.load_var_checkpoint(path, device=device)
    tok = meta["tokenizer"]
    temps = [float(t) for t in sample.parse_temperature(str(sample.DEFAULT_TEMPERATURE), len(var.patch_nums))]
    settings = {"cfg": float(sample.DEFAULT_CFG), "temperature": temps, "top_k": 0, "top_p": 0.0}
    labels = [c for c in range(var.num_classes) for _ in range(int(n_per_class))]
    gen = sample.generate(var, vae, meta, labels, seed=CALIB_SEED, batch=batch, stages=False, gains=False,
                          cfg=settings["cfg"], top_k=settings["top_k"], top_p=settings["top_p"], temperature=temps)
    gain = calibration_gain(tok)
    gen_db = band_power_db(gen["signal"] / float(tok["uv_scale"]), gain)  # model units, like the real windows'
    num_levels = int(var.num_levels)
    table = sample_gain_db(real_db_NCK, labels_N, levels_N, gen_db, gen["labels"], gen["levels"], var.num_classes,
                           num_levels)
    record = dict(settings, n_per_class=int(n_per_class), seed=CALIB_SEED, epoch=int(meta["epoch"]))
    pooled = table[-1, -1].mean(0)
    logger.info("sample gains of %s from %d samples per class: pooled over classes, levels and channels %s dB", path,
                n_per_class, [round(float(g), 2) for g in pooled])
    return table, record
