"""Image tensors as 8-bit pictures: a PIL image, PNG bytes, or a PNG file.

:func:`to_pil_image` is the one place where a [0, 1] tensor becomes 8-bit pixels; the
loggers and the HTML report encode through it, so every output rounds the same way.

Example:
    >>> import torch
    >>> png_bytes(torch.rand(3, 2, 2)).startswith(b"\\x89PNG")
    True
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor
from torchvision.transforms.functional import to_pil_image as _uint8_to_pil

from lightning_igos.render._checks import _grey_to_rgb, _image_batch


def to_pil_image(image: Tensor) -> Image.Image:
    """An image in [0, 1] as an 8-bit PIL image with its channels as they are.

    Values are clamped to [0, 1] and rounded to the nearest of 256 levels; the tensor may
    have any real dtype, live on any device and carry gradients. One channel gives a grey
    (``"L"``) image, three an ``"RGB"`` one and four ``"RGBA"``; nothing else is checked
    (:func:`save_png` checks its input and shows other channel counts as RGB).

    Args:
        image: (C, H, W) with 1 to 4 channels, or (H, W) for grey.

    Returns:
        A ``W`` x ``H`` PIL image.

    Example:
        >>> import torch
        >>> picture = to_pil_image(torch.tensor([[[0.0, 0.5, 1.0, 2.0]]]))
        >>> picture.mode, picture.size, list(picture.getdata())
        ('L', (4, 1), [0, 128, 255, 255])
        >>> to_pil_image(torch.rand(3, 4, 5)).mode
        'RGB'
    """
    if not isinstance(image, Tensor):
        raise TypeError(f"`image` must be a torch.Tensor, got {type(image).__name__}.")
    return _uint8_to_pil(image.detach().float().cpu().clamp(0, 1).mul(255).round().to(torch.uint8))


def png_bytes(image: Tensor) -> bytes:
    """The PNG file of :func:`to_pil_image` (``image``), as bytes.

    Example:
        >>> import io, torch
        >>> from PIL import Image
        >>> data = png_bytes(torch.rand(1, 4, 6))
        >>> data[:8]
        b'\\x89PNG\\r\\n\\x1a\\n'
        >>> Image.open(io.BytesIO(data)).size
        (6, 4)
    """
    buffer = io.BytesIO()
    to_pil_image(image).save(buffer, format="PNG")
    return buffer.getvalue()


def save_png(image: Tensor, path: str | os.PathLike) -> None:
    """Write a (3, H, W) (or grey (1, H, W); other channel counts as in :func:`unnormalize`)
    image in [0, 1] to ``path`` as 8-bit RGB PNG.

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
    to_pil_image(_grey_to_rgb(img)[0]).save(target, format="PNG")
