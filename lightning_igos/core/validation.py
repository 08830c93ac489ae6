"""Input validation shared by the solver, the metrics, the configuration and the shells.

Every check runs before any expensive work and names the argument at fault: a value of
the wrong type is a ``TypeError``, a value of the right type outside its range a ``ValueError``.
"""

from __future__ import annotations

import math
import numbers
import reprlib
from collections.abc import Sequence
from typing import Union

import torch
from torch import Tensor, nn

from lightning_igos.core.runtime import default_max_batch_size
from lightning_igos.core.scoring import ScoreFn

TargetsLike = Union[int, Sequence[int], Tensor]


def check_images(images: object, name: str = "images") -> Tensor:
    if not isinstance(images, Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, got {type(images).__name__}.")
    if images.dim() != 4:
        raise ValueError(
            f"`{name}` must be a batch shaped (B, C, H, W), got shape {tuple(images.shape)}."
            + (" Add a batch dimension with images.unsqueeze(0)." if images.dim() == 3 else "")
        )
    if not images.is_floating_point():
        raise TypeError(f"`{name}` must be a floating point tensor, got dtype {images.dtype}.")
    if images.shape[0] == 0 or images.shape[-1] < 2 or images.shape[-2] < 2:
        raise ValueError(f"`{name}` must hold at least one image of at least 2x2, got {tuple(images.shape)}.")
    if not torch.isfinite(images).all():
        raise ValueError(f"`{name}` contains NaN or infinite values.")
    return images


def check_targets(targets: object, batch_size: int, device: torch.device, name: str = "targets") -> Tensor:
    """Return targets as a long tensor (B,) on ``device``; an int is used for every image."""
    if isinstance(targets, numbers.Integral) and not isinstance(targets, bool):
        return torch.full((batch_size,), int(targets), dtype=torch.long, device=device)
    if isinstance(targets, Tensor):
        t = targets
    elif isinstance(targets, Sequence) and not isinstance(targets, str):
        try:
            t = torch.as_tensor(list(targets))
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(f"`{name}` must be integers, got {targets!r}.") from err
    else:
        raise TypeError(
            f"`{name}` must be an int, a sequence of ints or an integer tensor (B,), "
            f"got {type(targets).__name__}."
        )
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"`{name}` must hold integer class indices, got dtype {t.dtype}.")
    if t.dim() == 0:
        t = t.expand(batch_size)
    if t.dim() != 1 or t.shape[0] != batch_size:
        raise ValueError(
            f"`{name}` must have one class index per image, shape ({batch_size},), "
            f"got shape {tuple(t.shape)}."
        )
    if (t < 0).any():
        raise ValueError(f"`{name}` must be non-negative class indices, got {t.tolist()}.")
    return t.to(device=device, dtype=torch.long)


# Every check below raises TypeError for a value of the wrong type (2.5 or "2" for an int)
# and ValueError for a value of the right type outside the allowed range.


def check_positive_int(value: object, name: str, minimum: int = 1) -> int:
    """An ``int`` (not a bool) >= ``minimum``.

    Example:
        >>> check_positive_int(3, "iterations")
        3
        >>> check_positive_int(2.5, "num_probe")
        Traceback (most recent call last):
        ...
        TypeError: `num_probe` must be an integer >= 1, got 2.5 (float).
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be an integer >= {minimum}, got {value!r} ({type(value).__name__}).")
    if value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def check_non_negative(value: object, name: str) -> float:
    """A real number (not a bool) >= 0; NaN is a ValueError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a number >= 0, got {value!r} ({type(value).__name__}).")
    if not value >= 0:
        raise ValueError(f"`{name}` must be a number >= 0, got {value!r}.")
    return float(value)


