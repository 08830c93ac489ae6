"""The callback's quality scalars: one per registered per-image statistic that applies, and the epoch statistics.

A per-image statistic of one evaluation is declared once in :mod:`lightning_igos.core.statistics`
and reaches the callback through :func:`callback_scalars`. An *epoch statistic* needs more than
the epoch's evaluation (an earlier epoch's saliency, a second explanation on a randomised model): it
is declared once in :data:`EPOCH_STATISTICS`, which names its scalar, its chart, which way is
better and the :class:`~lightning_igos.callback.outputs.ShareResult` attribute holding its per-image
values (NaN where an empty explanation leaves it undefined). Everything that logs, counts, warns about,
charts or gives a monitor stand-in for these values iterates over that table. To add one: its
declaration here, its ``ShareResult`` field, the callback's keyword that turns it on, and the
callback's ``due`` and ``compute`` methods the declaration names (plus its checkpoint state, if
it keeps one across epochs as ``stability`` keeps the previous maps).

Example:
    >>> [s.short for s in callback_scalars(stability=True)][-1]
    'stability'
    >>> [e.short for e in EPOCH_STATISTICS]
    ['stability', 'sanity_correlation']
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from lightning_igos.core.config import DEFAULTS, IGOSConfig
from lightning_igos.core.statistics import statistics

__all__ = [
    "EPOCH_STATISTICS", "SANITY_SCALAR", "STABILITY_SCALAR", "EpochStatistic", "Scalar", "callback_scalars",
    "scalar_shorts",
]


@dataclass(frozen=True)
class Scalar:
    """One quality scalar of the callback, ``<prefix>/<short>``: a statistic's probe reduction, or an extra.

    ``statistic`` names the per-image statistic it reduces (None for an epoch statistic).
    """

    short: str
    group: str
    higher_is_better: bool | None
    reduction: str = "mean"
    statistic: str | None = None


@dataclass(frozen=True)
class EpochStatistic:
    """A per-image statistic of the callback that spans epochs or runs, logged as ``<prefix>/<short>``.

    ``attribute`` is the :class:`~lightning_igos.callback.outputs.ShareResult` field holding its
    ``(n,)`` values (None on an epoch without one); ``option`` the callback attribute that turns it
    on (neither None nor False); ``what`` names it in the warning about images without a value.
    ``due`` and ``compute`` name the callback's methods ``due(trainer) -> bool`` (whether this
    explained epoch computes it: the same answer on every rank) and ``compute(trainer, pl_module,
    images, indices, evaluation, result) -> Tensor`` (the share's ``(n,)`` values on the CPU, NaN
    where undefined).
    """

    short: str
    group: str
    higher_is_better: bool
    attribute: str
    option: str
    what: str
    due: str
    compute: str

    @property
    def scalar(self) -> Scalar:
        return Scalar(self.short, self.group, self.higher_is_better)


#: The epoch statistics, in the order they are logged: each one's declaration is here and only here.
EPOCH_STATISTICS = (
    # Higher is better: the explanation changed less since the previous explained epoch.
    EpochStatistic("stability", "stability across epochs", True, "stability", "stability", "stability",
                   due="_stability_due", compute="_stability_values"),
    # Lower is better: the saliency depends on the trained weights.
    EpochStatistic("sanity_correlation", "sanity check", False, "sanity", "sanity_every_n", "sanity check",
                   due="_sanity_due", compute="_sanity_values"),
)
#: Logged with ``stability=True`` from the second explained epoch on (higher is better: the explanation changed less).
STABILITY_SCALAR = EPOCH_STATISTICS[0].short
#: Logged with ``sanity_every_n`` on the epochs the sanity check runs (lower is better).
SANITY_SCALAR = EPOCH_STATISTICS[1].short


def callback_scalars(config: IGOSConfig = DEFAULTS, has_boxes: bool = False, stability: bool = False,
                     sanity: bool = False, epoch: Iterable[str] = ()) -> tuple[Scalar, ...]:
    """The quality scalars a callback with these options logs, in order (the registered statistics that apply).

    The epoch statistics logged are those named in ``epoch`` (short names), ``stability`` and ``sanity``.

    Example:
        >>> [s.short for s in callback_scalars()][:3]
        ['target_prob', 'insertion_auc', 'deletion_auc']
    """
    out = [Scalar(s.scalar_name, s.group or s.scalar_name, s.higher_is_better, s.reduction, s.name)
           for s in statistics(config, has_boxes)]
    enabled = {*epoch, *([STABILITY_SCALAR] if stability else []), *([SANITY_SCALAR] if sanity else [])}
    out.extend(e.scalar for e in EPOCH_STATISTICS if e.short in enabled)
    return tuple(out)


def scalar_shorts(config: IGOSConfig = DEFAULTS, has_boxes: bool = False, stability: bool = False,
                  sanity: bool = False) -> tuple[str, ...]:
    """The short names of the quality scalars a callback with these options logs, in order."""
    return tuple(s.short for s in callback_scalars(config, has_boxes, stability, sanity))


def __getattr__(name: str) -> Any:
    # The default callback's scalars, read from the statistics registry when asked for.
    if name == "SCALARS":
        return scalar_shorts()
    if name == "SCALAR_NAMES":
        return tuple(f"igos/{short}" for short in scalar_shorts())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
