"""Explain, score and summarise a probe in one call: what the callback, the check and the benches run.

:func:`evaluate` explains the images with :func:`~lightning_igos.igos`, scores the
explanations with :func:`~lightning_igos.causal.causal_curves` (and, with
``config.road``, :func:`~lightning_igos.core.road.road_curves`) and returns an
:class:`Evaluation` holding them and the per-image statistics. Every shell (the
Lightning callback, ``lightning-igos check``, the benchmarks) calls it with an
:class:`~lightning_igos.core.config.IGOSConfig`, so they report the same numbers for
the same probe and settings.

The work is done once: one baseline image serves the solver and, when the substrate
is the same kind, the metrics; one clean forward gives the predictions.

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))
    >>> result = evaluate(model, torch.randn(2, 3, 8, 8), [0, 1], IGOSConfig(iterations=1, ig_steps=2,
    ...                   metric_steps=4))
    >>> sorted(result.per_image())[:3], result.curves.insertion.shape
    (['clean_score', 'deletion_auc', 'deletion_auc_normalized'], torch.Size([2, 5]))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

import torch
from torch import Tensor, nn

from lightning_igos.core.baselines import make_baseline
from lightning_igos.core.causal import CausalCurves, causal_curves
from lightning_igos.core.config import IGOSConfig
from lightning_igos.core.road import RoadCurves, road_curves
from lightning_igos.core.runtime import autocast_context, evaluation_mode, model_input_dtype, usable
from lightning_igos.core.solver import Explanation, igos, mask_statistics
from lightning_igos.core.validation import TargetsLike, check_images, check_model, check_same_device, check_targets

#: Per-image statistics of :meth:`Evaluation.per_image`, in report order.
STATISTICS = (
    "clean_score",
    "insertion_auc",
    "deletion_auc",
    "insertion_auc_normalized",
    "deletion_auc_normalized",
    "mask_mean",
    "mask_min",
    "mask_frac_below_half",
)
#: Per-image statistics :meth:`Evaluation.per_image` adds when ROAD ran (``IGOSConfig(road=True)``),
#: in report order: the MoRF and LeRF areas and their gap.
ROAD_STATISTICS = ("road_morf", "road_lerf", "road_gap")
#: Whether a higher value is better, for each of :data:`ROAD_STATISTICS`.
ROAD_HIGHER_IS_BETTER = {"road_morf": False, "road_lerf": True, "road_gap": True}


@dataclass
class Evaluation:
    """Result of :func:`evaluate`.

    Attributes:
        explanation: the solver's :class:`~lightning_igos.core.solver.Explanation`.
        curves: the insertion/deletion :class:`~lightning_igos.core.causal.CausalCurves`.
        targets: ``(B,)`` the explained classes.
        predictions: ``(B,)`` the class the model predicts on each clean image.
        road: the ROAD :class:`~lightning_igos.core.road.RoadCurves` when ``config.road``, else None.
    """

    explanation: Explanation
    curves: CausalCurves
    targets: Tensor
    predictions: Tensor
    road: RoadCurves | None = None

    def __len__(self) -> int:
        return self.targets.numel()

    @property
    def saliency(self) -> Tensor:
        return self.explanation.saliency

    @property
    def empty(self) -> Tensor:
        """``(B,)`` True for an empty explanation (non-finite gradient or unmoved mask)."""
        return self.explanation.empty

    @property
    def empty_reasons(self) -> list[str]:
        """Per image ``""`` or why its explanation is empty (``"non-finite gradient"``, ``"mask never moved"``)."""
        return self.explanation.empty_reasons

    def per_image(self) -> dict[str, Tensor]:
        """``(B,)`` tensors by name (:data:`STATISTICS`): clean score, AUCs (raw and normalised), mask stats;
        then, when ROAD ran, :data:`ROAD_STATISTICS` (MoRF area, LeRF area, their gap)."""
        c = self.curves
        road = {} if self.road is None else {
            "road_morf": self.road.morf_area, "road_lerf": self.road.lerf_area, "road_gap": self.road.gap,
        }
        return {
            "clean_score": c.clean_score,
            "insertion_auc": c.insertion_auc,
            "deletion_auc": c.deletion_auc,
            "insertion_auc_normalized": c.insertion_auc_normalized,
            "deletion_auc_normalized": c.deletion_auc_normalized,
            **mask_statistics(self.explanation.mask),
            **road,
        }

    def cpu(self) -> Evaluation:
        """A detached copy on the CPU (what the callback gathers and renders)."""
        ex = self.explanation
        moved = {f.name: _cpu(getattr(ex, f.name)) for f in fields(ex)}
        return Evaluation(
            explanation=Explanation(**moved),
            curves=CausalCurves(**{f.name: _cpu(getattr(self.curves, f.name)) for f in fields(self.curves)}),
            targets=_cpu(self.targets),
            predictions=_cpu(self.predictions),
            road=None if self.road is None else RoadCurves(
                **{f.name: _cpu(getattr(self.road, f.name)) for f in fields(self.road)}),
        )


def _cpu(value: object) -> object:
    return value.detach().cpu() if isinstance(value, Tensor) else value


def predict(model: nn.Module, images: Tensor, autocast_dtype: torch.dtype | None = None) -> Tensor:
    """The class ``model`` predicts on each image (eval mode, no autograd); the output must be logits (B, C)."""
    with evaluation_mode(model), torch.no_grad(), autocast_context(images.device, autocast_dtype):
        input_dtype = images.dtype if autocast_dtype is not None else model_input_dtype(model, images.dtype)
        logits = model(images.to(input_dtype))
    if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] != images.shape[0]:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(
            f"`model(images)` must return logits shaped (B, num_classes), got {shape}. "
            "Make the model's forward return the classification logits."
        )
    return logits.argmax(1)


def evaluate(
    model: nn.Module,
    images: Tensor,
    targets: TargetsLike | str,
    config: IGOSConfig | None = None,
    *,
    generator: torch.Generator | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> Evaluation:
    """Explain ``images`` with I-GOS, score the explanations, and summarise them per image.

    Args:
        model: a classifier returning logits ``(B, num_classes)``; the images go to its device.
        images: ``(B, C, H, W)`` inputs as the model takes them.
        targets: the class to explain per image (int, sequence or tensor ``(B,)``), or
            ``"pred"`` for the class the model predicts on each image.
        config: solver and metric options; None uses the defaults.
        generator: source of the integration noise's seed; None makes a CPU generator
            seeded with ``config.seed``, so every call with the same inputs is the same, on
            any device, and each image's numbers do not depend on the other images.
        on_stage: called with ``"explaining"`` before the solver and ``"scoring"`` before
            the metrics (e.g. to drive a progress line).

    With ``config.road`` the explanations are also scored with
    :func:`~lightning_igos.core.road.road_curves` (its noise drawn from a CPU generator
    seeded with ``config.seed``), kept as :attr:`Evaluation.road`.

    The model's parameters, their ``.grad``, its train/eval flags and the global RNG are
    left as they were.
    """
    config = IGOSConfig() if config is None else config
    if not isinstance(config, IGOSConfig):
        raise TypeError(f"`config` must be an IGOSConfig or None, got {type(config).__name__}.")
    model = check_model(model)
    images = check_images(images)
    check_same_device(model, images)
    device = images.device
    predictions = predict(model, images, config.autocast_dtype)
    if isinstance(targets, str):
        if targets != "pred":
            raise ValueError(f"`targets` must be class indices or 'pred', got {targets!r}.")
        targets_t = predictions
    else:
        targets_t = check_targets(targets, images.shape[0], device)
    if generator is None:
        generator = torch.Generator().manual_seed(config.seed)
    # One baseline image for the solver and (when they are the same kind) the metrics' substrate.
    baseline, substrate = config.baseline, config.substrate
    if isinstance(baseline, str):
        baseline = make_baseline(usable(images).float(), baseline)
        if substrate == config.baseline:
            substrate = baseline
    if on_stage is not None:
        on_stage("explaining")
    explanation = igos(model, images, targets_t, generator=generator, **config.replace(baseline=baseline)
                       .solver_options())
    if on_stage is not None:
        on_stage("scoring")
    curves = causal_curves(
        model, images, explanation.saliency, targets_t, steps=config.metric_steps, substrate=substrate,
        score_fn=config.score_fn, max_batch_size=config.max_batch_size,
    )
    road = None
    if config.road:
        road = road_curves(
            model, images, explanation.saliency, targets_t, score_fn=config.score_fn,
            max_batch_size=config.max_batch_size, generator=torch.Generator().manual_seed(config.seed),
        )
    return Evaluation(explanation=explanation, curves=curves, targets=targets_t, predictions=predictions, road=road)
