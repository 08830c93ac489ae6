"""The saliency colour map and heatmap overlays of images.

Example:
    >>> import torch
    >>> overlay(torch.rand(3, 16, 16), torch.rand(1, 4, 4)).shape
    torch.Size([3, 16, 16])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_igos.render._checks import _alpha, _grey_to_rgb, _image_batch, _saliency_batch, _tensor

# Inferno (the matplotlib colormap) sampled at 0, 0.1, ..., 1. Its luminance
# rises strictly from each control point to the next, so linear interpolation
# between them keeps "brighter means more salient".
_CONTROL_POINTS = (
    "000004", "160b39", "420a68", "6a176e", "932667", "bc3754",
    "dd513a", "f37819", "fca50a", "f6d746", "fcffa4",
)  # fmt: skip
_COLOR_TABLE = torch.tensor([[int(h[i : i + 2], 16) / 255.0 for i in (0, 2, 4)] for h in _CONTROL_POINTS])


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


def _colorbar_layout(height: int, width: int) -> tuple[int, tuple[int, int, int, int], int]:
    """Where :func:`_colorbar_strip` draws in a ``height`` x ``width`` strip: the labels' font size, the
    bar's box ``(x0, y0, x1, y1)`` (exclusive ends) between "low" on its left and "high" on its right,
    and the pad."""
    from PIL import Image, ImageDraw

    from lightning_igos.render._drawing import _text_width

    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    pad = max(2, height // 6)
    size = max(6, round(height * 0.62))
    bar_h = max(2, round(height * 0.45))
    y0 = (height - bar_h) // 2
    x0 = pad + _text_width(measure, "low", size) + pad
    x1 = width - pad - _text_width(measure, "high", size) - pad
    return size, (x0, y0, max(x0 + 1, x1), y0 + bar_h), pad


def _colorbar_strip(height: int, width: int) -> Tensor:
    """The overlay's colour key, a ``height`` x ``width`` strip: ``low [colour map, left to right] high``.

    The overlay scales each map from its minimum (darkest) to its 99% quantile (brightest), so the key
    says which end is the more salient, not absolute values.
    """
    from PIL import Image, ImageDraw

    from lightning_igos.render._drawing import _draw_text, _font, _from_pil

    size, (x0, y0, x1, y1), pad = _colorbar_layout(height, width)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    _, top, _, bottom = draw.textbbox((0, 0), "lowhigh", font=_font(size))
    y = (height - (bottom - top)) / 2
    _draw_text(draw, (pad, y), "low", size, (64, 64, 64))
    _draw_text(draw, (x1 + pad, y), "high", size, (64, 64, 64))
    out = _from_pil(canvas)
    ramp = colormap(torch.linspace(0, 1, x1 - x0).view(1, 1, -1))  # (3, 1, n)
    out[:, y0:y1, x0:x1] = ramp.expand(3, y1 - y0, x1 - x0)
    return out
