"""Pillow drawing helpers for the plots and panels: fonts, text fitted to a width, the title
strip over a panel or a grid tile, and a drawn canvas back as a tensor."""

from __future__ import annotations

from collections.abc import Sequence
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


def _title_size(draw: ImageDraw.ImageDraw, text: str, height: int, width: int) -> int:
    """The font size of ``text`` in a title strip ``height`` x ``width``: about 0.68 of the strip, shrunk to fit."""
    pad = max(2, height // 6)
    return _fitting_size(draw, text, max(6, round(height * 0.68)), width - 2 * pad)


def _common_title_size(texts: Sequence[str], height: int, width: int) -> int:
    """One font size for the title strips of several tiles (``height`` x ``width`` each): the largest at
    which every text fits, but not below 0.6 of the full size (a longer text is then cut with "...")."""
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    full = max(6, round(height * 0.68))
    return max(6, round(full * 0.6), min((_title_size(draw, t, height, width) for t in texts), default=full))


def _header(title: str, height: int, width: int, size: int | None = None) -> Tensor:
    """A white strip ``height`` x ``width`` with ``title`` in black at its left: at ``size`` when given
    (cut with "..." if too long), else at the largest size up to 0.68 of the strip that fits."""
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    pad = max(2, height // 6)
    size = _title_size(draw, title, height, width) if size is None else size
    title = _shortened(draw, title, size, width - 2 * pad)
    # Centred by the font's full height, not the text's, so that strips side by side share a baseline.
    _, top, _, bottom = draw.textbbox((0, 0), "Hg(", font=_font(size))
    ink_top = draw.textbbox((0, 0), title or " ", font=_font(size))[1]
    _draw_text(draw, (pad, (height - (bottom - top)) / 2 + ink_top - top), title, size, (0, 0, 0))
    return _from_pil(canvas)


def _header_height(tile: int) -> int:
    """The title strip over a tile ``tile`` pixels high: about 0.15 of the tile, 20 px or more (its
    letters about 0.1 of the tile, 13 px or more)."""
    return max(20, round(tile * 0.15))


def _draw_vertical_text(canvas: Image.Image, centre: tuple[float, float], text: str, size: int, fill: tuple) -> None:
    """Draw ``text`` turned a quarter left (read bottom to top), its ink box centred on ``centre``."""
    draw = ImageDraw.Draw(canvas)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=_font(size))
    strip = Image.new("RGB", (right - left, bottom - top), "white")
    _draw_text(ImageDraw.Draw(strip), (0, 0), text, size, fill)
    strip = strip.transpose(Image.Transpose.ROTATE_90)
    canvas.paste(strip, (round(centre[0] - strip.width / 2), round(centre[1] - strip.height / 2)))
