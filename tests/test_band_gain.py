"""Band-gain side codes (``models/band_gain.py``) against sines of known amplitude, written out with numpy."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from models.band_gain import BandGain, apply_gain_codes  # noqa: E402  (VAR/ is importable through conftest)

SFREQ, T = 100.0, 500  # 5-s windows: rFFT bins every 0.2 Hz
BANDS = [[0.5, 4.0], [4.0, 8.0], [8.0, 13.0], [13.0, 30.0], [30.0, 50.0]]
#: one frequency on an rFFT bin inside each band, and one below the first band (outside every band)
F_BAND = [2.0, 6.0, 10.0, 20.0, 40.0]
F_OUTSIDE = 0.2


def _sines(amps_CK: np.ndarray, outside_amp: float = 0.0) -> torch.Tensor:
    """(1, C, T): channel c = Σ_k amps[c, k] sin(2π F_BAND[k] t) + outside_amp cos(2π F_OUTSIDE t)."""
    t = np.arange(T) / SFREQ
    x = amps_CK @ np.sin(2 * np.pi * np.outer(F_BAND, t)) + outside_amp * np.cos(2 * np.pi * F_OUTSIDE * t)
    return torch.from_numpy(x[None]).float()


def test_codes_are_the_rounded_power_ratio_of_each_band():
    gain = BandGain(BANDS, SFREQ, T, step_db=2.0, max_steps=2)
    amp_x = np.array([[1.0, 2.0, 3.0, 1.0, 0.5], [1.0, 1.0, 1.0, 1.0, 1.0]])
    # decode amplitudes chosen so the dB ratios are 0, +1.9, -2.2, +5, -9 and 3.1, -3.1, 0.9, -0.9, 4.1
    ratio_db = np.array([[0.0, 1.9, -2.2, 5.0, -9.0], [3.1, -3.1, 0.9, -0.9, 4.1]])
    amp_rec = amp_x / 10 ** (ratio_db / 20)
    codes = gain.measure(_sines(amp_x), _sines(amp_rec))
    want = np.clip(np.round(ratio_db / 2.0), -2, 2)
    assert codes.dtype == torch.int8 and codes.shape == (1, 2, 5)
    np.testing.assert_array_equal(codes[0].numpy(), want)


def test_apply_scales_each_band_by_its_code_and_leaves_the_rest():
    gain = BandGain(BANDS, SFREQ, T, step_db=1.5, max_steps=3)
    amp = np.array([[1.0, 2.0, 0.5, 1.5, 0.8]])
    codes = torch.tensor([[[2, -1, 3, 0, -3]]], dtype=torch.int8)
    out = gain.apply(_sines(amp, outside_amp=0.7), codes)
    want = _sines(amp * 10 ** (codes[0].numpy() * 1.5 / 20), outside_amp=0.7)  # the component below 0.5 Hz stays
    torch.testing.assert_close(out, want, atol=1e-5, rtol=0)
    # a partial decode of stage 1 (delta + theta) applies only the first two codes
    part = gain.apply(_sines(amp, outside_amp=0.7), codes, n_bands=2)
    scale = np.ones(5)
    scale[:2] = 10 ** (codes[0, 0, :2].numpy() * 1.5 / 20)
    torch.testing.assert_close(part, _sines(amp * scale, outside_amp=0.7), atol=1e-5, rtol=0)


def test_measure_then_apply_brings_every_band_within_half_a_step():
    """Broadband noise decoded with random per-band errors of up to 5 dB: after the codes, every band's power is
    within half a step of the input's, computed here with numpy."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, T))
    X = np.fft.rfft(x, axis=-1)
    freqs = np.fft.rfftfreq(T, 1 / SFREQ)
    band_of = np.full(freqs.shape, -1)
    for k, (lo, hi) in enumerate(BANDS):
        band_of[(freqs >= lo) & ((freqs <= hi) if k == 4 else (freqs < hi))] = k
    err_db = rng.uniform(-5, 5, size=(4, 3, 5))
    gain_F = np.ones((4, 3, freqs.size))
    for k in range(5):
        gain_F[..., band_of == k] = 10 ** (-err_db[..., k:k + 1] / 20)
    rec = np.fft.irfft(X * gain_F, n=T, axis=-1)
    bg = BandGain(BANDS, SFREQ, T, step_db=2.0, max_steps=2)
    out = bg.apply(torch.from_numpy(rec), bg.measure(torch.from_numpy(x), torch.from_numpy(rec))).numpy()

    def band_db(z):
        P = np.abs(np.fft.rfft(z, axis=-1)) ** 2
        return 10 * np.log10(np.stack([P[..., band_of == k].sum(-1) for k in range(5)], -1))
    left = band_db(x) - band_db(out)
    # errors of at most 5 dB round to at most 2 steps of 2 dB: at most 1 dB is left in every band
    assert np.all(np.abs(left) <= 1.0 + 1e-6)
    assert np.abs(left).mean() < np.abs(err_db).mean() / 3


def test_bits_fixed_and_entropy():
    bg = BandGain(BANDS, SFREQ, T, step_db=2.0, max_steps=2)
    assert bg.bits_per_second(SFREQ) == pytest.approx(5 * math.log2(5) / 5.0)
    assert bg.entropy_bits_per_second(np.zeros((10, 3, 5), dtype=np.int8), SFREQ) == 0.0
    # every band uniform over the 5 codes
    codes = np.tile(np.arange(-2, 3), 6).reshape(6, 5, 1).repeat(5, axis=-1)
    assert bg.entropy_bits_per_second(codes, SFREQ) == pytest.approx(5 * math.log2(5) / 5.0)
    # two equally likely codes in band 0 only: 1 bit per window
    codes = np.zeros((8, 1, 5), dtype=np.int8)
    codes[::2, 0, 0] = 1
    assert bg.entropy_bits_per_second(codes, SFREQ) == pytest.approx(1 / 5.0)


def test_apply_gain_codes_gives_each_scale_its_bands():
    """Extra coarse scales get no gain, scale n_extra + k gets bands 0..k."""
    bg = BandGain(BANDS, SFREQ, T, step_db=2.0, max_steps=2)
    amp = np.ones((1, 5))
    codes = torch.full((1, 1, 5), 2, dtype=torch.int8)
    recs = [_sines(amp) for _ in range(7)]  # 2 extra coarse scales + 5 stages
    out = apply_gain_codes(bg, recs, codes, n_extra_coarse=2)
    for si, r in enumerate(out):
        n = max(0, si - 1)
        scale = np.where(np.arange(5) < n, 10 ** (4 / 20), 1.0)
        torch.testing.assert_close(r, _sines(amp * scale), atol=1e-5, rtol=0)


@pytest.mark.parametrize('kw', [dict(step_db=0.0), dict(step_db=-1.0), dict(max_steps=0)])
def test_bad_settings_are_refused(kw):
    with pytest.raises(ValueError):
        BandGain(BANDS, SFREQ, T, **kw)


def test_codes_of_the_wrong_shape_are_refused():
    bg = BandGain(BANDS, SFREQ, T)
    with pytest.raises(ValueError, match='do not fit'):
        bg.apply(torch.zeros(2, 3, T), torch.zeros(2, 3, 4, dtype=torch.int8))
