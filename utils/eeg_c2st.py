"""Classifier two-sample test (C2ST) for generated EEG: can a classifier tell two sets of windows apart?

Shape letters: N windows, C channels, T time samples, K bands, D features.

Features per window (:func:`c2st_features`): log band power per channel and band (Welch) plus the
upper triangle of the channel-correlation matrix. Classifier: L2-regularised logistic regression on
standardised features (fitted with L-BFGS). Evaluation: k-fold cross-validation *by group* — all windows
of one recording (or one generated batch) sit in the same fold, so overlapping or neighbouring windows
never appear in both train and test folds. The score is the ROC AUC on held-out folds: 0.5 means the
sets are indistinguishable, 1.0 perfectly separable.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Iterable, Sequence

import numpy as np
from scipy import optimize
from scipy.stats import rankdata

from .eeg_bands import DEFAULT_BANDS
from .eeg_metrics import window_band_powers
from .errors import UserError

logger = logging.getLogger(__name__)

__all__ = ["C2STResult", "auc_spread", "c2st_auc", "c2st_features", "feature_groups", "roc_auc", "group_folds", "cross_validated_auc",
           "overlap_groups"]


@dataclasses.dataclass
class C2STResult:
    """Cross-validated C2ST outcome.

    Attributes
    ----------
    auc : float
        Mean held-out ROC AUC over folds (0.5 = indistinguishable).
    auc_std : float
        Standard deviation of the fold AUCs.
    fold_aucs : list of float
    n_folds : int
    n_a, n_b : int
        Windows in each set.
    """

    auc: float
    auc_std: float
    fold_aucs: list[float]
    n_folds: int
    n_a: int
    n_b: int

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def c2st_features(x_NCT: np.ndarray, sfreq: float, bands: Iterable[Sequence[float]] = DEFAULT_BANDS,
                  f_max: float | None = None) -> np.ndarray:
    """Per-window features, shape (N, D): log10 band powers (C x K) then channel correlations (C(C-1)/2).

    Parameters
    ----------
    x_NCT : ndarray, shape (N, C, T), µV
    sfreq : float
        Sampling frequency in Hz.
    bands : sequence of (f_lo, f_hi), Hz
    f_max : float | None
        Clip bands to this frequency (see :func:`utils.eeg_metrics.clip_bands`).
    """
    x = np.asarray(x_NCT, dtype=np.float64)
    if x.ndim != 3:
        raise UserError(f"x_NCT: got shape {x.shape}; expected (N, C, T) windows")
    bp_NCK = window_band_powers(x, sfreq, bands, f_max)
    logbp_ND = np.log10(np.maximum(bp_NCK, 1e-12)).reshape(x.shape[0], -1)
    xc = x - x.mean(axis=-1, keepdims=True)
    norm_NC = np.sqrt(np.sum(xc ** 2, axis=-1))
    norm_NC[norm_NC == 0] = np.inf
    z = xc / norm_NC[..., None]
    corr_NCC = np.einsum("nct,ndt->ncd", z, z)
    iu = np.triu_indices(x.shape[1], k=1)
    return np.concatenate([logbp_ND, corr_NCC[:, iu[0], iu[1]]], axis=1)


def feature_groups(n_features: int, n_channels: int) -> dict[str, slice]:
    """The columns of :func:`c2st_features` by kind: ``band power`` (log band powers, channel-major) and
    ``channel correlation``; for a C2ST on one kind (``c2st_auc(..., features=(F_a[:, s], F_b[:, s]))``), which says
    what gives a set away."""
    n_corr = n_channels * (n_channels - 1) // 2
    if n_features <= n_corr:
        raise UserError(f"feature_groups: {n_features} features cannot hold the {n_corr} channel correlations of "
                        f"{n_channels} channels and any band power; pass c2st_features' own width")
    return {"band power": slice(0, n_features - n_corr), "channel correlation": slice(n_features - n_corr, n_features)}


def auc_spread(aucs: Sequence[float]) -> dict:
    """``{"auc": [...], "mean", "sd"}`` of the C2ST AUCs of several sets of samples (sd with ddof 1; 0 for one set)."""
    a = [float(v) for v in aucs]
    return {"auc": a, "mean": float(np.mean(a)), "sd": float(np.std(a, ddof=1)) if len(a) > 1 else 0.0}


def overlap_groups(sources: Sequence, starts: Sequence[int], length: int) -> np.ndarray:
    """Group ids that let a C2ST treat real windows the way it treats generated ones: as separate draws.

    Generated windows enter a C2ST ungrouped (each its own fold unit). Real windows grouped by recording or subject
    hide from the classifier what their subjects have in common, so a floor built that way is lower than what a
    perfect sampler of the same subjects would score. Here each window is its own group, except that windows of one
    source that overlap (``|start_i - start_j| < length`` samples, chained) share one: they share samples, and a
    classifier could match them across folds.

    Parameters
    ----------
    sources : sequence, (N,)
        Recording id per window.
    starts : sequence of int, (N,)
        First sample of each window in its recording.
    length : int
        Window length in samples.

    Returns
    -------
    ndarray of str, (N,)
        ``"<source>#<k>"``, k counting the runs of overlapping windows of that source in time order.
    """
    src = np.asarray([str(s) for s in sources])
    st = np.asarray(starts, dtype=np.int64)
    if len(src) != len(st):
        raise UserError(f"overlap_groups: {len(src)} sources but {len(st)} starts; give one of each per window")
    if length < 1:
        raise UserError(f"overlap_groups: window length {length} samples; expected >= 1")
    out = np.empty(len(src), dtype=object)
    for s in np.unique(src):
        idx = np.flatnonzero(src == s)
        idx = idx[np.argsort(st[idx], kind="stable")]
        k, prev = -1, None
        for i in idx:
            if prev is None or st[i] - prev >= length:
                k += 1
            out[i] = f"{s}#{k}"
            prev = st[i]
    return out.astype(str)


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC of ``scores`` for binary ``labels`` (Mann-Whitney U with tie-averaged ranks)."""
    y = np.asarray(labels).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise UserError("roc_auc needs both classes in the labels")
    ranks = rankdata(np.asarray(scores, dtype=np.float64))
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _fit_logistic(X_ND: np.ndarray, y_N: np.ndarray, l2: float) -> tuple[np.ndarray, float]:
    """L2-regularised logistic regression (bias not penalised); returns weights and bias."""
    n, d = X_ND.shape
    w_pos = 0.5 * n / max(y_N.sum(), 1.0)  # class-balanced weights
    w_neg = 0.5 * n / max((1 - y_N).sum(), 1.0)
    sw_N = np.where(y_N > 0, w_pos, w_neg)

    def loss_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:d], theta[d]
        z = X_ND @ w + b
        # log(1 + exp(z)) - y z, stable
        loss_N = np.logaddexp(0.0, z) - y_N * z
        p = 0.5 * (1.0 + np.tanh(0.5 * z))
        r = sw_N * (p - y_N)
        loss = float(np.sum(sw_N * loss_N) / n + 0.5 * l2 * w @ w)
        g = np.concatenate([X_ND.T @ r / n + l2 * w, [r.sum() / n]])
        return loss, g

    res = optimize.minimize(loss_grad, np.zeros(d + 1), jac=True, method="L-BFGS-B",
                            options={"maxiter": 500})
    return res.x[:d], float(res.x[d])


