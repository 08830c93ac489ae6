"""Probe files: a fixed batch of images to explain, saved once and checked in CI.

A probe file is a torch file (``torch.save``) holding one plain dict, so it
loads with ``torch.load(..., weights_only=True)`` and never runs pickled code::

    {
        "format": "lightning-igos-probe",
        "version": 1,
        "images": Tensor (B, C, H, W), floating point, as the model takes them,
        "targets": Tensor (B,), int64, the class to explain per image,
        "mean": [float] * C or None,   # display normalisation: image = x * std + mean
        "std": [float] * C or None,
    }

Example:
    >>> import tempfile, os, torch
    >>> path = os.path.join(tempfile.mkdtemp(), "probe.pt")
    >>> _ = save_probe(path, torch.randn(2, 3, 8, 8), [0, 1], mean=(0.5,) * 3, std=(0.25,) * 3)
    >>> probe = load_probe(path)
    >>> probe.images.shape, probe.targets.tolist(), probe.mean
    (torch.Size([2, 3, 8, 8]), [0, 1], (0.5, 0.5, 0.5))
"""

from __future__ import annotations

import numbers
import os
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import torch
from torch import Tensor

from lightning_igos.core.runtime import cpu_copy, load_failure_reason, load_weights_only
from lightning_igos.core.validation import TargetsLike, check_channel_stats, check_images, check_targets

FORMAT = "lightning-igos-probe"
VERSION = 1

PathLike = str | os.PathLike


@dataclass(frozen=True)
class Probe:
    """A batch of probe images with the class to explain for each.

    Attributes:
        images: ``(B, C, H, W)`` floating point images as the model takes them.
        targets: ``(B,)`` int64 class indices.
        mean, std: per-channel display normalisation (``image = x * std + mean``), or None;
            a single number is used for every channel.

    Construction validates and copies the inputs (to the CPU, contiguous), so a probe
    never keeps a larger tensor alive through a view.

    Example:
        >>> probe = Probe(torch.zeros(2, 3, 4, 4), torch.tensor([1, 0]))
        >>> len(probe), probe.targets.dtype
        (2, torch.int64)
    """

    images: Tensor
    targets: Tensor
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.targets, numbers.Integral):
            raise TypeError("`targets` must hold one class index per image, got a single int.")
        images = check_images(self.images).detach().to("cpu").clone().contiguous()
        targets = check_targets(self.targets, images.shape[0], torch.device("cpu"))
        channels = images.shape[1]
        object.__setattr__(self, "images", images)
        object.__setattr__(self, "targets", targets.clone().contiguous())
        object.__setattr__(self, "mean", check_channel_stats(self.mean, "mean", channels))
        object.__setattr__(self, "std", check_channel_stats(self.std, "std", channels, positive=True))

    def __len__(self) -> int:
        return self.images.shape[0]


def save_probe(
    path: PathLike,
    images: Tensor,
    targets: TargetsLike,
    mean: Sequence[float] | float | None = None,
    std: Sequence[float] | float | None = None,
) -> Path:
    """Write a probe file (format in the module docstring); returns its path.

    Args:
        path: where to write; missing parent folders are created.
        images: ``(B, C, H, W)`` floating point images, normalised as the model takes them.
        targets: one class index per image (sequence or integer tensor ``(B,)``).
        mean, std: per-channel normalisation of ``images`` (one number serves every channel),
            used only to display them.

    Raises:
        TypeError, ValueError: for images that are not a finite float batch, targets of
            the wrong length or dtype, or mean/std without one value per channel.

    Example:
        >>> import tempfile, os
        >>> save_probe(os.path.join(tempfile.mkdtemp(), "p.pt"), torch.rand(1, 3, 8, 8), [2]).name
        'p.pt'
    """
    probe = Probe(images, targets, _as_tuple(mean), _as_tuple(std))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    content = {
        "format": FORMAT,
        "version": VERSION,
        "images": probe.images,
        "targets": probe.targets,
        "mean": None if probe.mean is None else list(probe.mean),
        "std": None if probe.std is None else list(probe.std),
    }
    torch.save(content, path)
    return path


def _as_tuple(values: object) -> object:
    return tuple(values) if isinstance(values, list) else values


def load_probe(path: PathLike) -> Probe:
    """Read a probe file written by :func:`save_probe` (``weights_only``: no code runs).

    Raises:
        FileNotFoundError: the file does not exist.
        IsADirectoryError: the path is a directory.
        ValueError: the file is not a probe (not a torch file, no format marker, a newer
            version, or content of the wrong shape or type); the message names the path.

    Example:
        >>> import tempfile, os
        >>> path = save_probe(os.path.join(tempfile.mkdtemp(), "p.pt"), torch.rand(3, 1, 8, 8), [0, 1, 0])
        >>> load_probe(path).targets.tolist()
        [0, 1, 0]
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"probe {str(path)!r} is a directory, not a probe file.")
    if not path.is_file():
        raise FileNotFoundError(f"probe file {str(path)!r} does not exist.")
    content = _read_torch_file(path)
    if not isinstance(content, Mapping) or content.get("format") != FORMAT:
        raise ValueError(
            f"{str(path)!r} is not a lightning-igos probe: expected a dict with format {FORMAT!r}, "
            f"got {_describe(content)}. Write probes with lightning_igos.probe.save_probe."
        )
    version = content.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= VERSION:
        raise ValueError(
            f"{str(path)!r} is a lightning-igos probe of version {version!r}; this lightning_igos reads "
            f"version {VERSION}. Upgrade lightning-igos or save the probe again."
        )
    missing = [key for key in ("images", "targets") if key not in content]
    if missing:
        raise ValueError(f"{str(path)!r} is not a valid lightning-igos probe: missing {', '.join(missing)}.")
    try:
        return Probe(content["images"], content["targets"], content.get("mean"), content.get("std"))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{str(path)!r} is not a valid lightning-igos probe: {err}") from err


def _read_torch_file(path: Path) -> object:
    if not zipfile.is_zipfile(path):  # torch.save has written zip archives since torch 1.6
        raise ValueError(f"{str(path)!r} is not a lightning-igos probe: it is not a file written by torch.save.")
    try:
        return load_weights_only(path)
    except Exception as err:  # any failure to read means "not a probe"; the cause goes in the message
        raise ValueError(
            f"{str(path)!r} is not a lightning-igos probe: it could not be read as a torch file "
            f"with weights_only=True, which runs no code ({load_failure_reason(err)})."
        ) from err


def _describe(content: object) -> str:
    if isinstance(content, Mapping):
        keys = ", ".join(repr(k) for k in list(content)[:6])
        marker = content.get("format")
        return f"a dict with keys [{keys}]" + (f" and format {marker!r}" if marker is not None else "")
    if isinstance(content, Tensor):
        return f"a tensor of shape {tuple(content.shape)}"
    return f"a {type(content).__name__}"


ProbeLike = Union[Probe, tuple, list, str, os.PathLike, None]


def read_probe(probe: ProbeLike) -> tuple[Tensor, Tensor | None, Any, Any] | None:
    """``(images, targets, mean, std)`` on the CPU from a pair, a :class:`Probe` or a probe file; None for None.

    Targets may be None (a pair ``(images, None)``); ``mean``/``std`` are the probe's display
    normalisation (None for a pair). Copies are normal tensors even under inference mode.

    Example:
        >>> images, targets, mean, std = read_probe((torch.zeros(2, 3, 4, 4), [1, 0]))
        >>> targets.tolist(), mean
        ([1, 0], None)
    """
    if probe is None:
        return None
    mean = std = None
    if isinstance(probe, (str, os.PathLike)):
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
