"""``--split-by time``: every recording in both splits, its end held out behind a guard gap."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from tests.test_ingest_build import LABELS, _cli, write_fif
from utils.eeg_build import build_dataset, rebuild_from_manifest
from utils.eeg_fastfilter import stage_kernels
from utils.eeg_ingest import IngestConfig, split_gap_samples
from utils.eeg_schema import list_split_files, read_header, read_window
from utils.eeg_splits import time_split_windows
from utils.errors import UserError


@pytest.fixture
def long_recordings(tmp_path):
    """Two subjects x two runs (run 1 = rest, run 2 = task), 20 s at 200 Hz."""
    folder = tmp_path / "rec"
    folder.mkdir()
    return [write_fif(str(folder / f"Subj{s}_{r}_raw.fif"), seconds=20.0, seed=10 * s + r) for s in (1, 2)
            for r in (1, 2)]


def _config(**kw) -> IngestConfig:
    # 20 s at 100 Hz = 2000 samples; b = floor(0.75 * 2000) = 1500, val from 1500 + 150 = 1650
    base = dict(sfreq=100.0, window_sec=2.0, stride_sec=1.0, label_from=LABELS, split_by="time", val_fraction=0.25,
                split_gap_sec=1.5, seed=0)
    base.update(kw)
    return IngestConfig(**base)


def _headers(out: str) -> dict[str, list]:
    return {s: [read_header(p) for p in list_split_files(out, s)] for s in ("train", "val")}


def _same_files(a: str, b: str) -> None:
    for split in ("train", "val"):
        names = sorted(os.listdir(os.path.join(a, split)))
        assert names and names == sorted(os.listdir(os.path.join(b, split)))
        for name in names:
            assert open(os.path.join(a, split, name), "rb").read() == open(os.path.join(b, split, name), "rb").read()


def test_time_split_window_arithmetic():
    starts = np.arange(0, 2000 - 200 + 1, 100)  # 19 windows of 200 samples, stride 100
    split, boundary, val_start = time_split_windows(starts, 200, 2000, 0.25, 150)
    assert (boundary, val_start) == (1500, 1650)
    assert list(starts[split == "train"]) == list(range(0, 1301, 100))  # end <= 1500
    assert list(starts[split == "val"]) == [1700, 1800]  # start >= 1650
    assert list(starts[split == ""]) == [1400, 1500, 1600]  # overlap [1500, 1650): dropped
    # round-off: 0.3 * 1000 is 300.00000000000006 in float, 0.7 * 1000 is 700 -> boundary 700, not 699
    assert time_split_windows(np.array([0]), 10, 1000, 0.3, 0)[1] == 700


def test_every_recording_in_both_splits_with_the_gap_between(long_recordings, tmp_path):
    out = str(tmp_path / "ds")
    manifest = build_dataset(long_recordings, out, _config())
    assert manifest["settings"]["split_by"] == "time" and manifest["settings"]["split_gap_sec"] == 1.5
    assert manifest["split_rule"].startswith("by time; every recording in both splits") and \
        "gap = 1.5 s (150 samples, --split-gap-sec)" in manifest["split_rule"]
    for entry in manifest["inputs"]:
        assert entry["split"] == "both" and entry["n_candidates"] == 19 and entry["n_windows"] == 16
        assert entry["time_split"] == dict(boundary_sec=15.0, gap_sec=1.5, val_start_sec=16.5, boundary_sample=1500,
                                           val_start_sample=1650, n_times=2000)
        label = "rest" if "_1_raw" in entry["path"] else "task"
        assert entry["per_split"] == {"train": dict(n_windows=14, windows_per_label={label: 14}, span_sec=15.0),
                                      "val": dict(n_windows=2, windows_per_label={label: 2}, span_sec=3.5)}
        assert entry["dropped"] == {"bad_annotation": 0, "flat": 0, "amplitude": 0, "unlabeled": 0, "split_gap": 3}
        assert [len(entry["window_files"][s]) for s in ("train", "val")] == [14, 2]
    assert manifest["dropped"]["split_gap"] == 12
    counts = manifest["counts"]
    assert counts["train"] == dict(windows=56, recordings=4, subjects=4, hours=round(4 * 15 / 3600, 4),
                                   windows_per_label={"rest": 28, "task": 28})
    assert counts["val"] == dict(windows=8, recordings=4, subjects=4, hours=round(4 * 3.5 / 3600, 4),
                                 windows_per_label={"rest": 4, "task": 4})
    headers = _headers(out)
    sources = {e["source"] for e in manifest["inputs"]}
    assert {h.source for h in headers["train"]} == {h.source for h in headers["val"]} == sources
    for source in sources:
        train = [h.start for h in headers["train"] if h.source == source]
        val = [h.start for h in headers["val"] if h.source == source]
        assert max(train) + 200 <= 1500 and min(val) >= 1650  # train ends by b, val starts after b + gap
        assert max(train) + 200 + 150 <= min(val)  # no val window within the gap after any train window
    for split in ("train", "val"):  # names are those of the one window grid: index = start / stride
        for path, h in zip(list_split_files(out, split), headers[split]):
            assert os.path.basename(path) == f"{h.source[:-4]}_w{h.start // 100:06d}.npz"
            assert h.label == (0 if "_1_raw" in h.source else 1)


def test_default_gap_covers_window_and_stage_filter(tmp_path):
    config = IngestConfig(sfreq=100.0, window_sec=2.0, stride_sec=2.0, split_by="time", val_fraction=0.3)
    taps = max(len(h) for h in stage_kernels(100.0, config.bands, n_times=1 << 30))
    assert split_gap_samples(config) == max(200, taps - 1) == 660  # 0.5 Hz lower edge: 661 taps
    assert split_gap_samples(IngestConfig(sfreq=100.0, window_sec=10.0, stride_sec=10.0, split_by="time")) == 1000
    assert "split_gap_sec" not in config.to_dict()  # default: omitted, like every build of the other rules
    assert IngestConfig.from_dict(config.to_dict()) == config
    path = write_fif(str(tmp_path / "long_raw.fif"), seconds=30.0)
    manifest = build_dataset([path], str(tmp_path / "ds"), config)
    entry = manifest["inputs"][0]
    # 3000 samples, b = 2100, val from 2760: train starts 0..1800 (10), val 2800 (1), gap 2000..2600 (4)
    assert entry["time_split"]["gap_sec"] == 6.6 and entry["time_split"]["val_start_sample"] == 2760
    assert (entry["per_split"]["train"]["n_windows"], entry["per_split"]["val"]["n_windows"]) == (10, 1)
    assert entry["dropped"]["split_gap"] == 4 and "default: the longer of" in manifest["split_rule"]


def test_default_gap_keeps_val_windows_independent_of_the_train_part(tmp_path):
    """Changing the recording before the boundary leaves the val windows' stages unchanged (up to round-off)."""
    sfreq, seconds = 100.0, 30.0
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = write_fif(str(tmp_path / "a" / "rec_raw.fif"), seconds=seconds, sfreq=sfreq)
    import mne

    raw = mne.io.read_raw_fif(a, preload=True, verbose="error")
    data = raw.get_data()
    data[:, :2100] *= 1.5  # the train part only (b = floor(0.7 * 3000) = 2100)
    mne.io.RawArray(data, raw.info, verbose="error").save(str(tmp_path / "b" / "rec_raw.fif"), verbose="error")
    common = dict(sfreq=sfreq, window_sec=2.0, stride_sec=0.5, split_by="time", val_fraction=0.3,
                  max_amplitude_uv=0.0)
    for gap, independent in ((None, True), (0.0, False)):
        outs = []
        for folder in ("a", "b"):
            outs.append(str(tmp_path / f"ds_{folder}_{gap}"))
            build_dataset([str(tmp_path / folder / "rec_raw.fif")], outs[-1], IngestConfig(split_gap_sec=gap, **common))
        names = [os.path.basename(p) for p in list_split_files(outs[0], "val")]
        assert names
        worst = max(np.abs(read_window(os.path.join(outs[0], "val", n)).stages_KCT -
                           read_window(os.path.join(outs[1], "val", n)).stages_KCT).max() for n in names)
        assert (worst < 1e-3) == independent, (gap, worst)  # µV; a shared filter tail moves it by far more


