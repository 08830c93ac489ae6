"""Masks move on images the model is 97-99.9% sure of, where the softmax is nearly flat."""

from __future__ import annotations

import torch
from torch import nn

from lightning_igos import igos


class Sharpened(nn.Module):
    """The trained model's logits divided by a temperature below 1: the same ranking, more confidence."""

    def __init__(self, model: nn.Module, temperature: float) -> None:
        super().__init__()
        self.model, self.temperature = model, temperature

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) / self.temperature


def test_the_defaults_move_every_mask_at_high_confidence(trained_cnn, probe_data):
    model = Sharpened(trained_cnn, 0.45).eval()
    images, labels = probe_data.images[:8], probe_data.labels[:8]
    ex = igos(model, images, labels)
    assert ex.clean_score.min() > 0.99 and ex.clean_score.max() < 0.9999  # the regime the test is about
    assert not ex.empty.any()
    # Every mask removes part of the evidence: the deleted image's score falls.
    assert (ex.mask.flatten(1).amin(1) < 0.5).all(), ex.mask.flatten(1).amin(1)
    assert (ex.masked_score / ex.clean_score < 0.95).all(), ex.masked_score / ex.clean_score


def test_the_probability_objective_stalls_where_log_complement_moves(trained_cnn, probe_data):
    """Why the default measures -log(1 - p): on the probability the gradient is p(1 - p), about 0."""
    model = Sharpened(trained_cnn, 0.45).eval()
    images, labels = probe_data.images[:8], probe_data.labels[:8]
    kept = {}
    for objective in ("probability", "log_complement"):
        ex = igos(model, images, labels, objective=objective)
        kept[objective] = (ex.masked_score / ex.clean_score).max().item()
    assert kept["probability"] > 0.99 > 0.95 > kept["log_complement"], kept
