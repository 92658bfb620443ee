"""The prototype model and its stage-by-stage rollout."""
from __future__ import annotations

import pytest
import torch

from prototypes.eeg_scale_ar_model import (EEGScaleAutoregressiveModel, autoregressive_inference,
                                           teacher_forced_predictions)
from prototypes.eeg_scale_ar_pipeline import EEGScaleAutoregressiveModel as FromPipeline
from utils.errors import UserError

C, T, K = 3, 24, 5


def _model(seed: int = 0, **kw) -> EEGScaleAutoregressiveModel:
    torch.manual_seed(seed)
    cfg = dict(channels=C, time_steps=T, d_model=16, nhead=2, num_layers=1, dropout=0.0, num_stages=K)
    return EEGScaleAutoregressiveModel(**{**cfg, **kw})


def _perturbed(seed: int = 0) -> EEGScaleAutoregressiveModel:
    model = _model(seed)
    with torch.no_grad():  # leave the "add nothing" start so outputs depend on the input and the stage
        model.out_proj.weight.normal_(0, 0.2)
    return model.eval()


def test_pipeline_reexports_the_model():
    assert FromPipeline is EEGScaleAutoregressiveModel


def test_untrained_model_adds_nothing_and_shapes_hold():
    model = _model().eval()
    x_BCT = torch.randn(4, C, T)
    y_BCT = model(x_BCT, torch.tensor([0, 1, 2, 3]))
    assert y_BCT.shape == (4, C, T)
    torch.testing.assert_close(y_BCT, x_BCT)


def test_stage_embedding_changes_the_output():
    model = _perturbed()
    x_1CT = torch.randn(1, C, T)
    assert not torch.allclose(model(x_1CT, 0), model(x_1CT, 3))


def test_rollout_shapes_and_recursion():
    model = _perturbed()
    initial_CT = torch.randn(C, T)
    stages_KCT = autoregressive_inference(model, K, C, T, "cpu", initial=initial_CT)
    assert stages_KCT.shape == (K, C, T)
    torch.testing.assert_close(stages_KCT[0], initial_CT)
    with torch.no_grad():
        for k in range(1, K):  # each stage is the model applied to the rollout's own previous stage
            torch.testing.assert_close(stages_KCT[k], model(stages_KCT[k - 1][None], k - 1)[0])
    fewer = autoregressive_inference(model, 3, C, T, "cpu", initial=initial_CT)
    torch.testing.assert_close(fewer, stages_KCT[:3])
    from_zero = autoregressive_inference(model, K, C, T, "cpu")
    assert from_zero.shape == (K, C, T) and torch.count_nonzero(from_zero[0]) == 0


def test_teacher_forcing_uses_the_true_previous_stage():
    model = _perturbed()
    true_KCT = torch.randn(K, C, T)
    pred_KCT = teacher_forced_predictions(model, true_KCT, "cpu")
    torch.testing.assert_close(pred_KCT[0], true_KCT[0])
    with torch.no_grad():
        torch.testing.assert_close(pred_KCT[3], model(true_KCT[2][None], 2)[0])


def test_config_round_trip_rebuilds_the_same_model():
    model = _perturbed(seed=1)
    clone = EEGScaleAutoregressiveModel.from_config(model.get_config()).eval()
    clone.load_state_dict(model.state_dict())
    x_BCT = torch.randn(2, C, T)
    torch.testing.assert_close(clone(x_BCT, 1), model(x_BCT, 1))


@pytest.mark.parametrize("kw, match", [({"d_model": 10, "nhead": 4}, "--nhead 4 does not divide --d-model 10"),
                                       ({"dropout": 1.0}, "--dropout"), ({"num_stages": 1}, "num_stages")])
def test_bad_sizes_are_user_errors(kw, match):
    with pytest.raises(UserError, match=match):
        _model(**kw)


def test_wrong_input_shape_and_stage_count_are_user_errors():
    model = _model()
    with pytest.raises(UserError, match="built for 3 x 24"):
        model(torch.randn(1, C + 1, T), 0)
    with pytest.raises(UserError, match="num_stages"):
        autoregressive_inference(model, K + 1, C, T, "cpu")
