"""Upstream VAR's training utilities (arg_util, misc, amp_sc, lr_control, data, data_sampler).

``utils`` is one package over two folders, ``VAR/utils`` and the top-level ``utils`` (EEG helpers);
the top-level ``utils/__init__.py`` explains why. This file is what Python runs when ``VAR/`` comes
first on ``sys.path`` (``torchrun VAR/train.py``): it adds the top-level folder to the package path.
"""
import os as _os

_top_level_utils = _os.path.join(
    _os.path.dirname(_os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))), "utils")
if _os.path.isdir(_top_level_utils) and _top_level_utils not in __path__:
    __path__.append(_top_level_utils)
