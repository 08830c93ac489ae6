"""Baseline (solver) and substrate (metrics) images.

Both the I-GOS solver and the causal metrics replace pixels of the input by a
reference image. The same kinds of value are accepted everywhere:

* ``"blur"``: a heavy Gaussian blur of each image (the solver's default and the insertion
  curve's). The reference implementation uses a 51x51 kernel with sigma 50 at 224x224; the
  kernel and sigma are scaled with the image size. Blurring is linear with weights that
  sum to one, so blurring the normalised tensor equals normalising the blurred
  image.
* ``"zeros"``: all zeros (the dataset mean for normalised inputs; the deletion curve's default,
  see :func:`curve_substrates`).
* ``"mean"``: each image's per-channel mean.
* a tensor shaped like the images, ``(B, C, H, W)``, or one image ``(C, H, W)``
  that is used for every image.
* a callable taking the images ``(B, C, H, W)`` and returning such a tensor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Union

import torch
from torch import Tensor

BaselineLike = Union[str, Tensor, Callable[[Tensor], Tensor]]

BASELINE_KINDS = ("blur", "zeros", "mean")

#: What the deletion curve replaces pixels with when no substrate is given (``bench/substrate.py``).
DELETION_SUBSTRATE = "zeros"
#: What the insertion curve starts from when no substrate is given.
INSERTION_SUBSTRATE = "blur"


def curve_substrates(
    substrate: BaselineLike | None = None,
    deletion: BaselineLike | None = None,
    insertion: BaselineLike | None = None,
) -> tuple[BaselineLike, BaselineLike]:
    """The ``(deletion, insertion)`` substrates: each curve's own if given, else ``substrate``, else its default.

    The defaults differ per curve: deleted pixels become :data:`DELETION_SUBSTRATE` (``"zeros"``,
    the dataset mean of normalised inputs), which removes what a blur keeps (a bright blob, a
    position, a colour: at small image sizes the blurred image often keeps the class), and
    insertion starts from :data:`INSERTION_SUBSTRATE` (``"blur"``), on which inserted pixels
    are seen in context rather than as specks on a flat image.

    Example:
        >>> curve_substrates()
        ('zeros', 'blur')
        >>> curve_substrates("blur"), curve_substrates("blur", deletion="mean")
        (('blur', 'blur'), ('mean', 'blur'))
    """
    shared = (DELETION_SUBSTRATE, INSERTION_SUBSTRATE) if substrate is None else (substrate, substrate)
    return (shared[0] if deletion is None else deletion, shared[1] if insertion is None else insertion)


def same_kind(first: BaselineLike, second: BaselineLike) -> bool:
    """Whether two baselines give the same images: one object, or the same kind by name.

    Example:
        >>> same_kind("blur", "blur"), same_kind("blur", "zeros")
        (True, False)
    """
    return first is second or (isinstance(first, str) and isinstance(second, str) and first == second)


def substrate_images(images: Tensor, kinds: tuple[BaselineLike, BaselineLike], deletion_given: bool,
                     insertion_given: bool,
                     made: tuple[tuple[BaselineLike, Tensor], ...] = ()) -> tuple[Tensor, Tensor]:
    """The ``(deletion, insertion)`` substrate images for ``kinds`` (:func:`curve_substrates`), each kind made once.

    ``made`` holds ``(kind, image)`` pairs already made (e.g. the solver's baseline), reused for a kind
    of the same kind (:func:`same_kind`). A curve's own substrate, when given (``*_given``), is named
    after its argument in an error, else ``substrate``.
    """
    pairs = list(made)
    out = []
    fields = ("deletion_substrate", "insertion_substrate")
    for kind, given, field in zip(kinds, (deletion_given, insertion_given), fields):
        image = next((image for other, image in pairs if same_kind(kind, other)), None)
        if image is None:
            image = make_baseline(images, kind, field if given else "substrate")
            pairs.append((kind, image))
        out.append(image)
    return out[0], out[1]


def blur_parameters(height: int, width: int) -> tuple[list[int], list[float]]:
    """Kernel size and sigma of the default blur baseline for an image size.

    Scales the reference setting (kernel 51, sigma 50 at 224) and keeps the
    kernel odd and no larger than the image.

    Example:
        >>> blur_parameters(224, 224)
        ([51, 51], [50.0, 50.0])
        >>> blur_parameters(32, 32)
        ([7, 7], [7.142857142857143, 7.142857142857143])
    """
    kernels, sigmas = [], []
    for size in (width, height):  # torchvision takes (x, y)
        k = int(round(51 * size / 224))
        k = max(3, k if k % 2 == 1 else k + 1)
        limit = size if size % 2 == 1 else size - 1
        kernels.append(max(1, min(k, limit)))
        sigmas.append(max(50.0 * size / 224, 0.1))
    return kernels, sigmas


def blur(images: Tensor) -> Tensor:
    """Heavy Gaussian blur of ``images`` (B, C, H, W), scaled to their size.

    Example:
        >>> x = torch.rand(2, 3, 32, 32)
        >>> blur(x).shape
        torch.Size([2, 3, 32, 32])
    """
    # Imported here: torchvision takes about two seconds to import, which every
    # command-line call would pay even when no blur is asked for.
    from torchvision.transforms.v2.functional import gaussian_blur

    kernel, sigma = blur_parameters(images.shape[-2], images.shape[-1])
    return gaussian_blur(images, kernel_size=kernel, sigma=sigma)


def check_baseline(baseline: BaselineLike, name: str = "baseline") -> None:
    """Raise a clear error if ``baseline`` is not an accepted kind of value.

    Shapes of tensor baselines are checked against the images in
    :func:`make_baseline`; this check needs no images and is cheap enough for
    ``__init__`` methods.

    Example:
        >>> check_baseline("noise")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: `baseline` must be one of 'blur', 'zeros', 'mean', ...; got 'noise'.
    """
    if isinstance(baseline, str):
        if baseline not in BASELINE_KINDS:
            raise ValueError(
                f"`{name}` must be one of {', '.join(repr(k) for k in BASELINE_KINDS)}, "
                f"a tensor shaped like the images, or a callable; got {baseline!r}."
            )
    elif not isinstance(baseline, Tensor) and not callable(baseline):
        raise TypeError(
            f"`{name}` must be a string, a tensor or a callable, got {type(baseline).__name__}."
        )


def make_baseline(images: Tensor, baseline: BaselineLike = "blur", name: str = "baseline") -> Tensor:
    """Return the reference image for each of ``images`` (B, C, H, W).

    The result has the images' shape, dtype and device and carries no graph.

    Example:
        >>> x = torch.rand(4, 3, 16, 16)
        >>> make_baseline(x, "mean").shape
        torch.Size([4, 3, 16, 16])
        >>> bool((make_baseline(x, "zeros") == 0).all())
        True
    """
    check_baseline(baseline, name)
    with torch.no_grad():
        if isinstance(baseline, str):
            if baseline == "blur":
                out = blur(images)
            elif baseline == "zeros":
                out = torch.zeros_like(images)
            else:
                out = images.mean(dim=(-2, -1), keepdim=True).expand_as(images)
        else:
            out = baseline(images) if callable(baseline) and not isinstance(baseline, Tensor) else baseline
            if not isinstance(out, Tensor):
                raise TypeError(
                    f"`{name}` callable must return a tensor, got {type(out).__name__}."
                )
            if out.dim() == images.dim() - 1:
                out = out.unsqueeze(0)
            if out.shape[1:] != images.shape[1:] or out.shape[0] not in (1, images.shape[0]):
                raise ValueError(
                    f"`{name}` must be shaped like the images {tuple(images.shape)} "
                    f"(or one image {tuple(images.shape[1:])}), got {tuple(out.shape)}."
                )
            out = out.to(device=images.device, dtype=images.dtype).expand_as(images)
        return out.detach().contiguous()
