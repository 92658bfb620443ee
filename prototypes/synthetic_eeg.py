"""Deterministic synthetic EEG with known band content, written as a dataset root in the real npz schema.

Shape letters: C channels, T time samples, K stages.

Each "recording" mixes three sources into C channels (one random spatial gain per source and channel),
over a 1/f background and white noise, all in µV. Two sources are *non-sinusoidal* oscillators with a
fixed waveform shape, so their harmonics land in higher bands and are predictable from the fundamental,
as cross-frequency structure is in real EEG; a model that adds one band at a time has something to learn:

=====  ===================================================================  ==========================
band   content (``phi_d``: 1.6-2.4 Hz, ``phi_a``: 9.2-11.3 Hz, slowly drifting)  predictable from
=====  ===================================================================  ==========================
delta  ``20 cos(phi_d)``                                                     (the given first stage)
theta  ``7 cos(3 phi_d)`` (delta's 3rd harmonic) + a free ``3 cos(phi_t)``      delta (the harmonic)
alpha  ``a cos(phi_a)``, ``a`` = 8 or 16 µV by class                           nothing (free phase)
beta   ``0.4 a cos(2 phi_a)`` (alpha's 2nd harmonic)                          alpha
gamma  ``0.2 a cos(4 phi_a)`` (alpha's 4th harmonic)                          alpha
=====  ===================================================================  ==========================

Alpha power depends on the recording's class: label 0 ``low_alpha``, label 1 ``high_alpha`` (alternating
recordings), so the set also exercises class labels. Stages are computed with
:func:`utils.eeg_stages.cumulative_frequency_levels` on the *continuous* recording, whose first and last
:data:`EDGE_MARGIN_SEC` seconds are then dropped (filter transients) before cutting non-overlapping
windows. Recordings, not windows, are split into ``train/`` and ``val/`` (the last ones go to ``val``).

Command line::

    python -m prototypes.synthetic_eeg OUT [--channels 8] [--sfreq 100] [--window-sec 2] [--n-windows 160]
        [--windows-per-recording 8] [--val-fraction 0.25] [--seed 0] [--overwrite]
"""
from __future__ import annotations

import dataclasses
import glob
import json
import logging
import math
import os
import tempfile
from typing import Sequence

import numpy as np

from utils.cli import ArgumentParser, run_cli, setup_logging
from utils.eeg_bands import DEFAULT_BANDS, validate_bands
from utils.eeg_schema import MANIFEST_NAME, SPLITS, write_window
from utils.eeg_stages import cumulative_frequency_levels
from utils.errors import DatasetError, UserError
from utils.project_info import code_version

logger = logging.getLogger(__name__)

#: Seconds dropped at both ends of each continuous recording (the 0.5 Hz high-pass kernel is ~6.6 s long).
EDGE_MARGIN_SEC = 4.0
LABEL_NAMES: tuple[str, ...] = ("low_alpha", "high_alpha")
#: Peak amplitudes in µV (harmonics: relative to their fundamental), before per-channel gains (0.5-1.5).
AMPLITUDES_UV: dict[str, float] = {"delta": 20.0, "theta_harmonic": 0.35, "theta_free": 3.0, "alpha_low": 8.0,
                                   "alpha_high": 16.0, "beta_harmonic": 0.4, "gamma_harmonic": 0.2,
                                   "pink_noise_rms": 2.0, "white_noise_rms": 0.3}


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """How a synthetic dataset is made; stored in its ``manifest.json``.

    The harmonic amplitudes in :data:`AMPLITUDES_UV` are relative to their fundamental's amplitude.
    """

    n_channels: int = 8
    sfreq: float = 100.0
    window_sec: float = 2.0
    n_windows: int = 160
    windows_per_recording: int = 8
    val_fraction: float = 0.25
    seed: int = 0

    @property
    def window_samples(self) -> int:
        return int(round(self.window_sec * self.sfreq))

    @property
    def n_recordings(self) -> int:
        return math.ceil(self.n_windows / self.windows_per_recording)

    @property
    def n_val_recordings(self) -> int:
        return min(max(1, int(round(self.val_fraction * self.n_recordings))), self.n_recordings - 1)

    def validate(self) -> None:
        """Raise :class:`~utils.errors.UserError` naming the flag when a setting is impossible."""
        validate_bands(DEFAULT_BANDS, self.sfreq, where="--sfreq")
        if self.n_channels < 1:
            raise UserError(f"--channels: got {self.n_channels}, expected at least 1 channel")
        if self.window_samples < 16:
            raise UserError(f"--window-sec: {self.window_sec:g} s at {self.sfreq:g} Hz is {self.window_samples} "
                            "samples; use at least 16 samples (e.g. --window-sec 2)")
        if self.windows_per_recording < 1:
            raise UserError(f"--windows-per-recording: got {self.windows_per_recording}, expected >= 1")
        if self.n_windows < 2 or self.n_recordings < 2:
            raise UserError(f"--n-windows: {self.n_windows} windows at {self.windows_per_recording} per recording "
                            f"make {self.n_recordings} recording(s); train and val need one recording each, so "
                            f"use --n-windows >= {2 * self.windows_per_recording} or fewer --windows-per-recording")
        if not 0 < self.val_fraction < 1:
            raise UserError(f"--val-fraction: got {self.val_fraction}, expected a fraction in (0, 1)")


