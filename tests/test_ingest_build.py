"""Building datasets from synthetic recordings: windows, splits, labels, manifest, resume, bad input, CLI."""
from __future__ import annotations

import json
import os

import mne
import numpy as np
import pytest

from utils.cli import run_cli
from utils.data_eeg import PROG, main
from utils.eeg_build import build_dataset, rebuild_from_manifest
from utils.eeg_channels import CHANNELS_1020_19
from utils.eeg_ingest import IngestConfig
from utils.eeg_schema import list_split_files, read_header, read_window
from utils.errors import UserError

# recorded with old names, an 'EEG ' prefix and '-REF' suffixes, plus channels that must be excluded
_RECORDED = ["EEG " + ("T3" if n == "T7" else "T4" if n == "T8" else "T5" if n == "P7" else "T6" if n == "P8" else n)
             + "-REF" for n in CHANNELS_1020_19] + ["ECG ECG", "EEG A2-A1", "Trigger"]


def write_fif(path: str, seconds: float = 12.0, sfreq: float = 200.0, names=None, seed: int = 0,
              annotations=None) -> str:
    """A synthetic recording (µV-scale noise + 10 Hz alpha) saved as FIF; every channel typed EEG."""
    names = list(names or _RECORDED)
    rng = np.random.default_rng(seed)
    n = int(seconds * sfreq)
    t = np.arange(n) / sfreq
    data = (rng.standard_normal((len(names), n)).cumsum(axis=1) * 0.5 + 20 * np.sin(2 * np.pi * 10 * t)) * 1e-6
    raw = mne.io.RawArray(data, mne.create_info(names, sfreq, "eeg"), verbose=False)
    if annotations:
        raw.set_annotations(mne.Annotations(*zip(*annotations)))
    raw.save(path, overwrite=True, verbose=False)
    return path


@pytest.fixture
def recordings(tmp_path):
    """Two subjects x two runs (run 1 = rest, run 2 = task), 12 s at 200 Hz."""
    folder = tmp_path / "rec"
    folder.mkdir()
    paths = [write_fif(str(folder / f"Subj{s}_{r}_raw.fif"), seed=10 * s + r) for s in (1, 2) for r in (1, 2)]
    return paths


LABELS = r"regex:_1_raw\.fif$=rest,_2_raw\.fif$=task"


def _config(**kw) -> IngestConfig:
    base = dict(sfreq=100.0, window_sec=2.0, stride_sec=2.0, label_from=LABELS, val_fraction=0.5, seed=0)
    base.update(kw)
    return IngestConfig(**base)


def _cli(argv, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, PROG, argv)
    err = capsys.readouterr().err
    return exit_info.value.code, err


def test_build_windows_splits_labels_manifest(recordings, tmp_path):
    out = str(tmp_path / "ds")
    manifest = build_dataset([os.path.dirname(recordings[0])], out, _config(stride_sec=1.0))
    # 12 s at 100 Hz, 2-s windows every 1 s -> 11 windows per recording, none dropped
    assert [e["n_windows"] for e in manifest["inputs"]] == [11] * 4
    assert manifest["dropped"] == {"bad_annotation": 0, "flat": 0, "amplitude": 0, "unlabeled": 0}
    assert manifest["label_names"] == ["rest", "task"] and manifest["ch_names"] == list(CHANNELS_1020_19)
    splits = {e["subject"]: set() for e in manifest["inputs"]}
    for e in manifest["inputs"]:
        splits[e["subject"]].add(e["split"])
        assert e["retyped"] == {"ECG ECG": "ecg", "EEG A2-A1": "misc", "Trigger": "stim"}
        assert e["renamed"]["EEG T3-REF"] == "T7"
    assert all(len(s) == 1 for s in splits.values()) and {next(iter(s)) for s in splits.values()} == {"train", "val"}
    seen = {}
    for split in ("train", "val"):
        for path in list_split_files(out, split):
            h = read_header(path)
            assert h.ch_names == CHANNELS_1020_19 and h.signal_shape == (19, 200) and h.sfreq == 100
            assert seen.setdefault(h.source, split) == split  # no recording in both splits
            assert h.label == (0 if "_1_raw" in h.source else 1)
            assert os.path.basename(path) == f"{h.source[:-4]}_w{h.start // 100:06d}.npz"
    assert manifest["counts"]["train"]["windows"] + manifest["counts"]["val"]["windows"] == 44
    assert manifest["settings"]["stride_sec"] == 1.0 and len(manifest["inputs"][0]["sha256"]) == 64


