"""``BandGain``: a few side bits per window that give each decoded band its input's power back.

A decoder trained for squared error regresses band power towards the training mean: a quiet subject's
decode has too much beta and gamma, a loud one's too little, and no fixed gain undoes that on subjects the
tokenizer never saw (docs/design.md §2). The encoder, which holds both the input and its own decode, can
measure the error: per window, channel and band, the ratio of input to decode power, in dB, rounded to a
step of ``step_db`` and clipped to ``±max_steps`` steps. These integer codes travel beside the token maps
(``K x log2(2 max_steps + 1)`` bits per window and channel) and the decoder scales each band's rFFT bins by
its code's gain.

Band k's code belongs to stage k: a partial decode up to stage k applies the codes of bands 0..k only, so
every prefix of the tokens and codes still decodes to its band-limited stage. A decode without codes (a VAR
sample, an old checkpoint) is the plain decode. The codes are measured on the full decode and applied to every
partial decode.

Shape letters: B batch, C electrodes, T samples, F = T // 2 + 1 rFFT bins, K bands.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from .band_mix import band_index_F

__all__ = ['BandGain', 'power_ratio_db', 'encode_gain_codes', 'apply_gain_codes', 'group_gain_db', 'lookup_group_gain_db',
           'sample_gain_db']


def power_ratio_db(num: torch.Tensor | np.ndarray, den: torch.Tensor | np.ndarray):
    """``10 log10(num / den)`` elementwise, 0 dB where either power is 0 (torch or numpy in, same out)."""
    lib = torch if isinstance(num, torch.Tensor) else np
    ok = (num > 0) & (den > 0)
    return 10 * lib.log10(lib.where(ok, num, 1.0) / lib.where(ok, den, 1.0))


class BandGain:
    """Quantised per-band gains of a decode against its input.

    Parameters
    ----------
    bands : sequence of (f_lo, f_hi)
        The tokenizer's bands (Hz). Band k owns the rFFT bins with ``f_lo <= f < f_hi``; the top band
        also owns its upper edge (the Nyquist bin when it reaches Nyquist). Bins outside every band keep
        gain 1.
    sfreq : float
        Sampling frequency (Hz).
    n_times : int
        Window length T (samples).
    step_db : float
        Quantisation step of the gain in dB (> 0).
    max_steps : int
        Codes run from ``-max_steps`` to ``+max_steps`` (>= 1).
    """

    def __init__(self, bands: Sequence[Sequence[float]], sfreq: float, n_times: int, step_db: float = 2.0,
                 max_steps: int = 2):
        if not step_db > 0:
            raise ValueError(f'step_db={step_db}; expected a positive step in dB')
        if int(max_steps) < 1:
            raise ValueError(f'max_steps={max_steps}; expected at least 1')
        self.step_db, self.max_steps = float(step_db), int(max_steps)
        self.n_times = int(n_times)
        self.n_bands = len(bands)
        #: rFFT bin -> band index, -1 for bins outside every band
        self.band_F = torch.from_numpy(band_index_F(bands, sfreq, self.n_times))

    # ------------------------------------------------------------------------------------------------
    @property
    def levels(self) -> int:
        """Number of distinct codes, ``2 max_steps + 1``."""
        return 2 * self.max_steps + 1

    def bits_per_second(self, sfreq: float) -> float:
        """Fixed-length cost of the codes, bits per second per channel."""
        return self.n_bands * math.log2(self.levels) / (self.n_times / float(sfreq))

    def band_power(self, x_BCT: torch.Tensor) -> torch.Tensor:
        """Σ |rfft(x)|² over each band's bins: (B, C, K)."""
        P_BCF = torch.fft.rfft(x_BCT.double(), dim=-1).abs().square()
        onehot_FK = (self.band_F.unsqueeze(-1) == torch.arange(self.n_bands)).to(P_BCF)
        return P_BCF @ onehot_FK.to(P_BCF.device)

    @torch.no_grad()
    def measure(self, x_BCT: torch.Tensor, rec_BCT: torch.Tensor) -> torch.Tensor:
        """Codes (B, C, K) int8: ``round(10 log10(P_x / P_rec) / step_db)`` per band, clipped to ±max_steps.

        A band with no power in the decode or the input gets code 0.
        """
        ratio_db = power_ratio_db(self.band_power(x_BCT), self.band_power(rec_BCT))
        codes = torch.round(ratio_db / self.step_db).clamp(-self.max_steps, self.max_steps)
        return codes.to(torch.int8)

    @torch.no_grad()
    def apply(self, rec_BCT: torch.Tensor, codes_BCK: torch.Tensor, n_bands: int | None = None) -> torch.Tensor:
        """``rec_BCT`` with band k's bins scaled by ``10 ** (codes[..., k] step_db / 20)`` for k < ``n_bands``.

        ``n_bands`` (default all): the bands the decode holds, so a partial decode of stage k passes k + 1.
        """
        return self.apply_db(rec_BCT, codes_BCK.double() * self.step_db, n_bands)

    @torch.no_grad()
    def apply_db(self, rec_BCT: torch.Tensor, gain_db_BCK: torch.Tensor, n_bands: int | None = None) -> torch.Tensor:
        """``rec_BCT`` with band k's power raised by ``gain_db_BCK[..., k]`` dB (any real gain) for k < ``n_bands``."""
        K = self.n_bands if n_bands is None else int(n_bands)
        if gain_db_BCK.shape[-1] != self.n_bands or gain_db_BCK.shape[:2] != rec_BCT.shape[:2]:
            raise ValueError(f'gain codes of shape {tuple(gain_db_BCK.shape)} do not fit a decode of shape '
                             f'{tuple(rec_BCT.shape)} with {self.n_bands} bands')
        amp_BCK = torch.pow(10.0, gain_db_BCK.double().to(rec_BCT.device) / 20.0)
        amp_BCK[..., K:] = 1.0
        band_F = self.band_F.to(rec_BCT.device)
        # one extra column of gain 1 for the bins outside every band (index -1)
        amp_BCF = torch.cat([amp_BCK, torch.ones_like(amp_BCK[..., :1])], dim=-1)[..., band_F]
        X_BCF = torch.fft.rfft(rec_BCT.double(), dim=-1) * amp_BCF
        return torch.fft.irfft(X_BCF, n=self.n_times, dim=-1).to(rec_BCT.dtype)

    def entropy_bits_per_second(self, codes_NCK: np.ndarray | torch.Tensor, sfreq: float) -> float:
        """Empirical entropy of the codes (one distribution per band), bits per second per channel.

        What an entropy coder fitted to these codes would spend; :meth:`bits_per_second` is the fixed cost.
        """
        c = np.asarray(codes_NCK).reshape(-1, self.n_bands)
        bits = 0.0
        for k in range(self.n_bands):
            _, counts = np.unique(c[:, k], return_counts=True)
            p = counts / counts.sum()
            bits += float(-(p * np.log2(p)).sum())
        return bits / (self.n_times / float(sfreq))


