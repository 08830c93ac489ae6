"""One configuration for the solver and the metrics: defaults and validation in one place.

:class:`IGOSConfig` is what :func:`~lightning_igos.core.evaluation.evaluate` runs with.
The keyword defaults of :func:`~lightning_igos.igos`, of
:class:`~lightning_igos.IGOSCallback` and of the ``lightning-igos check`` options are
read from ``IGOSConfig()``, and every entry point validates its options by building
one, so the same value is accepted or rejected everywhere with the same message.

Example:
    >>> config = IGOSConfig(iterations=10, mask_size=28)
    >>> config.iterations, config.mask_size, config.l1
    (10, (28, 28), 0.1)
    >>> IGOSConfig(ig_steps=0)
    Traceback (most recent call last):
    ...
    ValueError: `ig_steps` must be an integer >= 1, got 0.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, fields
from typing import Any

import torch

from lightning_igos.core.baselines import BaselineLike, check_baseline, curve_substrates
from lightning_igos.core.explainers import check_explainer_name
from lightning_igos.core.runtime import MAX_SEED
from lightning_igos.core.scoring import ScoreFn
from lightning_igos.core.validation import (
    check_autocast_dtype,
    check_bool,
    check_mask_size,
    check_non_negative,
    check_positive_int,
)

OBJECTIVES = ("probability", "log_complement")
QUADRATURES = ("riemann", "gauss-legendre")


def _check_finite(value: object, name: str) -> None:
    """Infinite weights and steps are rejected by every entry point alike (type errors come later)."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isinf(value):
        raise ValueError(f"`{name}` must be a finite number, got {value!r}.")

def option(default: Any, help: str, *, kind: str = "text", choices: str | None = None, metavar: str | None = None,
           default_text: str | None = None) -> Any:
    """A config field that is also a ``lightning-igos check`` option (``--ig-steps`` for ``ig_steps``).

    The command line builds its options from these declarations (read from this file's
    source, so ``--help`` imports no torch): ``help`` is the option's help, ``kind`` how its
    text is read (``"count"``, ``"positive_int"``, ``"non_negative"``, ``"positive_number"``,
    ``"mask_size"``, ``"seed"``, ``"flag"`` for ``--x/--no-x``, ``"text"``), ``choices`` the
    name of a tuple of allowed values in this module or another of ``lightning_igos.core``
    (``OBJECTIVES``, ``baselines.BASELINE_KINDS``),
    ``default_text`` what the help says the default is, when not the value itself.
    """
    return dataclasses.field(default=default, metadata={"help": help, "kind": kind, "choices": choices,
                                                        "metavar": metavar, "default_text": default_text})


#: Fields of :class:`IGOSConfig` that are keyword arguments of :func:`~lightning_igos.igos`.
SOLVER_FIELDS = (
    "method", "mask_size", "iterations", "ig_steps", "l1", "tv", "tv_power", "noise_std", "baseline",
    "max_batch_size", "initial_step", "tolerance", "patience", "score_fn", "autocast_dtype", "normalize_score",
    "objective", "quadrature",
)


