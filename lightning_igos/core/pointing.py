"""The pointing game (Zhang et al., ECCV 2016): does a saliency map's peak land on the object?

Each map points at one pixel, its maximum. The rule is TorchRay's: the point is a hit when the
peak pixel is a pixel of the object's box, or when the Euclidean distance between its pixel
indices and those of the nearest pixel of the box is strictly less than a tolerance. Boxes are
``(x0, y0, x1, y1)`` in pixels of the images, end exclusive, as in
:class:`lightning_igos.demo.synthetic.ObjectImages`: their pixels are the columns ``x0 <= x < x1``
and the rows ``y0 <= y < y1`` (for boxes with fractional coordinates too). So the pixel next to a
box is 1 pixel away, and a peak 15 pixels from the box misses at TorchRay's tolerance of 15
pixels at 224x224 (scaled with the image: :func:`pointing_tolerance`); at tolerance 0 the peak
must be inside the box.

The pointing accuracy of a set of maps is the mean of :func:`pointing_hits`. It asks only
where the peak is, not how the rest of the map is ranked; the insertion and deletion curves
(:mod:`~lightning_igos.core.causal`) measure that.

Example:
    >>> saliency = torch.zeros(2, 1, 32, 32)
    >>> saliency[0, 0, 10, 12] = 1.0  # row 10, column 12: inside the box
    >>> saliency[1, 0, 30, 30] = 1.0  # far from it
    >>> boxes = torch.tensor([[8, 8, 16, 16], [8, 8, 16, 16]])
    >>> pointing_hits(saliency, boxes).tolist()
    [True, False]
"""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_igos.core.validation import as_saliency_batch, check_boxes, check_non_negative, check_positive_int

#: TorchRay's pointing game tolerance: 15 pixels at its 224x224 benchmark resolution.
TORCHRAY_TOLERANCE = 15.0
TORCHRAY_SIZE = 224


def pointing_tolerance(height: int, width: int) -> float:
    """The default hit tolerance in pixels for ``height`` x ``width`` images.

    TorchRay's 15 pixels at 224x224, scaled with the shorter side: ``15 * min(height, width) / 224``.

    Example:
        >>> pointing_tolerance(224, 224), pointing_tolerance(64, 96)
        (15.0, 4.285714285714286)
    """
    height = check_positive_int(height, "height")
    width = check_positive_int(width, "width")
    return TORCHRAY_TOLERANCE * min(height, width) / TORCHRAY_SIZE


def pointing_hits(saliency: Tensor, boxes: Tensor, tolerance: float | None = None) -> Tensor:
    """Whether each map's maximum lies within ``tolerance`` pixels of its box, ``(B,)`` bool.

    Args:
        saliency: ``(B, 1, H, W)`` or ``(B, H, W)`` maps at the images' resolution (upsample
            coarser masks first). The point is the first maximal pixel in raster order (the
            ``argmax`` of the flattened map), so ties go to the top-most, then left-most pixel.
            A map with a NaN or infinite value, or a constant map (every pixel equal), points at
            nothing and is never a hit.
        boxes: ``(B, 4)`` boxes ``(x0, y0, x1, y1)`` in pixels of the images, end exclusive
            (integers or floats; boxes may reach outside the image), checked by
            :func:`~lightning_igos.core.validation.check_boxes`.
        tolerance: a peak outside the box hits when its distance in pixel indices to the box's
            nearest pixel is strictly less than this; None: :func:`pointing_tolerance` of ``(H, W)``.

    Returns:
        A bool tensor ``(B,)`` on ``saliency``'s device; computed for the whole batch at once.

    Raises:
        TypeError: ``saliency`` or ``boxes`` of the wrong type or dtype, ``tolerance`` not a number.
        ValueError: a wrong shape, a batch size that differs between the two, boxes with
            non-finite coordinates or without a pixel (``x0 >= x1`` or ``y0 >= y1``), or a negative tolerance.

    Example:
        >>> saliency = torch.zeros(1, 8, 8)
        >>> saliency[0, 2, 7] = 1.0  # column 7: 2 pixels right of the box's last column, 5
        >>> box = torch.tensor([[2, 1, 6, 4]])
        >>> pointing_hits(saliency, box, tolerance=2.0).tolist(), pointing_hits(saliency, box, 2.01).tolist()
        ([False], [True])
        >>> pointing_hits(torch.ones(1, 8, 8), box).tolist()  # a constant map points at nothing
        [False]
    """
    s = _check_saliency(saliency)
    batch, _, height, width = s.shape
    b = check_boxes(boxes, batch)
    tol = pointing_tolerance(height, width) if tolerance is None else check_non_negative(tolerance, "tolerance")
    # float64 keeps the tolerance boundary exact; MPS has no float64.
    dtype = torch.float32 if s.device.type == "mps" else torch.float64
    flat = s.reshape(batch, height * width)
    peak = flat.argmax(dim=1)
    px = (peak % width).to(dtype)
    py = torch.div(peak, width, rounding_mode="floor").to(dtype)
    # The box's pixels: first column ceil(x0), last ceil(x1) - 1 (end exclusive), rows alike.
    x0, y0, x1, y1 = b.to(device=s.device, dtype=dtype).ceil().unbind(1)
    dx = (x0 - px).clamp_min(0) + (px - (x1 - 1)).clamp_min(0)
    dy = (y0 - py).clamp_min(0) + (py - (y1 - 1)).clamp_min(0)
    within = ((dx == 0) & (dy == 0)) | (dx * dx + dy * dy < tol * tol)
    points = torch.isfinite(flat).all(dim=1) & (flat.amax(dim=1) > flat.amin(dim=1))
    return within & points


def _check_saliency(saliency: object) -> Tensor:
    if not isinstance(saliency, Tensor):
        raise TypeError(f"`saliency` must be a torch.Tensor, got {type(saliency).__name__}.")
    s = as_saliency_batch(saliency.detach())
    if s is None:
        raise ValueError(f"`saliency` must be shaped (B, 1, H, W) or (B, H, W), got {tuple(saliency.shape)}.")
    if s.shape[-2] < 1 or s.shape[-1] < 1:
        raise ValueError(f"`saliency` must have at least one pixel per map, got {tuple(saliency.shape)}.")
    if s.dtype == torch.bool or s.is_complex():
        raise TypeError(f"`saliency` must hold real numbers, got dtype {s.dtype}.")
    return s if s.is_floating_point() else s.float()
