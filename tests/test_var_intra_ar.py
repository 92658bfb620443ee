"""Left-to-right head inside a scale (``models/intra_ar.py``): the window against a written-out loop, the
sampler against the uncached teacher-forced forward, and what each position may see."""
from __future__ import annotations

import pytest
import torch

from models import VQVAE, build_var
from models.intra_ar import ScaleARHead, left_window

PNS = (4, 6, 8, 12)


def make_pair(R: int, G: int = 1, num_classes: int = 3, fhat: int = 0):
    torch.manual_seed(0)
    vae = VQVAE(in_channels=3, vocab_size=16, z_channels=8, ch=32, ch_mult=(1, 2), num_res_blocks=1,
                v_patch_nums=PNS, tokens_per_pos=G, test_mode=True)
    torch.manual_seed(1)
    var = build_var(vae, "cpu", num_classes=num_classes, depth=2, intra_ar=R, intra_ar_fhat=fhat)
    var.init_weights(init_adaln=0.5, init_adaln_gamma=0.5, init_head=1.0, init_std=0.05)
    head = var.intra_ar_head  # its last layers start at zero: make both of its terms matter here
    torch.nn.init.normal_(head.fc2.weight, std=0.3)
    torch.nn.init.normal_(head.fc_code.weight, std=3.0)
    torch.nn.init.normal_(head.norm_w, std=3.0)
    if head.fc_fhat is not None:
        torch.nn.init.normal_(head.fc_fhat.weight, std=3.0)
    return vae, var.eval()


def teacher_forced_logits(var, vae, label_B, idx_Bl):
    with torch.no_grad():
        return var(label_B, vae.quantize.idxBl_to_var_input(idx_Bl), torch.cat(idx_Bl, dim=1))


def guided_teacher_forced_logits(var, vae, label_B, idx_Bl, cfg):
    """Classifier-free guidance written out on the uncached forward: per scale si, (1 + t) cond - t uncond with
    t = cfg * si / (number of scales - 1): (B, L * G, V)."""
    cond = teacher_forced_logits(var, vae, label_B, idx_Bl)
    uncond = teacher_forced_logits(var, vae, torch.full_like(label_B, var.num_classes), idx_Bl)
    out = []
    for si in range(len(PNS)):
        t = cfg * si / (len(PNS) - 1)
        b, e = var.begin_ends[si]
        out.append((1 + t) * cond[:, b * var.G:e * var.G] - t * uncond[:, b * var.G:e * var.G])
    return torch.cat(out, dim=1)


def test_left_window_written_out():
    torch.manual_seed(0)
    B, l, Cv, R = 2, 7, 3, 3
    h = torch.randn(B, l, Cv)
    got = left_window(h, R)
    want = torch.zeros(B, l, R * Cv)
    for i in range(l):
        for d in range(1, R + 1):  # nearest first
            if i - d >= 0:
                want[:, i, (d - 1) * Cv:d * Cv] = h[:, i - d]
    torch.testing.assert_close(got, want, atol=0, rtol=0)


def test_oldest_first_weight_reads_the_same_window():
    """The sampler's layout (positions i-R..i-1 in order, both window projections stacked) gives what the
    teacher-forced layout (nearest first) gives."""
    torch.manual_seed(0)
    B, l, Cv, R = 2, 6, 4, 3
    head = ScaleARHead(C=5, Cvae=Cv, R=R, n_scales=2)
    torch.nn.init.normal_(head.fc_code.weight)
    h = torch.randn(B, l, Cv)
    win = left_window(h, R)
    buf = torch.cat((torch.zeros(B, R, Cv), h), dim=1)
    W = head.oldest_first_weight()
    with torch.no_grad():
        for i in range(l):
            got = buf[:, i:i + R].reshape(B, -1) @ W.T
            want = torch.cat((head.fc1_w(win[:, i]), head.fc_code(win[:, i])), dim=1)
            torch.testing.assert_close(got, want)


def test_code_logits_written_out():
    """<c_v, mu> - w_s |c_v|^2 / 2 per group, with mu = fc_code(window) split into the groups."""
    torch.manual_seed(0)
    B, l, G, V, d, R = 2, 3, 2, 5, 3, 2
    head = ScaleARHead(C=4, Cvae=G * d, R=R, n_scales=3)
    torch.nn.init.normal_(head.fc_code.weight)
    torch.nn.init.normal_(head.norm_w)
    win = torch.randn(B, l, R * G * d)
    book = torch.randn(G, V, d)
    with torch.no_grad():
        got = head.code_logits(win, book, si=1).view(B, l, G, V)
        mu = win @ head.fc_code.weight.T  # (B, l, G * d)
    for b in range(B):
        for i in range(l):
            for g in range(G):
                for v in range(V):
                    c = book[g, v]
                    want = float(c @ mu[b, i, g * d:(g + 1) * d]) - 0.5 * float(head.norm_w[1].detach()) * float(c @ c)
                    assert abs(float(got[b, i, g, v]) - want) < 1e-4


