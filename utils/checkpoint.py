"""Checkpoint files for the prototype, the band tokenizer and VAR: atomic, checksummed, safe to load.

- Writes go to a temporary file in the same folder, are fsync'ed, then renamed over the target
  (``os.replace``), so a kill or a full disk mid-write never damages the existing file. The file being
  replaced is first hard-linked to ``<name>.prev.pth``, so one older good state always survives. The
  temporary file of a write that was killed is deleted by the next successful save of the same file.
- Each checkpoint carries ``meta``: format version, code version, a SHA-256 over its content, the time
  it was written, and the run's config as plain types.
- Loading uses ``torch.load(..., weights_only=True)``: a file that would run code under plain pickle
  is refused. A truncated or corrupt newest file is reported and the ``.prev`` file is used instead.
"""
from __future__ import annotations

import datetime
import errno
import glob
import hashlib
import io
import logging
import os
import pickle
import tempfile
from typing import Any, Iterable, Mapping

import torch

from .errors import CheckpointError
from .project_info import code_version

logger = logging.getLogger(__name__)

CKPT_FORMAT = 1
META_KEY = "meta"


def previous_path(path: str) -> str:
    """Where the state replaced by the last save is kept: ``x.pth`` -> ``x.prev.pth``."""
    stem, ext = os.path.splitext(path)
    return f"{stem}.prev{ext or '.pth'}"


def _update_hash(h: "hashlib._Hash", obj: Any) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, Mapping):
        h.update(b"{")
        for key in sorted(obj, key=str):
            h.update(repr(key).encode())
            _update_hash(h, obj[key])
        h.update(b"}")
    elif isinstance(obj, (list, tuple)):
        h.update(b"[" if isinstance(obj, list) else b"(")
        for item in obj:
            _update_hash(h, item)
        h.update(b"]")
    else:
        h.update(repr(obj).encode())


def state_checksum(state: Mapping[str, Any]) -> str:
    """SHA-256 over every value of ``state`` except ``meta`` (tensors by dtype, shape and bytes)."""
    h = hashlib.sha256()
    _update_hash(h, {k: v for k, v in state.items() if k != META_KEY})
    return h.hexdigest()


def save_checkpoint(path: str, state: Mapping[str, Any], config: Mapping[str, Any] | None = None,
                    keep_previous: bool = True) -> None:
    """Write ``state`` (plain types and tensors only) atomically to ``path``.

    Parameters
    ----------
    path : str
        Target file, e.g. ``local_output/ar-ckpt-last.pth``.
    state : mapping
        Anything ``torch.load(weights_only=True)`` can read back: tensors, dicts, lists, str, numbers.
    config : mapping | None
        The run's configuration (plain types), stored as ``meta['config']``.
    keep_previous : bool
        Keep the replaced file as ``<name>.prev.pth``.

    Raises
    ------
    CheckpointError
        If the file cannot be written (e.g. disk full, read-only folder); existing files are untouched.
    """
    payload = dict(state)
    payload[META_KEY] = {
        "format": CKPT_FORMAT,
        "code_version": code_version(),
        "saved_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "config": dict(config) if config is not None else None,
        "checksum": state_checksum(payload),
    }
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        if keep_previous and os.path.exists(path):
            prev = previous_path(path)
            if os.path.exists(prev):
                os.unlink(prev)
            os.link(path, prev)
        os.replace(tmp, path)
        tmp = None
        _fsync_dir(folder)
        _remove_stale_tmp(folder, os.path.basename(path))
    except OSError as err:
        reason = "disk full" if err.errno == errno.ENOSPC else err.strerror or str(err)
        raise CheckpointError(f"{path}: could not write checkpoint ({reason}); the previous checkpoint files are "
                              "intact; free space or choose another output folder") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def _remove_stale_tmp(folder: str, name: str) -> None:
    """Delete temporary files of ``name`` left by an earlier save that was killed before its rename."""
    for stale in glob.glob(os.path.join(glob.escape(folder), f".{glob.escape(name)}.*.tmp")):
        try:
            os.unlink(stale)
            logger.info("removed %s, left by an interrupted checkpoint write", stale)
        except OSError:
            pass


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _load_verified(path: str, map_location: str | torch.device) -> dict:
    try:
        with open(path, "rb") as fh:
            data = fh.read()
        state = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: checkpoint not found; check the path") from None
    except pickle.UnpicklingError as err:
        raise CheckpointError(f"{path}: refused to load: the file holds objects other than tensors and plain "
                              f"types ({(str(err).splitlines() or [''])[0][:160]}); only load checkpoints you trust, and "
                              "re-save them as plain state dicts") from None
    except MemoryError:
        raise
    except IsADirectoryError:
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file; pass the .pth/.pt file") from None
    except Exception as err:  # noqa: BLE001  (torch/pickle raise many types for damaged files: EOFError, IndexError, ...)
        if isinstance(err, OSError) and not os.path.isfile(path):
            raise CheckpointError(f"{path}: cannot read checkpoint ({err.strerror or err})") from None
        detail = (str(err).splitlines() or [""])[0][:160]
        what = "empty file" if os.path.isfile(path) and os.path.getsize(path) == 0 else \
            f"{type(err).__name__}{': ' + detail if detail else ''}"
        raise CheckpointError(f"{path}: truncated or corrupt checkpoint ({what})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a dict checkpoint, found {type(state).__name__}")
    meta = state.get(META_KEY)
    if isinstance(meta, dict) and meta.get("checksum"):
        if state_checksum(state) != meta["checksum"]:
            raise CheckpointError(f"{path}: checksum mismatch: the file is corrupt")
    return state


