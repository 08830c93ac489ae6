"""Explain, score and summarise a probe in one call: what the callback, the check and the benches run.

:func:`evaluate` runs the configured explainer (``config.method``, any name of the
:mod:`~lightning_igos.core.explainers` registry; I-GOS by default), scores the explanations
with the causal insertion/deletion curves (and, with ``config.road``, ROAD) and returns an
:class:`Evaluation` holding them; :meth:`Evaluation.per_image` gives every registered
per-image statistic (:mod:`~lightning_igos.core.statistics`). Every shell (the Lightning
callback, ``lightning-igos check``, the benchmarks) calls it with an
:class:`~lightning_igos.core.config.IGOSConfig`, so they report the same numbers for the
same probe and settings.

The inputs are checked once, here, and the kernels behind the public functions trust them.
One :class:`~lightning_igos.core.runner.ModelRunner` runs every forward (dtype, layout,
autocast, score function, batch cap, counting), and the work shared by the stages is done
once: the unmodified images go through the model once (their logits give the predictions,
the solver's start, the curves' clean ends and ROAD's reference score), and one baseline
image serves the solver and, when it is the same kind, the metrics' substrate.

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
from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor, nn

from lightning_igos.core.baselines import make_baseline, same_kind, substrate_images
from lightning_igos.core.causal import CausalCurves, _score_curves
from lightning_igos.core.config import IGOSConfig
from lightning_igos.core.explainers import ExplainRequest, get_explainer
from lightning_igos.core.road import DEFAULT_FRACTIONS, DEFAULT_NOISE_STD, RoadCurves, _road_scores
from lightning_igos.core.runner import ForwardListener, ModelRunner, checked_start
from lightning_igos.core.runtime import draw_seed, usable
from lightning_igos.core.scoring import target_scores
from lightning_igos.core.solver import NONFINITE_SALIENCY, Explanation
from lightning_igos.core.statistics import statistic_values, statistics
from lightning_igos.core.validation import (
    TargetsLike,
    as_saliency_batch,
    check_box_shape,
    check_images,
    check_model,
    check_same_device,
    check_targets,
)


@dataclass
class Evaluation:
    """Result of :func:`evaluate`.

    Attributes:
        explanation: the solver's :class:`~lightning_igos.core.solver.Explanation`.
        curves: the insertion/deletion :class:`~lightning_igos.core.causal.CausalCurves`.
        targets: ``(B,)`` the explained classes.
        predictions: ``(B,)`` the class the model predicts on each clean image.
        road: the ROAD :class:`~lightning_igos.core.road.RoadCurves` when ``config.road``, else None.
        boxes: ``(B, 4)`` the objects' boxes ``(x0, y0, x1, y1)`` when given (the pointing game), else None.
        config: the options it ran with.
        num_classes: the width of the model's logits (None for a head with one score per image).
        images: the explained images, as given to :func:`evaluate` (for display; None when not kept).

    In a notebook an evaluation shows itself as its statistics table and one panel per image
    (:func:`lightning_igos.render.notebook.evaluation_html`).
    """

    explanation: Explanation
    curves: CausalCurves
    targets: Tensor
    predictions: Tensor
    road: RoadCurves | None = None
    boxes: Tensor | None = None
    config: IGOSConfig | None = None
    num_classes: int | None = None
    images: Tensor | None = None

    def __len__(self) -> int:
        return self.targets.numel()

    @property
    def saliency(self) -> Tensor:
        return self.explanation.saliency

    @property
    def empty(self) -> Tensor:
        """``(B,)`` True for an empty explanation (:attr:`empty_reasons` names why)."""
        return self.explanation.empty

    @property
    def empty_reasons(self) -> list[str]:
        """Per image ``""`` or why its explanation is empty, one of
        :data:`~lightning_igos.core.solver.EMPTY_REASONS` (a non-finite gradient or a mask that never moved,
        a saliency map that is non-finite or the same everywhere)."""
        return self.explanation.empty_reasons

    def per_image(self) -> dict[str, Tensor]:
        """``(B,)`` tensors by name: every registered statistic (:func:`~lightning_igos.core.statistics.statistics`)
        that applies to this evaluation (ROAD's when it ran, the mask's when the explainer has a mask, ...)."""
        config = IGOSConfig() if self.config is None else self.config
        return {s.name: statistic_values(s, self) for s in statistics(config, self.boxes is not None)}

    def _repr_html_(self) -> str:
        from lightning_igos.render.notebook import evaluation_html

        return evaluation_html(self)

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
            boxes=_cpu(self.boxes), config=self.config, num_classes=self.num_classes, images=_cpu(self.images),
        )


def _cpu(value: object) -> object:
    return value.detach().cpu() if isinstance(value, Tensor) else value


def evaluate(
    model: nn.Module,
    images: Tensor,
    targets: TargetsLike | str,
    config: IGOSConfig | None = None,
    *,
    generator: torch.Generator | None = None,
    on_stage: Callable[[str], None] | None = None,
    on_forward: ForwardListener | None = None,
    boxes: Tensor | None = None,
    clean_logits: Tensor | None = None,
) -> Evaluation:
    """Explain ``images`` with ``config.method``, score the explanations, and summarise them per image.

    Args:
        model: a classifier returning logits ``(B, num_classes)`` (or what ``config.score_fn``
            reads); the images go to its device.
        images: ``(B, C, H, W)`` inputs as the model takes them.
        targets: the class to explain per image (int, sequence or tensor ``(B,)``), or
            ``"pred"`` for the class the model predicts on each image.
        config: explainer and metric options; None uses the defaults.
        generator: source of the integration noise's seed; None makes a CPU generator
            seeded with ``config.seed``, so every call with the same inputs is the same, on
            any device, and what each image is given does not depend on the other images. Its
            numbers are bitwise the same at the same batch shapes; with other shapes (another
            ``max_batch_size``, another number of images) the backend's kernels may round
            differently (about 1e-7 per forward, amplified by the solver's iterations).
        on_stage: called with ``"explaining"`` before the explainer and ``"scoring"`` before
            the metrics (e.g. to drive a progress line).
        on_forward: called as ``on_forward(num_images, with_grad)`` after every forward (progress).
        boxes: ``(B, 4)`` the objects' boxes ``(x0, y0, x1, y1)`` in pixels, end exclusive:
            adds the pointing game (``per_image()["pointing"]``).
        clean_logits: the model's outputs on ``images`` when the caller already has them from
            :func:`clean_forward` with the same model and config (they are then not recomputed).

    With ``config.road`` the explanations are also scored with ROAD
    (:func:`~lightning_igos.core.road.road_curves`, its noise seeded from ``config.seed``),
    kept as :attr:`Evaluation.road`. Every forward runs under ``config.autocast_dtype``
    (none by default), the metrics' too.

    The model's parameters, their ``.grad``, its train/eval flags and the global RNG are
    left as they were.
    """
    config, model, runner, x, targets_t, logits, boxes = _prepare(model, images, targets, config, on_forward, boxes,
                                                                  clean_logits)
    clean_score = target_scores(logits, targets_t, config.score_fn)
    with runner.running(grad=False):
        # One image per kind for the solver's baseline and the curves' substrates (blur is made once).
        baseline = make_baseline(x, config.baseline)
        deletion_substrate, insertion_substrate = substrate_images(
            x, config.curve_substrates(), config.deletion_substrate is not None,
            config.insertion_substrate is not None, made=((config.baseline, baseline),))
    if on_stage is not None:
        on_stage("explaining")
    explanation = _explain(runner, x, targets_t, config, baseline, logits, clean_score, generator)
    if on_stage is not None:
        on_stage("scoring")
    curves = _score_curves(runner, x, explanation.saliency, targets_t, steps=config.metric_steps,
                          substrate=deletion_substrate, clean_score=clean_score,
                          insertion_substrate=insertion_substrate)
    road = None
    if config.road:
        road = _road_scores(runner, x, explanation.saliency, targets_t, clean_score=clean_score,
                           fractions=torch.tensor(DEFAULT_FRACTIONS), noise_std=DEFAULT_NOISE_STD,
                           seed=draw_seed(torch.Generator().manual_seed(config.seed)))
    return Evaluation(explanation=explanation, curves=curves, targets=targets_t,
                      predictions=_predictions(logits, targets_t), road=road, boxes=boxes, config=config,
                      num_classes=int(logits.shape[1]) if logits.dim() == 2 else None, images=x.detach())


def planned_passes(config: IGOSConfig, num_images: int) -> tuple[int, int]:
    """The model images of one :func:`evaluate` after its clean forward, from the configuration: ``(explaining,
    scoring)``.

    ``explaining``: the explainer's gradient passes (its registered estimate, e.g. at most
    ``iterations * ig_steps`` per image for ``igos``, twice that for ``igos++``; forward-only
    line-search trials are not counted); ``scoring``: the curves' ``2 * (metric_steps - 1)``
    inner points and the substrate per image (two when the curves' substrates differ, as by default), and with
    ``road`` two per ROAD fraction more.

    Example:
        >>> planned_passes(IGOSConfig(iterations=4, ig_steps=20, metric_steps=50), 8)
        (640, 800)
        >>> planned_passes(IGOSConfig(method="igos++", iterations=4, ig_steps=20, metric_steps=50), 8)
        (1280, 800)
    """
    scoring = 2 * config.metric_steps - 1 + (2 * len(DEFAULT_FRACTIONS) if config.road else 0)
    scoring += 0 if same_kind(*config.curve_substrates()) else 1
    return round(num_images * get_explainer(config.method).passes(config)), num_images * scoring


def explain(model: nn.Module, images: Tensor, targets: TargetsLike | str, config: IGOSConfig | None = None, *,
            generator: torch.Generator | None = None) -> Explanation:
    """Only the explanation of :func:`evaluate` (the same inputs, checks and numbers, no metrics).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))
        >>> explain(model, torch.randn(2, 3, 8, 8), [0, 1], IGOSConfig(method="gradient")).saliency.shape
        torch.Size([2, 1, 8, 8])
    """
    config, model, runner, x, targets_t, logits, _ = _prepare(model, images, targets, config, None, None, None)
    with runner.running(grad=False):
        baseline = make_baseline(x, config.baseline)
    clean_score = target_scores(logits, targets_t, config.score_fn)
    return _explain(runner, x, targets_t, config, baseline, logits, clean_score, generator)


def clean_forward(model: nn.Module, images: Tensor, config: IGOSConfig | None = None) -> Tensor:
    """The model's outputs on the unmodified ``images``, run as :func:`evaluate` runs them (same runner
    settings), e.g. to check a model's output before the work and hand them to ``evaluate(clean_logits=)``."""
    config = _checked_config(config)
    model, images = check_model(model), check_images(images)
    check_same_device(model, images)
    runner = _runner(model, images.device, config)
    with runner.running(grad=False):
        return runner.clean_logits(usable(images).float())


