"""Samplers against the model's own uncached forward pass: greedy sampling (top_k = 1) from the KV-cached
loops (``VAR.autoregressive_infer_cfg``, ``zero_shot.complete_tokens``) picks, token by token, the argmax of
the teacher-forced ``forward`` logits on the tokens chosen so far, with classifier-free guidance applied by
the formula written out here; and the null class (label -1) is the explicit label ``num_classes``."""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import pytest
import torch

from models import VQVAE, build_var
from zero_shot import complete_tokens

PNS = (2, 3, 5, 8)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These models are tiny: one intra-op thread avoids thread hand-off costs that dominate on a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def make_models(G: int = 1, num_classes: int = 3):
    torch.manual_seed(0)
    vae = VQVAE(in_channels=3, vocab_size=16, z_channels=8, ch=16, ch_mult=(1, 2), num_res_blocks=1,
                v_patch_nums=PNS, tokens_per_pos=G, test_mode=True).eval()
    torch.manual_seed(1)
    var = build_var(vae, "cpu", num_classes=num_classes, depth=2)
    # large gates and head: logits far from uniform, so guidance and labels change the argmax
    var.init_weights(init_adaln=0.5, init_adaln_gamma=0.5, init_head=1.0, init_std=0.05)
    return vae, var.eval()


def greedy_by_forward(var, label_B: torch.Tensor, cfg: float, src_idx: Optional[Sequence[torch.Tensor]] = None,
                      keep: Optional[Sequence[torch.Tensor]] = None) -> list[torch.Tensor]:
    """Reference greedy decode with the uncached, masked ``var.forward``: at scale si, run the whole pyramid
    teacher-forced on the tokens chosen so far (later scales hold placeholders, which the block-causal mask
    hides from scale si), guide with t = cfg * si / (num_scales - 1):
    logits = (1 + t) * cond - t * uncond (uncond = the null label ``num_classes``), take the argmax, then
    overwrite kept positions with the source tokens. Returns one (B, pn * G) LongTensor per scale."""
    quant, G = var.vae_quant_proxy[0], var.G
    B, SN = label_B.shape[0], len(var.patch_nums)
    null_B = torch.full_like(label_B, var.num_classes)
    idx = [torch.zeros(B, pn * G, dtype=torch.long) for pn in var.patch_nums]
    with torch.no_grad():
        for si, (bg, ed) in enumerate(var.begin_ends):
            x_in = quant.idxBl_to_var_input(idx)
            cond = var(label_B, x_in)[:, bg * G:ed * G]
            if cfg != 0:
                t = cfg * si / (SN - 1)
                uncond = var(null_B, x_in)[:, bg * G:ed * G]
                logits = (1 + t) * cond - t * uncond
            else:
                logits = cond
            idx[si] = logits.argmax(dim=-1)
            if keep is not None:
                keep_Bl = keep[si].repeat_interleave(G, dim=1)
                idx[si] = torch.where(keep_Bl, src_idx[si], idx[si])
    return idx


def assert_greedy_matches_forward(var, sample_fn: Callable[..., list[torch.Tensor]], label_B: torch.Tensor | int,
                                  cfg: float, B: int = 4, src_idx=None, keep=None, **sampler_kw) -> None:
    """``sample_fn(var, B=, label_B=, cfg=, top_k=1, g_seed=, **sampler_kw)`` (plus ``src_idx=``, ``keep=`` for
    completion) returns per-scale token maps; they must equal :func:`greedy_by_forward` token by token. An int
    ``label_B`` < 0 is compared with the explicit null label, so a sampler that resolves the null class wrongly
    fails here."""
    if isinstance(label_B, int):
        ref_label = torch.full((B,), var.num_classes if label_B < 0 else label_B, dtype=torch.long)
    else:
        ref_label = label_B
    if keep is not None:
        sampler_kw.update(src_idx=src_idx, keep=keep)
    got = sample_fn(var, B=B, label_B=label_B, cfg=cfg, top_k=1, g_seed=3, **sampler_kw)
    want = greedy_by_forward(var, ref_label, cfg, src_idx=src_idx, keep=keep)
    for si, (g, w) in enumerate(zip(got, want)):
        assert torch.equal(g, w), f"scale {si}: sampler {g.tolist()} != argmax of forward {w.tolist()}"


def sample_var(var, **kw) -> list[torch.Tensor]:
    return var.autoregressive_infer_cfg(ret_stages=True, **kw)[1]


def sample_zero_shot(var, *, src_idx, keep, B, **kw) -> list[torch.Tensor]:
    return complete_tokens(var, src_idx, keep, **kw)[1]


LABELS = {"conditional": torch.tensor([0, 1, 2, 1]), "null": -1}


