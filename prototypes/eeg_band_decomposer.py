"""Cumulative frequency stages for the prototype (the seed's module name, kept for its users).

There is one implementation, in :mod:`utils.eeg_stages` and :mod:`utils.eeg_bands`; this module only
re-exports it so that ``from prototypes.eeg_band_decomposer import cumulative_frequency_levels`` (the
seed README's example) keeps working and can never drift from the tokenizer's or ingestion's bands.

``cumulative_frequency_levels(signal_CT, sfreq, bands=DEFAULT_BANDS)`` returns (K, C, T) float64 stages:
stage k is one zero-phase FIR band-pass (MNE ``filter_data``, firwin) from the first band's ``f_lo`` to
band k's ``f_hi``; a stage reaching Nyquist is a high-pass only. Band edges are validated (increasing,
non-overlapping, ``f_lo > 0``, ``f_hi <= sfreq / 2``) and a :class:`~utils.errors.BandError` names the
problem otherwise.
"""
from __future__ import annotations

from utils.eeg_bands import (DEFAULT_BAND_NAMES, DEFAULT_BANDS, band_names, parse_bands, stage_edges, stage_names,
                             validate_bands)
from utils.eeg_stages import cumulative_frequency_levels

__all__ = ["DEFAULT_BANDS", "DEFAULT_BAND_NAMES", "cumulative_frequency_levels", "validate_bands", "parse_bands",
           "stage_edges", "stage_names", "band_names"]
