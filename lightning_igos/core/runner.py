"""The one place a classifier is run: device, dtype, memory format, autocast, score function, batch cap, counting.

Every explainer and metric pushes images through the model with a :class:`ModelRunner`,
so they all see the model the same way: inputs cast to the model's dtype and laid out
as its convolutions are stored, under the autocast that was asked for (and no other),
in pieces of at most ``max_batch_size`` images, with every image counted.

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    >>> runner = ModelRunner(model, torch.device("cpu"), max_batch_size=2)
    >>> with runner.running(grad=False):
    ...     logits = runner.clean_logits(torch.randn(4, 3, 4, 4))
    >>> logits.shape, runner.images_without_grad
    (torch.Size([4, 2]), 4)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from lightning_igos.core.runtime import (
    chunks,
    default_max_batch_size,
    evaluation_mode,
    gradient_context,
    model_input_dtype,
    model_memory_format,
    usable,
)
from lightning_igos.core.scoring import ScoreFn, target_scores
from lightning_igos.core.validation import check_logits

#: ``listener(num_images, with_grad)``: told about every forward a runner makes.
ForwardListener = Callable[[int, bool], None]


class ModelRunner:
    """Runs ``model`` on batches of inputs as every explainer and metric needs it.

    Args:
        model: the classifier; its outputs are logits ``(B, num_classes)`` (or what ``score_fn`` reads).
        device: where the images are (the model's device).
        autocast_dtype: run the forwards under autocast with this dtype; None disables any
            autocast region around the call and runs in the model's own dtype.
        score_fn: ``score_fn(logits, targets) -> (B,)``; None is the softmax probability of the target.
        max_batch_size: images per forward; None picks a default per device.

    Attributes:
        images_with_grad, images_without_grad: model images pushed so far, with gradients on
            and off (what the progress lines and ``passes_per_image`` count).
        listeners: callables ``listener(num_images, with_grad)`` told about each forward.
    """

    def __init__(self, model: nn.Module, device: torch.device, *, autocast_dtype: torch.dtype | None = None,
                 score_fn: ScoreFn | None = None, max_batch_size: int | None = None) -> None:
        self.model = model
        self.device = device
        self.autocast_dtype = autocast_dtype
        self.score_fn = score_fn
        self.cap = max_batch_size or default_max_batch_size(device)
        self.input_dtype = torch.float32 if autocast_dtype is not None else model_input_dtype(model, torch.float32)
        self.memory_format = model_memory_format(model)
        self.images_with_grad = 0
        self.images_without_grad = 0
        self.listeners: list[ForwardListener] = []

    @contextlib.contextmanager
    def running(self, grad: bool) -> Iterator[None]:
        """The model in eval mode (each submodule's flag restored after), autocast as asked, gradients on or off.

        Inference mode is left for the call, so work done inside Lightning's validation
        (``no_grad`` or ``inference_mode``) can take gradients with respect to inputs.
        """
        with contextlib.ExitStack() as stack:
            stack.enter_context(evaluation_mode(self.model))
            stack.enter_context(gradient_context(self.device, self.autocast_dtype))
            if not grad:
                stack.enter_context(torch.no_grad())
            yield

    def logits(self, inputs: Tensor) -> Tensor:
        """One forward of ``inputs`` (at most ``max_batch_size`` of them), counted.

        A forward-only batch of one image runs as a batch of two: some backends compute a
        batch of one with other kernels than larger batches (rounding differs by ~1e-7 on
        the CPU) and a ReLU network can amplify that, so an image's numbers would depend on
        how many images shared its forward.
        """
        with_grad = torch.is_grad_enabled()
        if inputs.shape[0] == 1 and self.cap >= 2 and not with_grad:
            return self.logits(inputs.expand(2, *inputs.shape[1:]))[:1]
        if with_grad:
            self.images_with_grad += inputs.shape[0]
        else:
            self.images_without_grad += inputs.shape[0]
        for listener in self.listeners:
            listener(inputs.shape[0], with_grad)
        return self.model(inputs.to(self.input_dtype, memory_format=self.memory_format))

    def scores(self, inputs: Tensor, targets: Tensor) -> Tensor:
        """``(B,)`` the target's score of each input (one forward)."""
        return target_scores(self.logits(inputs), targets, self.score_fn)

    def scores_in_chunks(self, inputs: Tensor, targets: Tensor) -> Tensor:
        """``(B,)`` target scores of any number of inputs, ``max_batch_size`` per forward."""
        out = torch.empty(inputs.shape[0], device=inputs.device)
        for start, stop in chunks(inputs.shape[0], self.cap):
            out[start:stop] = self.scores(inputs[start:stop], targets[start:stop])
        return out

    def clean_logits(self, images: Tensor) -> Tensor:
        """The logits of the unmodified images, ``max_batch_size`` per forward, without gradients."""
        with torch.no_grad():
            parts = [self.logits(images[start:stop]) for start, stop in chunks(images.shape[0], self.cap)]
        if not all(isinstance(part, Tensor) for part in parts):
            return parts[0]  # not logits: the caller's check names the type
        return torch.cat(parts) if len(parts) > 1 else parts[0]

    @property
    def images_pushed(self) -> int:
        return self.images_with_grad + self.images_without_grad


def checked_start(model: nn.Module, images: Tensor, targets: Tensor | None, *,
                  autocast_dtype: torch.dtype | None = None, score_fn: ScoreFn | None = None,
                  max_batch_size: int | None = None, listener: ForwardListener | None = None,
                  clean_logits: Tensor | None = None) -> tuple[ModelRunner, Tensor, Tensor, Tensor]:
    """What every public function runs first, after checking its arguments: ``(runner, x, targets, logits)``.

    A :class:`ModelRunner` for the checked ``model`` (told about every forward through ``listener``),
    the images as float32 that may take part in autograd, the targets (None: the model's
    predictions, which need logits ``(B, num_classes)``) and the logits of the one clean forward
    (``clean_logits`` when given), checked before the expensive work: shaped ``(B, num_classes)``,
    finite on every image, the targets within the classes.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
        >>> runner, x, targets, logits = checked_start(model, torch.randn(3, 3, 4, 4), None)
        >>> targets.shape, logits.shape, runner.images_without_grad
        (torch.Size([3]), torch.Size([3, 2]), 3)
    """
    runner = ModelRunner(model, images.device, autocast_dtype=autocast_dtype, score_fn=score_fn,
                         max_batch_size=max_batch_size)
    if listener is not None:
        runner.listeners.append(listener)
    batch = images.shape[0]
    with runner.running(grad=False):
        x = usable(images).float()
        logits = runner.clean_logits(x) if clean_logits is None else clean_logits
        if targets is None:
            if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] != batch:
                shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
                raise ValueError(f"`targets='pred'` needs logits shaped (B, num_classes) from `model(images)`, "
                                 f"got {shape}.")
            targets = logits.argmax(1)
        targets = usable(targets)  # an inference tensor (Lightning's validate) cannot enter autograd
    check_logits(logits, batch, targets, score_fn)
    return runner, x, targets, logits
