"""Project version and the code version recorded in checkpoints and manifests."""
from __future__ import annotations

import functools
import os
import subprocess

PROJECT_VERSION = "0.1.0"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """Return ``"<PROJECT_VERSION>+<git short sha>[-dirty]"``, or just the version outside git.

    Computed lazily (never at import) so that importing the package never shells out.
    """
    try:
        sha = subprocess.run(["git", "-C", REPO_ROOT, "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", REPO_ROOT, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return PROJECT_VERSION
    return f"{PROJECT_VERSION}+{sha}{'-dirty' if dirty else ''}" if sha else PROJECT_VERSION
