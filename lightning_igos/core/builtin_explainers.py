"""The built-in explainers, registered in :mod:`~lightning_igos.core.explainers` when :mod:`lightning_igos.core` is
imported: ``"igos"`` and ``"igos++"`` (the solver), ``"gradient"`` and ``"integrated_gradients"``, and the
model-free controls ``"edge_map"`` and ``"random"``. Each is a thin adapter from an
:class:`~lightning_igos.core.explainers.ExplainRequest` to a kernel that trusts its inputs.

Example:
    >>> from lightning_igos.core.explainers import BUILTIN_EXPLAINERS, explainer_names
    >>> explainer_names()[:len(BUILTIN_EXPLAINERS)] == BUILTIN_EXPLAINERS
    True
"""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_igos.core import solver
from lightning_igos.core.comparison import edge_map
from lightning_igos.core.config import IGOSConfig
from lightning_igos.core.explainers import ExplainRequest, register_explainer
from lightning_igos.core.gradients import _gradient_map, _integrated_gradient_map
from lightning_igos.core.solver import Explanation, _resolve_mask_size


def _igos(request: ExplainRequest) -> Explanation:
    size = _resolve_mask_size(request.config.mask_size, *request.images.shape[-2:])
    # Looked up at call time, so a test (or a profiler) that replaces ``solver.solve`` reaches every shell.
    return solver.solve(request.runner, request.images, request.baseline, request.targets, request.config,
                        seed=request.seed, mask_size=size, clean_logits=request.clean_logits)


def _gradient(request: ExplainRequest) -> Tensor:
    return _gradient_map(request.runner, request.images, request.targets)


def _integrated_gradients(request: ExplainRequest) -> Tensor:
    return _integrated_gradient_map(request.runner, request.images, request.baseline, request.targets,
                                   request.config.ig_steps)


def _edge_map(request: ExplainRequest) -> Tensor:
    return edge_map(request.images)


def _random(request: ExplainRequest) -> Tensor:
    shape = (request.images.shape[0], 1, *request.images.shape[-2:])
    return torch.rand(shape, generator=request.generator()).to(request.images.device)


def _igos_passes(config: IGOSConfig) -> float:
    return config.iterations * config.ig_steps * (2 if config.method == "igos++" else 1)


register_explainer("igos", _igos, passes=_igos_passes, has_mask=True,
                   description="I-GOS (integrated-gradient optimised mask)")
register_explainer("igos++", _igos, passes=_igos_passes, has_mask=True,
                   description="iGOS++ (deletion and insertion masks)")
register_explainer("gradient", _gradient, passes=lambda config: 1, description="vanilla gradient")
register_explainer("integrated_gradients", _integrated_gradients, passes=lambda config: config.ig_steps,
                   description="integrated gradients, ig_steps points from the baseline")
register_explainer("edge_map", _edge_map, passes=lambda config: 0,
                   description="model-free control: |image - blur(image)|")
register_explainer("random", _random, passes=lambda config: 0, description="model-free control: uniform noise")
