"""Zero-shot completion (VAR/zero_shot.py, VAR/complete.py): kept tokens and samples really are kept, an
empty mask returns the input, a full mask equals unconditional sampling, shapes and µV units, bad input.
Tiny random-init models; the baselines themselves are tested in test_bench_baselines.py."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from models import VQVAE, build_var
from utils.errors import UserError
from zero_shot import (band_keep_masks, check_time_mask, complete_tokens, complete_windows, forecast_mask,
                       parse_spans, scale_keep_masks, spans_to_mask, splice_observed)

PNS = (2, 3, 5, 8)  # latent length 8 -> T = 16 samples (downsample 2)
UV = 7.5  # µV per model unit


def make_models(G: int = 1):
    torch.manual_seed(0)
    vae = VQVAE(in_channels=3, vocab_size=16, z_channels=8, ch=32, ch_mult=(1, 2), num_res_blocks=1,
                v_patch_nums=PNS, tokens_per_pos=G, test_mode=True).eval()
    torch.manual_seed(1)
    var = build_var(vae, "cpu", num_classes=2, depth=2)
    var.init_weights(init_adaln=0.5, init_adaln_gamma=0.5, init_head=1.0, init_std=0.05)
    return var.eval(), vae


def test_scale_keep_masks_inside_and_overlap():
    mask = torch.zeros(1, 16, dtype=torch.bool)
    mask[0, 5:9] = True  # samples 5..8 missing
    inside = scale_keep_masks(mask, (2, 4, 16), "inside")
    overlap = scale_keep_masks(mask, (2, 4, 16), "overlap")
    # 4 positions of 4 samples: [0-3] ok, [4-7] hit, [8-11] hit, [12-15] ok
    assert inside[1][0].tolist() == [True, False, False, True]
    assert overlap[1][0].tolist() == [True, True, True, True]  # every position still sees an observed sample
    assert inside[2][0].tolist() == (~mask[0]).tolist()  # one position per sample: keep = observed
    assert overlap[2][0].tolist() == (~mask[0]).tolist()
    assert inside[0][0].tolist() == [False, False]


def test_spans_and_forecast_masks_and_errors():
    m = spans_to_mask(parse_spans("0.5:1.0,1.9:2.0"), sfreq=10.0, n_times=20)
    assert np.flatnonzero(m).tolist() == [5, 6, 7, 8, 9, 19]
    assert np.flatnonzero(forecast_mask(0.3, 10.0, 20)).tolist() == [17, 18, 19]
    with pytest.raises(UserError, match="outside the window"):
        spans_to_mask(parse_spans("1.5:2.5"), 10.0, 20)
    with pytest.raises(UserError, match="empty or reversed"):
        parse_spans("1.0:0.5")
    with pytest.raises(UserError, match="START:STOP"):
        parse_spans("abc")
    with pytest.raises(UserError, match="between 0"):
        forecast_mask(2.0, 10.0, 20)
    with pytest.raises(UserError, match="nothing to complete"):
        check_time_mask(np.zeros((2, 20), bool))
    with pytest.raises(UserError, match="missing entirely"):
        check_time_mask(np.ones((1, 20), bool))
    assert check_time_mask(np.ones((1, 20), bool), allow_full=True).all()


@pytest.mark.parametrize("G", [1, 2])
def test_kept_tokens_are_bit_exact_and_full_mask_is_unconditional(G):
    var, vae = make_models(G)
    x = torch.randn(3, 3, 16)
    src = vae.eeg_to_idxBl(x)
    mask = torch.zeros(3, 16, dtype=torch.bool)
    mask[:, 6:11] = True
    keep = scale_keep_masks(mask, PNS, "inside")
    _, idx, _ = complete_tokens(var, src, keep, label_B=-1, g_seed=3, cfg=0.0)
    n_kept = n_sampled_differs = 0
    for si in range(len(PNS)):
        k = keep[si].repeat_interleave(G, dim=1)
        assert torch.equal(idx[si][k], src[si][k])
        n_kept += int(k.sum())
        n_sampled_differs += int((idx[si][~k] != src[si][~k]).sum())
    assert n_kept > 0 and n_sampled_differs > 0  # the masked positions really are re-drawn
    # everything missing: exactly the unconditional sampler under the same seed and settings
    none = [torch.zeros(3, pn, dtype=torch.bool) for pn in PNS]
    for cfg in (0.0, 1.5):
        x_z, idx_z, _ = complete_tokens(var, src, none, label_B=torch.tensor([0, 1, 1]), g_seed=5, cfg=cfg, top_k=4)
        x_u, idx_u, _ = var.autoregressive_infer_cfg(B=3, label_B=torch.tensor([0, 1, 1]), g_seed=5, cfg=cfg, top_k=4,
                                                     ret_stages=True)
        assert torch.equal(x_z, x_u)
        assert all(torch.equal(a, b) for a, b in zip(idx_z, idx_u))
    # everything kept: the source's own tokens and their decode
    all_keep = [torch.ones(3, pn, dtype=torch.bool) for pn in PNS]
    x_k, idx_k, _ = complete_tokens(var, src, all_keep, g_seed=0)
    assert all(torch.equal(a, b) for a, b in zip(idx_k, src))
    torch.testing.assert_close(x_k, vae.idxBl_to_eeg(src, last_one=True))


def test_gap_filling_keeps_observed_samples_and_units():
    var, vae = make_models()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 16, generator=g) * 20.0  # µV
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[0, 4:9] = True
    mask[1, 12:] = True  # forecast-like
    out = complete_windows(var, vae, x, UV, mask_BT=mask, n_samples=3, seed=0, fade=2)
    assert out["draws"].shape == (3, 2, 3, 16) and out["mean"].shape == (2, 3, 16)
    obs = ~mask[:, None, :].expand_as(x)
    for s in range(3):
        assert torch.equal(out["draws"][s][obs], x[obs])  # bit-exact
    torch.testing.assert_close(out["mean"], out["draws"].mean(0))
    assert not torch.equal(out["draws"][0], out["draws"][1])  # different draws
    # the masked samples never reach the model: changing them changes nothing
    x2 = x.clone()
    x2[mask[:, None, :].expand_as(x)] = 1e4
    out2 = complete_windows(var, vae, x2, UV, mask_BT=mask, n_samples=1, seed=0, fade=2)
    torch.testing.assert_close(out2["draws"][0][~obs], out["draws"][0][~obs])
    # µV: with relative=False the completion is the model's decode times uv_scale (fade 0: plain splice);
    # by default it is the prefill plus the model's change to the decoded prefilled window
    from utils.eeg_baselines import fill_gap_linear
    pre = torch.as_tensor(fill_gap_linear(x.numpy(), mask.numpy()), dtype=torch.float32)
    src = vae.eeg_to_idxBl(pre / UV)
    x_gen, _, _ = complete_tokens(var, src, scale_keep_masks(mask, PNS), label_B=-1, g_seed=0)
    out3 = complete_windows(var, vae, x, UV, mask_BT=mask, n_samples=1, seed=0, fade=0, relative=False)
    torch.testing.assert_close(out3["draws"][0][~obs], (x_gen * UV)[~obs])
    out4 = complete_windows(var, vae, x, UV, mask_BT=mask, n_samples=1, seed=0, fade=0)
    expect = pre + (x_gen - vae.idxBl_to_eeg(src, last_one=True)) * UV
    torch.testing.assert_close(out4["draws"][0][~obs], expect[~obs], rtol=1e-4, atol=1e-4)


def test_empty_mask_returns_the_input():
    var, vae = make_models()
    x = torch.randn(2, 3, 16) * 10
    out = complete_windows(var, vae, x, UV, mask_BT=torch.zeros(2, 16, dtype=torch.bool), n_samples=2, seed=1)
    assert torch.equal(out["mean"], x)
    assert all(bool(k.all()) for k in out["keep"])


def test_full_mask_equals_unconditional_sampling_in_uv():
    var, vae = make_models()
    x = torch.randn(2, 3, 16) * 10
    out = complete_windows(var, vae, x, UV, mask_BT=torch.ones(2, 16, dtype=torch.bool), n_samples=2, seed=4, top_k=5)
    for s in range(2):
        x_u = var.autoregressive_infer_cfg(B=2, label_B=-1, g_seed=4 + s, cfg=0.0, top_k=5)
        torch.testing.assert_close(out["draws"][s], x_u * UV)
    assert not any(bool(k.any()) for k in out["keep"])


def test_splice_is_continuous_at_the_boundaries():
    obs = torch.zeros(1, 1, 12)
    gen = torch.full((1, 1, 12), 5.0)
    mask = torch.zeros(1, 12, dtype=torch.bool)
    mask[0, 3:9] = True
    out = splice_observed(obs, gen, mask, fade=2)
    assert torch.equal(out[0, 0, :3], obs[0, 0, :3]) and torch.equal(out[0, 0, 9:], obs[0, 0, 9:])
    # first and last gap samples are pulled most of the way to the observed level, the middle is generated
    assert out[0, 0, 3] < 2.0 and out[0, 0, 8] < 2.0 and out[0, 0, 5] == 5.0 and out[0, 0, 6] == 5.0
    assert torch.all(torch.diff(out[0, 0, 3:6]) >= 0)


def test_band_completion_keeps_low_scales_and_the_observed_stage():
    var, vae = make_models()
    x_low = torch.randn(2, 3, 16) * 10
    out = complete_windows(var, vae, x_low, UV, n_keep_scales=2, n_samples=2, seed=0)
    src = vae.eeg_to_idxBl(x_low / UV)
    keep = band_keep_masks(2, PNS, 2)
    _, idx, fhat = complete_tokens(var, src, keep, label_B=-1, g_seed=0)
    assert torch.equal(idx[0], src[0]) and torch.equal(idx[1], src[1])
    # output = observed + (decode(all) - decode(kept scales)): the added part is the model's high bands
    added = (vae.fhat_to_eeg(fhat[-1]) - vae.fhat_to_eeg(fhat[1])) * UV
    torch.testing.assert_close(out["draws"][0] - x_low, added, rtol=1e-4, atol=1e-4)
    assert out["draws"].shape == (2, 2, 3, 16)


@pytest.mark.parametrize("label", [-1, "per window", None])
def test_band_completion_gives_only_the_completed_bands_their_group_gain(label):
    from models.band_gain import BandGain
    var, vae = make_models()
    sfreq, T = 16.0, 16  # rFFT bins at 0, 1, ..., 8 Hz
    bands = [(0.0, 2.0), (2.0, 4.0), (4.0, 6.0), (6.0, 8.0)]  # the top band also owns 8 Hz (Nyquist)
    gain = BandGain(bands, sfreq, T)
    rng = np.random.default_rng(0)
    table = rng.uniform(-4, 4, size=(3, 1, 3, 4))  # (classes + 1, levels + 1, C, K): row 2 pools the classes
    lab = {-1: -1, "per window": torch.tensor([1, 0]), None: None}[label]
    if label is None:  # classes drawn by the sampler with the draw's seed: each window gets its drawn class's row
        from models.helpers import sampling_rng_and_labels
        rows = sampling_rng_and_labels(var, 2, None, 3, torch.device("cpu"))[1].tolist()
    else:
        rows = [2, 2] if label == -1 else [1, 0]
    x_low = torch.randn(2, 3, T) * 10
    k_obs = 2
    out = complete_windows(var, vae, x_low, UV, n_keep_scales=k_obs, n_samples=1, seed=3, label_B=lab,
                           gain=gain, gain_table=table)["draws"][0].double().numpy()
    _, _, fhat = complete_tokens(var, vae.eeg_to_idxBl(x_low / UV), band_keep_masks(2, PNS, k_obs), label_B=lab, g_seed=3)
    gen = (vae.fhat_to_eeg(fhat[-1]) * UV).double().numpy()
    low = (vae.fhat_to_eeg(fhat[k_obs - 1]) * UV).double().numpy()
    # expected: the full decode with band j's rFFT bins scaled by 10^(g/20) for the completed bands j >= k only
    f = np.fft.rfftfreq(T, 1 / sfreq)
    amp = np.ones((2, 3, f.size))
    for b in range(2):
        for j, (lo, hi) in enumerate(bands):
            if j >= k_obs:
                amp[b][:, (f >= lo) & ((f < hi) | (j == 3))] = 10 ** (table[rows[b], 0, :, j:j + 1] / 20)
    want = x_low.double().numpy() + np.fft.irfft(np.fft.rfft(gen, axis=-1) * amp, n=T, axis=-1) - low
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-3)
    plain = complete_windows(var, vae, x_low, UV, n_keep_scales=k_obs, n_samples=1, seed=3, label_B=lab)["draws"][0]
    assert not np.allclose(out, plain.double().numpy(), atol=1e-2)  # the gain did something
    with pytest.raises(ValueError, match="both gain and gain_table"):
        complete_windows(var, vae, x_low, UV, n_keep_scales=k_obs, gain=gain)


def test_group_gain_lookup_takes_pooled_rows_for_the_null_class_and_unknown_levels():
    from models.band_gain import lookup_group_gain_db
    table = np.arange(3 * 4 * 2 * 5, dtype=float).reshape(3, 4, 2, 5)  # 2 classes + pooled, 3 levels + pooled
    got = lookup_group_gain_db(table, torch.tensor([0, 1, 2, -1]), torch.tensor([2, 3, 0, -1]), 4)
    for b, (c, lv) in enumerate([(0, 2), (1, 3), (2, 0), (2, 3)]):
        np.testing.assert_array_equal(got[b].numpy(), table[c, lv])
    np.testing.assert_array_equal(lookup_group_gain_db(table, 1, None, 2).numpy(), np.stack([table[1, 3]] * 2))
    np.testing.assert_array_equal(lookup_group_gain_db(table, -1, 1, 1).numpy(), table[2, 1][None])


# ------------------------------------------------------------------------------------------ the CLI
@pytest.fixture(scope="module")
def cli_files(tmp_path_factory) -> dict:
    """A tiny synthetic dataset, a random tokenizer and a random VAR saved as ar-ckpt (no training)."""
    from conftest import save_tiny_var_checkpoint
    from prototypes.synthetic_eeg import SyntheticConfig, make_dataset
    from utils.eeg_dataset import EEGWindowDataset
    base = tmp_path_factory.mktemp("zs_cli")
    f = {"ds": str(base / "ds"), "ds3ch": str(base / "ds3ch"), "base": str(base)}
    make_dataset(f["ds"], SyntheticConfig(n_channels=2, sfreq=100.0, window_sec=1.28, n_windows=8,
                                          windows_per_recording=4, val_fraction=0.5, seed=0))
    make_dataset(f["ds3ch"], SyntheticConfig(n_channels=3, sfreq=100.0, window_sec=1.28, n_windows=8,
                                             windows_per_recording=4, val_fraction=0.5, seed=0))
    f["ckpt"] = str(base / "ar-ckpt-best.pth")
    save_tiny_var_checkpoint(f["ds"], f["ckpt"])
    f["K"] = len(EEGWindowDataset(f["ds"], "train").bands)
    return f


def _run_cli(f: dict, tmp_path, *extra: str) -> dict:
    import complete
    out = str(tmp_path / "out.npz")
    assert complete.main(["--ckpt", f["ckpt"], "--data_path", f["ds"], "--n=3", "--n_samples=2", f"--out={out}",
                          "--overwrite", *extra]) == 0
    with np.load(out, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def test_cli_fill_gap_forecast_and_bands(cli_files, tmp_path):
    z = _run_cli(cli_files, tmp_path, "--mode=fill_gap", "--gap=0.3:0.6", f"--plot={tmp_path / 'p.png'}")
    assert z["draws"].shape == (2, 3, 2, 128) and z["signal"].shape == (3, 2, 128)
    m = z["mask"]
    assert m.shape == (3, 128) and np.flatnonzero(m[0]).tolist() == list(range(30, 60))
    obs = ~np.broadcast_to(m[:, None, :], z["target"].shape)
    assert np.array_equal(z["signal"][obs], z["target"][obs])  # observed samples come back unchanged (µV)
    assert np.isnan(z["observed"][~obs]).all()
    assert (tmp_path / "p.png").stat().st_size > 1000
    z = _run_cli(cli_files, tmp_path, "--mode=forecast", "--horizon=0.2")
    assert z["mask"][:, -20:].all() and not z["mask"][:, :-20].any()
    z = _run_cli(cli_files, tmp_path, "--mode=complete_bands", "--k=2")
    assert int(z["k"]) == 2 and z["draws"].shape == (2, 3, 2, 128)
    np.testing.assert_allclose(z["signal"], z["draws"].mean(0), rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def gain_files(cli_files) -> dict:
    """cli_files' checkpoint with band-gain codes in its tokenizer and a class-and-level gain table of +3 dB."""
    from utils.checkpoint import load_checkpoint, save_checkpoint
    state, _ = load_checkpoint(cli_files["ckpt"])
    K, C = cli_files["K"], len(state["tokenizer"]["ch_names"])
    state["tokenizer"]["gain_step_db"] = 2.0
    state["level_gain_db"] = np.full((3, 1, C, K), 3.0).tolist()  # +3 dB in every band, class and level
    ckpt = cli_files["base"] + "/ar-ckpt-gain.pth"
    save_checkpoint(ckpt, state)
    return {**cli_files, "ckpt": ckpt}


