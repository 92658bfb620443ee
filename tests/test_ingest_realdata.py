"""Ingestion on the real recordings in ../shared/data (skipped with a reason when the folder is absent)."""
from __future__ import annotations

import importlib.util
import os

import mne
import numpy as np
import pytest

from utils.eeg_build import build_dataset, rebuild_from_manifest
from utils.eeg_channels import CHANNELS_1020_19, eeg_channels, retype_non_eeg
from utils.eeg_ingest import IngestConfig
from utils.eeg_read import RecordingError, find_recordings, open_recording
from utils.eeg_schema import list_split_files, read_header, read_window

pytestmark = pytest.mark.realdata

EEGMAT_LABELS = r"regex:_1\.edf$=rest,_2\.edf$=arithmetic"
# Scalp EEG channels left after retyping, per file (README of ../shared/data).
EXPECTED_EEG = {
    "multiple_annotation_chans.bdf": ["C3", "C4", "F3", "Fz", "F4", "P3", "Pz", "P4", "O1", "O2"],
    "MB0400FU.EEG": ["Fp2", "Fp1", "F4", "F3", "C4", "C3", "P4", "P3", "O2", "O1", "F8", "F7", "T8", "T7", "P8", "P7",
                     "Fz", "Cz", "Pz"],
}


def test_every_recording_loads_or_is_skipped_with_a_reason(shared_data, tmp_path):
    paths = find_recordings([shared_data])
    formats = {os.path.splitext(p)[1].lower() for p in paths}
    assert {".edf", ".bdf", ".set", ".cnt", ".eeg"} <= formats
    assert not any(p.lower().endswith((".fdt", ".pnt", ".log", ".csv", ".md", ".txt", ".evt", ".locs")) for p in paths)
    loaded, skipped = {}, {}
    for path in paths:
        try:
            raw = open_recording(path)
        except RecordingError as err:
            skipped[os.path.basename(path)] = str(err)
            continue
        retype_non_eeg(raw)
        loaded[os.path.basename(path)] = [name for _, name in eeg_channels(raw)]
    # antio is optional: the ANT file is the only one that may be skipped, and the reason says why
    assert set(skipped) <= {"test_CA_208.cnt"}
    if importlib.util.find_spec("antio") is None:
        assert "needs the optional package 'antio'" in skipped["test_CA_208.cnt"]
    for name, expected in EXPECTED_EEG.items():
        assert loaded[name] == expected, name
    for name, eeg in loaded.items():
        assert not {"ECG", "A2-A1", "Trigger", "E", "A1", "A2", "LEFT_EAR", "VEOGR", "Status"} & set(eeg) or \
            name == "test_reduced.edf", (name, eeg)  # BioSemi's A1/A2 are scalp electrodes
    assert len(loaded["Subject00_1.edf"]) == 19 and len(loaded["test_reduced.edf"]) >= 128
    assert len(loaded["scan41_short.cnt"]) == 125  # 128 minus the ear reference, VEOG and HEOG


def test_each_other_format_builds_with_all_channels(shared_data, tmp_path):
    """Every non-eegmat recording becomes a (train-only) dataset with its own EEG channels."""
    config = IngestConfig(sfreq=100.0, window_sec=4.0, stride_sec=4.0, channels="all", val_fraction=0.0)
    built = 0
    for path in find_recordings([os.path.join(shared_data, "mne-testing-data")]):
        if path.lower().endswith(".cnt") and "antio" in path and importlib.util.find_spec("antio") is None:
            continue
        out = str(tmp_path / os.path.basename(path))
        manifest = build_dataset([path], out, config)
        header = read_header(list_split_files(out, "train")[0])
        assert header.signal_shape == (len(manifest["ch_names"]), 400) and header.sfreq == 100.0
        assert manifest["counts"]["train"]["windows"] + sum(manifest["dropped"].values()) == \
            manifest["inputs"][0]["n_candidates"]
        built += 1
    assert built >= 5


@pytest.fixture(scope="module")
def eegmat_small(shared_data, tmp_path_factory):
    """The three 62-s arithmetic recordings (subjects 00, 01, 05), 1020-19, Subject05 in val."""
    folder = os.path.join(shared_data, "physionet-eegmat")
    paths = [os.path.join(folder, f"Subject{s}_2.edf") for s in ("00", "01", "05")]
    out = str(tmp_path_factory.mktemp("eegmat") / "ds")
    config = IngestConfig(sfreq=100.0, window_sec=5.0, stride_sec=5.0, channels="1020-19", split_by="subject",
                          val_groups=("Subject05",), label_from=EEGMAT_LABELS)
    return paths, out, build_dataset(paths, out, config)


def test_eegmat_channels_splits_labels(eegmat_small):
    paths, out, manifest = eegmat_small
    assert manifest["ch_names"] == list(CHANNELS_1020_19)
    entry = manifest["inputs"][0]
    assert {k: entry["renamed"][f"EEG {k}"] for k in ("T3", "T4", "T5", "T6")} == \
        {"T3": "T7", "T4": "T8", "T5": "P7", "T6": "P8"}
    assert entry["retyped"] == {"EEG A2-A1": "misc", "ECG ECG": "ecg"} and entry["interpolated"] == []
    by_split = {s: {read_header(p).subject for p in list_split_files(out, s)} for s in ("train", "val")}
    assert by_split == {"train": {"Subject00", "Subject01"}, "val": {"Subject05"}}
    assert manifest["counts"]["train"]["windows"] + manifest["counts"]["val"]["windows"] + \
        sum(manifest["dropped"].values()) == 3 * 12  # 62 s -> 12 windows of 5 s per recording
    assert all(read_header(p).label == 1 for s in ("train", "val") for p in list_split_files(out, s))


