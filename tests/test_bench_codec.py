"""The transform codec's bit accounting and RD behaviour, and the Gaussian rate-distortion bound."""
from __future__ import annotations

import numpy as np
import pytest

from utils.eeg_codec import TransformCodec, bits_per_window, gaussian_rd_bound, reverse_water_fill, stage_codec_snr
from utils.eeg_metrics import snr_db
from utils.errors import UserError

SFREQ = 100.0


def _ar_windows(rng: np.random.Generator, n: int, n_ch: int = 4, n_t: int = 200) -> np.ndarray:
    """Low-pass (AR(1), a = 0.9) noise mixed across channels: a source with unequal component variances."""
    e = rng.standard_normal((n, n_ch, n_t + 100))
    x = np.zeros_like(e)
    for t in range(1, e.shape[-1]):
        x[..., t] = 0.9 * x[..., t - 1] + e[..., t]
    mix = np.array([[1.0, 0.5, 0.2, 0.0], [0.5, 1.0, 0.5, 0.2], [0.2, 0.5, 1.0, 0.5], [0.0, 0.2, 0.5, 1.0]])
    return np.einsum("cd,ndt->nct", mix[:n_ch, :n_ch], x[..., 100:])


def test_bit_accounting(rng):
    train = _ar_windows(rng, 20)
    codec = TransformCodec(SFREQ).fit(train)
    assert bits_per_window(28, 19, 500, 100.0) == 2660.0
    res = codec.roundtrip(train[:3], bits_per_sec_per_channel=10.0)  # 10 * 4 ch * 2 s = 80 bits -> 5 coefs
    assert res.n_kept == 5 and res.bits_per_window == 80.0 and res.bits_per_sec_per_channel == pytest.approx(10.0)
    coef = codec.analysis(train[:3]).reshape(3, -1)
    coef_hat = codec.analysis(res.x_hat_NCT).reshape(3, -1)
    assert np.all(np.count_nonzero(np.abs(coef_hat) > 1e-9, axis=1) <= 5)
    # the kept ones are the 5 largest of each window, exactly
    for i in range(3):
        top = np.sort(np.argsort(-np.abs(coef[i]))[:5])
        assert np.allclose(coef_hat[i, top], coef[i, top])
    assert codec.roundtrip(train[:1], bits=15.9).n_kept == 0
    full = codec.roundtrip(train[:2], bits=16 * 4 * 200)
    assert np.allclose(full.x_hat_NCT, train[:2])  # orthonormal transforms: lossless when all kept
    with pytest.raises(UserError, match="exactly one"):
        codec.roundtrip(train[:1])
    with pytest.raises(UserError, match="channels"):
        codec.roundtrip(train[:1, :3], bits=100)


def test_snr_monotone_in_rate_and_bound_above_codec(rng):
    train, val = _ar_windows(rng, 40), _ar_windows(rng, 10)
    codec = TransformCodec(SFREQ).fit(train)
    rates = [4, 8, 16, 32, 64]
    snr = [snr_db(val, codec.roundtrip(val, r).x_hat_NCT) for r in rates]
    assert all(b > a for a, b in zip(snr, snr[1:]))
    bound = gaussian_rd_bound(codec, val, rates)
    assert bound.shape == (5,) and np.all(np.diff(bound) > 0)
    assert np.all(bound > np.asarray(snr))
    oracle = gaussian_rd_bound(codec, val, rates, allocation="val")  # knows the val variances: never lower
    assert np.all(oracle >= bound - 1e-9)
    assert np.allclose(gaussian_rd_bound(codec, train, rates), gaussian_rd_bound(codec, train, rates, "val"))


def test_reverse_water_fill_known_case():
    # two components, variances 4 and 1; at 1 bit: theta = 1 -> D = 1 + 1, R = 0.5*log2(4) = 1
    d, theta = reverse_water_fill(np.array([4.0, 1.0]), 1.0)
    assert theta == pytest.approx(1.0, rel=1e-6) and d == pytest.approx(2.0, rel=1e-6)
    # at 3 bits both active: 0.5 log2(4/t) + 0.5 log2(1/t) = 3 -> t = 0.25, D = 0.5
    d, theta = reverse_water_fill(np.array([4.0, 1.0]), 3.0)
    assert theta == pytest.approx(0.25, rel=1e-6) and d == pytest.approx(0.5, rel=1e-6)
    assert reverse_water_fill(np.array([4.0, 1.0]), 0.0)[0] == 5.0


def test_stage_codec_snr_matches_single_stage_codec(rng):
    train, val = _ar_windows(rng, 20), _ar_windows(rng, 6)
    stages_tr = np.stack([0.5 * train, train], axis=1)  # (N, K=2, C, T)
    stages_va = np.stack([0.5 * val, val], axis=1)
    snr = stage_codec_snr(stages_tr, stages_va, SFREQ, [160, 320])
    direct = snr_db(val, TransformCodec(SFREQ).fit(train).roundtrip(val, bits=320).x_hat_NCT)
    assert snr[1] == pytest.approx(direct) and snr[0] < snr[1]  # scale-invariant: fewer bits, lower SNR
