"""prototypes.eeg_band_decomposer: cumulative stages against an independent FFT reference."""
from __future__ import annotations

import numpy as np
import pytest

import utils.eeg_stages
from prototypes import eeg_band_decomposer as dec
from utils.errors import BandError

SFREQ = 100.0
SINE_HZ = (2.0, 6.0, 10.0, 20.0, 40.0)  # one sine inside each default band, away from the band edges


def _fft_amplitudes(x_CT: np.ndarray, freqs_hz, sfreq: float) -> np.ndarray:
    """Amplitude of each frequency (integer cycles in the segment, so each sits on one FFT bin)."""
    n = x_CT.shape[-1]
    spec = np.fft.rfft(x_CT, axis=-1)
    bins = [int(round(f * n / sfreq)) for f in freqs_hz]
    return 2 * np.abs(spec[..., bins]) / n


def test_reexports_the_single_implementation():
    assert dec.cumulative_frequency_levels is utils.eeg_stages.cumulative_frequency_levels
    assert dec.DEFAULT_BANDS == ((0.5, 4.0), (4.0, 8.0), (8.0, 13.0), (13.0, 30.0), (30.0, 50.0))


def test_each_stage_keeps_exactly_the_sines_inside_its_band(rng):
    t = np.arange(int(40 * SFREQ)) / SFREQ
    amps_C5 = np.array([[10.0, 8.0, 6.0, 4.0, 2.0], [3.0, 5.0, 7.0, 9.0, 11.0]])
    phases = rng.uniform(0, 2 * np.pi, (2, 5))
    x_CT = sum(amps_C5[:, i:i + 1] * np.sin(2 * np.pi * f * t + phases[:, i:i + 1]) for i, f in enumerate(SINE_HZ))
    x_CT = x_CT + 50.0  # a DC offset lies below every band
    stages_KCT = dec.cumulative_frequency_levels(x_CT, SFREQ)
    assert stages_KCT.shape == (5, 2, t.size)
    mid = slice(int(10 * SFREQ), int(30 * SFREQ))  # away from the filter's edge transients
    for k in range(5):
        got_C5 = _fft_amplitudes(stages_KCT[k][:, mid], SINE_HZ, SFREQ)
        inside = np.arange(5) <= k
        np.testing.assert_allclose(got_C5[:, inside], amps_C5[:, inside], rtol=0.02)
        assert np.all(got_C5[:, ~inside] < 0.01 * amps_C5[:, ~inside]), (k, got_C5)
        assert abs(stages_KCT[k][:, mid].mean()) < 0.05  # the DC offset is gone


def test_stages_are_nested_in_spectrum():
    # The stages' frequency responses, from an impulse: a later stage passes everything an earlier one does.
    impulse_T = np.zeros(int(40 * SFREQ))
    impulse_T[impulse_T.size // 2] = 1.0
    stages_KT = dec.cumulative_frequency_levels(impulse_T, SFREQ)
    gain_KF = np.abs(np.fft.rfft(stages_KT, axis=-1))
    freqs_F = np.fft.rfftfreq(impulse_T.size, 1 / SFREQ)
    for k, (_, f_hi) in enumerate(dec.DEFAULT_BANDS):
        passband = (freqs_F >= 1.0) & (freqs_F <= f_hi)
        np.testing.assert_allclose(gain_KF[k, passband], 1.0, atol=0.01)
        if k < 4:
            assert np.all(gain_KF[k] <= gain_KF[k + 1] + 0.01), f"stage {k + 1} passes what stage {k + 2} stops"
            stop = freqs_F >= f_hi * 1.5 + 1
            assert gain_KF[k, stop].max() < 0.01


def test_bands_above_nyquist_are_refused():
    with pytest.raises(BandError, match="above Nyquist"):
        dec.cumulative_frequency_levels(np.zeros((1, 400)), 80.0)
