"""Real EEG in: turn recordings MNE can read into a windowed cumulative-band dataset.

Commands::

    python -m utils.data_eeg build --inputs PATH... --out DIR [--sfreq 100] [--window-sec 5] [--stride-sec 5]
        [--channels 1020-19|all] [--val-fraction 0.2] [--split-by subject|recording|time] [--split-gap-sec S]
        [--label-from RULE]
        [--bands 0.5-4,4-8,...] [--notch 50] [--flat-threshold 0.1] [--max-amplitude-uv 500] [--seed 0]
        [--jobs N] [--overwrite] [--continue-on-error]
    python -m utils.data_eeg build --from-manifest OLD_DIR --out NEW_DIR     # rebuild the same dataset
    python -m utils.data_eeg info DIR
    python -m utils.data_eeg download-eegmat [--subjects 0-35] [--data-dir DIR] [--out DIR]  # needs internet
    python -m utils.data_eeg locate-eegmat      # the recordings folder scripts/main.sh would use
    python -m utils.data_eeg download-eegbci --subjects 1-10 --runs 1,2 --out DIR   # needs internet

Each window ``<recording>_w<index>.npz`` holds ``signal`` (C, T) float32 µV (the channel-mapped, resampled
recording, not band-passed), ``cumulative_bands`` (K, C, T) float32 µV (stage k band-passed from the first
band's lower edge to band k's upper edge, filtered on the continuous recording), ``bands``, ``sfreq``,
``ch_names``, ``source``, ``start`` (sample at ``sfreq``), ``subject`` and ``label`` (-1 = none).

Splits (:mod:`utils.eeg_splits`): ``--split-by subject`` (default) or ``recording`` puts whole subjects or
recordings in val; ``--split-by time`` puts every recording in both splits: windows ending at or before
``b = floor((1 - val_fraction) * n_samples)`` go to train, windows starting at or after ``b + gap`` go to
val, those in between are dropped (``split_gap``); the gap (``--split-gap-sec``) defaults to the longer of
the window and the stage filter, so train and val windows share no sample and no filter support.

Python API (notebooks): :func:`build_dataset` with an :class:`IngestConfig`, :func:`rebuild_from_manifest`,
:func:`dataset_summary`; read a built dataset lazily with :class:`utils.eeg_dataset.EEGWindowDataset`.
The steps live in :mod:`utils.eeg_read` (formats), :mod:`utils.eeg_channels` (channel sets),
:mod:`utils.eeg_ingest` (one recording), :mod:`utils.eeg_build` (many recordings, resume, parallel),
:mod:`utils.eeg_splits`, :mod:`utils.eeg_labels`, :mod:`utils.eeg_manifest`, :mod:`utils.eeg_info` and
:mod:`utils.eeg_download`.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Sequence

from .cli import ArgumentParser, run_cli, setup_logging
from .eeg_bands import DEFAULT_BANDS, parse_bands
from .eeg_build import build_dataset, rebuild_from_manifest
from .eeg_channels import CHANNEL_SETS, DEFAULT_MAX_INTERPOLATE
from .eeg_info import dataset_summary, format_summary
from .eeg_ingest import IngestConfig
from .eeg_splits import SPLIT_BY
from .errors import UserError

__all__ = ["build_dataset", "rebuild_from_manifest", "dataset_summary", "IngestConfig", "main"]

logger = logging.getLogger(__name__)
PROG = "python -m utils.data_eeg"
_DEFAULTS = IngestConfig()


def _float_list(text: str, flag: str) -> tuple[float, ...]:
    if text.strip().lower() in ("", "none", "off"):
        return ()
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError:
        raise UserError(f"{flag} got {text!r}; expected comma-separated numbers in Hz, e.g. '50' or '50,100'") from None


def add_ingest_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of :class:`IngestConfig` (shared by ``build`` and ``download-eegbci``)."""
    d = _DEFAULTS
    g = parser.add_argument_group("signal")
    g.add_argument("--sfreq", type=float, default=d.sfreq, help="output sampling frequency (Hz); recordings are "
                   "resampled to it")
    g.add_argument("--window-sec", type=float, default=d.window_sec, help="window length (s)")
    g.add_argument("--stride-sec", type=float, default=None, help="hop between window starts (s); default: "
                   "--window-sec (no overlap)")
    g.add_argument("--bands", default=",".join(f"{lo:g}-{hi:g}" for lo, hi in DEFAULT_BANDS),
                   help="band edges in Hz; stage k is band-passed from the first edge to band k's upper edge")
    g.add_argument("--notch", default="none", help="mains frequencies to notch before resampling, e.g. 50 or 50,100")
    g = parser.add_argument_group("channels")
    g.add_argument("--channels", default=d.channels, help=f"channel set: {', '.join(CHANNEL_SETS)} ('1020-19' = "
                   "the 19 10-20 channels in a fixed order; 'all' = the recorded EEG channels, one layout across "
                   "inputs)")
    g.add_argument("--max-interpolate", type=int, default=DEFAULT_MAX_INTERPOLATE,
                   help="most missing channels of a named set to interpolate (spherical splines) per recording")
    g = parser.add_argument_group("window rejection")
    g.add_argument("--flat-threshold", type=float, default=d.flat_threshold_uv, help="drop a window when a "
                   "channel's full-band peak-to-peak is below this (µV); 0 disables")
    g.add_argument("--max-amplitude-uv", type=float, default=d.max_amplitude_uv, help="drop a window when any "
                   "full-band sample exceeds this |µV|; 0 disables")
    g = parser.add_argument_group("splits and labels")
    g.add_argument("--split-by", default=d.split_by, choices=SPLIT_BY,
                   help="'subject'/'recording': keep all windows of a subject (recording) in one split; 'time': "
                   "every recording in both splits, train = windows ending at or before b = floor((1 - "
                   "val_fraction) * n_samples), val = windows starting at or after b + --split-gap-sec, windows "
                   "in between dropped (reason split_gap)")
    g.add_argument("--val-fraction", type=float, default=d.val_fraction, help="fraction of subjects/recordings "
                   "in val (0 = train only); with --split-by time, the share of each recording's duration held "
                   "out at its end, in (0, 1)")
    g.add_argument("--val-groups", default="", help="comma-separated subjects (or recording ids) for val; "
                   "overrides --val-fraction (not with --split-by time)")
    g.add_argument("--split-gap-sec", type=float, default=None, help="--split-by time only: seconds between the "
                   "last train window's end and the first val window's start; default: the longer of --window-sec "
                   "and the stage filter (6.6 s for a 0.5 Hz lower edge), so that no train and val window share "
                   "samples or filter support (stages are filtered on the continuous recording)")
    g.add_argument("--seed", type=int, default=d.seed, help="seed of the split shuffle")
    g.add_argument("--subject-regex", default=None, help="regex on the recording path whose group 'subject' "
                   "(or group 1) is the subject id; default rule: BIDS sub-XX, EEGMMIDB S001R01 -> S001, "
                   "'Name_2' -> 'Name', else the file stem")
    g.add_argument("--label-from", default=d.label_from, help="'none', 'regex:PATTERN=NAME,...' (first pattern "
                   "found in the path names the class) or 'annotations[:DESCRIPTION=NAME,...]'")
    g = parser.add_argument_group("output")
    g.add_argument("--compress", default=d.compress, choices=("fast", "zlib", "none"), help="npz compression: "
                   "'fast' = entropy-only deflate (byte-reproducible, ~4x faster than 'zlib', same size), 'zlib' = "
                   "numpy savez_compressed, 'none' = stored (~8%% larger)")


