"""Classical baselines on signals with known answers: AR forecasting, gap filling, the linear VAR
model's samples, phase-randomised surrogates."""
from __future__ import annotations

import numpy as np
import pytest

from utils.eeg_baselines import (LinearVAR, fill_gap_ar, fill_gap_linear, fill_gap_zeros, forecast_zeros, mask_runs,
                                 phase_randomize)
from utils.errors import UserError

A1, A2 = 1.2, -0.5  # a stable AR(2): poles inside the unit circle


def _ar2(rng: np.random.Generator, n: int, n_ch: int, n_t: int, sigma: float = 1.0) -> np.ndarray:
    e = rng.standard_normal((n, n_ch, n_t + 200)) * sigma
    x = np.zeros_like(e)
    for t in range(2, e.shape[-1]):
        x[..., t] = A1 * x[..., t - 1] + A2 * x[..., t - 2] + e[..., t]
    return x[..., 200:]


@pytest.mark.parametrize("multivariate", [True, False])
def test_ar_forecast_beats_zeros_and_reaches_one_step_error(rng, multivariate):
    train, test = _ar2(rng, 30, 3, 300), _ar2(rng, 200, 3, 60)
    model = LinearVAR(max_order=6, multivariate=multivariate).fit(train)
    assert model.order in (2, 3)  # AIC picks the true order (rarely one more)
    assert np.allclose(model.A_pCC[0].diagonal(), A1, atol=0.05) and np.allclose(model.A_pCC[1].diagonal(), A2, atol=0.05)
    pred = model.forecast(test[:, :, :50], 1)[:, :, 0]
    one_step = np.mean((pred - test[:, :, 50]) ** 2)
    assert one_step == pytest.approx(1.0, rel=0.15)  # theoretical one-step error = innovation variance 1
    zero = np.mean((forecast_zeros(test[:, :, :50], 1)[:, :, 0] - test[:, :, 50]) ** 2)
    assert zero > 3 * one_step
    ar5 = np.mean((model.forecast(test[:, :, :50], 5) - test[:, :, 50:55]) ** 2)
    assert one_step < ar5 < np.mean(test[:, :, 50:55] ** 2)


def test_linear_interpolation_of_a_line_is_exact():
    t = np.arange(100, dtype=float)
    x = np.stack([2.0 * t + 1.0, -0.5 * t])[None]  # (1, 2, 100)
    mask = np.zeros(100, bool)
    mask[30:45] = True
    corrupted = x.copy()
    corrupted[..., mask] = 1e6
    assert np.allclose(fill_gap_linear(corrupted, mask), x)
    assert np.all(fill_gap_zeros(corrupted, mask)[..., mask] == 0)
    assert mask_runs(mask) == [(30, 45)]


def test_ar_gap_fill_keeps_observed_and_beats_linear(rng):
    train, test = _ar2(rng, 30, 2, 300), _ar2(rng, 100, 2, 120)
    fwd = LinearVAR(order=2).fit(train)
    bwd = LinearVAR(order=2).fit(train[..., ::-1])
    mask = np.zeros(120, bool)
    mask[50:60] = True
    filled = fill_gap_ar(test, mask, fwd, bwd)
    assert np.array_equal(filled[..., ~mask], test[..., ~mask])
    err_ar = np.mean((filled - test)[..., mask] ** 2)
    err_lin = np.mean((fill_gap_linear(test, mask) - test)[..., mask] ** 2)
    err_zero = np.mean((fill_gap_zeros(test, mask) - test)[..., mask] ** 2)
    assert err_ar < err_lin and err_ar < err_zero
    forward_only = fill_gap_ar(test, mask, fwd)
    assert err_ar < np.mean((forward_only - test)[..., mask] ** 2)
    with pytest.raises(UserError, match="mask"):
        fill_gap_linear(test, np.zeros(7, bool))


def test_var_samples_have_the_fitted_covariance(rng):
    mix = np.array([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [0.0, -0.5, 1.0]])
    data = np.einsum("cd,ndt->nct", mix, _ar2(rng, 20, 3, 400))
    model = LinearVAR(order=2).fit(data)
    assert model.spectral_radius() < 1
    samples = model.sample(40, 500, rng=1)
    assert samples.shape == (40, 3, 500)
    cov_sample = np.cov(samples.transpose(1, 0, 2).reshape(3, -1))
    cov_model = model.stationary_cov()
    cov_data = np.cov(data.transpose(1, 0, 2).reshape(3, -1))
    scale = np.abs(cov_model).max()
    assert np.abs(cov_sample - cov_model).max() < 0.1 * scale
    assert np.abs(cov_model - cov_data).max() < 0.1 * scale
    again = model.sample(40, 500, rng=1)
    assert np.array_equal(samples, again)  # same seed, same samples


def test_phase_randomisation_keeps_amplitude_and_cross_spectra(rng):
    x = _ar2(rng, 5, 3, 257) + 0.3 * _ar2(rng, 5, 3, 257)[:, ::-1]  # odd length exercises the no-Nyquist path
    s = phase_randomize(x, rng=0)
    X, S = np.fft.rfft(x, axis=-1), np.fft.rfft(s, axis=-1)
    assert np.allclose(np.abs(S), np.abs(X), rtol=1e-9, atol=1e-9)
    assert np.allclose(S[:, 0] * np.conj(S[:, 1]), X[:, 0] * np.conj(X[:, 1]), rtol=1e-8, atol=1e-8)
    assert not np.allclose(s, x)
    x_even = x[..., :256]
    s_even = phase_randomize(x_even, rng=0)
    assert np.allclose(np.abs(np.fft.rfft(s_even)), np.abs(np.fft.rfft(x_even)))
    assert np.isrealobj(s_even)
