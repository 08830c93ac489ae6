"""The pieces of the model-randomisation sanity check: rank correlation, the edge-map control, the network copy.

:func:`spearman` correlates two saliency maps per image (average ranks for ties; NaN for a map
that ranks nothing). :func:`edge_map` is the model-free control. :func:`randomize` and
:func:`randomized_copy` re-initialise the head and top blocks of a copy of a model
(:func:`network_copy`), chosen from the layers its forward runs (:func:`forward_modules`,
:func:`resettable_modules`). :func:`~lightning_igos.core.sanity.sanity_check`, which runs the
check, is built on these and is where they are documented for users.

Example:
    >>> s = torch.rand(2, 1, 4, 4)
    >>> spearman(s, edge_map(torch.rand(2, 3, 4, 4))).shape
    torch.Size([2])
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from lightning_igos.core.baselines import blur
from lightning_igos.core.runner import ModelRunner
from lightning_igos.core.runtime import draw_seed, usable
from lightning_igos.core.validation import TargetsLike, check_images, check_model

__all__ = ["Explainer", "average_ranks", "edge_explainer", "edge_map", "forward_modules", "network_copy",
           "randomize", "randomized_copy", "resettable_modules", "spearman", "undefined_correlation"]

#: An explainer: ``explainer(model, images, targets)`` returns a ``(B, 1, H, W)`` saliency.
Explainer = Callable[[nn.Module, Tensor, Tensor], Tensor]


def resettable_modules(model: nn.Module, modules: list[nn.Module] | None = None) -> list[nn.Module]:
    """The modules with parameters of their own and a ``reset_parameters`` method, in order.

    ``modules``: the modules to choose from, in their order (e.g. :func:`forward_modules`); None:
    ``model.modules()`` in registration order.

    Example:
        >>> model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> [type(m).__name__ for m in resettable_modules(model)]
        ['Linear', 'Linear']
    """
    candidates = list(model.modules()) if modules is None else modules
    return [m for m in candidates
            if callable(getattr(m, "reset_parameters", None)) and any(True for _ in m.parameters(recurse=False))]


def forward_modules(model: nn.Module, example_inputs: Tensor) -> list[nn.Module]:
    """The submodules of ``model`` that one forward of ``example_inputs`` calls, in the order of their last call.

    The forward runs without gradients, in eval mode (each module's flag restored after), on at most
    two of the inputs, as the explainers run the model (:class:`~lightning_igos.core.runner.ModelRunner`).
    A module that cannot be hooked (a scripted one) is left out.

    Example:
        >>> class WithEMA(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
        ...         self.ema = nn.Linear(4, 2)  # registered after the network, never called by its forward
        ...     def forward(self, x):
        ...         return self.net(x)
        >>> [type(m).__name__ for m in forward_modules(WithEMA(), torch.randn(3, 4))]
        ['WithEMA', 'Sequential', 'Linear', 'ReLU', 'Linear']
    """
    model = check_model(model)
    order: dict[int, int] = {}
    by_id: dict[int, nn.Module] = {}
    handles = []

    def record(module: nn.Module, *_: object) -> None:
        order.pop(id(module), None)  # keep the last call's position
        order[id(module)] = len(order)

    try:
        for module in model.modules():
            by_id[id(module)] = module
            try:
                handles.append(module.register_forward_pre_hook(record))
            except (RuntimeError, TypeError, AttributeError):
                continue
        runner = ModelRunner(model, example_inputs.device, max_batch_size=2)
        with runner.running(grad=False):
            runner.clean_logits(usable(example_inputs[:2]).float())
    finally:
        for handle in handles:
            handle.remove()
    return [by_id[key] for key in order if key in by_id]


def network_copy(model: nn.Module, keep: list[nn.Module] | None = None) -> tuple[nn.Module, dict[int, object]]:
    """A copy of ``model`` that copies only the network: the modules in ``keep`` (default: all) and their
    parents, with their parameters, buffers and hooks; every other attribute, and the other submodules, are
    shared with ``model``.

    Returns the copy and the copy's memo (``id(original) -> copy``), to find a module's copy.

    Example:
        >>> import threading
        >>> model = nn.Sequential(nn.Linear(4, 2))
        >>> model.lock = threading.Lock()  # cannot be deep-copied
        >>> copied, memo = network_copy(model)
        >>> copied.lock is model.lock, copied[0].weight is model[0].weight, memo[id(model[0])] is copied[0]
        (True, False, True)
    """
    modules = list(model.modules())
    kept = set(map(id, modules if keep is None else keep)) | {id(model)}
    parents = {id(model)}
    for name, module in model.named_modules():
        if id(module) in kept:
            # Every container on the way to a kept module is copied too.
            path = model
            for part in name.split(".") if name else []:
                path = path.get_submodule(part)
                parents.add(id(path))
    copied_modules = kept | parents
    memo: dict[int, object] = {}
    for module in modules:
        if id(module) not in copied_modules:
            memo[id(module)] = module  # a submodule the forward does not call: shared
            continue
        for key, value in vars(module).items():
            if key in _MODULE_INTERNALS or isinstance(value, nn.Module):
                continue
            if isinstance(value, (str, int, float, bool, type(None))):
                continue
            memo[id(value)] = value  # not part of the network: shared, never copied
    return copy.deepcopy(model, memo), memo


#: What every ``nn.Module`` keeps in its ``__dict__`` (parameters, buffers, submodules, hooks): always copied.
_MODULE_INTERNALS = frozenset(vars(nn.Module())) | {"_parameters", "_buffers", "_modules"}


def randomized_copy(model: nn.Module, generator: torch.Generator | None = None, *,
                    example_inputs: Tensor | None = None) -> nn.Module:
    """A copy of ``model`` (:func:`network_copy`) with its head and last blocks re-initialised (the rule is in
    the module docstring); :func:`randomize` also says which modules.

    ``generator`` (default: a CPU generator seeded with 0) seeds the re-initialisation; the global
    RNG and ``model`` are left as they were. ``example_inputs``: inputs the model takes (the
    images), to choose the layers from what its forward runs (:func:`forward_modules`); None: from
    the modules in registration order.

    Example:
        >>> model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4), nn.Linear(4, 2))
        >>> copy_ = randomized_copy(model)
        >>> [bool(torch.equal(a, b)) for a, b in zip(model.parameters(), copy_.parameters())][::2]
        [True, False, False]
    """
    return randomize(model, generator, example_inputs=example_inputs)[0]


def randomize(model: nn.Module, generator: torch.Generator | None = None, *,
              example_inputs: Tensor | None = None) -> tuple[nn.Module, tuple[str, ...]]:
    """:func:`randomized_copy` and the names of the re-initialised modules (as ``model.named_modules()`` names
    them, in order; ``""`` is the model itself).

    Example:
        >>> model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> randomize(model, example_inputs=torch.randn(2, 4))[1]
        ('0', '2')
    """
    model = check_model(model)
    called = None if example_inputs is None else forward_modules(model, example_inputs)
    modules = resettable_modules(model, called or None)
    if not modules:
        raise ValueError(
            f"`model` ({type(model).__name__}) has no module with parameters and a `reset_parameters` method "
            "(Linear, Conv*, BatchNorm*, ...): nothing can be re-initialised for the sanity check."
        )
    seed = draw_seed(generator)
    count = min(len(modules), max(2, math.ceil(len(modules) / 4)))
    chosen = modules[-count:]
    names = {id(m): name for name, m in model.named_modules()}
    randomized, memo = network_copy(model, called or None)
    devices = sorted({p.device.index or 0 for p in randomized.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        torch.manual_seed(seed)
        for module in chosen:
            memo[id(module)].reset_parameters()
    return randomized, tuple(names[id(m)] for m in chosen)


def average_ranks(values: Tensor) -> Tensor:
    """Ranks ``0 .. n-1`` of each row of ``values`` ``(B, n)``, tied values sharing the mean of their ranks.

    The standard ("fractional") ranking of Spearman's coefficient; computed in float64 on ``values``' device,
    batched (one sort per call). NaNs rank last, each on its own.

    Example:
        >>> average_ranks(torch.tensor([[0.0, 3.0, 0.0, 1.0]])).tolist()
        [[0.5, 3.0, 0.5, 2.0]]
    """
    n = values.shape[-1]
    ordered, order = values.sort(dim=-1, stable=True)
    position = torch.arange(n, device=values.device).expand_as(ordered)
    starts = torch.ones_like(ordered, dtype=torch.bool)
    starts[..., 1:] = ordered[..., 1:] != ordered[..., :-1]
    ends = torch.ones_like(starts)
    ends[..., :-1] = starts[..., 1:]
    # The first and the last position of each run of equal values, spread over the run.
    first = torch.where(starts, position, 0).cummax(dim=-1).values
    last = torch.where(ends, position, n - 1).flip(-1).cummin(dim=-1).values.flip(-1)
    mean_rank = (first + last).double() / 2
    return torch.empty_like(mean_rank).scatter_(-1, order, mean_rank)


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Per-image Spearman rank correlation ``(B,)`` of two saliency maps ``(B, 1, H, W)``.

    The standard definition: the Pearson correlation of the pixels' ranks, tied pixels sharing the
    mean of their ranks (:func:`average_ranks`), as ``scipy.stats.spearmanr`` and torchmetrics'
    ``SpearmanCorrCoef`` compute it. A correlation with a map that ranks nothing (all its pixels
    equal, e.g. an empty explanation, or a map with a NaN or infinite value) is undefined and is NaN:
    never a confident 1.0 or 0.0 (:func:`undefined_correlation` names which maps caused it).
    Computed in float64 on ``a``'s device, batched, returned as float32.

    Example:
        >>> s = torch.rand(2, 1, 4, 4)
        >>> spearman(s, s).tolist(), spearman(s, -s).tolist()
        ([1.0, 1.0], [-1.0, -1.0])
        >>> spearman(s, torch.zeros_like(s)).tolist()  # an empty map correlates with nothing
        [nan, nan]
    """
    if not isinstance(a, Tensor) or not isinstance(b, Tensor):
        raise TypeError("`a` and `b` must be torch.Tensors.")
    if a.dim() != 4 or a.shape[1] != 1 or a.shape != b.shape:
        raise ValueError(f"`a` and `b` must both be shaped (B, 1, H, W), got {tuple(a.shape)} and {tuple(b.shape)}.")
    x = a.detach().flatten(1)
    y = b.detach().to(a.device).flatten(1)
    if x.shape[1] == 0:
        return torch.full((a.shape[0],), float("nan"), device=a.device)
    rx, ry = average_ranks(x), average_ranks(y)
    rx, ry = rx - rx.mean(1, keepdim=True), ry - ry.mean(1, keepdim=True)
    rho = (rx * ry).sum(1) / ((rx * rx).sum(1) * (ry * ry).sum(1)).sqrt()
    undefined = _ranks_nothing(x) | _ranks_nothing(y)
    return rho.clamp(-1.0, 1.0).masked_fill(undefined, float("nan")).float()


