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

Reading a probe (:func:`load_probe`, :func:`read_probe`) never lets a small file take a
large amount of memory: before anything is decompressed the sizes listed in the file's zip
directory must fit the cap, and before the images are copied or checked
(:func:`check_probe_tensors`) they must be a dense floating point tensor whose storage
holds every element it declares (no expanded or zero-stride view), with at most
:data:`MAX_PROBE_ELEMENTS` elements unless the caller raises the cap.

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

#: The most image elements (``B * C * H * W``) a probe read from a file or given to the callback may
#: hold: 64 images of 3x512x512, about 200 MB as float32. A probe is explained at every check (and
#: every explained epoch), so a larger one is usually a mistake; raise the cap on purpose with
#: ``max_elements=`` (:func:`load_probe`, :func:`read_probe`), ``--max-probe-elements`` (the check),
#: or by setting this attribute (the callback's ``probe=``).
MAX_PROBE_ELEMENTS = 64 * 3 * 512 * 512
#: The dtypes probe images may have.
PROBE_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
#: Bytes a probe file may unpack to per allowed image element: float64 images (8) and int64
#: targets (at most one per 2x2 image: 2), plus :data:`ARCHIVE_OVERHEAD_BYTES` for the rest.
ARCHIVE_BYTES_PER_ELEMENT = 10
ARCHIVE_OVERHEAD_BYTES = 1 << 20

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


def load_probe(path: PathLike, *, max_elements: int | None = None) -> Probe:
    """Read a probe file written by :func:`save_probe` (``weights_only``: no code runs).

    Args:
        path: the probe file.
        max_elements: the most image elements (``B * C * H * W``) the probe may hold;
            None: :data:`MAX_PROBE_ELEMENTS`. The file's zip directory is checked against
            it before anything is read, the images before they are copied.

    Raises:
        FileNotFoundError: the file does not exist.
        IsADirectoryError: the path is a directory.
        ValueError: the path is not a regular file (a device, a pipe), or the file is not a
            probe (not a torch file, no format marker, a newer version, content of the wrong
            shape or type), or it is larger than the cap, or its images are an expanded view
            or of an unsupported dtype or layout; the message names the path.

    Example:
        >>> import tempfile, os
        >>> path = save_probe(os.path.join(tempfile.mkdtemp(), "p.pt"), torch.rand(3, 1, 8, 8), [0, 1, 0])
        >>> load_probe(path).targets.tolist()
        [0, 1, 0]
    """
    path = Path(path)
    limit = _element_cap(max_elements)
    if path.is_dir():
        raise IsADirectoryError(f"probe {str(path)!r} is a directory, not a probe file.")
    if not path.exists():
        raise FileNotFoundError(f"probe file {str(path)!r} does not exist.")
    if not path.is_file():
        raise ValueError(
            f"probe {str(path)!r} is not a regular file (a device, pipe or socket); "
            "expected a probe file written by lightning_igos.probe.save_probe."
        )
    content = _read_torch_file(path, limit)
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
        check_probe_tensors(content["images"], content["targets"], max_elements=limit)
        return Probe(content["images"], content["targets"], content.get("mean"), content.get("std"))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{str(path)!r} is not a valid lightning-igos probe: {err}") from err


def _element_cap(max_elements: object) -> int:
    """``max_elements``, checked; None reads :data:`MAX_PROBE_ELEMENTS` now (so setting it takes effect)."""
    if max_elements is None:
        max_elements = MAX_PROBE_ELEMENTS
    if not isinstance(max_elements, numbers.Integral) or isinstance(max_elements, bool) or max_elements < 1:
        raise ValueError(f"`max_elements` must be a positive integer or None, got {max_elements!r}.")
    return int(max_elements)


def _raise_the_cap(limit: int) -> str:
    return (f"the cap is {limit:,} image elements (by default MAX_PROBE_ELEMENTS, 64 images of 3x512x512); "
            "raise it on purpose with --max-probe-elements N (lightning-igos check), max_elements=N "
            "(load_probe, read_probe) or lightning_igos.probe.MAX_PROBE_ELEMENTS = N (the callback)")