def test_eegmat_stages_match_an_independent_mne_computation(eegmat_small):
    """Window content equals MNE's own resample + filter_data on the continuous recording."""
    paths, out, _ = eegmat_small
    raw = mne.io.read_raw_edf(paths[1], preload=True, verbose="error")
    old = {"T7": "T3", "T8": "T4", "P7": "T5", "P8": "T6"}
    raw.pick([f"EEG {old.get(n, n)}" for n in CHANNELS_1020_19])
    raw.resample(100.0, verbose="error")
    x_CT = raw.get_data() * 1e6
    for name in ("Subject01_2_w000003.npz", "Subject01_2_w000011.npz"):
        win = read_window(os.path.join(out, "train", name))
        start = win.header.start
        np.testing.assert_allclose(win.signal_CT, x_CT[:, start:start + 500], rtol=1e-5, atol=1e-4)
        for k, hi in enumerate((4.0, 8.0, 13.0, 30.0, None)):
            ref = mne.filter.filter_data(x_CT, 100.0, 0.5, hi, verbose="error")[:, start:start + 500]
            err = np.abs(win.stages_KCT[k] - ref).max()
            assert err < 1e-4 * np.abs(ref).max() + 1e-4, (name, k, err)
    # the stage is really band-limited: the delta stage holds almost no power above 8 Hz
    win = read_window(os.path.join(out, "train", "Subject01_2_w000003.npz"))
    spec = np.abs(np.fft.rfft(win.stages_KCT[0] * np.hanning(500), axis=-1)) ** 2
    freqs = np.fft.rfftfreq(500, 0.01)
    assert spec[:, freqs > 8].sum() < 1e-3 * spec.sum()


def test_eegmat_rebuild_from_manifest_is_identical(eegmat_small, tmp_path):
    _, out, manifest = eegmat_small
    again = rebuild_from_manifest(out, str(tmp_path / "again"))
    assert again["counts"] == manifest["counts"]
    for split in ("train", "val"):
        files = list_split_files(out, split)
        assert [os.path.basename(p) for p in files] == \
            [os.path.basename(p) for p in list_split_files(str(tmp_path / "again"), split)]
        for path in files:
            twin = os.path.join(str(tmp_path / "again"), split, os.path.basename(path))
            a, b = read_window(path), read_window(twin)
            np.testing.assert_array_equal(a.stages_KCT, b.stages_KCT)
            np.testing.assert_array_equal(a.signal_CT, b.signal_CT)
            assert open(path, "rb").read() == open(twin, "rb").read()


def test_nihon_kohden_maps_to_1020_and_bdf_is_refused(shared_data, tmp_path, capsys):
    from utils.cli import run_cli
    from utils.data_eeg import PROG, main

    nk = os.path.join(shared_data, "mne-testing-data", "NihonKohden", "MB0400FU.EEG")
    out = str(tmp_path / "nk")
    manifest = build_dataset([nk], out, IngestConfig(window_sec=5.0, stride_sec=5.0, val_fraction=0.0))
    assert manifest["ch_names"] == list(CHANNELS_1020_19) and manifest["inputs"][0]["interpolated"] == []
    assert set(manifest["inputs"][0]["retyped"]) >= {"E", "A1", "A2"}
    raw = mne.io.read_raw_nihon(nk, preload=True, verbose="error").pick(["T3"]).resample(100.0, verbose="error")
    win = read_window(list_split_files(out, "train")[1])
    t7 = raw.get_data()[0, win.header.start:win.header.start + 500] * 1e6
    np.testing.assert_allclose(win.signal_CT[CHANNELS_1020_19.index("T7")], t7, rtol=1e-4, atol=1e-3)
    bdf = os.path.join(shared_data, "mne-testing-data", "BDF", "multiple_annotation_chans.bdf")
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, PROG, ["build", "--inputs", bdf, "--out", str(tmp_path / "bdf"), "--val-fraction", "0"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "needs 19 channels but 9 are missing" in err and err.count("\n") == 1


def test_interpolating_a_missing_channel_on_real_eeg(shared_data):
    from utils.eeg_channels import prepare_channels

    path = os.path.join(shared_data, "physionet-eegmat", "Subject01_2.edf")
    raw = mne.io.read_raw_edf(path, preload=True, verbose="error")
    truth = raw.get_data(picks=["EEG Cz"])[0]
    raw.drop_channels(["EEG Cz"])
    raw, mapping = prepare_channels(raw, "1020-19", max_interpolate=1, where=path)
    assert mapping.interpolated == ["Cz"] and raw.ch_names == list(CHANNELS_1020_19)
    # spherical splines from the 18 neighbours recover much of Cz (a random guess would give ~0)
    assert np.corrcoef(raw.get_data()[CHANNELS_1020_19.index("Cz")], truth)[0, 1] > 0.4
