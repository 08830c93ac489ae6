"""lightning-igos: I-GOS explanations and causal insertion/deletion AUCs, epoch by epoch.

Every public name is imported on first use (PEP 562), so ``import lightning_igos`` and
``lightning_igos.__version__`` cost no torch import, and the command-line tool answers
``--version`` and ``--help`` at once. ``from lightning_igos import igos, IGOSCallback`` works
as with eager imports: the solver and metric functions need torch alone; the torchmetrics
classes, the Lightning callback and the probe files pull in what they need when asked for.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lightning_igos.callback import IGOSCallback
    from lightning_igos.core.causal import CausalCurves, causal_curves
    from lightning_igos.core.gradients import gradient_saliency, integrated_gradients
    from lightning_igos.core.solver import Explanation, igos
    from lightning_igos.metrics import DeletionAUC, InsertionAUC
    from lightning_igos.probe import Probe, load_probe, save_probe

__version__ = "0.1.0"

#: Each public name and the module it is imported from on first use.
_LAZY = {
    "CausalCurves": "lightning_igos.core.causal",
    "causal_curves": "lightning_igos.core.causal",
    "gradient_saliency": "lightning_igos.core.gradients",
    "integrated_gradients": "lightning_igos.core.gradients",
    "Explanation": "lightning_igos.core.solver",
    "igos": "lightning_igos.core.solver",
    "IGOSCallback": "lightning_igos.callback",
    # For ``lightning.pytorch.Trainer``; needs the ``lightning`` package, so not in ``__all__``.
    "LightningIGOSCallback": "lightning_igos.callback",
    "InsertionAUC": "lightning_igos.metrics",
    "DeletionAUC": "lightning_igos.metrics",
    "Probe": "lightning_igos.probe",
    "save_probe": "lightning_igos.probe",
    "load_probe": "lightning_igos.probe",
}

__all__ = [
    "CausalCurves",
    "DeletionAUC",
    "Explanation",
    "IGOSCallback",
    "InsertionAUC",
    "Probe",
    "causal_curves",
    "gradient_saliency",
    "igos",
    "integrated_gradients",
    "load_probe",
    "save_probe",
    "__version__",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
