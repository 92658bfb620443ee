"""The prototype pipeline end to end on a tiny synthetic set: training, resume, inference, run folders, plot."""
from __future__ import annotations

import json
import logging
import math
import os
import shutil

import numpy as np
import pytest
import torch

from prototypes import eeg_scale_ar_pipeline as pipeline
from prototypes.scripts import plot_rollout
from prototypes.synthetic_eeg import SyntheticConfig, make_dataset
from utils.checkpoint import load_checkpoint
from utils.errors import CheckpointError, UserError

DATA = SyntheticConfig(n_channels=2, sfreq=100.0, window_sec=1.0, n_windows=64, windows_per_recording=4, seed=0)
ARGS = ["--batch-size", "16", "--d-model", "32", "--nhead", "2", "--num-layers", "1", "--dropout", "0.1",
        "--lr", "2e-3", "--log-interval", "5", "--seed", "0", "--device", "cpu"]
EPOCHS = 5


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("proto_pipe") / "data")
    make_dataset(root, DATA)
    return root


@pytest.fixture(scope="module")
def run_dir(data_root, tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("proto_pipe") / "run")
    assert pipeline.main(["--data-root", data_root, "--checkpoint-dir", out, "--epochs", str(EPOCHS), *ARGS]) == 0
    return out


def _snapshot(folder: str) -> dict[str, bytes]:
    return {n: open(os.path.join(folder, n), "rb").read() for n in sorted(os.listdir(folder))
            if os.path.isfile(os.path.join(folder, n))}


def test_training_writes_outputs_and_val_loss_drops(run_dir):
    for name in ("best.pt", "last.pt", "metrics.json", "demo_prediction.pt"):
        assert os.path.isfile(os.path.join(run_dir, name)), name
    metrics = json.load(open(os.path.join(run_dir, "metrics.json")))
    epochs = metrics["epochs"]
    assert [e["epoch"] for e in epochs] == list(range(1, EPOCHS + 1))
    for e in epochs:
        assert {"train_loss", "val_loss", "grad_norm", "val_loss_per_stage"} <= set(e)
        assert math.isfinite(e["grad_norm"]) and e["grad_norm"] > 0
    val = [e["val_loss"] for e in epochs]
    baseline = metrics["val_loss_add_nothing"]  # the untrained model's loss: it starts by adding nothing
    assert val[-1] < val[0] and min(val) < 0.98 * baseline, (val, baseline)
    # the learnable transition (delta -> +theta, theta being delta's harmonic) improves clearly
    assert epochs[-1]["val_loss_per_stage"][0] < 0.85 * metrics["val_loss_add_nothing_per_stage"][0]
    assert metrics["best_val_loss"] == min(val) and metrics["best_epoch"] == 1 + int(np.argmin(val))
    best, _ = load_checkpoint(os.path.join(run_dir, "best.pt"))
    assert best["epoch"] == metrics["best_epoch"] and best["meta"]["config"]["d_model"] == 32


def test_demo_prediction_is_a_rollout_from_the_first_val_stage(run_dir, data_root):
    pred, _ = load_checkpoint(os.path.join(run_dir, "demo_prediction.pt"), fallback=False)
    K, C, T = 5, DATA.n_channels, DATA.window_samples
    assert pred["rollout_KCT"].shape == pred["target_KCT"].shape == pred["teacher_forced_KCT"].shape == (K, C, T)
    assert pred["split"] == "val" and pred["sample_idx"] == 0
    with np.load(os.path.join(data_root, pred["source_file"])) as npz:
        np.testing.assert_array_equal(pred["target_KCT"].numpy(), npz["cumulative_bands"])
    torch.testing.assert_close(pred["rollout_KCT"][0], pred["target_KCT"][0], rtol=0, atol=0)
    assert not torch.allclose(pred["rollout_KCT"][1], pred["rollout_KCT"][0])  # it adds something
    assert pred["stage_names"][-1] == "delta+theta+alpha+beta+gamma"


def test_resume_equals_an_uninterrupted_run(data_root, tmp_path):
    small = ["--data-root", data_root, "--limit-train-samples", "12", "--limit-val-samples", "4", *ARGS]
    full_dir, split_dir = str(tmp_path / "full"), str(tmp_path / "resumed")
    pipeline.main(["--checkpoint-dir", full_dir, "--epochs", "3", *small])
    pipeline.main(["--checkpoint-dir", split_dir, "--epochs", "1", *small])
    pipeline.main(["--checkpoint-dir", split_dir, "--epochs", "3", "--resume", os.path.join(split_dir, "last.pt"),
                   *small])
    full, _ = load_checkpoint(os.path.join(full_dir, "last.pt"))
    resumed, _ = load_checkpoint(os.path.join(split_dir, "last.pt"))
    assert resumed["epoch"] == full["epoch"] == 3
    for key, value in full["model"].items():
        assert torch.equal(value, resumed["model"][key]), key
    assert resumed["optimizer"]["state"][0]["step"] == full["optimizer"]["state"][0]["step"]
    strip = lambda hist: [{k: v for k, v in e.items() if k != "seconds"} for e in hist]  # noqa: E731
    assert strip(resumed["history"]) == strip(full["history"])
    assert len(full["history"]) == 3 and full["history"][0]["val_loss"] != full["history"][2]["val_loss"]


