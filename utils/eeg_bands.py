"""The single source of truth for frequency bands, cumulative stages and the scale-layout rule.

Shape letters: K stages (bands), l a scale's token count, L the latent length.

A band is ``(f_lo, f_hi)`` in Hz. Stage k (k = 1..K) is the *cumulative* signal from the first band's
``f_lo`` to band k's ``f_hi`` (docs/design.md §1). The tokenizer gives each stage one token map whose
length follows the band's upper edge (docs/design.md §2); :func:`scale_lengths_for_bands` is that rule.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np

from .errors import BandError

#: Default EEG bands (Hz): delta, theta, alpha, beta, gamma.
DEFAULT_BANDS: tuple[tuple[float, float], ...] = (
    (0.5, 4.0),
    (4.0, 8.0),
    (8.0, 13.0),
    (13.0, 30.0),
    (30.0, 50.0),
)
DEFAULT_BAND_NAMES: tuple[str, ...] = ("delta", "theta", "alpha", "beta", "gamma")

# Relative tolerance when comparing band edges read back from float32 files.
_EDGE_RTOL = 1e-5


def validate_bands(bands: Iterable[Sequence[float]], sfreq: float | None = None,
                   where: str = "bands") -> np.ndarray:
    """Check band edges and return them as a float64 array of shape (K, 2).

    Parameters
    ----------
    bands : sequence of (f_lo, f_hi)
        Band edges in Hz, in increasing order.
    sfreq : float | None
        Sampling frequency in Hz; when given, every ``f_hi`` must be ``<= sfreq / 2``.
    where : str
        Name of the flag, parameter or file the bands came from, used in error messages.

    Raises
    ------
    BandError
        If the edges are not finite, not increasing, overlapping, ``f_lo <= 0`` or above Nyquist.
    """
    try:
        bands_K2 = np.asarray([[float(lo), float(hi)] for lo, hi in bands], dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise BandError(f"{where}: expected a list of (f_lo, f_hi) pairs in Hz, got {bands!r} ({err})") from None
    if bands_K2.ndim != 2 or bands_K2.shape[0] == 0:
        raise BandError(f"{where}: expected at least one (f_lo, f_hi) band, got {bands!r}")
    if not np.all(np.isfinite(bands_K2)):
        raise BandError(f"{where}: band edges must be finite numbers, got {bands_K2.tolist()}")
    for k, (lo, hi) in enumerate(bands_K2):
        if lo <= 0:
            raise BandError(f"{where}: band {k} is ({lo:g}, {hi:g}) Hz but f_lo must be > 0; "
                            "use a small positive edge such as 0.5 Hz")
        if hi <= lo:
            raise BandError(f"{where}: band {k} is ({lo:g}, {hi:g}) Hz but f_hi must exceed f_lo")
        if k > 0 and lo < bands_K2[k - 1, 1] * (1 - _EDGE_RTOL):
            raise BandError(f"{where}: band {k} ({lo:g}, {hi:g}) Hz overlaps band {k - 1} "
                            f"({bands_K2[k - 1, 0]:g}, {bands_K2[k - 1, 1]:g}) Hz; bands must be increasing "
                            "and non-overlapping")
    if sfreq is not None:
        nyquist = float(sfreq) / 2
        if bands_K2[-1, 1] > nyquist * (1 + _EDGE_RTOL):
            raise BandError(f"{where}: top band edge {bands_K2[-1, 1]:g} Hz is above Nyquist ({nyquist:g} Hz "
                            f"at sfreq={float(sfreq):g} Hz); resample to at least {2 * bands_K2[-1, 1]:g} Hz "
                            "or lower the top band edge")
    return bands_K2


def bands_equal(a: np.ndarray | Sequence, b: np.ndarray | Sequence) -> bool:
    """True when two band tables have the same shape and edges (float32 round-off tolerated)."""
    a_K2, b_K2 = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return a_K2.shape == b_K2.shape and bool(np.allclose(a_K2, b_K2, rtol=_EDGE_RTOL, atol=1e-6))


def parse_bands(text: str, where: str = "--bands") -> np.ndarray:
    """Parse ``"0.5-4,4-8,8-13"`` (or ``0.5:4``) into a (K, 2) array; validation is left to the caller."""
    pairs = []
    for part in text.replace(" ", "").split(","):
        sep = ":" if ":" in part else "-"
        lo_hi = part.split(sep)
        if len(lo_hi) != 2:
            raise BandError(f"{where}: could not read band {part!r} in {text!r}; write bands as "
                            "'0.5-4,4-8,8-13,13-30,30-50'")
        try:
            pairs.append((float(lo_hi[0]), float(lo_hi[1])))
        except ValueError:
            raise BandError(f"{where}: band {part!r} in {text!r} is not two numbers; write bands as "
                            "'0.5-4,4-8,8-13,13-30,30-50'") from None
    return np.asarray(pairs, dtype=np.float64)


def stage_edges(bands: Iterable[Sequence[float]]) -> list[tuple[float, float]]:
    """Pass-band of each cumulative stage: ``[(f_lo_1, f_hi_k) for k in 1..K]``."""
    bands_K2 = validate_bands(bands)
    return [(float(bands_K2[0, 0]), float(hi)) for hi in bands_K2[:, 1]]


def stage_names(bands: Iterable[Sequence[float]]) -> list[str]:
    """Readable names of the cumulative stages, e.g. ``['delta', 'delta+theta', ...]``.

    Uses the classic band names when ``bands`` are the defaults, otherwise ``'0.5-13Hz'`` style names.
    """
    bands_K2 = validate_bands(bands)
    if bands_equal(bands_K2, DEFAULT_BANDS[: len(bands_K2)]):
        return ["+".join(DEFAULT_BAND_NAMES[: k + 1]) for k in range(len(bands_K2))]
    return [f"{bands_K2[0, 0]:g}-{hi:g}Hz" for hi in bands_K2[:, 1]]


def band_names(bands: Iterable[Sequence[float]]) -> list[str]:
    """Names of the individual (non-cumulative) bands, e.g. ``['delta', 'theta', ...]``."""
    bands_K2 = validate_bands(bands)
    if bands_equal(bands_K2, DEFAULT_BANDS[: len(bands_K2)]):
        return list(DEFAULT_BAND_NAMES[: len(bands_K2)])
    return [f"{lo:g}-{hi:g}Hz" for lo, hi in bands_K2]


def scale_lengths_for_bands(bands: Iterable[Sequence[float]], sfreq: float, latent_len: int,
                            extra_coarse: Sequence[int] = (), tokens_per_nyquist: float = 1.0) -> tuple[int, ...]:
    """The 1D scale layout (``v_patch_nums``) for the cumulative stages.

    Stage k gets ``l_k = ceil(latent_len * tokens_per_nyquist * f_hi_k / (sfreq / 2))`` tokens, clipped
    to [1, latent_len], made strictly increasing, and the last stage always gets ``latent_len``
    (docs/design.md §2). ``extra_coarse`` scales (e.g. ``(1, 2, 4)``) are prepended below the first band.

    Parameters
    ----------
    bands : sequence of (f_lo, f_hi)
        Band edges in Hz.
    sfreq : float
        Sampling frequency in Hz.
    latent_len : int
        Length L of the tokenizer's latent (window samples / downsampling factor).
    extra_coarse : sequence of int
        Extra coarse scale lengths, strictly increasing; band scales are pushed above them.
    tokens_per_nyquist : float
        Multiplier on the Nyquist rule (> 1 gives coarse stages more tokens; the last stays L). With a
        latent downsampled by D, ``tokens_per_nyquist = D`` lets each scale carry its band through the
        latent's own Nyquist rate (stages that would exceed L are capped just below it).

    Returns
    -------
    tuple of int
        ``len(extra_coarse) + K`` strictly increasing lengths ending at ``latent_len``.
    """
    bands_K2 = validate_bands(bands, sfreq)
    if int(latent_len) < 1:
        raise BandError(f"latent_len must be >= 1, got {latent_len}")
    if not tokens_per_nyquist > 0:
        raise BandError(f"tokens_per_nyquist must be > 0, got {tokens_per_nyquist}")
    latent_len = int(latent_len)
    nyquist = float(sfreq) / 2
    lengths: list[int] = []
    floor = max((int(x) for x in extra_coarse), default=0)  # band scales stay above the extra coarse ones
    n_bands = len(bands_K2)
    for k, f_hi in enumerate(bands_K2[:, 1]):
        l_k = math.ceil(latent_len * tokens_per_nyquist * f_hi / nyquist - 1e-9)
        # cap below latent_len so the remaining stages still fit strictly increasing (only matters when
        # tokens_per_nyquist > 1 pushes several stages to the latent length; such layouts used to be errors)
        cap = latent_len - (n_bands - 1 - k)
        l_k = max(min(max(l_k, 1), cap), (lengths[-1] if lengths else floor) + 1)
        lengths.append(l_k)
    lengths[-1] = latent_len
    patch_nums = tuple(int(x) for x in extra_coarse) + tuple(lengths)
    return validate_scale_layout(patch_nums, latent_len, where=f"scale layout for bands {bands_K2.tolist()}")


def validate_scale_layout(patch_nums: Sequence[int], latent_len: int, where: str = "patch_nums") -> tuple[int, ...]:
    """Check a scale layout is strictly increasing, positive and ends at ``latent_len``.

    Raises
    ------
    BandError
        Naming the layout and the latent length when either rule is broken.
    """
    pn = tuple(int(x) for x in patch_nums)
    if not pn or pn[0] < 1 or any(b <= a for a, b in zip(pn, pn[1:])):
        raise BandError(f"{where}: scale lengths {list(pn)} must be positive and strictly increasing "
                        "(too many stages for this latent length? use a longer window or fewer bands)")
    if pn[-1] != int(latent_len):
        raise BandError(f"{where}: the last scale has {pn[-1]} tokens but the latent length is {latent_len}; "
                        "the last scale must equal the latent length")
    return pn
