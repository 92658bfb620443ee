"""The main job's report: its numbers recomputed here from the same arrays with scipy, its figures present."""
from __future__ import annotations

import json
import math
import os
import re

import numpy as np
import pytest
from scipy.signal import welch

from prototypes.synthetic_eeg import main as synthetic_main
from utils.eeg_dataset import EEGWindowDataset
from utils.main_report import build_report, format_terminal, main as report_main
from utils.errors import UserError

BANDS = [(0.5, 4.0), (4.0, 8.0), (8.0, 13.0), (13.0, 30.0), (30.0, 45.0)]  # gamma judged below 45 Hz


def _split(root, split):
    ds = EEGWindowDataset(root, split)
    x = np.stack([ds.window(i).stages_KCT for i in range(len(ds))]).astype(np.float64)
    return x, np.where(ds.labels < 0, 0, ds.labels)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run folder as main.sh leaves it, with known stand-ins for the trained models' outputs."""
    run = tmp_path_factory.mktemp("run")
    data = str(run / "data")
    synthetic_main([data, "--channels", "4", "--n-windows", "64", "--windows-per-recording", "4", "--seed", "3"])
    val, val_lab = _split(data, "val")
    train, train_lab = _split(data, "train")
    rng = np.random.default_rng(0)
    (run / "prototype").mkdir()
    (run / "prototype" / "metrics.json").write_text(json.dumps({
        "best_val_loss": 0.8, "val_loss_add_nothing": 1.0, "best_epoch": 2,
        "epochs": [{"epoch": 1, "val_loss": 0.9, "train_loss": 0.95}, {"epoch": 2, "val_loss": 0.8, "train_loss": 0.85}]}))
    (run / "tokenizer").mkdir()
    noise = rng.standard_normal(val.shape) * val.std() * 0.1  # about 20 dB
    np.savez(run / "tokenizer" / "recon_val.npz", target_cumulative=val, recon_cumulative=val + noise,
             sfreq=np.float32(100), stage_bits_per_second_per_channel=np.asarray([40, 80, 130, 250, 400], np.float32))
    (run / "token_nll").mkdir()
    (run / "token_nll" / "token_nll.json").write_text(json.dumps({
        "tokens_per_pos": 1, "patch_nums": [10, 30], "scales": ["delta", "rest"],
        "nll_nats": {"var_val": [5.0, 4.0], "unigram": [5.2, 5.0], "uniform": [math.log(256)] * 2,
                     "var_train": [4.9, 3.9]}}))
    gen = 2.0 * train[:, -1]  # twice the amplitude: +6.02 dB in every band against the training windows
    np.savez(run / "samples.npz", signal=gen.astype(np.float32), labels=train_lab, class_names=np.asarray(["low", "high"]),
             ch_names=np.asarray([f"C{i}" for i in range(4)]))
    mask = np.zeros((len(val), val.shape[-1]), bool)
    mask[:, 80:120] = True
    target = val[:, -1]
    observed = np.where(mask[:, None, :], np.nan, target)
    fill = target + rng.standard_normal(target.shape) * 0.5 * target.std()
    np.savez(run / "gap.npz", target=target, signal=fill, observed=observed, mask=mask, sfreq=np.float32(100),
             ch_names=np.asarray([f"C{i}" for i in range(4)]))
    (run / "settings.json").write_text(json.dumps({"synthetic": True, "val_groups": "test"}))
    (run / "timings.json").write_text(json.dumps({"dataset": 3, "prototype": 7}))
    path, nums = build_report(str(run), max_windows=1000)
    return {"run": run, "path": path, "nums": nums, "val": val, "val_lab": val_lab, "train": train,
            "train_lab": train_lab, "gen": gen, "noise": noise, "target": target, "fill": fill, "mask": mask}


def _band_power(x_NCT, lo, hi):
    f, p = welch(x_NCT, fs=100.0, nperseg=x_NCT.shape[-1], axis=-1)
    p = p.mean(axis=(0, 1))
    sel = (f >= lo) & (f < hi)
    return p[sel].sum()


def test_psd_error_and_floor_match_welch_recomputed_here(run_dir):
    per_class = run_dir["nums"]["samples"]["per_class"]
    for c, cname in enumerate(["low", "high"]):
        val = run_dir["val"][run_dir["val_lab"] == c, -1]
        train = run_dir["train"][run_dir["train_lab"] == c, -1]
        gen = run_dir["gen"][run_dir["train_lab"] == c]
        for name, (lo, hi) in zip(["delta", "theta", "alpha", "beta", "gamma"], BANDS):
            want_gen = abs(10 * np.log10(_band_power(gen, lo, hi) / _band_power(val, lo, hi)))
            want_floor = abs(10 * np.log10(_band_power(train, lo, hi) / _band_power(val, lo, hi)))
            assert per_class[cname]["generated"]["psd_error_db"][name] == pytest.approx(want_gen, abs=1e-6)
            assert per_class[cname]["real train (floor)"]["psd_error_db"][name] == pytest.approx(want_floor, abs=1e-6)
        assert 0.0 <= per_class[cname]["generated"]["c2st_auc"] <= 1.0