class _Stop(Exception):
    pass


def _stop_at_step(monkeypatch, n: int) -> None:
    """Raise :class:`_Stop` in the ``n``-th training step (1-based over the whole run), before its update."""
    real, calls = torch.nn.utils.clip_grad_norm_, [0]

    def clip(*a, **kw):
        calls[0] += 1
        if calls[0] == n:
            raise _Stop
        return real(*a, **kw)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip)


def test_mid_epoch_checkpoint_resumes_exactly(data_root, tmp_path, monkeypatch):
    # 12 windows -> 48 pairs -> 6 steps of 8 per epoch; a checkpoint every 4 steps (not a divisor of 6)
    small = ["--data-root", data_root, "--limit-train-samples", "12", "--limit-val-samples", "4", *ARGS,
             "--batch-size", "8", "--epochs", "3"]
    full_dir, split_dir = str(tmp_path / "full"), str(tmp_path / "resumed")
    pipeline.main(["--checkpoint-dir", full_dir, *small])
    last = os.path.join(split_dir, "last.pt")
    _stop_at_step(monkeypatch, 11)  # epoch 2, step 5: its last mid-epoch checkpoint is after step 4
    with pytest.raises(_Stop):
        pipeline.main(["--checkpoint-dir", split_dir, "--save-every-steps", "4", *small])
    monkeypatch.undo()
    mid, _ = load_checkpoint(last, fallback=False)  # loaded with weights_only=True
    part = mid["partial_epoch"]
    assert mid["epoch"] == 1 and len(mid["history"]) == 1 and (part["step"], part["steps_in_epoch"]) == (4, 6)
    assert part["rng_state"].dtype == torch.uint8 and len(part["grad_norms"]) == 4
    assert load_checkpoint(os.path.join(split_dir, "last.prev.pt"), fallback=False)[0]["epoch"] == 1
    with pytest.raises(CheckpointError, match=r"mid-epoch \(step 4/6\) with --batch-size 8 but this run has 16"):
        pipeline.main(["--checkpoint-dir", split_dir, "--resume", last, *small, "--batch-size", "16"])
    # the resume itself writes mid-epoch checkpoints (--save_every_steps spelling) and is stopped again,
    # in epoch 3 step 2, right after epoch 3's first checkpoint (step 1 with an interval of 1)
    _stop_at_step(monkeypatch, 6 - 4 + 2)
    with pytest.raises(_Stop):
        pipeline.main(["--checkpoint-dir", split_dir, "--resume", last, "--save_every_steps", "1", *small])
    monkeypatch.undo()
    again, _ = load_checkpoint(last, fallback=False)
    assert again["epoch"] == 2 and again["partial_epoch"]["step"] == 1
    pipeline.main(["--checkpoint-dir", split_dir, "--resume", last, *small])
    full, _ = load_checkpoint(os.path.join(full_dir, "last.pt"))
    resumed, _ = load_checkpoint(last)
    assert resumed["epoch"] == full["epoch"] == 3 and "partial_epoch" not in resumed
    assert full["model"].keys() == resumed["model"].keys()
    for key, value in full["model"].items():
        assert torch.equal(value, resumed["model"][key]), key
    for key, value in full["optimizer"]["state"].items():
        for name, tensor in value.items():
            assert torch.equal(tensor, resumed["optimizer"]["state"][key][name]), (key, name)
    strip = lambda hist: [{k: v for k, v in e.items() if k != "seconds"} for e in hist]  # noqa: E731
    metrics = [json.load(open(os.path.join(d, "metrics.json"))) for d in (full_dir, split_dir)]
    assert strip(metrics[1]["epochs"]) == strip(metrics[0]["epochs"])
    assert [e["steps"] for e in metrics[1]["epochs"]] == [6, 6, 6]
    assert metrics[1]["best_epoch"] == metrics[0]["best_epoch"]


def test_resume_with_enough_epochs_only_infers(run_dir, data_root, tmp_path):
    work = str(tmp_path / "run")
    shutil.copytree(run_dir, work)
    before = _snapshot(work)
    pipeline.main(["--data-root", data_root, "--checkpoint-dir", work, "--epochs", "1",
                   "--resume", os.path.join(work, "best.pt"), "--limit-train-samples", "1",
                   "--limit-val-samples", "2", "--demo-index", "1"])
    after = _snapshot(work)
    assert {n: b for n, b in after.items() if n != "demo_prediction.pt"} == \
           {n: b for n, b in before.items() if n != "demo_prediction.pt"}
    pred, _ = load_checkpoint(os.path.join(work, "demo_prediction.pt"), fallback=False)
    assert pred["sample_idx"] == 1
    fresh = str(tmp_path / "infer_only")
    pipeline.main(["--data-root", data_root, "--checkpoint-dir", fresh, "--epochs", "1",
                   "--resume", os.path.join(run_dir, "best.pt")])
    assert sorted(os.listdir(fresh)) == ["demo_prediction.pt"]


