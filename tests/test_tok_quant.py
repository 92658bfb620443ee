"""Band tokenizer model: shapes, scale layout, straight-through gradient, residual-helper agreement, partial decodes."""
from __future__ import annotations

import pytest
import torch

from utils.eeg_bands import DEFAULT_BANDS, scale_lengths_for_bands, validate_scale_layout
from utils.errors import BandError, UserError

from models.quant import PhiPartiallyShared, VectorQuantizer2, area_down, up_to  # noqa: E402
from models.vqvae import VQVAE  # noqa: E402


def tiny_vae(v_patch_nums, in_channels=3, G=1, psc=False, resample='linear', nrb=0, znorm=False, ch_mult=(1, 1)):
    torch.manual_seed(0)
    return VQVAE(in_channels=in_channels, vocab_size=16, z_channels=8, ch=8, ch_mult=ch_mult, num_res_blocks=nrb,
                 kernel_in=3, v_patch_nums=v_patch_nums, tokens_per_pos=G, per_scale_codebook=psc,
                 resample=resample, using_znorm=znorm, test_mode=False)


@pytest.mark.parametrize('sfreq,n_times,ch_mult,extra,tpn', [
    (100.0, 500, (1, 1, 1), (), 1.0),
    (100.0, 200, (1, 1), (1, 2), 1.0),
    (128.0, 256, (1, 1, 1), (), 1.25),
    (250.0, 1000, (1, 1, 1, 1), (2,), 1.0),
])
@pytest.mark.parametrize('G', [1, 2])
def test_shapes_and_layout(sfreq, n_times, ch_mult, extra, tpn, G):
    down = 2 ** (len(ch_mult) - 1)
    L = n_times // down
    pns = scale_lengths_for_bands(DEFAULT_BANDS if sfreq >= 100 else DEFAULT_BANDS[:4], sfreq, L,
                                  extra_coarse=extra, tokens_per_nyquist=tpn)
    assert pns[-1] == L and all(b > a for a, b in zip(pns, pns[1:]))
    assert len(pns) == len(extra) + 5
    vae = tiny_vae(pns, G=G, psc=(G == 2), ch_mult=ch_mult)
    assert vae.downsample == down and vae.n_times == n_times
    x = torch.randn(2, 3, n_times)
    idx = vae.eeg_to_idxBl(x)
    assert [tuple(i.shape) for i in idx] == [(2, pn * G) for pn in pns]
    assert all(int(i.min()) >= 0 and int(i.max()) < 16 for i in idx)
    recs = vae.idxBl_to_eeg(idx)
    assert len(recs) == len(pns) and all(r.shape == x.shape for r in recs)
    tf = vae.quantize.idxBl_to_var_input(idx)
    assert tf.shape == (2, sum(pns) - pns[0], 8) and tf.dtype == torch.float32
    assert vae.quantize.embed_idx(0, idx[0]).shape == (2, 8, pns[0])


def test_nyquist_rule_matches_design_example():
    # T_lat = 64, 100 Hz, band tops 4/8/13/30/50 -> 6, 11, 17, 39, 64
    assert scale_lengths_for_bands(DEFAULT_BANDS, 100.0, 64) == (6, 11, 17, 39, 64)
    # the tokenizer's default: tokens_per_nyquist = D (here 2) so positions carry each band at the latent rate;
    # beta would need 300 > 250 positions and is capped just below the last scale
    assert scale_lengths_for_bands(DEFAULT_BANDS, 100.0, 250, tokens_per_nyquist=2) == (40, 80, 130, 249, 250)


@pytest.mark.parametrize('bad', [(5, 5, 10), (3, 2, 10), (2, 4, 9)])
def test_bad_layout_is_an_error(bad):
    with pytest.raises(BandError, match='scale'):
        validate_scale_layout(bad, 10)


def test_quantizer_rejects_layout_not_ending_at_latent_length():
    q = VectorQuantizer2(16, 8, False, v_patch_nums=(2, 4, 8))
    with pytest.raises(ValueError, match='latent length L=10'):
        q.f_to_idxBl_or_fhat(torch.randn(1, 8, 10), to_fhat=True)


