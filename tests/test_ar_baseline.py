"""Next-token AR baseline (VAR/models/ar_baseline.py): causal mask, KV-cached sampling matches the teacher-forced
forward, token sequences round-trip through the tokenizer, VAR-style init and depth rule; tiny random models."""
from __future__ import annotations

import pytest
import torch

from models import VQVAE, build_var
from models.ar_baseline import ARBaseline, build_ar_baseline

PNS = (2, 3, 5, 8)


def make_vae(G: int = 1) -> VQVAE:
    torch.manual_seed(0)
    return VQVAE(in_channels=3, vocab_size=16, z_channels=8, ch=32, ch_mult=(1, 2), num_res_blocks=1,
                 v_patch_nums=PNS, tokens_per_pos=G, test_mode=True)


def make_ar(vae: VQVAE, sequence: str = "pyramid", depth: int = 2) -> ARBaseline:
    torch.manual_seed(1)
    ar = build_ar_baseline(vae, "cpu", num_classes=3, depth=depth, sequence=sequence)
    ar.init_weights(init_adaln=0.5, init_adaln_gamma=0.5, init_head=1.0, init_std=0.05)  # non-trivial gates
    return ar.eval()


@pytest.mark.parametrize("sequence,G", [("pyramid", 1), ("pyramid", 2), ("last", 1)])
def test_sequence_length_and_token_round_trip(sequence, G):
    vae = make_vae(G)
    ar = make_ar(vae, sequence)
    assert ar.N == (sum(PNS) if sequence == "pyramid" else PNS[-1]) * G
    x_BCT = torch.randn(3, 3, 16)
    idx_BN = ar.tokens_from_eeg(x_BCT)
    assert idx_BN.shape == (3, ar.N) and int(idx_BN.max()) < vae.quantize.vocab_size
    if sequence == "pyramid":  # decodes exactly like the tokenizer's own reconstruction
        ref = vae.idxBl_to_eeg(vae.eeg_to_idxBl(x_BCT), last_one=True)
        assert torch.allclose(ar.tokens_to_eeg(idx_BN), ref, atol=1e-5)
    assert ar.tokens_to_eeg(idx_BN).shape == x_BCT.shape


def test_forward_is_causal():
    ar = make_ar(make_vae())
    idx = torch.randint(0, 16, (2, ar.N))
    lab = torch.tensor([0, 1])
    base = ar(lab, idx)
    idx2 = idx.clone()
    idx2[:, 10:] = (idx2[:, 10:] + 1) % 16  # changing token 10 onwards may only change logits 11 onwards
    out = ar(lab, idx2)
    assert torch.allclose(base[:, :11], out[:, :11], atol=1e-5)
    assert not torch.allclose(base[:, 11:], out[:, 11:], atol=1e-3)


@pytest.mark.parametrize("cfg", [0.0, 2.0])
def test_kv_cached_sampling_matches_teacher_forced_logits(cfg):
    ar = make_ar(make_vae(G=2), "pyramid")
    lab = torch.tensor([0, 2])
    x_BCT, idx_BN = ar.autoregressive_infer_cfg(2, lab, g_seed=3, cfg=cfg, top_k=1, ret_tokens=True)
    # greedy sampling: every token is the argmax of the (guided) teacher-forced logits at its position
    logits = ar(lab, idx_BN)
    if cfg:
        null = ar(torch.full_like(lab, ar.num_classes), idx_BN)
        s = cfg * torch.arange(ar.N) / (ar.N - 1)
        logits = (1 + s.view(1, -1, 1)) * logits - s.view(1, -1, 1) * null
    assert torch.equal(logits.argmax(-1), idx_BN)
    assert torch.allclose(x_BCT, ar.tokens_to_eeg(idx_BN))
    # the same seed gives the same samples; caches are off afterwards
    again = ar.autoregressive_infer_cfg(2, lab, g_seed=3, cfg=cfg, top_k=1)
    assert torch.equal(again, x_BCT) and all(b.attn.cached_k is None for b in ar.blocks)


def test_same_blocks_and_width_as_var():
    vae = make_vae()
    var = build_var(vae, "cpu", num_classes=3, depth=3)
    ar = build_ar_baseline(vae, "cpu", num_classes=3, depth=3)
    assert (ar.C, ar.num_heads, len(ar.blocks)) == (var.C, var.num_heads, len(var.blocks))
    assert type(ar.blocks[0]) is type(var.blocks[0])
    n_blocks = lambda m: sum(p.numel() for p in m.blocks.parameters())  # noqa: E731
    assert n_blocks(ar) == n_blocks(var)
    assert ar.get_config()["sequence"] == "pyramid"


def test_training_step_reduces_loss():
    vae = make_vae()
    ar = build_ar_baseline(vae, "cpu", num_classes=2, depth=2).train()
    x = torch.randn(8, 3, 16)
    idx, lab = ar.tokens_from_eeg(x), torch.arange(8) % 2
    opt = torch.optim.AdamW(ar.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(ar(lab, idx).transpose(1, 2), idx)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.3


def test_bad_sequence_name():
    with pytest.raises(ValueError, match="sequence"):
        ARBaseline(make_vae(), sequence="spiral")


@pytest.mark.slow
def test_train_py_ar_baseline_switch_trains_and_resumes(tmp_path, rng, repo_root):
    """``VAR/train.py --ar_baseline=1`` trains the baseline with VAR's trainer, checkpoints and resumes it."""
    import json
    import os
    import subprocess
    import sys

    from benchmarks.bench_var import random_tokenizer
    from tests.test_bench_harness import _tiny_dataset

    data = str(tmp_path / "data")
    _tiny_dataset(data, rng)
    tok = random_tokenizer(data, str(tmp_path / "tok.pth"), V=16, G=1)
    out = str(tmp_path / "run")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        env.pop(k, None)

    def train(ep: int) -> None:
        r = subprocess.run([sys.executable, "VAR/train.py", f"--data_path={data}", f"--vae_ckpt={tok}",
                            f"--local_out_dir_path={out}", "--depth=1", "--bs=8", f"--ep={ep}", "--seed=0",
                            "--workers=0", "--tlr=3e-3", "--ar_baseline=1"], cwd=repo_root, env=env,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]

    train(1)
    train(2)  # resumes from epoch 1
    from utils.checkpoint import load_checkpoint
    state, _ = load_checkpoint(os.path.join(out, "ar-ckpt-last.pth"))
    assert state["epoch"] == 2 and state["trainer"]["config"]["sequence"] == "pyramid"
    logs = [json.loads(ln) for ln in open(os.path.join(out, "log.txt")).read().splitlines()[1:] if ln.strip()]
    assert any("vL_mean" in d for d in logs)
