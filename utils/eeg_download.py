"""``download-eegbci`` and ``download-eegmat``: fetch public EEG datasets, then (optionally) build from them.

``download-eegmat`` fetches PhysioNet's "EEG During Mental Arithmetic Tasks" (the recordings the main
job trains on) file by file into the data folder of :mod:`utils.eeg_data_home`, checking every file's
SHA-256 before it takes its real name.

``download-eegbci`` fetches PhysioNet's EEG Motor Movement/Imagery dataset with MNE, then builds from it.

For users with internet. A thin layer over :func:`mne.datasets.eegbci.load_data` (MNE's own
downloader, which caches under ``~/mne_data`` or ``--data-dir``); the build step is the ordinary
:func:`utils.eeg_build.build_dataset`. Runs 1 and 2 are the eyes-open and eyes-closed baselines, so
the default label rule names them; for the task runs use ``--label-from annotations:T0=rest,T1=...``.

Example::

    python -m utils.data_eeg download-eegbci --subjects 1-20 --runs 1,2 --out datasets/eegbci100
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import os
import re
import shutil
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


# ---------------------------------------------------------------------------------------------- eegmat
EEGMAT_URL = "https://physionet.org/files/eegmat/1.0.0/"
EEGMAT_SUBJECTS = range(0, 36)
# SHA-256 of the published files we have verified ourselves (subjects 00-25 and subject-info.csv); the
# other files are checked against the SHA256SUMS.txt PhysioNet publishes beside them.
PINNED_SHA256_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "eegmat_sha256.txt")


def parse_sha256sums(text: str) -> dict[str, str]:
    """``'<hex>  [./]name'`` lines -> ``{name: hex}`` (blank lines and malformed lines ignored)."""
    sums: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.strip().split(None, 1)
        if len(parts) == 2 and re.fullmatch(r"[0-9a-fA-F]{64}", parts[0]):
            sums[os.path.basename(parts[1].lstrip("*"))] = parts[0].lower()
    return sums


def sha256_of(path: str) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def urllib_fetch(url: str, dest: str) -> None:
    """Download ``url`` to the file ``dest`` (the default fetcher; tests pass their own)."""
    import urllib.request

    with urllib.request.urlopen(url, timeout=60) as response, open(dest, "wb") as fh:  # noqa: S310 - fixed https URL
        shutil.copyfileobj(response, fh)


def fetch_eegmat(data_dir: str, subjects: list[int], fetch: Callable[[str, str], None] = urllib_fetch,
                 base_url: str = EEGMAT_URL) -> list[str]:
    """Download the eegmat recordings of ``subjects`` (and ``subject-info.csv``) into ``data_dir``, checked.

    Files already present with the right checksum are kept (a re-run fetches only what is missing). Each
    file is written to ``name.part`` and renamed only after its SHA-256 matches, so ``data_dir`` never holds
    a partial or corrupt recording under its real name.

    Returns
    -------
    list of str
        The paths of the recordings (``SubjectNN_1.edf``, ``SubjectNN_2.edf``), sorted.

    Raises
    ------
    UserError
        When a download fails (naming the URL) or a file's checksum differs (naming the file).
    """
    os.makedirs(data_dir, exist_ok=True)
    pinned = parse_sha256sums(open(PINNED_SHA256_FILE, encoding="utf-8").read())
    sums_part = os.path.join(data_dir, "SHA256SUMS.txt.part")
    _fetch_or_fail(fetch, base_url + "SHA256SUMS.txt", sums_part)
    with open(sums_part, encoding="utf-8") as fh:
        published = parse_sha256sums(fh.read())
    os.remove(sums_part)
    names = [f"Subject{s:02d}_{run}.edf" for s in subjects for run in (1, 2)] + ["subject-info.csv"]
    for name in names:
        expected = pinned.get(name) or published.get(name)
        if expected is None:
            raise UserError(f"download-eegmat: {name} is not listed in {base_url}SHA256SUMS.txt; cannot verify it")
        if name in pinned and name in published and published[name] != pinned[name]:
            raise UserError(f"download-eegmat: the published checksum of {name} ({published[name][:12]}...) differs "
                            f"from the one this project verified ({pinned[name][:12]}...); the dataset changed "
                            "upstream: nothing was written")
        final = os.path.join(data_dir, name)
        if os.path.exists(final) and sha256_of(final) == expected:
            continue
        part = final + ".part"
        _fetch_or_fail(fetch, base_url + name, part)
        got = sha256_of(part)
        if got != expected:
            os.remove(part)
            raise UserError(f"download-eegmat: {name} has SHA-256 {got[:12]}..., expected {expected[:12]}... "
                            "(corrupt or truncated download); re-run to fetch it again")
        os.replace(part, final)
    return sorted(os.path.join(data_dir, n) for n in names if n.endswith(".edf"))


def _fetch_or_fail(fetch: Callable[[str, str], None], url: str, dest: str) -> None:
    try:
        fetch(url, dest)
    except OSError as err:  # URLError, HTTPError, timeouts and disk errors all derive from OSError
        if os.path.exists(dest):
            os.remove(dest)
        raise UserError(f"download-eegmat: fetching {url} failed ({type(err).__name__}: {str(err)[:200]}); "
                        "check the internet connection, or copy the files into --data-dir by hand") from None


def add_eegmat_parser(sub: argparse._SubParsersAction, add_ingest_arguments: Callable,
                      add_run_arguments: Callable) -> None:
    """Register the ``download-eegmat`` sub-command on ``sub``."""
    from .eeg_data_home import DATA_ENV, EEGMAT_LABELS, default_eegmat_dir

    p = sub.add_parser("download-eegmat", help="fetch PhysioNet's 'EEG During Mental Arithmetic Tasks' (checked by "
                       "SHA-256) into the data folder the main job reads",
                       description="Fetch PhysioNet's 'EEG During Mental Arithmetic Tasks' (Zyma et al. 2019; "
                       "36 subjects, rest and mental arithmetic, 19 channels at 500 Hz, ~180 MB, ODC-By 1.0) and "
                       "check every file's SHA-256. With --out, also build a dataset from it. Needs internet.")
    p.add_argument("--subjects", default="0-35", help="subjects to fetch, e.g. '0-9,12' (0-35)")
    p.add_argument("--data-dir", default=None, help=f"where the EDF files go (default: ${DATA_ENV} when set, "
                   f"else {default_eegmat_dir()}, where scripts/main.sh looks)")
    p.add_argument("--out", default=None, help="also build a dataset root here (default: only fetch)")
    add_ingest_arguments(p)
    add_run_arguments(p)
    p.set_defaults(label_from=EEGMAT_LABELS)


def run_eegmat_download(args: argparse.Namespace, config, fetch: Callable[[str, str], None] | None = None) \
        -> tuple[list[str], dict | None]:
    """Fetch the requested eegmat subjects; build the dataset when ``args.out`` is set. Returns (paths, manifest)."""
    from .eeg_build import build_dataset
    from .eeg_data_home import DATA_ENV, default_eegmat_dir

    subjects = parse_int_ranges(args.subjects, "--subjects", EEGMAT_SUBJECTS)
    data_dir = args.data_dir or os.environ.get(DATA_ENV, "").strip() or default_eegmat_dir()
    paths = fetch_eegmat(data_dir, subjects, fetch=fetch or urllib_fetch)
    logger.info("eegmat: %d recording(s) of %d subject(s) in %s", len(paths), len(subjects), data_dir)
    if not args.out:
        return paths, None
    progress = {"auto": None, "on": True, "off": False}[args.progress]
    return paths, build_dataset(paths, args.out, config, jobs=args.jobs, overwrite=args.overwrite,
                                continue_on_error=args.continue_on_error, progress=progress)