def test_straight_through_gradient():
    vae = tiny_vae((2, 5, 10, 20), G=2, psc=True)
    x = torch.randn(2, 3, 40)
    f = vae.encode_BCl(x).detach().requires_grad_(True)
    vae.quantize.train()
    f_hat, _, _ = vae.quantize(f)
    w = torch.randn_like(f_hat)
    (f_hat * w).sum().backward()
    # identity for the encoder output (STE) ...
    assert torch.allclose(f.grad, w, atol=1e-6)
    # ... and the value is the quantised latent, not f
    vae.quantize.eval()
    ref = vae.quantize.f_to_idxBl_or_fhat(f.detach(), to_fhat=True)[-1]
    assert torch.allclose(f_hat.detach(), ref, atol=1e-5)
    assert not torch.allclose(f_hat.detach(), f.detach(), atol=1e-3)
    # the codebook gets gradient from the reconstruction path too
    vae.zero_grad()
    rec, _, vq = vae(x)
    (rec.square().mean() + vq).backward()
    assert vae.quantize.embedding.weight.grad.abs().sum() > 0
    assert vae.encoder.conv_in.weight.grad.abs().sum() > 0


@pytest.mark.parametrize('G,psc,resample,znorm', [(1, False, 'linear', False), (2, True, 'linear', True),
                                                   (4, True, 'fft', False)])
def test_residual_helpers_agree(G, psc, resample, znorm):
    pns = (1, 3, 7, 12, 25)
    vae = tiny_vae(pns, G=G, psc=psc, resample=resample, znorm=znorm).eval()
    q = vae.quantize
    x = torch.randn(3, 3, 50)
    f = vae.encode_BCl(x)
    fhats = q.f_to_idxBl_or_fhat(f, to_fhat=True)
    idx = q.f_to_idxBl_or_fhat(f, to_fhat=False)
    tf = q.idxBl_to_var_input(idx)
    ms_h = [q.embed_idx(si, i) for si, i in enumerate(idx)]
    # step by step, as VAR inference does
    f_hat = torch.zeros(3, 8, pns[-1])
    nexts = []
    for si in range(len(pns)):
        f_hat, nxt = q.get_next_autoregressive_input(si, len(pns), f_hat, ms_h[si])
        if si < len(pns) - 1:
            nexts.append(nxt.transpose(1, 2).clone())
            assert torch.allclose(f_hat, fhats[si], atol=1e-5)
    assert torch.allclose(torch.cat(nexts, dim=1), tf, atol=1e-5)
    assert torch.allclose(f_hat, fhats[-1], atol=1e-5)
    cum = q.embed_to_fhat(ms_h, all_to_max_scale=True, last_one=False)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(cum, fhats))
    assert torch.allclose(q.embed_to_fhat(ms_h, last_one=True), fhats[-1], atol=1e-5)
    # training forward (value) == eval quantisation
    q.train()
    all_fhat, _, _ = q(f.detach(), ret_all_fhat=True)
    assert all(torch.allclose(a.detach(), b, atol=1e-5) for a, b in zip(all_fhat, fhats))


def test_partial_decode_semantics():
    pns = (2, 5, 10, 20)
    vae = tiny_vae(pns, G=2, psc=True).eval()
    x = torch.randn(2, 3, 40)
    idx = vae.eeg_to_idxBl(x)
    by_tokens = vae.idxBl_to_eeg(idx, last_one=False)
    by_signal = vae.eeg_to_reconstructed_eeg(x, last_one=False)
    fhats = vae.quantize.f_to_idxBl_or_fhat(vae.encode_BCl(x), to_fhat=True)
    for k in range(len(pns)):
        assert torch.allclose(by_tokens[k], by_signal[k], atol=1e-5)
        assert torch.allclose(by_tokens[k], vae.fhat_to_eeg(fhats[k]), atol=1e-5)  # decode(f_hat_<=k)
    assert torch.allclose(vae.idxBl_to_eeg(idx, last_one=True), by_tokens[-1], atol=1e-5)
    assert torch.allclose(vae.img_to_reconstructed_img(x, last_one=True), by_tokens[-1], atol=1e-5)
    # each later scale changes the reconstruction (partial sums really are partial)
    assert not torch.allclose(by_tokens[0], by_tokens[-1], atol=1e-4)


def test_token_layout_is_position_major():
    pns = (2, 4)
    vae = tiny_vae(pns, G=2, psc=False, ch_mult=(1,)).eval()
    q = vae.quantize
    idx = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8]])  # scale 1: 4 positions x 2 groups
    h = q.embed_idx(1, idx)
    W = q.embedding.weight
    V = q.vocab_size
    # position 2 holds tokens (5, 6): group 0 row 5 and group 1 row V + 6, stacked along channels
    assert torch.allclose(h[0, :, 2], torch.cat([W[5], W[V + 6]]))