def group_folds(groups_a: np.ndarray, groups_b: np.ndarray, n_folds: int,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
    """Fold index per window of each set; a group never straddles folds.

    Group ids are shared between the sets: windows of set a and set b with the same id go to the same
    fold (so a surrogate never sits opposite its source window). Groups are shuffled, then dealt, largest
    first, to the fold whose share of both sets is smallest. The fold count is lowered to the number of
    groups present in each set.
    """
    ids_a = np.asarray([str(g) for g in groups_a])
    ids_b = np.asarray([str(g) for g in groups_b])
    uniq, inverse = np.unique(np.concatenate([ids_a, ids_b]), return_inverse=True)
    inv_a, inv_b = inverse[: len(ids_a)], inverse[len(ids_a):]
    cnt_a = np.bincount(inv_a, minlength=len(uniq)).astype(float)
    cnt_b = np.bincount(inv_b, minlength=len(uniq)).astype(float)
    k = int(min(n_folds, np.count_nonzero(cnt_a), np.count_nonzero(cnt_b)))
    if k < 2:
        raise UserError(f"C2ST needs at least 2 groups (recordings) in each set for grouped cross-validation; "
                        f"got {np.count_nonzero(cnt_a)} and {np.count_nonzero(cnt_b)}; pass groups that split "
                        "each set into at least 2 independent parts")
    share_a, share_b = cnt_a / cnt_a.sum(), cnt_b / cnt_b.sum()
    order = rng.permutation(len(uniq))
    order = order[np.argsort(-(share_a + share_b)[order], kind="stable")]
    load_a, load_b = np.zeros(k), np.zeros(k)
    fold_of_group = np.empty(len(uniq), dtype=int)
    for gi in order:
        # a group holding set-a windows goes where set a is thinnest (likewise b); mixed groups balance both
        cost = (load_a + share_a[gi]) * (share_a[gi] > 0) + (load_b + share_b[gi]) * (share_b[gi] > 0)
        f = int(np.argmin(cost))
        fold_of_group[gi] = f
        load_a[f] += share_a[gi]
        load_b[f] += share_b[gi]
    fold_a, fold_b = fold_of_group[inv_a], fold_of_group[inv_b]
    for f in range(k):
        if not np.any(fold_a == f) or not np.any(fold_b == f):
            raise UserError(f"C2ST: fold {f} of {k} lacks windows of one set (groups too unequal); "
                            "lower n_folds or use finer groups")
    return fold_a, fold_b, k


def c2st_auc(a_NCT: np.ndarray, b_NCT: np.ndarray, sfreq: float, groups_a: Sequence | None = None,
             groups_b: Sequence | None = None, n_folds: int = 5, bands: Iterable[Sequence[float]] = DEFAULT_BANDS,
             f_max: float | None = None, l2: float = 0.1, seed: int = 0,
             features: tuple[np.ndarray, np.ndarray] | None = None) -> C2STResult:
    """Classifier two-sample test between two sets of windows.

    Parameters
    ----------
    a_NCT : ndarray, shape (N_a, C, T), µV
        First set (e.g. real validation windows).
    b_NCT : ndarray, shape (N_b, C, T), µV
        Second set (e.g. generated windows); same C and T.
    sfreq : float
        Sampling frequency in Hz.
    groups_a, groups_b : sequence | None
        Group id per window (recording, subject, generation batch). Windows of one group stay in one
        fold; an id used in both sets ties those windows of both sets to one fold (give a surrogate its
        source window's id). ``None`` makes every window its own group — right for independent samples, optimistic
        for overlapping windows cut from one recording.
    n_folds : int
        Folds (lowered to the number of groups of the smaller set when needed).
    bands, f_max :
        Feature bands (see :func:`c2st_features`).
    l2 : float
        Ridge penalty on the standardised weights.
    seed : int
        Fold assignment seed.
    features : (ndarray, ndarray) | None
        Precomputed ``(F_a, F_b)`` feature matrices; then ``a_NCT``/``b_NCT`` only give the counts.

    Returns
    -------
    C2STResult
    """
    if features is None:
        a = np.asarray(a_NCT, dtype=np.float64)
        b = np.asarray(b_NCT, dtype=np.float64)
        if a.ndim != 3 or b.ndim != 3 or a.shape[1:] != b.shape[1:]:
            raise UserError(f"c2st_auc: sets must be (N, C, T) with equal C and T; got {a.shape} and {b.shape}")
        F_a, F_b = c2st_features(a, sfreq, bands, f_max), c2st_features(b, sfreq, bands, f_max)
    else:
        F_a, F_b = (np.asarray(f, dtype=np.float64) for f in features)
    n_a, n_b = len(F_a), len(F_b)
    # without groups every window is its own group, named per set so the two sets never share one
    g_a = np.asarray([f"a:{i}" for i in range(n_a)] if groups_a is None else list(groups_a))
    g_b = np.asarray([f"b:{i}" for i in range(n_b)] if groups_b is None else list(groups_b))
    if len(g_a) != n_a or len(g_b) != n_b:
        raise UserError(f"c2st_auc: got {len(g_a)}/{len(g_b)} group ids for {n_a}/{n_b} windows; give one per window")
    def logistic(X_tr: np.ndarray, y_tr: np.ndarray, X_te: np.ndarray, fold: int) -> np.ndarray:
        w, b0 = _fit_logistic(X_tr, y_tr, l2)
        return X_te @ w + b0

    return cross_validated_auc(F_a, F_b, g_a, g_b, n_folds, seed, logistic)


def cross_validated_auc(F_a: np.ndarray, F_b: np.ndarray, groups_a: np.ndarray, groups_b: np.ndarray, n_folds: int,
                        seed: int, fit_score) -> C2STResult:
    """Group-fold cross-validated AUC of a classifier telling feature set b (label 1) from a (label 0).

    ``fit_score(X_train, y_train, X_test, fold) -> scores`` trains on standardised features (mean and std of the
    training fold) and scores the test fold; one call per fold.
    """
    fold_a, fold_b, k = group_folds(np.asarray(groups_a), np.asarray(groups_b), n_folds, np.random.default_rng(seed))
    X = np.concatenate([F_a, F_b])
    y = np.concatenate([np.zeros(len(F_a)), np.ones(len(F_b))])
    fold = np.concatenate([fold_a, fold_b])
    aucs = []
    for f in range(k):
        tr, te = fold != f, fold == f
        mu, sd = X[tr].mean(axis=0), X[tr].std(axis=0)
        sd[sd == 0] = 1.0
        aucs.append(roc_auc(y[te], fit_score((X[tr] - mu) / sd, y[tr], (X[te] - mu) / sd, f)))
    return C2STResult(auc=float(np.mean(aucs)), auc_std=float(np.std(aucs)), fold_aucs=[float(v) for v in aucs],
                      n_folds=k, n_a=len(F_a), n_b=len(F_b))
