"""Benchmark pieces added for GPU runs: FLOP counting and MFU of bench_train, re-rendered reports, the
'measured on another machine' note, validation-based model selection in bench_generation, the alternate-block
floor on short recordings, and device_check.sh's command line."""
from __future__ import annotations

import subprocess

import numpy as np
import pytest
import torch

from benchmarks import bench_generation, bench_train
from benchmarks.bench_baselines import Split, generation_floors
from benchmarks.report import render_markdown
from utils.eeg_bands import DEFAULT_BANDS
from utils.project_info import REPO_ROOT


def test_train_step_flops_cover_the_dense_layers_and_attention():
    r = bench_train.child("train", 1, 2, 1, True, "cpu")
    # lower bound: 6 x (weights applied to every token) x tokens; the quick VAR has depth 1, width 64
    from benchmarks.bench_speed import load_tokenizer
    from models import build_var
    var = build_var(load_tokenizer(None, True)[0], "cpu", num_classes=2, depth=1)
    per_token = sum(p.numel() for n, p in var.named_parameters() if n.startswith("blocks.") and p.ndim == 2
                    and "ada_lin" not in n)
    dense = 6 * per_token * 2 * var.L
    attention = 12.0 * 2 * var.L ** 2 * var.C
    assert r["attention_flops"].startswith("added analytically")  # CPU SDPA is not in the counter's table
    assert r["model_tflop_per_step"] * 1e12 >= dense + attention
    assert r["model_tflop_per_step"] * 1e12 < 3 * (dense + attention)  # no gross double counting
    assert r["achieved_tflops"] == pytest.approx(r["model_tflop_per_step"] / r["seconds_per_step"])


def _train_row(depth, sec, flops, gpu=None):
    row = {"kind": "train", "depth": depth, "batch": 64, "params_M": 1.0, "seconds_per_step": sec,
           "samples_per_s": 64 / sec, "tokens_per_s": 64 * 749 / sec, "model_tflop_per_step": flops,
           "achieved_tflops": flops / sec, "peak_rss_mb": 100.0}
    if gpu:
        row.update(gpu=gpu, mfu=flops / sec / 800.0, peak_cuda_mb=2048.0)
    return row


def test_train_report_gpu_and_cpu_tables():
    gpu = bench_train.build_report({"rows": [_train_row(16, 0.5, 100.0, "NVIDIA H200")], "train_batch": 64,
                                    "sample_batch": 4, "amp": "bf16", "peak_tflops": 800.0, "peak_source": "x",
                                    "steps": 5, "skip_sampling": True})
    assert gpu["title"].endswith("on the GPU")
    (table,) = gpu["tables"]
    assert table["title"] == "GPU training step"
    row = dict(zip(table["columns"], table["rows"][0]))
    assert row["MFU (%)"] == pytest.approx(25.0) and row["TFLOP/s"] == pytest.approx(200.0)
    assert "sampling not measured" in gpu["text"][0] and "800 TFLOP/s" in gpu["text"][1]
    cpu = bench_train.build_report({"rows": [_train_row(4, 2.0, 1.0)], "train_batch": 2, "sample_batch": 4})
    assert [t["title"] for t in cpu["tables"]] == ["Per depth"] and len(cpu["text"]) == 1


def test_report_marks_results_from_another_machine(tmp_path):
    rep = {"title": "T", "text": [], "tables": [], "figures": []}
    summary = {"machine": {"cuda": None, "date_utc": "d"}, "results": {
        "train": {"machine": {"cuda": None}, "report": rep},
        "train_cuda": {"machine": {"cuda": "NVIDIA H200", "cpu_count": 16, "date_utc": "D", "code_version": "v"},
                       "report": rep}}}
    md = render_markdown(summary, str(tmp_path), str(tmp_path))
    assert md.count("Measured on another machine: NVIDIA H200 GPU") == 1


