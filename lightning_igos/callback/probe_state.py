"""The probe of :class:`~lightning_igos.callback.IGOSCallback`: where it comes from and what is kept.

The probe is given (a pair, a :class:`~lightning_igos.probe.Probe` or a probe file) or
captured from the first validation batches; it is kept on the CPU and saved in the
callback's checkpoint state, so a resumed run explains the same images.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any, Union

import torch
from torch import Tensor

from lightning_igos.core.validation import check_channel_stats, check_images, check_mask_size, check_targets

# Keys tried, in order, when a validation batch is a dict.
IMAGE_KEYS = ("image", "images", "input", "inputs", "x")
TARGET_KEYS = ("label", "labels", "target", "targets", "y")

__all__ = ["check_bool", "check_choice", "check_display_stats", "check_mask_size", "read_probe", "batch_parts"]

ProbeLike = Union[tuple[Tensor, Any], str, os.PathLike, Any, None]
BatchToProbe = Callable[[Any], tuple[Tensor, Union[Tensor, None]]]


def cpu_copy(tensor: Tensor) -> Tensor:
    """A detached CPU copy that is a normal tensor even if ``tensor`` came from inference mode."""
    with torch.inference_mode(False):
        return tensor.detach().to("cpu", copy=True)


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


def read_probe(probe: ProbeLike) -> tuple[Tensor, Tensor | None, Any, Any] | None:
    """``(images, targets, mean, std)`` on the CPU from a pair, a Probe object or a probe file."""
    if probe is None:
        return None
    mean = std = None
    if isinstance(probe, (str, os.PathLike)):
        from lightning_igos.probe import load_probe

        probe = load_probe(probe)
    if hasattr(probe, "images") and hasattr(probe, "targets"):
        images, targets = probe.images, probe.targets
        mean, std = getattr(probe, "mean", None), getattr(probe, "std", None)
    elif isinstance(probe, (tuple, list)) and len(probe) == 2:
        images, targets = probe
    else:
        raise TypeError(
            "`probe` must be None (capture it from the validation data), an (images, targets) pair, "
            f"a lightning_igos.probe.Probe or the path of a probe file, got {type(probe).__name__}."
        )
    images = cpu_copy(check_images(images, "probe images"))
    if targets is not None:
        targets = cpu_copy(check_targets(targets, images.shape[0], torch.device("cpu"), "probe targets"))
    return images, targets, mean, std


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
