"""The probe of :class:`~lightning_igos.callback.IGOSCallback`: where it comes from and what is kept.

The probe is given (a pair, a :class:`~lightning_igos.probe.Probe` or a probe file) or
captured from the first validation batches; it is kept on the CPU and saved in the
callback's checkpoint state, so a resumed run explains the same images.

A captured probe is chosen by :class:`ProbeSelector` from the first ``probe_pool`` samples
of the first validation epoch: round-robin over the classes seen (``"balanced"``), or the
first ``num_probe`` (``"first"``); only the images chosen so far are kept, so the reading
costs the labels of the pool and at most one CPU copy per sample. ``probe_indices`` reads
given samples of the first validation dataloader's dataset instead.
"""

from __future__ import annotations

import numbers
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Union

import torch
from torch import Tensor

from lightning_igos.callback.messages import IGOSWarning, error_text
from lightning_igos.class_names import ClassNames
from lightning_igos.core.runtime import cpu_copy
from lightning_igos.core.validation import check_channel_stats, check_images, check_targets
from lightning_igos.probe import ProbeLike, check_boxes, check_probe_elements, probe_summary, read_probe

# Keys tried, in order, when a validation batch is a dict.
IMAGE_KEYS = ("image", "images", "input", "inputs", "x")
TARGET_KEYS = ("label", "labels", "target", "targets", "y")

__all__ = [
    "MAX_NUM_PROBE", "SELECTIONS", "ProbeSelector", "ProbeStore", "batch_parts", "check_display_stats",
    "check_probe_choice", "default_probe_pool", "given_probe", "is_probe_state", "saved_options", "select_probe",
]

STATE_VERSION = 1

#: How a captured probe is chosen from the pool: round-robin over the classes, or the first samples.
SELECTIONS = ("balanced", "first")
#: The most images a probe may be asked for (``num_probe``, ``probe_indices``): every one is explained at
#: every explained epoch and kept in every checkpoint; a larger evaluation is a job for ``lightning-igos check``.
MAX_NUM_PROBE = 1024
#: The default pool is ``max(POOL_PER_PROBE_IMAGE * num_probe, MIN_PROBE_POOL)`` validation samples: enough for
#: a loader sorted by class with up to ~500 images per class to give a probe of 8 its 8 classes. Reading a sample
#: costs its label (the epoch reads the batch anyway); images are copied only while chosen (bench/probe_selection.py).
POOL_PER_PROBE_IMAGE = 512
MIN_PROBE_POOL = 4096


def default_probe_pool(num_probe: int) -> int:
    """The validation samples read to choose a probe of ``num_probe`` images when ``probe_pool`` is None.

    Example:
        >>> default_probe_pool(8), default_probe_pool(64)
        (4096, 32768)
    """
    return max(POOL_PER_PROBE_IMAGE * num_probe, MIN_PROBE_POOL)


def _check_index_list(values: object, name: str, what: str) -> tuple[int, ...]:
    """A non-empty sequence of distinct non-negative ints (a tensor or array of them too)."""
    if isinstance(values, Tensor):
        if values.is_floating_point() or values.is_complex() or values.dtype == torch.bool or values.dim() > 1:
            raise TypeError(f"`{name}` must be a sequence of {what} (ints), got a tensor of dtype {values.dtype} "
                            f"and shape {tuple(values.shape)}.")
        values = values.reshape(-1).tolist()
    elif hasattr(values, "tolist") and not isinstance(values, (str, bytes)):
        values = values.tolist()  # a numpy array
    if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, (list, tuple, range)):
        raise TypeError(f"`{name}` must be a sequence of {what} (ints), e.g. [0, 5, 17], got {type(values).__name__}.")
    bad = [v for v in values if not isinstance(v, numbers.Integral) or isinstance(v, bool)]
    if bad:
        raise TypeError(f"`{name}` must hold ints ({what}), got {bad[0]!r} ({type(bad[0]).__name__}).")
    result = tuple(int(v) for v in values)
    if not result:
        raise ValueError(f"`{name}` must name at least one of the {what}, got an empty sequence; "
                         "leave it None to choose automatically.")
    negative = [v for v in result if v < 0]
    if negative:
        raise ValueError(f"`{name}` must hold non-negative {what}, got {negative[0]}.")
    repeated = sorted({v for v in result if result.count(v) > 1})
    if repeated:
        raise ValueError(f"`{name}` must not repeat an entry, got {repeated[0]} more than once.")
    return result


