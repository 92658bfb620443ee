"""Steps inside a scale (``models/intra_scale.py``): the group order, the sampler against the uncached
teacher-forced forward, no look-ahead inside a scale, and the bad schedules."""
from __future__ import annotations

import os

import pytest
import torch

from models import VQVAE, build_var
from models.intra_scale import chunk_bounds, chunk_of_groups, group_residue_order, groups_of_positions, \
    neighbour_features

PNS = (4, 6, 8, 12)  # every scale holds at least 4 positions


def make_pair(S: int, G: int = 1, num_classes: int = 3, nbr: int = 0):
    torch.manual_seed(0)
    vae = VQVAE(in_channels=3, vocab_size=16, z_channels=8, ch=32, ch_mult=(1, 2), num_res_blocks=1,
                v_patch_nums=PNS, tokens_per_pos=G, test_mode=True)
    torch.manual_seed(1)
    var = build_var(vae, "cpu", num_classes=num_classes, depth=2, intra_steps=S, intra_nbr=nbr)
    var.init_weights(init_adaln=0.5, init_adaln_gamma=0.5, init_head=1.0, init_std=0.05)
    return vae, var.eval()


def teacher_forced_logits(var, vae, label_B, idx_Bl, n_chunks):
    """The uncached forward on a given pyramid."""
    x_in = vae.quantize.idxBl_to_var_input(idx_Bl)
    gt_BL = torch.cat(idx_Bl, dim=1)
    with torch.no_grad():
        return var(label_B, x_in, gt_BL, intra_steps=n_chunks)


def test_group_order_covers_each_scale_evenly():
    # written out: S=4 -> residues 0, 2, 1, 3; S=2 -> 0, 1; S=1 -> 0
    assert group_residue_order(4) == [0, 2, 1, 3]
    assert group_residue_order(2) == [0, 1]
    assert sorted(group_residue_order(6)) == list(range(6))
    g = groups_of_positions(10, 4)
    assert g.tolist() == [0, 2, 1, 3, 0, 2, 1, 3, 0, 2]
    # a power-of-two S is bit-reversal-like: the first k groups leave no gap longer than S / 2**floor(log2 k)
    S, pn = 8, 64
    g = groups_of_positions(pn, S)
    for k in range(1, S + 1):
        placed = torch.nonzero(g < k).flatten()
        gap = 8 if k == 1 else int(placed.diff().max())
        assert gap == S // 2 ** (k.bit_length() - 1)
    assert chunk_bounds(8, 3) == [(0, 2), (2, 5), (5, 8)]
    assert chunk_bounds(4, 4) == [(0, 1), (1, 2), (2, 3), (3, 4)]


def test_neighbour_features_written_out():
    torch.manual_seed(0)
    B, pn, C, S, radius = 2, 11, 3, 4, 2
    h = torch.randn(B, pn, C)
    chunk_l = chunk_of_groups(S, 2)[groups_of_positions(pn, S)]  # groups 0,1 -> chunk 0; groups 2,3 -> chunk 1
    assert chunk_of_groups(S, 2).tolist() == [0, 0, 1, 1]
    pos_q = torch.tensor([0, 1, 5, 10])
    got = neighbour_features(h, chunk_l, pos_q, radius)
    want = torch.zeros(B, len(pos_q), 4 * (C + 1))
    for n, p in enumerate(pos_q.tolist()):
        for k, d in enumerate([-2, -1, 1, 2]):
            j = p + d
            if 0 <= j < pn and chunk_l[j] < chunk_l[p]:
                want[:, n, k * (C + 1):k * (C + 1) + C] = h[:, j]
                want[:, n, k * (C + 1) + C] = 1.0
    torch.testing.assert_close(got, want, atol=0, rtol=0)
    # residues mod 4 in group order 0,2,1,3: position 1 (group 2, chunk 1) sees 0 and 2 (chunk 0), not -1 or 3
    assert got[0, 1, [k * (C + 1) + C for k in range(4)]].tolist() == [0.0, 1.0, 1.0, 0.0]
    assert got[:, 0].abs().sum() == 0  # chunk 0 sees nothing of its own scale


@pytest.mark.parametrize("S,n_chunks,G,nbr", [(4, 4, 1, 0), (4, 2, 1, 0), (4, 1, 1, 0), (3, 3, 2, 0),
                                              (4, 4, 1, 2), (4, 2, 1, 3), (3, 3, 2, 1)])
def test_greedy_sampler_equals_argmax_of_uncached_forward(S, n_chunks, G, nbr):
    vae, var = make_pair(S, G, nbr=nbr)
    B = 3
    label_B = torch.tensor([0, 2, 1])
    _, idx_Bl, _ = var.autoregressive_infer_cfg(B, label_B, g_seed=0, cfg=0.0, top_k=1, ret_stages=True,
                                                intra_steps=n_chunks)
    logits = teacher_forced_logits(var, vae, label_B, idx_Bl, n_chunks)
    assert torch.equal(logits.argmax(-1), torch.cat(idx_Bl, dim=1))