@pytest.mark.parametrize("R,G", [(1, 1), (3, 1), (2, 2)])
def test_greedy_sampler_equals_argmax_of_uncached_forward(R, G):
    vae, var = make_pair(R, G)
    label_B = torch.tensor([0, 2, 1])
    _, idx_Bl, _ = var.autoregressive_infer_cfg(3, label_B, g_seed=0, cfg=0.0, top_k=1, ret_stages=True)
    logits = teacher_forced_logits(var, vae, label_B, idx_Bl)
    assert torch.equal(logits.argmax(-1), torch.cat(idx_Bl, dim=1))


def test_greedy_guided_sampler_follows_the_guidance_formula():
    cfg = 2.0
    vae, var = make_pair(2)
    label_B = torch.tensor([1, 0])
    _, idx_Bl, _ = var.autoregressive_infer_cfg(2, label_B, g_seed=0, cfg=cfg, top_k=1, ret_stages=True)
    want = guided_teacher_forced_logits(var, vae, label_B, idx_Bl, cfg).argmax(-1)
    assert torch.equal(want, torch.cat(idx_Bl, dim=1))


@pytest.mark.parametrize("B", [2, 1])
@pytest.mark.parametrize("table", [True, False])
@pytest.mark.parametrize("R,G,cfg,fhat", [(3, 1, 2.0, 0), (1, 1, 2.0, 0), (3, 2, 0.0, 0), (2, 1, 2.0, 1),
                                          (2, 2, 0.0, 2), (2, 1, 0.0, 1)])
def test_stepper_logits_equal_the_guided_uncached_forward(R, G, cfg, fhat, table, B, monkeypatch):
    """Every logit the sampler's stepper computes, not just its argmax: sampling with every token kept
    (zero-shot keep of a given pyramid) places exactly those tokens, so the stepper's logits at each position,
    less the Gumbel noise it was given, must equal the guided teacher-forced logits of that pyramid, written
    out. Both ways of reading the window (the push table and the window matmul), and one sample, where AdaLN
    and the guidance mix are folded into the output head."""
    vae, var = make_pair(R, G, fhat=fhat)
    if not table:
        monkeypatch.setattr(var.intra_ar_head, "TABLE_MAX_BYTES", 0)
    torch.manual_seed(5)
    idx_Bl = [torch.randint(0, 16, (B, pn * G)) for pn in PNS]
    label_B = torch.tensor([2, 0])[:B]
    got = stepper_logits(var, idx_Bl, label_B, cfg, table, monkeypatch)
    want = guided_teacher_forced_logits(var, vae, label_B, idx_Bl, cfg)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_stepper_follows_weights_changed_after_sampling(monkeypatch):
    """The sampler caches its push tables; changing the head's window weights or the codebook in place (an
    optimizer step, a ``.data`` write) must change what it computes."""
    vae, var = make_pair(2, fhat=1)
    B, cfg = 2, 1.5
    torch.manual_seed(5)
    idx_Bl = [torch.randint(0, 16, (B, pn)) for pn in PNS]
    label_B = torch.tensor([2, 0])
    head = var.intra_ar_head

    def in_place_step():
        with torch.no_grad():
            head.fc1_w.weight.mul_(-1.5)

    def data_writes():
        head.fc_code.weight.data.add_(0.3)
        vae.quantize.embedding.weight.data.mul_(1.2)

    for change in (in_place_step, data_writes):
        stepper_logits(var, idx_Bl, label_B, cfg, True, monkeypatch)
        change()
        got = stepper_logits(var, idx_Bl, label_B, cfg, True, monkeypatch)
        want = guided_teacher_forced_logits(var, vae, label_B, idx_Bl, cfg)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4, msg=lambda m: f"after {change.__name__}: {m}")