def test_time_split_bad_settings(long_recordings, tmp_path, capsys):
    with pytest.raises(UserError, match=r"--split-by time needs --val-fraction in \(0, 1\)"):
        IngestConfig(split_by="time", val_fraction=0.0).validate()
    with pytest.raises(UserError, match="--val-groups Subj1 names whole subjects/recordings"):
        IngestConfig(split_by="time", val_groups=("Subj1",)).validate()
    with pytest.raises(UserError, match="--split-gap-sec applies to --split-by time only"):
        IngestConfig(split_gap_sec=1.0).validate()
    base = ["build", "--inputs", *long_recordings, "--out", str(tmp_path / "ds"), "--window-sec", "2",
            "--label-from", LABELS, "--split-by", "time"]
    for extra, message in ((["--val-fraction", "0"], "--split-by time needs --val-fraction in (0, 1)"),
                           (["--val-groups", "Subj1"], "--val-groups Subj1 names whole subjects/recordings"),
                           (["--split-gap-sec", "0.005"], "whole number of samples"),
                           (["--split-gap-sec", "-1"], "--split-gap-sec got -1")):
        code, err = _cli(base + extra, capsys)
        assert code == 2 and message in err and err.count("\n") == 1 and "Traceback" not in err, (extra, err)
    code, err = _cli(base[:-2] + ["--split-gap-sec", "1"], capsys)
    assert code == 2 and "applies to --split-by time only" in err
    assert not os.path.exists(tmp_path / "ds")


