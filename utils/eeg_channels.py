"""Channel sets, robust channel-name matching, non-EEG typing and missing-channel interpolation.

Shape letters: C channels, T time samples.

A foundation model needs one input layout across datasets (docs/design.md §6). This module holds:

- :data:`CHANNEL_SETS`: named layouts. ``'1020-19'`` is the 19 scalp channels of the 10-20 system in
  the one order used everywhere (:data:`CHANNELS_1020_19`); ``'all'`` keeps a recording's own EEG
  channels.
- :func:`canonical_name`: maps a recorded label to a standard name, robust to case, ``EEG `` prefixes,
  ``-REF``/``-LE`` style reference suffixes, EEGMMIDB's trailing dots, and the old 10-20 names
  (T3/T4/T5/T6 = T7/T8/P7/P8).
- :func:`non_eeg_type`: recognises channels that readers wrongly type as EEG (ECG, EOG, EMG, ear and
  mastoid references such as ``A2-A1``, triggers, accelerometers, ground ``E``, status).
- :func:`prepare_channels`: retypes, picks, renames and orders a :class:`mne.io.Raw`'s channels for a
  channel set, interpolating a few missing channels with spherical splines from the standard 10-20
  montage, and refusing with a clear error when too many are missing.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import logging
import re
from typing import TYPE_CHECKING, Sequence

from .errors import UserError

if TYPE_CHECKING:  # pragma: no cover
    import mne

logger = logging.getLogger(__name__)

#: The 19 channels of the 10-20 system, in the order every dataset built with ``--channels 1020-19`` uses.
CHANNELS_1020_19: tuple[str, ...] = (
    "Fp1", "Fp2", "F7", "F3", "Fz", "F4", "F8",
    "T7", "C3", "Cz", "C4", "T8",
    "P7", "P3", "Pz", "P4", "P8",
    "O1", "O2",
)

#: Named channel sets; ``None`` means "the recording's own EEG channels" (one layout across inputs).
CHANNEL_SETS: dict[str, tuple[str, ...] | None] = {"1020-19": CHANNELS_1020_19, "all": None}

#: Old 10-20 names and their modern (10-10) equivalents.
OLD_TO_NEW_NAMES: dict[str, str] = {"T3": "T7", "T4": "T8", "T5": "P7", "T6": "P8"}

#: Default number of channels of a named set that may be interpolated before a recording is refused.
DEFAULT_MAX_INTERPOLATE = 3

# Reference suffixes appended by recording systems ("Fp1-REF" in TUH, "Fp1-LE" linked ears, ...).
_REF_SUFFIX = re.compile(r"[-_ ]?(ref|le|re|ar|avg|av|a1a2|a1|a2|m1|m2|lm|rm|cz)$", re.IGNORECASE)
_TYPE_PREFIX = re.compile(r"^(eeg|eeg-|eeg_)\s*", re.IGNORECASE)

# Patterns on the lower-cased, prefix-free label (see :func:`non_eeg_type`).
_NON_EEG_RULES: tuple[tuple[str, re.Pattern], ...] = (
    ("ecg", re.compile(r"^(ecg|ekg)|[\s_-](ecg|ekg)$|^(heart|cardiac)")),
    ("eog", re.compile(r"^(eog|veog|heog|veogr|veogl|heogr|heogl|loc|roc|hpos|vpos)\d*([\s_-].*)?$|eog")),
    ("emg", re.compile(r"^(emg|chin|leg|lleg|rleg|submental)\d*([\s_-].*)?$|emg")),
    ("resp", re.compile(r"^(resp|thor|abdo|abdomen|airflow|flow|nasal|spo2|sao2|pleth)")),
    ("stim", re.compile(r"^(trigger|trig|status|sti\d*|stim|event|events|marker|markers|annotations?)$")),
    ("misc", re.compile(r"^(acc|accel|accelerometer|gyro|ergo|x|y|z)[\s_-]?(\d+|x|y|z|left|right)?$"
                        r"|^acc|^ergo|^photic|^light|^temp|^dc\d*$|^\$")),
)
# Reference and ground electrodes (ear lobes, mastoids, Nihon Kohden's ground 'E', bipolar ear refs).
_REFERENCE_NAMES = {"a1", "a2", "m1", "m2", "e", "ref", "gnd", "ground", "left_ear", "right_ear", "leftear",
                    "rightear", "a1-a2", "a2-a1", "m1-m2", "m2-m1", "a1+a2", "x1", "x2"}


@dataclasses.dataclass
class ChannelMapping:
    """How a recording's channels were mapped onto a channel set.

    Attributes
    ----------
    ch_names : list of str
        Final channel names, in output order.
    retyped : dict
        Recorded label -> MNE channel type, for channels a reader typed EEG that are not scalp EEG.
    renamed : dict
        Recorded label -> canonical name, for channels whose label changed.
    interpolated : list of str
        Channels of the set that were missing and filled by spherical-spline interpolation.
    """

    ch_names: list[str]
    retyped: dict[str, str]
    renamed: dict[str, str]
    interpolated: list[str]


@functools.lru_cache(maxsize=1)
def _montage_name() -> str:
    import mne

    # port: MNE 1.13 renamed 'standard_1020' to 'colin27_1020' (same positions); older MNE only has the former
    return "colin27_1020" if "colin27_1020" in mne.channels.get_builtin_montages() else "standard_1020"


@functools.lru_cache(maxsize=1)
def _standard_lookup() -> dict[str, str]:
    """Lower-cased standard 10-20/10-10 name -> properly cased name."""
    import mne

    names = mne.channels.make_standard_montage(_montage_name()).ch_names
    lookup = {n.lower(): n for n in names}
    for old, new in OLD_TO_NEW_NAMES.items():
        lookup[old.lower()] = new
    return lookup


def _strip_label(label: str) -> str:
    text = label.strip().rstrip(".").strip()
    text = _TYPE_PREFIX.sub("", text) if text.lower() != "eeg" else text
    return text.strip()


@functools.lru_cache(maxsize=4096)
def canonical_name(label: str) -> str:
    """The standard name of a recorded channel label, or the cleaned label when it is not a 10-20 name.

    Removes surrounding space, trailing dots (EEGMMIDB ``'Fc5.'``), an ``EEG`` prefix, and a reference
    suffix (``-REF``, ``-LE``, ``-A1``...) when what remains is a standard electrode; matches case-
    insensitively against the 10-20/10-10 montage and maps T3/T4/T5/T6 to T7/T8/P7/P8.

    Examples
    --------
    >>> canonical_name("EEG T3"), canonical_name("FP1-REF"), canonical_name("Fc5.")
    ('T7', 'Fp1', 'FC5')
    """
    text = _strip_label(label)
    lookup = _standard_lookup()
    if text.lower() in lookup:
        return lookup[text.lower()]
    without_ref = _REF_SUFFIX.sub("", text).rstrip(".").strip()
    if without_ref and without_ref.lower() in lookup:
        return lookup[without_ref.lower()]
    return text


def non_eeg_type(label: str, all_labels: Sequence[str] = ()) -> str | None:
    """The MNE channel type of a channel a reader labelled EEG that is not scalp EEG, else ``None``.

    Parameters
    ----------
    label : str
        The recorded channel label.
    all_labels : sequence of str
        Every label of the recording. BioSemi-style layouts (``A1``..``A32``, ``B1``..) use ``A1``/``A2``
        as scalp electrodes, so those are only treated as ear references when no ``A3`` exists.

    Returns
    -------
    str | None
        ``'ecg'``, ``'eog'``, ``'emg'``, ``'resp'``, ``'stim'`` or ``'misc'`` (references, grounds,
        accelerometers), or ``None`` for scalp EEG.
    """
    raw = label.strip()
    low = raw.lower().rstrip(".")
    text = _strip_label(raw).lower()
    # EDF's "TYPE LABEL" convention: "ECG ECG", "EOG Left"
    first = low.split()[0] if low.split() else low
    if first in ("ecg", "ekg", "eog", "emg", "resp"):
        return {"ekg": "ecg"}.get(first, first)
    for kind, pattern in _NON_EEG_RULES:
        if pattern.search(text):
            return kind
    biosemi = any(_strip_label(n).lower() == "a3" for n in all_labels)
    if text in _REFERENCE_NAMES and not (biosemi and text in ("a1", "a2")):
        return "misc"
    if re.fullmatch(r"(a|m)[12][-+ ]?(a|m)?[12]?", text) and not biosemi:
        return "misc"
    return None


def check_channel_set(name: str, where: str = "--channels") -> str:
    """Return ``name`` if it is a known channel set, else raise a :class:`UserError` with a suggestion."""
    if name in CHANNEL_SETS:
        return name
    close = difflib.get_close_matches(name, list(CHANNEL_SETS), n=1, cutoff=0.5)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise UserError(f"{where} got {name!r}; allowed: {', '.join(repr(k) for k in CHANNEL_SETS)}.{hint}")


def retype_non_eeg(raw: "mne.io.BaseRaw") -> dict[str, str]:
    """Retype, in place, the channels of ``raw`` typed EEG that are not scalp EEG; return label -> type."""
    types = raw.get_channel_types()
    retyped = {}
    for label, kind in zip(raw.ch_names, types):
        if kind != "eeg":
            continue
        new = non_eeg_type(label, raw.ch_names)
        if new is not None:
            retyped[label] = new
    if retyped:
        raw.set_channel_types(retyped, on_unit_change="ignore", verbose=False)
    return retyped


def is_abc_layout(labels: Sequence[str]) -> bool:
    """True for BioSemi-style ``A1..A32, B1..`` labels: bank positions, not 10-20 names (their 'C3' is not C3)."""
    stripped = {_strip_label(n).upper() for n in labels}
    return {"A1", "A3", "A32", "B1"} <= stripped


def eeg_channels(raw: "mne.io.BaseRaw") -> list[tuple[str, str]]:
    """(recorded label, canonical name) of each EEG-typed channel of ``raw``, in recording order.

    Labels of a BioSemi ABC layout (:func:`is_abc_layout`) keep their own names: mapping their bank
    positions onto 10-20 names would put signals at the wrong electrodes.
    """
    name_of = _strip_label if is_abc_layout(raw.ch_names) else canonical_name
    return [(label, name_of(label)) for label, kind in zip(raw.ch_names, raw.get_channel_types()) if kind == "eeg"]


def plan_channels(raw: "mne.io.BaseRaw", channel_set: str, max_interpolate: int = DEFAULT_MAX_INTERPOLATE,
                  where: str = "") -> tuple[list[str], dict[str, str], list[str]]:
    """Decide, without loading data, which recorded channels feed which output channel.

    Parameters
    ----------
    raw : mne.io.BaseRaw
        A recording whose non-EEG channels were already retyped (:func:`retype_non_eeg`).
    channel_set : str
        A key of :data:`CHANNEL_SETS`.
    max_interpolate : int
        Most channels of a named set that may be missing (and interpolated).
    where : str
        The recording's path, for messages.

    Returns
    -------
    ch_names : list of str
        The output channel names in order.
    source : dict
        Output name -> recorded label, for channels present in the recording.
    missing : list of str
        Output names to interpolate.

    Raises
    ------
    UserError
        When the recording has no EEG channel, two labels map to one name, or more than
        ``max_interpolate`` channels of the set are missing.
    """
    pairs = eeg_channels(raw)
    if not pairs:
        raise UserError(f"{where}: no EEG channel found (channels: {raw.ch_names[:8]}...); "
                        "this recording cannot be used")
    by_name: dict[str, str] = {}
    for label, name in pairs:
        if name in by_name:
            raise UserError(f"{where}: channels {by_name[name]!r} and {label!r} both map to {name!r}; "
                            "remove one of them from the recording")
        by_name[name] = label
    wanted = CHANNEL_SETS[check_channel_set(channel_set)]
    if wanted is None:
        return [name for _, name in pairs], by_name, []
    if is_abc_layout(raw.ch_names):
        raise UserError(f"{where}: channel set '{channel_set}' needs 10-20 names but this recording uses BioSemi "
                        f"ABC labels ({', '.join(n for _, n in pairs[:4])}...), which are cap positions, not 10-20 "
                        "electrodes; use --channels all, or rename the channels to 10-20 names first")
    missing = [name for name in wanted if name not in by_name]
    if len(missing) == len(wanted):
        raise UserError(f"{where}: channel set '{channel_set}' needs {', '.join(wanted[:4])}... but none of the "
                        f"{len(pairs)} recorded EEG channel names is a 10-20 name (e.g. {pairs[0][0]!r}); store the "
                        "electrode names in the file, or use --channels all")
    if len(missing) > max_interpolate:
        raise UserError(f"{where}: channel set '{channel_set}' needs {len(wanted)} channels but {len(missing)} "
                        f"are missing ({', '.join(missing[:8])}{'...' if len(missing) > 8 else ''}; recorded EEG: "
                        f"{', '.join(n for _, n in pairs[:10])}{'...' if len(pairs) > 10 else ''}); at most "
                        f"{max_interpolate} may be interpolated: raise --max-interpolate, use --channels all, "
                        "or leave this recording out")
    return list(wanted), {name: by_name[name] for name in wanted if name in by_name}, missing


def prepare_channels(raw: "mne.io.BaseRaw", channel_set: str, max_interpolate: int = DEFAULT_MAX_INTERPOLATE,
                     where: str = "", order: Sequence[str] | None = None) -> tuple["mne.io.BaseRaw", ChannelMapping]:
    """Retype, pick, rename, order and (if needed) interpolate the channels of a loaded recording.

    Parameters
    ----------
    raw : mne.io.BaseRaw
        A recording (loaded here after picking if not preloaded); modified in place and returned.
    channel_set : str
        ``'1020-19'`` or ``'all'`` (see :data:`CHANNEL_SETS`).
    max_interpolate : int
        Most channels of a named set that may be missing.
    where : str
        The recording's path, for messages.
    order : sequence of str | None
        With ``'all'``: the layout every recording must have (the dataset's channel names); the
        recording's channels are reordered to it. ``None`` keeps the recording's order.

    Returns
    -------
    raw : mne.io.BaseRaw
        Only the output channels, named and ordered as ``mapping.ch_names``.
    mapping : ChannelMapping

    Raises
    ------
    UserError
        As :func:`plan_channels`, or when the recording's layout differs from ``order``.
    """
    import mne
    import numpy as np

    retyped = retype_non_eeg(raw)
    ch_names, source, missing = plan_channels(raw, channel_set, max_interpolate, where)
    if order is not None:
        check_same_layout(ch_names, list(order), where, "the dataset's first recording")
        ch_names = list(order)
    raw.pick([source[name] for name in ch_names if name in source], verbose=False)
    renamed = {label: name for name, label in source.items() if label != name}
    if renamed:
        raw.rename_channels(renamed, verbose=False)
    if not raw.preload:
        raw.load_data(verbose=False)  # after the pick, so only the kept channels are read
    if missing:
        info = mne.create_info(missing, raw.info["sfreq"], ch_types="eeg")
        filler = mne.io.RawArray(np.zeros((len(missing), raw.n_times)), info, first_samp=raw.first_samp,
                                 verbose=False)
        raw.add_channels([filler], force_update_info=True)
        raw.info["bads"] = list(missing)
        montage = mne.channels.make_standard_montage(_montage_name())
        raw.set_montage(montage, on_missing="raise", verbose=False)
        raw.interpolate_bads(reset_bads=True, mode="accurate", origin="auto", verbose=False)
        logger.info("%s: interpolated %s from %d neighbours (spherical splines)", where, missing,
                    len(ch_names) - len(missing))
    raw.reorder_channels(ch_names)
    return raw, ChannelMapping(ch_names=list(ch_names), retyped=retyped, renamed=renamed, interpolated=missing)


def check_same_layout(names: Sequence[str], reference: Sequence[str], where: str, reference_where: str) -> None:
    """Raise a :class:`UserError` unless ``names`` holds the same channels as ``reference`` (any order)."""
    if set(names) == set(reference) and len(names) == len(reference):
        return
    extra = [n for n in names if n not in reference]
    absent = [n for n in reference if n not in names]
    raise UserError(f"{where}: with --channels all every recording needs one channel layout, but this one has "
                    f"{len(names)} EEG channels (extra: {extra[:6]}, missing: {absent[:6]}) against "
                    f"{len(reference)} in {reference_where}; use --channels 1020-19, or build one dataset per "
                    "layout")
