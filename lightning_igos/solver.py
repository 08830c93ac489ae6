"""The I-GOS solver: see :mod:`lightning_igos.core.solver` (this path is kept for imports)."""

from lightning_igos.core.solver import SOLVER_METHODS as METHODS
from lightning_igos.core.solver import Explanation, igos

__all__ = ["METHODS", "Explanation", "igos"]
