"""bench_token_nll: the count models on tokens with known answers, and the benchmark end to end on a tiny
random VAR (its NLL equals a direct cross-entropy over the checkpoint's own tokens)."""
from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from benchmarks.bench_token_nll import (choose_parent_prior, main, parent_bigram_nll, parent_of, unigram_nll,
                                        var_nll)


def test_unigram_nll_of_two_equally_likely_tokens(rng):
    train = rng.integers(0, 2, size=(400, 10)) * 3  # tokens 0 and 3, V = 8
    train[0, :2] = (0, 3)
    val = np.array([[0, 3, 3, 0]])
    n0 = (train == 0).sum()
    p0 = (n0 + 0.5) / (train.size + 4.0)
    p3 = (train.size - n0 + 0.5) / (train.size + 4.0)
    assert unigram_nll(train, val, V=8) == pytest.approx(-(2 * math.log(p0) + 2 * math.log(p3)) / 4)
    assert unigram_nll(train, val, V=8) == pytest.approx(math.log(2), abs=0.02)
    # a token never seen in training costs far more than ln V
    assert unigram_nll(train, np.array([[5]]), V=8) > math.log(8) + 3


def test_parent_of_maps_centres():
    assert parent_of(4, 2).tolist() == [0, 0, 1, 1]
    assert parent_of(5, 2).tolist() == [0, 0, 1, 1, 1]
    assert parent_of(3, 3).tolist() == [0, 1, 2]
    assert parent_of(250, 249).max() == 248


def test_parent_bigram_learns_a_deterministic_child_and_not_noise(rng):
    V = 16
    parent = rng.integers(0, V, size=(300, 20))
    child = (parent * 7 + 3) % V  # the child is a function of its parent
    noise = rng.integers(0, V, size=parent.shape)  # independent of the parent
    tr, va = slice(0, 200), slice(200, None)
    pr = choose_parent_prior(child[tr], parent[tr], V)
    assert pr <= 4.0
    det = parent_bigram_nll(child[tr], parent[tr], child[va], parent[va], V, pr)
    assert det < 0.1 < math.log(V)  # near zero: the table knows the child
    pr_noise = choose_parent_prior(noise[tr], parent[tr], V)
    assert pr_noise >= 256.0  # cross-validation shrinks an uninformative table to the unigram
    ind = parent_bigram_nll(noise[tr], parent[tr], noise[va], parent[va], V, pr_noise)
    assert ind == pytest.approx(unigram_nll(noise[tr], noise[va], V), abs=0.02)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> dict:
    """A tiny synthetic dataset and a random VAR + tokenizer saved as ar-ckpt-best.pth."""
    from conftest import save_tiny_var_checkpoint
    from prototypes.synthetic_eeg import SyntheticConfig, make_dataset
    base = tmp_path_factory.mktemp("tnll")
    f = {"ds": str(base / "ds"), "base": str(base), "ckpt": str(base / "ar-ckpt-best.pth")}
    make_dataset(f["ds"], SyntheticConfig(n_channels=2, sfreq=100.0, window_sec=1.28, n_windows=12,
                                          windows_per_recording=4, val_fraction=0.5, seed=0))
    save_tiny_var_checkpoint(f["ds"], f["ckpt"])
    return f


def test_var_nll_is_the_cross_entropy_of_the_checkpoint_tokens(tiny_ckpt):
    import sample
    var, vae, _ = sample.load_var_checkpoint(tiny_ckpt["ckpt"], device="cpu")
    torch.manual_seed(1)
    x = torch.randn(5, 2, 128)
    lab = torch.tensor([0, 1, 0, 1, 1])
    nll, toks = var_nll(var, vae, x, lab, bs=2)  # batches of 2: the per-scale means must still be exact
    idx = vae.eeg_to_idxBl(x)
    with torch.no_grad():
        logits = var(lab, vae.quantize.idxBl_to_var_input(idx))
    ce = F.cross_entropy(logits.transpose(1, 2), torch.cat(idx, 1), reduction="none")
    cur = 0
    for si, t in enumerate(idx):
        assert np.array_equal(toks[si], t.numpy())
        assert nll[si] == pytest.approx(ce[:, cur:cur + t.shape[1]].mean().item(), rel=1e-5)
        cur += t.shape[1]


def test_benchmark_end_to_end_on_a_tiny_checkpoint(tiny_ckpt, tmp_path):
    res = main(["--ckpt", tiny_ckpt["ckpt"], "--data-root", tiny_ckpt["ds"], "--results-dir", str(tmp_path)])
    saved = json.loads((tmp_path / "token_nll.json").read_text())
    assert saved["n_train"] == res["n_train"] > 0 and saved["n_val"] > 0
    K = len(res["patch_nums"])
    nll = res["nll_nats"]
    assert all(len(v) == K for v in nll.values())
    assert nll["uniform"][0] == pytest.approx(math.log(8))
    assert nll["parent_bigram"][0] == nll["unigram"][0]  # the first scale has no parent
    bits = res["bits_per_window"]
    assert bits["uniform"] == pytest.approx(sum(res["patch_nums"]) * 3.0)  # log2(8) bits per token
    assert res["var_gain_over_unigram_bits_per_window"] == pytest.approx(bits["unigram"] - bits["VAR (val)"])
    assert os.path.getsize(tmp_path / "token_nll.png") > 1000
    assert res["report"]["tables"][0]["rows"][0][0] == "delta"


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    from utils.errors import CheckpointError
    with pytest.raises(CheckpointError, match="bench_var"):
        main(["--results-dir", str(tmp_path), "--data-root", str(tmp_path)])