def stepper_logits(var, idx_Bl, label_B, cfg, table, monkeypatch):
    """The stepper's logits, less the Gumbel noise folded into them, while sampling keeps the pyramid ``idx_Bl``
    (every token given): (B, L * G, V)."""
    from models import intra_ar
    B, G = label_B.shape[0], var.G
    seen = []
    init, logits = intra_ar.ScaleStepper.__init__, intra_ar.ScaleStepper.logits

    def init_keeping_noise(self, *a, **kw):
        init(self, *a, **kw)
        assert (self.table is not None) == table
        noise = a[10] if len(a) > 10 else kw.get("noise_BlX")
        self.test_noise = noise.view(B, -1, G, var.V).unbind(1)

    monkeypatch.setattr(intra_ar.ScaleStepper, "__init__", init_keeping_noise)
    monkeypatch.setattr(intra_ar.ScaleStepper, "logits",
                        lambda self, i: seen.append(logits(self, i) - self.test_noise[i]) or seen[-1])
    keep = [torch.ones(B, pn, dtype=torch.bool) for pn in PNS]
    _, got_Bl, _ = var.autoregressive_infer_cfg(B, label_B, g_seed=0, cfg=cfg, ret_stages=True, keep_src=(idx_Bl, keep))
    assert all(torch.equal(a, b) for a, b in zip(got_Bl, idx_Bl))
    monkeypatch.undo()
    return torch.cat(seen, dim=1).view(B, -1, var.V)  # positions in order, G tokens each


@pytest.mark.parametrize("R, top_k, temperature", [(2, 0, 1.0), (2, 3, 1.0), (2, 0, (0.5, 1.0, 2.0, 0.7)),
                                                    (2, 3, 0.6), (0, 0, (0.5, 1.0, 2.0, 0.7))])
def test_sampled_tokens_follow_the_softmax_of_the_guided_uncached_forward(R, top_k, temperature):
    """Sampling (Gumbel-max on the stepper's logits; R = 0: plain VAR's draw of a whole scale) against the
    distribution written out: for every position, the frequency of each code over many windows equals the mean of
    softmax(guided teacher-forced logits / the scale's temperature, cut to the top k) given each window's own
    earlier tokens (E[onehot(token) | context] = p)."""
    cfg, N = 1.5, 2000
    if R:
        vae, var = make_pair(R)
    else:
        torch.manual_seed(0)
        vae = VQVAE(in_channels=3, vocab_size=16, z_channels=8, ch=32, ch_mult=(1, 2), num_res_blocks=1,
                    v_patch_nums=PNS, test_mode=True)
        torch.manual_seed(1)
        var = build_var(vae, "cpu", num_classes=3, depth=2)
        var.init_weights(init_adaln=0.5, init_adaln_gamma=0.5, init_head=1.0, init_std=0.05)
    temps = [temperature] * len(PNS) if isinstance(temperature, float) else list(temperature)
    label_B = torch.arange(N) % var.num_classes
    _, idx_Bl, _ = var.autoregressive_infer_cfg(N, label_B, g_seed=0, cfg=cfg, top_k=top_k, ret_stages=True,
                                                temperature=temperature)
    guided = guided_teacher_forced_logits(var, vae, label_B, idx_Bl, cfg)
    tokens = torch.cat(idx_Bl, dim=1)
    for si in range(len(PNS)):
        b, e = var.begin_ends[si]
        logits = guided[:, b:e] / temps[si]  # (N, pn, V)
        if top_k:
            kth = logits.sort(-1, descending=True)[0][..., top_k - 1:top_k]
            logits = logits.masked_fill(logits < kth, -float("inf"))
            assert bool((logits.gather(-1, tokens[:, b:e, None]) > -float("inf")).all()), "a token outside the top k"
        p = logits.softmax(-1)
        seen = torch.nn.functional.one_hot(tokens[:, b:e], p.shape[-1]).double()
        z = (seen - p).sum(0) / (p * (1 - p)).sum(0).clamp_min(1e-9).sqrt()
        assert z.abs().max() < 5, f"scale {si}: largest z {float(z.abs().max()):.1f}"


def test_each_position_sees_exactly_the_R_positions_before_it():
    R = 3
    vae, var = make_pair(R)
    torch.manual_seed(3)
    idx_Bl = [torch.randint(0, 16, (1, pn)) for pn in PNS]
    label_B = torch.tensor([1])
    base = teacher_forced_logits(var, vae, label_B, idx_Bl)
    si, p = 3, 4  # change one token of scale 3 (12 positions)
    changed = [t.clone() for t in idx_Bl]
    changed[si][0, p] = (changed[si][0, p] + 1) % 16
    out = teacher_forced_logits(var, vae, label_B, changed)
    b, e = var.begin_ends[si]
    moved = [i for i in range(e - b) if not torch.equal(out[0, b + i], base[0, b + i])]
    assert moved == list(range(p + 1, p + R + 1))
    torch.testing.assert_close(out[0, :b], base[0, :b], atol=0, rtol=0)  # earlier scales


