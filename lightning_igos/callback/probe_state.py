"""The probe of :class:`~lightning_igos.callback.IGOSCallback`: where it comes from and what is kept.

The probe is given (a pair, a :class:`~lightning_igos.probe.Probe` or a probe file) or
captured from the first validation batches; it is kept on the CPU and saved in the
callback's checkpoint state, so a resumed run explains the same images.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Union

import torch
from torch import Tensor

from lightning_igos.callback.messages import IGOSWarning, error_text
from lightning_igos.class_names import ClassNames
from lightning_igos.core.runtime import cpu_copy
from lightning_igos.core.validation import check_channel_stats, check_images, check_targets
from lightning_igos.probe import ProbeLike, check_boxes, read_probe

# Keys tried, in order, when a validation batch is a dict.
IMAGE_KEYS = ("image", "images", "input", "inputs", "x")
TARGET_KEYS = ("label", "labels", "target", "targets", "y")

__all__ = [
    "ProbeStore", "batch_parts", "check_display_stats", "given_probe", "is_probe_state",
    "saved_options",
]

STATE_VERSION = 1

BatchToProbe = Callable[[Any], tuple[Tensor, Union[Tensor, None]]]


def check_display_stats(
    mean: object, std: object, channels: int | None = None
) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    """``mean``/``std`` for display: both or neither, finite, ``std`` positive, one per channel if known."""
    if (mean is None) != (std is None):
        raise ValueError("`mean` and `std` must be given together (or both left None).")
    return (
        check_channel_stats(mean, "mean", channels),
        check_channel_stats(std, "std", channels, positive=True),
    )


def batch_parts(batch: Any) -> tuple[Tensor, Tensor | None]:
    """Images and (if present) labels of a validation batch: a tensor, a tuple/list or a dict."""
    if isinstance(batch, Tensor):
        return batch, None
    if isinstance(batch, Mapping):
        images = next((batch[k] for k in IMAGE_KEYS if isinstance(batch.get(k), Tensor)), None)
        targets = next((batch[k] for k in TARGET_KEYS if isinstance(batch.get(k), Tensor)), None)
        if images is not None:
            return images, targets
    elif isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], Tensor):
        targets = batch[1] if len(batch) > 1 and isinstance(batch[1], Tensor) else None
        return batch[0], targets
    raise TypeError(
        f"IGOSCallback cannot find the images in a validation batch of type {type(batch).__name__}: "
        "it reads a tensor, an (images, labels, ...) tuple or a dict with an 'image(s)' key. "
        "Pass `probe=(images, targets)` or `batch_to_probe=lambda batch: (images, targets)`."
    )


def given_probe(
    probe: ProbeLike, target: str, mean: Any, std: Any, class_names: ClassNames | None
) -> tuple[Tensor | None, Tensor | None, Any, Any, Tensor | None]:
    """The probe given to the callback, read and checked: ``(images, targets, mean, std, boxes)``.

    A probe file's display statistics are used when ``mean``/``std`` are not given; with known
    images they must have one value per channel.
    """
    given = read_probe(probe)
    if given is None:
        return None, None, mean, std, None
    images, targets = given.images, given.targets
    if mean is None and given.mean is not None and given.std is not None:
        mean, std = given.mean, given.std
    # Known images: the display statistics must have one value per channel.
    mean, std = check_display_stats(mean, std, channels=images.shape[1])
    if target == "label" and targets is None:
        raise ValueError("`probe` has no targets; give (images, targets) or use target='pred'.")
    if class_names is not None and targets is not None:
        class_names.check_fits(indices=targets.tolist(), what="`class_names`", indices_what="probe target")
    return images, targets, mean, std, given.boxes


class ProbeStore:
    """The probe of one callback and what its checkpoint keeps.

    ``images``/``targets``: the probe on the CPU (None before it is captured); ``last_targets``:
    the classes explained at the last run. The checkpoint state also records the options the
    probe was explained with (:func:`saved_options`).
    """

    def __init__(
        self, images: Tensor | None, targets: Tensor | None, *, num_probe: int, target: str,
        batch_to_probe: BatchToProbe | None, on_error: str, boxes: Tensor | None = None,
    ) -> None:
        self.images, self.targets = images, targets
        self.boxes = boxes  # (B, 4) the objects' boxes of a given probe (the pointing game), or None
        self.num_probe = num_probe
        self.target = target
        self.batch_to_probe = batch_to_probe
        self.on_error = on_error
        self.captured: list[tuple[Tensor, Tensor | None]] = []
        self.capture_error: Exception | None = None
        self.last_targets: Tensor | None = None

    # --------------------------------------------------------------------- capture

    def capture(self, batch: Any) -> None:
        """Keep the first ``num_probe`` images (and labels) of the batches; a failure is kept for epoch end."""
        if self.images is not None or self.capture_error is not None:
            return
        if sum(len(c[0]) for c in self.captured) >= self.num_probe:
            return
        try:
            images, targets = self.batch_to_probe(batch) if self.batch_to_probe is not None else batch_parts(batch)
            take = self.num_probe - sum(len(c[0]) for c in self.captured)
            images = check_images(images, "validation batch images")
            if targets is not None:
                device = getattr(targets, "device", torch.device("cpu"))
                try:
                    targets = check_targets(targets, images.shape[0], device, "validation batch labels")
                except (TypeError, ValueError):
                    if self.target == "label":
                        raise
                    # "pred" explains the predictions and needs no labels: one-hot or soft labels are left out.
                    targets = None
            if targets is not None:
                targets = cpu_copy(targets[:take])
            self.captured.append((cpu_copy(images[:take]), targets))
        except Exception as err:  # reported at epoch end, through the same path as other failures
            self.capture_error = err

    def settle(self, trainer: Any) -> str | None:
        """Fix the probe from this epoch's captured batches (rank 0's, under DDP); return an error text."""
        local: tuple[Tensor, Tensor | None] | str | None
        if self.capture_error is not None:
            local = error_text(self.capture_error)
        elif self.captured:
            labels = [c[1] for c in self.captured]
            with torch.inference_mode(False):
                images = torch.cat([c[0] for c in self.captured])
                targets = None if any(t is None for t in labels) else torch.cat(labels)
            local = (images, targets)
            if targets is None and self.target == "label":
                local = ("the validation batches carry no labels; use target='pred' "
                         "or pass probe=(images, targets)")
        else:
            local = None
        self.captured = []
        if trainer.world_size > 1:
            local = trainer.strategy.broadcast(local, src=0)
        if isinstance(local, str):
            return local
        if local is not None:
            # Under trainer.validate() this runs in inference mode: keep normal tensors.
            images, targets = local
            self.images = cpu_copy(images)
            self.targets = None if targets is None else cpu_copy(targets)
            if len(self.images) < self.num_probe:
                warnings.warn(
                    f"IGOSCallback: the first validation epoch held {len(self.images)} images, fewer "
                    f"than num_probe={self.num_probe}; the probe keeps those.", IGOSWarning, stacklevel=2,
                )
        return None

    def take_capture_error(self) -> Exception | None:
        """The capture's failure, reported once: the next epoch tries again."""
        error, self.capture_error = self.capture_error, None
        return error

    def remember_targets(self, targets: Tensor) -> None:
        """The classes the last run explained (what :meth:`save` writes for ``target="pred"``)."""
        self.last_targets = targets

    # --------------------------------------------------------------------- probe file and checkpoint

    def save(self, path: str | os.PathLike, display: tuple[Any, Any]) -> Path:
        """Write the probe (targets: the labels, else the last run's classes) with ``display``'s mean/std."""
        from lightning_igos.probe import save_probe

        if self.images is None:
            raise RuntimeError(
                "IGOSCallback has no probe yet: it is taken from the first validation epoch. "
                "Call save_probe after trainer.fit/validate, or pass `probe=` to the callback."
            )
        targets = self.targets if self.targets is not None else self.last_targets
        if targets is None:
            raise RuntimeError("The probe has no labels and no epoch has been explained yet (target='pred').")
        mean, std = display
        return save_probe(path, self.images, targets, mean=mean, std=std, boxes=self.boxes)

    def state_dict(self, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The probe and the ``options`` it is explained with (plain values: ``weights_only`` loads it)."""
        if self.images is None:
            return {}
        state: dict[str, Any] = {"version": STATE_VERSION, "probe_images": self.images, "probe_targets": self.targets}
        if self.boxes is not None:
            state["probe_boxes"] = self.boxes
        if options is not None:
            state["options"] = dict(options)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> bool:
        """Restore the checkpointed probe; whether it did. A state it cannot read warns (or raises)."""
        if not state_dict or "probe_images" not in state_dict:
            return False
        try:
            images = check_images(state_dict["probe_images"], "checkpointed probe images")
            targets = state_dict.get("probe_targets")
            if targets is not None:
                targets = check_targets(targets, images.shape[0], targets.device, "checkpointed probe targets")
            boxes = state_dict.get("probe_boxes")
            if boxes is not None:
                boxes = check_boxes(boxes, images.shape[0], *images.shape[-2:], name="checkpointed probe boxes")
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            if self.on_error == "raise":
                raise
            warnings.warn(
                f"IGOSCallback could not restore its probe from the checkpoint ({error_text(err)}); "
                "it keeps the probe it was given or captures a new one, so epochs before and after the "
                "resume may explain different images.",
                IGOSWarning,
                stacklevel=2,
            )
            return False
        self.images = cpu_copy(images)
        self.targets = None if targets is None else cpu_copy(targets)
        self.boxes = None if boxes is None else cpu_copy(boxes)
        self.captured, self.capture_error = [], None
        return True


def is_probe_state(state: object) -> bool:
    """Whether ``state`` is the checkpoint state of an IGOSCallback (this format, any options)."""
    return isinstance(state, Mapping) and state.get("version") == STATE_VERSION and "probe_images" in state


def saved_options(state: Mapping[str, Any]) -> dict[str, Any]:
    """The options a checkpoint state was saved with (empty for states that predate them)."""
    options = state.get("options")
    return dict(options) if isinstance(options, Mapping) else {}
