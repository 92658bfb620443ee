"""VAR transformer invariants in 1D: masked vs KV-cached forward, teacher forcing vs
inference inputs, block-causal mask, init rules, depth rule, sampling helpers; tiny random models."""
from __future__ import annotations

import math

import pytest
import torch

from models import VQVAE, build_var, depth_rule
from models.helpers import sample_with_top_k_top_p_

PNS = (2, 3, 5, 8)  # 1D scale layout, latent length 8


def make_vae(G: int, seed: int = 0, pns=PNS) -> VQVAE:
    torch.manual_seed(seed)
    return VQVAE(in_channels=3, vocab_size=16, z_channels=8, ch=32, ch_mult=(1, 2), num_res_blocks=1,
                 v_patch_nums=pns, tokens_per_pos=G, test_mode=True)


def make_var(vae: VQVAE, depth: int = 2, num_classes: int = 3, shared_aln: bool = False, **kw):
    torch.manual_seed(1)
    var = build_var(vae, "cpu", num_classes=num_classes, depth=depth, shared_aln=shared_aln, **kw)
    # non-trivial gates so that every block really contributes to the comparison below
    var.init_weights(init_adaln=0.5, init_adaln_gamma=0.5, init_head=1.0, init_std=0.05)
    return var.eval()


def cached_logits(var, label_B: torch.Tensor, x_in: torch.Tensor) -> torch.Tensor:
    """Scale-by-scale forward with the KV cache and no mask, on given (teacher-forced) inputs."""
    B = label_B.shape[0]
    cond_BD = var.class_emb(label_B)
    lvl_pos = var.lvl_embed(var.lvl_1L) + var.pos_1LC
    tok = cond_BD.unsqueeze(1).expand(B, var.first_l, -1) + var.pos_start.expand(B, var.first_l, -1) + lvl_pos[:, :var.first_l]
    emb = var.word_embed(x_in)
    out = []
    for b in var.blocks:
        b.attn.kv_caching(True)
    cur = 0
    for si, pn in enumerate(var.patch_nums):
        x = tok
        for b in var.blocks:
            x = b(x=x, cond_BD=var.shared_ada_lin(cond_BD), attn_bias=None)
        out.append(var.get_logits(x, cond_BD))
        cur += pn
        if si + 1 < len(var.patch_nums):
            nxt = var.patch_nums[si + 1]
            tok = emb[:, cur - var.first_l:cur - var.first_l + nxt] + lvl_pos[:, cur:cur + nxt]
    for b in var.blocks:
        b.attn.kv_caching(False)
    return torch.cat(out, dim=1).view(B, -1, var.V)


@pytest.mark.parametrize("G", [1, 2])
@pytest.mark.parametrize("shared_aln", [False, True])
def test_masked_forward_equals_kv_cached_forward(G, shared_aln):
    vae = make_vae(G)
    var = make_var(vae, shared_aln=shared_aln)
    x_BCT = torch.randn(4, 3, 16)
    gt_idx = vae.eeg_to_idxBl(x_BCT)
    x_in = vae.quantize.idxBl_to_var_input(gt_idx)
    label_B = torch.tensor([0, 1, 2, 3])  # 3 = the null class
    with torch.no_grad():
        masked = var(label_B, x_in)
        cached = cached_logits(var, label_B, x_in)
    assert masked.shape == (4, sum(PNS) * G, vae.vocab_size)
    assert masked.shape == torch.cat(gt_idx, dim=1).shape + (vae.vocab_size,)
    torch.testing.assert_close(masked, cached, atol=2e-5, rtol=1e-4)
    # the mask matters: without it, early scales would see later ones and the logits change
    with torch.no_grad():
        full = var.attn_bias_for_masking.clone()
        var.attn_bias_for_masking.zero_()
        unmasked = var(label_B, x_in)
        var.attn_bias_for_masking.copy_(full)
    assert not torch.allclose(unmasked[:, :PNS[0] * G], masked[:, :PNS[0] * G], atol=1e-4)


