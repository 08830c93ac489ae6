"""Context managers and batching helpers that keep explanation work side-effect free."""

from __future__ import annotations

import contextlib
import os
import warnings
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


def cpu_copy(tensor: Tensor) -> Tensor:
    """A detached CPU copy that is a normal tensor even if ``tensor`` came from inference mode."""
    with torch.inference_mode(False):
        return tensor.detach().to("cpu", copy=True)


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


#: Largest seed (torch generators take 64-bit seeds; reports store it as a JSON integer): ``IGOSConfig.seed``'s
#: bound and the range of every seed drawn from a generator.
MAX_SEED = 2**63 - 1


def draw_seed(generator: torch.Generator | None) -> int:
    """The one number a solve draws from ``generator`` (None: a CPU generator seeded with 0)."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"`generator` must be a torch.Generator or None, got {type(generator).__name__}.")
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    return int(torch.randint(0, MAX_SEED, (1,), generator=generator, device=generator.device))


def default_max_batch_size(device: torch.device) -> int:
    """Images per forward pass when the user sets no cap (measured in the repository's ``bench/`` folder).

    A forward+backward of ResNet-50 at 224x224 holds about 82 MB of activations per
    image in float32 (bench/memory.py), so 64 keeps its solver under 8 GiB on a GPU
    (60 path points per forward: three images' 20 integration steps, about 5 GB). On a
    CPU the cost per image stops falling beyond a few dozen images.
    """
    return 64 if device.type == "cuda" else 32


# Torch's opt-out of safe loading; some torch versions honour it even when the caller asks for safety.
UNSAFE_LOAD_VARIABLE = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"


@contextlib.contextmanager
def safe_loading() -> Iterator[None]:
    """Set torch's opt-out variable (``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``) aside, restoring it afterwards."""
    saved = os.environ.pop(UNSAFE_LOAD_VARIABLE, None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ[UNSAFE_LOAD_VARIABLE] = saved


def load_weights_only(path: object) -> object:
    """``torch.load(path, map_location="cpu", weights_only=True)``: no pickled code ever runs.

    Torch's opt-out variable is set aside for the call (:func:`safe_loading`), and torch's
    warnings about the file (e.g. its pickle protocol) are not shown: the caller turns a
    failure into one message. Errors of ``torch.load`` propagate.
    """
    with safe_loading(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(path, map_location="cpu", weights_only=True)


_TORCH_BOILERPLATE = ("Weights only load failed", "Please file an issue", "Check the documentation", "In PyTorch 2.6")


def load_failure_reason(err: BaseException, limit: int = 200) -> str:
    """The informative line of a ``torch.load`` error (e.g. the global it refused), shortened.

    Example:
        >>> load_failure_reason(RuntimeError("Weights only load failed. ...\\n\\nUnsupported global: os.system"))
        'RuntimeError: Unsupported global: os.system'
    """
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(_TORCH_BOILERPLATE)]
    text = " ".join((useful or lines or [""])[0].split())
    if text.startswith("WeightsUnpickler error:"):
        text = text.split(":", 1)[1].strip() or text
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(err).__name__}: {text}" if text else type(err).__name__
