"""Metrics with known answers: SNR, MSE, per-band PSD error, channel-correlation distance, LSD, C2ST."""
from __future__ import annotations

import numpy as np
import pytest

from utils.eeg_c2st import c2st_auc, c2st_features, feature_groups, group_folds, overlap_groups, roc_auc
from utils.eeg_metrics import (band_power_spread, band_powers, channel_corr_distance, clip_bands, log_spectral_distance, mse,
                               psd_band_error_db, snr_db, welch_psd)
from utils.errors import UserError

SFREQ = 100.0


def _mixed_windows(rng: np.random.Generator, n: int, n_ch: int = 4, n_t: int = 400) -> np.ndarray:
    """Correlated broadband windows: white noise mixed across channels (fixed mixing) and smoothed."""
    mix = np.linalg.qr(np.random.default_rng(123).standard_normal((n_ch, n_ch)))[0] * np.arange(1, n_ch + 1)
    w = rng.standard_normal((n, n_ch, n_t))
    w = np.einsum("cd,ndt->nct", mix, w)
    return w + 0.5 * np.roll(w, 1, axis=-1)


def test_snr_of_known_noise_level(rng):
    x = rng.standard_normal((20, 3, 1000)) * 10.0
    noise = rng.standard_normal(x.shape) * 1.0  # signal power 100, noise power 1 -> 20 dB
    assert snr_db(x, x + noise) == pytest.approx(20.0, abs=0.1)
    per = snr_db(x, x + noise, per_window=True)
    assert per.shape == (20,) and np.all(np.abs(per - 20.0) < 0.5)
    assert snr_db(x, x) == np.inf
    assert snr_db(x, np.zeros_like(x)) == pytest.approx(0.0)
    assert mse(x, x + noise) == pytest.approx(1.0, rel=0.05)
    with pytest.raises(UserError, match="shape"):
        snr_db(x, x[:, :2])


def test_psd_error_zero_for_identical_and_3db_for_sqrt2(rng):
    x = _mixed_windows(rng, 10)
    err0 = psd_band_error_db(x, x, SFREQ)
    assert list(err0) == ["delta", "theta", "alpha", "beta", "gamma"]
    assert max(err0.values()) == pytest.approx(0.0, abs=1e-9)
    err = psd_band_error_db(x, np.sqrt(2.0) * x, SFREQ)
    for v in err.values():
        assert v == pytest.approx(10 * np.log10(2.0), abs=1e-6)  # 3.0103 dB
    # a different number of windows is fine; clipping drops nothing below 45 Hz except gamma's top
    err45 = psd_band_error_db(x, x[:5], SFREQ, f_max=45.0)
    assert len(err45) == 5 and all(v < 1.0 for v in err45.values())


def test_band_powers_find_a_sine_in_its_band():
    t = np.arange(1000) / SFREQ
    x = np.sin(2 * np.pi * 10.0 * t)[None, None, :] * 2.0  # 10 Hz, power 2 µV²
    freqs, psd = welch_psd(x, SFREQ)
    bp = band_powers(freqs, psd)
    assert np.argmax(bp) == 2  # alpha
    assert bp[2] == pytest.approx(2.0, rel=0.05)
    assert bp[[0, 1, 3, 4]].max() < 1e-3 * bp[2]
    assert clip_bands([(0.5, 4), (30, 50)], 45.0).tolist() == [[0.5, 4.0], [30.0, 45.0]]


def test_channel_corr_distance(rng):
    a = _mixed_windows(rng, 30)
    assert channel_corr_distance(a, a) == pytest.approx(0.0, abs=1e-12)
    b = _mixed_windows(rng, 30)
    independent = rng.standard_normal(a.shape)
    d_same = channel_corr_distance(a, b)
    d_diff = channel_corr_distance(a, independent)
    assert d_same < 0.1 < d_diff
    # permuting channels of a (which is not symmetric under permutation) changes the structure
    assert channel_corr_distance(a, a[:, ::-1]) > d_same


def test_log_spectral_distance(rng):
    x = _mixed_windows(rng, 4)
    assert log_spectral_distance(x, x, SFREQ, band=(13, 30)) == pytest.approx(0.0, abs=1e-9)
    assert log_spectral_distance(x, 0.5 * x, SFREQ, band=(13, 30)) == pytest.approx(20 * np.log10(2), abs=1e-6)


