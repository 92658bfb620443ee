"""The prototype model: a small Transformer that adds the next frequency band, and its stage-by-stage rollout.

Shape letters: B batch, C channels (electrodes), T time samples (one token per sample), D ``d_model``,
K stages.

The model reads the cumulative stage k (``x_BCT``) and returns stage k+1. Each time sample is one token:
a linear map from the C channel values to D, plus a learned position embedding and a learned *stage*
embedding (which band is being added), then a pre-norm Transformer encoder and a linear map back to C.
The output is added to the input (``x_{k+1} = x_k + f(x_k, k)``) and the last projection starts at zero,
so an untrained model predicts "add nothing", the natural baseline: it only has to learn the new band.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from utils.errors import CheckpointError, UserError

#: Constructor arguments that fix the architecture (a checkpoint must match them).
ARCH_KEYS: tuple[str, ...] = ("channels", "time_steps", "d_model", "nhead", "num_layers", "num_stages")


class EEGScaleAutoregressiveModel(nn.Module):
    """Predict cumulative stage k+1 from stage k.

    Parameters
    ----------
    channels : int
        EEG channels C.
    time_steps : int
        Samples per window T (the position embedding has this length).
    d_model : int
        Transformer width D.
    nhead : int
        Attention heads; must divide ``d_model``.
    num_layers : int
        Transformer encoder layers.
    dropout : float
        Dropout in the encoder layers.
    num_stages : int
        Number of cumulative stages K; the stage embedding has K - 1 rows (one per band added).

    Raises
    ------
    UserError
        If a size is not positive or ``nhead`` does not divide ``d_model``.
    """

    def __init__(self, channels: int, time_steps: int, d_model: int = 128, nhead: int = 4, num_layers: int = 2,
                 dropout: float = 0.1, num_stages: int = 5) -> None:
        super().__init__()
        for name, value in (("channels", channels), ("time_steps", time_steps), ("d_model", d_model),
                            ("nhead", nhead), ("num_layers", num_layers)):
            if int(value) < 1:
                raise UserError(f"{name}: got {value}, expected a positive integer")
        if int(num_stages) < 2:
            raise UserError(f"num_stages: got {num_stages}, expected at least 2 cumulative stages")
        if d_model % nhead:
            raise UserError(f"--nhead {nhead} does not divide --d-model {d_model}; choose e.g. --nhead "
                            f"{max(h for h in range(1, min(nhead, d_model) + 1) if d_model % h == 0)}")
        if not 0.0 <= dropout < 1.0:
            raise UserError(f"--dropout: got {dropout}, expected a value in [0, 1)")
        self.config = dict(channels=int(channels), time_steps=int(time_steps), d_model=int(d_model),
                           nhead=int(nhead), num_layers=int(num_layers), dropout=float(dropout),
                           num_stages=int(num_stages))
        self.channels, self.time_steps, self.num_stages = int(channels), int(time_steps), int(num_stages)
        self.in_proj = nn.Linear(channels, d_model)
        self.pos_1TD = nn.Parameter(torch.zeros(1, time_steps, d_model))
        self.stage_embed = nn.Embedding(num_stages - 1, d_model)
        layer = nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward=4 * d_model, dropout=dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, norm=nn.LayerNorm(d_model),
                                             enable_nested_tensor=False)
        self.out_proj = nn.Linear(d_model, channels)
        nn.init.trunc_normal_(self.pos_1TD, std=0.02)
        nn.init.trunc_normal_(self.stage_embed.weight, std=0.02)
        nn.init.zeros_(self.out_proj.weight)  # start as "add nothing": x_{k+1} = x_k
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x_BCT: torch.Tensor, k_B: torch.Tensor | int) -> torch.Tensor:
        """Stage k+1 from stage k.

        Parameters
        ----------
        x_BCT : Tensor, shape (B, C, T)
            Cumulative stage k, model units (µV / scale).
        k_B : Tensor of int, shape (B,), or int
            0-based index of the input stage (0 = the first band); the model adds band k + 1.

        Returns
        -------
        Tensor, shape (B, C, T)
            Predicted stage k + 1, model units.
        """
        B, C, T = x_BCT.shape
        if C != self.channels or T != self.time_steps:
            raise UserError(f"input has {C} channels x {T} samples but the model was built for "
                            f"{self.channels} x {self.time_steps}")
        k_B = torch.as_tensor(k_B, device=x_BCT.device, dtype=torch.long).expand(B)
        h_BTD = self.in_proj(x_BCT.transpose(1, 2)) + self.pos_1TD + self.stage_embed(k_B)[:, None, :]
        h_BTD = self.encoder(h_BTD)
        return x_BCT + self.out_proj(h_BTD).transpose(1, 2)

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments as plain types (stored in checkpoints)."""
        return dict(self.config)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "EEGScaleAutoregressiveModel":
        """Rebuild a model from :meth:`get_config` output (unknown keys are ignored)."""
        fields = ("channels", "time_steps", "d_model", "nhead", "num_layers", "dropout", "num_stages")
        missing = [f for f in fields if f not in config]
        if missing:
            raise CheckpointError(f"model config lacks {missing}; was this checkpoint written by the prototype?")
        return cls(**{f: config[f] for f in fields})