def config_from_args(args: argparse.Namespace) -> IngestConfig:
    """An :class:`IngestConfig` from parsed ``build`` flags (validated)."""
    bands = parse_bands(args.bands)
    return IngestConfig(
        sfreq=args.sfreq, window_sec=args.window_sec,
        stride_sec=args.stride_sec if args.stride_sec is not None else args.window_sec,
        channels=args.channels, max_interpolate=args.max_interpolate,
        bands=tuple((float(lo), float(hi)) for lo, hi in bands), notch=_float_list(args.notch, "--notch"),
        flat_threshold_uv=args.flat_threshold, max_amplitude_uv=args.max_amplitude_uv, label_from=args.label_from,
        split_by=args.split_by, val_fraction=args.val_fraction,
        val_groups=tuple(g.strip() for g in args.val_groups.split(",") if g.strip()),
        split_gap_sec=args.split_gap_sec, seed=args.seed,
        subject_regex=args.subject_regex, compress=args.compress).validate()


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("run")
    g.add_argument("--jobs", type=int, default=1, help="worker processes over recordings")
    g.add_argument("--overwrite", action="store_true", help="replace the dataset already in --out (its train/ "
                   "val/ windows and manifest); without it a re-run resumes the same dataset or refuses another")
    g.add_argument("--continue-on-error", action="store_true", help="skip bad recordings (listed with the reason "
                   "in manifest.json) instead of stopping at the first")
    g.add_argument("--progress", choices=("auto", "on", "off"), default="auto", help="tqdm progress bar")
    g.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def build_parser() -> ArgumentParser:
    """The ``utils.data_eeg`` argument parser with its sub-commands."""
    parser = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="{build,info,download-eegmat,locate-eegmat,download-eegbci}",
                                parser_class=ArgumentParser)
    p = sub.add_parser("build", help="build (or resume) a dataset from recordings",
                       description="Build a windowed cumulative-band dataset (train/, val/, manifest.json) from "
                       "EEG recordings in any format MNE reads.")
    p.add_argument("--inputs", nargs="+", default=None, help="recording files, folders (searched recursively) or "
                   "glob patterns")
    p.add_argument("--from-manifest", default=None, help="rebuild the dataset described by this dataset root's "
                   "manifest.json (same settings and inputs; the settings flags below are then ignored)")
    p.add_argument("--out", required=True, help="dataset root to write")
    add_ingest_arguments(p)
    _add_run_arguments(p)
    p = sub.add_parser("info", help="summarise a dataset", description="Print windows per split, subjects, "
                       "channels, sfreq, bands, labels and µV statistics of a dataset root.")
    p.add_argument("root", help="dataset root (holding train/ val/ manifest.json)")
    p.add_argument("--max-windows", type=int, default=200, help="windows per split read for the µV statistics")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    from .eeg_download import add_download_parser, add_eegmat_parser

    add_eegmat_parser(sub, add_ingest_arguments, _add_run_arguments)
    sub.add_parser("locate-eegmat", help="print the eegmat recordings folder the main job would use",
                   description="Print the folder of eegmat recordings found by the lookup order ($EEGVAR_DATA, "
                   "~/eegvar_data/physionet-eegmat, ../shared/data/physionet-eegmat) and, on stderr, the rule "
                   "that found it.")
    add_download_parser(sub, add_ingest_arguments, _add_run_arguments)
    return parser


