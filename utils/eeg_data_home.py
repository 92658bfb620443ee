"""Where the project finds its default recordings (PhysioNet "EEG During Mental Arithmetic Tasks").

Like MNE's sample data, the recordings live in one documented data folder,
``~/eegvar_data/physionet-eegmat``, which ``python -m utils.data_eeg download-eegmat`` fills. The main
job (``scripts/main.sh``) looks for recordings in this order and takes the first that exists:

1. ``--recordings PATH...`` on its command line;
2. the environment variable ``EEGVAR_DATA`` (a folder holding ``SubjectNN_1.edf``, ``SubjectNN_2.edf``);
3. the data folder ``~/eegvar_data/physionet-eegmat``;
4. ``../shared/data/physionet-eegmat`` next to the repository (the development layout).

``python -m utils.data_eeg locate-eegmat`` prints the folder found (and which rule found it).
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass

from .errors import UserError
from .project_info import REPO_ROOT

DATA_ENV = "EEGVAR_DATA"
EEGMAT_DIRNAME = "physionet-eegmat"
DEFAULT_DATA_HOME = os.path.join("~", "eegvar_data")
EEGMAT_LABELS = r"regex:_1\.edf$=rest,_2\.edf$=arithmetic"
# Validation subjects of the main job: fixed, so every run and every machine scores the same people.
DEFAULT_VAL_GROUPS = "Subject22,Subject23,Subject24,Subject25"


@dataclass(frozen=True)
class Located:
    """A recordings folder and the rule that found it (``'env'``, ``'data folder'``, ``'development layout'``)."""

    path: str
    source: str


def default_eegmat_dir() -> str:
    """The documented data folder for the eegmat recordings (``~/eegvar_data/physionet-eegmat``)."""
    return os.path.join(os.path.expanduser(DEFAULT_DATA_HOME), EEGMAT_DIRNAME)


def has_recordings(folder: str) -> bool:
    """True when ``folder`` holds at least one eegmat recording (``*_1.edf`` or ``*_2.edf``)."""
    return bool(glob.glob(os.path.join(glob.escape(folder), "*_[12].edf")))


def locate_eegmat(environ: dict[str, str] | None = None, repo_root: str = REPO_ROOT) -> Located:
    """Find the eegmat recordings by rules 2-4 of the module docstring (rule 1, ``--recordings``, is the caller's).

    Raises
    ------
    UserError
        When ``EEGVAR_DATA`` names a folder without recordings (it is never silently skipped), or when no
        rule finds any; the message says how to get them.
    """
    env = os.environ if environ is None else environ
    named = env.get(DATA_ENV, "").strip()
    if named:
        if not has_recordings(named):
            raise UserError(f"{DATA_ENV}={named} holds no eegmat recordings (SubjectNN_1.edf, SubjectNN_2.edf); "
                            f"fix the variable, unset it, or fill the folder with "
                            f"'python -m utils.data_eeg download-eegmat --data-dir {named}'")
        return Located(os.path.abspath(named), "env")
    home = default_eegmat_dir()
    if has_recordings(home):
        return Located(home, "data folder")
    dev = os.path.normpath(os.path.join(repo_root, "..", "shared", "data", EEGMAT_DIRNAME))
    if has_recordings(dev):
        return Located(dev, "development layout")
    raise UserError(f"no EEG recordings found: not in ${DATA_ENV}, not in {home}; fetch them (about 180 MB) with "
                    "'python -m utils.data_eeg download-eegmat', pass --recordings PATH..., or run the smoke test "
                    "with --synthetic")