def test_untrained_head_is_plain_var():
    torch.manual_seed(0)
    vae = VQVAE(in_channels=3, vocab_size=16, z_channels=8, ch=32, ch_mult=(1, 2), num_res_blocks=1,
                v_patch_nums=PNS, test_mode=True)
    torch.manual_seed(1)
    plain = build_var(vae, "cpu", num_classes=3, depth=2).eval()
    torch.manual_seed(1)
    head = build_var(vae, "cpu", num_classes=3, depth=2, intra_ar=2).eval()
    head.load_state_dict({**plain.state_dict(), **{k: v for k, v in head.state_dict().items()
                                                    if k.startswith("intra_ar_head.")}})
    idx_Bl = [torch.randint(0, 16, (2, pn)) for pn in PNS]
    label_B = torch.tensor([0, 1])
    torch.testing.assert_close(teacher_forced_logits(head, vae, label_B, idx_Bl),
                               teacher_forced_logits(plain, vae, label_B, idx_Bl))


def test_intra_ar_with_steps_is_refused():
    torch.manual_seed(0)
    vae = VQVAE(in_channels=3, vocab_size=16, z_channels=8, ch=32, ch_mult=(1, 2), num_res_blocks=1,
                v_patch_nums=PNS, test_mode=True)
    with pytest.raises(ValueError, match="intra_ar=2 and intra_steps=4"):
        build_var(vae, "cpu", num_classes=3, depth=2, intra_ar=2, intra_steps=4)
    with pytest.raises(ValueError, match="intra_ar=-1"):
        build_var(vae, "cpu", num_classes=3, depth=2, intra_ar=-1)


def test_zero_shot_keep_is_seen_by_the_positions_after_it():
    """Kept tokens are in place before the positions after them are drawn (greedy, so deterministic)."""
    vae, var = make_pair(2)
    torch.manual_seed(5)
    src = [torch.randint(0, 16, (1, pn)) for pn in PNS]
    keep = [torch.zeros(1, pn, dtype=torch.bool) for pn in PNS]
    keep[2][0, ::3] = True
    _, idx_Bl, _ = var.autoregressive_infer_cfg(1, 0, g_seed=0, cfg=0.0, top_k=1, ret_stages=True,
                                                keep_src=(src, keep))
    assert torch.equal(idx_Bl[2][0, ::3], src[2][0, ::3])
    logits = teacher_forced_logits(var, vae, torch.tensor([0]), idx_Bl)
    free = torch.cat([~k[0] for k in keep])
    assert torch.equal(logits.argmax(-1)[0, free], torch.cat(idx_Bl, dim=1)[0, free])


def test_bench_export_with_head_reloads_and_samples_the_same(tmp_path):
    """bench_intra_steps writes a --intra_ar model as VAR/train.py does; sample.py's loader rebuilds the head."""
    import sample
    from benchmarks.bench_intra_steps import export_ar_ckpt
    vae, var = make_pair(3)
    tok = {"vae_config": vae.get_config()}
    path = export_ar_ckpt(var, vae, tok, ["a", "b", "c"], str(tmp_path / "var_AR3-ar-ckpt.pth"))
    back, _, _ = sample.load_var_checkpoint(path, "cpu")
    assert back.intra_ar == 3
    a = var.autoregressive_infer_cfg(2, 1, g_seed=5, cfg=1.0)
    b = back.autoregressive_infer_cfg(2, 1, g_seed=5, cfg=1.0)
    assert torch.equal(a, b)


def test_temperature_one_is_the_default_draw_and_bad_temperatures_are_refused():
    vae, var = make_pair(2)
    label_B = torch.tensor([0, 2])
    a = var.autoregressive_infer_cfg(2, label_B, g_seed=5, cfg=1.5)
    b = var.autoregressive_infer_cfg(2, label_B, g_seed=5, cfg=1.5, temperature=[1.0] * len(PNS))
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    c = var.autoregressive_infer_cfg(2, label_B, g_seed=5, cfg=1.5, temperature=0.3)
    assert not torch.equal(a, c)
    with pytest.raises(ValueError, match="3 values but this model has 4 scales"):
        var.autoregressive_infer_cfg(1, 0, g_seed=0, temperature=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="positive"):
        var.autoregressive_infer_cfg(1, 0, g_seed=0, temperature=0.0)