@torch.no_grad()
def encode_gain_codes(vae, gain: BandGain, x_BCT: torch.Tensor, idx_S: list[torch.Tensor]) -> torch.Tensor:
    """The codes (B, C, K) of windows ``x_BCT`` (model units) against the full decode of their tokens ``idx_S``."""
    return gain.measure(x_BCT, vae.idxBl_to_eeg(idx_S, last_one=True))


def apply_gain_codes(gain: BandGain, recs_S: list[torch.Tensor], codes_BCK: torch.Tensor,
                     n_extra_coarse: int = 0) -> list[torch.Tensor]:
    """Partial decodes of every scale (list of (B, C, T)) with the codes of the bands each one holds.

    Scale ``n_extra_coarse + k`` is stage k and gets bands 0..k; extra coarse scales (below the first band) none.
    """
    return [gain.apply(r, codes_BCK, max(0, si - n_extra_coarse + 1)) for si, r in enumerate(recs_S)]


def _group_masks(labels_N: np.ndarray, levels_N: np.ndarray, num_classes: int, num_levels: int):
    """Yield ``(c, l, mask_N)`` for every cell of a (classes + 1, levels + 1) gain table: class c's windows of level l,
    row ``num_classes`` every class, column ``num_levels`` every level."""
    labels_N, levels_N = np.asarray(labels_N), np.asarray(levels_N)
    for c in range(num_classes + 1):
        in_c = np.ones(len(labels_N), bool) if c == num_classes else labels_N == c
        for lv in range(num_levels + 1):
            yield c, lv, (in_c if lv == num_levels else in_c & (levels_N == lv))


def group_gain_db(Px_NCK: np.ndarray, Prec_NCK: np.ndarray, labels_N: np.ndarray, levels_N: np.ndarray | None,
                  num_classes: int, num_levels: int) -> np.ndarray:
    """The band gain (dB) that gives each group of windows its inputs' mean band power back.

    For a VAR sample there are no codes to send: the decoder can only apply what its class and power level
    predict. Per class c and level l (``levels_N``; None = no levels), per channel and band:
    ``10 log10(Σ P_x / Σ P_rec)`` over the group's windows (arithmetic means, so the group's mean power is
    matched, not its mean log power). Row ``num_classes`` pools all classes, column ``num_levels`` all levels
    (the null class, an unknown level). An empty group gets 0 dB.

    Parameters
    ----------
    Px_NCK, Prec_NCK : (N, C, K)
        Band powers of the input windows and of their plain decodes (:meth:`BandGain.band_power`).
    labels_N, levels_N : (N,) int
        Each window's class and level.

    Returns
    -------
    ndarray, shape (num_classes + 1, num_levels + 1, C, K), float64
    """
    _, C, K = Px_NCK.shape
    levels_N = np.zeros(len(labels_N), dtype=np.int64) if levels_N is None or num_levels == 0 else np.asarray(levels_N)
    out = np.zeros((num_classes + 1, num_levels + 1, C, K))
    for c, lv, m in _group_masks(labels_N, levels_N, num_classes, num_levels):
        if m.any():
            out[c, lv] = power_ratio_db(Px_NCK[m].sum(0), Prec_NCK[m].sum(0))
    return out


