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


def log_complement(logits: Tensor, targets: Tensor, scores: Tensor, score_fn: ScoreFn | None,
                   max_score: float = 1 - 1e-6) -> Tensor:
    """``-log(1 - p)`` of each image's target score ``p`` (``scores``).

    For the softmax it is computed from the logits, ``logsumexp(z) - logsumexp(z without
    the target)``, exact at any confidence; a ``score_fn``'s scores are clamped to
    ``[0, max_score]`` first.

    Example:
        >>> logits = torch.tensor([[20.0, 0.0], [0.0, 0.0]])
        >>> targets = torch.tensor([0, 0])
        >>> p = target_scores(logits, targets, None)
        >>> [round(v, 3) for v in log_complement(logits, targets, p, None).tolist()]
        [20.0, 0.693]
    """
    if score_fn is not None:
        return -torch.log1p(-scores.clamp(0.0, max_score))
    z = logits.float()
    others = z.scatter(1, targets[:, None], float("-inf"))
    return torch.logsumexp(z, 1) - torch.logsumexp(others, 1)