def _drifting_phase(rng: np.random.Generator, f0_hz: float, n_times: int, sfreq: float,
                    drift: float = 0.04) -> np.ndarray:
    """Phase (rad) of an oscillator whose frequency wanders smoothly within ``f0 * (1 +- drift)``."""
    n_knots = max(2, int(n_times / sfreq) + 2)
    knots = rng.uniform(-1.0, 1.0, n_knots)
    f_T = f0_hz * (1.0 + drift * np.interp(np.linspace(0, n_knots - 1, n_times), np.arange(n_knots), knots))
    return rng.uniform(0, 2 * np.pi) + 2 * np.pi * np.cumsum(f_T) / sfreq


def _pink_noise(rng: np.random.Generator, n_channels: int, n_times: int) -> np.ndarray:
    """Unit-RMS noise with a 1/f power spectrum, shape (C, T)."""
    spec_CF = np.fft.rfft(rng.standard_normal((n_channels, n_times)), axis=-1)
    freqs = np.arange(spec_CF.shape[-1], dtype=np.float64)
    freqs[0] = 1.0
    x_CT = np.fft.irfft(spec_CF / np.sqrt(freqs), n=n_times, axis=-1)
    return x_CT / x_CT.std(axis=-1, keepdims=True)


def synth_recording(config: SyntheticConfig, recording: int, n_times: int) -> tuple[np.ndarray, int]:
    """One continuous recording.

    Parameters
    ----------
    config : SyntheticConfig
    recording : int
        Recording index; with ``config.seed`` it fully determines the output.
    n_times : int
        Length in samples.

    Returns
    -------
    x_CT : ndarray, shape (C, T), float64, µV
    label : int
        0 (low alpha) or 1 (high alpha).
    """
    rng = np.random.default_rng([config.seed, recording])
    sfreq, amp = config.sfreq, AMPLITUDES_UV
    label = recording % 2
    phi_d = _drifting_phase(rng, rng.uniform(1.6, 2.4), n_times, sfreq)
    phi_t = _drifting_phase(rng, rng.uniform(5.0, 7.0), n_times, sfreq)
    phi_a = _drifting_phase(rng, rng.uniform(9.2, 11.3), n_times, sfreq, drift=0.02)
    a_alpha = amp["alpha_high"] if label else amp["alpha_low"]
    # Two non-sinusoidal sources (fixed waveform shapes, one spatial gain each), whose harmonics land in
    # higher bands and are therefore predictable from the fundamental, plus free (unpredictable) parts.
    sources = [
        amp["delta"] * (np.cos(phi_d) + amp["theta_harmonic"] * np.cos(3 * phi_d)),
        a_alpha * (np.cos(phi_a) + amp["beta_harmonic"] * np.cos(2 * phi_a)
                   + amp["gamma_harmonic"] * np.cos(4 * phi_a)),
        amp["theta_free"] * np.cos(phi_t),
    ]
    x_CT = np.zeros((config.n_channels, n_times))
    for s_T in sources:
        x_CT += rng.uniform(0.5, 1.5, (config.n_channels, 1)) * s_T[None]
    x_CT += amp["pink_noise_rms"] * _pink_noise(rng, config.n_channels, n_times)
    x_CT += amp["white_noise_rms"] * rng.standard_normal((config.n_channels, n_times))
    return x_CT, label


def _prepare_out(out: str, overwrite: bool) -> None:
    if os.path.exists(out) and not os.path.isdir(out):
        raise DatasetError(f"{out}: exists and is not a folder; choose another output folder")
    if os.path.isdir(out) and os.listdir(out):
        if not overwrite:
            raise DatasetError(f"{out}: folder is not empty; pass --overwrite to replace its dataset or choose "
                               "another output folder")
        for split in SPLITS:
            for path in glob.glob(os.path.join(out, split, "*.npz")):
                os.unlink(path)
        if os.path.exists(os.path.join(out, MANIFEST_NAME)):
            os.unlink(os.path.join(out, MANIFEST_NAME))
    os.makedirs(out, exist_ok=True)