@pytest.mark.parametrize("G", [1, 2])
def test_teacher_forcing_inputs_equal_inference_inputs(G):
    vae = make_vae(G)
    q = vae.quantize
    x_BCT = torch.randn(3, 3, 16)
    gt_idx = vae.eeg_to_idxBl(x_BCT)
    assert [t.shape for t in gt_idx] == [(3, pn * G) for pn in PNS]
    x_in = q.idxBl_to_var_input(gt_idx)
    assert x_in.shape == (3, sum(PNS) - PNS[0], vae.Cvae)
    f_hat = torch.zeros(3, vae.Cvae, PNS[-1])
    cur, steps = 0, []
    for si, pn in enumerate(PNS):
        f_hat, nxt = q.get_next_autoregressive_input(si, len(PNS), f_hat, q.embed_idx(si, gt_idx[si]))
        if si + 1 < len(PNS):
            steps.append(nxt.transpose(1, 2))
    torch.testing.assert_close(torch.cat(steps, dim=1), x_in, atol=1e-5, rtol=1e-5)
    f_true = q.f_to_idxBl_or_fhat(vae.quant_conv(vae.encoder(x_BCT)), to_fhat=True)[-1]
    torch.testing.assert_close(f_hat, f_true, atol=1e-5, rtol=1e-5)
    ms_h = [q.embed_idx(si, gt_idx[si]) for si in range(len(PNS))]
    torch.testing.assert_close(q.embed_to_fhat(ms_h, last_one=True), f_hat, atol=1e-5, rtol=1e-5)


def test_attention_mask_is_block_causal():
    var = make_var(make_vae(1))
    bias_LL = var.attn_bias_for_masking[0, 0]
    lvl = torch.cat([torch.full((pn,), i) for i, pn in enumerate(PNS)])
    for q in range(var.L):
        for k in range(var.L):
            allowed = lvl[q] >= lvl[k]
            assert (bias_LL[q, k] == 0) if allowed else torch.isneginf(bias_LL[q, k])
    assert var.L == sum(PNS) and var.first_l == PNS[0]
    assert var.begin_ends == [(0, 2), (2, 5), (5, 10), (10, 18)]


@pytest.mark.parametrize("depth", [2, 4])
def test_depth_rule_and_param_count(depth):
    rule = depth_rule(depth)
    assert rule == dict(embed_dim=64 * depth, num_heads=depth, drop_path_rate=0.1 * depth / 24)
    vae = make_vae(2)
    torch.manual_seed(0)
    var = build_var(vae, "cpu", num_classes=2, depth=depth)
    C, V, G = 64 * depth, vae.vocab_size, 2
    assert var.C == C and var.num_heads == depth and len(var.blocks) == depth
    assert var.blocks[0].attn.head_dim == 64
    # per block 3C^2 (qkv) + C^2 (proj) + 8C^2 (ffn) + 6C^2 (ada_lin) weights + biases, as upstream counts them
    per_block = sum(p.numel() for p in var.blocks[0].parameters())
    assert per_block == 18 * C * C + 14 * C + depth
    n = sum(p.numel() for p in var.parameters())
    other = (vae.Cvae * C + C) + 3 * C + PNS[0] * C + sum(PNS) * C + len(PNS) * C + (2 * C * C + 2 * C) + (C * G * V + G * V)
    assert n == depth * per_block + other
    dprs = [b.drop_path.drop_prob if hasattr(b.drop_path, "drop_prob") else 0.0 for b in var.blocks]
    assert dprs[0] == 0.0 and dprs[-1] == pytest.approx(0.1 * depth / 24)


