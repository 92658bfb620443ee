"""``download-eegbci``: fetch PhysioNet's EEG Motor Movement/Imagery dataset with MNE, then build from it.

For users with internet. A thin layer over :func:`mne.datasets.eegbci.load_data` (MNE's own
downloader, which caches under ``~/mne_data`` or ``--data-dir``); the build step is the ordinary
:func:`utils.eeg_build.build_dataset`. Runs 1 and 2 are the eyes-open and eyes-closed baselines, so
the default label rule names them; for the task runs use ``--label-from annotations:T0=rest,T1=...``.

Example::

    python -m utils.data_eeg download-eegbci --subjects 1-20 --runs 1,2 --out datasets/eegbci100
"""
from __future__ import annotations

import argparse
import logging
from typing import Callable

from .errors import UserError

logger = logging.getLogger(__name__)

EEGBCI_SUBJECTS = range(1, 110)
EEGBCI_RUNS = range(1, 15)
DEFAULT_EEGBCI_LABELS = r"regex:R01\.[A-Za-z]+$=eyes_open,R02\.[A-Za-z]+$=eyes_closed"


def parse_int_ranges(text: str, flag: str, allowed: range) -> list[int]:
    """``'1-3,7'`` -> ``[1, 2, 3, 7]``, checked against ``allowed``.

    Raises
    ------
    UserError
        For malformed text or numbers outside ``allowed``.
    """
    values: list[int] = []
    try:
        for part in text.replace(" ", "").split(","):
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                values.extend(range(lo, hi + 1))
            elif part:
                values.append(int(part))
    except ValueError:
        raise UserError(f"{flag} got {text!r}; expected numbers and ranges such as '1-10,12'") from None
    bad = [v for v in values if v not in allowed]
    if not values or bad:
        raise UserError(f"{flag} got {text!r}; values must lie in {allowed.start}-{allowed.stop - 1}"
                        + (f" (out of range: {bad[:5]})" if bad else ""))
    return sorted(set(values))


def add_download_parser(sub: argparse._SubParsersAction, add_ingest_arguments: Callable,
                        add_run_arguments: Callable) -> None:
    """Register the ``download-eegbci`` sub-command on ``sub``."""
    p = sub.add_parser("download-eegbci", help="fetch EEGBCI (PhysioNet EEGMMIDB) with MNE and build a dataset",
                       description=__doc__.split("\n\n")[0] + " Needs internet on the first run.")
    p.add_argument("--subjects", default="1-10", help="subjects to fetch, e.g. '1-10,15' (1-109)")
    p.add_argument("--runs", default="1,2", help="runs to fetch (1-14); 1 = eyes open, 2 = eyes closed baseline")
    p.add_argument("--data-dir", default=None, help="where MNE caches the EDF files (default: MNE's, ~/mne_data)")
    p.add_argument("--out", required=True, help="dataset root to write")
    add_ingest_arguments(p)
    add_run_arguments(p)
    p.set_defaults(label_from=DEFAULT_EEGBCI_LABELS)


def fetch_eegbci(subjects: list[int], runs: list[int], data_dir: str | None = None) -> list[str]:
    """Download (or find in MNE's cache) the EEGBCI EDF files; return their paths.

    Raises
    ------
    UserError
        When the download fails (e.g. no internet), with MNE's reason.
    """
    import mne

    try:
        paths = mne.datasets.eegbci.load_data(subjects, runs, path=data_dir, update_path=False)
    except (OSError, RuntimeError, ValueError) as err:  # pooch/requests errors derive from these
        raise UserError(f"download-eegbci: fetching subjects {subjects[:5]}... runs {runs} failed "
                        f"({type(err).__name__}: {str(err)[:200]}); check the internet connection or --data-dir") \
            from None
    return [str(p) for p in paths]


def run_download(args: argparse.Namespace, config) -> dict:
    """Fetch the requested subjects and runs, then build the dataset at ``args.out``; return the manifest."""
    from .eeg_build import build_dataset

    subjects = parse_int_ranges(args.subjects, "--subjects", EEGBCI_SUBJECTS)
    runs = parse_int_ranges(args.runs, "--runs", EEGBCI_RUNS)
    paths = fetch_eegbci(subjects, runs, args.data_dir)
    logger.info("EEGBCI: %d file(s) for %d subject(s), runs %s", len(paths), len(subjects), runs)
    progress = {"auto": None, "on": True, "off": False}[args.progress]
    return build_dataset(paths, args.out, config, jobs=args.jobs, overwrite=args.overwrite,
                         continue_on_error=args.continue_on_error, progress=progress)
