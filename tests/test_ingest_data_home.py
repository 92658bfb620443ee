"""Where the main job finds its recordings, and download-eegmat with the network replaced by a local fake."""
from __future__ import annotations

import hashlib
import os

import pytest

from utils import eeg_data_home, eeg_download
from utils.data_eeg import main as data_eeg_main
from utils.errors import UserError


def _touch_recordings(folder, names=("Subject00_1.edf", "Subject00_2.edf")):
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / n).write_bytes(b"0")
    return str(folder)


@pytest.fixture
def layout(tmp_path, monkeypatch):
    """A home folder, a repo inside a development layout, and an env folder, all empty at first."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    repo = tmp_path / "work" / "repo"
    repo.mkdir(parents=True)
    return {"home": home, "repo": str(repo), "dev": tmp_path / "work" / "shared" / "data" / "physionet-eegmat",
            "data_folder": home / "eegvar_data" / "physionet-eegmat", "env": tmp_path / "mine"}


def test_lookup_order_env_then_data_folder_then_dev_layout(layout):
    with pytest.raises(UserError, match="download-eegmat.*--synthetic"):
        eeg_data_home.locate_eegmat({}, repo_root=layout["repo"])
    _touch_recordings(layout["dev"])
    found = eeg_data_home.locate_eegmat({}, repo_root=layout["repo"])
    assert (found.path, found.source) == (os.path.normpath(layout["dev"]), "development layout")
    _touch_recordings(layout["data_folder"])
    found = eeg_data_home.locate_eegmat({}, repo_root=layout["repo"])
    assert (found.path, found.source) == (str(layout["data_folder"]), "data folder")
    env_dir = _touch_recordings(layout["env"])
    found = eeg_data_home.locate_eegmat({"EEGVAR_DATA": env_dir}, repo_root=layout["repo"])
    assert (found.path, found.source) == (env_dir, "env")


def test_env_naming_an_empty_folder_is_an_error_not_skipped(layout):
    _touch_recordings(layout["data_folder"])
    layout["env"].mkdir()
    with pytest.raises(UserError, match=r"EEGVAR_DATA=.*mine holds no eegmat recordings"):
        eeg_data_home.locate_eegmat({"EEGVAR_DATA": str(layout["env"])}, repo_root=layout["repo"])


def _fake_physionet(files: dict[str, bytes], sums_override: dict[str, str] | None = None):
    """A fetch(url, dest) serving ``files`` and a SHA256SUMS.txt computed here with hashlib."""
    sums = {n: hashlib.sha256(b).hexdigest() for n, b in files.items()}
    sums.update(sums_override or {})
    listing = "".join(f"{h}  ./{n}\n" for n, h in sums.items()).encode()
    calls: list[str] = []

    def fetch(url: str, dest: str) -> None:
        name = url.rsplit("/", 1)[1]
        calls.append(name)
        body = listing if name == "SHA256SUMS.txt" else files.get(name)
        if body is None:
            raise OSError(f"404 {url}")
        with open(dest, "wb") as fh:
            fh.write(body)
    return fetch, calls


@pytest.fixture
def no_pins(monkeypatch, tmp_path):
    """Subjects 30-31 are not in the pinned list, so only the published sums check them."""
    files = {f"Subject{s}_{r}.edf": f"edf {s} {r}".encode() for s in (30, 31) for r in (1, 2)}
    files["subject-info.csv"] = b"subject,age\n"
    pins = tmp_path / "pins.txt"
    pins.write_text(f"{hashlib.sha256(b'subject,age' + bytes([10])).hexdigest()}  subject-info.csv\n")
    monkeypatch.setattr(eeg_download, "PINNED_SHA256_FILE", str(pins))
    return files


def test_download_eegmat_writes_checked_files_and_refetches_only_missing(tmp_path, no_pins):
    fetch, calls = _fake_physionet(no_pins)
    out = tmp_path / "eegmat"
    paths = eeg_download.fetch_eegmat(str(out), [30, 31], fetch=fetch)
    assert [os.path.basename(p) for p in paths] == ["Subject30_1.edf", "Subject30_2.edf", "Subject31_1.edf",
                                                     "Subject31_2.edf"]
    assert (out / "Subject31_2.edf").read_bytes() == b"edf 31 2"
    assert sorted(os.listdir(out)) == sorted(no_pins)  # no .part or SHA256SUMS leftovers
    (out / "Subject30_1.edf").unlink()
    calls.clear()
    eeg_download.fetch_eegmat(str(out), [30, 31], fetch=fetch)
    assert calls == ["SHA256SUMS.txt", "Subject30_1.edf"]
    assert eeg_data_home.has_recordings(str(out))


def test_download_eegmat_corrupt_file_is_refused_and_not_kept(tmp_path, no_pins):
    fetch, _ = _fake_physionet(no_pins, sums_override={"Subject31_1.edf": "0" * 64})
    out = tmp_path / "eegmat"
    with pytest.raises(UserError, match=r"Subject31_1\.edf has SHA-256 .* expected 000000000000"):
        eeg_download.fetch_eegmat(str(out), [30, 31], fetch=fetch)
    assert not (out / "Subject31_1.edf").exists() and not (out / "Subject31_1.edf.part").exists()


def test_download_eegmat_pinned_checksum_disagreeing_with_published_is_refused(tmp_path, no_pins, monkeypatch):
    fetch, _ = _fake_physionet(no_pins, sums_override={"subject-info.csv": "f" * 64})
    with pytest.raises(UserError, match="subject-info.csv.*differs from the one this project verified"):
        eeg_download.fetch_eegmat(str(tmp_path / "x"), [30], fetch=fetch)


def test_download_eegmat_cli_reports_network_failure_in_one_line(tmp_path, monkeypatch, capsys):
    def offline(url, dest):
        raise OSError("Name or service not known")
    monkeypatch.setattr(eeg_download, "urllib_fetch", offline)
    with pytest.raises(UserError, match=r"fetching https://physionet\.org/files/eegmat/1\.0\.0/SHA256SUMS\.txt "
                                        r"failed \(OSError: Name or service not known\)"):
        data_eeg_main(["download-eegmat", "--subjects", "0", "--data-dir", str(tmp_path / "d")])
    assert os.listdir(tmp_path / "d") == []


@pytest.mark.realdata
def test_pinned_checksums_match_the_shared_recordings(shared_data):
    pinned = eeg_download.parse_sha256sums(open(eeg_download.PINNED_SHA256_FILE).read())
    for name in ("Subject00_2.edf", "subject-info.csv"):
        with open(os.path.join(shared_data, "physionet-eegmat", name), "rb") as fh:
            assert hashlib.sha256(fh.read()).hexdigest() == pinned[name]
