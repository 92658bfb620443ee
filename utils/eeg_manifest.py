"""``manifest.json``: how a dataset was made, so it can be resumed, rebuilt and compared (docs/design.md §5).

Top-level keys written by the builder:

``format``            ``"eeg-var-dataset/1"``
``code_version``      :func:`utils.project_info.code_version` of the last build step
``settings``          every setting that shapes the data (:class:`utils.eeg_ingest.IngestConfig` as a dict)
``split_rule``        the split rule in words
``label_names``       class names in index order (read by :func:`utils.eeg_dataset.label_names`)
``ch_names``          the output channel names in order
``inputs``            one entry per input recording: path, sha256, size, recording id, subject, split,
                      label, status (``pending``/``done``/``skipped``), reason, windows, dropped counts,
                      channel mapping
``counts``            per split: windows, recordings, subjects, hours, windows per label
``dropped``           windows dropped per reason (``bad_annotation``, ``flat``, ``amplitude``, ``unlabeled``;
                      ``split_gap`` with ``--split-by time`` only)

With ``--split-by time`` a recording's ``split`` is ``"both"``; a done entry adds ``time_split``
(``boundary_sec``, ``gap_sec``, ``val_start_sec`` and the same in samples at the output rate) and
``per_split`` (``train``/``val``: ``n_windows``, ``windows_per_label``, ``span_sec``), and its
``window_files`` is ``{"train": [...], "val": [...]}``. Every such recording (and subject) counts in both
splits' ``counts``; ``hours`` is then the span of each part (train: ``[0, boundary)``, val:
``[val_start, end)``), the gap counting in neither.
``skipped``           ``[{"path", "reason"}]`` for recordings left out (``--continue-on-error``)
"""
from __future__ import annotations

import json
import os
import tempfile
from collections import Counter

from .eeg_schema import MANIFEST_NAME
from .eeg_splits import BOTH
from .errors import DatasetError

MANIFEST_FORMAT = "eeg-var-dataset/1"
DROP_REASONS: tuple[str, ...] = ("bad_annotation", "flat", "amplitude", "unlabeled")
#: drop reason of a window in the guard gap of ``--split-by time`` (listed only by such builds)
SPLIT_GAP = "split_gap"


def manifest_path(root: str) -> str:
    """``root/manifest.json``."""
    return os.path.join(root, MANIFEST_NAME)


def load_manifest(root: str) -> dict | None:
    """The manifest of ``root`` as a dict, ``None`` when there is none.

    Kept free of torch (unlike :func:`utils.eeg_dataset.read_manifest`) so that building does not
    import it.

    Raises
    ------
    DatasetError
        If the file exists but is not a JSON object.
    """
    path = manifest_path(root)
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            manifest = json.load(fh)
    except (OSError, json.JSONDecodeError) as err:
        raise DatasetError(f"{path}: unreadable manifest ({err}); restore it, or rebuild with --overwrite") from None
    if not isinstance(manifest, dict):
        raise DatasetError(f"{path}: expected a JSON object, got {type(manifest).__name__}; rebuild with --overwrite")
    return manifest


def write_manifest(root: str, manifest: dict) -> None:
    """Write ``root/manifest.json`` atomically (temporary file, fsync, rename)."""
    os.makedirs(root, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-manifest-", suffix=".json", dir=root)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(manifest, fh, indent=1, sort_keys=False)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, manifest_path(root))
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def summarise(inputs: list[dict], label_names: list[str]) -> tuple[dict, dict, list[dict]]:
    """Per-split counts, dropped-window totals and the skipped list from the manifest's input entries."""
    counts: dict[str, dict] = {}
    for split in ("train", "val"):
        done = [e for e in inputs if e.get("status") == "done" and e.get("split") in (split, BOTH)]
        # a recording in both splits (--split-by time) contributes its part of this split
        parts = [(e.get("per_split") or {}).get(split, {}) if e.get("split") == BOTH else e for e in done]
        per_label: Counter = Counter()
        for part in parts:
            for key, n in (part.get("windows_per_label") or {}).items():
                per_label[key] += n
        seconds = sum(p.get("span_sec", 0.0) if e.get("split") == BOTH else e.get("duration_sec", 0.0)
                      for e, p in zip(done, parts))
        counts[split] = {
            "windows": int(sum(p.get("n_windows", 0) for p in parts)),
            "recordings": len(done),
            "subjects": len({e.get("subject") for e in done}),
            "hours": round(seconds / 3600, 4),
            "windows_per_label": dict(sorted(per_label.items())),
        }
    extra = sorted({r for e in inputs for r in (e.get("dropped") or {}) if r not in DROP_REASONS})
    dropped = {reason: int(sum((e.get("dropped") or {}).get(reason, 0) for e in inputs))
               for reason in DROP_REASONS + tuple(extra)}
    skipped = [{"path": e["path"], "reason": e.get("reason", "")} for e in inputs if e.get("status") == "skipped"]
    return counts, dropped, skipped
