"""What ``lightning-igos check`` runs with: :class:`CheckSettings` and its gates, :class:`Requirement`.

Example:
    >>> settings = CheckSettings(model="pkg.models:Net", checkpoint="run.ckpt", probe="probe.pt",
    ...                          min_insertion=0.3, require=[parse_requirement("road_lerf>=0.4")])
    >>> [(r.statistic, r.op, r.limit) for r in settings.requirements()]
    [('insertion_auc', '>=', 0.3), ('road_lerf', '>=', 0.4)]
"""

from __future__ import annotations

import math
import operator
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from lightning_igos.core.config import IGOSConfig
from lightning_igos.core.validation import check_bool
from lightning_igos.probe import MAX_PROBE_ELEMENTS

__all__ = ["CheckSettings", "Requirement", "parse_requirement"]

_OPERATORS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}


@dataclass(frozen=True)
class Requirement:
    """A gate on the probe mean of one reported statistic: ``statistic op limit``.

    ``name`` is what the report calls it (``"require"``, or ``"min_insertion"`` and
    ``"max_deletion"`` for those options).

    Example:
        >>> Requirement("road_lerf", ">=", 0.4).holds(0.5)
        True
    """

    statistic: str
    op: str
    limit: float
    name: str = "require"

    def __post_init__(self) -> None:
        if self.op not in _OPERATORS:
            raise ValueError(f"`op` must be one of {tuple(_OPERATORS)}, got {self.op!r}.")
        if not math.isfinite(self.limit):
            raise ValueError(f"`limit` must be a finite number, got {self.limit!r}.")

    def holds(self, value: float) -> bool:
        return bool(_OPERATORS[self.op](value, self.limit))

    def decided(self, low: float, high: float) -> str | None:
        """``"fail"`` when no value in ``[low, high]`` meets it, ``"pass"`` when every value past the range's ends
        does, else None.

        A limit at an end that some value meets decides nothing (``insertion_auc>=0`` is how one
        gates on NaN alone); ``insertion_auc>1`` can never pass.

        Example:
            >>> Requirement("insertion_auc", ">=", 5).decided(0, 1), Requirement("road_gap", ">=", -2).decided(-1, 1)
            ('fail', 'pass')
        """
        upward = self.op in (">=", ">")
        if self.limit > high or (self.limit == high and self.op == ">"):
            return "fail" if upward else "pass"
        if self.limit < low or (self.limit == low and self.op == "<"):
            return "pass" if upward else "fail"
        return None

    def __str__(self) -> str:
        return f"{self.statistic}{self.op}{self.limit:g}"