def check_mask_size(mask_size: object, image_size: tuple[int, int] | None = None) -> tuple[int, int] | None:
    """Validate a mask resolution: None, an int >= 1, or a pair ``(h, w)`` of ints >= 1.

    Returns None or the ``(h, w)`` pair. Floats such as ``(2.9, 3.7)`` are rejected (TypeError),
    never truncated. With ``image_size=(H, W)`` the mask must also fit the image (ValueError).

    Example:
        >>> check_mask_size(7), check_mask_size((4, 6)), check_mask_size(None)
        ((7, 7), (4, 6), None)
        >>> check_mask_size((2.9, 3.7))
        Traceback (most recent call last):
        ...
        TypeError: `mask_size` must be None, an int or a pair (h, w) of ints, got (2.9, 3.7).
    """
    if mask_size is None:
        return None
    if isinstance(mask_size, (tuple, list)):
        values = tuple(mask_size)
        if len(values) != 2:
            raise ValueError(f"`mask_size` must be None, an int or a pair (h, w), got {len(values)} values: "
                             f"{mask_size!r}.")
    else:
        values = (mask_size, mask_size)
    if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in values):
        raise TypeError(f"`mask_size` must be None, an int or a pair (h, w) of ints, got {mask_size!r}.")
    if not all(v >= 1 for v in values):
        raise ValueError(f"`mask_size` must be >= 1 in each dimension, got {mask_size!r}.")
    size = (int(values[0]), int(values[1]))
    if image_size is not None and (size[0] > image_size[0] or size[1] > image_size[1]):
        raise ValueError(
            f"`mask_size` must be between 1 and the image size {tuple(image_size)}, got {mask_size!r}."
        )
    return size


def check_autocast_dtype(dtype: object) -> torch.dtype | None:
    """None or a floating point ``torch.dtype`` (``torch.bfloat16``, ``torch.float16``, ...).

    Example:
        >>> check_autocast_dtype(torch.int8)
        Traceback (most recent call last):
        ...
        ValueError: `autocast_dtype` must be a floating point dtype such as torch.bfloat16, got torch.int8.
    """
    if dtype is None:
        return None
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"`autocast_dtype` must be None or a torch.dtype such as torch.bfloat16, got {dtype!r}.")
    if not dtype.is_floating_point:
        raise ValueError(f"`autocast_dtype` must be a floating point dtype such as torch.bfloat16, got {dtype}.")
    return dtype


def check_channel_stats(
    values: object, name: str, channels: int | None = None, positive: bool = False
) -> tuple[float, ...] | None:
    """Per-channel display statistics (``mean`` or ``std``): None, one number, or one number per channel.

    Returns a tuple of floats (one number is repeated for every channel when ``channels`` is
    known). NaN/inf, a count other than ``channels``, or (``positive``) a value <= 0 is a
    ValueError; anything that is not numbers is a TypeError.

    Example:
        >>> check_channel_stats(0.5, "mean", channels=3)
        (0.5, 0.5, 0.5)
        >>> check_channel_stats([0.2, float("nan")], "std")
        Traceback (most recent call last):
        ...
        ValueError: `std` must hold finite numbers, got [0.2, nan].
    """
    if values is None:
        return None
    flat: object = values
    if isinstance(values, Tensor):
        if values.is_complex() or values.dtype == torch.bool:
            raise TypeError(f"`{name}` must hold real numbers, got a tensor of dtype {values.dtype}.")
        flat = values.detach().reshape(-1).tolist()
    if isinstance(flat, numbers.Real) and not isinstance(flat, bool):
        flat = [flat]
    if not isinstance(flat, Sequence) or isinstance(flat, (str, bytes)) or not all(
        isinstance(v, numbers.Real) and not isinstance(v, bool) for v in flat
    ):
        raise TypeError(f"`{name}` must be None, a number or a sequence of numbers per channel, got {values!r}.")
    numbers_ = [float(v) for v in flat]
    if not numbers_:
        raise ValueError(f"`{name}` must hold at least one number, got {values!r}.")
    if not all(math.isfinite(v) for v in numbers_):
        raise ValueError(f"`{name}` must hold finite numbers, got {values!r}.")
    if positive and not all(v > 0 for v in numbers_):
        raise ValueError(f"`{name}` must be positive, got {values!r}.")
    if channels is not None:
        if len(numbers_) == 1:
            numbers_ = numbers_ * channels
        if len(numbers_) != channels:
            raise ValueError(
                f"`{name}` must hold one number per channel ({channels} for these images), got {len(numbers_)}: "
                f"{values!r}."
            )
    return tuple(numbers_)


def check_choice(value: object, name: str, choices: tuple[str, ...]) -> str:
    """``value`` if it is one of ``choices`` (strings).

    Example:
        >>> check_choice("warn", "on_error", ("warn", "raise"))
        'warn'
    """
    allowed = ", ".join(repr(c) for c in choices)
    if not isinstance(value, str):
        raise TypeError(f"`{name}` must be a str, one of {allowed}, got {value!r} ({type(value).__name__}).")
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {allowed}, got {value!r}.")
    return value


def check_bool(value: object, name: str) -> bool:
    """``value`` if it is True or False (not 0/1, not None)."""
    if not isinstance(value, bool):
        raise TypeError(f"`{name}` must be True or False, got {value!r}.")
    return value