def _checked_config(config: IGOSConfig | None) -> IGOSConfig:
    config = IGOSConfig() if config is None else config
    if not isinstance(config, IGOSConfig):
        raise TypeError(f"`config` must be an IGOSConfig or None, got {type(config).__name__}.")
    return config


def _runner(model: nn.Module, device: torch.device, config: IGOSConfig) -> ModelRunner:
    return ModelRunner(model, device, autocast_dtype=config.autocast_dtype, score_fn=config.score_fn,
                       max_batch_size=config.max_batch_size)


def _prepare(model: object, images: object, targets: object, config: IGOSConfig | None,
             on_forward: ForwardListener | None, boxes: object, clean_logits: Tensor | None):
    """Every check of an evaluation, once, and the one clean forward."""
    config = _checked_config(config)
    model = check_model(model)
    images = check_images(images)
    check_same_device(model, images)
    batch = images.shape[0]
    if boxes is not None:
        boxes = check_box_shape(boxes, batch).float()
    if isinstance(targets, str) and targets != "pred":
        raise ValueError(f"`targets` must be class indices or 'pred', got {targets!r}.")
    if not isinstance(targets, str):
        targets_t = check_targets(targets, batch, images.device)
    runner, x, targets_t, logits = checked_start(
        model, images, None if isinstance(targets, str) else targets_t, autocast_dtype=config.autocast_dtype,
        score_fn=config.score_fn, max_batch_size=config.max_batch_size, listener=on_forward,
        clean_logits=clean_logits)
    return config, model, runner, x, targets_t, logits, boxes


