"""Plots of one image's insertion and deletion curves, with their AUCs in the legend.

Example:
    >>> import torch
    >>> f = torch.linspace(0, 1, 11)
    >>> curve_image(f, 1 - f, f, 0.9, 0.1, size=64).shape
    torch.Size([3, 64, 64])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from PIL import Image, ImageDraw
from torch import Tensor

from lightning_igos.render._checks import ScalarLike, _curve, _scalar, _size
from lightning_igos.render._drawing import (
    _draw_text,
    _draw_vertical_text,
    _fitting_size,
    _font,
    _from_pil,
    _text_width,
)

# Okabe-Ito blue and vermillion: distinguishable with common colour blindness.
_INSERTION_RGB = (0, 114, 178)
_DELETION_RGB = (213, 94, 0)
_AXIS_RGB = (64, 64, 64)
_GRID_RGB = (222, 222, 222)
_SUPERSAMPLE = 3  # curves are drawn this many times larger, then box-downsampled (anti-aliasing)
_TICKS = ((0.0, "0"), (0.5, "0.5"), (1.0, "1"))
#: The axis titles of the curve plot.
X_TITLE, Y_TITLE = "fraction of pixels", "class probability"


def curve_image(
    insertion: Tensor | Sequence[float],
    deletion: Tensor | Sequence[float],
    fractions: Tensor | Sequence[float],
    insertion_auc: ScalarLike,
    deletion_auc: ScalarLike,
    size: int | tuple[int, int] = (160, 160),
) -> Tensor:
    """Plot one image's insertion (blue) and deletion (vermillion) curves with their AUCs.

    The x axis is the fraction of pixels changed, the y axis the score, both
    [0, 1], with ticks labelled 0, 0.5 and 1 (unlabelled below 64 pixels) and titled
    "fraction of pixels" and "class probability" (from 96 pixels on); values above 1 (e.g. curves
    normalised by the clean score) are drawn at 1. The legend above the plot
    reads e.g. ``ins 0.82  del 0.12``. Lines are drawn supersampled (smooth),
    text at the final size (sharp), 0.07-0.09 of the tile high, legible where a panel is
    shown (TensorBoard's 350-pixel image card).

    Args:
        insertion, deletion, fractions: 1-D, the same length (``steps + 1``).
        insertion_auc, deletion_auc: numbers or one-element tensors.
        size: (height, width), or one int for a square; each at least 32.

    Returns:
        (3, height, width) float32 on the CPU, white background.

    Example:
        >>> import torch
        >>> f = torch.linspace(0, 1, 11)
        >>> curve_image(f, 1 - f, f, 0.5, 0.5).shape
        torch.Size([3, 160, 160])
    """
    ins, dele, frac = _curve(insertion, "insertion"), _curve(deletion, "deletion"), _curve(fractions, "fractions")
    for name, t in (("insertion", ins), ("deletion", dele)):
        if t.numel() != frac.numel():
            raise ValueError(f"`{name}` must have one value per fraction ({frac.numel()}), got {t.numel()}.")
    if (frac < -1e-6).any() or (frac > 1 + 1e-6).any():
        raise ValueError(f"`fractions` must lie in [0, 1], got range [{frac.min():.3g}, {frac.max():.3g}].")
    legend = (
        (f"ins {_scalar(insertion_auc, 'insertion_auc'):.2f}", _INSERTION_RGB),
        (f"del {_scalar(deletion_auc, 'deletion_auc'):.2f}", _DELETION_RGB),
    )
    height, width = _size(size, "size", minimum=32)
    legend_text = "".join(label for label, _ in legend)
    box = _curve_layout(height, width, legend_text)
    side = min(height, width)
    pad, gap, tick_len, tick_px, legend_px = box.pad, box.gap, box.tick_len, box.tick_px, box.legend_px
    labelled, tick_h = box.labelled, box.tick_h
    ticks = _TICKS
    left, right, top, bottom = box.left, box.right, box.top, box.bottom

    def point(fx: float, fy: float, k: int = 1) -> tuple[float, float]:
        # Supersampled, a k-wide line centred here covers whole pixels once reduced (crisp axes).
        centre = (k - 1) / 2
        return (left + fx * (right - left)) * k + centre, (bottom - fy * (bottom - top)) * k + centre

    # Lines, supersampled k times and box-reduced (anti-aliasing).
    k = _SUPERSAMPLE
    canvas = Image.new("RGB", (width * k, height * k), "white")
    draw = ImageDraw.Draw(canvas)
    for g in (0.25, 0.5, 0.75, 1.0):
        draw.line([point(0, g, k), point(1, g, k)], fill=_GRID_RGB, width=k)
        draw.line([point(g, 0, k), point(g, 1, k)], fill=_GRID_RGB, width=k)
    draw.line([point(0, 1, k), point(0, 0, k), point(1, 0, k)], fill=_AXIS_RGB, width=k)
    for value, _ in ticks:
        x, y = point(value, 0, k)
        draw.line([(x, y), (x, y + tick_len * k)], fill=_AXIS_RGB, width=k)
        x, y = point(0, value, k)
        draw.line([(x - tick_len * k, y), (x, y)], fill=_AXIS_RGB, width=k)
    line_width = max(1, round(side / 64)) * k
    for values, rgb in ((dele, _DELETION_RGB), (ins, _INSERTION_RGB)):
        pts = [point(fx, fy, k) for fx, fy in zip(frac.clamp(0, 1).tolist(), values.clamp(0, 1).tolist())]
        draw.line(pts, fill=rgb, width=line_width, joint="curve")
    canvas = canvas.reduce(k)

    # Text at the final resolution: the legend, then the tick labels of both axes.
    draw = ImageDraw.Draw(canvas)
    x = pad
    for label, rgb in legend:
        x += _draw_text(draw, (x, pad), label, legend_px, rgb) + gap
    # The zeros are aligned inwards (x: "0" from its tick; y: "0" stands on it), so they keep clear of each
    # other; the y "1" hangs from its tick, the x "1" is centred on it (the layout leaves room on the right).
    for (value, text), x_align, y_align in zip(ticks if labelled else (), (0.0, 0.5, 0.5), (0.0, 0.5, 1.0)):
        text_w = _text_width(draw, text, tick_px)
        tx, ty = point(value, 0)
        _draw_text(draw, (tx - x_align * text_w, ty + tick_len + pad / 2), text, tick_px, _AXIS_RGB)
        tx, ty = point(0, value)
        _draw_text(draw, (tx - tick_len - pad / 2 - text_w, ty - (1 - y_align) * tick_h), text, tick_px, _AXIS_RGB)
    if box.x_title is not None and box.y_title is not None:
        x0, y0, x1, _ = box.x_title
        title_w = _text_width(draw, X_TITLE, box.title_px)
        _draw_text(draw, ((x0 + x1 - title_w) / 2, y0), X_TITLE, box.title_px, _AXIS_RGB)
        x0, y0, x1, y1 = box.y_title
        _draw_vertical_text(canvas, ((x0 + x1) / 2, (y0 + y1) / 2), Y_TITLE, box.title_px, _AXIS_RGB)
    return _from_pil(canvas)


class _CurveLayout(NamedTuple):
    """Where :func:`curve_image` draws, in pixels of the final tile: the plot's corners (``left``, ``top``)
    to (``right``, ``bottom``) are the points (0, 1) and (1, 0); the axis titles' boxes are
    ``(x0, y0, x1, y1)``, exclusive ends, or None when the tile is too small for them."""

    pad: int
    gap: int
    tick_len: int
    legend_px: int
    tick_px: int
    title_px: int
    labelled: bool
    tick_h: int
    left: int
    right: int
    top: int
    bottom: int
    x_title: tuple[int, int, int, int] | None
    y_title: tuple[int, int, int, int] | None


def _curve_layout(height: int, width: int, legend_text: str = "ins 0.00del 0.00") -> _CurveLayout:
    """The margins, text sizes and axis-title boxes of a ``height`` x ``width`` curve tile.

    Text is sized for where panels are shown: a tile of 160 pixels shows at about its own size in
    TensorBoard's 350-pixel image card (a 2x2 panel), so letters of 0.07-0.09 of the tile are 11-14
    pixels there. Axis titles are drawn from 96 pixels on; tick labels from 64.
    """
    side = min(height, width)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    pad = max(2, side // 40)
    gap = max(4, round(side / 16))  # between the two legend entries
    legend_px = _fitting_size(measure, legend_text, max(8, round(side * 0.09)), width - 2 * pad - gap, smallest=6)
    tick_px = max(7, round(side * 0.075))
    tick_len = max(2, side // 50)
    labelled = side >= 64  # below that, tick labels would cover the plot
    label_w = max(_text_width(measure, text, tick_px) for _, text in _TICKS) if labelled else 0
    _, tick_top, _, tick_bottom = measure.textbbox((0, 0), "0.51", font=_font(tick_px))
    tick_h = tick_bottom - tick_top if labelled else 0
    _, legend_top, _, legend_bottom = measure.textbbox((0, 0), legend_text, font=_font(legend_px))
    legend_h = legend_bottom - legend_top
    titled = side >= 96
    title_px = max(7, round(side * 0.07))
    _, title_top, _, title_bottom = measure.textbbox((0, 0), "fp", font=_font(title_px))
    title_h = title_bottom - title_top if titled else 0

    left = pad + (title_h + pad if titled else 0) + label_w + tick_len + pad  # the y axis
    # Room on the right for half the "1" label, centred on its tick.
    right = width - pad - 1 - (_text_width(measure, "1", tick_px) // 2 if labelled else 0)
    top = pad + legend_h + pad  # the y = 1 line
    bottom = height - (pad + tick_h + tick_len + pad + (title_h + pad if titled else 0))  # the x axis
    x_title = y_title = None
    if titled:
        x_title = (left, height - pad - title_h, right + 1, height - pad)
        y_title = (pad, top, pad + title_h, bottom + 1)
        # Shrink the titles' text until both fit their boxes.
        while title_px > 6 and max(_text_width(measure, X_TITLE, title_px) - (x_title[2] - x_title[0]),
                                   _text_width(measure, Y_TITLE, title_px) - (y_title[3] - y_title[1])) > 0:
            title_px -= 1
    return _CurveLayout(pad, gap, tick_len, legend_px, tick_px, title_px, labelled, tick_h,
                        left, right, top, bottom, x_title, y_title)