def undefined_correlation(a: Tensor, b: Tensor) -> Tensor:
    """``(B,)`` True where :func:`spearman` of ``a`` and ``b`` is undefined: either map has all its pixels
    equal (an empty explanation ranks nothing) or holds a NaN or infinite value.

    Example:
        >>> s = torch.rand(2, 1, 4, 4)
        >>> undefined_correlation(s, torch.stack([s[0], torch.zeros_like(s[1])])).tolist()
        [False, True]
    """
    return _ranks_nothing(a.detach().flatten(1)) | _ranks_nothing(b.detach().to(a.device).flatten(1))


def _ranks_nothing(x: Tensor) -> Tensor:
    if x.shape[1] == 0:
        return torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    return ~torch.isfinite(x).all(1) | (x.amax(1) == x.amin(1))


def edge_map(images: Tensor) -> Tensor:
    """``|image - blur(image)|`` summed over the channels, ``(B, 1, H, W)``: a map that ignores any model.

    The blur is the default baseline's (:func:`~lightning_igos.core.baselines.blur`).

    Example:
        >>> edge_map(torch.rand(2, 3, 16, 16)).shape
        torch.Size([2, 1, 16, 16])
    """
    x = usable(check_images(images)).float()
    with torch.no_grad():
        return (x - blur(x)).abs().sum(1, keepdim=True)


def edge_explainer(model: nn.Module, images: Tensor, targets: TargetsLike, **kwargs: object) -> Tensor:
    """:func:`edge_map` with an explainer's call shape (like :func:`~lightning_igos.core.gradients.gradient_saliency`);
    ``model``, ``targets`` and ``kwargs`` are ignored."""
    return edge_map(images)