def check_probe_choice(
    probe: object, num_probe: int, probe_selection: object, probe_pool: object, probe_indices: object,
    probe_classes: object,
) -> tuple[str, int, tuple[int, ...] | None, tuple[int, ...] | None]:
    """The options that choose a captured probe, checked: ``(selection, pool, indices, classes)``.

    ``num_probe`` must already be a positive int. ``probe`` given with ``probe_indices`` or
    ``probe_classes`` is a conflict (``ValueError``), as are ``probe_indices`` with ``probe_classes``.

    Example:
        >>> check_probe_choice(None, 8, "balanced", None, None, [3, 1])
        ('balanced', 4096, None, (3, 1))
        >>> check_probe_choice(None, 8, "random", None, None, None)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: `probe_selection` must be one of 'balanced', 'first', got 'random'...
    """
    if num_probe > MAX_NUM_PROBE:
        raise ValueError(
            f"`num_probe` must be at most {MAX_NUM_PROBE}, got {num_probe}: every probe image is explained at every "
            "explained epoch (hundreds of model passes each) and kept in every checkpoint. Explain a larger set "
            "once with `lightning-igos check` on a probe file."
        )
    if not isinstance(probe_selection, str) or probe_selection not in SELECTIONS:
        raise ValueError(
            f"`probe_selection` must be one of {', '.join(repr(s) for s in SELECTIONS)}, got {probe_selection!r}: "
            "'balanced' takes validation samples round-robin over the classes, 'first' the first num_probe samples."
        )
    if probe_pool is None:
        pool = default_probe_pool(num_probe)
    else:
        if not isinstance(probe_pool, numbers.Integral) or isinstance(probe_pool, bool):
            raise TypeError(f"`probe_pool` must be an int or None, got {type(probe_pool).__name__}.")
        pool = int(probe_pool)
        if pool < num_probe:
            raise ValueError(f"`probe_pool` must be at least num_probe={num_probe} (the probe is chosen among "
                             f"the first probe_pool validation samples), got {pool}. Leave it None for "
                             f"max({POOL_PER_PROBE_IMAGE} * num_probe, {MIN_PROBE_POOL}).")
    indices = None if probe_indices is None else _check_index_list(probe_indices, "probe_indices", "dataset indices")
    classes = None if probe_classes is None else _check_index_list(probe_classes, "probe_classes", "class indices")
    if indices is not None and len(indices) > MAX_NUM_PROBE:
        raise ValueError(f"`probe_indices` must name at most {MAX_NUM_PROBE} samples (the largest probe), got "
                         f"{len(indices)}.")
    given = [name for name, value in (("probe_indices", indices), ("probe_classes", classes)) if value is not None]
    if probe is not None and given:
        raise ValueError(
            f"pass either `probe` (the images to explain) or {' and '.join(f'`{n}`' for n in given)} (which choose "
            "them from the validation data), not both."
        )
    if len(given) == 2:
        raise ValueError("pass either `probe_indices` (exactly these samples) or `probe_classes` (samples of these "
                         "classes), not both.")
    return probe_selection, pool, indices, classes


