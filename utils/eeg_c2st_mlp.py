"""Nonlinear classifier two-sample test on richer EEG features (a logistic C2ST is easy to fool).

Features per window (:func:`rich_features`): log band powers per channel and band, Hjorth parameters
per channel (log activity, mobility, complexity), skewness and excess kurtosis per channel, and the
channel correlations. Classifier: a one-hidden-layer MLP (numpy, full-batch Adam, weight decay) on standardised
features, evaluated with the grouped folds of :mod:`utils.eeg_c2st` (all windows of one group in one
fold). The score is the mean held-out ROC AUC (0.5: indistinguishable).

Shape letters: N windows, C channels, T samples, K bands, D features.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from .eeg_bands import DEFAULT_BANDS
from .eeg_c2st import C2STResult, c2st_features, cross_validated_auc
from .errors import UserError

__all__ = ['rich_features', 'hjorth', 'c2st_mlp_auc']


def hjorth(x_NCT: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hjorth activity var(x), mobility sqrt(var(x') / var(x)), complexity mobility(x') / mobility(x); each (N, C)."""
    x = np.asarray(x_NCT, dtype=np.float64)
    d1 = np.diff(x, axis=-1)
    d2 = np.diff(d1, axis=-1)
    v0, v1, v2 = (np.maximum(a.var(axis=-1), 1e-30) for a in (x, d1, d2))
    mob = np.sqrt(v1 / v0)
    return v0, mob, np.sqrt(v2 / v1) / mob


def rich_features(x_NCT: np.ndarray, sfreq: float, bands: Iterable[Sequence[float]] = DEFAULT_BANDS,
                  f_max: float | None = None) -> np.ndarray:
    """(N, D): log band powers and channel correlations (:func:`utils.eeg_c2st.c2st_features`), then per
    channel log Hjorth activity, mobility, complexity, skewness and excess kurtosis."""
    x = np.asarray(x_NCT, dtype=np.float64)
    base = c2st_features(x, sfreq, bands, f_max)
    act, mob, comp = hjorth(x)
    xc = x - x.mean(axis=-1, keepdims=True)
    sd = np.maximum(xc.std(axis=-1), 1e-30)
    z = xc / sd[..., None]
    skew, kurt = (z ** 3).mean(axis=-1), (z ** 4).mean(axis=-1) - 3.0
    return np.concatenate([base, np.log10(act), mob, comp, skew, kurt], axis=1)


class _MLP:
    """One-hidden-layer ReLU network with a logistic output, fitted full-batch with Adam (numpy; small data).

    Class-balanced cross-entropy plus ``weight_decay`` x the squared weights (biases free).
    """

    def __init__(self, d: int, hidden: int, seed: int):
        g = np.random.default_rng(seed)
        self.params = [g.standard_normal((d, hidden)) * np.sqrt(2.0 / d), np.zeros(hidden),
                       g.standard_normal(hidden) * np.sqrt(1.0 / hidden), np.zeros(())]

    def score(self, X_ND: np.ndarray) -> np.ndarray:
        W1, b1, w2, b2 = self.params
        return np.maximum(X_ND @ W1 + b1, 0.0) @ w2 + b2

    def fit(self, X_ND: np.ndarray, y_N: np.ndarray, steps: int, weight_decay: float, lr: float = 3e-3) -> '_MLP':
        n = len(y_N)
        sw_N = np.where(y_N > 0, 0.5 * n / max(y_N.sum(), 1.0), 0.5 * n / max((1 - y_N).sum(), 1.0)) / n
        m = [np.zeros_like(p) for p in self.params]
        v = [np.zeros_like(p) for p in self.params]
        for t in range(1, steps + 1):
            W1, b1, w2, b2 = self.params
            h_NH = np.maximum(X_ND @ W1 + b1, 0.0)
            z_N = h_NH @ w2 + b2
            r_N = sw_N * (0.5 * (1.0 + np.tanh(0.5 * z_N)) - y_N)  # d loss / d z
            dh_NH = np.outer(r_N, w2) * (h_NH > 0)
            grads = [X_ND.T @ dh_NH + weight_decay * W1, dh_NH.sum(0), h_NH.T @ r_N + weight_decay * w2, r_N.sum()]
            for i, g in enumerate(grads):
                m[i] = 0.9 * m[i] + 0.1 * g
                v[i] = 0.999 * v[i] + 0.001 * g * g
                self.params[i] = self.params[i] - lr * (m[i] / (1 - 0.9 ** t)) / (np.sqrt(v[i] / (1 - 0.999 ** t)) + 1e-8)
        return self


def c2st_mlp_auc(F_a: np.ndarray, F_b: np.ndarray, groups_a: Sequence, groups_b: Sequence, n_folds: int = 5,
                 seed: int = 0, hidden: int = 64, steps: int = 300, weight_decay: float = 1e-2) -> C2STResult:
    """Grouped-fold C2ST AUC of an MLP on precomputed features ``F_a`` (N_a, D) and ``F_b`` (N_b, D).

    ``groups_a`` / ``groups_b``: one id per window (recording); an id in both sets puts those windows of both
    sets in one fold, as in :func:`utils.eeg_c2st.c2st_auc`.
    """
    F_a, F_b = np.asarray(F_a, dtype=np.float64), np.asarray(F_b, dtype=np.float64)
    if F_a.ndim != 2 or F_b.ndim != 2 or F_a.shape[1] != F_b.shape[1]:
        raise UserError(f"c2st_mlp_auc: feature sets must be (N, D) with equal D; got {F_a.shape} and {F_b.shape}")
    if len(groups_a) != len(F_a) or len(groups_b) != len(F_b):
        raise UserError(f"c2st_mlp_auc: got {len(groups_a)}/{len(groups_b)} group ids for {len(F_a)}/{len(F_b)} "
                        "windows; give one per window")
    def mlp(X_tr: np.ndarray, y_tr: np.ndarray, X_te: np.ndarray, fold: int) -> np.ndarray:
        return _MLP(X_tr.shape[1], hidden, seed + fold).fit(X_tr, y_tr, steps, weight_decay).score(X_te)

    return cross_validated_auc(F_a, F_b, groups_a, groups_b, n_folds, seed, mlp)
