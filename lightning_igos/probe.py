"""Probe files: a fixed batch of images to explain, saved once and checked in CI.

A probe file is a torch file (``torch.save``) holding one plain dict, so it
loads with ``torch.load(..., weights_only=True)`` and never runs pickled code::

    {
        "format": "lightning-igos-probe",
        "version": 1 or 2,             # 2 exactly when the file carries boxes
        "images": Tensor (B, C, H, W), floating point, as the model takes them,
        "targets": Tensor (B,), int64, the class to explain per image,
        "mean": [float] * C or None,   # display normalisation: image = x * std + mean
        "std": [float] * C or None,
        "boxes": Tensor (B, 4), float32,   # only in version 2 files
    }

``boxes`` (optional) holds one object box per image as ``(x0, y0, x1, y1)`` in the images'
own pixel grid, end exclusive (the convention of :class:`lightning_igos.demo.synthetic.ObjectImages`),
for localisation metrics such as the pointing game. A probe without boxes is written exactly
as before, as version 1 (:data:`VERSION_WITHOUT_BOXES`), so releases that predate boxes still
read it; a probe with boxes is version 2 (:data:`VERSION`), which those releases refuse with a
clear message instead of silently dropping the boxes. Every version 1 file loads, with
``boxes`` None.

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
from lightning_igos.core.validation import (
    TargetsLike,
    check_boxes,
    check_channel_stats,
    check_images,
    check_targets,
)

FORMAT = "lightning-igos-probe"
#: The newest probe version this module reads; files with boxes are written with it.
VERSION = 2
#: The version of files without boxes, unchanged since the first release so every reader loads them.
VERSION_WITHOUT_BOXES = 1

#: The most image elements (``B * C * H * W``) a probe read from a file or given to the callback may
#: hold: 64 images of 3x512x512, about 200 MB as float32. A probe is explained at every check (and
#: every explained epoch), so a larger one is usually a mistake; raise the cap on purpose with
#: ``max_elements=`` (:func:`load_probe`, :func:`read_probe`), ``--max-probe-elements`` (the check),
#: or by setting this attribute (the callback's ``probe=`` and the probe it captures).
MAX_PROBE_ELEMENTS = 64 * 3 * 512 * 512
#: The most class indices a probe's repr lists.
MAX_LISTED_CLASSES = 10
#: The dtypes probe images may have.
PROBE_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
#: Bytes a probe file may unpack to per allowed image element: float64 images (8), int64
#: targets (at most one per 2x2 image: 2) and float32 boxes (16 bytes per 2x2 image: 4), plus
#: :data:`ARCHIVE_OVERHEAD_BYTES` for the rest.
ARCHIVE_BYTES_PER_ELEMENT = 14
ARCHIVE_OVERHEAD_BYTES = 1 << 20

PathLike = str | os.PathLike
#: Object boxes as :func:`check_boxes` takes them: a ``(B, 4)`` tensor or nested sequence of numbers.
BoxesLike = Union[Tensor, Sequence[Sequence[float]]]


@dataclass(frozen=True)
class Probe:
    """A batch of probe images with the class to explain for each.

    Attributes:
        images: ``(B, C, H, W)`` floating point images as the model takes them.
        targets: ``(B,)`` int64 class indices.
        mean, std: per-channel display normalisation (``image = x * std + mean``), or None;
            a single number is used for every channel.
        boxes: ``(B, 4)`` float32 object boxes ``(x0, y0, x1, y1)`` in pixels, end exclusive
            (see :func:`check_boxes`), or None.

    Construction validates and copies the inputs (to the CPU, contiguous), so a probe
    never keeps a larger tensor alive through a view.

    Example:
        >>> probe = Probe(torch.zeros(2, 3, 4, 4), torch.tensor([1, 0]))
        >>> len(probe), probe.targets.dtype, probe.boxes
        (2, torch.int64, None)
        >>> Probe(torch.zeros(1, 3, 4, 4), [0], boxes=[[0, 1, 2, 4]]).boxes
        tensor([[0., 1., 2., 4.]])
    """

    images: Tensor
    targets: Tensor
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    boxes: Tensor | None = None

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
        if self.boxes is not None:
            height, width = images.shape[-2:]
            object.__setattr__(self, "boxes", check_boxes(self.boxes, images.shape[0], height, width))

    def __len__(self) -> int:
        return self.images.shape[0]

    def __repr__(self) -> str:
        """What the probe holds, not its pixels: count, image shape, dtype, classes and boxes.

        Example:
            >>> Probe(torch.zeros(3, 3, 8, 8), [2, 0, 2], boxes=[[0, 0, 4, 4]] * 3)
            Probe(3 images of 3x8x8, float32, classes [0, 2] (1-2 per class), boxes)
        """
        return probe_summary(self.images, self.targets, self.boxes, type(self).__name__)


def save_probe(
    path: PathLike,
    images: Tensor,
    targets: TargetsLike,
    mean: Sequence[float] | float | None = None,
    std: Sequence[float] | float | None = None,
    boxes: BoxesLike | None = None,
) -> Path:
    """Write a probe file (format in the module docstring); returns its path.

    Args:
        path: where to write; missing parent folders are created. The file is replaced
            atomically: written to a temporary file in the same folder, flushed, then moved
            onto ``path``, so an interrupted write leaves the previous file whole.
        images: ``(B, C, H, W)`` floating point images, normalised as the model takes them.
        targets: one class index per image (sequence or integer tensor ``(B,)``).
        mean, std: per-channel normalisation of ``images`` (one number serves every channel),
            used only to display them.
        boxes: one object box per image, ``(B, 4)`` as ``(x0, y0, x1, y1)`` pixel coordinates
            of ``images``, end exclusive (integers or floats; stored as float32), or None.
            A file with boxes is format version 2, one without is version 1.

    Raises:
        TypeError, ValueError: for images that are not a finite float batch, targets of
            the wrong length or dtype, mean/std without one value per channel, or boxes
            that :func:`check_boxes` refuses; nothing is written then.

    Example:
        >>> import tempfile, os
        >>> save_probe(os.path.join(tempfile.mkdtemp(), "p.pt"), torch.rand(1, 3, 8, 8), [2]).name
        'p.pt'
        >>> path = os.path.join(tempfile.mkdtemp(), "b.pt")
        >>> load_probe(save_probe(path, torch.rand(1, 3, 8, 8), [2], boxes=[[1, 2, 5, 8]])).boxes
        tensor([[1., 2., 5., 8.]])
    """
    probe = Probe(images, targets, _as_tuple(mean), _as_tuple(std), boxes)
    path = Path(path)
    content: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION_WITHOUT_BOXES if probe.boxes is None else VERSION,
        "images": probe.images,
        "targets": probe.targets,
        "mean": None if probe.mean is None else list(probe.mean),
        "std": None if probe.std is None else list(probe.std),
    }
    if probe.boxes is not None:
        content["boxes"] = probe.boxes
    # The same atomic write as the check's outputs: a temporary file in the folder, then os.replace,
    # so a reader (or a kill mid-write) never sees half a probe and the old file stays whole until then.
    from lightning_igos.cli.outputs import write_with

    write_with(path, lambda temporary: torch.save(content, temporary))
    return path


def probe_summary(images: Tensor, targets: Tensor | None, boxes: Tensor | None = None, name: str = "Probe") -> str:
    """One line that says what a probe holds: count, image shape, dtype, classes (images per class) and boxes.

    Example:
        >>> probe_summary(torch.zeros(4, 1, 16, 16), torch.tensor([3, 3, 3, 3]))
        'Probe(4 images of 1x16x16, float32, classes [3] (4 per class), no boxes)'
        >>> probe_summary(torch.zeros(1, 3, 8, 8, dtype=torch.float16), None)
        'Probe(1 image of 3x8x8, float16, no targets, no boxes)'
    """
    count = images.shape[0]
    shape = "x".join(str(size) for size in images.shape[1:])
    dtype = str(images.dtype).replace("torch.", "")
    if targets is None:
        classes = "no targets"
    else:
        values, counts = torch.unique(targets, return_counts=True)
        listed = [str(v) for v in values.tolist()[:MAX_LISTED_CLASSES]] + (["..."] if len(values) > MAX_LISTED_CLASSES
                                                                           else [])
        low, high = int(counts.min()), int(counts.max())
        classes = f"classes [{', '.join(listed)}] ({low if low == high else f'{low}-{high}'} per class)"
    plural = "s" if count != 1 else ""
    boxed = "boxes" if boxes is not None else "no boxes"
    return f"{name}({count} image{plural} of {shape}, {dtype}, {classes}, {boxed})"


def _as_tuple(values: object) -> object:
    return tuple(values) if isinstance(values, list) else values


def load_probe(path: PathLike, *, max_elements: int | None = None) -> Probe:
    """Read a probe file written by :func:`save_probe` (``weights_only``: no code runs).

    Files of version 1 and 2 load; the probe's ``boxes`` are None unless the file has them.

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
            shape or type, boxes that :func:`check_boxes` refuses), or it is larger than the cap,
            or its images are an expanded view or of an unsupported dtype or layout; the message
            names the path.

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
            f"versions 1 to {VERSION}. Upgrade lightning-igos or save the probe again."
        )
    missing = [key for key in ("images", "targets") if key not in content]
    if missing:
        raise ValueError(f"{str(path)!r} is not a valid lightning-igos probe: missing {', '.join(missing)}.")
    try:
        check_probe_tensors(content["images"], content["targets"], max_elements=limit)
        return Probe(content["images"], content["targets"], content.get("mean"), content.get("std"),
                     content.get("boxes"))
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