def test_usage_and_reseeding_fill_the_codebook():
    pns = (2, 5, 10)
    torch.manual_seed(0)
    q = VectorQuantizer2(32, 8, using_znorm=True, v_patch_nums=pns, tokens_per_pos=2, per_scale_codebook=True)
    q.train()
    f = torch.randn(16, 8, 10)
    with torch.no_grad():
        q.embedding.weight.zero_()
        q.embedding.weight[:, 0] = 1  # every code identical: one code wins everything
        for _ in range(3):
            q(f)
    before = q.usages(16)
    assert max(before) < 10
    n = q.reseed_dead_codes_(batch_size=16, generator=torch.Generator().manual_seed(0))
    assert sum(n) > 0
    with torch.no_grad():
        for _ in range(5):
            q(f + 0.01 * torch.randn_like(f))
    assert min(q.usages(16)) > max(before)


def test_reseed_margin_decides_which_rare_codes_are_dead():
    """A code used at 0.2x the uniform rate survives upstream's 0.08 margin and is re-seeded at 0.5."""
    pns = (4, 8)
    V, B = 16, 8

    def quantizer():
        torch.manual_seed(0)
        q = VectorQuantizer2(V, 4, using_znorm=False, v_patch_nums=pns, per_scale_codebook=True)
        q._last_rest = [torch.randn(B, 4, pn) for pn in pns]
        for si, pn in enumerate(pns):
            uniform = B * pn / V
            q.ema_vocab_hit_SV[si].fill_(uniform)
            q.ema_vocab_hit_SV[si, 3] = 0.2 * uniform  # rare, not dead by upstream's rule
        return q

    q = quantizer()
    w0 = q.embedding.weight.detach().clone()
    assert q.reseed_dead_codes_(batch_size=B, generator=torch.Generator().manual_seed(0)) == [0, 0]
    assert torch.equal(q.embedding.weight, w0)
    q = quantizer()
    assert q.reseed_dead_codes_(batch_size=B, generator=torch.Generator().manual_seed(0), margin_ratio=0.5) == [1, 1]
    changed = (q.embedding.weight != w0).any(dim=1).nonzero().flatten().tolist()
    assert changed == [3, V + 3]  # code 3 of each scale's book, nothing else


def test_phi_tick_rule_matches_upstream():
    phis = PhiPartiallyShared(torch.nn.ModuleList([torch.nn.Identity() for _ in range(4)]))
    picks = [int(torch.tensor(phis.ticks - si / 9).abs().argmin()) for si in range(10)]
    assert picks == [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]


def test_resampling_helpers():
    x = torch.randn(2, 4, 20)
    assert torch.allclose(area_down(x, 5), x.reshape(2, 4, 5, 4).mean(-1), atol=1e-6)
    assert area_down(x, 20) is not x  # a copy: callers update f_hat in place
    # FFT upsampling is exact for a band-limited signal
    t = torch.arange(10) / 10
    s = torch.sin(2 * torch.pi * 2 * t).view(1, 1, 10)
    up = up_to(s, 40, 'fft')
    assert torch.allclose(up[0, 0, ::4], s[0, 0], atol=1e-5)


def test_config_round_trip():
    vae = tiny_vae((2, 5, 10), G=2, psc=True, resample='fft', nrb=1)
    cfg = vae.get_config()
    vae2 = VQVAE.from_config(cfg, test_mode=True)
    vae2.load_state_dict(vae.state_dict())
    assert vae2.get_config() == cfg
    x = torch.randn(1, 3, 20)
    vae.eval()
    assert torch.equal(vae.eeg_to_reconstructed_eeg(x, last_one=True), vae2.eeg_to_reconstructed_eeg(x, last_one=True))
    assert not any(p.requires_grad for p in vae2.parameters())