def check_probe_tensors(images: object, targets: object = None, *, max_elements: int | None = None) -> None:
    """Refuse probe tensors that would take far more memory than they hold, before anything copies them.

    Checked, without reading a single element: ``images`` (and ``targets`` when it is a
    tensor) are dense (strided, not sparse, quantized or nested) tensors whose storage
    holds every element they declare, so an expanded or zero-stride view (a few bytes on
    disk, gigabytes once copied) is refused; images of a floating dtype have one of
    :data:`PROBE_DTYPES` (float8 cannot be checked or explained); and neither holds more
    than ``max_elements`` elements (None: :data:`MAX_PROBE_ELEMENTS`). Anything else that
    is wrong (not a tensor, a wrong shape, NaN values) is left to the later checks.

    Raises:
        TypeError: an unsupported layout or dtype.
        ValueError: an expanded view, or more elements than the cap (the message says how
            to raise it).

    Example:
        >>> check_probe_tensors(torch.zeros(2, 3, 8, 8), torch.tensor([0, 1]))
        >>> check_probe_tensors(torch.zeros(1, 1, 1, 1).expand(2, 3, 8, 8))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: probe images declare 384 elements (shape (2, 3, 8, 8)) but their storage holds 1: ...
    """
    limit = _element_cap(max_elements)
    for name, tensor in (("probe images", images), ("probe targets", targets)):
        if not isinstance(tensor, Tensor):
            continue
        if tensor.layout != torch.strided or tensor.is_nested or tensor.is_quantized:
            kind = "nested" if tensor.is_nested else "quantized" if tensor.is_quantized else str(tensor.layout)
            raise TypeError(f"{name} must be a dense (strided) tensor, got a {kind} tensor; "
                            "convert it with .to_dense() (or .dequantize()) before saving.")
        if tensor.device.type == "meta":
            raise TypeError(f"{name} must hold data, got a tensor on the meta device.")
        if name == "probe images" and tensor.is_floating_point() and tensor.dtype not in PROBE_DTYPES:
            allowed = ", ".join(str(d).replace("torch.", "") for d in PROBE_DTYPES)
            raise TypeError(f"{name} must be {allowed}, got dtype {str(tensor.dtype).replace('torch.', '')}; "
                            "convert them with images.float() before saving.")
        count = tensor.numel()
        held = tensor.untyped_storage().nbytes() // max(tensor.element_size(), 1)
        if count > 0 and held < count:
            raise ValueError(
                f"{name} declare {count} elements (shape {tuple(tensor.shape)}) but their storage holds {held}: "
                f"an expanded or overlapping view; save a dense copy ({name.split()[-1]}.contiguous())."
            )
        if count > limit:
            raise ValueError(f"{name} declare {count:,} elements (shape {tuple(tensor.shape)}), more than allowed: "
                             f"{_raise_the_cap(limit)}.")


def _read_torch_file(path: Path, max_elements: int = MAX_PROBE_ELEMENTS) -> object:
    if not zipfile.is_zipfile(path):  # torch.save has written zip archives since torch 1.6
        raise ValueError(f"{str(path)!r} is not a lightning-igos probe: it is not a file written by torch.save.")
    _check_archive_size(path, max_elements)
    try:
        return load_weights_only(path)
    except Exception as err:  # any failure to read means "not a probe"; the cause goes in the message
        raise ValueError(
            f"{str(path)!r} is not a lightning-igos probe: it could not be read as a torch file "
            f"with weights_only=True, which runs no code ({load_failure_reason(err)})."
        ) from err


def _check_archive_size(path: Path, max_elements: int) -> None:
    """The sizes the zip directory lists (what reading allocates) must fit the cap, before anything is inflated."""
    limit = ARCHIVE_BYTES_PER_ELEMENT * max_elements + ARCHIVE_OVERHEAD_BYTES
    try:
        with zipfile.ZipFile(path) as archive:
            total = sum(max(info.file_size, 0) for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        raise ValueError(f"{str(path)!r} is not a lightning-igos probe: its zip directory cannot be read "
                         f"({type(err).__name__}: {err}).") from err
    if total > limit:
        raise ValueError(
            f"{str(path)!r} unpacks to {total:,} bytes, more than a probe within the cap may take "
            f"({limit:,} bytes); {_raise_the_cap(max_elements)}."
        )


def _describe(content: object) -> str:
    if isinstance(content, Mapping):
        keys = ", ".join(repr(k) for k in list(content)[:6])
        marker = content.get("format")
        return f"a dict with keys [{keys}]" + (f" and format {marker!r}" if marker is not None else "")
    if isinstance(content, Tensor):
        return f"a tensor of shape {tuple(content.shape)}"
    return f"a {type(content).__name__}"


ProbeLike = Union[Probe, tuple, list, str, os.PathLike, None]


def read_probe(probe: ProbeLike, *, max_elements: int | None = None) -> tuple[Tensor, Tensor | None, Any, Any] | None:
    """``(images, targets, mean, std)`` on the CPU from a pair, a :class:`Probe` or a probe file; None for None.

    Targets may be None (a pair ``(images, None)``); ``mean``/``std`` are the probe's display
    normalisation (None for a pair). Copies are normal tensors even under inference mode.
    Before anything is copied the tensors pass :func:`check_probe_tensors` (dense, at most
    ``max_elements`` image elements; None: :data:`MAX_PROBE_ELEMENTS`).

    Example:
        >>> images, targets, mean, std = read_probe((torch.zeros(2, 3, 4, 4), [1, 0]))
        >>> targets.tolist(), mean
        ([1, 0], None)
    """
    if probe is None:
        return None
    mean = std = None
    if isinstance(probe, (str, os.PathLike)):
        probe = load_probe(probe, max_elements=max_elements)
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
    check_probe_tensors(images, targets, max_elements=max_elements)
    images = cpu_copy(check_images(images, "probe images"))
    if targets is not None:
        targets = cpu_copy(check_targets(targets, images.shape[0], torch.device("cpu"), "probe targets"))
    return images, targets, mean, std
