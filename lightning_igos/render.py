"""Turn explanations into images: colormaps, overlays, curve plots and probe panels.

Everything here is torch and torchvision, plus Pillow (a torchvision
dependency) for text and lines. Inputs may live on any device and may carry
gradients; every output is a detached float32 CPU tensor with values in
[0, 1], ready for ``SummaryWriter.add_image`` or :func:`save_png`.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Union

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor
from torchvision.transforms.functional import pil_to_tensor, to_pil_image
from torchvision.utils import make_grid

if TYPE_CHECKING:
    from lightning_igos.class_names import ClassNames
    from lightning_igos.core.causal import CausalCurves

__all__ = [
    "MIN_TILE", "colormap", "curve_image", "display_stats", "explanation_panels", "grid_labels", "overlay",
    "overlay_grid", "probe_panel", "save_png", "unnormalize",
]

ChannelStats = Union[float, Sequence[float], Tensor]
ScalarLike = Union[float, Tensor]

# Inferno (the matplotlib colormap) sampled at 0, 0.1, ..., 1. Its luminance
# rises strictly from each control point to the next, so linear interpolation
# between them keeps "brighter means more salient".
_CONTROL_POINTS = (
    "000004", "160b39", "420a68", "6a176e", "932667", "bc3754",
    "dd513a", "f37819", "fca50a", "f6d746", "fcffa4",
)  # fmt: skip
_COLOR_TABLE = torch.tensor([[int(h[i : i + 2], 16) / 255.0 for i in (0, 2, 4)] for h in _CONTROL_POINTS])

# Okabe-Ito blue and vermillion: distinguishable with common colour blindness.
_INSERTION_RGB = (0, 114, 178)
_DELETION_RGB = (213, 94, 0)
_AXIS_RGB = (64, 64, 64)
_GRID_RGB = (222, 222, 222)
_SUPERSAMPLE = 3  # curves are drawn this many times larger, then box-downsampled (anti-aliasing)
#: The smallest tile (in pixels) that panels and the overlay grid draw an image at: smaller
#: images are enlarged by a whole factor (nearest), so a 32x32 probe is readable on screen.
MIN_TILE = 160


# ----------------------------------------------------------------------------- checks


def _tensor(x: object, name: str) -> Tensor:
    """``x`` as a detached float32 CPU tensor, rejecting non-tensors and NaN/inf."""
    if not isinstance(x, Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, got {type(x).__name__}.")
    if x.is_complex() or x.dtype == torch.bool:
        raise TypeError(f"`{name}` must hold real numbers, got dtype {x.dtype}.")
    x = x.detach().to(device="cpu", dtype=torch.float32)
    if x.numel() and not torch.isfinite(x).all():
        raise ValueError(f"`{name}` contains NaN or infinite values.")
    return x


def _image_batch(images: object, name: str) -> tuple[Tensor, bool]:
    """(B, C, H, W) or (C, H, W), any C >= 1, as a batch, and whether it was unbatched."""
    x = _tensor(images, name)
    if x.dim() not in (3, 4) or 0 in x.shape:
        raise ValueError(
            f"`{name}` must be shaped (B, C, H, W) or (C, H, W) with no empty dimension, got {tuple(x.shape)}."
        )
    unbatched = x.dim() == 3
    return (x.unsqueeze(0) if unbatched else x), unbatched


def _grey_to_rgb(x: Tensor) -> Tensor:
    """The displayed colours of a (B, C, H, W) batch: C = 3 as is, C = 1 as grey, C = 2 its
    first channel as grey, C >= 4 (RGBA, multispectral) its first three channels as RGB."""
    channels = x.shape[1]
    if channels == 3:
        return x
    if channels < 3:
        return x[:, :1].expand(-1, 3, -1, -1)
    return x[:, :3]


def _saliency_batch(saliency: object, batch_size: int, unbatched: bool) -> Tensor:
    """Saliency as (B, 1, h, w); the channel dimension may be left out."""
    s = _tensor(saliency, "saliency")
    full_dim = 3 if unbatched else 4
    if s.dim() == full_dim - 1:
        s = s.unsqueeze(-3)
    if unbatched:
        s = s.unsqueeze(0)
    expected = "(1, h, w) or (h, w)" if unbatched else f"(B, 1, h, w) or (B, h, w) with B = {batch_size}"
    if s.dim() != 4 or s.shape[:2] != (batch_size, 1) or 0 in s.shape:
        raise ValueError(f"`saliency` must be shaped {expected}, got {tuple(saliency.shape)}.")
    return s


def _channel_stats(value: object, name: str, channels: int) -> Tensor:
    """Per-channel mean or std as a (C,) tensor; a single number applies to every channel."""
    if isinstance(value, Tensor):
        t = _tensor(value, name).flatten()
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):
        t = torch.tensor([float(value)])
    elif isinstance(value, Sequence) and not isinstance(value, str):
        try:
            t = torch.tensor([float(v) for v in value])
        except (TypeError, ValueError, RuntimeError) as err:
            raise ValueError(f"`{name}` must be numbers, got {value!r}.") from err
    else:
        raise ValueError(f"`{name}` must be a number, a sequence of numbers or a tensor, got {value!r}.")
    if t.numel() == 1:
        t = t.expand(channels)
    if t.numel() != channels:
        raise ValueError(f"`{name}` must have one value per channel ({channels}), got {t.numel()}.")
    if not torch.isfinite(t).all():
        raise ValueError(f"`{name}` contains NaN or infinite values.")
    return t


def _alpha(alpha: object) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0 <= alpha <= 1:
        raise ValueError(f"`alpha` must be a number in [0, 1], got {alpha!r}.")
    return float(alpha)


def _curve(values: object, name: str) -> Tensor:
    if not isinstance(values, Tensor):
        try:
            values = torch.as_tensor(values, dtype=torch.float32)
        except (TypeError, ValueError, RuntimeError) as err:
            raise ValueError(f"`{name}` must be a 1-D tensor or sequence of numbers, got {values!r}.") from err
    t = _tensor(values, name)
    if t.dim() != 1 or t.numel() < 2:
        raise ValueError(f"`{name}` must be 1-D with at least 2 points, got shape {tuple(t.shape)}.")
    return t


def _scalar(value: object, name: str) -> float:
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.detach().cpu().item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"`{name}` must be a finite number or a one-element tensor, got {value!r}.")
    return float(value)


def _size(size: object, name: str, minimum: int) -> tuple[int, int]:
    pair = (size, size) if isinstance(size, numbers.Integral) else size
    ok = isinstance(pair, Sequence) and len(pair) == 2
    if not ok or any(isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < minimum for v in pair):
        raise ValueError(f"`{name}` must be an int or a pair (height, width) of ints >= {minimum}, got {size!r}.")
    return int(pair[0]), int(pair[1])


# ----------------------------------------------------------------------------- tensors


def unnormalize(images: Tensor, mean: ChannelStats | None = None, std: ChannelStats | None = None) -> Tensor:
    """Bring normalised images back to the [0, 1] display range.

    With ``mean`` and ``std`` (per-channel numbers, a tensor, or one number for
    all channels) this undoes ``transforms.Normalize``: ``x * std + mean``,
    clamped to [0, 1]. Without them each image is min-max rescaled on its own
    (a constant image becomes black). Images come back with 3 channels: one
    channel as grey, two channels as their first in grey, four or more (RGBA,
    multispectral) as their first three.

    Args:
        images: (B, C, H, W) or (C, H, W), any C >= 1, any device; ``mean``/``std`` have
            one value per channel (or one for all).
        mean, std: both or neither.

    Returns:
        (B, 3, H, W) or (3, H, W) float32 on the CPU.

    Example:
        >>> x = torch.rand(2, 3, 8, 8)
        >>> z = (x - 0.5) / 0.25
        >>> torch.allclose(unnormalize(z, mean=[0.5] * 3, std=[0.25] * 3), x, atol=1e-6)
        True
        >>> unnormalize(torch.randn(1, 8, 8)).shape
        torch.Size([3, 8, 8])
    """
    x, unbatched = _image_batch(images, "images")
    if (mean is None) != (std is None):
        missing = "std" if std is None else "mean"
        raise ValueError(f"`{missing}` must be given together with `{'mean' if std is None else 'std'}`.")
    if mean is None:
        lo = x.amin(dim=(1, 2, 3), keepdim=True)
        span = x.amax(dim=(1, 2, 3), keepdim=True) - lo
        out = (x - lo) / torch.where(span > 0, span, torch.ones_like(span))
    else:
        channels = x.shape[1]
        m = _channel_stats(mean, "mean", channels).view(1, channels, 1, 1)
        s = _channel_stats(std, "std", channels).view(1, channels, 1, 1)
        if (s <= 0).any():
            raise ValueError(f"`std` must be positive, got {s.flatten().tolist()}.")
        out = x * s + m
    out = _grey_to_rgb(out.clamp(0, 1)).contiguous()
    return out[0] if unbatched else out


def colormap(values: Tensor) -> Tensor:
    """Map values in [0, 1] to colours of an inferno-like map (black, purple, orange, pale yellow).

    Values outside [0, 1] are clamped. The luminance of the colours rises with
    the value, so the map reads correctly in greyscale too.

    Args:
        values: (B, 1, H, W) or (1, H, W), any device.

    Returns:
        (B, 3, H, W) or (3, H, W) float32 on the CPU.

    Example:
        >>> rgb = colormap(torch.linspace(0, 1, 5).view(1, 1, 5))
        >>> rgb.shape
        torch.Size([3, 1, 5])
        >>> bool((rgb[:, 0, -1] > rgb[:, 0, 0]).all())  # 1 is brighter than 0
        True
    """
    v = _tensor(values, "values")
    if v.dim() not in (3, 4) or v.shape[-3] != 1:
        raise ValueError(f"`values` must be shaped (B, 1, H, W) or (1, H, W), got {tuple(v.shape)}.")
    segments = _COLOR_TABLE.shape[0] - 1
    pos = v.squeeze(-3).clamp(0, 1) * segments
    index = pos.floor().long().clamp(max=segments - 1)
    frac = (pos - index).unsqueeze(-1)
    rgb = _COLOR_TABLE[index] * (1 - frac) + _COLOR_TABLE[index + 1] * frac  # (..., H, W, 3)
    return rgb.movedim(-1, -3).clamp(0, 1).contiguous()


def overlay(images: Tensor, saliency: Tensor, alpha: float = 0.5, top: float = 0.99) -> Tensor:
    """Blend the colormapped saliency over the images: ``(1 - alpha) * image + alpha * colormap(s)``.

    The saliency is bilinearly resized to the images' size if needed and scaled
    per image from its minimum (darkest colour) to its ``top`` quantile (brightest),
    clipped above, so a sparse map (a few salient pixels, as full-resolution I-GOS
    masks give) stays visible; a constant map becomes zeros. Only the pixels'
    order and relative saliency matter, not the scale.

    Args:
        images: (B, 3, H, W) or (3, H, W) in [0, 1] (grey C = 1 also accepted).
        saliency: (B, 1, h, w) or (B, h, w); for unbatched images (1, h, w) or (h, w).
        alpha: weight of the heatmap, in [0, 1].
        top: quantile of each map shown at full brightness (1.0: the maximum).

    Returns:
        Same layout as ``images`` with 3 channels, float32 on the CPU.

    Example:
        >>> images, sal = torch.rand(2, 3, 32, 32), torch.rand(2, 1, 8, 8)
        >>> overlay(images, sal).shape
        torch.Size([2, 3, 32, 32])
        >>> torch.equal(overlay(images, sal, alpha=0.0), images)
        True
    """
    x, unbatched = _image_batch(images, "images")
    a = _alpha(alpha)
    s = _saliency_batch(saliency, x.shape[0], unbatched)
    if s.shape[-2:] != x.shape[-2:]:
        s = F.interpolate(s, size=x.shape[-2:], mode="bilinear", align_corners=False)
    if not (isinstance(top, (int, float)) and 0 < top <= 1):
        raise ValueError(f"`top` must be a quantile in (0, 1], got {top!r}.")
    lo = s.amin(dim=(1, 2, 3), keepdim=True)
    hi = s.flatten(1).quantile(float(top), dim=1).view(-1, 1, 1, 1)
    hi = torch.where(hi > lo, hi, s.amax(dim=(1, 2, 3), keepdim=True))  # a map mostly at its minimum
    span = hi - lo
    s = torch.where(span > 0, (s - lo) / torch.where(span > 0, span, torch.ones_like(span)), torch.zeros_like(s))
    out = ((1 - a) * _grey_to_rgb(x.clamp(0, 1)) + a * colormap(s.clamp(0, 1))).clamp(0, 1)
    return out[0] if unbatched else out


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


# ----------------------------------------------------------------------------- drawing


@lru_cache(maxsize=64)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: a fixed-size bitmap font only
        return ImageFont.load_default()


def _text_width(draw: ImageDraw.ImageDraw, text: str, size: int) -> int:
    left, _, right, _ = draw.textbbox((0, 0), text, font=_font(size))
    return right - left


def _fitting_size(draw: ImageDraw.ImageDraw, text: str, size: int, max_width: int, smallest: int = 6) -> int:
    """The largest font size <= ``size`` (down to ``smallest``) at which ``text`` fits in ``max_width``."""
    while size > smallest and _text_width(draw, text, size) > max_width:
        size -= 1
    return size


def _shortened(draw: ImageDraw.ImageDraw, text: str, size: int, max_width: int) -> str:
    """``text``, or its longest prefix followed by "..." that fits in ``max_width`` at ``size``."""
    if _text_width(draw, text, size) <= max_width:
        return text
    low, high = 0, len(text)  # the longest prefix that fits, by bisection
    while low < high:
        middle = (low + high + 1) // 2
        if _text_width(draw, text[:middle].rstrip() + "...", size) <= max_width:
            low = middle
        else:
            high = middle - 1
    return text[:low].rstrip() + "..."


def _draw_text(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, size: int, fill: tuple) -> int:
    """Draw ``text`` with its ink box's top-left corner at ``xy``; return its width."""
    left, top, right, _ = draw.textbbox((0, 0), text, font=_font(size))
    draw.text((xy[0] - left, xy[1] - top), text, font=_font(size), fill=fill)
    return right - left


