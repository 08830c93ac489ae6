"""Model-randomisation sanity check (Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018).

An explanation that describes the model must change when the model's learned weights are
destroyed. :func:`sanity_check` explains a batch with the model and with
:func:`randomized_copy` of it and returns the per-image Spearman rank correlation of the two
maps (:func:`spearman`): near 1 means the explanation barely depends on the weights (it acts
like an edge detector), near 0 means it does.

Which layers are re-initialised, for any model: :func:`randomized_copy` walks
``model.modules()`` in registration order and collects the modules that hold parameters of
their own and have a ``reset_parameters`` method (``Linear``, ``Conv*``, ``BatchNorm*``,
``LayerNorm``, ...). It re-initialises the last of them (the classifier head) and the last
quarter of them, at least the last 2 (the top blocks), by calling ``reset_parameters()``
(batch norms also reset their running statistics). The draws come from a forked RNG seeded from
the ``generator``, so the global RNG is left as it was; a model with no such module is a
``ValueError``. The user's model is never touched: the copy is a deep copy.

:func:`edge_map` is the control: ``|image - blur(image)|`` summed over the channels, a map that
ignores the model, so its correlation is exactly 1; a real explanation must score clearly below it.

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 2))
    >>> result = sanity_check(model, torch.randn(2, 3, 8, 8), [0, 1], explainer=edge_explainer)
    >>> result.correlation.tolist()
    [1.0, 1.0]
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lightning_igos.core.baselines import blur
from lightning_igos.core.causal import pixel_ranks
from lightning_igos.core.config import IGOSConfig
from lightning_igos.core.runtime import usable
from lightning_igos.core.validation import TargetsLike, check_images, check_model, check_targets

__all__ = ["SanityResult", "edge_explainer", "edge_map", "randomized_copy", "resettable_modules", "sanity_check",
           "spearman"]

#: An explainer: ``explainer(model, images, targets)`` returns a ``(B, 1, H, W)`` saliency.
Explainer = Callable[[nn.Module, Tensor, Tensor], Tensor]


def resettable_modules(model: nn.Module) -> list[nn.Module]:
    """The modules of ``model`` with parameters of their own and a ``reset_parameters`` method, in order."""
    return [m for m in model.modules()
            if callable(getattr(m, "reset_parameters", None)) and any(True for _ in m.parameters(recurse=False))]


def randomized_copy(model: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """A deep copy of ``model`` with its head and last blocks re-initialised (the rule is in the module docstring).

    ``generator`` (default: a CPU generator seeded with 0) seeds the re-initialisation; the global
    RNG and ``model`` are left as they were.

    Example:
        >>> model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4), nn.Linear(4, 2))
        >>> copy_ = randomized_copy(model)
        >>> [bool(torch.equal(a, b)) for a, b in zip(model.parameters(), copy_.parameters())][::2]
        [True, False, False]
    """
    model = check_model(model)
    if not resettable_modules(model):
        raise ValueError(
            f"`model` ({type(model).__name__}) has no module with parameters and a `reset_parameters` method "
            "(Linear, Conv*, BatchNorm*, ...): nothing can be re-initialised for the sanity check."
        )
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    randomized = copy.deepcopy(model)
    modules = resettable_modules(randomized)
    count = min(len(modules), max(2, math.ceil(len(modules) / 4)))
    devices = sorted({p.device.index or 0 for p in randomized.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        torch.manual_seed(seed)
        for module in modules[-count:]:
            module.reset_parameters()
    return randomized


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Per-image Spearman rank correlation ``(B,)`` of two saliency maps ``(B, 1, H, W)``.

    Pixels are ranked as the causal metrics rank them (:func:`~lightning_igos.core.causal.pixel_ranks`:
    ties go to the lower index), so the ranks are a permutation and ``rho = 1 - 6 sum(d^2) / (n (n^2 - 1))``.
    Computed in float64 on the maps' device, returned as float32.

    Example:
        >>> s = torch.rand(2, 1, 4, 4)
        >>> spearman(s, s).tolist(), spearman(s, -s).tolist()
        ([1.0, 1.0], [-1.0, -1.0])
    """
    if not isinstance(a, Tensor) or not isinstance(b, Tensor):
        raise TypeError("`a` and `b` must be torch.Tensors.")
    if a.dim() != 4 or a.shape[1] != 1 or a.shape != b.shape:
        raise ValueError(f"`a` and `b` must both be shaped (B, 1, H, W), got {tuple(a.shape)} and {tuple(b.shape)}.")
    size = (a.shape[-2], a.shape[-1])
    n = size[0] * size[1]
    if n < 2:
        return torch.ones(a.shape[0], device=a.device)
    ra, rb = pixel_ranks(a.detach(), size).double(), pixel_ranks(b.detach().to(a.device), size).double()
    d2 = (ra - rb).pow(2).sum(1)
    return (1 - 6 * d2 / (n * (n * n - 1.0))).float()


