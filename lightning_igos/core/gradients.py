"""Gradient-based saliencies to compare I-GOS against: vanilla gradient and integrated gradients."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lightning_igos.core.baselines import BaselineLike, check_baseline, make_baseline
from lightning_igos.core.runtime import (
    chunks,
    evaluation_mode,
    gradient_context,
    model_input_dtype,
    usable,
)
from lightning_igos.core.scoring import ScoreFn, target_scores
from lightning_igos.core.validation import (
    TargetsLike,
    check_call,
    check_logits,
    check_positive_int,
)


def _input_gradients(model: nn.Module, inputs: Tensor, targets: Tensor, score_fn: ScoreFn | None,
                     dtype: torch.dtype) -> Tensor:
    leaf = inputs.detach().requires_grad_(True)
    scores = target_scores(model(leaf.to(dtype)), targets, score_fn)
    (grad,) = torch.autograd.grad(scores.sum(), leaf)
    return grad


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
    model, images, targets_t, cap = check_call(model, images, targets, max_batch_size)
    out = []
    with evaluation_mode(model), gradient_context(images.device):
        x = usable(images).float()
        dtype = model_input_dtype(model, x.dtype)
        with torch.no_grad():
            check_logits(model(x[:1].to(dtype)), 1, targets_t, score_fn)
        for start, stop in chunks(x.shape[0], cap):
            grad = _input_gradients(model, x[start:stop], targets_t[start:stop], score_fn, dtype)
            out.append(grad.abs().amax(1, keepdim=True))
    return torch.cat(out).detach()


def integrated_gradients(
    model: nn.Module,
    images: Tensor,
    targets: TargetsLike,
    *,
    steps: int = 20,
    baseline: BaselineLike = "blur",
    score_fn: ScoreFn | None = None,
    max_batch_size: int | None = None,
) -> Tensor:
    """Integrated gradients (Sundararajan et al. 2017), summed over channels.

    ``(x - b) * mean_k grad(b + k/steps * (x - b))`` with a right Riemann sum; the
    channel sum keeps the sign, so pixels that support the target rank first.
    Returns ``(B, 1, H, W)``; all path points go through the model in batches.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))
        >>> integrated_gradients(model, torch.randn(4, 3, 8, 8), 0, steps=5).shape
        torch.Size([4, 1, 8, 8])
    """
    model, images, targets_t, cap = check_call(model, images, targets, max_batch_size)
    steps = check_positive_int(steps, "steps")
    check_baseline(baseline)
    batch = images.shape[0]
    with evaluation_mode(model), gradient_context(images.device):
        x = usable(images).float()
        dtype = model_input_dtype(model, x.dtype)
        with torch.no_grad():
            check_logits(model(x[:1].to(dtype)), 1, targets_t, score_fn)
        b = make_baseline(x, baseline)
        total = torch.zeros_like(x)
        for start, stop in chunks(batch * steps, cap):
            flat = torch.arange(start, stop, device=x.device)
            rows, k = flat // steps, flat % steps + 1
            alpha = (k.to(x.dtype) / steps).view(-1, 1, 1, 1)
            path = b[rows] + alpha * (x[rows] - b[rows])
            grad = _input_gradients(model, path, targets_t[rows], score_fn, dtype)
            total.index_add_(0, rows, grad)
        attribution = (x - b) * total / steps
    return attribution.sum(1, keepdim=True).detach()
