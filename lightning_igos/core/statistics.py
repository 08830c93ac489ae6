"""Per-image statistics, each declared once: what every report, log and table shows.

A :class:`Statistic` says how to compute one number per probe image from an
:class:`~lightning_igos.core.evaluation.Evaluation`, which way is better, how the probe is
reduced to one value, how it is displayed and in which chart it goes. The declaration
drives :meth:`Evaluation.per_image`, the callback's ``<prefix>/<name>`` scalars (synced
torchmetrics Metrics) and their TensorBoard custom-scalars layout, the check's JSON report,
its table, its HTML and Markdown columns, its ``--require`` gate and the demo's table.
:func:`register_statistic` adds one::

    from lightning_igos.core.statistics import Statistic, register_statistic

    def saliency_entropy(evaluation):
        p = evaluation.saliency.clamp_min(0).flatten(1)
        p = p / p.sum(1, keepdim=True).clamp_min(1e-12)
        return -(p * p.clamp_min(1e-12).log()).sum(1)

    register_statistic(Statistic("saliency_entropy", saliency_entropy, higher_is_better=False,
                                 label="entropy", group="saliency"))

Example:
    >>> [s.name for s in statistics()][:3]
    ['clean_score', 'insertion_auc', 'deletion_auc']
    >>> get_statistic("deletion_auc").higher_is_better
    False
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch import Tensor

if TYPE_CHECKING:
    from lightning_igos.core.config import IGOSConfig
    from lightning_igos.core.evaluation import Evaluation

#: How a statistic's per-image values become one value for the probe (and across DDP ranks).
REDUCTIONS = ("mean", "min", "max")


@dataclass(frozen=True)
class Statistic:
    """One per-image statistic.

    Attributes:
        name: its key in :meth:`Evaluation.per_image`, in the JSON report and for ``--require``.
        compute: ``compute(evaluation) -> (B,) tensor``, called when it :attr:`applies`.
        higher_is_better: True, False, or None when neither (e.g. the clean score).
        reduction: ``"mean"``, ``"min"`` or ``"max"``: how the callback reduces the probe (and the ranks).
        label: the column header in the check's table, HTML and Markdown and the demo's table;
            ``""`` keeps it out of the tables (it is still logged and in the JSON report).
        fmt: the format of a value in those tables.
        group: the custom-scalars chart it is drawn in (statistics of one group share a chart);
            ``""`` gives it a chart of its own.
        scalar: the callback's scalar name under the prefix (default: ``name``).
        in_report: False keeps it out of the check's JSON report (the callback still logs it).
        applies: ``applies(config, has_boxes) -> bool``: whether an evaluation with this
            :class:`~lightning_igos.core.config.IGOSConfig` (and probe boxes or not) has it,
            known before it runs (the callback declares its scalars up front). None: always.
        bounds: ``(low, high)``, the values it can take with the softmax score (``-math.inf``
            or ``math.inf`` for an open end), or None when unknown: a ``--require`` gate that
            could never pass or never fail is refused (:func:`value_range`).
    """

    name: str
    compute: Callable[[Evaluation], Tensor | None]
    higher_is_better: bool | None = None
    reduction: str = "mean"
    label: str = ""
    fmt: str = ".4f"
    group: str = ""
    scalar: str | None = None
    in_report: bool = True
    applies: Callable[[IGOSConfig, bool], bool] | None = None
    bounds: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"`name` must be an identifier (letters, digits, _), got {self.name!r}.")
        if not callable(self.compute):
            raise TypeError(f"`compute` must be a callable evaluation -> (B,) tensor, got {self.compute!r}.")
        if self.higher_is_better not in (True, False, None):
            raise TypeError(f"`higher_is_better` must be True, False or None, got {self.higher_is_better!r}.")
        if self.reduction not in REDUCTIONS:
            raise ValueError(f"`reduction` must be one of {REDUCTIONS}, got {self.reduction!r}.")
        format(0.5, self.fmt)  # a bad format spec fails here, not in a report
        if self.bounds is not None:
            low, high = (float(v) for v in self.bounds)
            if not low <= high:
                raise ValueError(f"`bounds` must be (low, high) with low <= high, got {self.bounds!r}.")
            object.__setattr__(self, "bounds", (low, high))

    def applies_to(self, config: IGOSConfig, has_boxes: bool = False) -> bool:
        return True if self.applies is None else bool(self.applies(config, has_boxes))

    @property
    def scalar_name(self) -> str:
        return self.scalar or self.name

    def format(self, value: float) -> str:
        return format(value, self.fmt)


_REGISTRY: dict[str, Statistic] = {}

#: Names no registered statistic (nor its scalar) may take: the callback's own scalars
#: (``<prefix>/seconds``, ...) and the fields of a row of the check's JSON report.
RESERVED_NAMES = frozenset({
    "seconds", "passes_per_image", "stability", "sanity_correlation",  # the callback's scalars
    "index", "target", "target_name", "prediction", "empty", "empty_reason",  # a report row's fields
})


def register_statistic(statistic: Statistic, *, replace: bool = False) -> Statistic:
    """Add ``statistic`` after the others (its name taken once unless ``replace``; a built-in's never); returns it.

    Its name and scalar name may not be one of :data:`RESERVED_NAMES` nor the name or scalar
    name of another registered statistic (``target_prob`` is ``clean_score``'s scalar): a value
    logged or reported under one name is never two things.

    Example:
        >>> register_statistic(Statistic("target_prob", lambda e: e.curves.clean_score))
        Traceback (most recent call last):
        ...
        ValueError: statistic 'target_prob': the name 'target_prob' is taken by the statistic 'clean_score' ...
    """
    if not isinstance(statistic, Statistic):
        raise TypeError(f"`statistic` must be a Statistic, got {type(statistic).__name__}.")
    _register_builtins()
    if statistic.name in _BUILTIN_COMPUTE:  # a built-in's number must mean what the documentation says
        raise ValueError(f"a statistic named {statistic.name!r} is already registered and built in: it cannot be "
                         "replaced; choose another name.")
    if statistic.name in _REGISTRY and not replace:
        raise ValueError(f"a statistic named {statistic.name!r} is already registered; pass replace=True.")
    for name in dict.fromkeys((statistic.name, statistic.scalar_name)):
        if name in RESERVED_NAMES:
            raise ValueError(f"statistic {statistic.name!r}: the name {name!r} is reserved (the callback logs or "
                             f"the report holds a value of its own under it: {', '.join(sorted(RESERVED_NAMES))}); "
                             "choose another name.")
        for other in _REGISTRY.values():
            if other.name != statistic.name and name in (other.name, other.scalar_name):
                raise ValueError(f"statistic {statistic.name!r}: the name {name!r} is taken by the statistic "
                                 f"{other.name!r} (its name or logged scalar); choose another name.")
    _REGISTRY[statistic.name] = statistic
    return statistic


def missing_registrations(method: str, statistic_names: list[str] | tuple[str, ...]) -> str | None:
    """Why this process cannot run what a callback was configured with, or None: ``method`` is not a registered
    explainer or a statistic of ``statistic_names`` is not registered here.

    A spawned worker (``ddp_spawn``, a ``spawn`` start method) imports the training script's
    modules but does not run its ``if __name__ == "__main__":`` block: what was registered
    there exists in the parent only.

    Example:
        >>> missing_registrations("igos", ["insertion_auc"]) is None
        True
        >>> print(missing_registrations("igos", ["my_score"]))  # doctest: +ELLIPSIS
        the statistic 'my_score' is not registered in this process ...
    """
    from lightning_igos.core.explainers import explainer_names

    _register_builtins()
    missing = [] if method in explainer_names() else [f"the explainer {method!r}"]
    missing += [f"the statistic {name!r}" for name in statistic_names if name not in _REGISTRY]
    if not missing:
        return None
    return (f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not registered in this process "
            "(a worker started by ddp_spawn or another spawning strategy runs the module level of the training "
            "script's modules, not its `if __name__ == \"__main__\":` block). Call register_explainer / "
            "register_statistic at the module level of an importable module, and import it at the top of the "
            "training script.")


#: The range of each built-in statistic with the softmax score (what the check uses).
_BUILTIN_BOUNDS: dict[str, tuple[float, float]] = {
    **dict.fromkeys(("clean_score", "insertion_auc", "deletion_auc", "mask_mean", "mask_min", "mask_frac_below_half",
                     "road_morf", "road_lerf", "pointing", "empty_fraction", "needed_fraction"), (0.0, 1.0)),
    "insertion_auc_normalized": (0.0, float("inf")), "deletion_auc_normalized": (0.0, float("inf")),
    "road_gap": (-1.0, 1.0),
}


def value_range(statistic: Statistic) -> tuple[float, float] | None:
    """The values ``statistic`` can take (its :attr:`~Statistic.bounds`, or a built-in's), None when unknown.

    Example:
        >>> value_range(get_statistic("road_gap"))
        (-1.0, 1.0)
    """
    if statistic.bounds is not None:
        return statistic.bounds
    builtin = _BUILTIN_BOUNDS.get(statistic.name)
    return builtin if builtin is not None and _BUILTIN_COMPUTE.get(statistic.name) is statistic.compute else None


def statistic_values(statistic: Statistic, evaluation: Evaluation) -> Tensor:
    """``statistic.compute(evaluation)`` checked: a float ``(B,)`` tensor without an infinite value or mean.

    A value may be NaN (undefined for that image: it fails every gate on the mean); anything
    else a report or gate could misread is an error naming the statistic: a result that is not
    a tensor, one of another shape than ``(B,)`` (a 0-dim tensor, ``(2B,)``, ...), an infinite
    value, or an infinite mean (float64 sum of finite values that overflows).

    Example:
        >>> bad = Statistic("doubled", lambda e: e.curves.clean_score.repeat(2))
        >>> import torch
        >>> from torch import nn
        >>> from lightning_igos.core.config import IGOSConfig
        >>> from lightning_igos.core.evaluation import evaluate
        >>> ev = evaluate(nn.Sequential(nn.Flatten(), nn.Linear(12, 2)), torch.randn(2, 3, 2, 2), [0, 1],
        ...               IGOSConfig(method="gradient", metric_steps=2))
        >>> statistic_values(bad, ev)
        Traceback (most recent call last):
        ...
        ValueError: statistic 'doubled' must give one value per image, a tensor shaped (2,); got shape (4,).
    """
    import torch

    values = statistic.compute(evaluation)
    if not isinstance(values, Tensor):
        raise TypeError(f"statistic {statistic.name!r} must give a tensor shaped (B,) (one value per image), "
                        f"got {type(values).__name__}.")
    batch = len(evaluation)
    if tuple(values.shape) != (batch,):
        raise ValueError(f"statistic {statistic.name!r} must give one value per image, a tensor shaped ({batch},); "
                         f"got shape {tuple(values.shape)}.")
    if values.is_complex():
        raise TypeError(f"statistic {statistic.name!r} must give real numbers, got dtype {values.dtype}.")
    values = values.detach().float()
    infinite = torch.isinf(values)
    if bool(infinite.any()):
        where = infinite.nonzero().flatten().tolist()
        raise ValueError(f"statistic {statistic.name!r} gave an infinite value for image(s) {where[:10]}: a value "
                         "must be finite, or NaN where it is undefined (an infinite mean would pass any gate).")
    finite = values[~torch.isnan(values)].double()
    if finite.numel() and not bool(torch.isfinite(finite.sum())):
        raise ValueError(f"statistic {statistic.name!r}: its values overflow the mean ({finite.abs().max():.3g}).")
    return values


def unregister_statistic(name: str) -> None:
    """Remove the statistic ``name`` (e.g. one a test registered)."""
    _register_builtins()
    _REGISTRY.pop(name, None)


def statistics(config: IGOSConfig | None = None, has_boxes: bool = False) -> tuple[Statistic, ...]:
    """The registered statistics in report order (built-ins first); with ``config``, those that apply to it."""
    _register_builtins()
    every = tuple(_REGISTRY.values())
    return every if config is None else tuple(s for s in every if s.applies_to(config, has_boxes))


def get_statistic(name: str) -> Statistic:
    """The statistic ``name``; an unknown name lists the known ones."""
    _register_builtins()
    if name not in _REGISTRY:
        raise ValueError(f"no statistic named {name!r}; known: {', '.join(_REGISTRY)}.")
    return _REGISTRY[name]


# --------------------------------------------------------------------------- built-ins

def _mask(name: str) -> Callable[[Evaluation], Tensor]:
    def compute(evaluation: Evaluation) -> Tensor:
        from lightning_igos.core.solver import mask_statistics

        return mask_statistics(evaluation.explanation.mask)[name]

    return compute


def _has_mask(config: IGOSConfig, has_boxes: bool) -> bool:
    from lightning_igos.core.explainers import get_explainer

    return get_explainer(config.method).has_mask


def _road(attribute: str) -> Callable[[Evaluation], Tensor]:
    return lambda evaluation: getattr(evaluation.road, attribute)


def _needed_fraction(evaluation: Evaluation) -> Tensor:
    """The smallest fraction of top pixels whose insertion gives back half the clean score."""
    from lightning_igos.core.causal import needed_fraction

    curves = evaluation.curves
    return needed_fraction(curves.insertion, curves.fractions, curves.clean_score)


def _substrate_score(evaluation: Evaluation) -> Tensor:
    """The deletion curve's end over its start: the fully substituted image's score relative to the clean one."""
    curves = evaluation.curves
    return curves.deletion[:, -1] / curves.clean_score.clamp_min(1e-8)


def _pointing(evaluation: Evaluation) -> Tensor:
    from lightning_igos.core.pointing import pointing_hits

    return pointing_hits(evaluation.saliency, evaluation.boxes.to(evaluation.saliency.device)).float()


_BUILTINS_REGISTERED = False
_BUILTIN_COMPUTE: dict[str, Callable] = {}  # name -> compute of each built-in (a replaced one has another)


def _register_builtins() -> None:
    global _BUILTINS_REGISTERED
    if _BUILTINS_REGISTERED:
        return
    _BUILTINS_REGISTERED = True
    auc, normalized = "insertion and deletion AUC", "insertion and deletion AUC, normalized"

    def road(config: IGOSConfig, has_boxes: bool) -> bool:
        return config.road

    for statistic in (
        Statistic("clean_score", lambda e: e.curves.clean_score, label="clean prob", scalar="target_prob",
                  group="target probability"),
        Statistic("insertion_auc", lambda e: e.curves.insertion_auc, True, label="insertion AUC", group=auc),
        Statistic("deletion_auc", lambda e: e.curves.deletion_auc, False, label="deletion AUC", group=auc),
        Statistic("insertion_auc_normalized", lambda e: e.curves.insertion_auc_normalized, True,
                  label="insertion (norm.)", group=normalized),
        Statistic("deletion_auc_normalized", lambda e: e.curves.deletion_auc_normalized, False,
                  label="deletion (norm.)", group=normalized),
        Statistic("needed_fraction", _needed_fraction, False, label="needed fraction", fmt=".3f",
                  group="needed fraction"),
        Statistic("substrate_score", _substrate_score, False, label="substrate score", group="substrate"),
        Statistic("mask_mean", _mask("mask_mean"), label="mask mean", group="mask", applies=_has_mask),
        Statistic("mask_min", _mask("mask_min"), reduction="min", group="mask", applies=_has_mask),
        Statistic("mask_frac_below_half", _mask("mask_frac_below_half"), group="mask", applies=_has_mask),
        Statistic("road_morf", _road("morf_area"), False, label="ROAD MoRF", group="ROAD", applies=road),
        Statistic("road_lerf", _road("lerf_area"), True, label="ROAD LeRF", group="ROAD", applies=road),
        Statistic("road_gap", _road("gap"), True, label="ROAD gap", group="ROAD", applies=road),
        Statistic("pointing", _pointing, True, label="pointing", fmt=".0f", group="pointing game",
                  applies=lambda config, has_boxes: has_boxes),
        Statistic("empty_fraction", lambda e: e.empty.float(), False, group="empty explanations",
                  in_report=False),
    ):
        _REGISTRY[statistic.name] = statistic
        _BUILTIN_COMPUTE[statistic.name] = statistic.compute
