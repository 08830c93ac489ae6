"""The functional core: functions on tensors that need torch alone, from the leaves to ``evaluate`` and the
sanity check (the layer order of its modules is in :mod:`lightning_igos`'s docstring).

Importing this package registers the built-in explainers (:mod:`~lightning_igos.core.builtin_explainers`) in
the registry (:mod:`~lightning_igos.core.explainers`), so every module of the core finds them there.
"""

from lightning_igos.core import builtin_explainers  # noqa: F401  (registers the built-in explainers)
