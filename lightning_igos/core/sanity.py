"""Model-randomisation sanity check (Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018).

An explanation that describes the model must change when the model's learned weights are
destroyed. :func:`sanity_check` explains a batch with the model and with
:func:`randomized_copy` of it and returns the per-image Spearman rank correlation of the two
maps (:func:`spearman`): near 1 means the explanation barely depends on the weights (it acts
like an edge detector), near 0 means it does.

Which layers are re-initialised, for any model: the layers the forward pass runs. Given example
inputs (:func:`sanity_check` gives the images), :func:`forward_modules` runs one forward without
gradients and records the submodules it calls, in the order of their last call; without them the
modules are taken in registration order. Of those, the modules that hold parameters of their own
and have a ``reset_parameters`` method (``Linear``, ``Conv*``, ``BatchNorm*``, ``LayerNorm``, ...)
are the candidates (:func:`resettable_modules`). :func:`randomized_copy` re-initialises the last
of them (the classifier head) and the last quarter of them, at least the last 2 (the top blocks),
by calling ``reset_parameters()`` (batch norms also reset their running statistics). So an EMA copy
or an auxiliary head that the forward does not call is never what gets re-initialised.
:attr:`SanityResult.reinitialized` names the modules. The draws come from a forked RNG seeded from
the ``generator``, so the global RNG is left as it was; a model with no such module is a
``ValueError``.

The user's model is never touched, and only the network is copied (:func:`network_copy`): the
parameters and buffers of the modules, the modules themselves and their hooks. Other attributes
(a lock, a large tensor that is not a buffer, the Trainer a LightningModule refers to, metrics)
and the submodules the forward does not call are shared with the model, not copied.

A correlation with an explanation that ranks nothing (an empty map, the same everywhere) is
undefined: :func:`spearman` returns NaN for it, :attr:`SanityResult.empty` names those images and
:attr:`SanityResult.mean_correlation` is the mean of the others (NaN when there are none): an
empty explanation never reads as a correlation of 1 or as a pass.

:func:`edge_map` is the control: ``|image - blur(image)|`` summed over the channels, a map that
ignores the model, so its correlation is exactly 1; a real explanation must score clearly below it.

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 2))
    >>> result = sanity_check(model, torch.randn(2, 3, 8, 8), [0, 1], explainer=edge_explainer)
    >>> result.correlation.tolist(), result.reinitialized
    ([1.0, 1.0], ('0', '3'))
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lightning_igos.core.comparison import (
    Explainer,
    average_ranks,
    edge_explainer,
    edge_map,
    forward_modules,
    network_copy,
    randomize,
    randomized_copy,
    resettable_modules,
    spearman,
    undefined_correlation,
)
from lightning_igos.core.config import IGOSConfig
from lightning_igos.core.evaluation import explain
from lightning_igos.core.validation import TargetsLike, check_images, check_model, check_targets

__all__ = ["SanityResult", "average_ranks", "edge_explainer", "edge_map", "forward_modules", "network_copy",
           "randomize", "randomized_copy", "resettable_modules", "sanity_check", "spearman", "undefined_correlation"]


@dataclass
class SanityResult:
    """Result of :func:`sanity_check`.

    Attributes:
        correlation: ``(B,)`` Spearman correlation of each image's two explanations; NaN where it is
            undefined (:attr:`empty`).
        saliency: ``(B, 1, H, W)`` the explanation on the model.
        randomized_saliency: ``(B, 1, H, W)`` the explanation on :func:`randomized_copy` of it.
        reinitialized: the names of the re-initialised modules (``model.named_modules()`` names).
    """

    correlation: Tensor
    saliency: Tensor
    randomized_saliency: Tensor
    reinitialized: tuple[str, ...] = ()

    @property
    def empty(self) -> Tensor:
        """``(B,)`` True where the correlation is undefined: either explanation is empty (ranks nothing)."""
        return torch.isnan(self.correlation)

    @property
    def mean_correlation(self) -> float:
        """The mean correlation of the images whose correlation is defined; NaN when none is."""
        defined = self.correlation[~self.empty]
        return float(defined.double().mean()) if defined.numel() else math.nan


def sanity_check(
    model: nn.Module,
    images: Tensor,
    targets: TargetsLike,
    config: IGOSConfig | None = None,
    *,
    explainer: Explainer | None = None,
    generator: torch.Generator | None = None,
    saliency: Tensor | None = None,
    empty: Tensor | None = None,
) -> SanityResult:
    """Explain ``images`` on ``model`` and on :func:`randomized_copy` of it and correlate the maps.

    The layers re-initialised are chosen from what the model's forward runs on ``images``
    (:func:`forward_modules`). An image whose explanation is empty on either model (flagged as
    empty by the explainer, or a map that ranks nothing) has no correlation (NaN, :attr:`SanityResult.empty`).

    Args:
        model: the classifier; it is not modified, and only its network is copied (:func:`network_copy`).
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
        empty: with ``saliency``, ``(B,)`` True for its empty explanations
            (:attr:`~lightning_igos.core.solver.Explanation.empty`).
    """
    config = IGOSConfig() if config is None else config
    if not isinstance(config, IGOSConfig):
        raise TypeError(f"`config` must be an IGOSConfig or None, got {type(config).__name__}.")
    model = check_model(model)
    images = check_images(images)
    targets_t = check_targets(targets, images.shape[0], images.device)
    randomized, names = randomize(model, generator, example_inputs=images)

    def explained(m: nn.Module) -> tuple[Tensor, Tensor | None]:
        if explainer is not None:
            return explainer(m, images, targets_t).detach(), None
        explanation = explain(m, images, targets_t, config)
        return explanation.saliency.detach(), explanation.empty

    if saliency is None:
        original, original_empty = explained(model)
    else:
        original, original_empty = saliency.detach(), empty
    shuffled, shuffled_empty = explained(randomized)
    correlation = spearman(original, shuffled)
    for flags in (original_empty, shuffled_empty):
        if flags is not None:
            correlation = correlation.masked_fill(flags.to(correlation.device, torch.bool), math.nan)
    return SanityResult(correlation=correlation, saliency=original, randomized_saliency=shuffled,
                        reinitialized=names)
