"""BandMix: per-band channel maps against written-out sines, numpy covariances and scipy matrix square roots."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from models.band_mix import BandMix, band_index_F, choose_alpha, matching_map, mean_abs_corr  # noqa: E402
from models.vqvae import VQVAE  # noqa: E402

SFREQ, T, C = 100.0, 400, 4
BANDS = [[0.5, 4.0], [4.0, 8.0], [8.0, 13.0], [13.0, 30.0], [30.0, 45.0]]
# one sine per band on exact rFFT bins (0.25-Hz resolution), and one above the top band (48 Hz, never mixed)
FREQS = [2.0, 6.0, 10.0, 20.0, 40.0]
OUTSIDE_HZ = 48.0


def _random_spd(rng: np.random.Generator, n: int) -> np.ndarray:
    A = rng.standard_normal((n, n))
    return A @ A.T + 0.5 * np.eye(n)


def _band_cov_numpy(x_NCT: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Pooled Re Σ X X^H over the bins lo <= f < hi, written out with numpy (the test's own band selection)."""
    f = np.fft.rfftfreq(x_NCT.shape[-1], 1 / SFREQ)
    X = np.fft.rfft(x_NCT, axis=-1)[..., (f >= lo) & (f < hi)]
    return np.einsum('ncf,ndf->cd', X, X.conj()).real / len(x_NCT)


def test_band_index_follows_the_band_edges():
    f = np.fft.rfftfreq(T, 1 / SFREQ)
    idx = band_index_F(BANDS, SFREQ, T)
    for k, (lo, hi) in enumerate(BANDS):
        expect = (f >= lo) & ((f <= hi) if k == len(BANDS) - 1 else (f < hi))
        assert np.array_equal(idx == k, expect), k
    assert (idx[f < 0.5] == -1).all() and (idx[f > 45.0] == -1).all()