def test_same_seed_same_split_and_byte_identical_rebuild(recordings, tmp_path):
    a = build_dataset(recordings, str(tmp_path / "a"), _config())
    b = rebuild_from_manifest(str(tmp_path / "a"), str(tmp_path / "b"))
    assert [e["split"] for e in a["inputs"]] == [e["split"] for e in b["inputs"]]
    for split in ("train", "val"):
        names_a = [os.path.basename(p) for p in list_split_files(str(tmp_path / "a"), split)]
        assert names_a == [os.path.basename(p) for p in list_split_files(str(tmp_path / "b"), split)]
        for name in names_a:
            wa, wb = (read_window(str(tmp_path / d / split / name)) for d in "ab")
            np.testing.assert_array_equal(wa.stages_KCT, wb.stages_KCT)
            np.testing.assert_array_equal(wa.signal_CT, wb.signal_CT)
            assert open(tmp_path / "a" / split / name, "rb").read() == open(tmp_path / "b" / split / name, "rb").read()


def test_resume_skips_done_recordings(recordings, tmp_path):
    out = str(tmp_path / "ds")
    done: list[str] = []

    def stop_after_two(path, entry):
        done.append(path)
        if len(done) == 2:
            raise KeyboardInterrupt  # a build killed half-way

    with pytest.raises(KeyboardInterrupt):
        build_dataset(recordings, out, _config(), on_recording=stop_after_two)
    first = {p: os.path.getmtime(p) for s in ("train", "val") for p in
             (list_split_files(out, s) if os.listdir(os.path.join(out, s)) else [])}
    again: list[str] = []
    manifest = build_dataset(recordings, out, _config(), on_recording=lambda p, e: again.append(p))
    assert sorted(again) == sorted(set(recordings) - set(done))  # only the unfinished ones
    assert all(os.path.getmtime(p) == t for p, t in first.items())  # nothing rewritten
    assert all(e["status"] == "done" for e in manifest["inputs"])
    assert build_dataset(recordings, out, _config(), on_recording=lambda p, e: again.append(p)) and \
        len(again) == 2  # a third run has nothing left to do
    os.unlink(os.path.join(out, manifest["inputs"][0]["split"], manifest["inputs"][0]["window_files"][0]))
    redo: list[str] = []
    build_dataset(recordings, out, _config(), on_recording=lambda p, e: redo.append(p))
    assert redo == [manifest["inputs"][0]["path"]]  # a recording with a missing window is redone