def parse_requirement(text: str) -> Requirement:
    """``"NAME>=X"`` (or ``<=``, ``>``, ``<``) as a :class:`Requirement`; a malformed text raises ValueError.

    Example:
        >>> parse_requirement("deletion_auc <= 0.05")
        Requirement(statistic='deletion_auc', op='<=', limit=0.05, name='require')
    """
    match = re.fullmatch(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*(>=|<=|>|<)\s*([^\s]+)\s*", str(text))
    if match is None:
        raise ValueError(f"must be NAME>=X, NAME<=X, NAME>X or NAME<X (e.g. road_lerf>=0.4), got {text!r}")
    try:
        limit = float(match.group(3))
    except ValueError:
        raise ValueError(f"the limit of {text!r} must be a number") from None
    if not math.isfinite(limit):
        raise ValueError(f"the limit of {text!r} must be a finite number")
    return Requirement(match.group(1), match.group(2), limit)


def code_sources(settings: CheckSettings) -> dict[str, object]:
    """What the report records of the code behind a run: the ``--plugin`` modules and where the explainer of
    the run's method is defined (``module.function``), so a plug-in that replaces a built-in explainer shows.

    Example:
        >>> code_sources(CheckSettings("m:M", "c", "p", plugins=["my_plugin"]))
        {'plugins': ['my_plugin'], 'explainer': 'lightning_igos.core.builtin_explainers._igos'}
    """
    from lightning_igos.core.explainers import get_explainer

    function = get_explainer(settings.config.method).explain
    where = f"{getattr(function, '__module__', '?')}.{getattr(function, '__qualname__', type(function).__name__)}"
    return {"plugins": list(settings.plugins), "explainer": where}


@dataclass(frozen=True)
class CheckSettings:
    """What ``lightning-igos check`` runs with (one field per command-line option).

    Attributes:
        model: ``package.module:ClassName`` of the model (``--model``).
        checkpoint: a Lightning checkpoint or a file holding a state dict.
        probe: a probe file written by :func:`lightning_igos.probe.save_probe`.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.
        min_insertion, max_deletion: thresholds on the mean AUCs (None: not checked).
        normalized: compare the thresholds with the AUCs divided by each image's clean score.
        report: write the JSON report here. images: write the panels into this folder.
        html: write the self-contained HTML report here.
        class_names: a class names file (one name per line, or a JSON list or object).
        verbose: show library logs.
        config: the solver and metric options.
        allow_empty: pass although some explanations are empty (for any of the
            :data:`~lightning_igos.core.solver.EMPTY_REASONS`); by default one empty explanation
            fails the check.
        max_probe_elements: the most image elements (``B * C * H * W``) the probe may hold
            (default :data:`~lightning_igos.probe.MAX_PROBE_ELEMENTS`); a larger one is an input error.
        sanity: also run the model-randomisation sanity check
            (:func:`~lightning_igos.core.sanity.sanity_check`) on the probe; it doubles the explaining cost.
        max_sanity_correlation: with ``sanity``, fail when the mean Spearman correlation between the
            explanations on the model and on its randomised copy is above this.
        require: more gates, each a :class:`Requirement` on the mean of any reported statistic
            (``--require road_lerf>=0.4``).
        plugins: modules imported before the run (``--plugin``), e.g. ones that register
            explainers or statistics.
        baseline_report: an earlier report of the same probe and method (``--baseline-report``): each statistic is
            compared with it image by image (:mod:`lightning_igos.cli.compare`).
        max_drop: ``(statistic, X or None)`` margins (``--max-drop NAME=X``): with ``baseline_report``, fail when the
            mean got worse by more than X (defaults: :data:`~lightning_igos.cli.compare.DEFAULT_MAX_DROP`).
        markdown: write the Markdown summary here (``--markdown``; also appended to ``$GITHUB_STEP_SUMMARY``).
    """

    model: str
    checkpoint: Path
    probe: Path
    device: str = "auto"
    min_insertion: float | None = None
    max_deletion: float | None = None
    normalized: bool = False
    report: Path | None = None
    images: Path | None = None
    verbose: bool = False
    config: IGOSConfig = field(default_factory=IGOSConfig)
    html: Path | None = None
    class_names: Path | None = None
    allow_empty: bool = False
    max_probe_elements: int = MAX_PROBE_ELEMENTS
    sanity: bool = False
    max_sanity_correlation: float = 0.5
    require: tuple[Requirement, ...] = ()
    plugins: tuple[str, ...] = ()
    baseline_report: Path | None = None
    max_drop: tuple[tuple[str, float | None], ...] = ()
    markdown: Path | None = None

    def __post_init__(self) -> None:
        for name in ("checkpoint", "probe", "report", "images", "html", "class_names", "baseline_report",
                     "markdown"):
            value = getattr(self, name)
            if isinstance(value, (str, os.PathLike)):
                object.__setattr__(self, name, Path(value))
        if not isinstance(self.config, IGOSConfig):
            raise TypeError(f"`config` must be an IGOSConfig, got {type(self.config).__name__}.")
        check_bool(self.allow_empty, "allow_empty")
        check_bool(self.sanity, "sanity")
        bound = self.max_sanity_correlation
        if isinstance(bound, bool) or not isinstance(bound, (int, float)) or not math.isfinite(bound):
            raise TypeError(f"`max_sanity_correlation` must be a finite number, got {bound!r}.")
        object.__setattr__(self, "require", tuple(self.require))
        if not all(isinstance(r, Requirement) for r in self.require):
            raise TypeError("`require` must hold Requirement objects (see parse_requirement).")
        object.__setattr__(self, "plugins", tuple(self.plugins))
        object.__setattr__(self, "max_drop", tuple((str(name), None if limit is None else float(limit))
                                                   for name, limit in self.max_drop))
        limit = self.max_probe_elements
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise ValueError(f"`max_probe_elements` must be a positive integer, got {limit!r}.")

    def requirements(self) -> tuple[Requirement, ...]:
        """Every gate: ``--min-insertion`` and ``--max-deletion`` (on the normalised AUCs with ``--normalized``),
        then each ``--require``."""
        suffix = "_normalized" if self.normalized else ""
        given = [("min_insertion", f"insertion_auc{suffix}", ">=", self.min_insertion),
                 ("max_deletion", f"deletion_auc{suffix}", "<=", self.max_deletion)]
        named = tuple(Requirement(metric, op, float(limit), name=name) for name, metric, op, limit in given
                      if limit is not None)
        return named + self.require
