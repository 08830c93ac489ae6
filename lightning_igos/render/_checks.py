"""Argument checks shared by the render modules: every tensor input becomes a detached
float32 CPU tensor, and a bad argument raises ``TypeError``/``ValueError`` naming it."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Union

import torch
from torch import Tensor

from lightning_igos.core.validation import check_channel_stats

ChannelStats = Union[float, Sequence[float], Tensor]
ScalarLike = Union[float, Tensor]


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
    """Per-channel mean or std as a (C,) tensor; a single number applies to every channel
    (the rule of :func:`~lightning_igos.core.validation.check_channel_stats`)."""
    if value is None:
        raise ValueError(f"`{name}` must be a number, a sequence of numbers or a tensor, got None.")
    try:
        return torch.tensor(check_channel_stats(value, name, channels))
    except TypeError as err:  # the render functions raise ValueError for every bad argument
        raise ValueError(str(err)) from err


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
