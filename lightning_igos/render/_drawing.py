"""Pillow drawing helpers for the plots and panels: fonts, text fitted to a width, the title
strip over a panel or a grid tile, and a drawn canvas back as a tensor."""

from __future__ import annotations

from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont
from torch import Tensor
from torchvision.transforms.functional import pil_to_tensor


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
