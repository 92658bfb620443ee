"""Per-window power levels (``utils/eeg_levels.py``, VAR ``num_levels``): the features against written-out band
powers, the clusters against windows at known gains, and the model's use of the level against a class-only VAR
whose class embedding holds the sum by hand."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from models import VQVAE, build_var
from utils.eeg_levels import LevelClusters, fit_level_clusters, observed_levels, window_levels
from utils.errors import UserError

SF = 100.0
BANDS = [[0.5, 4.0], [4.0, 8.0], [8.0, 13.0], [13.0, 30.0], [30.0, 45.0]]


def test_window_levels_of_sines_match_their_power():
    """A sine of amplitude A carries A^2 / 2 µV^2; in the band that holds it, on every channel."""
    t = np.arange(400) / SF
    amps = np.array([[2.0, 8.0], [5.0, 1.0]])  # (window, channel) amplitudes of a 10-Hz sine
    x = amps[:, :, None] * np.sin(2 * np.pi * 10.0 * t)[None, None, :]
    lv = window_levels(x, SF, BANDS)
    want = np.log10(amps ** 2 / 2).mean(axis=1)  # channel mean of log10 power
    np.testing.assert_allclose(lv[:, 2], want, atol=0.03)
    assert (lv[:, [0, 1, 3, 4]] < want[:, None] - 2).all()  # nothing leaks two decades into other bands


def _noise_windows(gains: np.ndarray, rng, C: int = 3, T: int = 200) -> np.ndarray:
    return rng.standard_normal((len(gains), C, T)) * gains[:, None, None]


def test_clusters_find_known_levels_sorted_quietest_first():
    """White noise at four known gains (two per class, unequal counts): one cluster per gain, numbered from the
    quietest, priors = the gains' shares; new windows join their gain's cluster."""
    rng = np.random.default_rng(0)
    gain = np.array([1.0, 10.0, 30.0, 3.0])  # class 0: gains 1, 10; class 1: gains 30, 3
    which = np.repeat([0, 1, 2, 3], [20, 40, 30, 30])
    x = _noise_windows(gain[which], rng)
    labels = which // 2
    cl = fit_level_clusters(window_levels(x, SF, BANDS), labels, num_classes=2, num_levels=2, bands=BANDS)
    lv = cl.assign(window_levels(x, SF, BANDS), labels)
    want = np.array([0, 1, 1, 0])[which]  # quietest first inside each class
    assert lv.tolist() == want.tolist()
    np.testing.assert_allclose(cl.prior, [[1 / 3, 2 / 3], [0.5, 0.5]])
    new = np.array([0, 1, 2, 3, 2])
    x_new = _noise_windows(gain[new], rng)
    assert cl.assign(window_levels(x_new, SF, BANDS), new // 2).tolist() == np.array([0, 1, 1, 0])[new].tolist()
    back = LevelClusters.from_dict(cl.to_dict())
    assert back.assign(window_levels(x_new, SF, BANDS), new // 2).tolist() == np.array([0, 1, 1, 0])[new].tolist()


def test_partly_observed_windows_get_their_level():
    """observed_levels: half of each window missing (zeros) or only the low bands seen still gives the level."""
    rng = np.random.default_rng(1)
    gain = np.array([1.0, 1.6, 2.56])  # 4 dB apart: missing half the samples (-3 dB) would move a window a level
    which = np.repeat([0, 1, 2], 30)
    T = 800
    cl = fit_level_clusters(window_levels(_noise_windows(gain[which], rng, T=T), SF, BANDS), np.zeros(90, int), 1, 3,
                            BANDS)
    new = np.array([0, 1, 2, 2, 1])
    x = _noise_windows(gain[new], rng, T=T)
    mask = np.zeros((5, T), bool)
    mask[:, 200:600] = True  # half the window
    assert observed_levels(cl, np.where(mask[:, None], 0.0, x), np.zeros(5, int), SF, mask_NT=mask).tolist() == new.tolist()
    # without the 1 / observed-fraction correction the quieter windows would look one level lower
    assert cl.assign(window_levels(np.where(mask[:, None], 0.0, x), SF, BANDS), np.zeros(5, int)).tolist() != new.tolist()
    # band completion: only delta and theta are seen; the other bands hold a loud 20-Hz sine
    x_low = x + 20.0 * np.sin(2 * np.pi * 20 * np.arange(T) / SF)
    assert observed_levels(cl, x_low, np.zeros(5, int), SF, n_bands_observed=2).tolist() == new.tolist()
    assert observed_levels(cl, x_low, np.zeros(5, int), SF).tolist() != new.tolist()


def test_bad_level_inputs_are_one_line_errors():
    rng = np.random.default_rng(2)
    f = window_levels(_noise_windows(np.ones(6), rng), SF, BANDS)
    with pytest.raises(UserError, match=r"class 1 has 2 training windows, fewer than --level_clusters=3"):
        fit_level_clusters(f, np.array([0, 0, 0, 0, 1, 1]), 2, 3, BANDS)
    f[0, 0] = np.nan
    with pytest.raises(UserError, match="NaN"):
        fit_level_clusters(f, np.zeros(6, int), 1, 2, BANDS)
    cl = fit_level_clusters(f[1:], np.zeros(5, int), 1, 2, BANDS)
    with pytest.raises(UserError, match="do not fit 5 bands"):
        cl.assign(f[:, :3], np.zeros(6, int))
    with pytest.raises(UserError, match="outside the level clusters' 1 classes"):
        cl.assign(f[1:], np.array([0, 0, 1, 0, 0]))
    d = cl.to_dict()
    d["prior"] = [[1.0]]
    with pytest.raises(ValueError, match="inconsistent shapes"):
        LevelClusters.from_dict(d)


# ------------------------------------------------------------------------------------------ the model
PNS = (4, 6, 8)


def _vae():
    torch.manual_seed(0)
    return VQVAE(in_channels=3, vocab_size=16, z_channels=8, ch=32, ch_mult=(1, 2), num_res_blocks=1, v_patch_nums=PNS,
                 test_mode=True)


def _pair(R: int = 3, fhat: int = 1, L: int = 3, K: int = 2):
    """A VAR with L levels and a class-only VAR with the same weights: (vae, with_levels, class_only)."""
    vae = _vae()
    torch.manual_seed(1)
    var = build_var(vae, "cpu", num_classes=K, depth=2, intra_ar=R, intra_ar_fhat=fhat, num_levels=L)
    var.init_weights(init_adaln=0.5, init_adaln_gamma=0.5, init_head=1.0, init_std=0.05)
    torch.nn.init.normal_(var.level_emb.weight, std=0.5)  # levels that matter
    if R:
        torch.nn.init.normal_(var.intra_ar_head.fc2.weight, std=0.3)
    plain = build_var(vae, "cpu", num_classes=K, depth=2, intra_ar=R, intra_ar_fhat=fhat)
    state = {k: v for k, v in var.state_dict().items() if not k.startswith(("level_emb", "level_prior"))}
    plain.load_state_dict(state, strict=True)
    return vae, var.eval(), plain.eval()


def _class_only_with_level(plain, var, level: int):
    """``plain`` with class row c := class_emb[c] + level_emb[level] and the null row := null + unknown level."""
    with torch.no_grad():
        w = var.class_emb.weight.clone()
        w[:var.num_classes] += var.level_emb.weight[level]
        w[var.num_classes] += var.level_emb.weight[var.num_levels]
        plain.class_emb.weight.copy_(w)
    return plain


def test_level_enters_the_condition_as_a_summed_embedding():
    vae, var, plain = _pair()
    torch.manual_seed(3)
    idx = [torch.randint(0, 16, (2, pn)) for pn in PNS]
    x_in, gt = vae.quantize.idxBl_to_var_input(idx), torch.cat(idx, 1)
    lab = torch.tensor([0, 1])
    with torch.no_grad():
        for lv in range(var.num_levels):
            got = var(lab, x_in, gt, level_B=torch.full((2,), lv))
            want = _class_only_with_level(plain, var, lv)(lab, x_in, gt)
            torch.testing.assert_close(got, want)
        unknown = var(lab, x_in, gt, level_B=torch.full((2,), var.num_levels))
        torch.testing.assert_close(var(lab, x_in, gt), unknown)  # no level given = the unknown level
        assert (var(lab, x_in, gt, level_B=torch.zeros(2, dtype=torch.long)) - unknown).abs().max() > 1e-2


@pytest.mark.parametrize("B", [1, 3])
def test_sampling_with_a_fixed_level_is_the_class_only_model_with_the_summed_embedding(B):
    """Every sampler path (batch 1 folds guidance into the push tables) conditions on class + level: the same
    seed gives the same tokens as the class-only model whose class rows hold the sum."""
    vae, var, plain = _pair()
    lab = torch.arange(B) % 2
    for lv in (0, 2):
        _, idx_lv, _ = var.autoregressive_infer_cfg(B, lab, g_seed=7, cfg=1.5, ret_stages=True, level_B=lv)
        _, idx_pl, _ = _class_only_with_level(plain, var, lv).autoregressive_infer_cfg(B, lab, g_seed=7, cfg=1.5,
                                                                                        ret_stages=True)
        for a, b in zip(idx_lv, idx_pl):
            assert torch.equal(a, b)


def test_levels_are_drawn_from_the_class_prior_and_unknown_for_the_null_class():
    vae, var, _ = _pair(L=4)
    var.set_level_prior(torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.0, 0.0, 1.0, 0.0]]))
    g = torch.Generator().manual_seed(0)
    n = 20000
    lv0 = var.resolve_levels(torch.zeros(n, dtype=torch.long), None, g)
    np.testing.assert_allclose(np.bincount(lv0.numpy(), minlength=4) / n, [0.1, 0.2, 0.3, 0.4], atol=0.015)
    assert var.resolve_levels(torch.ones(50, dtype=torch.long), None, g).tolist() == [2] * 50
    mixed = var.resolve_levels(torch.tensor([1, 2, 1]), None, g)  # 2 = the null class
    assert mixed.tolist() == [2, 4, 2]
    assert var.resolve_levels(torch.tensor([0, 1]), -1, g).tolist() == [4, 4]
    with pytest.raises(ValueError, match="one level in 0..4"):
        var.resolve_levels(torch.tensor([0, 1]), torch.tensor([0, 5]), g)
    with pytest.raises(ValueError, match="expected \\(2, 4\\)"):
        var.set_level_prior(torch.ones(3, 4) / 4)
    no_levels = build_var(_vae(), "cpu", num_classes=2, depth=2)
    with pytest.raises(ValueError, match="has no levels"):
        no_levels.resolve_levels(torch.tensor([0]), 1, g)


def test_training_drops_the_level_with_the_class_and_on_its_own():
    """Replay of the documented rule with the same generator: class dropped with p, level dropped with the
    class or with its own draw at p."""
    vae, var, _ = _pair(R=0, fhat=0)
    var.cond_drop_rate = 0.5
    seen = {}
    orig = var.condition

    def spy(label_B, level_B=None):
        seen["label"], seen["level"] = label_B.clone(), level_B.clone()
        return orig(label_B, level_B)

    var.condition = spy
    B = 64
    lab, lvl = torch.randint(0, 2, (B,)), torch.randint(0, 3, (B,))
    idx = [torch.randint(0, 16, (B, pn)) for pn in PNS]
    var.train()
    var.train_rng.manual_seed(11)
    var(lab, vae.quantize.idxBl_to_var_input(idx), level_B=lvl)
    g = torch.Generator().manual_seed(11)
    drop_cls = torch.rand(B, generator=g) < 0.5
    drop_lvl = drop_cls | (torch.rand(B, generator=g) < 0.5)
    assert torch.equal(seen["label"], torch.where(drop_cls, 2, lab))
    assert torch.equal(seen["level"], torch.where(drop_lvl, 3, lvl))
    assert 0 < int((drop_lvl & ~drop_cls).sum()) < B  # both kinds of drop happened


def test_outlier_windows_do_not_take_a_level_of_their_own():
    """Two real gain groups plus 3 % flat windows (1000x quieter) and 2 % bursts: with 2 levels the groups are
    split (the outliers would otherwise take a level), the outliers join the nearest level, and the prior counts
    them."""
    rng = np.random.default_rng(3)
    gain = np.array([1.0, 3.0, 1e-3, 300.0])
    which = np.repeat([0, 1, 2, 3], [50, 45, 3, 2])
    x = _noise_windows(gain[which], rng)
    cl = fit_level_clusters(window_levels(x, SF, BANDS), np.zeros(100, int), 1, 2, BANDS)
    lv = cl.assign(window_levels(x, SF, BANDS), np.zeros(100, int))
    assert lv[which == 0].tolist() == [0] * 50 and lv[which == 1].tolist() == [1] * 45
    assert lv[which == 2].tolist() == [0] * 3 and lv[which == 3].tolist() == [1] * 2
    np.testing.assert_allclose(cl.prior, [[0.53, 0.47]])