def check_probe_elements(num_images: int, image_shape: Sequence[int], what: str = "the probe") -> None:
    """Refuse a probe of ``num_images`` images of ``image_shape`` (``C, H, W``) past :data:`MAX_PROBE_ELEMENTS`.

    For a probe that is still to be gathered (the callback's capture): checked from the first
    batch's image shape, before any image is kept.

    Raises:
        ValueError: more elements than the cap; the message says how to raise it.

    Example:
        >>> check_probe_elements(8, (3, 224, 224))
        >>> check_probe_elements(1000, (3, 512, 512))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: the probe would hold 786,432,000 image elements (1000 images of 3x512x512), more than allowed: ...
    """
    limit = _element_cap(None)
    per_image = 1
    for size in image_shape:
        per_image *= int(size)
    count = int(num_images) * per_image
    if count > limit:
        shape = "x".join(str(int(size)) for size in image_shape)
        raise ValueError(f"{what} would hold {count:,} image elements ({num_images} images of {shape}), more than "
                         f"allowed: {_raise_the_cap(limit)}; or take fewer images (num_probe).")


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


def read_probe(probe: ProbeLike, *, max_elements: int | None = None) -> ProbeParts | None:
    """The probe on the CPU from a pair ``(images, targets)``, a triple ``(images, targets, boxes)``, a
    :class:`Probe` or a probe file; None for None.

    Targets may be None (a pair ``(images, None)``: the callback's ``target="pred"``);
    ``mean``/``std`` are the probe's display normalisation (None for a pair). Copies are
    normal tensors even under inference mode. Before anything is copied the tensors pass
    :func:`check_probe_tensors` (dense, at most ``max_elements`` image elements; None:
    :data:`MAX_PROBE_ELEMENTS`); boxes pass :func:`check_boxes`.

    Example:
        >>> probe = read_probe((torch.zeros(2, 3, 4, 4), [1, 0], [[0, 0, 2, 2], [1, 1, 4, 4]]))
        >>> probe.targets.tolist(), probe.mean, probe.boxes.shape
        ([1, 0], None, torch.Size([2, 4]))
    """
    if probe is None:
        return None
    mean = std = boxes = None
    if isinstance(probe, (str, os.PathLike)):
        probe = load_probe(probe, max_elements=max_elements)
    if hasattr(probe, "images") and hasattr(probe, "targets"):
        images, targets = probe.images, probe.targets
        mean, std = getattr(probe, "mean", None), getattr(probe, "std", None)
        boxes = getattr(probe, "boxes", None)
    elif isinstance(probe, (tuple, list)) and len(probe) in (2, 3):
        images, targets = probe[0], probe[1]
        boxes = probe[2] if len(probe) == 3 else None
    else:
        raise TypeError(
            "`probe` must be None (capture it from the validation data), an (images, targets) pair, an "
            "(images, targets, boxes) triple, a lightning_igos.probe.Probe or the path of a probe file, "
            f"got {type(probe).__name__}."
        )
    check_probe_tensors(images, targets, max_elements=max_elements)
    images = cpu_copy(check_images(images, "probe images"))
    if targets is not None:
        targets = cpu_copy(check_targets(targets, images.shape[0], torch.device("cpu"), "probe targets"))
    if boxes is not None:
        boxes = cpu_copy(check_boxes(boxes, images.shape[0], *images.shape[-2:]))
    return ProbeParts(images, targets, mean, std, boxes)


@dataclass
class ProbeParts:
    """What :func:`read_probe` returns: a probe's parts, targets possibly None (not validated as a Probe)."""

    images: Tensor
    targets: Tensor | None
    mean: Any = None
    std: Any = None
    boxes: Tensor | None = None