def test_tokenizer_var_prototype_and_gap_numbers(run_dir):
    nums = run_dir["nums"]
    val, noise = run_dir["val"], run_dir["noise"]
    for k in range(val.shape[1]):
        want = 10 * np.log10(np.sum(val[:, k] ** 2) / np.sum(noise[:, k] ** 2))
        assert nums["tokenizer"]["snr_db"][k] == pytest.approx(want, abs=1e-6)
    assert nums["tokenizer"]["bits_per_window"][0] == pytest.approx(40 * 4 * 2)  # bits/s/ch x channels x seconds
    assert nums["var"]["val_nll"] == pytest.approx((10 * 5.0 + 30 * 4.0) / 40)
    assert nums["var"]["unigram"] == pytest.approx((10 * 5.2 + 30 * 5.0) / 40)
    assert nums["var"]["beats_unigram"] is True
    assert nums["prototype"]["gain_pct"] == pytest.approx(20.0) and nums["prototype"]["beats_baseline"]
    sel = np.broadcast_to(run_dir["mask"][:, None, :], run_dir["target"].shape)
    t, f = run_dir["target"][sel], run_dir["fill"][sel]
    assert nums["zero_shot"]["var_snr_db"] == pytest.approx(10 * np.log10(np.sum(t ** 2) / np.sum((t - f) ** 2)))
    assert nums["zero_shot"]["gap_sec"] == pytest.approx(0.4)


def test_report_html_shows_every_figure_and_the_smoke_test_warning(run_dir):
    html = open(run_dir["path"], encoding="utf-8").read()
    assert "Smoke test on synthetic EEG" in html
    images = re.findall(r'<img src="([^"]+)"', html)
    names = {os.path.basename(i) for i in images}
    assert {"traces.png", "psd.png", "quality.png", "tokenizer.png", "curves.png", "gap.png"} <= names
    for img in images:
        assert os.path.getsize(os.path.join(os.path.dirname(run_dir["path"]), img)) > 5000, img
    saved = json.load(open(os.path.join(os.path.dirname(run_dir["path"]), "numbers.json")))
    assert saved["var"]["val_nll"] == pytest.approx(run_dir["nums"]["var"]["val_nll"])


def test_terminal_summary_carries_the_headline_numbers(run_dir):
    text = format_terminal(run_dir["nums"])
    assert "better by 20.0 %" in text
    assert f"{run_dir['nums']['var']['val_nll']:.4f} nats" in text
    assert "dataset 3, prototype 7" in text


def test_missing_run_folder_is_a_one_line_error(tmp_path):
    with pytest.raises(UserError, match="not a folder"):
        report_main([str(tmp_path / "nope")])
    with pytest.raises(UserError, match="no dataset"):
        report_main([str(tmp_path)])


def _spread_scipy(x_NCT, lo, hi):
    """log10 band power per window and channel from scipy's Welch (1-s Hann segments, half overlap), its standard
    deviation over windows, mean over channels."""
    f, p = welch(x_NCT, fs=100.0, nperseg=100, axis=-1)
    sel = (f >= lo) & (f < hi)
    return np.log10(p[..., sel].sum(-1) * (f[1] - f[0])).std(0).mean()


def test_band_power_spread_matches_scipy_and_ignores_amplitude(run_dir):
    """The samples are the training windows at twice the amplitude: their spread equals the training windows'
    (a gain shifts every log power by the same amount); both, and the validation windows', match scipy."""
    s = run_dir["nums"]["samples"]
    for c, cname in enumerate(["low", "high"]):
        row = s["per_class"][cname]
        val = run_dir["val"][run_dir["val_lab"] == c, -1]
        train = run_dir["train"][run_dir["train_lab"] == c, -1]
        for name, (lo, hi) in zip(["delta", "theta", "alpha", "beta", "gamma"], BANDS):
            assert row["generated"]["band_power_spread"][name] == pytest.approx(
                row["real train (floor)"]["band_power_spread"][name], rel=1e-9)
            assert row["real train (floor)"]["band_power_spread"][name] == pytest.approx(_spread_scipy(train, lo, hi), rel=1e-6)
            assert s["val_band_power_spread"][cname][name] == pytest.approx(_spread_scipy(val, lo, hi), rel=1e-6)
    assert "band-power spread" in format_terminal(run_dir["nums"])
    assert "spread" in open(run_dir["path"]).read()