def _from_pil(image: Image.Image) -> Tensor:
    return pil_to_tensor(image.convert("RGB")).float().div_(255)


def _to_pil(image: Tensor) -> Image.Image:
    return to_pil_image(image.clamp(0, 1).mul(255).round().to(torch.uint8))


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


def _header(title: str, height: int, width: int) -> Tensor:
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    pad = max(2, height // 6)
    size = _fitting_size(draw, title, max(6, round(height * 0.68)), width - 2 * pad)
    title = _shortened(draw, title, size, width - 2 * pad)
    _, top, _, bottom = draw.textbbox((0, 0), title or " ", font=_font(size))
    _draw_text(draw, (pad, (height - (bottom - top)) / 2), title, size, (0, 0, 0))
    return _from_pil(canvas)


def _header_height(tile: int) -> int:
    """The title strip over a tile ``tile`` pixels high: its text is about 0.15 of the tile, 18 px or more."""
    return max(28, round(tile * 0.22))


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


def display_stats(mean: object, std: object, model: object, channels: int) -> tuple[object, object]:
    """The normalisation to undo for display: ``mean``/``std`` when both are given, else the
    model's ``mean``/``std`` attributes when it has both, else ``(None, None)`` (each image is
    then rescaled to its own range).

    The callback and ``lightning-igos check`` both use this rule. Statistics that do not
    hold one finite number (or one per channel) raise ``ValueError``/``TypeError``.

    Example:
        >>> display_stats(None, None, object(), 3)
        (None, None)
        >>> display_stats((0.5,) * 3, (0.2,) * 3, object(), 3)
        ((0.5, 0.5, 0.5), (0.2, 0.2, 0.2))
    """
    from lightning_igos.core.validation import check_channel_stats

    if mean is None or std is None:
        mean, std = getattr(model, "mean", None), getattr(model, "std", None)
        if mean is None or std is None:
            return None, None
    return check_channel_stats(mean, "mean", channels), check_channel_stats(std, "std", channels, positive=True)


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


def save_png(image: Tensor, path: str | os.PathLike) -> None:
    """Write a (3, H, W) (or grey (1, H, W); other channel counts as in :func:`unnormalize`)
    image in [0, 1] to ``path`` as 8-bit PNG.

    Values are clamped and rounded to the nearest of 256 levels; missing parent
    directories are created.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     save_png(torch.rand(3, 4, 5), os.path.join(d, "sub", "x.png"))
        ...     Image.open(os.path.join(d, "sub", "x.png")).size
        (5, 4)
    """
    if not isinstance(image, Tensor) or image.dim() != 3:
        shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise ValueError(f"`image` must be shaped (3, H, W), got {shape}.")
    img, _ = _image_batch(image, "image")
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"`path` must be a str or os.PathLike, got {type(path).__name__}.")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    _to_pil(_grey_to_rgb(img)[0]).save(target, format="PNG")