def test_cli_band_completion_applies_the_stored_gain_above_the_observed_stage(gain_files, tmp_path):
    """A checkpoint whose tokenizer has band-gain codes and a class-and-level gain table: --mode=complete_bands
    changes only the completed bands (rFFT bins above stage k's top edge), and --no_gains leaves them plain."""
    files = gain_files
    z = _run_cli(files, tmp_path, "--mode=complete_bands", "--k=2")
    p = _run_cli(files, tmp_path, "--mode=complete_bands", "--k=2", "--no_gains")
    assert bool(z["band_gains"]) and not bool(p["band_gains"])
    top = float(z["bands"][1][1])  # stage 2 ends here
    f = np.fft.rfftfreq(z["draws"].shape[-1], 1 / float(z["sfreq"]))
    Zg, Zp = np.fft.rfft(z["draws"] - z["observed"], axis=-1), np.fft.rfft(p["draws"] - p["observed"], axis=-1)
    low, high = f < top, f >= top
    np.testing.assert_allclose(Zg[..., low], Zp[..., low], atol=1e-3 * np.abs(Zp).max())
    # above it the change is (10^(3/20) - 1) x the full decode (the unit test above checks that exactly)
    assert np.abs(Zg[..., high] - Zp[..., high]).sum() > 0.1 * np.abs(Zp[..., high]).sum()