def test_init_rules():
    vae = make_vae(1)
    torch.manual_seed(0)
    depth = 3
    var = build_var(vae, "cpu", num_classes=2, depth=depth, init_adaln=0.5, init_adaln_gamma=1e-5, init_head=0.02)
    C = var.C
    init_std = math.sqrt(1 / (3 * C))
    for b in var.blocks:
        w = b.ada_lin[-1].weight
        assert w[: 2 * C].abs().max() < 1e-5 * 6 * init_std  # gates ~ 0: every block starts ~ identity
        assert w[2 * C:].std().item() == pytest.approx(0.5 * init_std, rel=0.1)
        assert torch.all(b.ada_lin[-1].bias == 0)
        assert b.attn.proj.weight.std().item() == pytest.approx(init_std / math.sqrt(2 * depth), rel=0.1)
        assert b.ffn.fc2.weight.std().item() == pytest.approx(init_std / math.sqrt(2 * depth), rel=0.1)
        torch.testing.assert_close(b.attn.scale_mul_1H11.exp(), torch.full_like(b.attn.scale_mul_1H11, 4.0))
    assert torch.all(var.head.bias == 0)
    assert var.head.weight.std().item() == pytest.approx(0.02 * init_std, rel=0.1)
    assert var.class_emb.weight.std().item() == pytest.approx(init_std, rel=0.15)
    # near-identity blocks: the block output equals its input up to tiny gates
    x = torch.randn(2, 5, C)
    cond = torch.randn(2, C)
    with torch.no_grad():
        y = var.blocks[0](x=x, cond_BD=cond, attn_bias=None)
    assert (y - x).abs().max() < 1e-3


def test_condition_dropout_only_in_training():
    vae = make_vae(1)
    var = make_var(vae)
    var.cond_drop_rate = 0.5
    for b in var.blocks:  # isolate condition dropout from stochastic depth
        if hasattr(b.drop_path, "drop_prob"):
            b.drop_path.drop_prob = 0.0
    x_in = vae.quantize.idxBl_to_var_input(vae.eeg_to_idxBl(torch.randn(8, 3, 16)))
    label = torch.zeros(8, dtype=torch.long)
    null = torch.full((8,), var.num_classes)
    with torch.no_grad():
        var.eval()
        a, b = var(label, x_in), var(label, x_in)
        torch.testing.assert_close(a, b)  # fix(upstream) §18.1: no dropout in eval
        var.train()
        var.train_rng.manual_seed(0)
        c = var(label, x_in)
        var.eval()
        n = var(null, x_in)
    dropped = [torch.allclose(c[i], n[i], atol=1e-5) for i in range(8)]
    kept = [torch.allclose(c[i], a[i], atol=1e-5) for i in range(8)]
    assert any(dropped) and any(kept) and all(d != k for d, k in zip(dropped, kept))


@pytest.mark.parametrize("G", [1, 2])
def test_sampling_shapes_and_seed_determinism(G):
    vae = make_vae(G)
    var = make_var(vae)
    kw = dict(B=3, label_B=torch.tensor([0, 1, 2]), cfg=1.5, top_k=5, top_p=0.9, ret_stages=True)
    x1, idx1, fh1 = var.autoregressive_infer_cfg(g_seed=7, **kw)
    x2, idx2, _ = var.autoregressive_infer_cfg(g_seed=7, **kw)
    x3, idx3, _ = var.autoregressive_infer_cfg(g_seed=8, **kw)
    assert x1.shape == (3, 3, 16)
    assert [t.shape for t in idx1] == [(3, pn * G) for pn in PNS]
    assert all(int(t.max()) < vae.vocab_size and int(t.min()) >= 0 for t in idx1)
    assert torch.equal(x1, x2) and all(torch.equal(a, b) for a, b in zip(idx1, idx2))
    assert not all(torch.equal(a, b) for a, b in zip(idx1, idx3))
    # the returned signal is the decode of the final f_hat, which is the sum of the sampled tokens
    torch.testing.assert_close(x1, vae.fhat_to_eeg(fh1[-1]))
    torch.testing.assert_close(vae.idxBl_to_eeg(idx1, last_one=True), x1, atol=1e-5, rtol=1e-5)
    # band completion: teacher-forced prefix scales come back unchanged
    x4, idx4, _ = var.autoregressive_infer_cfg(g_seed=9, gt_prefix_idx_Bl=idx1[:2], **kw)
    assert torch.equal(idx4[0], idx1[0]) and torch.equal(idx4[1], idx1[1])
    # no guidance, one class (unconditional): batch not doubled, still deterministic
    var1 = make_var(vae, num_classes=1)
    y1 = var1.autoregressive_infer_cfg(B=2, label_B=0, g_seed=1, cfg=0)
    y2 = var1.autoregressive_infer_cfg(B=2, label_B=None, g_seed=1, cfg=0)
    assert torch.equal(y1, y2)