def test_greedy_guided_sampler_follows_the_guidance_formula():
    S, cfg = 4, 2.0
    vae, var = make_pair(S)
    B = 2
    label_B = torch.tensor([1, 0])
    _, idx_Bl, _ = var.autoregressive_infer_cfg(B, label_B, g_seed=0, cfg=cfg, top_k=1, ret_stages=True)
    cond = teacher_forced_logits(var, vae, label_B, idx_Bl, S)
    uncond = teacher_forced_logits(var, vae, torch.full_like(label_B, var.num_classes), idx_Bl, S)
    want = []
    for si, pn in enumerate(PNS):
        t = cfg * si / (len(PNS) - 1)
        b, e = var.begin_ends[si]
        want.append(((1 + t) * cond[:, b:e] - t * uncond[:, b:e]).argmax(-1))
    assert torch.equal(torch.cat(want, dim=1), torch.cat(idx_Bl, dim=1))


@pytest.mark.parametrize("nbr", [0, 4])  # radius 4 reaches the same group (S = 4 positions apart)
def test_no_token_sees_itself_or_later_groups(nbr):
    S = 4
    vae, var = make_pair(S, nbr=nbr)
    torch.manual_seed(3)
    idx_Bl = [torch.randint(0, 16, (1, pn)) for pn in PNS]
    label_B = torch.tensor([1])
    base = teacher_forced_logits(var, vae, label_B, idx_Bl, S)
    si, p = 2, 5  # change one token of scale 2
    g = groups_of_positions(PNS[si], S)
    changed = [t.clone() for t in idx_Bl]
    changed[si][0, p] = (changed[si][0, p] + 1) % 16
    out = teacher_forced_logits(var, vae, label_B, changed, S)
    b, e = var.begin_ends[si]
    same_or_earlier = (g <= g[p]).nonzero().flatten()
    later = (g > g[p]).nonzero().flatten()
    # the logits of the token itself and of its own or earlier groups do not move; later groups' do
    torch.testing.assert_close(out[0, b + same_or_earlier], base[0, b + same_or_earlier], atol=0, rtol=0)
    assert not torch.allclose(out[0, b + later], base[0, b + later])
    torch.testing.assert_close(out[0, :b], base[0, :b], atol=0, rtol=0)  # earlier scales


def test_one_step_model_is_plain_var():
    vae, var = make_pair(1)
    assert not hasattr(var, "content_embed")
    assert var.attn_bias_for_masking.shape[-1] == sum(PNS)
    assert var.get_config()["intra_steps"] == 1


def test_schedules_the_model_cannot_follow_are_refused():
    vae, var = make_pair(2)
    with pytest.raises(ValueError, match="intra_steps=3 but the model was trained with --intra_steps=2"):
        var.autoregressive_infer_cfg(1, 0, g_seed=0, cfg=0.0, intra_steps=3)
    with pytest.raises(ValueError, match=r"intra_steps=5 is larger than the smallest scale \(4 positions"):
        var.autoregressive_infer_cfg(1, 0, g_seed=0, cfg=0.0, intra_steps=5)
    with pytest.raises(ValueError, match=r"intra_steps=5 must be in 1..4"):
        build_var(vae, "cpu", num_classes=3, depth=2, intra_steps=5)
    with pytest.raises(ValueError, match="ground-truth tokens"):
        var(torch.tensor([0]), None)


@pytest.mark.parametrize("nbr", [0, 2])
def test_zero_shot_keep_inside_a_scale_is_seen_by_later_groups(nbr):
    """Kept tokens are in place before later groups are predicted (greedy, so deterministic)."""
    S = 4
    vae, var = make_pair(S, nbr=nbr)
    torch.manual_seed(5)
    src = [torch.randint(0, 16, (1, pn)) for pn in PNS]
    keep = [torch.zeros(1, pn, dtype=torch.bool) for pn in PNS]
    keep[1][0, ::2] = True
    _, idx_Bl, _ = var.autoregressive_infer_cfg(1, 0, g_seed=0, cfg=0.0, top_k=1, ret_stages=True,
                                                keep_src=(src, keep))
    assert torch.equal(idx_Bl[1][0, ::2], src[1][0, ::2])
    logits = teacher_forced_logits(var, vae, torch.tensor([0]), idx_Bl, S)
    free = torch.cat([~k[0] for k in keep])
    assert torch.equal(logits.argmax(-1)[0, free], torch.cat(idx_Bl, dim=1)[0, free])


