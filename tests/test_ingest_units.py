"""Ingestion building blocks: channel names and types, labels, subjects, splits, npz writer, one-pass stages."""
from __future__ import annotations

import io
import os
import zipfile

import mne
import numpy as np
import pytest

from utils.eeg_channels import CHANNELS_1020_19, canonical_name, check_channel_set, non_eeg_type, prepare_channels
from utils.eeg_fastfilter import cumulative_stages_one_pass
from utils.eeg_labels import parse_label_rule, recording_label, window_labels_from_annotations
from utils.eeg_npz import save_npz_huffman
from utils.eeg_schema import read_header, read_window, write_window
from utils.eeg_splits import assign_splits, subject_of
from utils.eeg_stages import cumulative_frequency_levels
from utils.errors import UserError


@pytest.mark.parametrize("label, expected", [
    ("EEG T3", "T7"), ("EEG T4", "T8"), ("T5", "P7"), ("eeg t6", "P8"), ("FP1-REF", "Fp1"), ("Fc5.", "FC5"),
    ("Fp1.", "Fp1"), ("EEG Fz-LE", "Fz"), ("CZ", "Cz"), ("O2-A1", "O2"), ("POz", "POz"), ("EEG 000", "000"),
    ("Fp1-F7", "Fp1-F7"),
])
def test_canonical_name(label, expected):
    assert canonical_name(label) == expected


@pytest.mark.parametrize("label, others, expected", [
    ("ECG ECG", (), "ecg"), ("EEG A2-A1", (), "misc"), ("VEOGR", (), "eog"), ("EOG", (), "eog"),
    ("EMG", (), "emg"), ("Trigger", (), "stim"), ("Status", (), "stim"), ("acc1", (), "misc"),
    ("Ergo-Left", (), "misc"), ("E", (), "misc"), ("A1", (), "misc"), ("LEFT_EAR", (), "misc"),
    ("$A2", (), "misc"), ("A1", ("A1", "A2", "A3"), None), ("Fp1", (), None), ("EEG T3", (), None),
    ("C3", (), None), ("EEG 012", (), None),
])
def test_non_eeg_type(label, others, expected):
    assert non_eeg_type(label, others) == expected


def test_channel_set_suggestion():
    with pytest.raises(UserError, match=r"Did you mean '1020-19'"):
        check_channel_set("1020_19")


def _raw_from_field(names: list[str], sfreq: float = 100.0, n_times: int = 2000) -> tuple[mne.io.RawArray, dict]:
    """A smooth spatial field: each channel = sources weighted by the electrode's position."""
    montage = mne.channels.make_standard_montage("standard_1020" if "colin27_1020" not in
                                                 mne.channels.get_builtin_montages() else "colin27_1020")
    pos = montage.get_positions()["ch_pos"]
    rng = np.random.default_rng(0)
    s_3T = rng.standard_normal((3, n_times)).cumsum(axis=1)

    def value(name):
        return (np.asarray(pos[canonical_name(name)]) * 10) @ s_3T * 1e-6

    data = np.stack([value(n) if canonical_name(n) in pos else rng.standard_normal(n_times) * 1e-6 for n in names])
    truth = {canonical_name(n): value(n) for n in CHANNELS_1020_19}
    return mne.io.RawArray(data, mne.create_info(names, sfreq, "eeg"), verbose=False), truth


def test_prepare_channels_orders_retypes_and_interpolates():
    recorded = ["EEG " + n for n in ("T3", "Fp2", "F7", "F3", "Fz", "F4", "F8", "Fp1", "C3", "C4", "T4", "T5", "P3",
                                     "Pz", "P4", "T6", "O1")] + ["ECG ECG", "EEG A2-A1"]  # Cz and O2 missing
    raw, truth = _raw_from_field(recorded)
    raw, mapping = prepare_channels(raw, "1020-19", max_interpolate=2, where="synthetic")
    assert raw.ch_names == list(CHANNELS_1020_19) == mapping.ch_names
    assert mapping.interpolated == ["Cz", "O2"]
    assert mapping.retyped == {"ECG ECG": "ecg", "EEG A2-A1": "misc"}
    assert mapping.renamed["EEG T3"] == "T7" and mapping.renamed["EEG T6"] == "P8"
    data = raw.get_data()
    np.testing.assert_array_equal(data[CHANNELS_1020_19.index("T7")], truth["T7"])  # recorded: untouched
    for name in ("Cz", "O2"):  # interpolated from a smooth field: close to the truth
        assert np.corrcoef(data[CHANNELS_1020_19.index(name)], truth[name])[0, 1] > 0.9