def check_box_shape(boxes: object, batch_size: int, name: str = "boxes") -> Tensor:
    """``boxes`` as a detached ``(batch_size, 4)`` real tensor of ``(x0, y0, x1, y1)`` (not copied when a tensor).

    The type and shape rule every box argument shares; a tensor's shape is checked before
    anything is copied. Its values are the caller's to check (finite, ordered, inside the image).

    Example:
        >>> check_box_shape([[0, 0, 4, 4]], 1).shape
        torch.Size([1, 4])
    """
    if isinstance(boxes, Tensor):
        if boxes.layout != torch.strided or boxes.is_nested or boxes.is_quantized:
            raise TypeError(f"`{name}` must be a dense (strided) tensor, got a {boxes.layout} tensor.")
        if boxes.device.type == "meta":
            raise TypeError(f"`{name}` must hold data, got a tensor on the meta device.")
        values = boxes.detach()
    elif isinstance(boxes, Sequence) and not isinstance(boxes, (str, bytes)):
        try:
            values = torch.as_tensor(boxes)
        except (TypeError, ValueError, RuntimeError) as err:
            shown = reprlib.repr(boxes)
            raise TypeError(f"`{name}` must hold numbers, (x0, y0, x1, y1) per image, got {shown}.") from err
    else:
        raise TypeError(f"`{name}` must be a tensor or a sequence shaped (B, 4) of (x0, y0, x1, y1) pixel "
                        f"coordinates, got {type(boxes).__name__}.")
    if values.dtype == torch.bool or values.is_complex():
        raise TypeError(f"`{name}` must hold real pixel coordinates, got dtype {values.dtype}.")
    if tuple(values.shape) != (batch_size, 4):
        raise ValueError(
            f"`{name}` must be shaped (B, 4) with B = {batch_size}, one (x0, y0, x1, y1) box per image, "
            f"got shape {tuple(values.shape)}."
            + (" Add a batch dimension with boxes.unsqueeze(0)." if tuple(values.shape) == (4,) else "")
        )
    return values


def check_boxes(boxes: object, batch_size: int, height: int | None = None, width: int | None = None,
                name: str = "boxes") -> Tensor:
    """One object box per image, checked: a ``(B, 4)`` float32 CPU copy of ``boxes``; the box rule of the probe
    files and of the pointing game.

    A box is ``(x0, y0, x1, y1)`` in the pixel grid of ``height`` x ``width`` images, end
    exclusive: it covers columns ``x0 <= x < x1`` and rows ``y0 <= y < y1``, so it must have
    ``x0 < x1`` and ``y0 < y1`` (a box holds a pixel), and, when ``height`` and ``width`` are given,
    ``0 <= x0`` and ``x1 <= width``, ``0 <= y0`` and ``y1 <= height`` (without them a box may reach
    outside the image, as the pointing game allows). ``boxes`` is a real (integer or
    floating point) tensor or a nested sequence of numbers. A tensor's shape is checked before
    its elements are copied; the value checks run on the float32 copy that is returned (and stored).

    Raises:
        TypeError: not a tensor or sequence of numbers, or a bool, complex, sparse or meta tensor.
        ValueError: a shape other than ``(batch_size, 4)``, NaN or infinite coordinates, an
            empty box or one outside the image; the message names the first image at fault.

    Example:
        >>> check_boxes([[2, 0, 6, 4]], 1, 8, 8)
        tensor([[2., 0., 6., 4.]])
        >>> check_boxes([[2, 0, 9, 4]], 1, 8, 8)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: `boxes` must lie inside the 8x8 images (...), got (2.0, 0.0, 9.0, 4.0) for image 0.
    """
    values = check_box_shape(boxes, batch_size, name)
    values = values.to(device="cpu", dtype=torch.float32, copy=True).contiguous()
    x0, y0, x1, y1 = values.unbind(1)
    rules = [
        (~torch.isfinite(values).all(1), "must hold finite coordinates"),
        ((x0 >= x1) | (y0 >= y1), "must have x0 < x1 and y0 < y1 (x1 and y1 are end exclusive)"),
    ]
    if height is not None and width is not None:
        rules.append(((x0 < 0) | (y0 < 0) | (x1 > width) | (y1 > height),
                      f"must lie inside the {height}x{width} images (0 <= x0 < x1 <= {width}, "
                      f"0 <= y0 < y1 <= {height})"))
    for bad, problem in rules:
        if bad.any():
            index = int(bad.nonzero()[0, 0])
            box = tuple(values[index].tolist())
            raise ValueError(f"`{name}` {problem}, got {box} for image {index}.")
    return values