# ------------------------------------------------------------------------------------------ checkpoints and CLI
@pytest.fixture(scope="module")
def old_and_new_ckpt(tmp_path_factory) -> dict:
    """A checkpoint as VAR/train.py wrote it before steps inside a scale (no intra_steps in its config)."""
    from conftest import save_tiny_var_checkpoint
    from prototypes.synthetic_eeg import SyntheticConfig, make_dataset
    from utils.checkpoint import load_checkpoint, save_checkpoint
    base = tmp_path_factory.mktemp("intra_ckpt")
    ds = str(base / "ds")
    make_dataset(ds, SyntheticConfig(n_channels=2, sfreq=100.0, window_sec=1.28, n_windows=8,
                                     windows_per_recording=4, val_fraction=0.5, seed=0))
    new, old = str(base / "new.pth"), str(base / "old.pth")
    save_tiny_var_checkpoint(ds, new)
    state, _ = load_checkpoint(new)
    for key in ("intra_steps", "intra_mix", "intra_nbr", "intra_ar"):
        del state["trainer"]["config"][key]
    save_checkpoint(old, state)
    return {"old": old, "new": new, "base": base}


def test_checkpoint_from_before_intra_steps_samples_as_plain_var(old_and_new_ckpt):
    import sample
    var_old, _, _ = sample.load_var_checkpoint(old_and_new_ckpt["old"], "cpu")
    var_new, _, _ = sample.load_var_checkpoint(old_and_new_ckpt["new"], "cpu")
    assert var_old.intra_steps == 1 and not hasattr(var_old, "content_embed")
    a = var_old.autoregressive_infer_cfg(2, 0, g_seed=3, cfg=1.0)
    b = var_new.autoregressive_infer_cfg(2, 0, g_seed=3, cfg=1.0)
    assert torch.equal(a, b)


def test_steps_checkpoint_from_before_neighbours_loads_without_them(tmp_path):
    """A --intra_steps=4 checkpoint written before --intra_nbr existed: no neighbour layer, same samples."""
    import sample
    from utils.checkpoint import load_checkpoint, save_checkpoint
    from conftest import save_tiny_var_checkpoint
    from prototypes.synthetic_eeg import SyntheticConfig, make_dataset
    ds = str(tmp_path / "ds")
    make_dataset(ds, SyntheticConfig(n_channels=2, sfreq=100.0, window_sec=1.28, n_windows=8,
                                     windows_per_recording=4, val_fraction=0.5, seed=0))
    path = str(tmp_path / "s4.pth")
    save_tiny_var_checkpoint(ds, path)
    state, _ = load_checkpoint(path)
    var1, _, _ = sample.load_var_checkpoint(path, "cpu")
    torch.manual_seed(2)
    var4 = build_var(var1.vae_proxy[0], "cpu", num_classes=2, depth=1, intra_steps=2, intra_nbr=0)
    state["trainer"]["var_wo_ddp"] = var4.state_dict()
    state["trainer"]["config"] = {k: v for k, v in var4.get_config().items() if k != "intra_nbr"}
    save_checkpoint(path, state)
    var_loaded, _, _ = sample.load_var_checkpoint(path, "cpu")
    assert var_loaded.intra_steps == 2 and var_loaded.intra_nbr == 0 and not hasattr(var_loaded, "neighbour_embed")
    a = var_loaded.autoregressive_infer_cfg(2, 0, g_seed=3, cfg=1.0)
    b = var4.eval().autoregressive_infer_cfg(2, 0, g_seed=3, cfg=1.0)
    assert torch.equal(a, b)


def test_bench_export_is_a_checkpoint_sample_py_reads(old_and_new_ckpt, tmp_path):
    """bench_intra_steps writes its models as VAR/train.py does: the reloaded model samples the same tokens."""
    import sample
    from benchmarks.bench_intra_steps import export_ar_ckpt
    _, vae, meta = sample.load_var_checkpoint(old_and_new_ckpt["new"], "cpu")
    torch.manual_seed(4)
    var = build_var(vae, "cpu", num_classes=2, depth=1, intra_steps=2, intra_nbr=1)
    var.init_weights(init_adaln=0.5, init_adaln_gamma=0.5, init_head=1.0, init_std=0.05)
    path = export_ar_ckpt(var, vae, meta["tokenizer"], ["a", "b"], str(tmp_path / "var_S2-ar-ckpt.pth"))
    back, _, meta2 = sample.load_var_checkpoint(path, "cpu")
    assert (back.intra_steps, back.intra_nbr, meta2["class_names"]) == (2, 1, ["a", "b"])
    a = var.eval().autoregressive_infer_cfg(2, 1, g_seed=5, cfg=1.0)
    b = back.autoregressive_infer_cfg(2, 1, g_seed=5, cfg=1.0)
    assert torch.equal(a, b)


def test_sample_cli_refuses_steps_the_model_lacks(old_and_new_ckpt):
    import sample
    from utils.errors import UserError
    out = str(old_and_new_ckpt["base"] / "s.npz")
    with pytest.raises(UserError, match=r"--intra_steps: intra_steps=2 but the model was trained with --intra_steps=1"):
        sample.main(["--ckpt", old_and_new_ckpt["old"], "--out", out, "--n=1", "--intra_steps=2"])
    assert not os.path.exists(out)