@pytest.mark.parametrize("extra, fragment", [
    (["--mode=fill_gap", "--gap=1.0:1.5"], "outside the window"),
    (["--mode=fill_gap", "--gap=0.0:1.28"], "missing entirely"),
    (["--mode=fill_gap"], "exactly one of"),
    (["--mode=forecast", "--horizon=2"], "between 0"),
    (["--mode=complete_bands", "--k=0"], "1..4"),
    (["--mode=complete_bands", "--k=5"], "1..4"),
    (["--mode=complete_bands", "--k=2", "--gap=0:1"], "no meaning"),
    (["--mode=forecast", "--horizon=0.2", "--no_gains"], "no meaning"),
])
def test_cli_bad_input_is_a_user_error(cli_files, tmp_path, extra, fragment):
    import complete
    with pytest.raises(UserError, match=fragment):
        complete.main(["--ckpt", cli_files["ckpt"], "--data_path", cli_files["ds"], "--n=2",
                       f"--out={tmp_path / 'o.npz'}", *extra])


def test_cli_other_layout_and_gap_file(cli_files, tmp_path, repo_root):
    import json
    import subprocess
    import sys
    gaps = tmp_path / "g.json"
    gaps.write_text(json.dumps([[[0.1, 0.2]], [[0.5, 0.7], [1.0, 1.1]], [[0.0, 0.05]]]))
    z = _run_cli(cli_files, tmp_path, "--mode=fill_gap", f"--gap_file={gaps}")
    assert z["mask"].sum(1).tolist() == [10, 30, 5]
    # windows of another layout (3 channels): one line on stderr, exit 2, no traceback
    r = subprocess.run([sys.executable, "VAR/complete.py", "--mode=forecast", "--horizon=0.2", "--ckpt", cli_files["ckpt"],
                        "--data_path", cli_files["ds3ch"], "--n=2", f"--out={tmp_path / 'x.npz'}"],
                       cwd=repo_root, capture_output=True, text=True, timeout=120,
                       env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 2
    err = [ln for ln in r.stderr.splitlines() if ln.strip() and "Warning" not in ln and "warn" not in ln]
    assert err[-1].startswith("complete.py: error:") and "channels" in err[-1] and "Traceback" not in r.stderr


def test_bench_zeroshot_quick_harness(cli_files, tmp_path):
    from benchmarks import bench_zeroshot
    res = bench_zeroshot.main(["--quick", "--ckpt", cli_files["ckpt"], "--data-root", cli_files["ds"], "--results-dir",
                               str(tmp_path), "--n-windows=2", "--n-samples=1", "--train-windows=4"])
    assert (tmp_path / "zeroshot.json").exists() and (tmp_path / "zeroshot.png").stat().st_size > 0
    assert set(res["gaps"]) == {"0.1", "0.25", "0.5"} and set(res["forecast"]) == {"0.1", "0.25", "0.5"}
    g = res["gaps"]["0.25"]
    assert g["zeros"]["snr_db"] == 0.0 and "AR forward-backward" in g and "VAR (mean of draws)" in g
    assert set(res["band_completion"]) == {str(k) for k in range(1, cli_files["K"])}
    assert res["targets"] and res["all_targets_met"] == all(t["met"] for t in res["targets"].values())
    assert res["report"]["tables"]


def test_bench_zeroshot_reports_band_completion_with_and_without_gains(gain_files, tmp_path):
    from benchmarks import bench_zeroshot
    res = bench_zeroshot.main(["--quick", "--ckpt", gain_files["ckpt"], "--data-root", gain_files["ds"], "--results-dir",
                               str(tmp_path), "--n-windows=2", "--n-samples=1", "--train-windows=4"])
    assert res["settings"]["band_completion_gains"] is True
    row = res["band_completion"]["1"]
    g, p = row["VAR (single draws)"]["psd_error_db"], row["VAR (single draws, plain decode)"]["psd_error_db"]
    assert set(g) == set(p) and g != p  # the same draws, the completed bands 3 dB louder
    table = res["report"]["tables"][-1]
    assert "PSD err draws, plain decode (dB)" in table["columns"] and all(len(r) == len(table["columns"]) for r in table["rows"])