def _explain(runner: ModelRunner, x: Tensor, targets: Tensor, config: IGOSConfig, baseline: Tensor,
             logits: Tensor, clean_score: Tensor, generator: torch.Generator | None) -> Explanation:
    """Run the registered explainer of ``config.method``; a bare saliency becomes an :class:`Explanation`."""
    if generator is None:
        generator = torch.Generator().manual_seed(config.seed)
    request = ExplainRequest(runner=runner, images=x, targets=targets, config=config, baseline=baseline,
                             clean_logits=logits, seed=draw_seed(generator))
    pushed = runner.images_pushed
    with runner.running(grad=True):
        out = get_explainer(config.method).explain(request)
    if isinstance(out, Explanation):
        return _checked_explanation(out, x, config.method)
    if not isinstance(out, Tensor):
        raise TypeError(f"explainer {config.method!r} must return a saliency tensor or an Explanation, "
                        f"got {type(out).__name__}.")
    # float32 before the finiteness test: a float64 map past float32's range is non-finite where it is used.
    saliency = as_saliency_batch(out.detach().float(), x.shape[0])
    if saliency is None or saliency.shape[-2] > x.shape[-2] or saliency.shape[-1] > x.shape[-1]:
        raise ValueError(f"explainer {config.method!r} must return a saliency shaped (B, 1, h, w) with "
                         f"B = {x.shape[0]} and h, w at most the images' {tuple(x.shape[-2:])}, "
                         f"got {tuple(out.shape)}.")
    if tuple(saliency.shape[-2:]) != tuple(x.shape[-2:]):
        saliency = torch.nn.functional.interpolate(saliency.float(), size=x.shape[-2:], mode="bilinear",
                                                   align_corners=False)
    return Explanation.from_saliency(saliency.to(x.device), targets, clean_score,
                                     (runner.images_pushed - pushed) / x.shape[0])


