"""ROAD: RemOve And Debias (Rong, Leemann, Borisov, Kasneci and Kasneci, ICML 2022).

Deletion curves that replace pixels by a fixed substrate (blur, zeros) leak the
removed region's shape: the model may react to the mask rather than to the missing
evidence. ROAD removes pixels by *noisy linear imputation*, which fills them from
their surroundings so that the mask itself carries little information:

* every removed pixel takes the weighted mean of its 8 neighbours (direct neighbours
  weight 1/6, diagonal ones 1/12; at the image border the weights of the neighbours
  inside the image are renormalised to sum to one);
* all removed pixels of an image are solved for jointly, channel by channel: the known
  pixels are fixed and each removed pixel ``i`` satisfies ``x_i = sum_j w_ij x_j``. The
  system ``(D - W_uu) x_u = W_uk x_k`` (``D`` the neighbours' total weight) is symmetric
  and positive definite as long as one pixel is kept; it is solved by conjugate
  gradients preconditioned with ``D``, batched over images, fractions and channels with
  a 3x3 convolution (:func:`linear_imputation`);
* Gaussian noise of std ``noise_std`` (input units) is added to the imputed pixels. Each
  image gets one noise field, drawn from ``generator`` (never the global RNG) and used at
  every fraction and for both orders: differences between points of the curves come from
  the removed pixels, not from the draw, and the result does not depend on
  ``max_batch_size``.

For each fraction ``f`` of ``fractions`` the top ``round(f * H * W)`` pixels are removed
(at most ``H * W - 1``), ranked by the saliency (ties go to the lower pixel index, as in
:mod:`~lightning_igos.core.causal`):

* MoRF, most relevant first: the score should fall fast, a lower area is better;
* LeRF, least relevant first: the score should stay, a higher area is better.

An area is the trapezoid rule over ``(0, *fractions)`` with the clean image's score at
fraction 0, divided by the last fraction: the mean height of the curve, so a constant
curve at ``p`` has area ``p`` and every area lies between the lowest and highest score.
``gap = lerf_area - morf_area`` combines both orders (higher is better); it is about
0 for a saliency that ranks pixels no better than chance.

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3))
    >>> images = torch.randn(2, 3, 8, 8)
    >>> rc = road_curves(model, images, torch.rand(2, 1, 8, 8), [0, 2], fractions=(0.25, 0.5, 0.75))
    >>> rc.morf.shape, rc.gap.shape
    (torch.Size([2, 3]), torch.Size([2]))
    >>> bool(torch.allclose(rc.gap, rc.lerf_area - rc.morf_area))
    True
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_igos.core.causal import pixel_ranks
from lightning_igos.core.runner import ModelRunner
from lightning_igos.core.runtime import chunks, draw_seed, usable
from lightning_igos.core.scoring import ScoreFn, target_scores
from lightning_igos.core.validation import (
    TargetsLike,
    check_call,
    check_non_negative,
    check_positive_int,
    check_saliency,
)

FractionsLike = Union[Sequence[float], Tensor]

DEFAULT_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)

# Neighbour weights of the imputation: direct neighbours 1/6, diagonal ones 1/12 (sum 1).
_KERNEL = ((1 / 12, 1 / 6, 1 / 12), (1 / 6, 0.0, 1 / 6), (1 / 12, 1 / 6, 1 / 12))

# The residual is read back (a device sync) every this many iterations.
_CHECK_EVERY = 8


@dataclass
class RoadCurves:
    """Result of :func:`road_curves`.

    Attributes:
        fractions: ``(K,)`` fraction of pixels removed at each point.
        morf, lerf: ``(B, K)`` target score with the most (least) relevant pixels removed.
        clean_score: ``(B,)`` score of the unmodified image (both curves' point at fraction 0).
        morf_area: ``(B,)`` mean height of the MoRF curve, clean point included; lower is better.
        lerf_area: ``(B,)`` mean height of the LeRF curve, clean point included; higher is better.
        gap: ``(B,)`` ``lerf_area - morf_area``; higher is better.
        solver_iterations: conjugate gradient iterations the imputation took (the most of any batch).

    Example:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))
        >>> rc = road_curves(model, torch.randn(2, 3, 8, 8), torch.rand(2, 1, 8, 8), 1, fractions=(0.5,))
        >>> rc.fractions.tolist(), rc.lerf.shape
        ([0.5], torch.Size([2, 1]))
    """

    fractions: Tensor
    morf: Tensor
    lerf: Tensor
    clean_score: Tensor
    morf_area: Tensor
    lerf_area: Tensor
    gap: Tensor
    solver_iterations: int = 0


def road_area(curve: Tensor, clean: Tensor, fractions: Tensor) -> Tensor:
    """Mean height of ``curve`` (B, K) over ``fractions`` (K,) with ``clean`` (B,) at fraction 0.

    Example:
        >>> road_area(torch.full((2, 3), 0.3), torch.full((2,), 0.3), torch.tensor([0.3, 0.6, 0.9]))
        tensor([0.3000, 0.3000])
    """
    x = torch.cat([fractions.new_zeros(1), fractions]).to(curve)
    y = torch.cat([clean.to(curve)[:, None], curve], dim=1)
    return torch.trapezoid(y, x=x, dim=-1) / x[-1]


def check_fractions(fractions: object, name: str = "fractions") -> Tensor:
    """A non-empty, strictly increasing sequence of numbers in (0, 1), as a float64 tensor (K,).

    Example:
        >>> check_fractions((0.1, 0.5)).tolist()
        [0.1, 0.5]
        >>> check_fractions([0.5, 0.2])
        Traceback (most recent call last):
        ...
        ValueError: `fractions` must be strictly increasing, got [0.5, 0.2].
    """
    if isinstance(fractions, Tensor):
        if fractions.dim() != 1 or fractions.is_complex() or fractions.dtype == torch.bool:
            raise TypeError(f"`{name}` must be a 1-D tensor of real numbers, got {fractions!r}.")
        values = fractions.detach().cpu().tolist()
    elif isinstance(fractions, Sequence) and not isinstance(fractions, (str, bytes)):
        values = list(fractions)
    else:
        raise TypeError(f"`{name}` must be a sequence of numbers in (0, 1), got {type(fractions).__name__}.")
    if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values):
        raise TypeError(f"`{name}` must hold numbers in (0, 1), got {fractions!r}.")
    if not values:
        raise ValueError(f"`{name}` must hold at least one fraction, got {fractions!r}.")
    if not all(0 < v < 1 for v in values):
        raise ValueError(f"`{name}` must lie strictly between 0 and 1, got {values!r}.")
    if any(b <= a for a, b in zip(values, values[1:])):
        raise ValueError(f"`{name}` must be strictly increasing, got {values!r}.")
    return torch.tensor([float(v) for v in values], dtype=torch.float64)


def linear_imputation(
    images: Tensor, removed: Tensor, *, max_iterations: int = 2000, tolerance: float = 1e-5
) -> tuple[Tensor, int]:
    """Fill ``removed`` pixels with the weighted mean of their neighbours, solved jointly.

    Args:
        images: ``(N, C, H, W)``; the values of the removed pixels are ignored.
        removed: ``(N, 1, H, W)`` or ``(N, C, H, W)`` boolean, True where a pixel is removed.
        max_iterations: conjugate gradient iterations at most.
        tolerance: stop once every removed pixel differs from its neighbours' weighted mean
            by at most this much (input units), in every image and channel.

    Returns the filled images (known pixels unchanged, float32 or the images' float dtype
    if wider) and the number of iterations run. An image whose pixels are all removed has
    no unique solution; it is filled with the iterates' limit from zero (not checked here).

    Example:
        >>> x = torch.zeros(1, 1, 3, 3)
        >>> x[0, 0, 0] = 3.0  # top row 3, others 0
        >>> hole = torch.zeros(1, 1, 3, 3, dtype=torch.bool)
        >>> hole[0, 0, 1, 1] = True
        >>> filled, _ = linear_imputation(x, hole)
        >>> round(filled[0, 0, 1, 1].item(), 4)  # 2 * 1/12 * 3 + 1/6 * 3
        1.0
    """
    n, c, h, w = images.shape
    dtype = images.dtype if images.dtype == torch.float64 else torch.float32
    systems = n * c
    # One system per image and channel, laid out as the channels of one channels-last image:
    # a depthwise 3x3 convolution over that layout is far faster than a 1-channel one.
    layout = torch.channels_last

    def as_systems(t: Tensor) -> Tensor:
        return t.to(dtype).reshape(1, systems, h, w).contiguous(memory_format=layout)

    x = as_systems(images)
    m = as_systems(removed.to(device=x.device).expand(n, c, h, w))
    kernel = torch.tensor(_KERNEL, dtype=dtype, device=x.device).view(1, 1, 3, 3).expand(systems, 1, 3, 3)
    kernel = kernel.contiguous()

    def neighbours(y: Tensor) -> Tensor:
        return F.conv2d(y, kernel, padding=1, groups=systems)

    # Total weight of each pixel's in-image neighbours: 1 inside, less at the border.
    d = neighbours(torch.ones_like(x))
    known = x * (1 - m)
    b = neighbours(known) * m

    def apply(p: Tensor) -> Tensor:  # (D - W_uu) p on the removed pixels, 0 elsewhere
        return (d * p - neighbours(p)) * m

    def dot(a: Tensor, c_: Tensor) -> Tensor:
        return (a * c_).sum(dim=(0, 2, 3), keepdim=True)

    u = b / d  # the weighted mean of the known neighbours: a start that is exact for isolated holes
    r = b - apply(u)
    z = r / d
    p = z
    rz = dot(r, z)
    # A system whose residual is far below the tolerance has converged and stops moving: iterating it
    # on would push its residual and search direction into the denormal range, where flushing them to
    # zero (torch.set_flush_denormal) turns the step ratios into 0/0 or x/0.
    floor = max((tolerance * 1e-3) ** 2, float(torch.finfo(dtype).tiny))
    iterations = 0
    while iterations < max_iterations:
        if iterations % _CHECK_EVERY == 0 and float((r / d).abs().max()) <= tolerance:
            break
        ap = apply(p)
        pap = dot(p, ap)
        moving = (rz > floor) & (pap > floor)
        alpha = torch.where(moving, rz / torch.where(moving, pap, torch.ones_like(pap)), torch.zeros_like(pap))
        u = u + alpha * p
        r = r - alpha * ap
        z = r / d
        rz_new = dot(r, z)
        beta = torch.where(moving, rz_new / torch.where(moving, rz, torch.ones_like(rz)), torch.zeros_like(rz))
        p = z + beta * p
        rz = rz_new
        iterations += 1
    filled = known + u * m
    return filled.reshape(n, c, h, w).contiguous(), iterations


def road_curves(
    model: nn.Module,
    images: Tensor,
    saliency: Tensor,
    targets: TargetsLike,
    *,
    fractions: FractionsLike = DEFAULT_FRACTIONS,
    noise_std: float = 0.01,
    score_fn: ScoreFn | None = None,
    max_batch_size: int | None = None,
    generator: torch.Generator | None = None,
    solver_iterations: int = 2000,
    solver_tolerance: float = 1e-5,
) -> RoadCurves:
    """ROAD MoRF and LeRF curves, their areas and gap for each image's saliency.

    Args:
        model: classifier returning logits ``(B, num_classes)``.
        images: ``(B, C, H, W)`` inputs as the model takes them.
        saliency: ``(B, 1, h, w)`` or ``(B, h, w)``, higher is more relevant; a lower
            resolution than the images is upsampled bilinearly.
        targets: class per image (int, sequence or tensor ``(B,)``).
        fractions: strictly increasing fractions of pixels to remove, in (0, 1).
        noise_std: std of the Gaussian noise added to the imputed pixels (input units).
        score_fn: ``score_fn(logits, targets) -> (B,)``; default softmax probability.
        max_batch_size: images per forward pass; None picks a default per device.
        generator: source of the noise's seed (one number is drawn from it); the global
            RNG is never used. None uses a CPU generator seeded with 0.
        solver_iterations: conjugate gradient iterations of the imputation at most.
        solver_tolerance: the imputation stops once each removed pixel is within this
            much (input units) of its neighbours' weighted mean.

    The ``2 * B * K`` perturbed images are imputed and scored in batches of at most
    ``max_batch_size``, on the images' device, with the model in eval mode under
    ``no_grad`` (its mode is restored).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3))
        >>> rc = road_curves(model, torch.randn(2, 3, 8, 8), torch.rand(2, 1, 8, 8), [0, 2], noise_std=0.0)
        >>> rc.fractions.shape, rc.morf.shape, rc.lerf_area.shape
        (torch.Size([9]), torch.Size([2, 9]), torch.Size([2]))
    """
    model, images, targets_t, _ = check_call(model, images, targets, max_batch_size)
    saliency = check_saliency(saliency, images)
    fractions_t = check_fractions(fractions)
    noise_std = check_non_negative(noise_std, "noise_std")
    solver_iterations = check_positive_int(solver_iterations, "solver_iterations")
    solver_tolerance = check_non_negative(solver_tolerance, "solver_tolerance")
    seed = draw_seed(generator)
    runner = ModelRunner(model, images.device, score_fn=score_fn, max_batch_size=max_batch_size)
    with runner.running(grad=False):
        x = usable(images).float()
        # The clean forward also checks the model's output before the imputation work.
        clean = target_scores(runner.checked_clean_logits(x, targets_t), targets_t, score_fn)
    return road_scores(runner, x, saliency, targets_t, clean_score=clean, fractions=fractions_t, noise_std=noise_std,
                       seed=seed, solver_iterations=solver_iterations, solver_tolerance=solver_tolerance)


def road_scores(runner: ModelRunner, x: Tensor, saliency: Tensor, targets: Tensor, *, clean_score: Tensor,
                fractions: Tensor, noise_std: float, seed: int, solver_iterations: int = 2000,
                solver_tolerance: float = 1e-5) -> RoadCurves:
    """The kernel behind :func:`road_curves`; its inputs are trusted (checked by the caller).

    ``clean_score`` is the target's score on ``x``; ``seed`` seeds the imputation noise.
    """
    batch, _, height, width = x.shape
    device = x.device
    num_pixels = height * width
    k = fractions.numel()
    with runner.running(grad=False):
        noise = None
        if noise_std > 0:
            g = torch.Generator().manual_seed(seed)
            noise = (noise_std * torch.randn(x.shape, generator=g)).to(device)

        s = saliency.to(device)
        ranks = torch.stack([pixel_ranks(s, (height, width)), pixel_ranks(-s, (height, width))])
        ranks = ranks.view(2, batch, 1, height, width)  # (order: MoRF, LeRF)
        counts = torch.round(fractions * num_pixels).long().clamp(0, num_pixels - 1).to(device)
        # Flattened (order, image, fraction) triples, order-major; a batch mixes both orders.
        total = 2 * batch * k
        flat_scores = torch.empty(total, device=device)
        most_iterations = 0
        for start, stop in chunks(total, runner.cap):
            flat = torch.arange(start, stop, device=device)
            order, rows, ks = flat // (batch * k), (flat // k) % batch, flat % k
            removed = ranks[order, rows] < counts[ks].view(-1, 1, 1, 1)
            filled, iterations = linear_imputation(
                x[rows], removed, max_iterations=solver_iterations, tolerance=solver_tolerance
            )
            most_iterations = max(most_iterations, iterations)
            if noise is not None:
                filled = filled + noise[rows] * removed
            flat_scores[start:stop] = runner.scores(filled, targets[rows])
        morf, lerf = flat_scores.view(2, batch, k).unbind(0)
        fractions_out = fractions.to(device=device, dtype=morf.dtype)
        morf_area = road_area(morf, clean_score, fractions_out)
        lerf_area = road_area(lerf, clean_score, fractions_out)
        return RoadCurves(
            fractions=fractions_out,
            morf=morf,
            lerf=lerf,
            clean_score=clean_score,
            morf_area=morf_area,
            lerf_area=lerf_area,
            gap=lerf_area - morf_area,
            solver_iterations=most_iterations,
        )
