"""Explanations that say nothing are named as such: non-finite gradients and unmoved masks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_igos import igos
from lightning_igos.core.config import IGOSConfig
from lightning_igos.core.evaluation import evaluate


class NaNUnderAutograd(nn.Module):
    """Finite logits without autograd, NaN with it: every gradient the solver sees is NaN."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        return logits * float("nan") if torch.is_grad_enabled() else logits


def test_a_trained_model_gives_no_empty_explanation(trained_cnn, probe_data):
    ex = igos(trained_cnn, probe_data.images[:4], probe_data.labels[:4], iterations=2, ig_steps=4)
    assert not ex.empty.any()
    assert ex.empty_reasons == ["", "", "", ""]


def test_nan_gradients_are_an_empty_explanation_not_a_silent_pass(trained_cnn, probe_data):
    images, labels = probe_data.images[:3], probe_data.labels[:3]
    result = evaluate(NaNUnderAutograd(trained_cnn), images, labels, IGOSConfig(iterations=2, ig_steps=4,
                                                                                 metric_steps=5))
    assert result.empty.all()
    assert result.empty_reasons == ["non-finite gradient"] * 3
    assert torch.isfinite(result.explanation.mask).all()  # the NaN never reached the mask


@pytest.mark.parametrize("options", [dict(iterations=0), dict(l1=1e30, tv=1e30)])
def test_a_mask_that_never_moved_is_empty(trained_cnn, probe_data, options):
    images, labels = probe_data.images[:3], probe_data.labels[:3]
    result = evaluate(trained_cnn, images, labels, IGOSConfig(ig_steps=4, metric_steps=5, **options))
    assert torch.equal(result.explanation.mask, torch.ones_like(result.explanation.mask))
    assert result.empty.all()
    assert result.empty_reasons == ["mask never moved"] * 3
    # The flags survive the copy the callback gathers.
    assert result.cpu().empty_reasons == result.empty_reasons


def test_only_the_image_that_failed_is_empty(trained_cnn, probe_data):
    def score_nan_for_class_1_under_autograd(logits, targets):
        probability = logits.softmax(1).gather(1, targets.view(-1, 1)).squeeze(1)
        poisoned = torch.is_grad_enabled() & (targets == 1)
        return probability * torch.where(poisoned, float("nan"), 1.0)

    ex = igos(trained_cnn, probe_data.images[:3], [0, 1, 2], iterations=2, ig_steps=4,
              score_fn=score_nan_for_class_1_under_autograd)
    assert ex.empty.tolist() == [False, True, False]
    assert ex.empty_reasons == ["", "non-finite gradient", ""]


@pytest.mark.parametrize("name, value", [("tv_power", float("inf")), ("l1", float("inf")), ("tv", float("inf")),
                                         ("seed", 2**70)])
def test_values_no_run_can_use_are_rejected_by_the_configuration(name, value):
    with pytest.raises(ValueError, match=f"`{name}`"):
        IGOSConfig(**{name: value})
