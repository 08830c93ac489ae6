"""Composed images: one probe image's panel (image, overlay, curves under a title) and the
captioned grid of a batch's overlays.

Example:
    >>> import torch
    >>> overlay_grid(torch.rand(2, 3, 8, 8), torch.rand(2, 1, 4, 4), min_size=1).shape
    torch.Size([3, 12, 22])
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.utils import make_grid

from lightning_igos.render._checks import ScalarLike, _grey_to_rgb, _image_batch
from lightning_igos.render._drawing import _header, _header_height
from lightning_igos.render.curves import curve_image
from lightning_igos.render.heatmap import overlay

if TYPE_CHECKING:
    from lightning_igos.class_names import ClassNames
    from lightning_igos.core.causal import CausalCurves

#: The smallest tile (in pixels) that panels and the overlay grid draw an image at: smaller
#: images are enlarged by a whole factor (nearest), so a 32x32 probe is readable on screen.
MIN_TILE = 160


def overlay_grid(
    images: Tensor,
    saliency: Tensor,
    nrow: int | None = None,
    alpha: float = 0.5,
    labels: Sequence[str] | None = None,
    min_size: int = MIN_TILE,
) -> Tensor:
    """All overlays of a batch in one image grid (white 2-pixel gaps).

    Args:
        images, saliency, alpha: as in :func:`overlay`.
        nrow: images per row; default ``ceil(sqrt(B))``.
        labels: one caption per image (e.g. ``"#0 3 (cat)"``), drawn in a strip above its tile.
        min_size: images less than this high are enlarged by the smallest whole factor that
            reaches it (nearest), so small probes are readable; 1 keeps their size.

    Returns:
        (3, H', W') float32 on the CPU.

    Example:
        >>> overlay_grid(torch.rand(4, 3, 16, 16), torch.rand(4, 1, 4, 4)).shape  # 16 px tiles drawn at 160
        torch.Size([3, 326, 326])
        >>> overlay_grid(torch.rand(4, 3, 16, 16), torch.rand(4, 1, 4, 4), min_size=1).shape
        torch.Size([3, 38, 38])
        >>> overlay_grid(torch.rand(2, 3, 16, 16), torch.rand(2, 1, 4, 4), labels=["#0: 1 (cat)", "#1: 2"]).shape
        torch.Size([3, 199, 326])
    """
    out = overlay(images, saliency, alpha)
    if out.dim() == 3:
        out = out.unsqueeze(0)
    if nrow is None:
        nrow = math.ceil(math.sqrt(out.shape[0]))
    if isinstance(nrow, bool) or not isinstance(nrow, numbers.Integral) or nrow < 1:
        raise ValueError(f"`nrow` must be a positive int or None, got {nrow!r}.")
    if isinstance(min_size, bool) or not isinstance(min_size, numbers.Integral) or min_size < 1:
        raise ValueError(f"`min_size` must be an int >= 1, got {min_size!r}.")
    if labels is not None and (isinstance(labels, str) or len(labels) != out.shape[0]
                               or not all(isinstance(t, str) for t in labels)):
        raise ValueError(f"`labels` must be {out.shape[0]} strings, one per image, got {labels!r}.")
    scale = max(1, math.ceil(min_size / out.shape[-2]))
    if labels is not None:
        scale = max(scale, math.ceil(96 / out.shape[-1]))  # room for the caption
    if scale > 1:
        out = F.interpolate(out, scale_factor=scale, mode="nearest")
    if labels is not None:
        height = _header_height(min(out.shape[-2:]))
        out = torch.stack([torch.cat([_header(text, height, out.shape[-1]), tile], dim=1)
                           for text, tile in zip(labels, out)])
    return make_grid(out, nrow=int(nrow), padding=2, pad_value=1.0).float().clamp(0, 1)


def probe_panel(
    image: Tensor,
    saliency: Tensor,
    insertion: Tensor | Sequence[float],
    deletion: Tensor | Sequence[float],
    fractions: Tensor | Sequence[float],
    insertion_auc: ScalarLike,
    deletion_auc: ScalarLike,
    title: str,
    min_size: int = MIN_TILE,
    alpha: float = 0.5,
) -> Tensor:
    """One probe image's panel: a title strip over ``image | overlay | curves``.

    Images shorter than ``min_size`` (160 by default) are upscaled by the smallest
    integer factor that reaches it, nearest-neighbour (pixels stay sharp and line up
    with the saliency), so the panel is readable where it is shown (TensorBoard's
    image card, the HTML report). The curve tile is square, as high as the image
    tiles; the title's letters are about 0.15 of the tile high.

    Args:
        image: (3, H, W) in [0, 1] (grey (1, H, W) also accepted).
        saliency: (1, h, w) or (h, w), any range.
        insertion, deletion, fractions, insertion_auc, deletion_auc: as in :func:`curve_image`.
        title: header text, e.g. ``"target 2 p=0.93"``; shrunk to fit the width.
        min_size: minimum tile height in pixels, at least 32.
        alpha: heatmap weight of the overlay.

    Returns:
        (3, header + T, 2 * W * s + T + 2 * gap) float32 on the CPU, where
        ``s = ceil(min_size / H)`` (at least 1) and ``T = H * s``.

    Example:
        >>> f = torch.linspace(0, 1, 5)
        >>> p = probe_panel(torch.rand(3, 64, 64), torch.rand(1, 8, 8), f, 1 - f, f, 0.5, 0.5, "target 2 p=0.93")
        >>> p.shape[0], p.shape[1] > 192, p.shape[2] >= 3 * 192  # 64 px enlarged 3 times, to reach 160
        (3, True, True)
    """
    if not isinstance(title, str):
        raise TypeError(f"`title` must be a str, got {type(title).__name__}.")
    if isinstance(min_size, bool) or not isinstance(min_size, numbers.Integral) or min_size < 32:
        raise ValueError(f"`min_size` must be an int >= 32, got {min_size!r}.")
    if not isinstance(image, Tensor) or image.dim() != 3:
        shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise ValueError(f"`image` must be one image shaped (3, H, W), got {shape}.")
    img, _ = _image_batch(image, "image")
    tiles = torch.stack([_grey_to_rgb(img.clamp(0, 1))[0], overlay(img[0], saliency, alpha)])
    scale = max(1, math.ceil(min_size / img.shape[-2]))
    if scale > 1:
        tiles = F.interpolate(tiles, scale_factor=scale, mode="nearest")
    tile_h, tile_w = tiles.shape[-2:]
    curves = curve_image(insertion, deletion, fractions, insertion_auc, deletion_auc, size=(tile_h, tile_h))
    gap = max(2, tile_h // 40)
    row = torch.ones(3, tile_h, 2 * tile_w + tile_h + 2 * gap)
    row[:, :, :tile_w] = tiles[0]
    row[:, :, tile_w + gap : 2 * tile_w + gap] = tiles[1]
    row[:, :, 2 * (tile_w + gap) :] = curves
    header = _header(title, _header_height(tile_h), row.shape[-1])
    return torch.cat([header, row], dim=1)


def explanation_panels(
    shown: Tensor,
    saliency: Tensor,
    curves: CausalCurves,
    targets: Tensor,
    predictions: Tensor | None,
    indices: Sequence[int],
    class_names: ClassNames | None = None,
) -> list[Tensor]:
    """One :func:`probe_panel` per explained image, titled ``#<index> class <target> p=<clean score>``.

    ``shown`` are the images for display (see :func:`unnormalize`), row ``j`` of every other
    argument belongs to probe image ``indices[j]``; ``(pred <class>)`` is added to the title
    when the model predicts another class than the explained one. With ``class_names`` each
    class reads ``3 (cat)``.
    """
    from lightning_igos.class_names import label

    panels = []
    for j, index in enumerate(indices):
        target = int(targets[j])
        title = f"#{index} class {label(target, class_names)} p={float(curves.clean_score[j]):.2f}"
        if predictions is not None and int(predictions[j]) != target:
            title += f" (pred {label(int(predictions[j]), class_names, style='short')})"
        panels.append(probe_panel(
            shown[j], saliency[j], curves.insertion[j], curves.deletion[j], curves.fractions,
            curves.insertion_auc[j], curves.deletion_auc[j], title,
        ))
    return panels


def grid_labels(indices: Sequence[int], targets: Tensor, class_names: ClassNames | None = None) -> list[str]:
    """Captions of the overlay grid's tiles: ``#<index>: <class>``, e.g. ``#0: 3 (cat)``.

    Example:
        >>> grid_labels([0, 1], torch.tensor([3, 1]))
        ['#0: 3', '#1: 1']
    """
    from lightning_igos.class_names import label

    return [f"#{index}: {label(int(t), class_names)}" for index, t in zip(indices, targets)]