def test_roc_auc_known_values():
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert roc_auc([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert roc_auc([0, 1, 0, 1], [1, 1, 1, 1]) == 0.5


def test_c2st_half_of_one_distribution_vs_different(rng):
    x = _mixed_windows(rng, 80, n_t=200)
    same = c2st_auc(x[:40], x[40:], SFREQ, n_folds=4)
    assert 0.3 < same.auc < 0.7 and same.n_folds == 4 and len(same.fold_aucs) == 4
    other = x[40:] * np.array([1.0, 1.0, 1.6, 1.0])[None, :, None]  # one channel 4 dB louder
    diff = c2st_auc(x[:40], other, SFREQ, n_folds=4)
    assert diff.auc > 0.95


def test_c2st_by_feature_kind_finds_what_differs(rng):
    """Two sets of white windows with the same per-channel power, one with independent channels and one whose
    channels share half their power: the correlation columns tell them apart, the band-power columns do not."""
    n, C, T = 80, 4, 400
    indep = rng.standard_normal((n, C, T))
    shared = (rng.standard_normal((n, C, T)) + rng.standard_normal((n, 1, T))) / np.sqrt(2.0)
    F_a, F_b = c2st_features(indep, SFREQ), c2st_features(shared, SFREQ)
    groups = feature_groups(F_a.shape[1], C)
    assert groups["channel correlation"] == slice(F_a.shape[1] - C * (C - 1) // 2, F_a.shape[1])
    auc = {k: c2st_auc(indep, shared, SFREQ, n_folds=4, features=(F_a[:, s], F_b[:, s])).auc for k, s in groups.items()}
    assert auc["channel correlation"] > 0.95 and 0.3 < auc["band power"] < 0.7
    with pytest.raises(UserError, match="cannot hold the 6 channel correlations"):
        feature_groups(6, C)


def test_c2st_groups_never_straddle_folds(rng):
    groups_a = np.repeat(["r1", "r2", "r3"], 5)
    groups_b = np.repeat(["r1", "r2", "r4", "r5"], 4)  # shared ids r1, r2 tie windows of both sets
    fa, fb, k = group_folds(groups_a, groups_b, 5, rng)
    assert k == 3
    for g in np.unique(np.concatenate([groups_a, groups_b])):
        folds = set(fa[groups_a == g]) | set(fb[groups_b == g])
        assert len(folds) == 1
    with pytest.raises(UserError, match="at least 2 groups"):
        c2st_auc(np.zeros((3, 2, 100)) + 1, np.ones((3, 2, 100)), SFREQ, groups_a=["x"] * 3)


def test_overlap_groups_join_only_overlapping_windows_of_one_recording():
    # 500-sample windows: 0, 250, 500 overlap in a chain (one group); 2000 and 2600 are 600 apart (two groups); the
    # same starts in another recording never join; a window starting exactly one length later is separate
    src = ["a", "a", "a", "a", "a", "b", "b", "c", "c"]
    starts = [500, 0, 250, 2000, 2600, 0, 250, 0, 500]
    g = overlap_groups(src, starts, 500)
    want = [["a0", "a1", "a2"], ["a3"], ["a4"], ["b0", "b1"], ["c0"], ["c1"]]
    name = {f"{s}{i - src.index(s)}": g[i] for i, s in enumerate(src)}
    blocks = [{name[k] for k in block} for block in want]
    assert all(len(b) == 1 for b in blocks)  # one id inside each block
    assert len({next(iter(b)) for b in blocks}) == len(want)  # a different id for every block
    with pytest.raises(UserError, match="2 sources but 1 starts"):
        overlap_groups(["a", "b"], [0], 500)


def test_c2st_grouped_floor_hides_what_the_classifier_could_learn_of_subjects(rng):
    """Reference: 4 subjects near one mean; other set: 4 subjects, each with its own offset. Grouped by subject, a
    test fold holds a subject the classifier never met, whose offset is new to it; each window its own group (as
    generated windows are tested), it has met every subject and tells the sets apart. This is why bench_samples
    reports the ungrouped floor beside the grouped one."""
    n_per, D = 20, 6
    mean = np.concatenate([0.2 * rng.standard_normal((4, D)), rng.standard_normal((4, D))])
    F = np.concatenate([m + 0.3 * rng.standard_normal((n_per, D)) for m in mean])
    subj = np.repeat(np.arange(8), n_per)
    ref, oth = subj < 4, subj >= 4
    a, b = np.zeros((ref.sum(), 1, 10)), np.zeros((oth.sum(), 1, 10))  # features are given; these give the counts
    grouped = c2st_auc(a, b, SFREQ, groups_a=subj[ref], groups_b=subj[oth], features=(F[ref], F[oth])).auc
    ungrouped = c2st_auc(a, b, SFREQ, groups_a=subj[ref], groups_b=None, features=(F[ref], F[oth])).auc
    assert ungrouped > 0.85 and ungrouped > grouped + 0.2


def test_spectral_shape_known_answers(rng):
    from utils.eeg_metrics import alpha_peak, edge_drop_db, mean_psd_db, spectral_shape
    # a bump of 6 dB at 10.25 Hz on a flat floor: peak there, prominence 6 dB over the flanks
    f = np.arange(0, 50.25, 0.25)
    db = 6.0 * np.exp(-0.5 * ((f - 10.25) / 0.4) ** 2)
    hz, prom = alpha_peak(f, db)
    assert hz == 10.25 and prom == pytest.approx(6.0, abs=1e-3)
    # a straight line falling 0.5 dB/Hz drops 1 dB across any edge at +-1 Hz
    assert edge_drop_db(f, -0.5 * f, 13.0) == pytest.approx(1.0)
    # white noise of variance s^2 has a one-sided PSD of 2 s^2 / fs
    fs, s = 100.0, 3.0
    x = rng.normal(0, s, size=(40, 2, 1000))
    freqs, p_db = mean_psd_db(x, fs)
    assert freqs[1] - freqs[0] == pytest.approx(1.0)
    assert np.median(p_db[1:-1]) == pytest.approx(10 * np.log10(2 * s * s / fs), abs=0.3)
    # twice the amplitude: 6.02 dB everywhere, no change of shape at any edge or of the alpha peak
    t = np.arange(500) / fs
    y = rng.normal(0, 1, size=(20, 2, 500)) + 3 * np.sin(2 * np.pi * 10 * t)
    shape = spectral_shape(y, 2 * y, fs, edges_hz=(4, 8, 13, 30))
    assert shape["mean_abs_db"] == pytest.approx(20 * np.log10(2), abs=1e-6)
    assert shape["alpha_hz_ref"] == shape["alpha_hz_est"] == 10.0
    assert all(abs(v) < 1e-9 for v in shape["edge_step_db"].values())
    assert set(shape["edge_step_db"]) == {"4", "8", "13", "30"}


def test_band_power_spread_recovers_known_window_gains(rng):
    """White noise scaled per window by 10^(s z / 2), z ~ N(0, 1): log10 band power varies by s from window to
    window (written out: log10(g^2 P) = s z + log10 P), plus a little Welch estimation noise. Inside groups that
    share one gain the spread is the estimation noise alone; two classes with different gain spreads average."""
    N, C, T, sf, s = 400, 3, 500, 100.0, 0.3
    z = rng.standard_normal(N)
    groups = np.repeat(np.arange(N // 20), 20)
    z_group = rng.standard_normal(N // 20)[groups]
    noise = rng.standard_normal((N, C, T))
    spread = band_power_spread(noise * 10 ** (s * z / 2)[:, None, None], sf, f_max=45.0)
    est_noise = band_power_spread(noise, sf, f_max=45.0)  # estimation noise alone (~0.06 for 1-s segments)
    np.testing.assert_allclose(spread, np.sqrt(s ** 2 + est_noise ** 2), rtol=0.12)
    within = band_power_spread(noise * 10 ** (s * z_group / 2)[:, None, None], sf, groups_N=groups, f_max=45.0)
    np.testing.assert_allclose(within, est_noise * np.sqrt(19 / 20), rtol=0.12)
    labels = np.arange(N) % 2
    two = band_power_spread(noise * 10 ** (np.where(labels == 0, s, 2 * s) * z / 2)[:, None, None], sf, labels, f_max=45.0)
    np.testing.assert_allclose(two, (np.sqrt(s ** 2 + est_noise ** 2) + np.sqrt(4 * s ** 2 + est_noise ** 2)) / 2, rtol=0.12)
    with pytest.raises(UserError, match="400 windows but 3 labels"):
        band_power_spread(noise, sf, labels_N=np.zeros(3))


def test_scale_cutoffs_are_each_scales_latent_nyquist_and_its_folds():
    """5-s windows at 100 Hz, D = 2: scale L resolves L / 10 Hz of the 50-Hz latent, which also stands for 50 - L / 10
    Hz (the two samples of a latent position fold the spectrum at 25 Hz); the last scale has no cutoff."""
    from benchmarks.bench_samples import scale_cutoffs_hz
    tok = dict(sfreq=100.0, n_times=500, downsample=2, v_patch_nums=[50, 90, 130, 220, 250])
    want = sorted({L / 10 for L in (50, 90, 130, 220)} | {50 - L / 10 for L in (50, 90, 130, 220)})
    assert scale_cutoffs_hz(tok) == want == [5.0, 9.0, 13.0, 22.0, 28.0, 37.0, 41.0, 45.0]
    # D = 1: no folding inside the band, and a cutoff within 1 Hz of Nyquist is dropped
    assert scale_cutoffs_hz(dict(sfreq=100.0, n_times=500, downsample=1, v_patch_nums=[100, 490, 500])) == [10.0]


def test_low_power_share_of_sines_on_rfft_bins():
    """An offset of 1, a 0.2-Hz sine of amplitude 3 and a 10-Hz sine of amplitude 1 in a 5-s window (T samples): the
    rFFT gives |X(0)|² = T² and |X(f)|² = (a T / 2)² on a sine's bin, so the share below 0.5 Hz is
    (T² + 9 T²/4) / (T² + 9 T²/4 + T²/4); a channel with the 10-Hz sine alone has none."""
    from utils.eeg_metrics import low_power_share
    sfreq, T = 100.0, 500
    t = np.arange(T) / sfreq
    x = np.stack([1.0 + 3 * np.sin(2 * np.pi * 0.2 * t) + np.sin(2 * np.pi * 10 * t),
                  np.sin(2 * np.pi * 10 * t)])[None]
    low, high = T ** 2 * 1 + (T / 2) ** 2 * 9, (T / 2) ** 2 * 1
    want = (low / (low + high) + 0.0) / 2  # the second channel has nothing below 0.5 Hz
    assert low_power_share(x, sfreq, 0.5) == pytest.approx(want, rel=1e-9)
    assert low_power_share(np.zeros((1, 2, T)), sfreq, 0.5) == 0.0


def test_c2st_over_draws_judges_every_set_against_each_split_and_class(rng):
    """Reference windows: white noise in both splits and classes. Class 0 of every drawn set is the same noise (a
    classifier cannot tell, AUC near 0.5); class 1 is 3x louder (band powers +9.5 dB, AUC near 1). Each set must be
    drawn with its own seed, and the sd is the sample sd (ddof 1) of the sets' AUCs."""
    import statistics
    from benchmarks.bench_samples import c2st_over_draws
    C, T, sf = 3, 500, 100.0
    tok = {"sfreq": sf, "bands": [[0.5, 4.0], [4.0, 8.0], [8.0, 13.0], [13.0, 30.0], [30.0, 50.0]]}
    labels = np.repeat([0, 1], 40)
    sources = np.array([f"s{i % 8}" for i in range(80)])
    rec = {s: rng.standard_normal((80, C, T)) for s in ("val", "train")}
    real = {s: (None, labels, sources) for s in ("val", "train")}
    seeds = []

    def draw(seed):
        seeds.append(seed)
        r = np.random.default_rng(seed)
        lab = np.repeat([0, 1], 60)
        x = r.standard_normal((120, C, T)) * np.where(lab == 1, 3.0, 1.0)[:, None, None]
        return {"signal": x, "labels": lab}

    out = c2st_over_draws(draw, 3, rec, tok, real, ["rest", "task"])
    assert seeds == [0, 1000, 2000]
    assert set(out) == {"val/rest", "val/task", "train/rest", "train/task"}
    for key, d in out.items():
        assert len(d["auc"]) == 3
        assert d["mean"] == pytest.approx(sum(d["auc"]) / 3)
        assert d["sd"] == pytest.approx(statistics.stdev(d["auc"]))
        if key.endswith("task"):
            assert min(d["auc"]) > 0.95
        else:
            assert abs(d["mean"] - 0.5) < 0.15 and len(set(d["auc"])) == 3  # three different sets, three AUCs
    with pytest.raises(UserError, match="--draws=0"):
        c2st_over_draws(draw, 0, rec, tok, real, ["rest", "task"])
