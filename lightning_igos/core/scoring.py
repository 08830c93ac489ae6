"""The score a saliency method explains: the target's softmax probability, or a user's ``score_fn``."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

ScoreFn = Callable[[Tensor, Tensor], Tensor]


def target_scores(logits: Tensor, targets: Tensor, score_fn: ScoreFn | None) -> Tensor:
    """Score of each image's target: softmax probability unless ``score_fn`` is given."""
    if score_fn is not None:
        scores = score_fn(logits, targets)
        if not isinstance(scores, Tensor) or scores.shape != targets.shape:
            raise ValueError(
                f"`score_fn` must return one score per image, shape {tuple(targets.shape)}, got "
                f"{tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__}."
            )
        return scores.float()
    return torch.softmax(logits.float(), dim=1).gather(1, targets[:, None]).squeeze(1)
