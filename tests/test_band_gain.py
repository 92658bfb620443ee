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


# --- sample_gain_db: the samples' own band gain per class and level ---------------------------------------------------
def _group_windows(rng, n_per_group: dict, offset_db_CK: dict) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Sines with random per-window amplitudes: (N, C, T) windows, labels, levels; group (c, l) has ``n`` windows
    whose band amplitudes carry ``offset_db[(c, l)]`` dB on top of a random spread."""
    xs, labs, lvls = [], [], []
    for (c, lv), n in n_per_group.items():
        for _ in range(n):
            amp_db = offset_db_CK[(c, lv)] + rng.normal(0, 3, size=(2, 5))
            xs.append(_sines(10 ** (amp_db / 20))[0])
            labs.append(c), lvls.append(lv)
    return torch.stack(xs).double(), np.array(labs), np.array(lvls)


def _band_db_numpy(x_NCT: np.ndarray) -> np.ndarray:
    """10 log10 of Σ |rfft|² over each band's bins (the top band includes its upper edge), written out here."""
    f = np.fft.rfftfreq(T, 1 / SFREQ)
    P = np.abs(np.fft.rfft(np.asarray(x_NCT, dtype=np.float64), axis=-1)) ** 2
    masks = [(f >= lo) & ((f <= hi) if k == len(BANDS) - 1 else (f < hi)) for k, (lo, hi) in enumerate(BANDS)]
    return 10 * np.log10(np.stack([P[..., m].sum(-1) for m in masks], -1))


def test_sample_gain_gives_each_group_the_real_mean_log_band_power():
    """Applied to the samples it was measured on, the table makes every (class, level) group's mean dB band power, per
    channel and band, equal to the real group's (measured here with numpy FFTs); groups too small for their own row
    take their class's pooled column."""
    from models.band_gain import lookup_group_gain_db, sample_gain_db
    rng = np.random.default_rng(0)
    groups = [(0, 0), (0, 1), (1, 0), (1, 1)]
    real_off = {g: rng.normal(0, 4, size=(2, 5)) for g in groups}
    gen_off = {g: rng.normal(0, 4, size=(2, 5)) for g in groups}
    x_real, lab_r, lv_r = _group_windows(rng, {g: 30 for g in groups}, real_off)
    # class 1 level 1 has 3 samples only: below min_count, it falls back on class 1 pooled over levels
    x_gen, lab_g, lv_g = _group_windows(rng, {(0, 0): 20, (0, 1): 12, (1, 0): 25, (1, 1): 3}, gen_off)
    bg = BandGain(BANDS, SFREQ, T)
    db = lambda x: 10 * np.log10(bg.band_power(x).numpy())  # noqa: E731
    table = sample_gain_db(db(x_real), lab_r, lv_r, db(x_gen), lab_g, lv_g, num_classes=2, num_levels=2, min_count=8)
    assert table.shape == (3, 3, 2, 5)
    gained = bg.apply_db(x_gen, lookup_group_gain_db(table, torch.from_numpy(lab_g), torch.from_numpy(lv_g), len(lab_g)))
    R, G0, G = _band_db_numpy(x_real), _band_db_numpy(x_gen), _band_db_numpy(gained.numpy())
    for c, lv in [(0, 0), (0, 1), (1, 0)]:
        r, g = (lab_r == c) & (lv_r == lv), (lab_g == c) & (lv_g == lv)
        np.testing.assert_allclose(G[g].mean(0), R[r].mean(0), atol=1e-6)
        assert np.abs(G0[g].mean(0) - R[r].mean(0)).max() > 1.0  # before the gain they differed
    # the small group got class 1's pooled gain: real class 1 mean minus the class's samples' mean, all levels
    want = R[lab_r == 1].mean(0) - G0[lab_g == 1].mean(0)
    np.testing.assert_allclose(table[1, 1], want, atol=1e-6)
    np.testing.assert_allclose(table[1, 2], want, atol=1e-6)
    np.testing.assert_allclose(table[2, 2], R.mean(0) - G0.mean(0), atol=1e-6)


def test_sample_gain_without_levels_and_with_a_missing_class():
    """No levels: one column per class (and the pooled one, equal). A class with no samples takes every class's
    pooled gain; non-finite powers are refused."""
    from models.band_gain import sample_gain_db
    rng = np.random.default_rng(1)
    real = rng.normal(0, 1, size=(40, 2, 5))
    lab_r = np.repeat([0, 1], 20)
    gen = rng.normal(2, 1, size=(20, 2, 5))
    lab_g = np.zeros(20, dtype=int)  # class 1 was never drawn
    table = sample_gain_db(real, lab_r, None, gen, lab_g, None, num_classes=2, num_levels=0)
    assert table.shape == (3, 1, 2, 5)
    np.testing.assert_allclose(table[0, 0], real[:20].mean(0) - gen.mean(0))
    np.testing.assert_allclose(table[2, 0], real.mean(0) - gen.mean(0))
    np.testing.assert_allclose(table[1, 0], table[2, 0])
    with pytest.raises(ValueError, match='finite'):
        sample_gain_db(np.full((4, 2, 5), -np.inf), np.zeros(4), None, gen, lab_g, None, 1, 0)
    with pytest.raises(ValueError, match='shapes'):
        sample_gain_db(real, lab_r, None, gen[:, :1], lab_g, None, 2, 0)


def test_real_window_indices_are_all_or_evenly_spread():
    from sample_calib import real_window_indices
    np.testing.assert_array_equal(real_window_indices(5, 8), np.arange(5))
    idx = real_window_indices(1000, 10)
    assert len(idx) == 10 and idx[0] == 0 and idx[-1] == 999 and np.all(np.diff(idx) >= 110)
