"""Make upstream-style VAR modules (``dist``, ``models``, ``trainer``) importable from the repo root.

``torchrun VAR/train.py`` already has ``VAR/`` first on ``sys.path``; tests and benchmarks, which run
from the repo root, call :func:`ensure_var_importable` instead. This is the only place outside Python's
own start-up that touches ``sys.path`` (the ``utils`` package itself spans both folders: see
``utils/__init__.py``).
"""
from __future__ import annotations

import os
import sys

VAR_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "VAR")


def ensure_var_importable() -> str:
    """Append ``VAR/`` to ``sys.path`` once (after the repo root, so top-level packages win); return it."""
    if VAR_DIR not in sys.path:
        sys.path.append(VAR_DIR)
    return VAR_DIR