def test_run_folder_is_never_overwritten_by_surprise(run_dir, data_root, tmp_path):
    work = str(tmp_path / "run")
    shutil.copytree(run_dir, work)
    before = _snapshot(work)
    with pytest.raises(UserError, match=r"already holds a run .*--resume .*last.pt.*--overwrite"):
        pipeline.main(["--data-root", data_root, "--checkpoint-dir", work, "--epochs", "1", *ARGS])
    other = str(tmp_path / "other")
    pipeline.main(["--data-root", data_root, "--checkpoint-dir", other, "--epochs", "1", "--limit-train-samples", "4",
                   "--limit-val-samples", "2", *ARGS])
    with pytest.raises(UserError, match="already holds another run"):
        pipeline.main(["--data-root", data_root, "--checkpoint-dir", work, "--epochs", "2",
                       "--resume", os.path.join(other, "last.pt"), *ARGS])
    assert _snapshot(work) == before
    pipeline.main(["--data-root", data_root, "--checkpoint-dir", work, "--epochs", "1", "--limit-train-samples", "4",
                   "--limit-val-samples", "2", "--overwrite", *ARGS])
    assert json.load(open(os.path.join(work, "metrics.json")))["run_id"] != \
        json.load(open(os.path.join(run_dir, "metrics.json")))["run_id"]
    assert not os.path.exists(os.path.join(work, "last.prev.pt"))


def test_checkpoint_of_another_shape_names_both_values(run_dir, data_root, tmp_path):
    with pytest.raises(CheckpointError, match=r"d_model=32 but this run has d_model=64"):
        pipeline.main(["--data-root", data_root, "--checkpoint-dir", str(tmp_path / "x"), "--epochs", "9",
                       "--resume", os.path.join(run_dir, "last.pt"), "--d-model", "64"])
    three = str(tmp_path / "three")
    make_dataset(three, SyntheticConfig(**{**DATA.__dict__, "n_channels": 3, "n_windows": 8}))
    with pytest.raises(CheckpointError, match=r"channels=2 but --data-root .* has channels=3"):
        pipeline.main(["--data-root", three, "--checkpoint-dir", str(tmp_path / "x"), "--epochs", "9",
                       "--resume", os.path.join(run_dir, "last.pt")])
    assert not (tmp_path / "x").exists()


def test_cuda_without_a_gpu_falls_back_to_cpu_with_a_warning(caplog):
    if torch.cuda.is_available():
        pytest.skip("a GPU is available here")
    with caplog.at_level(logging.WARNING):
        assert pipeline.resolve_device("cuda") == torch.device("cpu")
    assert "falling back to CPU" in caplog.text
    with pytest.raises(UserError, match="--device"):
        pipeline.resolve_device("gpu")


def test_plot_and_json_report(run_dir, data_root, tmp_path):
    png, js = str(tmp_path / "rollout.png"), str(tmp_path / "rollout.json")
    pred_path = os.path.join(run_dir, "demo_prediction.pt")
    assert plot_rollout.main([pred_path, png, "--channel", "1", "--data-root", data_root, "--split", "val",
                              "--sample-idx", "0", "--json-out", js]) == 0
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image
    assert matplotlib.image.imread(png).shape[0] > 500  # five stacked panels
    report = json.load(open(js))
    stages = report["stages"]
    assert [s["stage"] for s in stages] == [1, 2, 3, 4, 5] and stages[0]["given"] and stages[0]["snr_db"] is None
    pred, _ = load_checkpoint(pred_path, fallback=False)
    true_KCT, roll_KCT = pred["target_KCT"].double().numpy(), pred["rollout_KCT"].double().numpy()
    mses = []
    for k in range(1, 5):
        err = true_KCT[k] - roll_KCT[k]
        mses.append(np.mean(err ** 2))
        assert stages[k]["mse_uv2"] == pytest.approx(mses[-1], rel=1e-9)
        assert stages[k]["cumulative_mse_uv2"] == pytest.approx(np.mean(mses), rel=1e-9)
        assert stages[k]["snr_db"] == pytest.approx(10 * np.log10(np.sum(true_KCT[k] ** 2) / np.sum(err ** 2)))
    assert stages[1]["band_hz"] == [0.5, 8.0] and report["channel_name"] == "S01"
    with pytest.raises(UserError, match="--overwrite"):
        plot_rollout.main([pred_path, png])
    with pytest.raises(UserError, match="was conditioned on"):
        plot_rollout.main([pred_path, str(tmp_path / "b.png"), "--data-root", data_root, "--sample-idx", "3"])
    with pytest.raises(UserError, match="--channel"):
        plot_rollout.main([pred_path, str(tmp_path / "c.png"), "--channel", "2"])