class ProbeSelector:
    """Chooses a probe of ``count`` samples from samples offered in order, keeping only the chosen ones.

    ``"balanced"``: round-robin over the classes, the first sample of each class, then the
    second of each, ...; the classes in ascending index (in the order of ``classes`` when
    given), each class's samples in the order seen. ``"first"``: the first ``count``. With
    ``classes``, samples of other classes are never chosen. Unlabelled samples (label None)
    can only be chosen ``"first"``.

    A sample that is not chosen when it is offered is never chosen later (offering more
    samples only pushes samples out), so :meth:`offer` returns the positions chosen so far and
    the caller keeps only their images. The chosen positions come in probe order.

    Example:
        >>> selector = ProbeSelector(4)
        >>> selector.offer([0, 0, 0, 0])
        [0, 1, 2, 3]
        >>> selector.offer([1, 1, 2, 2])
        [0, 4, 6, 1]
        >>> selector.class_counts
        {0: 4, 1: 2, 2: 2}
    """

    def __init__(self, count: int, selection: str = "balanced", classes: Sequence[int] | None = None) -> None:
        self.count, self.selection = count, selection
        self.order = None if classes is None else {int(c): i for i, c in enumerate(classes)}
        self.seen = 0
        #: How many samples of each class were offered (all classes, chosen or not).
        self.class_counts: dict[int, int] = {}
        self._chosen: list[tuple[tuple[int, int], int]] = []  # (sort key, position), in probe order

    def offer(self, labels: Sequence[int | None]) -> list[int]:
        """Offer the next samples (their labels, None for unlabelled); the positions chosen so far, in probe order."""
        candidates = list(self._chosen)
        for label in labels:
            position, self.seen = self.seen, self.seen + 1
            rank = 0
            if label is not None:
                rank = self.class_counts.get(label, 0)
                self.class_counts[label] = rank + 1
                if self.order is not None and label not in self.order:
                    continue
            if self.selection == "first" or label is None:
                key = (position, 0)
            else:
                key = (rank, label if self.order is None else self.order[label])
            candidates.append((key, position))
        candidates.sort()
        self._chosen = candidates[: self.count]
        return [position for _, position in self._chosen]


