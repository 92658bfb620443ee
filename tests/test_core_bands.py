"""Band validation, the scale-layout rule and MNE stage filtering against sines."""
from __future__ import annotations

import numpy as np
import pytest

from utils.eeg_bands import (DEFAULT_BANDS, parse_bands, scale_lengths_for_bands, stage_names, validate_bands,
                             validate_scale_layout)
from utils.eeg_stages import cumulative_frequency_levels
from utils.errors import BandError, UserError


@pytest.mark.parametrize("bands, sfreq, match", [
    ([(0.0, 4.0)], 100, "f_lo must be > 0"),
    ([(4.0, 2.0)], 100, "must exceed f_lo"),
    ([(0.5, 8.0), (4.0, 12.0)], 100, "overlaps"),
    ([(0.5, 4.0), (30.0, 60.0)], 100, "above Nyquist"),
    ([(0.5, float("nan"))], 100, "finite"),
    ([], 100, "at least one"),
])
def test_bad_band_edges_are_refused(bands, sfreq, match):
    with pytest.raises(BandError, match=match):
        validate_bands(bands, sfreq)


def test_parse_bands_round_trip():
    assert parse_bands("0.5-4,4-8").tolist() == [[0.5, 4.0], [4.0, 8.0]]
    with pytest.raises(BandError, match="write bands as"):
        parse_bands("0.5-4-8")


@pytest.mark.parametrize("sfreq, latent, expect", [
    (100, 64, (6, 11, 17, 39, 64)),
    (100, 125, (10, 20, 33, 75, 125)),
    (256, 32, (1, 2, 4, 8, 32)),
])
def test_scale_layout_follows_nyquist_rule(sfreq, latent, expect):
    assert scale_lengths_for_bands(DEFAULT_BANDS, sfreq, latent) == expect


def test_scale_layout_strictly_increasing_and_extra_coarse():
    pn = scale_lengths_for_bands(DEFAULT_BANDS, 100, 8, extra_coarse=(1,))
    assert pn[0] == 1 and pn[-1] == 8 and all(b > a for a, b in zip(pn, pn[1:]))
    with pytest.raises(BandError, match="strictly increasing"):
        scale_lengths_for_bands(DEFAULT_BANDS, 100, 3)
    with pytest.raises(BandError, match="latent length is 16"):
        validate_scale_layout((2, 4, 8), 16)


def test_stage_names_default_and_custom():
    assert stage_names(DEFAULT_BANDS)[-1] == "delta+theta+alpha+beta+gamma"
    assert stage_names([(1, 5), (5, 9)]) == ["1-5Hz", "1-9Hz"]


def _amplitude_at(x_T: np.ndarray, sfreq: float, freq: float) -> float:
    spec = np.abs(np.fft.rfft(x_T)) * 2 / len(x_T)
    return float(spec[np.argmin(np.abs(np.fft.rfftfreq(len(x_T), 1 / sfreq) - freq))])


def test_stages_keep_exactly_the_sines_inside_each_band():
    sfreq, freqs = 100.0, (2.0, 6.0, 10.5, 20.0, 40.0)
    t = np.arange(0, 80, 1 / sfreq)
    x_CT = np.stack([sum(np.sin(2 * np.pi * f * t + c) for f in freqs) for c in (0.0, 1.0)])
    stages_KCT = cumulative_frequency_levels(x_CT, sfreq)
    assert stages_KCT.shape == (5, 2, len(t))
    core = slice(int(20 * sfreq), int(60 * sfreq))  # away from the edges: exact FFT bins (40 s)
    for k, (_, f_hi) in enumerate(DEFAULT_BANDS):
        for f in freqs:
            amp = _amplitude_at(stages_KCT[k, 0, core], sfreq, f)
            if f <= f_hi:
                assert amp == pytest.approx(1.0, abs=0.02), (k, f)
            else:
                assert amp < 0.02, (k, f)


def test_stages_are_nested_in_spectrum(rng):
    sfreq = 100.0
    x_CT = rng.standard_normal((3, 6000))
    stages_KCT = cumulative_frequency_levels(x_CT, sfreq)
    power = [np.mean(np.abs(np.fft.rfft(s, axis=-1)) ** 2) for s in stages_KCT]
    assert all(b > a for a, b in zip(power, power[1:]))


def test_stage_filter_rejects_nan_and_bad_shape():
    with pytest.raises(UserError, match="NaN"):
        cumulative_frequency_levels(np.full((2, 500), np.nan), 100)
    with pytest.raises(UserError, match="shape"):
        cumulative_frequency_levels(np.zeros((2, 2, 500)), 100)
    with pytest.raises(BandError, match="Nyquist"):
        cumulative_frequency_levels(np.zeros((2, 500)), 60)