def sample_gain_db(real_db_NCK: np.ndarray, real_labels_N: np.ndarray, real_levels_N: np.ndarray | None,
                   gen_db_NCK: np.ndarray, gen_labels_M: np.ndarray, gen_levels_M: np.ndarray | None,
                   num_classes: int, num_levels: int, min_count: int = 8) -> np.ndarray:
    """The band gain (dB) that gives a model's samples the mean log band power of the real windows of their group.

    :func:`group_gain_db` corrects the decoder on real tokens; a sampler's tokens decode to a band power of their
    own (on eegmat 1 dB too much theta and alpha in one class), which that table cannot know. Here both sides are
    measured: per class c and level l, per channel and band, ``mean(real_db) - mean(gen_db)`` over the group's real
    training windows and over a batch of the model's plain-decoded samples. Log power is what varies between
    subjects and what a classifier sees, so the means are taken in dB (matching the geometric mean, not the
    arithmetic one).

    A group with fewer than ``min_count`` windows on either side takes its class's pooled column, and a class
    with too few the table's pooled row. Row ``num_classes`` pools all classes, column ``num_levels`` all levels,
    as in :func:`group_gain_db`, so :func:`lookup_group_gain_db` reads both tables.

    Parameters
    ----------
    real_db_NCK, gen_db_NCK : (N, C, K), (M, C, K)
        ``10 log10`` of the band powers (:meth:`BandGain.band_power`) of the real windows and of the samples'
        plain decodes.
    real_labels_N, gen_labels_M : int arrays
        Classes.
    real_levels_N, gen_levels_M : int arrays or None
        Power levels (None, or ``num_levels`` 0: no levels); a level outside ``0..num_levels-1`` counts in the
        pooled column only.

    Returns
    -------
    ndarray, shape (num_classes + 1, num_levels + 1, C, K), float64
    """
    real_db, gen_db = np.asarray(real_db_NCK, dtype=np.float64), np.asarray(gen_db_NCK, dtype=np.float64)
    if real_db.ndim != 3 or gen_db.shape[1:] != real_db.shape[1:]:
        raise ValueError(f'band powers of shapes {real_db.shape} and {gen_db.shape}; expected (N, C, K) and (M, C, K)')
    if not (np.isfinite(real_db).all() and np.isfinite(gen_db).all()):
        raise ValueError('band powers in dB must be finite (a flat window or channel has no log power)')

    def _levels(lv, n):
        return np.full(n, -1, dtype=np.int64) if lv is None or num_levels == 0 else np.asarray(lv, dtype=np.int64)

    r_lab, g_lab = np.asarray(real_labels_N, dtype=np.int64), np.asarray(gen_labels_M, dtype=np.int64)
    r_lvl, g_lvl = _levels(real_levels_N, len(r_lab)), _levels(gen_levels_M, len(g_lab))
    out = np.zeros((num_classes + 1, num_levels + 1) + real_db.shape[1:])
    ok = np.zeros((num_classes + 1, num_levels + 1), dtype=bool)
    for (c, lv, r_m), (_, _, g_m) in zip(_group_masks(r_lab, r_lvl, num_classes, num_levels),
                                         _group_masks(g_lab, g_lvl, num_classes, num_levels)):
        if r_m.sum() >= min_count and g_m.sum() >= min_count:
            out[c, lv] = real_db[r_m].mean(0) - gen_db[g_m].mean(0)
            ok[c, lv] = True
    for c in range(num_classes + 1):  # too few windows: the class's pooled column, else every class's, else 0 dB
        for lv in range(num_levels + 1):
            if not ok[c, lv]:
                out[c, lv] = out[c, num_levels] if ok[c, num_levels] else out[num_classes, num_levels]
    return out


def lookup_group_gain_db(table_GLCK: np.ndarray | torch.Tensor, label_B: torch.Tensor | int, level_B: torch.Tensor | int | None,
                         B: int) -> torch.Tensor:
    """Each window's row of a :func:`group_gain_db` table: (B, C, K) dB, float64 on the CPU.

    ``label_B`` / ``level_B``: a tensor per window or one int for all; a negative label (the null class) or a label
    past the last class takes the pooled row, and a level that is None, negative or past the last level the pooled
    column (an unknown level).
    """
    table = torch.as_tensor(np.asarray(table_GLCK), dtype=torch.float64)
    n_rows, n_cols = table.shape[:2]

    def _index(v, n: int) -> torch.Tensor:
        v = torch.full((B,), -1 if v is None else int(v), dtype=torch.long) if not isinstance(v, torch.Tensor) \
            else v.detach().cpu().long().reshape(-1).expand(B)
        return torch.where((v < 0) | (v >= n - 1), n - 1, v)

    return table[_index(label_B, n_rows), _index(level_B, n_cols)]
