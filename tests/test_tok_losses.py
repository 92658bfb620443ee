"""Tokenizer losses against answers worked out by hand: the per-stage relative MSE, its SNR, and the
multi-resolution log-spectral distance."""
from __future__ import annotations

import math

import pytest
import torch

from models.band_losses import SNRAccumulator, log_spectral_loss, stage_recon_loss


def _stages(B: int = 2, C: int = 3, T: int = 64) -> torch.Tensor:
    """Stage k is the constant c_k = k + 1 (a stand-in for the cumulative band signal): mean(x_k²) = c_k²."""
    K = 3
    return torch.arange(1, K + 1, dtype=torch.float32).view(1, K, 1, 1).expand(B, K, C, T).clone()


def test_stage_recon_loss_known_answer():
    x = _stages()
    # rec_k = x_k + d_k: MSE_k = d_k², normalised by the stage's own energy c_k² -> (d_k / c_k)²
    d = [0.5, 1.0, 3.0]
    recs = [x[:, k] + d[k] for k in range(3)]
    w = [1.0, 2.0, 5.0]
    loss, nmse = stage_recon_loss(recs, x, w)
    want = [(0.5 / 1) ** 2, (1.0 / 2) ** 2, (3.0 / 3) ** 2]  # 0.25, 0.25, 1.0
    torch.testing.assert_close(nmse, torch.tensor(want))
    assert float(loss) == pytest.approx((1 * 0.25 + 2 * 0.25 + 5 * 1.0) / 8)
    # normalised by the target, not the reconstruction: rec = 0 gives exactly 1 at every stage
    _, nmse0 = stage_recon_loss([torch.zeros_like(x[:, k]) for k in range(3)], x, w)
    torch.testing.assert_close(nmse0, torch.ones(3))
    # gradient flows to the reconstructions, the per-stage scores are detached
    rec = x[:, 0].clone().requires_grad_(True)
    loss, nmse = stage_recon_loss([rec, x[:, 1], x[:, 2]], x, [1.0, 1.0, 1.0])
    loss.backward()
    assert rec.grad is not None and not nmse.requires_grad


def test_snr_accumulator_pools_energies_over_batches():
    x = _stages()
    acc = SNRAccumulator(3)
    # batch 1: error 1 everywhere; batch 2: error 0 -> pooled error energy per element 1/2 of batch 1's
    acc.update([x[:, k] + 1.0 for k in range(3)], x)
    acc.update([x[:, k] for k in range(3)], x)
    # SNR_k = 10 log10(Σ x² / Σ e²) = 10 log10(2 c_k² / 1)
    for k, got in enumerate(acc.snr_db_K()):
        assert got == pytest.approx(10 * math.log10(2 * (k + 1) ** 2), abs=1e-5)


def test_log_spectral_loss_known_answer():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 256, generator=g)
    # every STFT magnitude doubles: |log(2|X|) - log(|X|)| = log 2 (the floor is negligible with rel_eps=0)
    assert float(log_spectral_loss(2 * x, x, rel_eps=0.0)) == pytest.approx(math.log(2), rel=1e-4)
    assert float(log_spectral_loss(-x, x, rel_eps=0.0)) == pytest.approx(0.0, abs=1e-5)  # magnitudes only
    # sizes above T are skipped; with none left the loss is 0
    assert float(log_spectral_loss(2 * x[..., :16], x[..., :16])) == 0.0
