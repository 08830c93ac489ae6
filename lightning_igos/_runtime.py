"""Context managers and batching helpers that keep explanation work side-effect free."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn


@contextlib.contextmanager
def evaluation_mode(model: nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode and restore each one's own flag afterwards."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


@contextlib.contextmanager
def gradient_context(device: torch.device, autocast_dtype: torch.dtype | None = None) -> Iterator[None]:
    """Gradients on, inference mode off, and autocast exactly as asked.

    Lightning validates under ``no_grad`` (inside ``fit``) or ``inference_mode``
    (``trainer.validate``), possibly inside an autocast region of a mixed
    precision plugin; the solver needs gradients and float32 unless the caller
    asks for an autocast dtype.
    """
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.inference_mode(False))
        stack.enter_context(torch.enable_grad())
        stack.enter_context(autocast_context(device, autocast_dtype))
        yield


def autocast_context(device: torch.device, autocast_dtype: torch.dtype | None):
    if autocast_dtype is None:
        try:
            return torch.autocast(device_type=device.type, enabled=False)
        except RuntimeError:  # a device type autocast does not know: nothing to disable
            return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=autocast_dtype)


def usable(tensor: Tensor) -> Tensor:
    """A detached tensor that may take part in autograd (clones inference tensors)."""
    tensor = tensor.detach()
    return tensor.clone() if tensor.is_inference() else tensor


def model_input_dtype(model: nn.Module, default: torch.dtype) -> torch.dtype:
    """The dtype of the model's floating point parameters (e.g. bf16 for ``bf16-true``)."""
    for parameter in model.parameters():
        if parameter.is_floating_point():
            return parameter.dtype
    return default


def model_memory_format(model: nn.Module) -> torch.memory_format:
    """``channels_last`` when the model's convolution weights are stored that way, else ``preserve_format``.

    A model converted with ``model.to(memory_format=torch.channels_last)`` runs its
    convolutions fastest on inputs in the same layout (tensor cores on GPUs).
    """
    for parameter in model.parameters():
        if parameter.dim() == 4 and not parameter.is_contiguous():
            if parameter.is_contiguous(memory_format=torch.channels_last):
                return torch.channels_last
    return torch.preserve_format


def chunks(total: int, size: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` pairs covering ``range(total)`` in pieces of at most ``size``."""
    for start in range(0, total, size):
        yield start, min(start + size, total)