def _checked_explanation(out: Explanation, x: Tensor, method: str) -> Explanation:
    """An explainer's :class:`Explanation` held to the rules a bare saliency meets: a ``(B, 1, H, W)`` saliency
    of the images' size, one empty reason per image, and, after the cast to float32 the metrics use, an image
    whose map is NaN or infinite anywhere made an empty explanation (``"non-finite saliency"``)."""
    batch, size = x.shape[0], tuple(x.shape[-2:])
    saliency = out.saliency
    if not isinstance(saliency, Tensor) or saliency.dim() != 4 or tuple(saliency.shape) != (batch, 1, *size):
        shape = tuple(saliency.shape) if isinstance(saliency, Tensor) else type(saliency).__name__
        raise ValueError(f"explainer {method!r} returned an Explanation whose saliency must be shaped "
                         f"(B, 1, H, W) = {(batch, 1, *size)}, got {shape}.")
    if len(out.empty_reasons) != batch:
        raise ValueError(f"explainer {method!r} returned an Explanation with {len(out.empty_reasons)} empty_reasons "
                         f"for {batch} images (one per image: '' or why it is empty).")
    saliency = saliency.detach().float()
    finite = torch.isfinite(saliency.flatten(1)).all(1)
    if bool(finite.all()) and out.saliency.dtype == torch.float32:
        return out
    reasons = [str(reason) if ok or reason else NONFINITE_SALIENCY
               for ok, reason in zip(finite.tolist(), out.empty_reasons)]
    safe = torch.where(finite.view(-1, 1, 1, 1), saliency, torch.zeros_like(saliency))
    return replace(out, saliency=safe, empty_reasons=reasons)


def _predictions(logits: Tensor, targets: Tensor) -> Tensor:
    """The predicted class of each image; a head with one score per image predicts the explained class."""
    if logits.dim() == 2 and logits.shape[1] >= 2:
        return logits.argmax(1)
    return targets.clone()