def test_out_holding_another_dataset(recordings, tmp_path, capsys):
    out = str(tmp_path / "ds")
    build_dataset(recordings, out, _config())
    with pytest.raises(UserError, match=r"holds another dataset: it was built with sfreq=100.0 but this run has "
                                        r"sfreq=128.0"):
        build_dataset(recordings, out, _config(sfreq=128.0))
    with pytest.raises(UserError, match="built from other inputs"):
        build_dataset(recordings[:3], out, _config())
    manifest = build_dataset(recordings, out, _config(sfreq=128.0), overwrite=True)
    assert read_header(list_split_files(out, "train")[0]).sfreq == 128.0 and manifest["settings"]["sfreq"] == 128.0
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    code, err = _cli(["build", "--inputs", *recordings, "--out", str(stranger), "--label-from", LABELS], capsys)
    assert code == 2 and "is not empty and holds no manifest.json" in err and err.count("\n") == 1
    assert (stranger / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("case, message", [
    ("truncated", "unreadable or truncated recording"),
    ("corrupt", "unreadable or truncated recording"),
    ("unknown", "not a recording format MNE can read"),
    ("short", "shorter than one window"),
    ("low_sfreq", "below twice the top band edge"),
    ("channels", "channel set '1020-19' needs 19 channels but"),
])
def test_bad_input_one_line_error_or_counted_skip(case, message, recordings, tmp_path, capsys):
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    if case == "truncated":
        bad = str(bad_dir / "cut_raw.fif")
        data = open(recordings[0], "rb").read()
        open(bad, "wb").write(data[: len(data) // 3])
    elif case == "corrupt":
        bad = str(bad_dir / "junk.edf")
        open(bad, "wb").write(b"not an EDF file at all" * 50)
    elif case == "unknown":
        bad = str(bad_dir / "junk.xyz")
        open(bad, "wb").write(b"not an EDF file at all" * 50)
    elif case == "short":
        bad = write_fif(str(bad_dir / "short_raw.fif"), seconds=1.5)
    elif case == "low_sfreq":
        bad = write_fif(str(bad_dir / "slow_raw.fif"), sfreq=80.0)
    else:
        bad = write_fif(str(bad_dir / "few_raw.fif"), names=["Fp1", "Fp2", "C3", "C4", "O1", "O2"])
    argv = ["build", "--inputs", *recordings, bad, "--out", str(tmp_path / "ds"), "--sfreq", "100",
            "--window-sec", "2", "--val-fraction", "0.5", "--label-from", LABELS + r",(cut|junk|short|slow|few)=rest"]
    code, err = _cli(argv, capsys)
    assert code == 2 and message in err and bad in err and err.count("\n") == 1 and "Traceback" not in err
    with pytest.raises(SystemExit) as ok:
        run_cli(main, PROG, argv + ["--continue-on-error", "--overwrite"])
    assert ok.value.code == 0
    manifest = json.load(open(tmp_path / "ds" / "manifest.json"))
    assert [s["path"] for s in manifest["skipped"]] == [os.path.abspath(bad)]
    assert message in manifest["skipped"][0]["reason"]
    assert manifest["counts"]["train"]["recordings"] + manifest["counts"]["val"]["recordings"] == 4


def test_channels_all_needs_one_layout(recordings, tmp_path, capsys):
    other = write_fif(str(tmp_path / "other_raw.fif"), names=["Fp1", "Fp2", "Cz", "Oz"])
    code, err = _cli(["build", "--inputs", recordings[0], other, "--out", str(tmp_path / "ds"), "--channels", "all",
                      "--split-by", "recording", "--window-sec", "2", "--val-fraction", "0.5"], capsys)
    assert code == 2 and "with --channels all every recording needs one channel layout" in err
    manifest = build_dataset(recordings, str(tmp_path / "ok"), _config(channels="all"))
    assert manifest["ch_names"] == list(CHANNELS_1020_19)  # the recorded EEG channels, canonical names, in order


def test_cli_flag_errors(recordings, tmp_path, capsys):
    base = ["build", "--inputs", *recordings, "--out", str(tmp_path / "ds")]
    for extra, message in ((["--channels", "1020_19"], "Did you mean '1020-19'"),
                           (["--bands", "0.5-4,4-8,8-13,13-30,30-80"], "above Nyquist"),
                           (["--window-sec", "2.005"], "whole number of samples"),
                           (["--label-from", "colour:red"], "--label-from got"),
                           (["--val-groups", "nobody"], "--val-groups")):
        code, err = _cli(base + extra, capsys)
        assert code == 2 and message in err and err.count("\n") == 1, (extra, err)
    code, err = _cli(["build", "--out", str(tmp_path / "x")], capsys)
    assert code == 2 and "--inputs" in err
    assert not os.path.exists(tmp_path / "ds")  # nothing written before the checks pass


def test_info_and_dataset_loader(recordings, tmp_path, capsys):
    out = str(tmp_path / "ds")
    build_dataset(recordings, out, _config())
    with pytest.raises(SystemExit) as ok:
        run_cli(main, PROG, ["info", out])
    text = capsys.readouterr().out
    assert ok.value.code == 0 and "19 channels: Fp1 Fp2 F7" in text and "labels: ['rest', 'task']" in text
    from utils.eeg_dataset import label_names, open_dataset

    train, val = open_dataset(out)
    stages, label = train[0]
    assert tuple(stages.shape) == (5, 19, 200) and label in (0, 1)
    assert label_names(out, train, val) == ["rest", "task"]


def test_annotation_labels(tmp_path):
    path = write_fif(str(tmp_path / "ann_raw.fif"), seconds=14.0,
                     annotations=[(0.0, 4.0, "T1"), (4.0, 4.0, "T2"), (8.0, 2.0, "T0"), (12.5, 1.0, "BAD_blink"),
                                  (12.0, 2.0, "T1")])
    path2 = write_fif(str(tmp_path / "ann2_raw.fif"), seconds=12.0, seed=3, annotations=[(0.0, 12.0, "T1")])
    manifest = build_dataset([path, path2], str(tmp_path / "ds"),
                             _config(label_from="annotations:T1=left,T2=right", split_by="recording"))
    assert manifest["label_names"] == ["left", "right"]
    entry = next(e for e in manifest["inputs"] if e["path"] == path)
    # windows 0-2 s, 2-4 s: left; 4-6, 6-8: right; 8-10 (T0, unmapped) and 10-12: unlabeled; 12-14: BAD span
    assert entry["windows_per_label"] == {"left": 2, "right": 2}
    assert entry["dropped"] == {"bad_annotation": 1, "flat": 0, "amplitude": 0, "unlabeled": 2}
    bare = build_dataset([path, path2], str(tmp_path / "bare"), _config(label_from="annotations", split_by="recording"))
    assert bare["label_names"] == ["T0", "T1", "T2"]  # every description except BAD spans, sorted


@pytest.mark.filterwarnings("ignore:This filename")
def test_download_eegbci_builds_from_fetched_files(tmp_path, monkeypatch, capsys):
    fetched = [write_fif(str(tmp_path / f"S00{s}R0{r}.fif"), seed=s * 10 + r, seconds=6.0,
                         names=[n + "." for n in ("Fp1", "Fp2", "F7", "F3", "Fz", "F4", "F8", "T7", "C3", "Cz", "C4",
                                                  "T8", "P7", "P3", "Pz", "P4", "P8", "O1", "O2", "Fc5")])
               for s in (1, 2) for r in (1, 2)]
    calls = []

    def fake_load_data(subjects, runs, *, path=None, update_path=None, **kw):
        calls.append((subjects, runs, path))
        return fetched

    monkeypatch.setattr(mne.datasets.eegbci, "load_data", fake_load_data)
    out = tmp_path / "eegbci"
    with pytest.raises(SystemExit) as ok:
        run_cli(main, PROG, ["download-eegbci", "--subjects", "1-2", "--runs", "1,2", "--out", str(out),
                             "--window-sec", "2", "--val-fraction", "0.5"])
    assert ok.value.code == 0 and calls == [([1, 2], [1, 2], None)]
    manifest = json.load(open(out / "manifest.json"))
    assert manifest["label_names"] == ["eyes_open", "eyes_closed"]
    assert {e["subject"] for e in manifest["inputs"]} == {"S001", "S002"}
    code, err = _cli(["download-eegbci", "--subjects", "0-3", "--out", str(out)], capsys)
    assert code == 2 and "--subjects got '0-3'" in err


def test_parallel_jobs_give_the_same_dataset(recordings, tmp_path):
    config = _config(notch=(50.0,), sfreq=200.0, window_sec=3.0, stride_sec=3.0)
    one = build_dataset(recordings, str(tmp_path / "one"), config, jobs=1)
    two = build_dataset(recordings, str(tmp_path / "two"), config, jobs=2)
    assert one["counts"] == two["counts"] and all(e["notch_applied"] == [50.0] for e in two["inputs"])
    for split in ("train", "val"):
        for path in list_split_files(str(tmp_path / "one"), split):
            twin = tmp_path / "two" / split / os.path.basename(path)
            assert open(path, "rb").read() == open(twin, "rb").read()


def test_cli_help_rebuild_and_info_json(recordings, tmp_path, capsys):
    for argv in (["--help"], ["build", "--help"], ["info", "--help"], ["download-eegbci", "--help"]):
        with pytest.raises(SystemExit) as ok:
            main(argv)
        text = capsys.readouterr().out
        assert ok.value.code == 0 and "usage:" in text
    assert "--continue-on-error" in _help(["build", "--help"], capsys) and "(default: 1020-19)" in \
        _help(["build", "--help"], capsys)
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    with pytest.raises(SystemExit) as ok:
        run_cli(main, PROG, ["build", "--inputs", *recordings, "--out", a, "--window-sec", "2", "--val-fraction",
                             "0.5", "--label-from", LABELS, "--progress", "off"])
    assert ok.value.code == 0
    with pytest.raises(SystemExit) as ok:
        run_cli(main, PROG, ["build", "--from-manifest", a, "--out", b])
    assert ok.value.code == 0
    capsys.readouterr()
    with pytest.raises(SystemExit):
        run_cli(main, PROG, ["info", b, "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert summary["settings"] == json.load(open(os.path.join(a, "manifest.json")))["settings"]
    assert summary["splits"]["train"]["windows"] + summary["splits"]["val"]["windows"] == 24
    code, err = _cli(["build", "--from-manifest", a, "--inputs", *recordings, "--out", str(tmp_path / "c")], capsys)
    assert code == 2 and "exclusive" in err


def _help(argv, capsys) -> str:
    with pytest.raises(SystemExit):
        main(argv)
    return capsys.readouterr().out


def test_channels_all_keeps_the_majority_layout(recordings, tmp_path):
    odd = write_fif(str(tmp_path / "aaa_raw.fif"), names=["Fp1", "Fp2", "Cz", "Oz"])  # sorts first
    manifest = build_dataset([odd, *recordings], str(tmp_path / "ds"), _config(channels="all", label_from="none"),
                             continue_on_error=True)
    assert manifest["ch_names"] == list(CHANNELS_1020_19)
    assert [s["path"] for s in manifest["skipped"]] == [odd] and "the layout of 4 of 5 recordings" in \
        manifest["skipped"][0]["reason"]


def test_same_file_name_in_two_folders_stays_distinct(tmp_path):
    paths = []
    for folder, seed in (("site1", 1), ("site2", 2)):
        (tmp_path / folder).mkdir()
        paths.append(write_fif(str(tmp_path / folder / "night_raw.fif"), seed=seed))
    manifest = build_dataset([str(tmp_path / "site1"), str(tmp_path / "site2")], str(tmp_path / "ds"),
                             _config(label_from="none", split_by="recording"))
    sources = [e["source"] for e in manifest["inputs"]]
    ids = [e["recording"] for e in manifest["inputs"]]
    assert sources == ["site1/night_raw.fif", "site2/night_raw.fif"] and len(set(ids)) == 2
    assert all(i.startswith("night_raw-") for i in ids)
    headers = [read_header(p) for s in ("train", "val") for p in list_split_files(str(tmp_path / "ds"), s)]
    assert {h.source for h in headers} == set(sources)
