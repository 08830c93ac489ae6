"""The probe of :class:`~lightning_igos.callback.IGOSCallback`: where it comes from and what is kept.

The probe is given (a pair, a :class:`~lightning_igos.probe.Probe` or a probe file) or
captured from the first validation batches; it is kept on the CPU and saved in the
callback's checkpoint state, so a resumed run explains the same images.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Union

from torch import Tensor

from lightning_igos.core.validation import check_channel_stats

# Keys tried, in order, when a validation batch is a dict.
IMAGE_KEYS = ("image", "images", "input", "inputs", "x")
TARGET_KEYS = ("label", "labels", "target", "targets", "y")

__all__ = ["batch_parts", "check_bool", "check_choice", "check_display_stats"]

BatchToProbe = Callable[[Any], tuple[Tensor, Union[Tensor, None]]]


def check_choice(value: object, name: str, choices: tuple[str, ...]) -> str:
    allowed = ", ".join(repr(c) for c in choices)
    if not isinstance(value, str):
        raise TypeError(f"`{name}` must be a str, one of {allowed}, got {value!r} ({type(value).__name__}).")
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {allowed}, got {value!r}.")
    return value


def check_bool(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"`{name}` must be True or False, got {value!r}.")
    return value


def check_display_stats(
    mean: object, std: object, channels: int | None = None
) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    """``mean``/``std`` for display: both or neither, finite, ``std`` positive, one per channel if known."""
    if (mean is None) != (std is None):
        raise ValueError("`mean` and `std` must be given together (or both left None).")
    return (
        check_channel_stats(mean, "mean", channels),
        check_channel_stats(std, "std", channels, positive=True),
    )


def batch_parts(batch: Any) -> tuple[Tensor, Tensor | None]:
    """Images and (if present) labels of a validation batch: a tensor, a tuple/list or a dict."""
    if isinstance(batch, Tensor):
        return batch, None
    if isinstance(batch, Mapping):
        images = next((batch[k] for k in IMAGE_KEYS if isinstance(batch.get(k), Tensor)), None)
        targets = next((batch[k] for k in TARGET_KEYS if isinstance(batch.get(k), Tensor)), None)
        if images is not None:
            return images, targets
    elif isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], Tensor):
        targets = batch[1] if len(batch) > 1 and isinstance(batch[1], Tensor) else None
        return batch[0], targets
    raise TypeError(
        f"IGOSCallback cannot find the images in a validation batch of type {type(batch).__name__}: "
        "it reads a tensor, an (images, labels, ...) tuple or a dict with an 'image(s)' key. "
        "Pass `probe=(images, targets)` or `batch_to_probe=lambda batch: (images, targets)`."
    )
