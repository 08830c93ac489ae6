"""lightning-igos: I-GOS explanations and causal insertion/deletion AUCs, epoch by epoch.

Every public name is imported on first use (PEP 562), so ``import lightning_igos`` and
``lightning_igos.__version__`` cost no torch import, and the command-line tool answers
``--version`` and ``--help`` at once. ``from lightning_igos import igos, IGOSCallback`` works
as with eager imports: the solver and metric functions need torch alone; the torchmetrics
classes, the Lightning callback and the probe files pull in what they need when asked for.

The modules, in layers: each imports only modules of its own layer or of the layers before it
(imports inside functions included; annotations only under ``TYPE_CHECKING``).

1. Leaves and values. :mod:`~lightning_igos.core.runtime` (side-effect-free context managers,
   batching, seeds), :mod:`~lightning_igos.core.scoring` (the score that is explained),
   :mod:`~lightning_igos.core.baselines` (baselines and substrates), :mod:`~lightning_igos.intervals`
   (confidence intervals), :mod:`~lightning_igos.core.explainers` (the explainer registry, which imports
   nothing of the package), :mod:`~lightning_igos.class_names`, :mod:`~lightning_igos.quiet_logs`;
   then :mod:`~lightning_igos.core.validation` (argument checks), :mod:`~lightning_igos.core.runner`
   (every forward) and :mod:`~lightning_igos.core.config` (``IGOSConfig``, a value that checks
   ``method`` against the registry).
2. Kernels, functions on tensors: :mod:`~lightning_igos.core.solver` (I-GOS, ``igos``),
   :mod:`~lightning_igos.core.gradients`, :mod:`~lightning_igos.core.causal` (insertion and deletion
   curves), :mod:`~lightning_igos.core.road`, :mod:`~lightning_igos.core.pointing` and
   :mod:`~lightning_igos.core.comparison` (rank correlation, edge map, randomised network copy).
3. The built-ins on the kernels: :mod:`~lightning_igos.core.builtin_explainers` (registered when
   :mod:`lightning_igos.core` is imported) and :mod:`~lightning_igos.core.statistics` (the per-image
   statistics registry and its built-in statistics); :mod:`~lightning_igos.metrics` (torchmetrics
   classes) and :mod:`lightning_igos.render` (heatmaps, curves, panels, PNGs and the notebook HTML,
   drawn from tensors; it reads an evaluation by its attributes, never importing it).
4. :mod:`~lightning_igos.core.evaluation`: ``evaluate``, which explains, scores and summarises a batch
   (its notebook display draws with :mod:`lightning_igos.render.notebook`).
5. Orchestrators on ``evaluate``: :mod:`~lightning_igos.core.sanity` (the model-randomisation check).
6. The shells: :mod:`~lightning_igos.probe` (probe files), :mod:`lightning_igos.callback` (the Lightning
   callback), :mod:`lightning_igos.cli` (``lightning-igos check`` and ``compare``), :mod:`lightning_igos.demo`,
   ``python -m lightning_igos`` (:mod:`~lightning_igos.__main__`), and :mod:`~lightning_igos.causal`,
   the short import path of :func:`~lightning_igos.core.causal.causal_curves`.
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
