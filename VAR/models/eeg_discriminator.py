"""Waveform discriminator for the band tokenizer's optional adversarial and feature-matching losses (EEG port,
not upstream VAR).

A decoder trained for squared error shrinks what it cannot predict, and a classifier then tells its decodes from
real EEG (issue 15, ``benchmarks/bench_tokenizer.py``). Neural audio codecs keep realism at low bit rates with a
discriminator on the waveform and a feature-matching loss on its hidden layers; this is that idea for EEG windows.

:class:`WaveDiscriminator` looks at a window ``x_BCT`` (model units) at several time resolutions (the window, then
average-pooled by 2, 4, ...); at each, 1D convolutions mix the electrodes first (so it can see spatial
correlation), then stride through time. It returns per-resolution logits and every hidden activation.

Losses (hinge form): the discriminator minimises ``mean relu(1 - D(x)) + mean relu(1 + D(x_hat))``; the tokenizer
adds ``mean relu(1 - D(x_hat))`` (adversarial) and the L1 distance of the hidden activations of ``x_hat`` from
those of ``x``, each layer divided by the mean magnitude of the real one (feature matching).

Shape letters: B batch, C electrodes, T samples, H hidden channels, t frames.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import weight_norm

__all__ = ['WaveDiscriminator', 'discriminator_hinge_loss', 'generator_hinge_loss', 'feature_matching_loss']


class _OneResolution(nn.Module):
    """(B, C, T) -> logits (B, 1, t) and the hidden activations after each non-linearity."""

    def __init__(self, in_channels: int, hidden: int, n_layers: int, kernel: int) -> None:
        super().__init__()
        layers = [weight_norm(nn.Conv1d(in_channels, hidden, 1))]  # a spatial mix of the electrodes first
        ch = hidden
        for _ in range(n_layers):
            out = min(2 * ch, 4 * hidden)
            groups = 4 if ch % 4 == 0 and out % 4 == 0 else 1  # grouped: cheaper, and still mixes within a group
            layers.append(weight_norm(nn.Conv1d(ch, out, kernel, stride=2, padding=kernel // 2, groups=groups)))
            ch = out
        self.layers = nn.ModuleList(layers)
        self.out = weight_norm(nn.Conv1d(ch, 1, 3, padding=1))

    def forward(self, x_BCT: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        feats = []
        h = x_BCT
        for layer in self.layers:
            h = F.leaky_relu(layer(h), 0.2)
            feats.append(h)
        return self.out(h), feats


class WaveDiscriminator(nn.Module):
    """Multi-resolution convolutional discriminator on EEG windows.

    Parameters
    ----------
    in_channels : int
        Electrodes C.
    hidden : int
        Width of the first layer (doubles per layer up to 4x).
    n_layers : int
        Strided layers per resolution.
    n_resolutions : int
        The window and ``n_resolutions - 1`` average-pooled copies (factor 2 each).
    kernel : int
        Kernel of the strided convolutions (odd).
    """

    def __init__(self, in_channels: int, hidden: int = 32, n_layers: int = 3, n_resolutions: int = 2,
                 kernel: int = 9) -> None:
        super().__init__()
        if in_channels < 1 or hidden < 1 or n_layers < 1 or n_resolutions < 1 or kernel < 1 or kernel % 2 == 0:
            raise ValueError(f'WaveDiscriminator: need positive sizes and an odd kernel, got in_channels={in_channels}, '
                             f'hidden={hidden}, n_layers={n_layers}, n_resolutions={n_resolutions}, kernel={kernel}')
        self.nets = nn.ModuleList(_OneResolution(in_channels, hidden, n_layers, kernel) for _ in range(n_resolutions))

    def forward(self, x_BCT: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Logits per resolution (each (B, 1, t_r)) and all hidden activations (resolution by resolution)."""
        logits, feats = [], []
        h = x_BCT
        for r, net in enumerate(self.nets):
            if r > 0:
                h = F.avg_pool1d(h, 2, ceil_mode=True)
            lo, fs = net(h)
            logits.append(lo)
            feats.extend(fs)
        return logits, feats


def discriminator_hinge_loss(real_logits: Sequence[torch.Tensor], fake_logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """Σ over resolutions of ``mean relu(1 - D(real)) + mean relu(1 + D(fake))``."""
    return sum(F.relu(1 - r).mean() + F.relu(1 + f).mean() for r, f in zip(real_logits, fake_logits))


def generator_hinge_loss(fake_logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """Σ over resolutions of ``mean relu(1 - D(fake))``: the decoder's adversarial term."""
    return sum(F.relu(1 - f).mean() for f in fake_logits)


def feature_matching_loss(real_feats: Sequence[torch.Tensor], fake_feats: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean over layers of ``mean |f_fake - f_real| / mean |f_real|`` (the real activations carry no gradient)."""
    terms = [(f - r.detach()).abs().mean() / r.detach().abs().mean().clamp_min(1e-8)
             for r, f in zip(real_feats, fake_feats)]
    return torch.stack(terms).mean()