@torch.no_grad()
def autoregressive_inference(model: EEGScaleAutoregressiveModel, num_stages: int, channels: int, time_steps: int,
                             device: str | torch.device, initial: torch.Tensor | None = None) -> torch.Tensor:
    """Roll the model out stage by stage from a first stage.

    Parameters
    ----------
    model : EEGScaleAutoregressiveModel
    num_stages : int
        Stages K to return (at most ``model.num_stages``).
    channels, time_steps : int
        C and T; must match the model.
    device : str or torch.device
    initial : Tensor, shape (C, T), optional
        The first stage (e.g. a real window's delta band), model units. ``None`` starts from zeros: a
        deterministic MSE model has no better guess for the first band.

    Returns
    -------
    stages_KCT : Tensor, shape (num_stages, C, T), on CPU
        ``stages_KCT[0]`` is ``initial``; ``stages_KCT[k]`` is the model's stage k from its own stage k-1.
    """
    if not 1 <= num_stages <= model.num_stages:
        raise UserError(f"num_stages: got {num_stages}, the model knows 1..{model.num_stages} stages")
    if (channels, time_steps) != (model.channels, model.time_steps):
        raise UserError(f"channels x time_steps is {channels} x {time_steps} but the model was built for "
                        f"{model.channels} x {model.time_steps}")
    if initial is None:
        x_1CT = torch.zeros(1, channels, time_steps, device=device)
    else:
        if tuple(initial.shape) != (channels, time_steps):
            raise UserError(f"initial: shape {tuple(initial.shape)}, expected ({channels}, {time_steps})")
        x_1CT = initial.to(device=device, dtype=torch.float32)[None]
    was_training = model.training
    model.eval()
    stages = [x_1CT]
    for k in range(num_stages - 1):
        stages.append(model(stages[-1], k))
    model.train(was_training)
    return torch.cat(stages).cpu()


@torch.no_grad()
def teacher_forced_predictions(model: EEGScaleAutoregressiveModel, stages_KCT: torch.Tensor,
                               device: str | torch.device) -> torch.Tensor:
    """One-step predictions from the *true* previous stage.

    Parameters
    ----------
    stages_KCT : Tensor, shape (K, C, T)
        Ground-truth stages, model units.

    Returns
    -------
    Tensor, shape (K, C, T), on CPU
        Index 0 is the true first stage; index k is ``model(stages_KCT[k-1], k-1)``.
    """
    was_training = model.training
    model.eval()
    x_KCT = stages_KCT.to(device=device, dtype=torch.float32)
    K = x_KCT.shape[0]
    pred_KCT = torch.cat([x_KCT[:1], model(x_KCT[:-1], torch.arange(K - 1, device=device))])
    model.train(was_training)
    return pred_KCT.cpu()

