"""Gradient-based saliencies to compare I-GOS against: vanilla gradient and integrated gradients."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lightning_igos.core.baselines import BaselineLike, check_baseline, make_baseline
from lightning_igos.core.config import IGOSConfig
from lightning_igos.core.runner import ModelRunner, checked_start
from lightning_igos.core.runtime import chunks
from lightning_igos.core.scoring import ScoreFn
from lightning_igos.core.validation import (
    TargetsLike,
    check_call,
    check_positive_int,
)


def _input_gradients(runner: ModelRunner, inputs: Tensor, targets: Tensor) -> Tensor:
    leaf = inputs.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(runner.scores(leaf, targets).sum(), leaf)
    return grad


def _checked(model: object, images: object, targets: object, score_fn: ScoreFn | None,
             max_batch_size: int | None) -> tuple[ModelRunner, Tensor, Tensor]:
    """The runner, float32 images and long targets of a call; one clean forward checks the model's output."""
    model, images, targets_t, _ = check_call(model, images, targets, max_batch_size)
    runner, x, targets_t, _ = checked_start(model, images, targets_t, score_fn=score_fn, max_batch_size=max_batch_size)
    return runner, x, targets_t


def _gradient_map(runner: ModelRunner, x: Tensor, targets: Tensor) -> Tensor:
    """The kernel of :func:`gradient_saliency` (inputs trusted): ``(B, 1, H, W)``."""
    out = []
    with runner.running(grad=True):
        for start, stop in chunks(x.shape[0], runner.cap):
            grad = _input_gradients(runner, x[start:stop], targets[start:stop])
            out.append(grad.abs().amax(1, keepdim=True))
    return torch.cat(out).detach()


def _integrated_gradient_map(runner: ModelRunner, x: Tensor, b: Tensor, targets: Tensor, steps: int) -> Tensor:
    """The kernel of :func:`integrated_gradients` (inputs trusted): ``(B, 1, H, W)``, baselines ``b``."""
    batch = x.shape[0]
    with runner.running(grad=True):
        total = torch.zeros_like(x)
        for start, stop in chunks(batch * steps, runner.cap):
            flat = torch.arange(start, stop, device=x.device)
            rows, k = flat // steps, flat % steps + 1
            alpha = (k.to(x.dtype) / steps).view(-1, 1, 1, 1)
            path = b[rows] + alpha * (x[rows] - b[rows])
            total.index_add_(0, rows, _input_gradients(runner, path, targets[rows]))
        attribution = (x - b) * total / steps
    return attribution.sum(1, keepdim=True).detach()


def gradient_saliency(
    model: nn.Module,
    images: Tensor,
    targets: TargetsLike,
    *,
    score_fn: ScoreFn | None = None,
    max_batch_size: int | None = None,
) -> Tensor:
    """Vanilla gradient saliency (Simonyan et al. 2014): max over channels of |d score / d x|.

    Returns ``(B, 1, H, W)``. The model's state, ``.grad`` and mode are left unchanged.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))
        >>> gradient_saliency(model, torch.randn(4, 3, 8, 8), 1).shape
        torch.Size([4, 1, 8, 8])
    """
    runner, x, targets_t = _checked(model, images, targets, score_fn, max_batch_size)
    return _gradient_map(runner, x, targets_t)


def integrated_gradients(
    model: nn.Module,
    images: Tensor,
    targets: TargetsLike,
    *,
    steps: int | None = None,
    baseline: BaselineLike = "blur",
    score_fn: ScoreFn | None = None,
    max_batch_size: int | None = None,
) -> Tensor:
    """Integrated gradients (Sundararajan et al. 2017), summed over channels.

    ``(x - b) * mean_k grad(b + k/steps * (x - b))`` with a right Riemann sum; the
    channel sum keeps the sign, so pixels that support the target rank first.
    Returns ``(B, 1, H, W)``; all path points go through the model in batches.
    ``steps`` None takes ``IGOSConfig().ig_steps``, the default of the registered
    ``"integrated_gradients"`` explainer that the callback and ``check --method`` run, so the
    same name gives the same map.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))
        >>> integrated_gradients(model, torch.randn(4, 3, 8, 8), 0, steps=5).shape
        torch.Size([4, 1, 8, 8])
    """
    steps = IGOSConfig().ig_steps if steps is None else check_positive_int(steps, "steps")
    check_baseline(baseline)
    runner, x, targets_t = _checked(model, images, targets, score_fn, max_batch_size)
    with runner.running(grad=False):
        b = make_baseline(x, baseline)
    return _integrated_gradient_map(runner, x, b, targets_t, steps)
