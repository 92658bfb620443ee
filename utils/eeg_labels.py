"""Class labels for windows: from the recording's path or from its annotations.

Syntax of ``--label-from`` (:func:`parse_label_rule`):

``none``
    No labels (every window gets -1, i.e. one unconditional class).
``regex:PATTERN=NAME,PATTERN=NAME,...``
    Each recording's path (with ``/`` separators) is searched (:func:`re.search`) with each pattern in
    turn; the first match gives the class NAME of all its windows. A recording that matches no pattern
    is an error (or a listed skip with ``--continue-on-error``). Several patterns may share a NAME.
    Class indices follow the order in which names first appear. The NAME is what follows the *last*
    ``=`` of an item; a comma-separated piece without ``=`` is joined to the next piece (so patterns
    may contain commas, e.g. ``a{1,2}=x``). Example: ``regex:_1\\.edf$=rest,_2\\.edf$=arithmetic`` (eegmat: rest = 0, arithmetic = 1).
``annotations`` or ``annotations:DESCRIPTION=NAME,...``
    Each window takes the class of the annotation that overlaps it most, if that annotation covers
    at least half of the window; other windows are dropped and counted as ``unlabeled``. Without a
    mapping every annotation description is its own class (sorted, collected from all inputs); with
    one, only the listed descriptions count (e.g. ``annotations:T0=rest,T1=left,T2=right``).
"""
from __future__ import annotations

import dataclasses
import re
from typing import Iterable, Sequence

import numpy as np

from .errors import UserError
from .eeg_schema import NO_LABEL


@dataclasses.dataclass(frozen=True)
class LabelRule:
    """A parsed ``--label-from`` value.

    Attributes
    ----------
    kind : str
        ``'none'``, ``'regex'`` or ``'annotations'``.
    items : tuple of (str, str)
        (pattern or description, class name) pairs in the order given.
    text : str
        The original text, stored in the manifest.
    """

    kind: str
    items: tuple[tuple[str, str], ...]
    text: str

    def names(self) -> list[str]:
        """Class names in index order (first appearance), empty for ``none``/bare ``annotations``."""
        seen: list[str] = []
        for _, name in self.items:
            if name not in seen:
                seen.append(name)
        return seen


def _split_items(body: str, where: str) -> tuple[tuple[str, str], ...]:
    pieces: list[str] = []
    pending = ""
    for part in body.split(","):
        pending = f"{pending},{part}" if pending else part
        if "=" in part:  # an item ends at the piece holding its '=NAME'
            pieces.append(pending)
            pending = ""
    if pending:
        pieces.append(pending)
    items = []
    for piece in pieces:
        if "=" not in piece:
            raise UserError(f"{where}: item {piece!r} has no '=NAME'; write PATTERN=NAME pairs separated by commas, "
                            r"e.g. 'regex:_1\.edf$=rest,_2\.edf$=arithmetic'")
        key, name = piece.rsplit("=", 1)
        key, name = key.strip(), name.strip()
        if not key or not name:
            raise UserError(f"{where}: item {piece!r} needs both a pattern and a class name (PATTERN=NAME)")
        items.append((key, name))
    return tuple(items)


def parse_label_rule(text: str | None, where: str = "--label-from") -> LabelRule:
    """Parse a ``--label-from`` value (see the module docstring for the syntax).

    Raises
    ------
    UserError
        For an unknown rule kind, a malformed item or an invalid regular expression.
    """
    text = (text or "none").strip()
    kind, _, body = text.partition(":")
    kind = kind.strip().lower()
    if kind == "none" and not body:
        return LabelRule("none", (), "none")
    if kind == "regex":
        if not body.strip():
            raise UserError(f"{where}: 'regex:' needs PATTERN=NAME pairs, e.g. 'regex:_1\\.edf$=rest,_2\\.edf$=task'")
        items = _split_items(body, where)
        for pattern, _ in items:
            try:
                re.compile(pattern)
            except re.error as err:
                raise UserError(f"{where}: {pattern!r} is not a valid regular expression ({err})") from None
        return LabelRule("regex", items, text)
    if kind in ("annotations", "annotation", "annot"):
        items = _split_items(body, where) if body.strip() else ()
        return LabelRule("annotations", items, text)
    raise UserError(f"{where} got {text!r}; expected 'none', 'regex:PATTERN=NAME,...' or "
                    "'annotations[:DESCRIPTION=NAME,...]'")


def recording_label(rule: LabelRule, path: str, label_names: Sequence[str]) -> int:
    """Class index of a whole recording under a ``regex`` rule (``NO_LABEL`` for other kinds).

    Raises
    ------
    UserError
        If no pattern matches ``path``.
    """
    if rule.kind != "regex":
        return NO_LABEL
    text = path.replace("\\", "/")
    for pattern, name in rule.items:
        if re.search(pattern, text):
            return list(label_names).index(name)
    raise UserError(f"{path}: matches none of the --label-from patterns {[p for p, _ in rule.items]}; "
                    "add a pattern for it or leave the recording out")


def is_bad_annotation(description: str) -> bool:
    """True for annotations MNE treats as bad spans (``BAD...``, ``EDGE...``, case-insensitive).

    Windows overlapping them are dropped (counted as ``bad_annotation``); they are never classes.
    """
    return str(description).lower().startswith(("bad", "edge"))


def annotation_names(rule: LabelRule, descriptions: Iterable[str]) -> list[str]:
    """Class names for an ``annotations`` rule: the mapping's names, or all (non-bad) descriptions sorted."""
    if rule.items:
        return rule.names()
    return sorted({str(d) for d in descriptions if not is_bad_annotation(d)})


def window_labels_from_annotations(rule: LabelRule, label_names: Sequence[str], onsets_sec: np.ndarray,
                                   durations_sec: np.ndarray, descriptions: Sequence[str],
                                   starts_sec: np.ndarray, window_sec: float) -> np.ndarray:
    """Class index of each window from annotations, ``NO_LABEL`` where none covers half of it.

    Parameters
    ----------
    rule : LabelRule
        An ``annotations`` rule.
    label_names : sequence of str
        Class names (index order).
    onsets_sec, durations_sec : ndarray, shape (A,)
        Annotation onsets and durations in seconds from the start of the recording's data.
    descriptions : sequence of str, length A
    starts_sec : ndarray, shape (W,)
        Window start times in seconds.
    window_sec : float
        Window length in seconds.

    Returns
    -------
    labels : ndarray, shape (W,), int64
    """
    mapping = dict(rule.items) if rule.items else {d: d for d in label_names}
    index = {name: i for i, name in enumerate(label_names)}
    labels = np.full(len(starts_sec), NO_LABEL, dtype=np.int64)
    best = np.zeros(len(starts_sec))
    ends_sec = starts_sec + window_sec
    for onset, duration, desc in zip(onsets_sec, durations_sec, descriptions):
        name = mapping.get(str(desc))
        if name is None:
            continue
        overlap = np.clip(np.minimum(ends_sec, onset + duration) - np.maximum(starts_sec, onset), 0, None)
        better = (overlap > best) & (overlap >= 0.5 * window_sec)
        labels[better] = index[name]
        best[better] = overlap[better]
    return labels