def make_dataset(out: str, config: SyntheticConfig, overwrite: bool = False, progress: bool = False) -> dict:
    """Write a synthetic dataset root (``train/``, ``val/``, ``manifest.json``) and return the manifest.

    Raises
    ------
    UserError
        If a setting is impossible, or ``out`` is not empty and ``overwrite`` is False (nothing is written).
    """
    config.validate()
    _prepare_out(out, overwrite)
    win = config.window_samples
    margin = int(round(EDGE_MARGIN_SEC * config.sfreq))
    n_rec, n_val = config.n_recordings, config.n_val_recordings
    ch_names = [f"S{c:02d}" for c in range(config.n_channels)]
    counts = {split: 0 for split in SPLITS}
    recordings: dict[str, list[str]] = {split: [] for split in SPLITS}
    iterator = range(n_rec)
    if progress:
        from tqdm import tqdm
        iterator = tqdm(iterator, desc="recordings", unit="rec")
    for rec in iterator:
        n_win = min(config.windows_per_recording, config.n_windows - rec * config.windows_per_recording)
        x_CT, label = synth_recording(config, rec, n_win * win + 2 * margin)
        stages_KCT = cumulative_frequency_levels(x_CT, config.sfreq, DEFAULT_BANDS)
        split = "val" if rec >= n_rec - n_val else "train"
        name = f"rec{rec:03d}"
        recordings[split].append(name)
        for w in range(n_win):
            start = margin + w * win
            write_window(os.path.join(out, split, f"{name}_w{w:04d}.npz"), x_CT[:, start:start + win],
                         stages_KCT[:, :, start:start + win], DEFAULT_BANDS, config.sfreq, ch_names=ch_names,
                         source=name, start=start, subject=f"sim{rec:03d}", label=label)
            counts[split] += 1
    manifest = {
        "kind": "synthetic", "generator": "prototypes.synthetic_eeg", "code_version": code_version(),
        "config": dataclasses.asdict(config), "sfreq": config.sfreq, "window_sec": config.window_sec,
        "stride_sec": config.window_sec, "window_samples": win, "bands": [list(b) for b in DEFAULT_BANDS],
        "ch_names": ch_names, "units": "uV", "amplitudes_uV": AMPLITUDES_UV,
        "filter": {"method": "fir", "phase": "zero", "fir_window": "hamming", "fir_design": "firwin",
                   "applied_to": "continuous recording", "edge_margin_sec": EDGE_MARGIN_SEC},
        "split_rule": "by recording (the last recordings go to val)", "recordings": recordings,
        "label_names": list(LABEL_NAMES), "counts": counts,
    }
    fd, tmp = tempfile.mkstemp(prefix=".manifest-", suffix=".json", dir=out)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(manifest, fh, indent=2)
    os.replace(tmp, os.path.join(out, MANIFEST_NAME))
    logger.info("wrote %d train and %d val windows (%d channels, %d samples at %g Hz) to %s", counts["train"],
                counts["val"], config.n_channels, win, config.sfreq, out)
    return manifest


def build_parser() -> ArgumentParser:
    """The argument parser of the generator (both ``--a-b`` and ``--a_b`` spellings are accepted)."""
    d = SyntheticConfig()
    p = ArgumentParser(prog="python -m prototypes.synthetic_eeg",
                       description="Write a deterministic synthetic EEG dataset (train/, val/, manifest.json) in the "
                                   "project's npz window schema, with known, partly cross-frequency-coupled band "
                                   "content. Split by recording.")
    p.add_argument("out", help="output dataset root (must be empty or absent unless --overwrite)")
    p.add_argument("--channels", type=int, default=d.n_channels, help="number of EEG channels")
    p.add_argument("--sfreq", type=float, default=d.sfreq, help="sampling frequency in Hz (>= 100 for the "
                   "default bands up to 50 Hz)")
    p.add_argument("--window-sec", type=float, default=d.window_sec, help="window length in seconds")
    p.add_argument("--n-windows", type=int, default=d.n_windows, help="total number of windows (train + val)")
    p.add_argument("--windows-per-recording", type=int, default=d.windows_per_recording,
                   help="non-overlapping windows cut from each continuous recording")
    p.add_argument("--val-fraction", type=float, default=d.val_fraction, help="fraction of recordings for val/")
    p.add_argument("--seed", type=int, default=d.seed, help="random seed (same seed, same files)")
    p.add_argument("--overwrite", action="store_true", help="replace the dataset in a non-empty OUT folder")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the generator on ``argv`` (default ``sys.argv[1:]``); user mistakes raise ``UserError``."""
    args = build_parser().parse_args(argv)
    setup_logging()
    config = SyntheticConfig(n_channels=args.channels, sfreq=args.sfreq, window_sec=args.window_sec,
                             n_windows=args.n_windows, windows_per_recording=args.windows_per_recording,
                             val_fraction=args.val_fraction, seed=args.seed)
    make_dataset(args.out, config, overwrite=args.overwrite, progress=os.isatty(2))
    return 0


if __name__ == "__main__":
    run_cli(main, prog="synthetic_eeg")