def test_prepare_channels_refuses_too_many_missing():
    raw, _ = _raw_from_field(["Fp1", "Fp2", "C3", "C4", "O1", "O2"])
    with pytest.raises(UserError, match=r"rec.edf: channel set '1020-19' needs 19 channels but 13 are missing"):
        prepare_channels(raw, "1020-19", max_interpolate=3, where="rec.edf")
    raw, _ = _raw_from_field(["EEG 000", "EEG 001", "EEG 002"])
    with pytest.raises(UserError, match=r"none of the 3 recorded EEG channel names is a 10-20 name \(e.g. 'EEG 000'\)"):
        prepare_channels(raw, "1020-19", where="x.set")


def test_label_rule_regex_and_errors():
    rule = parse_label_rule(r"regex:_1\.edf$=rest,_2\.edf$=arithmetic")
    assert rule.names() == ["rest", "arithmetic"]
    assert recording_label(rule, "/d/Subject03_2.edf", rule.names()) == 1
    assert recording_label(rule, "/d/Subject03_1.edf", rule.names()) == 0
    with pytest.raises(UserError, match="matches none of the --label-from patterns"):
        recording_label(rule, "/d/Subject03_3.edf", rule.names())
    commas = parse_label_rule(r"regex:a{1,2}b=x,c=y")  # a comma inside a pattern stays in the pattern
    assert commas.items == (("a{1,2}b", "x"), ("c", "y"))
    for bad in ("regex:", "regex:([=x", "regex:abc", "bogus:1=2"):
        with pytest.raises(UserError, match="--label-from"):
            parse_label_rule(bad)


def test_window_labels_from_annotations():
    rule = parse_label_rule("annotations:T1=left,T2=right")
    starts = np.array([0.0, 4.0, 8.0, 12.0])
    labels = window_labels_from_annotations(rule, rule.names(), np.array([0.0, 5.0]), np.array([5.0, 4.0]),
                                            ["T1", "T2"], starts, 4.0)
    # window 0 in T1; window 1 (4-8) overlaps T1 by 1 s and T2 by 3 s; window 2 (8-12) overlaps T2 by 1 s only
    assert labels.tolist() == [0, 1, -1, -1]


@pytest.mark.parametrize("path, regex, expected", [
    ("/data/physionet-eegmat/Subject05_1.edf", None, ("Subject05", "trailing-run")),
    ("/mne_data/S001/S001R02.edf", None, ("S001", "eegmmidb")),
    ("/bids/sub-07/eeg/sub-07_task-rest_eeg.edf", None, ("sub-07", "bids")),
    ("/x/MB0400FU.EEG", None, ("MB0400FU", "fallback")),
    ("/tuh/01_tcp_ar/aaaaaaab_s002_t001.edf", None, ("aaaaaaab", "tuh")),
    ("/x/pat12/night3.edf", r"/(?P<subject>pat\d+)/", ("pat12", "regex")),
    ("/x/other/night3.edf", r"/(?P<subject>pat\d+)/", ("night3", "fallback")),
])
def test_subject_of(path, regex, expected):
    assert subject_of(path, regex) == expected


def test_assign_splits_deterministic_and_disjoint():
    groups = [f"S{i:02d}" for i in range(10)] * 2
    a = assign_splits(groups, 0.2, seed=3)
    assert a == assign_splits(list(reversed(groups)), 0.2, seed=3)
    assert sorted(g for g, s in a.items() if s == "val") != [] and sum(s == "val" for s in a.values()) == 2
    assert {s for s in assign_splits(groups, 0.0, 0).values()} == {"train"}
    assert assign_splits(groups, 0.2, 0, val_groups=["S05"])["S05"] == "val"
    with pytest.raises(UserError, match="--val-groups"):
        assign_splits(groups, 0.2, 0, val_groups=["nobody"])
    with pytest.raises(UserError, match="cannot split 1 group"):
        assign_splits(["only"], 0.2, 0)


