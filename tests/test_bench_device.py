"""--device of bench_generation / bench_zeroshot: a one-line error without CUDA, and every tensor of the
training, evaluation, sampling and completion paths on the model's device (checked on the meta device,
where mixing in a CPU tensor fails as it would on CUDA)."""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys

import pytest
import torch

from benchmarks import bench_generation, bench_zeroshot
from utils.errors import UserError
from utils.project_info import REPO_ROOT

MSG = "--device=cuda: torch sees no CUDA device on this machine; use --device cpu"


@pytest.mark.parametrize("bench", [bench_generation, bench_zeroshot])
def test_device_cuda_without_cuda_is_a_user_error(bench, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError) as exc:
        bench.main(["--quick", "--device", "cuda", "--results-dir", str(tmp_path)])
    assert str(exc.value) == MSG
    assert not list(tmp_path.iterdir())  # refused before any work


@pytest.mark.parametrize("module", ["benchmarks.bench_generation", "benchmarks.bench_zeroshot"])
def test_device_cuda_without_cuda_cli_prints_one_line(module, tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    r = subprocess.run([sys.executable, "-m", module, "--quick", "--device", "cuda", "--results-dir", str(tmp_path)],
                       cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    lines = (r.stdout + r.stderr).strip().splitlines()
    assert len(lines) == 1 and lines[0].endswith(MSG), lines


@pytest.fixture()
def meta_models(monkeypatch):
    """A tiny tokenizer, VAR and AR baseline on the meta device (autocast, which meta lacks, switched off)."""
    from benchmarks.bench_speed import load_tokenizer
    from models import build_var
    from models.ar_baseline import build_ar_baseline
    from models.var import VAR
    monkeypatch.setattr(VAR, "_autocast_off", lambda self, device: contextlib.nullcontext())
    vae, _ = load_tokenizer(None, quick=True)
    dev = torch.device("meta")
    vae = vae.to(dev)
    torch.manual_seed(0)
    return dev, vae, build_var(vae, dev, num_classes=2, depth=1), build_ar_baseline(vae, dev, num_classes=2, depth=1)


def test_generation_paths_stay_on_the_model_device(meta_models):
    dev, vae, var, ar = meta_models
    x_NCT = torch.randn(4, 4, 16 * vae.downsample)  # on the CPU, as bench_generation keeps it
    y_N = torch.tensor([0, 1, 0, 1])
    for kind, model in (("var", var), ("ar", ar)):
        tg = bench_generation._targets(model, kind, vae, x_NCT)
        assert tg["gt"].device == dev
        model.train()  # condition drop and drop path draw on the CPU generator and move to the device
        b = torch.randperm(4)[:2].to(dev)
        with bench_generation._amp_ctx(dev, "fp32"):
            logits = bench_generation._logits(model, kind, y_N.to(dev)[b], tg, b)
        loss = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), tg["gt"][b])
        loss.backward()
        model.eval()
        b = torch.arange(0, 4, device=dev)
        assert bench_generation._logits(model, kind, y_N.to(dev)[b], tg, b).device == dev
        out = model.autoregressive_infer_cfg(B=2, label_B=torch.tensor([0, 1]).to(dev), g_seed=None, cfg=1.5)
        assert out.device == dev


def test_zero_shot_completion_stays_on_the_model_device(meta_models):
    from zero_shot import complete_windows, scale_keep_masks
    dev, vae, var, _ = meta_models
    mask_BT = torch.zeros(2, 16 * vae.downsample, dtype=torch.bool)
    mask_BT[:, 10:20] = True
    for rule in ("inside", "overlap"):  # 'overlap' compared with a CPU tensor before the fix
        assert all(k.device == dev for k in scale_keep_masks(mask_BT.to(dev), var.patch_nums, rule))
    x = torch.randn(2, 4, 16 * vae.downsample, device=dev)
    for kw in (dict(mask_BT=mask_BT.to(dev), prefill="given", rule="overlap"), dict(n_keep_scales=1)):
        out = complete_windows(var, vae, x, 1.0, n_samples=2, seed=None, label_B=-1, fade=0, **kw)
        assert out["mean"].device == dev