def test_top_k_top_p_filtering():
    logits = torch.log(torch.tensor([[[0.5, 0.3, 0.15, 0.05]]])).repeat(1, 200, 1)
    g = torch.Generator().manual_seed(0)
    idx = sample_with_top_k_top_p_(logits.clone(), top_k=2, rng=g)[..., 0]
    assert set(idx.unique().tolist()) == {0, 1}
    idx = sample_with_top_k_top_p_(logits.clone(), top_p=0.6, rng=g)[..., 0]
    assert set(idx.unique().tolist()) == {0, 1}  # 0.5 + 0.3 >= 0.6: the 0.15 and 0.05 tail is removed
    idx = sample_with_top_k_top_p_(logits.clone(), top_p=0.1, rng=g)[..., 0]
    assert set(idx.unique().tolist()) == {0}  # the most likely token is always kept
    idx = sample_with_top_k_top_p_(logits.clone(), rng=g)[..., 0]
    assert set(idx.unique().tolist()) == {0, 1, 2, 3}


def test_train_step_learns_and_skips_nonfinite_loss():
    from trainer import NullDDP, VARTrainer
    from utils.amp_sc import AmpOptimizer
    from utils.misc import MetricLogger, DistLogger
    vae = make_vae(2)
    torch.manual_seed(0)
    var = build_var(vae, "cpu", num_classes=2, depth=2)
    opt = torch.optim.AdamW(var.parameters(), lr=3e-3)
    ao = AmpOptimizer(0, opt, [n for n, _ in var.named_parameters()], list(var.parameters()), grad_clip=2.0,
                      device_type="cpu")
    tr = VARTrainer(torch.device("cpu"), PNS, [p * 2 for p in PNS], vae, var, NullDDP(var), ao, label_smooth=0.0)
    x, lab = torch.randn(8, 3, 16), torch.tensor([0, 1] * 4)
    me, tb = MetricLogger(), DistLogger(None, verbose=False)
    me.log_iters = set(range(20))  # compute metrics at every step
    losses = []
    for it in range(15):
        norm, _, skipped = tr.train_step(it=it, g_it=it, stepping=True, metric_lg=me, tb_lg=tb, inp_BCT=x, label_B=lab,
                                         prog_si=-1, prog_wp_it=1)
        assert norm is not None and not skipped
        losses.append(me.meters["Lm"].value)
    assert losses[-1] < losses[0] - 0.1  # overfits one batch
    before = {k: v.clone() for k, v in var.state_dict().items()}
    var.head.bias.data[0] = float("nan")
    norm, _, skipped = tr.train_step(it=1, g_it=99, stepping=True, metric_lg=me, tb_lg=tb, inp_BCT=x, label_B=lab,
                                     prog_si=-1, prog_wp_it=1)
    assert skipped and norm is None
    for k, v in var.state_dict().items():
        if k != "head.bias":
            assert torch.equal(v, before[k]), k
    # progressive training: only the first scales are predicted
    var.head.bias.data[0] = 0.0
    tr.train_step(it=0, g_it=100, stepping=True, metric_lg=me, tb_lg=tb, inp_BCT=x, label_B=lab, prog_si=1, prog_wp_it=1)
    assert var.prog_si == -1 and vae.quantize.prog_si == -1
    var.prog_si = 1
    with torch.no_grad():
        logits = var(lab, vae.quantize.idxBl_to_var_input(vae.eeg_to_idxBl(x))[:, :PNS[1]])
    var.prog_si = -1
    assert logits.shape == (8, (PNS[0] + PNS[1]) * 2, vae.vocab_size)
