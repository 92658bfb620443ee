"""Subject ids from file paths, and the train/val split by subject, by recording or by time.

Splits are never by window: neighbouring windows share information (and filter support), so a random
window split leaks (docs/design.md §5).

Subject rule (:func:`subject_of`), first that applies:

1. ``--subject-regex PATTERN``: :func:`re.search` on the path (``/`` separators); the named group
   ``subject``, else group 1, else the whole match. A path it does not match falls back to rule 5
   (listed per recording in the manifest as ``subject_rule: "fallback"``).
2. BIDS: a ``sub-<label>`` path component -> ``sub-<label>``.
3. EEGMMIDB: a file stem ``S001R01`` -> ``S001``; TUH: ``aaaaaaab_s001_t000`` -> ``aaaaaaab``.
4. A trailing run number: stem ``Subject05_2`` / ``rec-3`` -> ``Subject05`` / ``rec``.
5. Otherwise the recording's file stem is its own subject.

Split rule (:func:`assign_splits`): the groups (subjects, or recordings with ``--split-by recording``)
are sorted, shuffled by ``numpy.random.default_rng(seed)``, and the first
``round(val_fraction * n_groups)`` (at least 1 when ``val_fraction > 0``, at most ``n_groups - 1``)
go to ``val``; or ``--val-groups`` names the validation groups explicitly.

Time rule (``--split-by time``, :func:`time_split_windows`): every recording contributes to both splits.
With ``n`` samples at the output rate, the boundary is ``b = floor((1 - val_fraction) * n)``; a window
``[start, start + window)`` goes to ``train`` when it ends at or before ``b`` (``start + window <= b``), to
``val`` when it starts at or after ``b + gap`` (``start >= b + gap``), and is dropped (reason
``split_gap``) otherwise. Windows stay on the recording's one grid ``0, stride, 2*stride, ...``, so names
and ``start`` values are those the other rules give. ``val_fraction`` must lie in (0, 1) and
``--val-groups`` does not apply. ``gap`` is ``--split-gap-sec``; its default, the longer of the window
and the stage filter (:func:`utils.eeg_ingest.split_gap_samples`), keeps train and val windows from
sharing samples or filter support (stages are filtered on the continuous recording). Held-out time
of the same subjects is a within-subject forecast split, not a new-subject one.
"""
from __future__ import annotations

import os
import re
from typing import Sequence

import numpy as np

from .errors import UserError

SPLIT_BY = ("subject", "recording", "time")
#: manifest ``split`` of a recording whose windows go to both splits (``--split-by time``)
BOTH = "both"
_BIDS = re.compile(r"(?:^|/)(sub-[A-Za-z0-9]+)(?:/|_|$)")
_EEGMMIDB = re.compile(r"^(S\d+)R\d+$")
_TUH = re.compile(r"^([a-z]{8})_s\d+_t\d+$")
_TRAILING_RUN = re.compile(r"^(.+?)[_-](?:run|ses|rec|part)?-?\d+$", re.IGNORECASE)