def test_npz_huffman_roundtrip_and_reproducible(tmp_path, rng):
    arrays = dict(a=rng.standard_normal((3, 50)).astype(np.float32), b=np.int64(7), c=np.asarray(["Fp1", "Cz"]),
                  d=np.asarray("text"))
    buf1, buf2 = io.BytesIO(), io.BytesIO()
    save_npz_huffman(buf1, arrays)
    save_npz_huffman(buf2, dict(arrays))
    assert buf1.getvalue() == buf2.getvalue()
    assert zipfile.ZipFile(io.BytesIO(buf1.getvalue())).testzip() is None
    with np.load(io.BytesIO(buf1.getvalue())) as npz:
        for key, value in arrays.items():
            np.testing.assert_array_equal(npz[key], value)
    signal = rng.standard_normal((4, 500)).astype(np.float32) * 20
    stages = np.stack([signal * 0.5, signal])
    paths = [str(tmp_path / f"w{i}.npz") for i in range(2)]
    for path in paths:
        write_window(path, signal, stages, [[0.5, 4], [4, 8]], 100.0, ch_names=list("abcd"), label=1,
                     compress="fast", fsync=False)
    win = read_window(paths[0])
    np.testing.assert_array_equal(win.stages_KCT, stages)
    assert read_header(paths[1]).label == 1 and read_header(paths[1]).ch_names == tuple("abcd")
    assert open(paths[0], "rb").read() == open(paths[1], "rb").read()
    stored = str(tmp_path / "stored.npz")
    write_window(stored, signal, stages, [[0.5, 4], [4, 8]], 100.0, ch_names=list("abcd"), label=1, compress=False)
    assert os.path.getsize(paths[0]) < 0.97 * os.path.getsize(stored)  # it does compress


@pytest.mark.parametrize("n_times, sfreq, bands", [
    (3000, 100.0, ((0.5, 4), (4, 8), (8, 13), (13, 30), (30, 50))),
    (400, 100.0, ((0.5, 4), (4, 8), (8, 13), (13, 30), (30, 50))),  # shorter than the 661-tap filter
    (1500, 250.0, ((1, 4), (4, 30), (30, 100))),
])
def test_one_pass_stages_equal_reference(n_times, sfreq, bands, rng):
    x_CT = rng.standard_normal((3, n_times)).cumsum(axis=1)
    with pytest.warns(RuntimeWarning) if n_times < 661 else _no_warning():
        ref_KCT = cumulative_frequency_levels(x_CT, sfreq, bands)
    fast_KCT = cumulative_stages_one_pass(x_CT, sfreq, bands, out_dtype=np.float64)
    assert fast_KCT.shape == ref_KCT.shape
    np.testing.assert_allclose(fast_KCT, ref_KCT, rtol=0, atol=1e-10 * np.abs(ref_KCT).max())


class _no_warning:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_find_recordings_skips_companions_and_keeps_folder_formats(tmp_path):
    from utils.eeg_read import find_recordings

    for name in ("a/rec.vhdr", "a/rec.vmrk", "a/rec.eeg", "a/x.set", "a/x.fdt", "b/MB01.EEG", "b/MB01.PNT",
                 "b/notes.txt", "c/net.mff/signal1.bin", "c/net.mff/info.xml", "d/s_raw.fif.gz"):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    found = [os.path.relpath(p, tmp_path) for p in find_recordings([str(tmp_path)])]
    assert found == ["a/rec.vhdr", "a/x.set", "b/MB01.EEG", "c/net.mff", "d/s_raw.fif.gz"]
    assert [os.path.relpath(p, tmp_path) for p in find_recordings([str(tmp_path / "*" / "*.set")])] == ["a/x.set"]
    with pytest.raises(UserError, match="is not a file, folder or matching glob pattern"):
        find_recordings([str(tmp_path / "nothing*.edf")])


def test_biosemi_abc_labels_are_not_mapped_to_1020():
    names = [f"{bank}{i}" for bank in "ABCD" for i in range(1, 33)]
    raw = mne.io.RawArray(np.random.default_rng(0).standard_normal((len(names), 300)) * 1e-5,
                          mne.create_info(names, 100.0, "eeg"), verbose=False)
    with pytest.raises(UserError, match="BioSemi ABC labels"):
        prepare_channels(raw.copy(), "1020-19", where="cap.bdf")
    raw, mapping = prepare_channels(raw, "all", where="cap.bdf")
    assert raw.ch_names == names and mapping.renamed == {} and mapping.retyped == {}  # A1/A2 stay scalp EEG


def test_one_pass_stages_channel_blocks(monkeypatch, rng):
    """Long recordings are filtered in channel blocks; the result does not depend on the block size."""
    x_CT = rng.standard_normal((5, 3000)).cumsum(axis=1)
    whole = cumulative_stages_one_pass(x_CT, 100.0, out_dtype=np.float64)
    import utils.eeg_fastfilter as ff

    monkeypatch.setattr(ff, "_BLOCK_SAMPLES", 6000)  # blocks of 2 channels
    blocked = ff.cumulative_stages_one_pass(x_CT, 100.0, out_dtype=np.float64)
    np.testing.assert_array_equal(blocked, whole)
