"""What a map claims: the image with only its most salient pixels kept over the substrate.

A pixel-level saliency map can read as speckle; the image it claims is enough is easier to
judge. :func:`kept_pixels` keeps the top pixels of each map (ranked as the insertion curve
ranks them: most salient first, ties to the lower pixel index) and fills the rest from the
substrate. With ``steps``, the number kept is that of the insertion curve's point nearest
``fraction`` (:func:`kept_point`), so the result is exactly the image that point scores.

Example:
    >>> import torch
    >>> image, substrate = torch.ones(1, 3, 4, 4), torch.zeros(1, 3, 4, 4)
    >>> saliency = torch.arange(16.0).view(1, 1, 4, 4)
    >>> kept_pixels(image, saliency, substrate, fraction=0.25)[0, 0].tolist()
    [[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]]
"""

from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from lightning_igos.render._checks import _image_batch, _saliency_batch, _tensor

if TYPE_CHECKING:
    from lightning_igos.core.config import IGOSConfig

#: The fraction of pixels the panels keep: 10% (at the default 50 metric steps, the curve's 5th point).
KEPT_FRACTION = 0.1


def kept_point(steps: int, fraction: float = KEPT_FRACTION) -> int:
    """The point ``k`` (1..``steps``) of a ``steps``-step insertion curve nearest ``fraction`` of the pixels.

    At least 1: the curve's first point is the bare substrate, which claims nothing.

    Example:
        >>> kept_point(50), kept_point(28), kept_point(4)
        (5, 3, 1)
    """
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
        raise ValueError(f"`steps` must be an int >= 1, got {steps!r}.")
    _fraction(fraction)
    return min(int(steps), max(1, math.floor(fraction * steps + 0.5)))


def kept_pixels(
    images: Tensor,
    saliency: Tensor,
    substrate: Tensor,
    fraction: float = KEPT_FRACTION,
    steps: int | None = None,
) -> Tensor:
    """Keep each image's most salient pixels and take every other pixel from ``substrate``.

    The pixels are ranked as the insertion curve ranks them
    (:func:`~lightning_igos.core.causal.pixel_ranks`: the saliency upsampled bilinearly to
    the images' size, most salient first, ties to the lower pixel index). Without ``steps``
    ``round(fraction * H * W)`` pixels are kept; with ``steps`` the count of the point
    :func:`kept_point` (``steps``, ``fraction``) of a ``steps``-step curve, so for the model's
    inputs and the metrics' substrate the result is exactly the image that the insertion
    curve scores at that point. For display, pass the displayed images and the substrate
    displayed the same way (:func:`~lightning_igos.render.unnormalize` with ``range_of``).

    Args:
        images: (B, C, H, W) or (C, H, W), any values (model inputs or display images).
        saliency: (B, 1, h, w) or (B, h, w); for unbatched images (1, h, w) or (h, w); h, w at most H, W.
        substrate: shaped like ``images``.
        fraction: the share of pixels kept, in (0, 1].
        steps: the insertion curve's number of steps (``metric_steps``), or None.

    Returns:
        Shaped like ``images``, float32 on the CPU; values as given (nothing is clamped).

    Example:
        >>> x, sub, s = torch.rand(2, 3, 10, 10), torch.zeros(2, 3, 10, 10), torch.rand(2, 1, 5, 5)
        >>> kept = kept_pixels(x, s, sub, fraction=0.1, steps=50)
        >>> int((kept[0, 0] != 0).sum())  # point 5 of 50: 10 of the 100 pixels
        10
    """
    from lightning_igos.core.causal import pixel_counts, pixel_ranks

    x, unbatched = _image_batch(images, "images")
    sub = _tensor(substrate, "substrate")
    if tuple(sub.shape) != tuple(images.shape):
        raise ValueError(f"`substrate` must be shaped like `images` {tuple(images.shape)}, got {tuple(sub.shape)}.")
    sub = sub.unsqueeze(0) if unbatched else sub
    s = _saliency_batch(saliency, x.shape[0], unbatched)
    height, width = x.shape[-2:]
    if s.shape[-2] > height or s.shape[-1] > width:
        raise ValueError(f"`saliency` resolution {tuple(s.shape[-2:])} must not exceed the images' {(height, width)}.")
    _fraction(fraction)
    if steps is None:
        count = math.floor(fraction * height * width + 0.5)
    else:
        count = int(pixel_counts(height * width, steps)[kept_point(steps, fraction)])
    keep = pixel_ranks(s, (height, width)).view(x.shape[0], 1, height, width) < count
    out = torch.where(keep, x, sub)
    return out[0] if unbatched else out


def insertion_substrate(images: Tensor, config: IGOSConfig | None = None) -> Tensor:
    """The images the insertion curve of :func:`~lightning_igos.core.evaluation.evaluate` starts from,
    for ``config`` (its insertion substrate; the defaults when None), in the model's input space.

    Example:
        >>> from lightning_igos.core.config import IGOSConfig
        >>> insertion_substrate(torch.rand(2, 3, 8, 8), IGOSConfig(substrate="zeros")).abs().sum().item()
        0.0
    """
    from lightning_igos.core.baselines import make_baseline
    from lightning_igos.core.config import IGOSConfig

    config = IGOSConfig() if config is None else config
    _, kind = config.curve_substrates()
    return make_baseline(images.detach().float(), kind,
                         "substrate" if config.insertion_substrate is None else "insertion_substrate")


def _fraction(fraction: object) -> None:
    if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) or not 0 < fraction <= 1:
        raise ValueError(f"`fraction` must be a number in (0, 1], got {fraction!r}.")
