"""Plots of one image's insertion and deletion curves, with their AUCs in the legend.

Example:
    >>> import torch
    >>> f = torch.linspace(0, 1, 11)
    >>> curve_image(f, 1 - f, f, 0.9, 0.1, size=64).shape
    torch.Size([3, 64, 64])
"""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw
from torch import Tensor

from lightning_igos.render._checks import ScalarLike, _curve, _scalar, _size
from lightning_igos.render._drawing import _draw_text, _fitting_size, _font, _from_pil, _text_width

# Okabe-Ito blue and vermillion: distinguishable with common colour blindness.
_INSERTION_RGB = (0, 114, 178)
_DELETION_RGB = (213, 94, 0)
_AXIS_RGB = (64, 64, 64)
_GRID_RGB = (222, 222, 222)
_SUPERSAMPLE = 3  # curves are drawn this many times larger, then box-downsampled (anti-aliasing)


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
    [0, 1], with ticks labelled 0, 0.5 and 1 (unlabelled below 64 pixels); values above 1 (e.g. curves
    normalised by the clean score) are drawn at 1. The legend above the plot
    reads e.g. ``ins 0.82  del 0.12``. Lines are drawn supersampled (smooth),
    text at the final size (sharp), an eighth of the tile high or more, so it stays
    legible where the panel is shown scaled down (TensorBoard's image card).

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
    side = min(height, width)

    # Text sizes first (they set the margins), measured at the final resolution.
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    pad = max(2, side // 40)
    gap = max(4, round(side / 16))  # between the two legend entries
    legend_text = "".join(label for label, _ in legend)
    # Sized for where panels are shown: TensorBoard's image card fits a three-tile panel into about 330
    # pixels, so text of an eighth of the tile stays about 12 pixels high on screen.
    legend_px = _fitting_size(measure, legend_text, max(8, round(side * 0.14)), width - 2 * pad - gap, smallest=6)
    tick_px = max(7, round(side * 0.12))
    ticks = ((0.0, "0"), (0.5, "0.5"), (1.0, "1"))
    tick_len = max(2, side // 50)
    labelled = side >= 64  # below that, tick labels would cover the plot
    label_w = max(_text_width(measure, text, tick_px) for _, text in ticks) if labelled else 0
    _, tick_top, _, tick_bottom = measure.textbbox((0, 0), "0.51", font=_font(tick_px))
    tick_h = tick_bottom - tick_top if labelled else 0
    _, legend_top, _, legend_bottom = measure.textbbox((0, 0), legend_text, font=_font(legend_px))
    legend_h = legend_bottom - legend_top

    left = pad + label_w + tick_len + pad  # the y axis
    right = width - pad - 1
    top = pad + legend_h + pad  # the y = 1 line
    bottom = height - (pad + tick_h + tick_len + pad)  # the x axis

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
    # The end labels are aligned inwards (x: "0" from its tick, "1" up to it; y: "1" hangs from its tick,
    # "0" stands on it), so the two zeros keep clear of each other and nothing leaves the tile.
    for (value, text), align in zip(ticks if labelled else (), (0.0, 0.5, 1.0)):
        text_w = _text_width(draw, text, tick_px)
        tx, ty = point(value, 0)
        _draw_text(draw, (tx - align * text_w, ty + tick_len + pad / 2), text, tick_px, _AXIS_RGB)
        tx, ty = point(0, value)
        _draw_text(draw, (tx - tick_len - pad / 2 - text_w, ty - (1 - align) * tick_h), text, tick_px, _AXIS_RGB)
    return _from_pil(canvas)
