"""Finding recordings on disk and opening them with MNE, whatever their format.

- :func:`find_recordings` expands ``--inputs`` (files, folders searched recursively, glob patterns)
  into a sorted list of recording files, skipping companion files (``.fdt``, Nihon Kohden's
  ``.PNT``/``.LOG``..., BrainVision's ``.vmrk``/``.eeg``) that MNE reads through their main file.
- :func:`open_recording` reads one recording with :func:`mne.io.read_raw`, with the format quirks
  handled: Neuroscan CNT needs ``data_format="int16"``; ANT Neuro CNT (same extension) needs the
  optional ``antio`` package and is refused with that reason when it is absent.

Every failure is a :class:`RecordingError` naming the file, so the builder can stop with one line or
skip the file and list the reason in the manifest (``--continue-on-error``).
"""
from __future__ import annotations

import glob
import hashlib
import importlib.util
import logging
import os
from typing import TYPE_CHECKING, Sequence

from .errors import UserError

if TYPE_CHECKING:  # pragma: no cover
    import mne

logger = logging.getLogger(__name__)

#: Main-file extensions of the EEG formats :func:`mne.io.read_raw` understands (lower case), looked for when
#: a folder or glob is given. Other formats MNE reads (e.g. FieldTrip ``.mat``) work when passed as files.
RECORDING_EXTENSIONS: tuple[str, ...] = (
    ".edf", ".bdf", ".gdf", ".fif", ".fif.gz", ".set", ".vhdr", ".ahdr", ".cnt", ".eeg", ".nxe", ".data", ".cdt",
    ".nedf", ".lay",
)
#: Formats stored as a folder (EGI MFF, CTF, MEF3): the folder is the recording and is not searched inside.
FOLDER_EXTENSIONS: tuple[str, ...] = (".mff", ".ds", ".mefd")
# Files that only accompany a main file and are read through it.
_COMPANION_EXTENSIONS = (".fdt", ".vmrk", ".amrk", ".pnt", ".log", ".11d", ".21e", ".cmt", ".cn2", ".evt", ".locs",
                         ".dpa", ".cdt.dpa", ".cdt.cef", ".elp", ".json", ".tsv", ".csv", ".txt", ".md")


class RecordingError(UserError):
    """One recording cannot be used; the message names the file and the reason."""


def _is_recording(path: str) -> bool:
    low = path.lower()
    if low.endswith(_COMPANION_EXTENSIONS):
        return False
    if low.endswith(".eeg"):
        # BrainVision keeps its samples in a .eeg next to the .vhdr; Nihon Kohden's main file is .EEG
        stem = os.path.splitext(path)[0]
        return not (os.path.exists(stem + ".vhdr") or os.path.exists(stem + ".VHDR"))
    return low.endswith(RECORDING_EXTENSIONS)


def find_recordings(inputs: Sequence[str], where: str = "--inputs") -> list[str]:
    """Expand files, folders (recursively) and glob patterns into sorted absolute recording paths.

    Raises
    ------
    UserError
        If an input matches nothing, or nothing at all is found.
    """
    found: set[str] = set()
    for item in inputs:
        if os.path.isdir(item) and item.rstrip("/").lower().endswith(FOLDER_EXTENSIONS):
            hits = [item.rstrip("/")]
        elif os.path.isdir(item):
            hits = []
            for folder, subfolders, files in os.walk(item):
                hits += [os.path.join(folder, d) for d in subfolders if d.lower().endswith(FOLDER_EXTENSIONS)]
                subfolders[:] = sorted(d for d in subfolders if not d.lower().endswith(FOLDER_EXTENSIONS))
                hits += [os.path.join(folder, f) for f in files if _is_recording(os.path.join(folder, f))]
            if not hits:
                raise UserError(f"{where}: folder {item} holds no recording MNE can read (looked for "
                                f"{', '.join(RECORDING_EXTENSIONS[:8])}...); pass recording files or another folder")
        elif os.path.isfile(item):
            hits = [item]
        else:
            hits = glob.glob(item, recursive=True)
            hits = [h for h in hits if os.path.isfile(h) and _is_recording(h)
                    or os.path.isdir(h) and h.rstrip("/").lower().endswith(FOLDER_EXTENSIONS)]
            if not hits:
                raise UserError(f"{where}: {item!r} is not a file, folder or matching glob pattern; check the path")
        found.update(os.path.abspath(h) for h in hits)
    if not found:
        raise UserError(f"{where}: no recording found in {list(inputs)}")
    return sorted(found)


def file_sha256(path: str, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes; for a folder recording (.mff, .ds), of its files' names and bytes."""
    digest = hashlib.sha256()
    files = [path] if not os.path.isdir(path) else sorted(
        os.path.join(d, f) for d, _, names in os.walk(path) for f in names)
    for name in files:
        if name != path:
            digest.update(os.path.relpath(name, path).encode("utf-8") + b"\0")
        with open(name, "rb") as fh:
            while block := fh.read(chunk):
                digest.update(block)
    return digest.hexdigest()


def _cnt_flavour(path: str) -> str:
    """'neuroscan' or 'ant' for a .cnt file (ANT's is a RIFF/RF64 container)."""
    with open(path, "rb") as fh:
        magic = fh.read(4)
    return "ant" if magic in (b"RIFF", b"RF64") else "neuroscan"


def open_recording(path: str, preload: bool = False) -> "mne.io.BaseRaw":
    """Open one recording with MNE.

    Parameters
    ----------
    path : str
        The recording's main file.
    preload : bool
        Load the samples now (``True``) or only the header (``False``).

    Returns
    -------
    mne.io.BaseRaw

    Raises
    ------
    RecordingError
        Naming ``path`` for a missing optional reader, an unknown format, or an unreadable or truncated
        file.
    """
    import mne

    if not os.path.exists(path):
        raise RecordingError(f"{path}: file not found")
    low = path.lower()
    try:
        if low.endswith(".cnt"):
            if _cnt_flavour(path) == "ant":
                if importlib.util.find_spec("antio") is None:
                    raise RecordingError(f"{path}: ANT Neuro .cnt needs the optional package 'antio', which is "
                                         "not installed; install it (pip install antio) or leave this file out")
                raw = mne.io.read_raw_ant(path, preload=preload, verbose="error")
            else:
                # port: Neuroscan CNT's default data_format='auto' misreads 16-bit files as 32-bit garbage
                raw = mne.io.read_raw_cnt(path, data_format="int16", preload=preload, verbose="error")
        else:
            raw = mne.io.read_raw(path, preload=preload, verbose="error")
    except RecordingError:
        raise
    except (ValueError, RuntimeError, OSError, KeyError, IndexError, EOFError, TypeError, NotImplementedError,
            AssertionError, UnicodeDecodeError) as err:
        text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if "Unsupported file type" in text or "Could not read file" in text or "not supported" in text.lower():
            raise RecordingError(f"{path}: not a recording format MNE can read ({text}); convert it to EDF/FIF "
                                 "or leave it out") from None
        raise RecordingError(f"{path}: unreadable or truncated recording ({type(err).__name__}: {text[:200]}); "
                             "check the file or leave it out") from None
    if raw.n_times < 2 or raw.info["sfreq"] <= 0:
        raise RecordingError(f"{path}: recording holds {raw.n_times} samples at {raw.info['sfreq']} Hz; "
                             "nothing to ingest")
    return raw
