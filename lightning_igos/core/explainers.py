"""Explainers by name: what ``IGOSConfig(method=...)``, ``IGOSCallback(method=...)`` and ``check --method`` run.

An explainer is a function of an :class:`ExplainRequest` that returns a saliency
``(B, 1, h, w)`` (higher is more relevant) or a full
:class:`~lightning_igos.core.solver.Explanation`. :func:`register_explainer` adds one under
a name; from then on every shell can run it, scored by the same metrics as I-GOS::

    import torch
    from lightning_igos.core.explainers import register_explainer

    @register_explainer("input_x_gradient", passes=lambda config: 1)
    def input_x_gradient(request):
        x = request.images.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(request.scores(x).sum(), x)
        return (x * grad).sum(1, keepdim=True)

    # IGOSCallback(method="input_x_gradient"), or: lightning-igos check --plugin my_module --method input_x_gradient

The request's :meth:`~ExplainRequest.scores` runs the model through the evaluation's
:class:`~lightning_igos.core.runner.ModelRunner` (its dtype, autocast and counting), with
gradients on; the function must not touch the model's parameters or their ``.grad`` (take
gradients with ``torch.autograd.grad``, as above). A saliency that is NaN anywhere or the
same everywhere ranks nothing, and is flagged as an empty explanation.

Built in (registered by :mod:`~lightning_igos.core.builtin_explainers` when
:mod:`lightning_igos.core` is imported): ``"igos"`` and ``"igos++"`` (the solver), ``"gradient"`` and
``"integrated_gradients"`` (the classic comparisons), and two model-free controls that a
faithfulness metric must tell apart from an explanation: ``"edge_map"`` (``|image -
blur(image)|``) and ``"random"`` (uniform noise from the seed). This module is the registry
alone: it imports nothing of the package, so :class:`~lightning_igos.core.config.IGOSConfig`
checks ``method`` against it.

Example:
    >>> from lightning_igos.core.config import IGOSConfig
    >>> sorted(explainer_names())[:4]
    ['edge_map', 'gradient', 'igos', 'igos++']
    >>> get_explainer("igos").passes(IGOSConfig(iterations=4, ig_steps=10))
    40
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

import torch
from torch import Tensor

if TYPE_CHECKING:
    from lightning_igos.core.config import IGOSConfig
    from lightning_igos.core.runner import ModelRunner
    from lightning_igos.core.solver import Explanation

#: The names registered when the package is imported (read by ``lightning-igos --help``).
BUILTIN_EXPLAINERS = ("igos", "igos++", "gradient", "integrated_gradients", "edge_map", "random")


@dataclass(frozen=True)
class ExplainRequest:
    """What an explainer gets: trusted inputs on the model's device and the evaluation's runner.

    Attributes:
        runner: runs the model (dtype, autocast, batch cap, counting); see :meth:`scores`.
        images: ``(B, C, H, W)`` float32 images as the model takes them.
        targets: ``(B,)`` long, the class to explain per image.
        config: the evaluation's options (the explainer reads what it needs, e.g. ``ig_steps``).
        baseline: ``(B, C, H, W)`` the config's baseline images (``config.baseline`` made).
        clean_logits: the model's outputs on ``images``, already computed once for everyone.
        seed: the seed of any noise the explainer draws (from the evaluation's generator).
    """

    runner: ModelRunner
    images: Tensor
    targets: Tensor
    config: IGOSConfig
    baseline: Tensor
    clean_logits: Tensor
    seed: int

    def scores(self, inputs: Tensor, targets: Tensor | None = None) -> Tensor:
        """``(N,)`` the target's score of each input (one forward; the request's targets by default)."""
        return self.runner.scores(inputs, self.targets if targets is None else targets)

    def generator(self) -> torch.Generator:
        """A CPU generator seeded with :attr:`seed` (draw on the CPU, then move: the same on every device)."""
        return torch.Generator().manual_seed(self.seed)


ExplainFn = Callable[[ExplainRequest], Union[Tensor, "Explanation"]]
#: ``passes(config) -> number``: model images with gradients per explained image (for progress totals).
PassesFn = Callable[["IGOSConfig"], float]


@dataclass(frozen=True)
class Explainer:
    """A registered explainer: its name, its function and how many gradient passes it costs per image."""

    name: str
    explain: ExplainFn
    passes: PassesFn
    description: str = ""
    has_mask: bool = False


_REGISTRY: dict[str, Explainer] = {}
#: Built-in names whose explainer is not registered yet: :mod:`~lightning_igos.core.builtin_explainers`
#: registers them when :mod:`lightning_igos.core` is imported, after :class:`IGOSConfig`'s defaults are checked.
_PENDING_BUILTINS: list[str] = list(BUILTIN_EXPLAINERS)


def register_explainer(name: str, explain: ExplainFn | None = None, *, passes: PassesFn | None = None,
                       description: str = "", has_mask: bool = False, replace: bool = False) -> Callable:
    """Register ``explain`` under ``name`` (usable as a decorator); returns ``explain``.

    Args:
        name: what ``method=`` and ``--method`` take: letters, digits and ``_+-.``.
        explain: ``explain(request: ExplainRequest) -> saliency (B, 1, h, w) or Explanation``.
        passes: ``passes(config) -> float``, the model images with gradients it pushes per
            explained image (progress totals); None counts one.
        description: one line for listings.
        has_mask: it returns an :class:`~lightning_igos.core.solver.Explanation` with a mask (the
            mask statistics apply); a saliency-only explainer leaves it False.
        replace: allow replacing an existing registration (otherwise a name is taken once).
    """
    if not isinstance(name, str) or not name or not all(c.isalnum() or c in "_+-." for c in name):
        raise ValueError(f"`name` must be a non-empty name of letters, digits and _+-., got {name!r}.")
    if passes is not None and not callable(passes):
        raise TypeError(f"`passes` must be None or a callable config -> number, got {passes!r}.")

    def add(function: ExplainFn) -> ExplainFn:
        if not callable(function):
            raise TypeError(f"`explain` must be a callable request -> saliency, got {function!r}.")
        if name in _REGISTRY and not replace and _REGISTRY[name].explain is not function:
            raise ValueError(f"an explainer named {name!r} is already registered; pass replace=True to replace it.")
        _REGISTRY[name] = Explainer(name, function, passes or (lambda config: 1), description, has_mask)
        if name in _PENDING_BUILTINS:
            _PENDING_BUILTINS.remove(name)
        return function

    return add if explain is None else add(explain)


def unregister_explainer(name: str) -> None:
    """Remove the explainer ``name`` (e.g. one a test registered); built-ins come back only on restart."""
    _REGISTRY.pop(name, None)
    if name in _PENDING_BUILTINS:
        _PENDING_BUILTINS.remove(name)


def get_explainer(name: str) -> Explainer:
    """The explainer registered as ``name``; an unknown name lists the known ones."""
    check_explainer_name(name)
    return _REGISTRY[name]


def check_explainer_name(name: object) -> str:
    """``name`` if it names an explainer (a built-in counts before its module registers it), else the error
    that ``IGOSConfig(method=...)`` raises."""
    if not isinstance(name, str):
        raise TypeError(f"`method` must be a str, one of {explainer_names()}, got {name!r}.")
    if name not in _REGISTRY and name not in _PENDING_BUILTINS:
        raise ValueError(f"`method` must be a registered explainer, one of {explainer_names()}, got {name!r}. "
                         "Register others with lightning_igos.core.explainers.register_explainer.")
    return name


def explainer_names() -> tuple[str, ...]:
    """The registered names, built-ins first."""
    return (*_REGISTRY, *_PENDING_BUILTINS)
