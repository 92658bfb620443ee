"""One recording in, windows out: the ingestion settings and the per-recording steps.

Shape letters: K stages, C channels, T time samples (of the continuous recording or of a window).

Per recording (:func:`process_recording`): open with MNE -> retype non-EEG channels -> pick, rename,
order and interpolate the channel set -> load -> optional notch (at the recorded rate) -> resample to
``sfreq`` -> µV -> every cumulative stage on the continuous recording
(:func:`utils.eeg_stages.cumulative_frequency_levels`, computed in one FFT pass by
:mod:`utils.eeg_fastfilter`) -> cut windows -> drop windows overlapping ``BAD``/``EDGE``
annotations, with a flat channel or with implausible amplitude -> write ``<recording>_w<index>.npz``
atomically into ``train/`` or ``val/`` (with ``--split-by time`` the window's place in the recording
decides, :func:`utils.eeg_splits.time_split_windows`; windows in the guard gap are dropped first, as
``split_gap``).

:func:`survey_recording` does the cheap checks on the header only (format, channels, sampling rate,
length, label), so a bad input fails in seconds, before any heavy work starts.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
from typing import Any, Sequence

import numpy as np

from .eeg_bands import DEFAULT_BANDS, validate_bands
from .eeg_channels import (DEFAULT_MAX_INTERPOLATE, check_channel_set, plan_channels, prepare_channels,
                           retype_non_eeg)
from .eeg_labels import (LabelRule, is_bad_annotation, parse_label_rule, recording_label,
                         window_labels_from_annotations)
from .eeg_fastfilter import cumulative_stages_one_pass
from .eeg_manifest import DROP_REASONS, SPLIT_GAP
from .eeg_read import RecordingError, file_sha256, open_recording
from .eeg_schema import NO_LABEL, SPLITS, write_window
from .eeg_splits import BOTH, SPLIT_BY, check_subject_regex, recording_stem, subject_of, time_split_windows
from .errors import UserError

logger = logging.getLogger(__name__)
#: ``--compress`` value -> ``write_window(compress=...)``.
COMPRESS_MODES: dict[str, bool | str] = {"fast": "fast", "zlib": True, "none": False}


@dataclasses.dataclass(frozen=True)
class IngestConfig:
    """Every setting that shapes a dataset; stored in the manifest as ``settings``.

    Attributes
    ----------
    sfreq : float
        Output sampling frequency in Hz.
    window_sec, stride_sec : float
        Window length and hop in seconds (``stride_sec < window_sec`` gives overlapping windows).
    channels : str
        Channel set: ``'1020-19'`` or ``'all'`` (:mod:`utils.eeg_channels`).
    max_interpolate : int
        Most channels of a named set that may be missing and interpolated per recording.
    bands : tuple of (float, float)
        Band edges in Hz; stage k is band-passed from ``bands[0][0]`` to ``bands[k][1]``.
    notch : tuple of float
        Mains frequencies (Hz) to notch at the recorded rate before resampling; empty for none.
    flat_threshold_uv : float
        A window is dropped when a channel's peak-to-peak amplitude (full-band stage) is below this
        (µV); 0 disables.
    max_amplitude_uv : float
        A window is dropped when any full-band sample exceeds this absolute value (µV); 0 disables.
    label_from : str
        Label rule (:mod:`utils.eeg_labels`).
    split_by : str
        ``'subject'``, ``'recording'`` or ``'time'`` (:mod:`utils.eeg_splits`).
    val_fraction : float
        Fraction of groups in ``val``; with ``'time'``, the fraction of each recording's duration held out
        at its end, in (0, 1).
    val_groups : tuple of str
        Explicit validation subjects/recordings (overrides ``val_fraction``; not with ``'time'``).
    split_gap_sec : float | None
        ``'time'`` only: seconds between the train part's end and the val part's start; ``None`` = the
        longer of the window and the stage filter (:func:`split_gap_samples`). Left out of
        :meth:`to_dict` when ``None``, so manifests of the other rules are unchanged.
    seed : int
        Seed of the split shuffle.
    subject_regex : str | None
        Pattern for subject ids (:mod:`utils.eeg_splits`).
    compress : str
        npz writing: ``'fast'`` (entropy-only deflate, byte-reproducible), ``'zlib'`` (numpy's
        ``savez_compressed``) or ``'none'``.
    """

    sfreq: float = 100.0
    window_sec: float = 5.0
    stride_sec: float = 5.0
    channels: str = "1020-19"
    max_interpolate: int = DEFAULT_MAX_INTERPOLATE
    bands: tuple[tuple[float, float], ...] = DEFAULT_BANDS
    notch: tuple[float, ...] = ()
    flat_threshold_uv: float = 0.1
    max_amplitude_uv: float = 500.0
    label_from: str = "none"
    split_by: str = "subject"
    val_fraction: float = 0.2
    val_groups: tuple[str, ...] = ()
    split_gap_sec: float | None = None
    seed: int = 0
    subject_regex: str | None = None
    compress: str = "fast"

    @property
    def window_samples(self) -> int:
        return int(round(self.window_sec * self.sfreq))

    @property
    def stride_samples(self) -> int:
        return int(round(self.stride_sec * self.sfreq))

    def validate(self) -> "IngestConfig":
        """Check every setting before any work starts; return ``self``.

        Raises
        ------
        UserError
            Naming the flag, the value received and what is expected.
        """
        if not (math.isfinite(self.sfreq) and self.sfreq > 0):
            raise UserError(f"--sfreq got {self.sfreq}; expected a positive sampling frequency in Hz")
        validate_bands(self.bands, self.sfreq, where="--bands/--sfreq")
        for flag, value in (("--window-sec", self.window_sec), ("--stride-sec", self.stride_sec)):
            if not (math.isfinite(value) and value > 0):
                raise UserError(f"{flag} got {value}; expected a positive number of seconds")
            samples = value * self.sfreq
            if abs(samples - round(samples)) > 1e-6:
                raise UserError(f"{flag} {value:g} s at --sfreq {self.sfreq:g} Hz is {samples:g} samples; choose a "
                                "value that gives a whole number of samples")
        if self.window_samples < 2:
            raise UserError(f"--window-sec {self.window_sec:g} gives {self.window_samples} sample(s); use a longer window")
        check_channel_set(self.channels)
        if self.max_interpolate < 0:
            raise UserError(f"--max-interpolate got {self.max_interpolate}; expected 0 or more")
        for freq in self.notch:
            if not (math.isfinite(freq) and freq > 0):
                raise UserError(f"--notch got {list(self.notch)}; expected positive frequencies in Hz, e.g. '50' or "
                                "'50,100'")
        for flag, value in (("--flat-threshold", self.flat_threshold_uv),
                            ("--max-amplitude-uv", self.max_amplitude_uv)):
            if not (math.isfinite(value) and value >= 0):
                raise UserError(f"{flag} got {value}; expected a non-negative amplitude in µV (0 disables the check)")
        if 0 < self.max_amplitude_uv <= self.flat_threshold_uv:
            raise UserError(f"--max-amplitude-uv {self.max_amplitude_uv:g} must exceed --flat-threshold "
                            f"{self.flat_threshold_uv:g}; every window would be dropped")
        parse_label_rule(self.label_from)
        if self.split_by not in SPLIT_BY:
            raise UserError(f"--split-by got {self.split_by!r}; allowed: {', '.join(SPLIT_BY)}")
        if not self.val_groups and not 0 <= self.val_fraction < 1:
            raise UserError(f"--val-fraction got {self.val_fraction}; expected a fraction in [0, 1)")
        if self.split_by == "time":
            if self.val_groups:
                raise UserError(f"--val-groups {','.join(self.val_groups)} names whole subjects/recordings, but "
                                "--split-by time puts the end of every recording in val; drop --val-groups or use "
                                "--split-by subject/recording")
            if not 0 < self.val_fraction < 1:
                raise UserError(f"--split-by time needs --val-fraction in (0, 1) (the share of each recording held "
                                f"out at its end), got {self.val_fraction:g}; pass e.g. --val-fraction 0.2, or use "
                                "--split-by subject/recording for a train-only dataset")
        if self.split_gap_sec is not None:
            if self.split_by != "time":
                raise UserError(f"--split-gap-sec applies to --split-by time only (got --split-by {self.split_by}); "
                                "drop it")
            samples = self.split_gap_sec * self.sfreq
            if not (math.isfinite(self.split_gap_sec) and self.split_gap_sec >= 0) or \
                    abs(samples - round(samples)) > 1e-6:
                raise UserError(f"--split-gap-sec got {self.split_gap_sec:g}; expected 0 or more seconds that give a "
                                f"whole number of samples at --sfreq {self.sfreq:g} Hz")
        check_subject_regex(self.subject_regex)
        if self.compress not in COMPRESS_MODES:
            raise UserError(f"--compress got {self.compress!r}; allowed: {', '.join(COMPRESS_MODES)}")
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types (bands as lists)."""
        out = dataclasses.asdict(self)
        out["bands"] = [[float(lo), float(hi)] for lo, hi in self.bands]
        out["notch"] = [float(f) for f in self.notch]
        out["val_groups"] = list(self.val_groups)
        if out["split_gap_sec"] is None:
            del out["split_gap_sec"]  # manifests of builds without it stay as they were (resume compares them)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "IngestConfig":
        """Inverse of :meth:`to_dict`; unknown keys are an error (a manifest from another version)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise UserError(f"manifest settings hold unknown key(s) {unknown}; this dataset was built by another "
                            "version of utils.data_eeg")
        kwargs = dict(data)
        if "bands" in kwargs:
            kwargs["bands"] = tuple((float(lo), float(hi)) for lo, hi in kwargs["bands"])
        for key in ("notch", "val_groups"):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)


@dataclasses.dataclass
class RecordingPlan:
    """What the survey learned about one recording (header only). Plain types; sent to workers."""

    path: str
    sha256: str
    size: int
    recording: str = ""
    subject: str = ""
    subject_rule: str = ""
    sfreq_orig: float = 0.0
    duration_sec: float = 0.0
    ch_names: list[str] = dataclasses.field(default_factory=list)
    descriptions: list[str] = dataclasses.field(default_factory=list)
    split: str = ""
    label: int = NO_LABEL
    source: str = ""


def survey_recording(path: str, config: IngestConfig, rule: LabelRule, label_names: Sequence[str]) -> RecordingPlan:
    """Check one recording from its header and return its plan (no samples are loaded).

    Raises
    ------
    RecordingError
        For an unreadable file, a sampling rate below twice the top band edge, a recording shorter than
        one window, an unmet channel set, or a path no label pattern matches.
    """
    raw = open_recording(path, preload=False)
    size = os.path.getsize(path) if os.path.isfile(path) else \
        sum(os.path.getsize(os.path.join(d, f)) for d, _, names in os.walk(path) for f in names)
    plan = RecordingPlan(path=path, sha256=file_sha256(path), size=size)
    plan.subject, plan.subject_rule = subject_of(path, config.subject_regex)
    plan.sfreq_orig = float(raw.info["sfreq"])
    plan.duration_sec = raw.n_times / plan.sfreq_orig
    top = float(config.bands[-1][1])
    if plan.sfreq_orig < 2 * top:
        raise RecordingError(f"{path}: recorded at {plan.sfreq_orig:g} Hz, below twice the top band edge "
                             f"({top:g} Hz), so the top stage would be empty; lower the top edge with --bands or "
                             "leave this recording out")
    if plan.duration_sec < config.window_sec:
        raise RecordingError(f"{path}: lasts {plan.duration_sec:.2f} s, shorter than one window "
                             f"(--window-sec {config.window_sec:g}); use a shorter window or leave it out")
    retype_non_eeg(raw)
    try:
        plan.ch_names, _, _ = plan_channels(raw, config.channels, config.max_interpolate, where=path)
    except RecordingError:
        raise
    except UserError as err:
        raise RecordingError(str(err)) from None
    plan.descriptions = sorted({str(d) for d in raw.annotations.description})
    if rule.kind == "regex":
        try:
            plan.label = recording_label(rule, path, label_names)
        except UserError as err:
            raise RecordingError(str(err)) from None
    return plan


def _safe_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]", "_", text) or "recording"


def assign_recording_ids(plans: Sequence[RecordingPlan]) -> None:
    """Give each plan a unique, stable, readable id and ``source``.

    The id (window file prefix) is the file stem, plus a content hash where stems repeat. ``source``
    (stored in every window) is the path relative to the inputs' common folder: the bare file name
    when all recordings share one folder, ``sub-01/eeg/rec.edf`` style otherwise, so it is unique.
    """
    folders = [os.path.dirname(p.path) for p in plans]
    common = os.path.commonpath(folders) if folders else ""
    for plan in plans:
        plan.source = os.path.relpath(plan.path, common).replace(os.sep, "/")
    stems = [_safe_id(recording_stem(p.path)) for p in plans]
    used: set[str] = set()
    for plan, stem in zip(plans, stems):
        rid = stem if stems.count(stem) == 1 else f"{stem}-{plan.sha256[:8]}"
        n = 2
        base = rid
        while rid in used:
            rid, n = f"{base}-{n}", n + 1
        used.add(rid)
        plan.recording = rid


def window_filename(recording: str, index: int) -> str:
    """``<recording>_w<index:06d>.npz``; ``index`` counts candidate windows, so drops leave gaps."""
    return f"{recording}_w{index:06d}.npz"


def load_continuous(plan: RecordingPlan, config: IngestConfig,
                    order: Sequence[str] | None = None) -> tuple[np.ndarray, list[str], dict[str, Any]]:
    """Read and preprocess one recording up to the stage filter.

    Returns
    -------
    x_CT : ndarray, shape (C, T), float64, µV at ``config.sfreq``
    ch_names : list of str
    info : dict
        ``retyped``, ``renamed``, ``interpolated`` and ``notch_applied`` (plain types).

    Raises
    ------
    RecordingError
        When reading or mapping fails.
    """
    raw = open_recording(plan.path, preload=False)
    try:
        raw, mapping = prepare_channels(raw, config.channels, config.max_interpolate, where=plan.path, order=order)
        notch = [f for f in config.notch if f < raw.info["sfreq"] / 2]
        if notch:
            raw.notch_filter(notch, verbose="error")
        if abs(raw.info["sfreq"] - config.sfreq) > 1e-9:
            raw.resample(config.sfreq, verbose="error")
        x_CT = raw.get_data(units="uV")
    except RecordingError:
        raise
    except UserError as err:
        raise RecordingError(str(err)) from None
    except (ValueError, RuntimeError, OSError, EOFError, IndexError) as err:
        raise RecordingError(f"{plan.path}: unreadable or truncated recording: its header reads but its samples do "
                             f"not ({type(err).__name__}: {str(err).strip()[:200]}); check the file or leave it out") \
            from None
    info = dict(retyped=mapping.retyped, renamed=mapping.renamed, interpolated=mapping.interpolated,
                notch_applied=[float(f) for f in notch])
    return x_CT, mapping.ch_names, info


def window_starts(n_times: int, window_samples: int, stride_samples: int) -> np.ndarray:
    """Start samples of every full window: ``0, stride, 2*stride, ...`` while the window fits."""
    if n_times < window_samples:
        return np.zeros(0, dtype=np.int64)
    return np.arange(0, n_times - window_samples + 1, stride_samples, dtype=np.int64)


def split_gap_samples(config: IngestConfig) -> int:
    """The guard gap of ``--split-by time`` in samples: ``--split-gap-sec``, else its default.

    Why the default is the longer of the window and the stage filter: the stages of a window are
    filtered on the continuous recording, so a stage sample at ``t`` depends on input samples within
    half a filter length of ``t`` (the zero-phase FIR of :mod:`utils.eeg_fastfilter` spans ``N`` taps,
    6.6 s for a 0.5 Hz lower edge). A train window ending at ``b`` and a val window starting at
    ``b + gap`` share no input sample through the stage filter only when ``gap >= N - 1`` (any gap >= 0
    already keeps their own samples apart). The window length is the floor for short filters (a higher
    lower band edge): EEG stays correlated over seconds, and one window is the span the model sees.
    (Resampling and the notch act on the whole recording too; their kernels are far shorter.)
    """
    if config.split_gap_sec is not None:
        return int(round(config.split_gap_sec * config.sfreq))
    from .eeg_fastfilter import stage_kernels

    taps = max(len(h) for h in stage_kernels(config.sfreq, config.bands, n_times=1 << 30))
    return max(config.window_samples, taps - 1)


def process_recording(plan: RecordingPlan, config: IngestConfig, out_root: str, label_names: Sequence[str],
                      order: Sequence[str] | None = None) -> dict[str, Any]:
    """Turn one recording into window files under ``out_root/<plan.split>/``.

    With ``plan.split == 'both'`` (``--split-by time``) each window goes to ``train/`` or ``val/`` by its
    place in the recording, and windows in the guard gap are dropped (``split_gap``).

    Returns
    -------
    dict
        ``n_windows``, ``n_candidates``, ``dropped`` (per reason), ``windows_per_label``, ``ch_names``
        and the channel mapping info, as plain types for the manifest; with ``'both'`` also
        ``time_split`` (boundary, gap and val start in seconds and samples) and ``per_split`` (per
        split: ``n_windows``, ``windows_per_label``, ``span_sec``).

    Raises
    ------
    RecordingError
        When the recording cannot be read, mapped or filtered.
    """
    x_CT, ch_names, info = load_continuous(plan, config, order)
    try:
        # same result as utils.eeg_stages.cumulative_frequency_levels (tested), one FFT for all stages
        stages_KCT = cumulative_stages_one_pass(x_CT, config.sfreq, config.bands, out_dtype=np.float32)
    except UserError as err:
        raise RecordingError(f"{plan.path}: {err}") from None
    x_CT = x_CT.astype(np.float32)
    starts = window_starts(x_CT.shape[1], config.window_samples, config.stride_samples)
    if len(starts) == 0:
        raise RecordingError(f"{plan.path}: {x_CT.shape[1]} samples after resampling, shorter than one window "
                             f"({config.window_samples} samples); use a shorter window or leave it out")
    rule = parse_label_rule(config.label_from)
    starts_sec = starts / config.sfreq
    bad_window = np.zeros(len(starts), dtype=bool)
    if rule.kind == "annotations" or any(is_bad_annotation(d) for d in plan.descriptions):
        onsets, durations, descriptions = _annotations_sec(plan)
        for onset, duration, desc in zip(onsets, durations, descriptions):
            if is_bad_annotation(desc):  # MNE's convention: BAD_* / EDGE spans are excluded from analysis
                bad_window |= (starts_sec < onset + duration) & (starts_sec + config.window_sec > onset)
    if rule.kind == "annotations":
        labels = window_labels_from_annotations(rule, label_names, onsets, durations, descriptions, starts_sec,
                                                config.window_sec)
    else:
        labels = np.full(len(starts), plan.label, dtype=np.int64)
    n_times = x_CT.shape[1]
    by_time = plan.split == BOTH
    if by_time:
        gap = split_gap_samples(config)
        split_of, boundary, val_start = time_split_windows(starts, config.window_samples, n_times,
                                                           config.val_fraction, gap)
        splits = list(SPLITS)
    else:
        split_of, splits = np.full(len(starts), plan.split, dtype=object), [plan.split]
    for split in splits:
        os.makedirs(os.path.join(out_root, split), exist_ok=True)
    bands_K2 = np.asarray(config.bands, dtype=np.float32)
    dropped = {reason: 0 for reason in DROP_REASONS + ((SPLIT_GAP,) if by_time else ())}
    per_label: dict[str, int] = {}
    split_labels: dict[str, dict[str, int]] = {split: {} for split in splits}
    n_written = 0
    win = config.window_samples
    for index, (start, label) in enumerate(zip(starts, labels)):
        full_CT = stages_KCT[-1, :, start:start + win]
        if not split_of[index]:  # in the guard gap of --split-by time: in neither split, whatever its content
            dropped[SPLIT_GAP] += 1
            continue
        if bad_window[index]:
            dropped["bad_annotation"] += 1
            continue
        if rule.kind == "annotations" and label == NO_LABEL:
            dropped["unlabeled"] += 1
            continue
        if config.flat_threshold_uv > 0 and np.ptp(full_CT, axis=1).min() < config.flat_threshold_uv:
            dropped["flat"] += 1
            continue
        if config.max_amplitude_uv > 0 and np.abs(full_CT).max() > config.max_amplitude_uv:
            dropped["amplitude"] += 1
            continue
        write_window(os.path.join(out_root, split_of[index], window_filename(plan.recording, index)),
                     x_CT[:, start:start + win], stages_KCT[:, :, start:start + win], bands_K2, config.sfreq,
                     ch_names=ch_names, source=plan.source or os.path.basename(plan.path), start=int(start),
                     subject=plan.subject,
                     label=int(label), compress=COMPRESS_MODES[config.compress], fsync=False)
        key = label_names[label] if label != NO_LABEL else "none"
        per_label[key] = per_label.get(key, 0) + 1
        split_labels[split_of[index]][key] = split_labels[split_of[index]].get(key, 0) + 1
        n_written += 1
    os.sync()  # one flush for all windows (per-file fsync costs ~6 ms each); the manifest marks them done after
    result = dict(n_windows=n_written, n_candidates=len(starts), dropped=dropped, windows_per_label=per_label,
                  ch_names=list(ch_names), **info)
    if by_time:
        sf = config.sfreq
        result["time_split"] = dict(boundary_sec=round(boundary / sf, 6), gap_sec=round(gap / sf, 6),
                                    val_start_sec=round(val_start / sf, 6), boundary_sample=boundary,
                                    val_start_sample=val_start, n_times=n_times)
        spans = {"train": boundary / sf, "val": max(n_times - val_start, 0) / sf}
        result["per_split"] = {split: dict(n_windows=int(sum(split_labels[split].values())),
                                           windows_per_label=dict(sorted(split_labels[split].items())),
                                           span_sec=round(spans[split], 6)) for split in splits}
    return result


def _annotations_sec(plan: RecordingPlan) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Annotation onsets (s, from the first sample), durations (s) and descriptions of a recording."""
    raw = open_recording(plan.path, preload=False)
    ann = raw.annotations
    first = raw.first_samp / raw.info["sfreq"]
    onsets = np.asarray(ann.onset, dtype=np.float64) - first if ann.orig_time is not None else \
        np.asarray(ann.onset, dtype=np.float64)
    return onsets, np.asarray(ann.duration, dtype=np.float64), [str(d) for d in ann.description]