def edge_map(images: Tensor) -> Tensor:
    """``|image - blur(image)|`` summed over the channels, ``(B, 1, H, W)``: a map that ignores any model.

    The blur is the default baseline's (:func:`~lightning_igos.core.baselines.blur`).

    Example:
        >>> edge_map(torch.rand(2, 3, 16, 16)).shape
        torch.Size([2, 1, 16, 16])
    """
    x = usable(check_images(images)).float()
    with torch.no_grad():
        return (x - blur(x)).abs().sum(1, keepdim=True)


def edge_explainer(model: nn.Module, images: Tensor, targets: TargetsLike, **kwargs: object) -> Tensor:
    """:func:`edge_map` with an explainer's call shape (like :func:`~lightning_igos.core.gradients.gradient_saliency`);
    ``model``, ``targets`` and ``kwargs`` are ignored."""
    return edge_map(images)


@dataclass
class SanityResult:
    """Result of :func:`sanity_check`.

    Attributes:
        correlation: ``(B,)`` Spearman correlation of each image's two explanations.
        saliency: ``(B, 1, H, W)`` the explanation on the model.
        randomized_saliency: ``(B, 1, H, W)`` the explanation on :func:`randomized_copy` of it.
    """

    correlation: Tensor
    saliency: Tensor
    randomized_saliency: Tensor

    @property
    def mean_correlation(self) -> float:
        return float(self.correlation.double().mean())


def sanity_check(
    model: nn.Module,
    images: Tensor,
    targets: TargetsLike,
    config: IGOSConfig | None = None,
    *,
    explainer: Explainer | None = None,
    generator: torch.Generator | None = None,
    saliency: Tensor | None = None,
) -> SanityResult:
    """Explain ``images`` on ``model`` and on :func:`randomized_copy` of it and correlate the maps.

    Args:
        model: the classifier; it is not modified.
        images: ``(B, C, H, W)`` on the model's device.
        targets: the class to explain per image.
        config: the options when ``explainer`` is None (default: the defaults): each run explains with
            ``config.method`` as :func:`~lightning_igos.core.evaluation.evaluate` does (noise seeded
            from ``config.seed``).
        explainer: ``explainer(model, images, targets)`` returning a ``(B, 1, H, W)`` saliency
            instead of I-GOS (e.g. :func:`edge_explainer`,
            :func:`~lightning_igos.core.gradients.gradient_saliency`).
        generator: seeds the re-initialisation (see :func:`randomized_copy`).
        saliency: the explanation on ``model`` when already computed (it is then not recomputed),
            so the check costs one more explanation.
    """
    config = IGOSConfig() if config is None else config
    if not isinstance(config, IGOSConfig):
        raise TypeError(f"`config` must be an IGOSConfig or None, got {type(config).__name__}.")
    model = check_model(model)
    images = check_images(images)
    targets_t = check_targets(targets, images.shape[0], images.device)
    randomized = randomized_copy(model, generator)

    def explain(m: nn.Module) -> Tensor:
        if explainer is not None:
            return explainer(m, images, targets_t).detach()
        from lightning_igos.core.evaluation import explain

        return explain(m, images, targets_t, config).saliency.detach()

    original = explain(model) if saliency is None else saliency.detach()
    shuffled = explain(randomized)
    return SanityResult(correlation=spearman(original, shuffled), saliency=original, randomized_saliency=shuffled)
