"""lightning-igos: I-GOS explanations and causal insertion/deletion AUCs, epoch by epoch."""

from lightning_igos.causal import CausalCurves, causal_curves
from lightning_igos.gradients import gradient_saliency, integrated_gradients
from lightning_igos.metrics import DeletionAUC, InsertionAUC
from lightning_igos.solver import Explanation, igos

__version__ = "0.1.0"

__all__ = [
    "CausalCurves",
    "DeletionAUC",
    "Explanation",
    "InsertionAUC",
    "causal_curves",
    "gradient_saliency",
    "igos",
    "integrated_gradients",
    "__version__",
]
