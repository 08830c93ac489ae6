"""lightning-igos: I-GOS explanations and causal insertion/deletion AUCs, epoch by epoch.

The solver and the metric functions import with torch alone; the torchmetrics classes,
the Lightning callback and the probe files are imported on first use, so the
command-line tool and plain-tensor users do not pay for Lightning's import.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from lightning_igos.core.causal import CausalCurves, causal_curves
from lightning_igos.core.gradients import gradient_saliency, integrated_gradients
from lightning_igos.core.solver import Explanation, igos

if TYPE_CHECKING:
    from lightning_igos.callback import IGOSCallback
    from lightning_igos.metrics import DeletionAUC, InsertionAUC
    from lightning_igos.probe import Probe, load_probe, save_probe

__version__ = "0.1.0"

_LAZY = {
    "IGOSCallback": "lightning_igos.callback",
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
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lightning_igos' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
