"""Atomic, checksummed, safe checkpoints."""
from __future__ import annotations

import errno
import os

import pytest
import torch

from utils.checkpoint import check_config, load_checkpoint, previous_path, save_checkpoint
from utils.errors import CheckpointError


def _state(v: float) -> dict:
    return {"model": {"w": torch.full((4,), v)}, "epoch": int(v)}


def test_round_trip_and_previous_kept(tmp_path):
    path = str(tmp_path / "ckpt.pth")
    save_checkpoint(path, _state(1), config={"depth": 4})
    save_checkpoint(path, _state(2), config={"depth": 4})
    state, used = load_checkpoint(path)
    assert used == path and state["epoch"] == 2 and state["meta"]["config"] == {"depth": 4}
    assert torch.load(previous_path(path), weights_only=True)["epoch"] == 1


def test_truncated_newest_falls_back_to_previous(tmp_path):
    path = str(tmp_path / "ckpt.pth")
    save_checkpoint(path, _state(1))
    save_checkpoint(path, _state(2))
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 3])
    state, used = load_checkpoint(path)
    assert used == previous_path(path) and state["epoch"] == 1
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(path, fallback=False)


def test_bit_flip_detected_by_checksum(tmp_path):
    path = str(tmp_path / "ckpt.pth")
    save_checkpoint(path, _state(1))
    state = torch.load(path, weights_only=True)
    state["model"]["w"][0] = 99.0  # changed content, stale checksum
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_checkpoint(path, fallback=False)


class _Evil:
    """Unpickling this creates the folder ``marker``: what a malicious checkpoint would do under plain pickle."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (self.marker,)


@pytest.mark.parametrize("fallback", [True, False])
def test_malicious_pickle_is_refused_without_running(tmp_path, fallback):
    marker = str(tmp_path / "PAYLOAD_RAN")
    path = str(tmp_path / "evil.pth")
    torch.save({"x": _Evil(marker)}, path)
    assert not os.path.exists(marker)
    with pytest.raises(CheckpointError, match="refused to load"):
        load_checkpoint(path, fallback=fallback)
    assert not os.path.exists(marker), "loading the checkpoint ran its payload"
    # a malicious previous checkpoint behind a damaged newest one is refused the same way
    save_checkpoint(str(tmp_path / "b.pth"), _state(1))
    os.replace(path, previous_path(str(tmp_path / "b.pth")))
    open(str(tmp_path / "b.pth"), "wb").write(b"damaged")
    with pytest.raises(CheckpointError):
        load_checkpoint(str(tmp_path / "b.pth"), fallback=fallback)
    assert not os.path.exists(marker), "loading the fallback checkpoint ran its payload"


def test_full_disk_leaves_previous_intact(tmp_path, monkeypatch):
    path = str(tmp_path / "ckpt.pth")
    save_checkpoint(path, _state(1))
    real_save = torch.save

    def failing_save(obj, fh, *a, **k):
        real_save(obj, fh, *a, **k)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(CheckpointError, match="disk full"):
        save_checkpoint(path, _state(2))
    monkeypatch.undo()
    assert load_checkpoint(path, fallback=False)[0]["epoch"] == 1
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_config_mismatch_names_both_values():
    with pytest.raises(CheckpointError, match="depth=16 but this run has depth=20"):
        check_config({"depth": 16}, {"depth": 20}, ["depth"], "x.pth")
    check_config({"depth": 16, "ep": 1}, {"depth": 16, "ep": 2}, ["depth"], "x.pth")


def test_nested_config_mismatch_names_the_sub_key():
    saved = {"vae_config": {"z": 32, "bands": [[0.5, 4.0]], "mix_bands": 5}}
    with pytest.raises(CheckpointError, match=r"vae_config\.mix_bands=5 but this run has vae_config\.mix_bands=0;"):
        check_config(saved, {"vae_config": {"z": 32, "bands": [[0.5, 4.0]], "mix_bands": 0}}, ["vae_config"], "x.pth")
    # a sub-key the checkpoint lacks reads as None; float noise below 1e-9 is no difference
    with pytest.raises(CheckpointError, match=r"vae_config\.noise=None but this run has vae_config\.noise=True"):
        check_config(saved, {"vae_config": {**saved["vae_config"], "noise": True}}, ["vae_config"], "x.pth")
    check_config(saved, {"vae_config": {"z": 32, "bands": [[0.5, 4.0 + 1e-12]], "mix_bands": 5}}, ["vae_config"], "x.pth")
