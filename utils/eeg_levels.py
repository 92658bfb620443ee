"""Per-window power levels: the global latent VAR draws before the first scale.

A window's *level* is one of ``L`` clusters (per class) of its channel-mean log10 band powers. Real EEG
varies between subjects and sessions far more than inside one recording; a model that sees only the class
draws every window as "an average subject" (samples vary like the windows of one recording). Conditioning
VAR on the level, and drawing the level from its training frequency first, gives that variety back.

Shape letters: N windows, C channels, T time samples, B bands, L levels, K classes.

- :func:`window_levels` -- the features: (N, B) channel-mean log10 band power (µV²), 1-s Welch segments.
- :func:`fit_level_clusters` -- k-means per class on standardised features -> :class:`LevelClusters`.
- :meth:`LevelClusters.assign` -- nearest centre of the window's class (optionally on some bands only,
  e.g. the observed low bands of a band-completion input).
- :func:`observed_levels` -- the level of a window of which only a part is seen (zero-shot completion).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from .errors import UserError

logger = logging.getLogger(__name__)

#: Robust z-score beyond which a window is an outlier of the level fit (flat or artifact windows).
OUTLIER_Z = 6.0

__all__ = ["LevelClusters", "window_levels", "fit_level_clusters", "level_f_max", "observed_levels"]


def level_f_max(sfreq: float) -> float:
    """Highest frequency used for levels: 0.45 * sfreq (45 Hz at 100 Hz), below the anti-alias roll-off."""
    return 0.45 * float(sfreq)


def window_levels(x_NCT: np.ndarray, sfreq: float, bands: Iterable[Sequence[float]]) -> np.ndarray:
    """Channel-mean log10 band power (µV², 1-s Welch segments) of every window: (N, B).

    ``x_NCT`` in µV; bands are clipped to :func:`level_f_max`.
    """
    from .eeg_metrics import window_band_powers
    p_NCB = window_band_powers(np.asarray(x_NCT, dtype=np.float64), sfreq, bands, f_max=level_f_max(sfreq))
    return np.log10(np.maximum(p_NCB, 1e-12)).mean(axis=1)


@dataclass
class LevelClusters:
    """Level clusters of one dataset (saved in VAR checkpoints as :meth:`to_dict`).

    Attributes
    ----------
    bands : list of [lo, hi]
        Hz; the features' bands.
    mean, std : ndarray (B,)
        Standardisation of the training features (log10 µV²).
    centres : ndarray (K, L, B)
        Standardised centres per class, sorted by their mean over bands (level 0 = the quietest).
    prior : ndarray (K, L)
        Training frequency of each level within its class (rows sum to 1).
    """

    bands: list[list[float]]
    mean: np.ndarray
    std: np.ndarray
    centres: np.ndarray
    prior: np.ndarray

    @property
    def num_levels(self) -> int:
        return int(self.centres.shape[1])

    @property
    def num_classes(self) -> int:
        return int(self.centres.shape[0])

    def assign(self, feats_NB: np.ndarray, labels_N: np.ndarray, bands_used: Sequence[int] | None = None) -> np.ndarray:
        """Nearest centre of each window's class: (N,) int64 levels.

        ``bands_used`` restricts the distance to some band indices (the rest unobserved).
        """
        feats = np.asarray(feats_NB, dtype=np.float64)
        labels = np.asarray(labels_N, dtype=np.int64)
        if feats.ndim != 2 or feats.shape[1] != len(self.mean) or labels.shape != (len(feats),):
            raise UserError(f"level features of shape {feats.shape} and labels {labels.shape} do not fit "
                            f"{len(self.mean)} bands; compute them with utils.eeg_levels.window_levels")
        z = (feats - self.mean) / self.std
        if len(labels) and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise UserError(f"labels {sorted(set(labels.tolist()))[:5]} outside the level clusters' "
                            f"{self.num_classes} classes")
        used = list(range(z.shape[1])) if bands_used is None else list(bands_used)
        c_NLB = self.centres[labels][:, :, used]
        d_NL = ((z[:, None, used] - c_NLB) ** 2).sum(-1)
        d_NL[self.prior[labels] <= 0] = np.inf  # an empty cluster is never a window's level
        return d_NL.argmin(axis=1).astype(np.int64)

    def to_dict(self) -> dict[str, Any]:
        return {"bands": [list(map(float, b)) for b in self.bands], "mean": self.mean.tolist(),
                "std": self.std.tolist(), "centres": self.centres.tolist(), "prior": self.prior.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LevelClusters":
        out = cls(bands=[list(b) for b in d["bands"]], mean=np.asarray(d["mean"], dtype=np.float64),
                  std=np.asarray(d["std"], dtype=np.float64), centres=np.asarray(d["centres"], dtype=np.float64),
                  prior=np.asarray(d["prior"], dtype=np.float64))
        nb = len(out.bands)
        if out.mean.shape != (nb,) or out.std.shape != (nb,) or out.centres.ndim != 3 or \
                out.centres.shape[2] != nb or out.prior.shape != out.centres.shape[:2]:
            raise ValueError(f"level clusters with inconsistent shapes: bands {nb}, mean {out.mean.shape}, "
                             f"centres {out.centres.shape}, prior {out.prior.shape}")
        return out


def fit_level_clusters(feats_NB: np.ndarray, labels_N: np.ndarray, num_classes: int, num_levels: int,
                       bands: Iterable[Sequence[float]], seed: int = 0, outlier_z: float = OUTLIER_Z) -> LevelClusters:
    """k-means (``num_levels`` clusters per class) on the standardised features of the training windows.

    Windows more than ``outlier_z`` robust standard deviations (1.4826 x median absolute deviation) from the
    median in any band (flat or artifact windows) are left out of the fit, so they do not take a level of their
    own; they join their nearest level afterwards, and ``prior`` counts every window.

    Raises :class:`~utils.errors.UserError` when a class has fewer windows than ``num_levels``.
    """
    from scipy.cluster.vq import kmeans2
    feats = np.asarray(feats_NB, dtype=np.float64)
    labels = np.asarray(labels_N, dtype=np.int64)
    if not np.isfinite(feats).all():
        raise UserError("level features contain NaN or inf; check the dataset for flat or broken windows")
    med = np.median(feats, axis=0)
    mad = np.maximum(1.4826 * np.median(np.abs(feats - med), axis=0), 1e-6)
    inlier = (np.abs(feats - med) / mad <= outlier_z).all(axis=1)
    mean, std = feats[inlier].mean(0), np.maximum(feats[inlier].std(0), 1e-6)
    z = (feats - mean) / std
    nb = feats.shape[1]
    centres = np.zeros((num_classes, num_levels, nb))
    prior = np.zeros((num_classes, num_levels))
    for c in range(num_classes):
        m = labels == c
        if m.sum() < num_levels:
            raise UserError(f"class {c} has {int(m.sum())} training windows, fewer than --level_clusters="
                            f"{num_levels}; use a smaller --level_clusters (0 = off)")
        fit = m & inlier if (m & inlier).sum() >= num_levels else m
        cent, k_N = kmeans2(z[fit], num_levels, seed=seed, minit="++")
        used = np.bincount(k_N, minlength=num_levels) > 0
        order = np.argsort(cent.mean(1), kind="stable")  # level 0 = the quietest
        centres[c], used = cent[order], used[order]
        d_NL = ((z[m][:, None] - centres[c][None]) ** 2).sum(-1)
        d_NL[:, ~used] = np.inf  # an empty cluster is nobody's level
        prior[c] = np.bincount(d_NL.argmin(1), minlength=num_levels) / m.sum()
    out = LevelClusters(bands=[list(map(float, b)) for b in bands], mean=mean, std=std, centres=centres, prior=prior)
    logger.info("level clusters: %d per class (%d outlier windows left out of the fit), training frequencies %s",
                num_levels, int((~inlier).sum()), np.round(prior, 3).tolist())
    return out


def observed_levels(levels: LevelClusters, x_NCT: np.ndarray, labels_N: np.ndarray, sfreq: float,
                    mask_NT: np.ndarray | None = None, n_bands_observed: int | None = None) -> np.ndarray:
    """Levels of partly observed windows (µV): (N,) int64.

    ``mask_NT`` (True = missing): the missing samples count as zeros and each band power is divided by the
    observed fraction (an estimate; exact for stationary signals). ``n_bands_observed``: only the first bands
    are seen (band completion from a low stage); the distance uses those bands only.
    """
    x = np.asarray(x_NCT, dtype=np.float64)
    frac_N = np.ones(len(x))
    if mask_NT is not None:
        mask = np.asarray(mask_NT, dtype=bool)
        x = np.where(mask[:, None, :], 0.0, x)
        frac_N = np.maximum(1.0 - mask.mean(axis=1), 1e-3)
    feats = window_levels(x, sfreq, levels.bands) - np.log10(frac_N)[:, None]
    used = None if n_bands_observed is None else range(int(n_bands_observed))
    return levels.assign(feats, labels_N, used)