def test_matching_map_turns_one_covariance_into_the_other():
    rng = np.random.default_rng(0)
    Sx, Sr = _random_spd(rng, 6), _random_spd(rng, 6)
    M = matching_map(Sx, Sr)
    np.testing.assert_allclose(M @ Sr @ M.T, Sx, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(M, np.real(scipy.linalg.sqrtm(Sx)) @ np.linalg.inv(np.real(scipy.linalg.sqrtm(Sr))),
                               rtol=1e-6, atol=1e-8)


def test_forward_mixes_each_band_by_its_own_map_and_nothing_else():
    """Sines on exact bins: channel c of the output is Σ_d W_k[c, d] a_d sin(2π f t + φ_d) for the sine of band k,
    the 48-Hz sine (outside every band) passes unchanged; an input holding two bands stays band-limited."""
    rng = np.random.default_rng(1)
    mix = BandMix(len(BANDS), C, T)
    W_KCC = rng.standard_normal((len(BANDS), C, C))
    with torch.no_grad():
        mix.W_KCC.copy_(torch.from_numpy(W_KCC))
        mix.band_F.copy_(torch.from_numpy(band_index_F(BANDS, SFREQ, T)))
    W_KCC = mix.W_KCC.double().numpy()  # the maps as stored (float32)
    t = np.arange(T) / SFREQ
    amp, phase = rng.uniform(0.5, 2, (len(FREQS) + 1, C)), rng.uniform(0, 2 * np.pi, (len(FREQS) + 1, C))
    x_CT, expect_CT = np.zeros((C, T)), np.zeros((C, T))
    for j, f in enumerate(FREQS + [OUTSIDE_HZ]):
        s_CT = amp[j, :, None] * np.sin(2 * np.pi * f * t + phase[j, :, None])
        x_CT += s_CT
        expect_CT += W_KCC[j] @ s_CT if j < len(FREQS) else s_CT
    out = mix(torch.from_numpy(x_CT[None])).numpy()[0]
    np.testing.assert_allclose(out, expect_CT, atol=1e-9)
    # a partial decode of stages delta and theta only: nothing appears above 8 Hz
    low_CT = sum(amp[j, :, None] * np.sin(2 * np.pi * FREQS[j] * t + phase[j, :, None]) for j in range(2))
    P = np.abs(np.fft.rfft(mix(torch.from_numpy(low_CT[None])).numpy()[0], axis=-1)) ** 2
    f = np.fft.rfftfreq(T, 1 / SFREQ)
    assert P[:, f >= 8.0].max() < 1e-18 * P.max()
    # uncalibrated: the identity, exactly
    assert torch.equal(BandMix(len(BANDS), C, T)(torch.from_numpy(x_CT[None])), torch.from_numpy(x_CT[None]))


def _correlated_pair(rng, n: int):
    """Inputs with independent channels of random gain; decodes that add a shared component (too correlated)."""
    x = rng.standard_normal((n, C, T)) * rng.uniform(0.5, 2.0, (1, C, 1))
    rec = 0.8 * x + 0.6 * x.mean(1, keepdims=True)
    return x, rec


def test_full_calibrated_map_restores_each_bands_input_covariance():
    rng = np.random.default_rng(2)
    x, rec = _correlated_pair(rng, 40)
    mix = BandMix(len(BANDS), C, T)
    alphas = mix.calibrate_(x, rec, band_index_F(BANDS, SFREQ, T), np.zeros(len(x)), alpha=1.0)
    assert alphas == [1.0] * len(BANDS) and mix.is_calibrated()
    out = mix(torch.from_numpy(rec)).numpy()
    for lo, hi in BANDS[:-1]:  # (the top band also owns its edge bin; the others are lo <= f < hi)
        Sx, Sout = _band_cov_numpy(x, lo, hi), _band_cov_numpy(out, lo, hi)
        np.testing.assert_allclose(Sout, Sx, rtol=1e-4, atol=1e-5 * np.abs(Sx).max())  # float32 maps
        assert not np.allclose(_band_cov_numpy(rec, lo, hi), Sx, rtol=0.05)  # the decodes did differ
    mix.reset_()
    assert not mix.is_calibrated() and torch.equal(mix(torch.from_numpy(rec)), torch.from_numpy(rec))


def test_alpha_is_chosen_by_the_held_out_fold():
    rng = np.random.default_rng(3)
    x, rec = _correlated_pair(rng, 60)
    fold = np.arange(60) % 2
    f = np.fft.rfftfreq(T, 1 / SFREQ)
    in_alpha = (f >= 8) & (f < 13)

    def cov(z):  # per-window band covariances, numpy
        Z = np.fft.rfft(z, axis=-1)[..., in_alpha]
        return np.einsum('ncf,ndf->ncd', Z, Z.conj()).real

    Sx, Sr = cov(x), cov(rec)
    assert mean_abs_corr(Sr) > mean_abs_corr(Sx) + 0.1
    # the same distortion on both folds: the full map is right
    assert choose_alpha(Sx, Sr, fold) >= 0.9
    # decodes whose channels are the inputs' relabelled: already the inputs' mean |correlation|, so no mixing
    perm = rng.permutation(C)
    assert choose_alpha(Sx, cov(x[:, perm]), fold) == 0.0


def test_alpha_keeps_the_held_out_snr_loss_within_its_limit():
    """Decodes that keep the common signal and almost nothing of each channel: the full map would amplify that
    remainder (mostly error) into every channel. The guard keeps the factor whose held-out SNR loss, recomputed
    here from the mixed signals with numpy, is at most 1 dB; without it the correlation match alone goes further."""
    rng = np.random.default_rng(5)
    n = 60
    x = rng.standard_normal((n, C, T))
    rec = x.mean(1, keepdims=True) + 0.05 * rng.standard_normal((n, C, T))
    fold = np.arange(n) % 2
    f = np.fft.rfftfreq(T, 1 / SFREQ)
    band = (f >= 13) & (f < 30)
    from models.band_mix import band_cov
    Sx, Sr, Sxr = band_cov(x, band), band_cov(rec, band), band_cov(x, band, rec)
    free = choose_alpha(Sx, Sr, fold)
    guarded = choose_alpha(Sx, Sr, fold, Sxr_NCC=Sxr)
    assert guarded < free

    def held_out_loss_db(a: float) -> float:  # the worse fold: fit on one, judge the other
        losses = []
        for held in (fold == 0, fold == 1):
            M = matching_map(Sx[~held].mean(0), Sr[~held].mean(0))
            W = (1 - a) * np.eye(C) + a * M
            Xb = np.fft.rfft(x[held], axis=-1)[..., band]
            Rb = np.fft.rfft(rec[held], axis=-1)[..., band]
            e0 = np.sum(np.abs(Xb - Rb) ** 2)
            e1 = np.sum(np.abs(Xb - np.einsum('cd,ndf->ncf', W, Rb)) ** 2)
            losses.append(10 * np.log10(e1 / e0))
        return max(losses)

    assert held_out_loss_db(guarded) <= 1.0 + 1e-9
    assert held_out_loss_db(free) > 1.0
    # here the correlation gap shrinks all the way to the free choice, so the guard stops at the last allowed step
    assert held_out_loss_db(round(guarded + 0.1, 2)) > 1.0


def test_vqvae_decodes_through_the_mix_but_trains_without_it():
    torch.manual_seed(0)
    kw = dict(in_channels=C, vocab_size=16, z_channels=8, ch=8, ch_mult=(1, 1), arch='patch', v_patch_nums=(25, 50, 100),
              test_mode=True)
    plain = VQVAE(**kw)
    assert 'mix_bands' not in plain.get_config() and plain.mix is None  # configs of older checkpoints unchanged
    vae = VQVAE(**kw, mix_bands=3)
    assert vae.get_config()['mix_bands'] == 3
    vae.load_state_dict(plain.state_dict())  # an older state dict: the identity mix
    x = torch.randn(2, C, 200)
    torch.testing.assert_close(vae.eeg_to_reconstructed_eeg(x, last_one=True), plain.eeg_to_reconstructed_eeg(x, last_one=True))
    rng = np.random.default_rng(4)
    with torch.no_grad():
        vae.mix.W_KCC.copy_(torch.from_numpy(rng.standard_normal((3, C, C))))
        vae.mix.band_F.copy_(torch.from_numpy(band_index_F([[0.5, 4], [4, 8], [8, 50]], SFREQ, 200)))
    f_hat = vae.quantize.f_to_idxBl_or_fhat(vae.encode_BCl(x), to_fhat=True)[-1]
    torch.testing.assert_close(vae.fhat_to_eeg(f_hat), vae.mix(vae.decode_plain(f_hat)))
    assert not torch.allclose(vae.fhat_to_eeg(f_hat), vae.decode_plain(f_hat))
    torch.testing.assert_close(vae(x)[0], vae.decode_plain(f_hat))  # training's forward: the plain decoder
    again = VQVAE(**kw, mix_bands=3)
    again.load_state_dict(vae.state_dict())
    assert torch.equal(again.mix.W_KCC, vae.mix.W_KCC) and torch.equal(again.mix.band_F, vae.mix.band_F)


def test_bad_band_index_is_refused():
    mix = BandMix(2, C, T)
    with pytest.raises(ValueError, match='does not fit'):
        mix.calibrate_(np.zeros((2, C, T)), np.zeros((2, C, T)), np.zeros(5, dtype=np.int64), np.zeros(2))