@dataclass(frozen=True)
class IGOSConfig:
    """Options of the I-GOS solver and of the causal metrics, validated on construction.

    Attributes:
        method: the explainer: ``"igos"`` or ``"igos++"`` (bilateral: deletion and insertion
            masks), or any name in :func:`~lightning_igos.core.explainers.explainer_names`
            (``"gradient"``, ``"integrated_gradients"``, the ``"edge_map"`` and ``"random"``
            controls, and those registered with
            :func:`~lightning_igos.core.explainers.register_explainer`).
        mask_size: mask resolution, an int or ``(h, w)`` (kept as a pair); None uses the
            image's own, one cell per pixel.
        iterations: descent iterations, at most (see ``patience``).
        ig_steps: integration steps along the path from the baseline to the masked image.
        l1: weight of the L1 term that keeps the removed area small.
        tv: weight of the total variation term, as set for a 28x28 mask (scaled with the
            mask's cell count).
        tv_power: exponent of the total variation differences (>= 1).
        noise_std: std of the Gaussian noise added to each path point, in input units.
        baseline: what the solver replaces removed pixels with: ``"blur"``, ``"zeros"``,
            ``"mean"``, a tensor or a callable (see :mod:`lightning_igos.core.baselines`).
        initial_step: how far the first line-search trial moves the largest mask cell.
        tolerance: a line search gives up below this change of the largest mask cell.
        patience: failed line searches in a row after which an image has converged;
            None runs every iteration on every image.
        normalize_score: divide the objective's score term by the clean score, so ``l1``
            and ``tv`` mean the same at any confidence.
        objective: the score term, ``"probability"`` or ``"log_complement"`` (``-log(1 - p)``,
            whose gradient does not vanish on confident images).
        quadrature: the integration points, ``"riemann"`` or ``"gauss-legendre"``.
        autocast_dtype: run the forward passes under autocast with this dtype; None
            runs them in the model's own dtype.
        score_fn: ``score_fn(logits, targets) -> (B,)`` for heads whose score is not the
            softmax probability of the target.
        max_batch_size: images per forward pass (bounds memory); None picks a default per device.
        substrate: what both causal curves delete to and insert into (as ``baseline``); None:
            each curve's default, ``"zeros"`` for deletion and ``"blur"`` for insertion
            (:func:`~lightning_igos.core.baselines.curve_substrates`).
        deletion_substrate, insertion_substrate: one curve's substrate, over ``substrate``.
        metric_steps: points minus one of the insertion and deletion curves.
        seed: seed of the integration noise when :func:`evaluate` makes the generator.
        road: also score the explanations with ROAD's MoRF/LeRF areas, pixels removed by
            noisy linear imputation (:func:`~lightning_igos.core.road.road_curves`); off by
            default because it costs about as much again as the insertion/deletion curves.
    """

    method: str = option("igos", "the explainer: {explainers}, or one a --plugin module registers", metavar="NAME")
    mask_size: None | int | tuple[int, int] = option(None, "mask resolution", kind="mask_size", metavar="N|HxW",
                                                     default_text="the image's, one cell per pixel")
    iterations: int = option(4, "descent iterations, at most", kind="count")
    ig_steps: int = option(10, "integrated-gradient steps", kind="positive_int")
    l1: float = option(0.1, "L1 weight", kind="non_negative")
    tv: float = option(2.0, "total variation weight at a 28x28 mask", kind="non_negative")
    tv_power: float = option(2.0, "total variation exponent", kind="non_negative")
    noise_std: float = option(0.2, "integration noise std in input units", kind="non_negative")
    baseline: BaselineLike = option("blur", "solver baseline", choices="baselines.BASELINE_KINDS")
    initial_step: float = option(1.0, "the first line-search trial moves the largest mask cell this much",
                                 kind="positive_number")
    tolerance: float = option(1e-5, "line searches give up below this change of a mask cell", kind="positive_number")
    patience: int | None = option(3, "an image stops after this many failed line searches in a row (0: never)",
                                  kind="count")
    normalize_score: bool = option(True, "divide the objective's score by the clean score, so --l1/--tv mean the "
                                         "same at any confidence", kind="flag")
    objective: str = option("log_complement", "what the mask removes: the target's probability, or -log(1 - p), "
                                              "whose gradient does not vanish on confident images",
                            choices="OBJECTIVES")
    quadrature: str = option("riemann", "points and weights of the integrated gradient", choices="QUADRATURES")
    autocast_dtype: torch.dtype | None = None
    score_fn: ScoreFn | None = None
    max_batch_size: int | None = option(None, "images per forward pass", kind="positive_int",
                                        default_text="32 on CPU, 64 on CUDA")
    substrate: BaselineLike | None = option(None, "what both curves insert into / delete to",
                                            choices="baselines.BASELINE_KINDS",
                                            default_text="per curve: zeros for deletion, blur for insertion")
    deletion_substrate: BaselineLike | None = option(None, "what the deletion curve replaces pixels with",
                                                     choices="baselines.BASELINE_KINDS",
                                                     default_text="--substrate, else zeros")
    insertion_substrate: BaselineLike | None = option(None, "what the insertion curve starts from",
                                                      choices="baselines.BASELINE_KINDS",
                                                      default_text="--substrate, else blur")
    metric_steps: int = option(50, "points on each insertion/deletion curve minus one", kind="positive_int")
    seed: int = option(0, "seed of the integration noise, 0 to 2**63 - 1", kind="seed")
    road: bool = option(False, "also report the ROAD MoRF/LeRF areas and their gap (noisy linear imputation, about "
                               "the insertion/deletion curves' cost again)", kind="flag")

    def __post_init__(self) -> None:
        check_explainer_name(self.method)
        object.__setattr__(self, "mask_size", check_mask_size(self.mask_size))
        check_positive_int(self.iterations, "iterations", minimum=0)
        check_positive_int(self.ig_steps, "ig_steps")
        for name in ("l1", "tv", "tv_power", "noise_std", "initial_step", "tolerance"):
            _check_finite(getattr(self, name), name)
        check_non_negative(self.l1, "l1")
        check_non_negative(self.tv, "tv")
        if check_non_negative(self.tv_power, "tv_power") < 1:
            raise ValueError(f"`tv_power` must be >= 1 (the reference uses 2), got {self.tv_power!r}.")
        check_non_negative(self.noise_std, "noise_std")
        check_baseline(self.baseline, "baseline")
        if isinstance(self.initial_step, bool) or not isinstance(self.initial_step, numbers.Real):
            raise TypeError(f"`initial_step` must be a number > 0, got {self.initial_step!r}.")
        if not self.initial_step > 0:
            raise ValueError(f"`initial_step` must be a number > 0, got {self.initial_step!r}.")
        if not check_non_negative(self.tolerance, "tolerance") > 0:
            raise ValueError(f"`tolerance` must be > 0, got {self.tolerance!r}.")
        if self.patience is not None:
            check_positive_int(self.patience, "patience")
        check_bool(self.normalize_score, "normalize_score")
        check_autocast_dtype(self.autocast_dtype)
        for name, choices in (("objective", OBJECTIVES), ("quadrature", QUADRATURES)):
            if getattr(self, name) not in choices:
                raise ValueError(f"`{name}` must be one of {choices}, got {getattr(self, name)!r}.")
        if self.score_fn is not None and not callable(self.score_fn):
            raise TypeError(
                f"`score_fn` must be None or a callable (logits, targets) -> scores, got {self.score_fn!r}."
            )
        if self.max_batch_size is not None:
            check_positive_int(self.max_batch_size, "max_batch_size")
        for name in ("substrate", "deletion_substrate", "insertion_substrate"):
            if getattr(self, name) is not None:
                check_baseline(getattr(self, name), name)
        check_positive_int(self.metric_steps, "metric_steps")
        check_positive_int(self.seed, "seed", minimum=0)
        if self.seed > MAX_SEED:
            raise ValueError(f"`seed` must be an integer from 0 to 2**63 - 1, got {self.seed!r}.")
        check_bool(self.road, "road")

    def replace(self, **changes: Any) -> IGOSConfig:
        """A copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)

    def curve_substrates(self) -> tuple[BaselineLike, BaselineLike]:
        """The ``(deletion, insertion)`` substrates this configuration scores with.

        Example:
            >>> IGOSConfig().curve_substrates(), IGOSConfig(substrate="mean").curve_substrates()
            (('zeros', 'blur'), ('mean', 'mean'))
        """
        return curve_substrates(self.substrate, self.deletion_substrate, self.insertion_substrate)

    def solver_options(self) -> dict[str, Any]:
        """The keyword arguments of :func:`~lightning_igos.igos` (all but ``generator``)."""
        return {name: getattr(self, name) for name in SOLVER_FIELDS}

    def as_dict(self) -> dict[str, Any]:
        """Every field by name (tuples as lists, dtypes and callables as text), for reports."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                value = list(value)
            elif value is not None and not isinstance(value, (str, bool, int, float)):
                value = str(value) if isinstance(value, torch.dtype) else type(value).__name__
            out[f.name] = value
        return out


#: The defaults, for keyword defaults elsewhere (``iterations: int = DEFAULTS.iterations``).
DEFAULTS = IGOSConfig()
