"""Composed images: one probe image's panel (image, overlay, the pixels the map keeps, curves under a
title) and the captioned grid of a batch's overlays.

Example:
    >>> import torch
    >>> overlay_grid(torch.rand(2, 3, 8, 8), torch.rand(2, 1, 4, 4), min_size=1).shape
    torch.Size([3, 12, 22])
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.utils import make_grid

from lightning_igos.core.causal import needed_fraction
from lightning_igos.render._checks import ScalarLike, _grey_to_rgb, _image_batch
from lightning_igos.render._drawing import _common_title_size, _header, _header_height
from lightning_igos.render.curves import curve_image
from lightning_igos.render.heatmap import _colorbar_strip, overlay
from lightning_igos.render.kept import KEPT_FRACTION, kept_pixels, kept_point

if TYPE_CHECKING:
    from lightning_igos.class_names import ClassNames
    from lightning_igos.core.causal import CausalCurves

#: The smallest tile (in pixels) that panels and the overlay grid draw an image at: smaller
#: images are enlarged by a whole factor (nearest), so a 32x32 probe is readable on screen.
MIN_TILE = 160

#: The width of TensorBoard's image card in the Images tab (at any window size): images are scaled to it.
CARD_WIDTH = 350


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
        labels: one caption per image (e.g. ``"#0 3 (cat)"``), drawn in a strip above its tile, all at
            one font size (a caption too long at 0.6 of the full size is cut with "...").
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
        torch.Size([3, 188, 326])
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
    if labels is not None:  # one caption size for every tile: the largest at which (almost) all fit
        height = _header_height(min(out.shape[-2:]))
        size = _common_title_size(labels, height, out.shape[-1])
        out = torch.stack([torch.cat([_header(text, height, out.shape[-1], size=size), tile], dim=1)
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
    kept: Tensor | None = None,
    kept_label: str = "",
) -> Tensor:
    """One probe image's panel: a title strip over ``image | overlay | curves``, or with ``kept``
    two rows, ``image | overlay`` and ``kept | curves``, with a caption strip between them.

    ``kept`` is what the map claims: the image with only its most salient pixels kept over the
    substrate (:func:`~lightning_igos.render.kept.kept_pixels`, a point of the insertion curve);
    ``kept_label`` (e.g. ``"top 10% kept: p=0.41"``) is written over it and the curves.
    Under the overlay a colour key reads ``low [colour map] high``.

    Images shorter than ``min_size`` (160 by default) are upscaled by the smallest
    integer factor that reaches it, nearest-neighbour (pixels stay sharp and line up
    with the saliency), so the panel is readable where it is shown. With ``kept`` at 160-pixel
    tiles the panel is 324 pixels wide: TensorBoard's image card (:data:`CARD_WIDTH`, 350 pixels at
    any window size) shows it at about its own size. A panel with ``kept`` that this would make wider
    than the card is enlarged one factor less when that fits it and keeps the tiles at least 3/4 of
    ``min_size`` high (64-pixel images: 128-pixel tiles, a 260-pixel panel, not 388). The curve tile
    is as large as the image tiles (square without ``kept``); the title's letters are about 0.1 of
    the tile high.

    Args:
        image: (3, H, W) in [0, 1] (grey (1, H, W) also accepted).
        saliency: (1, h, w) or (h, w), any range.
        insertion, deletion, fractions, insertion_auc, deletion_auc: as in :func:`curve_image`.
        title: header text, e.g. ``"target 2 p=0.93"``; shrunk to fit the width.
        min_size: minimum tile height in pixels, at least 32.
        alpha: heatmap weight of the overlay.
        kept: None, or (3, H, W) in [0, 1] (grey (1, H, W) also accepted), shaped like ``image``.
        kept_label: the caption over ``kept``.

    Returns:
        float32 on the CPU, with ``s = ceil(min_size / H)`` (at least 1), ``T = H * s`` and
        ``gap = max(2, T // 40)``: without ``kept`` (3, header + T + key, 2 * W * s + T + 2 * gap),
        with ``kept`` (3, 2 * header + 2 * T + key, 2 * W * s + gap).

    Example:
        >>> f = torch.linspace(0, 1, 5)
        >>> p = probe_panel(torch.rand(3, 64, 64), torch.rand(1, 8, 8), f, 1 - f, f, 0.5, 0.5, "target 2 p=0.93")
        >>> p.shape[0], p.shape[1] > 192, p.shape[2] == 3 * 192 + 2 * 4  # 64 px enlarged 3 times, to reach 160
        (3, True, True)
        >>> q = probe_panel(torch.rand(3, 64, 64), torch.rand(1, 8, 8), f, 1 - f, f, 0.5, 0.5, "target 2 p=0.93",
        ...                 kept=torch.rand(3, 64, 64), kept_label="top 10% kept: p=0.41")
        >>> q.shape[1] > 2 * 128, q.shape[2] == 2 * 128 + 3  # two rows of two tiles, 64 px enlarged twice to fit 350
        (True, True)
    """
    if not isinstance(title, str):
        raise TypeError(f"`title` must be a str, got {type(title).__name__}.")
    if isinstance(min_size, bool) or not isinstance(min_size, numbers.Integral) or min_size < 32:
        raise ValueError(f"`min_size` must be an int >= 32, got {min_size!r}.")
    if not isinstance(image, Tensor) or image.dim() != 3:
        shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise ValueError(f"`image` must be one image shaped (3, H, W), got {shape}.")
    if not isinstance(kept_label, str):
        raise TypeError(f"`kept_label` must be a str, got {type(kept_label).__name__}.")
    img, _ = _image_batch(image, "image")
    shown = [_grey_to_rgb(img.clamp(0, 1))[0], overlay(img[0], saliency, alpha)]
    if kept is not None:
        kept_img, _ = _image_batch(kept, "kept")
        if kept.dim() != 3 or kept_img.shape[-2:] != img.shape[-2:]:
            raise ValueError(f"`kept` must be one image shaped like `image` (C, {img.shape[-2]}, {img.shape[-1]}), "
                             f"got {tuple(kept.shape)}.")
        shown.append(_grey_to_rgb(kept_img.clamp(0, 1))[0])
    tiles = torch.stack(shown)
    scale = max(1, math.ceil(min_size / img.shape[-2]))
    # TensorBoard shows an image at its 350-pixel card's width, dropping pixel rows and columns of a
    # wider one (thin letters lose strokes): one enlargement less when that fits and the tiles stay large.
    def width(s: int) -> int:
        return 2 * img.shape[-1] * s + max(2, s * img.shape[-2] // 40)

    if kept is not None and scale > 1 and width(scale) > CARD_WIDTH >= width(scale - 1) \
            and 4 * (scale - 1) * img.shape[-2] >= 3 * min_size:
        scale -= 1
    if scale > 1:
        tiles = F.interpolate(tiles, scale_factor=scale, mode="nearest")
    tile_h, tile_w = tiles.shape[-2:]
    box = _panel_layout(tile_h, tile_w, len(tiles) + 1)
    curves = curve_image(insertion, deletion, fractions, insertion_auc, deletion_auc, size=box.curves_size)
    out = torch.ones(3, box.height, box.width)
    for (y, x), tile in zip(box.tiles, [*tiles, curves]):
        out[:, y : y + tile.shape[-2], x : x + tile.shape[-1]] = tile
    (y, x, height, width) = box.colorbar
    out[:, y : y + height, x : x + width] = _colorbar_strip(height, width)
    headers = [title] if kept is None else [title, kept_label]
    for text, (y, x, height, width) in zip(headers, box.headers):  # each shrunk only as far as it must
        out[:, y : y + height, x : x + width] = _header(text, height, width)
    return out


class _PanelLayout(NamedTuple):
    """Where :func:`probe_panel` puts its parts, in pixels: ``tiles`` the (top, left) corners of the image,
    overlay, (kept) and curve tiles, in that order; ``headers`` and ``colorbar`` strips as (top, left,
    height, width); ``header_px`` the one font size of every header."""

    height: int
    width: int
    tiles: list[tuple[int, int]]
    curves_size: tuple[int, int]
    headers: list[tuple[int, int, int, int]]
    colorbar: tuple[int, int, int, int]


def _panel_layout(tile_h: int, tile_w: int, n_tiles: int) -> _PanelLayout:
    """The layout of a panel of ``n_tiles`` (3 or 4) tiles of ``tile_h`` x ``tile_w`` pixels.

    Four tiles make two rows, two columns, so that a panel of 160-pixel tiles (324 pixels wide) shows at
    about its own size in TensorBoard's image card (350 pixels wide, whatever the window): the title
    strip, ``image | overlay``, the overlay's colour key under it, the caption strip, ``kept | curves``.
    Three tiles make one row ``image | overlay | curves`` under the title, with the key under the overlay.
    """
    gap = max(2, tile_h // 40)
    header = _header_height(tile_h)
    key = max(14, round(tile_h * 0.11))
    if n_tiles == 4:
        width = 2 * tile_w + gap
        row2 = header + tile_h + key + header
        tiles = [(header, 0), (header, tile_w + gap), (row2, 0), (row2, tile_w + gap)]
        headers = [(0, 0, header, width), (header + tile_h + key, 0, header, width)]
        height = row2 + tile_h
    else:
        width = 2 * (tile_w + gap) + tile_h
        tiles = [(header, 0), (header, tile_w + gap), (header, 2 * (tile_w + gap))]
        headers = [(0, 0, header, width)]
        height = header + tile_h + key
    colorbar = (header + tile_h, tile_w + gap, key, tile_w)
    curves_size = (tile_h, tile_w) if n_tiles == 4 else (tile_h, tile_h)
    return _PanelLayout(height, width, tiles, curves_size, headers, colorbar)


def explanation_panels(
    shown: Tensor,
    saliency: Tensor,
    curves: CausalCurves,
    targets: Tensor,
    predictions: Tensor | None,
    indices: Sequence[int],
    class_names: ClassNames | None = None,
    substrate: Tensor | None = None,
    kept_fraction: float = KEPT_FRACTION,
) -> list[Tensor]:
    """One :func:`probe_panel` per explained image, titled ``#<index> class <target> p=<clean score>``.

    ``shown`` are the images for display (see :func:`unnormalize`), row ``j`` of every other
    argument belongs to probe image ``indices[j]``; ``(pred <class>)`` is added to the title
    when the model predicts another class than the explained one. With ``class_names`` each
    class reads ``3 (cat)``.

    With ``substrate`` (the insertion curve's substrate images, displayed as ``shown``:
    ``unnormalize(substrate, mean, std, range_of=images)``) each panel also shows what the map
    claims: the image with only its top pixels kept over the substrate, at the insertion curve's
    point nearest ``kept_fraction`` (:func:`~lightning_igos.render.kept.kept_point`), captioned
    with that point's share of pixels and score and the image's needed fraction (the share of top
    pixels that gives back half the clean score), e.g. ``top 10% kept: p=0.41, half back at 8%``.
    """
    from lightning_igos.class_names import label

    kept, point = None, 0
    if substrate is not None:
        steps = curves.fractions.numel() - 1
        point = kept_point(steps, kept_fraction)
        kept = kept_pixels(shown, saliency, substrate, kept_fraction, steps=steps)
        needed = needed_fraction(curves.insertion, curves.fractions, curves.clean_score)
    panels = []
    for j, index in enumerate(indices):
        target = int(targets[j])
        title = f"#{index} class {label(target, class_names)} p={float(curves.clean_score[j]):.2f}"
        if predictions is not None and int(predictions[j]) != target:
            title += f" (pred {label(int(predictions[j]), class_names, style='short')})"
        panels.append(probe_panel(
            shown[j], saliency[j], curves.insertion[j], curves.deletion[j], curves.fractions,
            curves.insertion_auc[j], curves.deletion_auc[j], title,
            kept=None if kept is None else kept[j],
            kept_label="" if kept is None else (f"top {100 * float(curves.fractions[point]):.0f}% kept: "
                                                f"p={float(curves.insertion[j, point]):.2f}, "
                                                f"half back at {100 * float(needed[j]):.0f}%"),
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