def select_probe(
    labels: Sequence[int], count: int, selection: str = "balanced", classes: Sequence[int] | None = None
) -> list[int]:
    """The positions in ``labels`` that a captured probe of ``count`` images takes, in probe order.

    The rule of :class:`ProbeSelector` applied to one sequence: with an ``ImageFolder``-like
    loader sorted by class, ``"balanced"`` takes one sample per class before a second of any.

    Example:
        >>> labels = [0] * 4 + [1] * 4 + [2] * 4
        >>> select_probe(labels, 4)
        [0, 4, 8, 1]
        >>> select_probe(labels, 4, "first")
        [0, 1, 2, 3]
        >>> select_probe(labels, 3, classes=[2, 1])
        [8, 4, 9]
    """
    return ProbeSelector(count, selection, classes).offer(list(labels))


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
        selection: str = "balanced", pool: int | None = None, indices: Sequence[int] | None = None,
        classes: Sequence[int] | None = None,
    ) -> None:
        self.images, self.targets = images, targets
        self.boxes = boxes  # (B, 4) the objects' boxes of a given probe (the pointing game), or None
        self.given = images is not None  # a probe given to the callback (a checkpoint's replaces it with a warning)
        self.num_probe = num_probe
        self.target = target
        self.batch_to_probe = batch_to_probe
        self.on_error = on_error
        self.selection = selection
        self.pool = default_probe_pool(num_probe) if pool is None else pool
        self.indices = None if indices is None else tuple(indices)
        self.classes = None if classes is None else tuple(classes)
        self.capture_error: Exception | None = None
        self.last_targets: Tensor | None = None
        self._reset_capture()
        # Labels of the first validation epoch seen beside a probe that is already fixed (one-class warning).
        self._surveyed: dict[int, int] | None = {} if images is not None else None

    def _reset_capture(self) -> None:
        self._selector: ProbeSelector | None = None
        self._kept: dict[int, tuple[Tensor, int | None]] = {}  # position in the pool -> (image, label), CPU
        self._image_shape: tuple[int, ...] | None = None
        self._labelled: bool | None = None
        self._pool_closed = False

    @property
    def _read(self) -> int:
        """How many samples of the pool were read (offered to the selector)."""
        return 0 if self._selector is None else self._selector.seen

    @property
    def selection_record(self) -> dict[str, Any]:
        """How a captured probe is chosen, as the checkpoint records it (plain values)."""
        return {"probe_selection": self.selection,
                "probe_indices": None if self.indices is None else list(self.indices),
                "probe_classes": None if self.classes is None else list(self.classes)}

    # --------------------------------------------------------------------- capture

    def _parts(self, batch: Any) -> tuple[Tensor, Tensor | None]:
        return self.batch_to_probe(batch) if self.batch_to_probe is not None else batch_parts(batch)

    def _labels(self, targets: Any, count: int, device: Any) -> Tensor | None:
        """The batch's labels as a long tensor, or None where ``target="pred"`` can do without them."""
        if targets is None:
            return None
        try:
            return check_targets(targets, count, device, "validation batch labels")
        except (TypeError, ValueError):
            if self.target == "label":
                raise
            # "pred" explains the predictions and needs no labels: one-hot or soft labels are left out.
            return None

    def capture(self, batch: Any) -> None:
        """Offer a validation batch to the probe's choice; a failure is kept for the epoch's end.

        Only the first :attr:`pool` samples are read (their labels, and a CPU copy of the
        images chosen so far); with ``probe_indices`` nothing is (the dataset is read at the
        epoch's end). Beside a probe that is already fixed, the labels are only counted.
        """
        if self.capture_error is not None:
            return
        if self.images is not None:
            self._survey(batch)
            return
        if self.indices is not None or self._pool_closed or self._read >= self.pool:
            return
        try:
            images, targets = self._parts(batch)
            if not isinstance(images, Tensor) or images.dim() != 4 or not images.is_floating_point():
                check_images(images, "validation batch images")  # raises with the message that says what is wrong
            shape = tuple(images.shape[1:])
            if self._image_shape is None:
                check_probe_elements(self.num_probe, shape, "the captured probe")
                self._image_shape = shape
            elif shape != self._image_shape:
                raise ValueError(f"the validation batches hold images of different sizes ({self._image_shape} and "
                                 f"{shape}); pass `probe=(images, targets)` or `probe_indices=` instead.")
            labels = self._labels(targets, images.shape[0], getattr(targets, "device", torch.device("cpu")))
            if self._labelled is None:
                self._labelled = labels is not None
                # Without labels ("pred"), the probe is the first num_probe samples.
                selection = self.selection if self._labelled else "first"
                self._selector = ProbeSelector(self.num_probe, selection, self.classes if self._labelled else None)
            elif self._labelled != (labels is not None):
                self._pool_closed = True  # batches with and without labels: the pool ends where they change
                return
            start = self._read
            take = min(images.shape[0], self.pool - start)
            values: list[int | None] = [None] * take if labels is None else labels[:take].tolist()
            chosen = self._selector.offer(values)
            new = [position for position in chosen if position >= start]
            if new:
                rows = torch.tensor([position - start for position in new], device=images.device)
                with torch.inference_mode(False):  # one copy of the chosen rows, a normal tensor on the CPU
                    copies = images.detach().index_select(0, rows).to("cpu")
                copies = check_images(copies, "validation batch images")
                for row, position in enumerate(new):
                    self._kept[position] = (copies[row], values[position - start])
            kept = set(chosen)
            for position in [p for p in self._kept if p not in kept]:
                del self._kept[position]  # pushed out by a sample that came later; never chosen again
        except Exception as err:  # reported at epoch end, through the same path as other failures
            self.capture_error = err

    def _survey(self, batch: Any) -> None:
        """Count the labels of the first ``pool`` samples beside a fixed probe (for the one-class warning)."""
        if self._surveyed is None or sum(self._surveyed.values()) >= self.pool:
            return
        try:
            images, targets = self._parts(batch)
            labels = check_targets(targets, len(images), getattr(targets, "device", torch.device("cpu")))
        except Exception:  # the labels only serve a warning; batches the probe could not be read from give none
            return
        for label in labels[: self.pool - sum(self._surveyed.values())].tolist():
            self._surveyed[label] = self._surveyed.get(label, 0) + 1

    def _read_indices(self, trainer: Any) -> tuple[Tensor, Tensor | None]:
        """The samples ``probe_indices`` names, from the first validation dataloader's dataset, collated by it."""
        loaders = getattr(trainer, "val_dataloaders", None)
        if isinstance(loaders, Mapping):
            loaders = next(iter(loaders.values()), None)
        elif isinstance(loaders, (list, tuple)):
            loaders = loaders[0] if loaders else None
        dataset = getattr(loaders, "dataset", None)
        if dataset is None:
            raise ValueError("`probe_indices` names samples of the first validation dataloader's dataset, but the "
                             "validation dataloader has no `dataset`; pass `probe=(images, targets)` instead.")
        if isinstance(dataset, torch.utils.data.IterableDataset) or not hasattr(dataset, "__getitem__"):
            raise ValueError(f"`probe_indices` needs a dataset that is indexed (dataset[i]), but the first validation "
                             f"dataloader reads an iterable {type(dataset).__name__}; pass `probe=(images, targets)`.")
        try:
            size = len(dataset)
        except TypeError:
            size = None
        if size is not None:
            outside = [i for i in self.indices if i >= size]
            if outside:
                raise ValueError(f"`probe_indices` holds {outside[0]}, outside the first validation dataloader's "
                                 f"dataset of {size} samples (indices 0 to {size - 1}).")
        collate = getattr(loaders, "collate_fn", None) or torch.utils.data.default_collate
        samples = [dataset[i] for i in self.indices]
        images, targets = self._parts(collate(samples))
        if not isinstance(images, Tensor) or images.dim() != 4:
            check_images(images, "probe_indices images")
        check_probe_elements(images.shape[0], tuple(images.shape[1:]), "the probe of `probe_indices`")
        images = check_images(cpu_copy(images), "probe_indices images")
        labels = self._labels(targets, images.shape[0], torch.device("cpu"))
        return images, None if labels is None else cpu_copy(labels)

    def _chosen(self) -> tuple[Tensor, Tensor | None, list[str]] | str | None:
        """This rank's choice from the pool it read: ``(images, targets, notes)``, an error text, or None."""
        if self._selector is None:
            return None
        order = [position for position in self._selector.offer([]) if position in self._kept]
        if not order:
            wanted = ", ".join(str(c) for c in self.classes or ())
            seen = ", ".join(str(c) for c in sorted(self._selector.class_counts)) or "none"
            return (f"none of `probe_classes` [{wanted}] is among the first {self._read} validation samples "
                    f"(classes seen: {seen}); choose classes that the validation data holds, or raise `probe_pool`")
        with torch.inference_mode(False):
            images = torch.stack([self._kept[position][0] for position in order])
            labels = [self._kept[position][1] for position in order]
            targets = None if any(label is None for label in labels) else torch.tensor(labels, dtype=torch.long)
        notes = []
        if len(order) < self.num_probe:
            which = "" if self.classes is None else " of `probe_classes`"
            notes.append(f"IGOSCallback: the first validation epoch held {len(order)} images{which} within the "
                         f"probe pool of {self.pool} samples, fewer than num_probe={self.num_probe}; the probe keeps "
                         "those.")
        if targets is not None:
            note = self._one_class_note(targets, self._selector.class_counts, self._read)
            if note:
                notes.append(note)
        return images, targets, notes

    def _one_class_note(self, targets: Tensor, seen: Mapping[int, int], read: int) -> str | None:
        """The warning for a probe of one class while the labels read show several (None: no warning)."""
        classes = set(targets.tolist())
        if len(targets) < 2 or len(classes) != 1 or len(seen) < 2 or self.classes is not None:
            return None
        (only,) = classes
        if self.given:
            remedy = ("Give a probe of several classes, or capture one that covers the classes: `probe=None` "
                      "with the default probe_selection='balanced'")
        elif self.indices is not None:
            remedy = "Name samples of several classes in `probe_indices`, or leave it None to cover the classes"
        else:
            remedy = "Use probe_selection='balanced' (the default), or raise `probe_pool`"
        return (f"IGOSCallback: every one of the {len(targets)} probe images is of class {only}, while the first "
                f"{read} validation samples hold {len(seen)} classes: the logged values describe the explanations "
                f"of one class, not the model's. {remedy}; pass probe_classes=[{only}] if one class is what you want.")

    def settle(self, trainer: Any) -> str | None:
        """Fix the probe from this epoch's reading (rank 0's, under DDP); return an error text.

        Warnings about the probe (fewer images than asked, one class among several) are given once, on rank 0.
        """
        local: tuple[Tensor, Tensor | None, list[str]] | str | None
        if self.capture_error is not None:
            local = error_text(self.capture_error)
        elif self.indices is not None:
            if trainer.is_global_zero:
                try:
                    images, targets = self._read_indices(trainer)
                    local = (images, targets, [])
                except Exception as err:  # the same path as a failed capture: warn, or raise with on_error="raise"
                    self.capture_error = err
                    local = error_text(err)
            else:
                local = None  # rank 0 reads the dataset; its probe is broadcast
        else:
            local = self._chosen()
        if isinstance(local, tuple) and local[1] is None and self.target == "label":
            local = ("the validation batches carry no labels; use target='pred' "
                     "or pass probe=(images, targets)")
        self._reset_capture()
        if trainer.world_size > 1:
            local = trainer.strategy.broadcast(local, src=0)
        if isinstance(local, str):
            return local
        if local is not None:
            # Under trainer.validate() this runs in inference mode: keep normal tensors.
            images, targets, notes = local
            self.images = cpu_copy(images)
            self.targets = None if targets is None else cpu_copy(targets)
            self._surveyed = None
            if trainer.is_global_zero:
                for note in notes:
                    warnings.warn(note, IGOSWarning, stacklevel=2)
        return None

    def check_coverage(self, trainer: Any) -> None:
        """Once, after the first validation epoch beside a given (or restored) probe: warn if it holds one class
        while the labels read show several (rank 0's labels, on rank 0)."""
        seen, self._surveyed = self._surveyed, None
        if not seen or self.targets is None or not trainer.is_global_zero:
            return
        note = self._one_class_note(self.targets, seen, sum(seen.values()))
        if note:
            warnings.warn(note, IGOSWarning, stacklevel=2)

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
        if not self.given:
            state["selection"] = self.selection_record  # how the probe was chosen: a resume that asks otherwise warns
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
        replaced = self._replaced_text(images, targets, boxes, state_dict.get("selection"))
        if replaced:
            warnings.warn(replaced, IGOSWarning, stacklevel=2)
        self.images = cpu_copy(images)
        self.targets = None if targets is None else cpu_copy(targets)
        self.boxes = None if boxes is None else cpu_copy(boxes)
        self._reset_capture()
        self.capture_error = None
        self._surveyed = {}
        return True

    def _replaced_text(self, images: Tensor, targets: Tensor | None, boxes: Tensor | None, saved: object) -> str | None:
        """The warning for a checkpoint's probe that replaces the one this callback was given or asked for."""
        used = ("It explains the checkpoint's probe, so the values before and after the resume describe the same "
                "images; to explain the other probe, start a new run (or give this callback another prefix).")
        if self.images is not None and self.given:
            same = (self.images.shape == images.shape and torch.equal(self.images, images.to(self.images.dtype))
                    and _same(self.targets, targets) and _same(self.boxes, boxes))
            if not same:
                return (f"IGOSCallback was given a probe ({probe_summary(self.images, self.targets, self.boxes)}), "
                        f"and the checkpoint holds another ({probe_summary(images, targets, boxes)}). {used}")
            return None
        if isinstance(saved, Mapping) and self.images is None:
            record = self.selection_record
            changed = [f"{name}: {saved.get(name)!r} -> {value!r}" for name, value in record.items()
                       if name in saved and saved.get(name) != value]
            if changed:
                return (f"IGOSCallback asks for a probe chosen otherwise than the checkpoint's ({'; '.join(changed)}). "
                        f"{used}")
        return None


def _same(a: Tensor | None, b: Tensor | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.shape == b.shape and torch.equal(a.cpu(), b.cpu().to(a.dtype))


def is_probe_state(state: object) -> bool:
    """Whether ``state`` is the checkpoint state of an IGOSCallback (this format, any options)."""
    return isinstance(state, Mapping) and state.get("version") == STATE_VERSION and "probe_images" in state


def saved_options(state: Mapping[str, Any]) -> dict[str, Any]:
    """The options a checkpoint state was saved with (empty for states that predate them)."""
    options = state.get("options")
    return dict(options) if isinstance(options, Mapping) else {}