def test_load_split_draw_groups_follow_window_starts_and_refuse_windows_without_one(tmp_path):
    """Windows 0, 50 and 200 samples into one recording, 100 samples long: the first two overlap and share an id, the
    third is its own draw, and the same starts in another recording get ids of their own. A window written without
    its start cannot be placed: a one-line error naming the dataset."""
    from utils.eeg_schema import write_window
    from utils.main_report import load_split
    T, bands = 100, [(0.5, 4.0), (4.0, 8.0)]
    root = tmp_path / "ds"
    for src in ("a", "b"):
        for k, start in enumerate((0, 50, 200)):
            x = np.ones((2, T))
            write_window(str(root / "train" / f"{src}_w{k}.npz"), x, np.stack([x, x]), bands, 100.0, source=f"{src}.edf",
                         start=start, subject=src, label=0)
    (root / "manifest.json").write_text(json.dumps({"label_names": ["rest"]}))
    ds = EEGWindowDataset(str(root), "train")
    g = dict(zip(((h.source, h.start) for h in ds.headers), load_split(str(root), "train", 10, with_draws=True)[3]))
    assert g[("a.edf", 0)] == g[("a.edf", 50)] != g[("a.edf", 200)]
    assert len({g[("a.edf", 0)], g[("a.edf", 200)], g[("b.edf", 0)], g[("b.edf", 200)]}) == 4
    x = np.ones((2, T))
    write_window(str(root / "train" / "c_w0.npz"), x, np.stack([x, x]), bands, 100.0, source="c.edf", label=0)
    with pytest.raises(UserError, match="carry no start sample"):
        load_split(str(root), "train", 10, with_draws=True)
    assert len(load_split(str(root), "train", 10)[0]) == 7  # without the draw groups no start is needed


def test_c2st_floor_is_also_entered_the_way_samples_are(run_dir):
    """Beside the recording-grouped floor, the report tests the training windows as separate draws (each window its
    own fold unit unless it overlaps another of its recording), like the samples; the headline names both."""
    from utils.eeg_c2st import c2st_auc
    from utils.main_report import load_split
    data = str(run_dir["run"] / "data")
    va, vl, vs = load_split(data, "val", 1000)
    tr, tl, ts, td = load_split(data, "train", 1000, with_draws=True)
    assert len(set(td)) > len(set(ts))  # here the draws really are finer than the recordings
    for c, cname in enumerate(["low", "high"]):
        row = run_dir["nums"]["samples"]["per_class"][cname]
        want = c2st_auc(va[vl == c, -1], tr[tl == c, -1], 100.0, groups_a=vs[vl == c], groups_b=td[tl == c],
                        bands=BANDS, f_max=45.0).auc
        assert row["real train, ungrouped"]["c2st_auc"] == pytest.approx(want, abs=1e-9)
        assert row["real train, ungrouped"]["c2st_auc"] != row["real train (floor)"]["c2st_auc"]
    assert "(floor entered as samples are)" in format_terminal(run_dir["nums"])


def test_samples_are_also_judged_in_disjoint_sets(run_dir):
    """The samples file is cut into SAMPLE_SETS disjoint sets, set k holding the k-th consecutive share of every
    class's windows; each set's C2ST against the validation windows is the one written out here with c2st_auc on
    those windows, and the mean and sd are those of the list."""
    import statistics
    from utils.eeg_c2st import c2st_auc
    from utils.main_report import SAMPLE_SETS, load_split, sample_sets
    labels = run_dir["train_lab"]
    sets = sample_sets(labels, SAMPLE_SETS)
    assert len(sets) == SAMPLE_SETS
    assert sorted(np.concatenate(sets).tolist()) == list(range(len(labels)))  # a partition
    for c in (0, 1):
        idx_c = np.flatnonzero(labels == c)
        k = len(idx_c) // SAMPLE_SETS
        assert sets[0][labels[sets[0]] == c].tolist() == idx_c[:len(sets[0][labels[sets[0]] == c])].tolist()
        assert all(k <= (labels[s] == c).sum() <= k + 1 for s in sets)
    data = str(run_dir["run"] / "data")
    va, vl, vs = load_split(data, "val", 1000)
    for c, cname in enumerate(["low", "high"]):
        got = run_dir["nums"]["samples"]["c2st_sets"][cname]
        want = [c2st_auc(va[vl == c, -1], run_dir["gen"][s[labels[s] == c]], 100.0, groups_a=vs[vl == c], bands=BANDS,
                         f_max=45.0).auc for s in sets]
        np.testing.assert_allclose(got["auc"], want, atol=1e-9)
        assert got["sd"] == pytest.approx(statistics.stdev(want)) and got["mean"] == pytest.approx(np.mean(want))
    # too few windows for two per set: one set, the whole file
    assert [s.tolist() for s in sample_sets(np.array([0, 0, 1, 1, 1]), 5)] == [[0, 1, 2, 3, 4]]
    assert "sets of" in format_terminal(run_dir["nums"])