def check_model(model: object, name: str = "model") -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"`{name}` must be a torch.nn.Module, got {type(model).__name__}.")
    return model


def check_same_device(model: nn.Module, images: Tensor) -> None:
    """The model's parameters and the images must be on one device (the solver runs there)."""
    parameter = next(iter(model.parameters()), None)
    if parameter is not None and parameter.device != images.device:
        raise ValueError(
            f"`images` are on {images.device} but `model` is on {parameter.device}; "
            f"move them to one device, e.g. images.to({str(parameter.device)!r})."
        )


def check_call(
    model: object, images: object, targets: object, max_batch_size: object
) -> tuple[nn.Module, Tensor, Tensor, int]:
    """The checks every explanation and metric function starts with.

    Returns the model, the images, the targets as a long tensor (B,) and the number of
    images per forward pass (``max_batch_size`` or the device's default).
    """
    model = check_model(model)
    images = check_images(images)
    check_same_device(model, images)
    if max_batch_size is not None:
        check_positive_int(max_batch_size, "max_batch_size")
    targets_t = check_targets(targets, images.shape[0], images.device)
    return model, images, targets_t, max_batch_size or default_max_batch_size(images.device)


def check_logits(logits: object, batch_size: int, targets: Tensor, score_fn: ScoreFn | None) -> None:
    """Check one forward's output: (B, classes) finite logits, targets in range."""
    if not isinstance(logits, Tensor):
        raise TypeError(
            f"`model` must return a tensor of logits (B, num_classes), got {type(logits).__name__}. "
            "Wrap the model so that forward returns the classification logits."
        )
    if score_fn is None and (logits.dim() != 2 or logits.shape[0] != batch_size or logits.shape[1] < 2):
        raise ValueError(
            f"`model` must return logits shaped (B, num_classes) with num_classes >= 2 "
            f"(here B = {batch_size}), got shape {tuple(logits.shape)}. "
            "For other heads pass `score_fn(logits, targets) -> (B,) scores`."
        )
    finite = torch.isfinite(logits).reshape(logits.shape[0], -1).all(1) if logits.dim() else torch.isfinite(logits)
    if not finite.all():
        bad = torch.nonzero(~finite).flatten()[:5].tolist()
        raise ValueError(f"`model` returned NaN or infinite outputs on image(s) {bad} of the input images.")
    if score_fn is None and int(targets.max()) >= logits.shape[1]:
        raise ValueError(
            f"`targets` must be class indices below num_classes = {logits.shape[1]} (the model's logits), "
            f"got target {int(targets.max())}."
        )


def as_saliency_batch(saliency: Tensor, batch_size: int | None = None) -> Tensor | None:
    """``saliency`` as ``(B, 1, h, w)`` (a ``(B, h, w)`` map gains its channel), or None when it is shaped
    otherwise or, with ``batch_size``, holds another number of maps: the shape rule of every saliency
    argument (the caller's error names what it needed).

    Example:
        >>> as_saliency_batch(torch.zeros(2, 8, 8)).shape, as_saliency_batch(torch.zeros(2, 3, 8, 8))
        (torch.Size([2, 1, 8, 8]), None)
    """
    s = saliency.unsqueeze(1) if saliency.dim() == 3 else saliency
    if s.dim() != 4 or s.shape[1] != 1 or (batch_size is not None and s.shape[0] != batch_size):
        return None
    return s


def check_saliency(saliency: object, images: Tensor, name: str = "saliency") -> Tensor:
    if not isinstance(saliency, Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, got {type(saliency).__name__}.")
    s = as_saliency_batch(saliency, images.shape[0])
    if s is None:
        raise ValueError(
            f"`{name}` must be shaped (B, 1, h, w) or (B, h, w) with B = {images.shape[0]}, "
            f"got {tuple(saliency.shape)}."
        )
    if s.shape[-2] > images.shape[-2] or s.shape[-1] > images.shape[-1]:
        raise ValueError(
            f"`{name}` resolution {tuple(s.shape[-2:])} must not exceed the images' "
            f"{tuple(images.shape[-2:])}."
        )
    if not s.is_floating_point():
        s = s.float()
    if not torch.isfinite(s).all():
        raise ValueError(f"`{name}` contains NaN or infinite values.")
    return s