def _progress(value: str) -> bool | None:
    return {"auto": None, "on": True, "off": False}[value]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m utils.data_eeg``; returns the exit code."""
    args = build_parser().parse_args(argv)
    setup_logging(getattr(args, "verbose", False))
    if args.command == "build":
        run = dict(jobs=args.jobs, overwrite=args.overwrite, progress=_progress(args.progress))
        if args.from_manifest:
            if args.inputs:
                raise UserError("--from-manifest and --inputs are exclusive; the manifest lists the inputs")
            manifest = rebuild_from_manifest(args.from_manifest, args.out, **run)
        else:
            if not args.inputs:
                raise UserError("build needs --inputs PATH... (or --from-manifest DIR)")
            manifest = build_dataset(args.inputs, args.out, config_from_args(args),
                                     continue_on_error=args.continue_on_error, **run)
        _print_built(args.out, manifest)
    elif args.command == "info":
        summary = dataset_summary(args.root, max_windows=args.max_windows)
        print(json.dumps(summary, indent=1) if args.json else format_summary(summary))
    elif args.command == "download-eegmat":
        from .eeg_download import run_eegmat_download

        paths, manifest = run_eegmat_download(args, config_from_args(args))
        if manifest is not None:
            _print_built(args.out, manifest)
        else:
            print(json.dumps({"recordings": len(paths), "folder": os.path.dirname(paths[0]) if paths else None}))
    elif args.command == "locate-eegmat":
        from .eeg_data_home import locate_eegmat

        found = locate_eegmat()
        print(f"eegmat recordings: {found.path} (found by: {found.source})", file=sys.stderr)
        print(found.path)
    elif args.command == "download-eegbci":
        from .eeg_download import run_download

        _print_built(args.out, run_download(args, config_from_args(args)))
    return 0


def _print_built(out: str, manifest: dict) -> None:
    counts = manifest["counts"]
    print(json.dumps({"out": os.path.abspath(out), "train_windows": counts["train"]["windows"],
                      "val_windows": counts["val"]["windows"], "dropped": manifest["dropped"],
                      "skipped": len(manifest["skipped"]), "label_names": manifest["label_names"]}))


if __name__ == "__main__":
    run_cli(main, PROG)