def test_train_model_keeps_the_weights_with_the_lowest_validation_nll():
    from benchmarks.bench_speed import load_tokenizer
    from models import build_var
    vae, _ = load_tokenizer(None, True)
    torch.manual_seed(0)
    var = build_var(vae, "cpu", num_classes=2, depth=1)
    g = torch.Generator().manual_seed(0)
    T = vae.downsample * 16
    x_tr, x_va = torch.randn(16, 4, T, generator=g), torch.randn(8, 4, T, generator=g)
    y_tr, y_va = torch.arange(16) % 2, torch.arange(8) % 2
    # a high learning rate makes the validation NLL move enough for the choice to matter
    out = bench_generation.train_model(var, "var", vae, x_tr, y_tr, ep=4, bs=4, lr=3e-2, wp_ep=0.5,
                                       val=(x_va, y_va), val_every=1)
    curve = out["val_curve"]
    assert [c["ep"] for c in curve] == [1, 2, 3, 4]
    best = min(curve, key=lambda c: c["val_nll"])
    assert out["selected_epoch"] == best["ep"] and out["selected_val_nll"] == best["val_nll"]
    assert bench_generation.val_nll(var, "var", vae, x_va, y_va) == pytest.approx(best["val_nll"], rel=1e-5)


def _split(n_rec: int, per_rec: int, rng) -> Split:
    n = n_rec * per_rec
    stages = rng.standard_normal((n, len(DEFAULT_BANDS), 2, 200))
    return Split(stages_NKCT=stages, labels=np.zeros(n, int), source=np.repeat([f"r{i}" for i in range(n_rec)], per_rec),
                 start=np.tile(np.arange(per_rec) * 200, n_rec), subject=np.repeat(["s"], n),
                 sfreq=100.0, bands=np.asarray(DEFAULT_BANDS, float))


def test_floor_uses_single_window_blocks_for_short_recordings():
    rng = np.random.default_rng(0)
    train, val = _split(4, 6, rng), _split(4, 3, rng)  # 3 val windows per recording: 3-window blocks leave half 1 empty
    out, _, _ = generation_floors(train, val, ["c"], f_max=45.0, max_order=2, n_folds=2, seed=0, order=1)
    row = out["validation"]["c"]["real: same recordings, alternate blocks (floor)"]
    # alternate single windows: windows 0 and 2 of each recording in one half, window 1 in the other
    assert (row["n_real"], row["n_gen"]) == (8, 4)


def test_device_check_help_and_bad_argument():
    ok = subprocess.run(["bash", "benchmarks/device_check.sh", "--help"], cwd=REPO_ROOT, capture_output=True,
                        text=True, timeout=30)
    assert ok.returncode == 0 and "--recordings" in ok.stdout and "--cpu" in ok.stdout
    bad = subprocess.run(["bash", "benchmarks/device_check.sh", "/tmp/unused-out", "--bogus"], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and bad.stderr.strip().endswith("unknown argument '--bogus' (see --help)")


@pytest.mark.parametrize("split_by", ["subject", "time"])
def test_bench_var_dataset_command_per_split(split_by, tmp_path, monkeypatch):
    from benchmarks import bench_var
    seen = {}
    monkeypatch.setattr(bench_var, "EEGMAT_DIR", str(tmp_path))  # exists; nothing is read
    monkeypatch.setattr(bench_var, "_run", lambda cmd, what, timeout=None: seen.setdefault("cmd", cmd))
    bench_var.ensure_dataset(str(tmp_path / "ds"), 2.5, split_by)
    cmd = seen["cmd"]
    assert cmd[cmd.index("--stride-sec") + 1] == "2.5"
    assert cmd[cmd.index("--split-by") + 1] == split_by and cmd.count("--split-by") == 1
    if split_by == "time":
        assert "--val-groups" not in cmd and cmd[cmd.index("--val-fraction") + 1] == "0.3"
    else:
        assert cmd[cmd.index("--val-groups") + 1] == "Subject05"
