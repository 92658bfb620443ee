"""Shared EEG helpers: bands, stage filtering, the npz schema, checkpoints, CLI errors, ingestion.

The two ``utils`` packages
--------------------------
Upstream VAR's scripts run with ``VAR/`` first on ``sys.path`` and import ``from utils import
arg_util, misc``; this repository also has a top-level ``utils/`` (EEG knowledge). Both folders are
made *one* package: whichever ``utils/__init__.py`` Python finds first appends the other folder to
the package ``__path__``. So ``utils.arg_util`` (in ``VAR/utils``) and ``utils.eeg_schema`` (here)
resolve from the repo root (``python -m ...``) and from ``torchrun VAR/train.py`` alike. Module
names in the two folders must differ; ``tests/test_cli_imports.py`` checks that. Modules here import
each other relatively (``from .eeg_bands import ...``).
"""
from __future__ import annotations

import os as _os

_repo_root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
for _folder in (_os.path.join(_repo_root, "utils"), _os.path.join(_repo_root, "VAR", "utils")):
    if _os.path.isdir(_folder) and _folder not in __path__:
        __path__.append(_folder)
