"""Command-line plumbing shared by every entry point.

- :class:`ArgumentParser` accepts both spellings of every long flag (``--data-root`` and
  ``--data_root``), as torchrun does, and reports errors as ``prog: error: ...`` with exit code 2.
- :func:`run_cli` runs a ``main(argv)`` function and turns a :class:`~utils.errors.UserError` into that
  same one-line format, so bad values and bad flags look alike and users never see a traceback for
  their own mistakes.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Callable, NoReturn, Sequence

from .errors import UserError

EXIT_USER_ERROR = 2


class _PrimaryFlagFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, and only the first spelling of each flag (the twins would double every line).

    A help text that already says its default ("default 128, or the checkpoint's") gets no second
    "(default: None)", and neither does a flag whose default is None (nothing given = the help's own words).
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text.lower() or action.default is None:
            return text
        return super()._get_help_string(action)

    def _format_action_invocation(self, action: argparse.Action) -> str:
        if not action.option_strings or len(action.option_strings) == 1:
            return super()._format_action_invocation(action)
        shown = [s for s in action.option_strings if not s.startswith("--")] + \
            [next(s for s in action.option_strings if s.startswith("--"))]
        saved = action.option_strings
        action.option_strings = shown
        try:
            return super()._format_action_invocation(action)
        finally:
            action.option_strings = saved


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` that also accepts the ``_``/``-`` twin of each long flag."""

    def add_argument(self, *name_or_flags: str, **kwargs):  # type: ignore[override]
        flags = list(name_or_flags)
        for flag in name_or_flags:
            if flag.startswith("--"):
                body = flag[2:]
                for twin in (body.replace("-", "_"), body.replace("_", "-")):
                    if twin != body and f"--{twin}" not in flags:
                        flags.append(f"--{twin}")
        if len(flags) > len(name_or_flags) and "dest" not in kwargs and name_or_flags[0].startswith("--"):
            kwargs["dest"] = name_or_flags[0][2:].replace("-", "_")
        return super().add_argument(*flags, **kwargs)

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _PrimaryFlagFormatter)
        super().__init__(*args, **kwargs)


def one_line(message: str) -> str:
    """The user-facing line of an error message.

    A :class:`~utils.errors.UserError` raised inside a ``DataLoader`` worker is re-raised in the main
    process with the worker's traceback in its message ("Caught DatasetError in DataLoader worker
    process 0. Original Traceback ..."); its last line is the original one-line message.
    """
    lines = [ln for ln in message.splitlines() if ln.strip()]
    if len(lines) > 1 and any("Traceback (most recent call last)" in ln for ln in lines):
        last = lines[-1]
        head, sep, rest = last.partition(": ")
        return rest if sep and "." in head and " " not in head else last  # drop "utils.errors.DatasetError: "
    return message


def check_new_outputs(outputs: dict[str, str | None], overwrite: bool) -> None:
    """Refuse to replace existing output files unless ``overwrite``.

    ``outputs`` maps a flag name (without dashes) to the path it was given (``None`` = not requested).

    Raises
    ------
    UserError
        Naming the first flag whose file exists.
    """
    for flag, path in outputs.items():
        if path and os.path.exists(path) and not overwrite:
            raise UserError(f"--{flag}={path} exists; pass --overwrite to replace it or choose another name")


def user_error_exit(prog: str, message: str) -> NoReturn:
    """Print ``prog: error: message`` (one line, see :func:`one_line`) on stderr and exit with code 2."""
    print(f"{prog}: error: {one_line(message)}", file=sys.stderr)
    raise SystemExit(EXIT_USER_ERROR)


def setup_logging(verbose: bool = False) -> None:
    """Configure root logging once for an entry point (library code only uses getLogger)."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def run_cli(main: Callable[[Sequence[str] | None], int | None], prog: str | None = None,
            argv: Sequence[str] | None = None) -> NoReturn:
    """Run ``main(argv)``; exit 0 on success, 2 with a one-line message on a :class:`UserError`."""
    prog = prog or os.path.basename(sys.argv[0])
    try:
        code = main(argv)
    except UserError as err:
        user_error_exit(prog, str(err))
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        raise SystemExit(130)
    raise SystemExit(int(code or 0))