@pytest.mark.parametrize("G", [1, 2])
@pytest.mark.parametrize("label", ["conditional", "null"])
@pytest.mark.parametrize("cfg", [0.0, 3.0])
def test_greedy_sampling_is_argmax_of_uncached_forward(G, label, cfg):
    _, var = make_models(G)
    assert_greedy_matches_forward(var, sample_var, LABELS[label], cfg)


@pytest.mark.parametrize("cfg", [0.0, 3.0])
def test_greedy_zero_shot_is_argmax_of_uncached_forward(cfg):
    vae, var = make_models(G=2)
    torch.manual_seed(5)
    src_idx = vae.eeg_to_idxBl(torch.randn(4, 3, 16))
    g = torch.Generator().manual_seed(6)
    keep = [torch.rand(4, pn, generator=g) < 0.5 for pn in PNS]
    for label in LABELS.values():
        assert_greedy_matches_forward(var, sample_zero_shot, label, cfg, src_idx=src_idx, keep=keep)


def test_guidance_changes_the_greedy_tokens():
    """Guards the test above: guidance strength and label both move the argmax in this model, so a wrong
    guidance ramp or a wrong null class cannot pass unnoticed."""
    _, var = make_models()
    label = LABELS["conditional"]
    plain = greedy_by_forward(var, label, 0.0)
    guided = greedy_by_forward(var, label, 3.0)
    assert torch.equal(plain[0], guided[0])  # t = 0 at scale 0
    assert not all(torch.equal(a, b) for a, b in zip(plain, guided))
    null = greedy_by_forward(var, torch.full_like(label, var.num_classes), 0.0)
    assert not all(torch.equal(a, b) for a, b in zip(plain, null))
    # constant t = cfg at every scale (no ramp) changes scale 0 already
    B, null_B = label.shape[0], torch.full_like(label, var.num_classes)
    x_in = var.vae_quant_proxy[0].idxBl_to_var_input([torch.zeros(B, pn, dtype=torch.long) for pn in PNS])
    with torch.no_grad():
        c, u = var(label, x_in)[:, :PNS[0]], var(null_B, x_in)[:, :PNS[0]]
    assert not torch.equal((4 * c - 3 * u).argmax(-1), c.argmax(-1))


@pytest.mark.parametrize("cfg", [0.0, 2.0])
def test_null_label_is_the_explicit_null_class(cfg):
    """label_B = -1 samples exactly what an explicit null label (num_classes) samples, under the same seed,
    and not what class 0 samples; in the model's sampler and in the zero-shot loop."""
    vae, var = make_models(G=1, num_classes=2)
    B = 6
    null_B = torch.full((B,), var.num_classes)
    zero_B = torch.zeros(B, dtype=torch.long)
    kw = dict(B=B, g_seed=11, cfg=cfg, top_k=0, top_p=0.0, ret_stages=True)
    a = var.autoregressive_infer_cfg(label_B=-1, **kw)[1]
    b = var.autoregressive_infer_cfg(label_B=null_B, **kw)[1]
    c = var.autoregressive_infer_cfg(label_B=zero_B, **kw)[1]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))
    src = vae.eeg_to_idxBl(torch.randn(B, 3, 16))
    keep = [torch.zeros(B, pn, dtype=torch.bool) for pn in PNS]
    zk = dict(g_seed=11, cfg=cfg)
    a = complete_tokens(var, src, keep, label_B=-1, **zk)[1]
    b = complete_tokens(var, src, keep, label_B=null_B, **zk)[1]
    c = complete_tokens(var, src, keep, label_B=zero_B, **zk)[1]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


def test_null_label_is_the_explicit_null_class_in_the_ar_baseline():
    from models.ar_baseline import build_ar_baseline
    vae, _ = make_models(G=1)
    torch.manual_seed(2)
    ar = build_ar_baseline(vae, "cpu", num_classes=2, depth=1)
    ar.init_weights(init_adaln=0.5, init_adaln_gamma=0.5, init_head=1.0, init_std=0.05)
    with torch.no_grad():
        ar.class_emb.weight.mul_(20.0)  # classes far apart, so the label visibly moves the samples
    ar.eval()
    B = 4
    kw = dict(B=B, g_seed=5, cfg=0.0, ret_tokens=True)
    a = ar.autoregressive_infer_cfg(label_B=-1, **kw)[1]
    b = ar.autoregressive_infer_cfg(label_B=torch.full((B,), ar.num_classes), **kw)[1]
    c = ar.autoregressive_infer_cfg(label_B=torch.zeros(B, dtype=torch.long), **kw)[1]
    assert torch.equal(a, b) and not torch.equal(a, c)