def load_checkpoint(path: str, map_location: str | torch.device = "cpu", fallback: bool = True) -> tuple[dict, str]:
    """Load and verify a checkpoint; fall back to ``<name>.prev.pth`` if the newest file is damaged.

    Returns
    -------
    state : dict
        The saved state, including ``meta``.
    used_path : str
        The file actually loaded (``path`` or its ``.prev`` twin).

    Raises
    ------
    CheckpointError
        If neither file is usable, or the file would need unsafe unpickling.
    """
    try:
        return _load_verified(path, map_location), path
    except CheckpointError as err:
        prev = previous_path(path)
        unsafe = "refused to load" in str(err)
        if not fallback or unsafe or not os.path.exists(prev):
            raise
        logger.warning("%s; using the previous good checkpoint %s", err, prev)
        try:
            return _load_verified(prev, map_location), prev
        except CheckpointError as prev_err:
            raise CheckpointError(f"{err}; the fallback {prev} is unusable too ({prev_err})") from None


def check_config(saved: Mapping[str, Any] | None, current: Mapping[str, Any], keys: Iterable[str], path: str,
                 fix: str = "pass the same values or choose a new output folder") -> None:
    """Raise :class:`CheckpointError` naming both values when an architecture key differs.

    ``saved`` is ``meta['config']`` of a checkpoint (``None`` skips the check for legacy files).
    A nested config (a dict) is reported by the first sub-key that differs, e.g. ``vae_config.mix_bands``.
    """
    if saved is None:
        return
    for key in keys:
        if key in saved and key in current and _norm(saved[key]) != _norm(current[key]):
            name, was, now = _first_difference(key, saved[key], current[key])
            raise CheckpointError(f"{path} was made with {name}={was!r} but this run has {name}={now!r}; {fix}")


def _first_difference(name: str, saved: Any, current: Any) -> tuple[str, Any, Any]:
    """``(dotted name, saved value, current value)`` of the first differing leaf of two configs (a missing
    sub-key reads as ``None``)."""
    if isinstance(saved, Mapping) and isinstance(current, Mapping):
        for sub in list(saved) + [k for k in current if k not in saved]:
            a, b = saved.get(sub), current.get(sub)
            if _norm(a) != _norm(b):
                return _first_difference(f"{name}.{sub}", a, b)
    return name, saved, current


def _norm(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _norm(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_norm(v) for v in value]
    if isinstance(value, float):
        return round(value, 9)
    return value
