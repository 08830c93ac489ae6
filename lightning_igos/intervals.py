"""Seeded bootstrap confidence intervals over probe images (numpy only: no torch import).

A probe of a few images gives a mean that moves by a few hundredths with the probe's make-up
alone. :func:`bootstrap_interval` gives the percentile-bootstrap interval of the mean of
per-image values, :func:`paired_interval` that of the mean of paired differences (the same
images scored twice). Both resample the images with a fixed seed, so the same values give the
same interval on every machine and in every report, and images whose value is missing (None
or NaN) are left out.

Example:
    >>> lo, hi = bootstrap_interval([0.2, 0.4, 0.3, 0.5, 0.35, 0.45])
    >>> round(lo, 2) <= 0.367 <= round(hi, 2)
    True
    >>> paired_interval([0.5, 0.6, 0.7], [0.5, 0.6, 0.7])
    (0.0, 0.0)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["LEVEL", "RESAMPLES", "SEED", "bootstrap_interval", "finite_values", "paired_interval"]

#: The coverage of every interval the reports show.
LEVEL = 0.95
#: Bootstrap resamples per interval (enough for the 2.5% and 97.5% percentiles to settle to a few 1e-4).
RESAMPLES = 2000
#: The resampling seed: the same values always give the same interval.
SEED = 0


def finite_values(values: Sequence[float | None]) -> np.ndarray:
    """``values`` as float64 with the missing ones (None, NaN, infinite) left out.

    Example:
        >>> finite_values([0.5, None, float("nan"), 0.25]).tolist()
        [0.5, 0.25]
    """
    array = np.array([math.nan if v is None else float(v) for v in values], dtype=np.float64)
    return array[np.isfinite(array)]


def bootstrap_interval(values: Sequence[float | None], level: float = LEVEL, resamples: int = RESAMPLES,
                       seed: int = SEED) -> tuple[float, float]:
    """The percentile-bootstrap interval of the mean of ``values`` (images resampled with replacement).

    Missing values are left out; with none left the interval is ``(nan, nan)``, with one it
    is that value twice.

    Args:
        values: one number per probe image.
        level: the coverage, in (0, 1).
        resamples: how many bootstrap resamples (>= 1).
        seed: the resampling seed.

    Example:
        >>> bootstrap_interval([0.3])
        (0.3, 0.3)
        >>> lo, hi = bootstrap_interval([0.1, 0.9] * 8)
        >>> 0.25 < lo < 0.5 < hi < 0.75
        True
    """
    if not 0 < level < 1:
        raise ValueError(f"`level` must lie in (0, 1), got {level!r}.")
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 1:
        raise ValueError(f"`resamples` must be a positive integer, got {resamples!r}.")
    data = finite_values(values)
    if data.size == 0:
        return (math.nan, math.nan)
    if data.size == 1 or np.all(data == data[0]):
        return (float(data[0]), float(data[0]))
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(resamples, data.size))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return (float(low), float(high))


def paired_interval(old: Sequence[float | None], new: Sequence[float | None], level: float = LEVEL,
                    resamples: int = RESAMPLES, seed: int = SEED) -> tuple[float, float]:
    """The bootstrap interval of the mean of ``new[i] - old[i]`` (pairs with a missing value left out).

    Resampling the pairs keeps what the two runs share (the same image is easy or hard for
    both), so the interval is much narrower than either mean's when the runs agree.

    Example:
        >>> lo, hi = paired_interval([0.4, 0.5, 0.6, 0.7], [0.3, 0.45, 0.5, 0.62])
        >>> -0.1 <= lo < hi <= -0.05
        True
    """
    if len(old) != len(new):
        raise ValueError(f"`old` and `new` must pair up image by image, got {len(old)} and {len(new)} values.")
    differences = [None if a is None or b is None else float(b) - float(a) for a, b in zip(old, new)]
    return bootstrap_interval(differences, level, resamples, seed)
