"""Tokenizer realism pieces: the sub-band power loss, the calibrated residual noise, the nonlinear C2ST."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from models.band_losses import band_bins, band_corr_loss, band_power_loss, subband_edges  # noqa: E402  (VAR/ is importable through conftest)
from models.band_noise import ResidualNoise  # noqa: E402
from models.vqvae import VQVAE  # noqa: E402
from utils.eeg_c2st import c2st_auc
from utils.eeg_c2st_mlp import c2st_mlp_auc, hjorth


def test_subband_edges_cover_the_stage_in_two_hz_steps():
    # 5-s windows at 100 Hz: bins every 0.2 Hz, so 2 Hz = 10 bins; 4 Hz is bin 20
    assert subband_edges(4.0, 100.0, 500) == [(1, 11), (11, 21)]
    assert subband_edges(50.0, 100.0, 500)[-1] == (241, 251)  # ends at the Nyquist bin
    assert subband_edges(0.1, 100.0, 500) == [(1, 2)]  # narrower than a bin: still one bin


def test_band_power_loss_matches_the_formula_written_with_numpy():
    g = np.random.default_rng(0)
    x = g.standard_normal((3, 4, 200))
    rec = 0.7 * x + 0.2 * g.standard_normal((3, 4, 200))
    edges = [(1, 5), (5, 20), (20, 60)]
    w = np.hanning(200)
    P = lambda a: np.stack([(np.abs(np.fft.rfft(a * w, axis=-1)) ** 2)[..., lo:hi].sum(-1) for lo, hi in edges], -1)
    eps = 1e-3 * P(x).mean() + 1e-12
    want = np.mean((np.log(P(rec) + eps) - np.log(P(x) + eps)) ** 2)
    got = band_power_loss(torch.from_numpy(rec), torch.from_numpy(x), edges).item()
    assert got == pytest.approx(want, rel=1e-4)
    # halving the amplitude quarters every power: (ln 1/4)^2 without the floor
    half = band_power_loss(torch.from_numpy(0.5 * x), torch.from_numpy(x), edges, rel_eps=0.0).item()
    assert half == pytest.approx(np.log(0.25) ** 2, rel=1e-4)


def test_band_corr_loss_matches_correlations_of_band_filtered_signals():
    """Per window and band, the channel correlations of the band-passed signals (np.corrcoef in time) of the
    decode against the input's: with no DC or Nyquist bin in a band, Parseval makes them the rFFT-bin ones."""
    g = np.random.default_rng(1)
    N, C, T = 3, 5, 200
    x = g.standard_normal((N, C, T)) + 0.8 * g.standard_normal((N, 1, T))  # a shared part: correlated channels
    rec = 0.6 * x + 0.5 * g.standard_normal((N, 1, T))  # more shared than its input
    band_F = np.full(T // 2 + 1, -1)
    band_F[3:20], band_F[20:70] = 0, 1  # two bands; bin 0 (DC), 70.. (incl. Nyquist) in none
    iu = np.triu_indices(C, 1)

    def corr(a, k):
        passed = np.fft.irfft(np.fft.rfft(a, axis=-1) * (band_F == k), n=T, axis=-1)
        return np.stack([np.corrcoef(w)[iu] for w in passed])
    want = np.mean([np.mean((corr(rec, k) - corr(x, k)) ** 2) for k in (0, 1)])
    bins = band_bins(torch.from_numpy(band_F))
    assert [b.tolist() for b in bins] == [list(range(3, 20)), list(range(20, 70))]
    got = band_corr_loss(torch.from_numpy(rec), torch.from_numpy(x), bins, rel_eps=0.0).item()
    assert want > 0.01 and got == pytest.approx(want, rel=1e-4)
    # a decode with its input's correlations costs nothing, whatever its channel gains
    scaled = x * np.arange(1, C + 1)[None, :, None]
    assert band_corr_loss(torch.from_numpy(scaled), torch.from_numpy(x), bins, rel_eps=0.0).item() < 1e-10


def _coloured(n: int, C: int, T: int, seed: int) -> torch.Tensor:
    """Correlated channels with a 1/f-like spectrum, (n, C, T)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, C, T, generator=g)
    mix = torch.eye(C) + 0.6 * torch.ones(C, C) / C
    X = torch.fft.rfft(torch.einsum('cd,ndt->nct', mix, w), dim=-1)
    f = torch.arange(X.shape[-1]).float()
    return torch.fft.irfft(X / (1 + f / 10), n=T, dim=-1)


def _band_db(a: torch.Tensor, b: torch.Tensor, lo: int, hi: int) -> float:
    Pa = torch.fft.rfft(a, dim=-1).abs().square()[..., lo:hi].sum()
    Pb = torch.fft.rfft(b, dim=-1).abs().square()[..., lo:hi].sum()
    return float(10 * torch.log10(Pa / Pb))


def test_residual_noise_restores_band_power_and_stays_in_band():
    C, T = 4, 128
    x_cal, x_new = _coloured(600, C, T, 0), _coloured(400, C, T, 1)
    # a 'decoder' that keeps the low band and shrinks bins 20.. to 30 % of their amplitude
    gain = torch.ones(T // 2 + 1)
    gain[20:] = 0.3
    shrink = lambda x: torch.fft.irfft(torch.fft.rfft(x, dim=-1) * gain, n=T, dim=-1)
    noise = ResidualNoise(n_scales=2, n_channels=C, n_times=T)
    noise.calibrate_(1, x_cal, shrink(x_cal))
    noise.calibrate_(0, x_cal, shrink(x_cal), f_hi_bin=40)
    rec = shrink(x_new)
    assert _band_db(rec, x_new, 20, 65) < -8  # the shrunk band lost most of its power
    out = noise.add_(rec, 1, seed=3)
    assert abs(_band_db(out, x_new, 20, 65)) < 0.3 and abs(_band_db(out, x_new, 1, 20)) < 0.3
    # channel correlation of the restored band comes back too
    hp = lambda a: torch.fft.irfft(torch.fft.rfft(a, dim=-1) * (torch.arange(T // 2 + 1) >= 20), n=T, dim=-1)
    corr = lambda a: float(torch.corrcoef(hp(a).transpose(0, 1).reshape(C, -1))[0, 1])
    assert corr(out) == pytest.approx(corr(x_new), abs=0.05)
    # seeded: same seed, same noise; another seed, other noise; no seed, no noise
    assert torch.equal(noise.add_(rec, 1, seed=3), out) and not torch.equal(noise.add_(rec, 1, seed=4), out)
    assert noise.add_(rec, 1, seed=None) is rec
    # a band-limited stage gets no noise above its band
    low = noise.add_(rec, 0, seed=3) - rec
    assert float(torch.fft.rfft(low, dim=-1).abs()[..., 40:].max()) < 1e-4


def test_older_tokenizer_config_loads_without_noise_and_new_one_without_noise_buffers():
    cfg = dict(in_channels=3, vocab_size=8, z_channels=4, ch_mult=(1, 1), arch='patch', v_patch_nums=(2, 4, 8))
    old = VQVAE(**cfg, test_mode=True)
    assert 'residual_noise' not in old.get_config() and old.noise is None  # configs of older checkpoints unchanged
    VQVAE.from_config(old.get_config()).load_state_dict(old.state_dict(), strict=True)
    new = VQVAE(**cfg, residual_noise=True, test_mode=True)
    new.load_state_dict(old.state_dict(), strict=True)  # weights of an older run: noise stays uncalibrated
    x = torch.randn(2, 3, 16)
    assert torch.equal(new.eeg_to_reconstructed_eeg(x, last_one=True, noise_seed=0),
                       old.eeg_to_reconstructed_eeg(x, last_one=True))


def test_hjorth_of_a_sine_matches_its_closed_form():
    w = 2 * np.pi * 7 / 100
    x = np.sin(w * np.arange(4000))[None, None]
    act, mob, comp = hjorth(x)
    # differencing a sine multiplies its variance by 2 (1 - cos w)
    assert act[0, 0] == pytest.approx(0.5, rel=1e-3)
    assert mob[0, 0] == pytest.approx(np.sqrt(2 * (1 - np.cos(w))), rel=1e-3)
    assert comp[0, 0] == pytest.approx(1.0, rel=1e-3)


def test_mlp_c2st_separates_a_nonlinear_difference_and_not_equal_sets():
    g = np.random.default_rng(0)
    a = g.standard_normal((240, 6))
    b = g.standard_normal((240, 6))
    b[:, 0] = np.abs(b[:, 0]) * np.sign(b[:, 1])  # same marginals, a sign coupling no linear score sees
    groups_a = np.arange(240) // 20
    groups_b = np.arange(240) // 20
    # b lives in two quadrants of (x0, x1) at twice a's density there: the best possible AUC is 0.75
    assert c2st_mlp_auc(a, b, groups_a, groups_b).auc > 0.65
    assert c2st_auc(a, b, 0, groups_a=groups_a, groups_b=groups_b, features=(a, b)).auc < 0.6  # a linear score cannot
    same = c2st_mlp_auc(a, g.standard_normal((240, 6)), groups_a, groups_b)
    assert 0.35 < same.auc < 0.65