def test_time_split_parallel_rebuild_and_resume(long_recordings, tmp_path, capsys):
    one = build_dataset(long_recordings, str(tmp_path / "one"), _config(), jobs=1)
    two = build_dataset(long_recordings, str(tmp_path / "two"), _config(), jobs=2)
    assert one == two
    _same_files(str(tmp_path / "one"), str(tmp_path / "two"))
    with pytest.raises(SystemExit) as ok:
        from utils.cli import run_cli
        from utils.data_eeg import PROG, main

        run_cli(main, PROG, ["build", "--from-manifest", str(tmp_path / "one"), "--out", str(tmp_path / "re")])
    assert ok.value.code == 0
    printed = json.loads(capsys.readouterr().out)
    assert (printed["train_windows"], printed["val_windows"]) == (56, 8) and printed["dropped"]["split_gap"] == 12
    assert rebuild_from_manifest(str(tmp_path / "one"), str(tmp_path / "re2")) == one
    assert json.load(open(tmp_path / "re" / "manifest.json")) == one
    _same_files(str(tmp_path / "one"), str(tmp_path / "re"))

    out = str(tmp_path / "resume")
    done: list[str] = []

    def stop_after_two(path, entry):
        done.append(path)
        if len(done) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_dataset(long_recordings, out, _config(), on_recording=stop_after_two)
    again: list[str] = []
    manifest = build_dataset(long_recordings, out, _config(), on_recording=lambda p, e: again.append(p))
    assert sorted(again) == sorted(set(long_recordings) - set(done)) and manifest == one
    entry = manifest["inputs"][0]
    os.unlink(os.path.join(out, "val", entry["window_files"]["val"][0]))  # a missing val window: redo that one
    redo: list[str] = []
    assert build_dataset(long_recordings, out, _config(), on_recording=lambda p, e: redo.append(p)) == one
    assert redo == [entry["path"]]
    _same_files(str(tmp_path / "one"), out)
    with pytest.raises(UserError, match="built with split_gap_sec=1.5 but this run has split_gap_sec=None"):
        build_dataset(long_recordings, out, _config(split_gap_sec=None))


def test_other_rules_keep_their_manifest_keys(long_recordings, tmp_path):
    manifest = build_dataset(long_recordings, str(tmp_path / "ds"), _config(split_by="recording", split_gap_sec=None,
                                                                            val_fraction=0.5))
    assert "split_gap_sec" not in manifest["settings"] and "split_gap" not in manifest["dropped"]
    assert all(e["split"] in ("train", "val") and "per_split" not in e and isinstance(e["window_files"], list)
               for e in manifest["inputs"])