def recording_stem(path: str) -> str:
    """File name without folder and extension(s) (``.fif.gz`` counts as one)."""
    name = os.path.basename(path)
    for ext in (".fif.gz", ".nii.gz"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return os.path.splitext(name)[0]


def check_subject_regex(pattern: str | None, where: str = "--subject-regex") -> None:
    """Raise :class:`UserError` when ``pattern`` does not compile."""
    if pattern:
        try:
            re.compile(pattern)
        except re.error as err:
            raise UserError(f"{where}: {pattern!r} is not a valid regular expression ({err})") from None


def subject_of(path: str, subject_regex: str | None = None) -> tuple[str, str]:
    """The subject id of a recording and the rule that gave it.

    Returns
    -------
    subject : str
    rule : str
        ``'regex'``, ``'bids'``, ``'eegmmidb'``, ``'tuh'``, ``'trailing-run'`` or ``'fallback'``.
    """
    text = path.replace("\\", "/")
    stem = recording_stem(path)
    if subject_regex:
        match = re.search(subject_regex, text)
        if match:
            groups = match.groupdict()
            subject = groups.get("subject") or (match.group(1) if match.groups() else match.group(0))
            if subject:
                return subject, "regex"
        return stem, "fallback"
    match = _BIDS.search(text)
    if match:
        return match.group(1), "bids"
    match = _EEGMMIDB.match(stem)
    if match:
        return match.group(1), "eegmmidb"
    match = _TUH.match(stem)
    if match:
        return match.group(1), "tuh"
    match = _TRAILING_RUN.match(stem)
    if match:
        return match.group(1), "trailing-run"
    return stem, "fallback"


def assign_splits(groups: Sequence[str], val_fraction: float, seed: int,
                  val_groups: Sequence[str] | None = None) -> dict[str, str]:
    """Map each group (subject or recording) to ``'train'`` or ``'val'``, deterministically.

    Parameters
    ----------
    groups : sequence of str
        Group ids (duplicates allowed).
    val_fraction : float
        Fraction of groups for validation, in [0, 1).
    seed : int
        Seed of the shuffle.
    val_groups : sequence of str | None
        Explicit validation groups (overrides ``val_fraction``).

    Raises
    ------
    UserError
        For a fraction outside [0, 1), an unknown explicit group, or too few groups to split.
    """
    unique = sorted(set(groups))
    if val_groups:
        unknown = [g for g in val_groups if g not in unique]
        if unknown:
            raise UserError(f"--val-groups: {unknown} are not among the groups found {unique[:10]}"
                            f"{'...' if len(unique) > 10 else ''}; check the names or the --split-by setting")
        if len(set(val_groups)) >= len(unique):
            raise UserError(f"--val-groups: all {len(unique)} groups would go to val; leave at least one for train")
        chosen = set(val_groups)
    else:
        if not 0 <= val_fraction < 1:
            raise UserError(f"--val-fraction got {val_fraction}; expected a fraction in [0, 1)")
        if val_fraction > 0 and len(unique) < 2:
            raise UserError(f"cannot split {len(unique)} group(s) ({unique}) into train and val; add recordings, "
                            "use --split-by recording, or pass --val-fraction 0 for a train-only dataset")
        n_val = 0 if val_fraction == 0 else min(max(1, round(val_fraction * len(unique))), len(unique) - 1)
        order = np.random.default_rng(seed).permutation(len(unique))
        chosen = {unique[i] for i in order[:n_val]}
    return {g: ("val" if g in chosen else "train") for g in unique}


def time_boundary(n_times: int, val_fraction: float) -> int:
    """The first sample of the val part: ``floor((1 - val_fraction) * n_times)`` (round-off tolerant)."""
    return int(np.floor((1.0 - val_fraction) * n_times + 1e-9))


def time_split_windows(starts: np.ndarray, window_samples: int, n_times: int, val_fraction: float,
                       gap_samples: int) -> tuple[np.ndarray, int, int]:
    """The split of each window of one recording under ``--split-by time``.

    Parameters
    ----------
    starts : ndarray of int
        Window start samples (:func:`utils.eeg_ingest.window_starts`).
    window_samples : int
        Window length in samples.
    n_times : int
        Recording length in samples (at the output rate).
    val_fraction : float
        Fraction of the recording's duration held out at its end, in (0, 1).
    gap_samples : int
        Guard interval between the train part's end and the val part's start, >= 0.

    Returns
    -------
    split : ndarray of str
        ``'train'``, ``'val'``, or ``''`` for a window in the gap (to be dropped).
    boundary : int
        ``b``: train windows end at or before it.
    val_start : int
        ``b + gap``: val windows start at or after it.
    """
    if not 0 < val_fraction < 1:
        raise UserError(f"--split-by time needs --val-fraction in (0, 1), got {val_fraction}")
    boundary = time_boundary(n_times, val_fraction)
    val_start = boundary + int(gap_samples)
    starts = np.asarray(starts, dtype=np.int64)
    split = np.full(len(starts), "", dtype=object)
    split[starts + window_samples <= boundary] = "train"
    split[starts >= val_start] = "val"
    return split, boundary, val_start
