"""Say on Lightning's progress bar that explanations are being computed, and count the model passes.

:class:`ExplainStatus` is a context manager around one explanation run of the callback:
it counts the images that go through the model (a forward hook on the module) and, when
the trainer shows a progress bar (Lightning's ``TQDMProgressBar`` or ``RichProgressBar``),
writes ``I-GOS: explaining 8 probe images, 1200 passes`` into the validation bar's
description and puts the old description back afterwards. Without a progress bar it only
counts.

Example:
    >>> from types import SimpleNamespace
    >>> model = torch.nn.Linear(3, 2)
    >>> with ExplainStatus(SimpleNamespace(progress_bar_callback=None), model, num_images=4) as status:
    ...     _ = model(torch.zeros(4, 3)); _ = model(torch.zeros(2, 3))
    >>> status.passes, status.passes_per_image
    (6, 1.5)
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

__all__ = ["ExplainStatus"]


class ExplainStatus:
    """Count the images passed through ``module`` and show the work on the trainer's progress bar.

    Attributes (after the ``with`` block): ``passes`` (images through the model, all
    forwards counted, with or without gradients), ``passes_per_image``, ``seconds``
    (wall time of the block) and ``num_classes`` (the width of the logits, None if unseen).
    """

    INTERVAL_S = 0.25

    def __init__(self, trainer: Any, module: nn.Module, num_images: int) -> None:
        self.trainer, self.module, self.num_images = trainer, module, num_images
        self.passes = 0
        self.seconds = 0.0
        self.num_classes: int | None = None  # the width of the model's logits, once seen
        self._started = self._drawn = 0.0
        self._handle: Any = None
        self._bar: Any = None
        self._restore: Any = None

    @property
    def passes_per_image(self) -> float:
        return self.passes / self.num_images if self.num_images else 0.0

    def text(self) -> str:
        return f"I-GOS: explaining {self.num_images} probe images, {self.passes} passes"

    def __enter__(self) -> ExplainStatus:
        self._started = time.perf_counter()
        self._handle = self.module.register_forward_hook(self._count)
        try:
            self._show(self.text())
        except Exception:  # a progress bar we cannot write to never stops the explanations
            self._bar = self._restore = None
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._started
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        if self._restore is not None:
            try:
                self._restore()
            except Exception:
                pass
        self._bar = self._restore = None

    # ------------------------------------------------------------------ internals

    def _count(self, module: nn.Module, inputs: tuple, output: object) -> None:
        if inputs and isinstance(inputs[0], torch.Tensor) and inputs[0].dim() > 0:
            self.passes += int(inputs[0].shape[0])
        if isinstance(output, torch.Tensor) and output.dim() == 2:
            self.num_classes = int(output.shape[1])
        now = time.perf_counter()
        if self._bar is not None and now - self._drawn >= self.INTERVAL_S:
            self._drawn = now
            try:
                self._bar(self.text())
            except Exception:
                self._bar = None

    def _show(self, text: str) -> None:
        """Find the validation bar of the trainer's progress bar callback and write ``text`` into it."""
        callback = getattr(self.trainer, "progress_bar_callback", None)
        if callback is None or not getattr(callback, "is_enabled", False):
            return
        # Rich: a task of a rich.progress.Progress.
        progress, task_id = getattr(callback, "progress", None), getattr(callback, "val_progress_bar_id", None)
        if progress is not None and task_id is not None and callable(getattr(progress, "update", None)):
            old = progress.tasks[task_id].description

            def show_rich(value: str) -> None:
                progress.update(task_id, description=value)
                progress.refresh()

            show_rich(text)
            self._bar, self._restore = show_rich, lambda: show_rich(old)
            return
        # tqdm: the validation bar exists between on_validation_start and on_validation_end.
        try:
            bar = callback.val_progress_bar
        except Exception:
            return
        if bar is None or not callable(getattr(bar, "set_description_str", None)):
            return
        old_desc = getattr(bar, "desc", "")

        def show_tqdm(value: str) -> None:
            bar.set_description_str(value, refresh=True)

        show_tqdm(text)
        self._bar, self._restore = show_tqdm, lambda: show_tqdm(old_desc)


def cost_line(num_images: int, passes: int, seconds: float, every_n_epochs: int, device: object) -> str:
    """The one line the callback prints after its first run: what explaining costs per epoch.

    Example:
        >>> cost_line(8, 1200, 3.14159, 2, "cpu")  # doctest: +NORMALIZE_WHITESPACE
        'IGOSCallback: explaining 8 probe images took 3.1 s on cpu (150 model passes per image,
        1200 in all), every 2 epochs: about 1.6 s per epoch on average (every_n_epochs sets how often).'
    """
    per_epoch = seconds / every_n_epochs
    per_image = passes / num_images if num_images else 0.0
    often = "every epoch" if every_n_epochs == 1 else f"every {every_n_epochs} epochs"
    return (f"IGOSCallback: explaining {num_images} probe images took {seconds:.1f} s on {device} "
            f"({per_image:.0f} model passes per image, {passes} in all), {often}: about {per_epoch:.1f} s per "
            "epoch on average (every_n_epochs sets how often).")
