"""Causal insertion and deletion metrics: see :mod:`lightning_igos.core.causal` (this path is kept for imports)."""

from lightning_igos.core.causal import CausalCurves, auc, causal_curves, pixel_counts, pixel_ranks

__all__ = ["CausalCurves", "auc", "causal_curves", "pixel_counts", "pixel_ranks"]