@pytest.mark.parametrize("in_channels, G", [(2, 1), (3, 2)])
def test_pca_init_with_fewer_block_dims_than_latent_channels(in_channels, G):
    # 2 channels x downsample 2 = 4 block dims < Cvae 8: the leading components are kept and the rest start at zero,
    # so encode -> decode (before quantisation) is still an exact projection of the signal.
    torch.manual_seed(0)
    vae = VQVAE(in_channels=in_channels, vocab_size=16, z_channels=8, ch=8, ch_mult=(1, 1), arch='patch',
                v_patch_nums=(4, 8, 16), tokens_per_pos=G, test_mode=False)
    x_BCT = torch.randn(4, in_channels, 32)
    evals = vae.init_from_pca_(x_BCT)
    assert len(evals) == in_channels * vae.downsample
    f_BCl = vae.quant_conv(vae.encoder(x_BCT))
    x_rec = vae.decoder(vae.post_quant_conv(f_BCl))
    torch.testing.assert_close(x_rec, x_BCT, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize('G, psc', [(1, True), (2, False)])
def test_in_sample_codebook_ceiling_beats_random_codebooks_and_leaves_the_model(G, psc):
    from benchmarks.bench_tokenizer import in_sample_codebooks_snr_db
    from utils.eeg_metrics import snr_db
    torch.manual_seed(0)
    vae = VQVAE(in_channels=3, vocab_size=16, z_channels=6, ch_mult=(1, 1), arch='patch', v_patch_nums=(2, 4, 8),
                tokens_per_pos=G, per_scale_codebook=psc, resample='fft', test_mode=False)
    x = torch.randn(24, 3, 16)
    vae.init_from_pca_(x)  # encoder/decoder: a near-lossless block PCA; codebooks stay random (std 0.02)
    vae.eval()
    w0 = vae.quantize.embedding.weight.detach().clone()
    with torch.no_grad():
        trained = snr_db(x.double().numpy(), vae.eeg_to_reconstructed_eeg(x, last_one=True).double().numpy())
    ceiling = in_sample_codebooks_snr_db(vae, x, n_iter=10)
    assert ceiling > trained + 1.0
    assert torch.equal(vae.quantize.embedding.weight, w0)  # worked on a copy


def test_kmeans_tokenizer_layouts_rate_and_quality():
    from benchmarks.bench_tokenizer import kmeans_tokenizer, parse_layout
    torch.manual_seed(0)
    t = torch.arange(64) / 32.0
    # smooth, correlated 3-channel windows: a few sinusoids with random phases and amplitudes
    ph = torch.rand(60, 3, 4, 1) * 6.28
    amp = torch.rand(60, 1, 4, 1)
    x = (amp * torch.sin(2 * 3.1416 * torch.tensor([1., 2., 3., 5.])[None, None, :, None] * t + ph)).sum(2)
    x = x + 0.05 * torch.randn_like(x)
    tr, va = x[:40], x[40:]
    small = kmeans_tokenizer('2:1:4:6:4_8_32', tr, va, sfreq=32.0, n_iter=5)
    big = kmeans_tokenizer('2:2:64:6:4_8_32', tr, va, sfreq=32.0, n_iter=5)
    assert small['bits_per_sec_per_channel'] == pytest.approx(44 * 2 / 2.0 / 3)  # 44 tokens x 2 bits, 2 s, 3 ch
    assert big['bits_per_sec_per_channel'] == pytest.approx(44 * 2 * 6 / 2.0 / 3)
    assert big['val_snr_db'] > small['val_snr_db'] + 3 and big['train_snr_db'] > small['train_snr_db']
    assert parse_layout('4:2:256:64:25_45_125') == (4, 2, 256, 64, (25, 45, 125))
    for bad in ('4:2:256:64', '3:1:16:8:4_8', '2:3:16:8:4_8', 'a:b:c:d:e'):
        with pytest.raises(UserError, match='kmeans_layouts'):
            parse_layout(bad)
    with pytest.raises(UserError, match='T / D = 32'):
        kmeans_tokenizer('2:1:4:6:4_8_30', tr, va, sfreq=32.0)


@pytest.mark.parametrize('G', [1, 2])
def test_lloyd_refinement_of_the_codebook_init_lowers_the_error(G):
    pns = (2, 4, 8)
    torch.manual_seed(0)
    f = torch.randn(32, 8, 8) * torch.linspace(2.0, 0.2, 8)[None, :, None]  # unequal variances, like a PCA latent

    def err(lloyd: int, reseed: bool = True, start=None) -> tuple[float, torch.Tensor]:
        q = VectorQuantizer2(16, 8, using_znorm=False, v_patch_nums=pns, tokens_per_pos=G, per_scale_codebook=True,
                             quant_resi=0.0)
        if start is not None:
            q.embedding.weight.data.copy_(start)
        q.init_codebook_from_(f, generator=torch.Generator().manual_seed(0), reseed=reseed, lloyd_iters=lloyd)
        q.eval()
        with torch.no_grad():
            f_hat = q.f_to_idxBl_or_fhat(f, to_fhat=True)[-1]
        return float((f - f_hat).square().mean()), q.embedding.weight.detach().clone()

    e0, w0 = err(0)
    e5, _ = err(5)
    assert e5 < 0.9 * e0
    # without re-seeding, the Lloyd steps start from the current codes (here: the seeded ones) and improve them
    e_more, _ = err(3, reseed=False, start=w0)
    assert e_more < 0.95 * e0
