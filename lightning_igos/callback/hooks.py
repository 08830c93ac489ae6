"""``IGOSCallback``: explain a fixed probe batch at validation time (I-GOS, or any registered explainer).

The class reads as its Lightning hooks: ``on_validation_batch_end`` captures the probe,
``on_validation_epoch_end`` explains it with :func:`~lightning_igos.core.evaluation.evaluate`
every ``every_n_epochs`` epochs (never in the sanity check) and logs, or, on an epoch without
fresh values, gives the monitors their stand-ins (:mod:`~.monitors`); ``on_load_checkpoint``
finds the checkpointed state of a run with other options. The probe and checkpoint state:
:class:`~.probe_state.ProbeStore`; what is logged, and how: :class:`~.outputs.Outputs`.

Two classes share one implementation, because ``pytorch_lightning`` and
``lightning.pytorch`` have distinct ``Callback`` base classes:
:class:`IGOSCallback` (a ``pytorch_lightning.Callback``) and ``LightningIGOSCallback``
(a ``lightning.pytorch.Callback``, in :mod:`~.lightning_namespace`, imported on first
access so ``lightning`` is only imported when asked for). Both have the same checkpoint
state key, so their checkpoints are interchangeable.

Distributed training: the probe is the same on every rank (rank 0's capture is
broadcast); rank ``r`` of ``W`` explains the ``r``-th of ``W`` contiguous
slices of it; the metrics are sum/count states synced by torchmetrics; each
rank renders the panels of its own slice, the panels are gathered, and only
rank 0 writes images. What every rank learnt is gathered before anything is
logged, so an epoch whose explanation failed on one rank is logged on none.
"""

from __future__ import annotations

import os
import re
import textwrap
import time
import warnings
from collections.abc import Mapping, Sequence
from copy import deepcopy
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_igos.callback.messages import EmptyExplanationWarning, IGOSWarning, error_text
from lightning_igos.callback.outputs import (
    Outputs,
    RankReport,
    ShareResult,
    callback_scalars,
    empty_result,
    run_class_names,
)
from lightning_igos.callback.probe_state import (
    BatchToProbe,
    ProbeStore,
    check_display_stats,
    check_probe_choice,
    given_probe,
    is_probe_state,
    saved_options,
)
from lightning_igos.callback.report_writer import ExplainedRun, explained_run
from lightning_igos.callback.scalars import EPOCH_STATISTICS
from lightning_igos.callback.status import ExplainStatus
from lightning_igos.class_names import ClassNames, ClassNamesLike
from lightning_igos.core.baselines import BaselineLike
from lightning_igos.core.config import DEFAULTS, IGOSConfig
from lightning_igos.core.evaluation import Evaluation, evaluate
from lightning_igos.core.sanity import sanity_check, spearman
from lightning_igos.core.scoring import ScoreFn
from lightning_igos.core.validation import check_bool, check_choice, check_mask_size, check_positive_int
from lightning_igos.probe import ProbeLike

# and LightningIGOSCallback (lightning_namespace.py), imported on first access
__all__ = ["EmptyExplanationWarning", "IGOSCallback", "IGOSWarning"]

TARGET_MODES = ("label", "pred")
#: The most values the stability maps of the whole probe keep (in the checkpoint too); larger probes are area-pooled.
STABILITY_MAX_VALUES = 2**21
ERROR_MODES = ("warn", "raise")
#: The keyword options that are :class:`~lightning_igos.core.config.IGOSConfig`'s fields, in its order.
CONFIG_OPTIONS = tuple(f.name for f in fields(IGOSConfig))
# A prefix names logged tags and a folder: letters, digits, '_', '-' and '.', not starting with '.'.
_PREFIX = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")


def check_prefix(prefix: object) -> str:
    """A prefix that is one safe tag and folder name component (``igos``, ``igos_pp``, ``val-igos``)."""
    if not isinstance(prefix, str):
        raise TypeError(f"`prefix` must be a str such as 'igos' or 'igos_pp', got {type(prefix).__name__}.")
    if not _PREFIX.fullmatch(prefix):
        raise ValueError(
            f"`prefix` must be a non-empty name of letters, digits, '_', '-' and '.', not starting with '.', got "
            f"{prefix!r}: it names the logged scalars and the folder of the PNG panels inside the log folder. "
            "Use a name such as 'igos_pp' or 'val-igos'."
        )
    return prefix


def _config(config: IGOSConfig | None, options: dict[str, Any]) -> IGOSConfig:
    """``config`` when given (the keyword options left at their defaults), else one built from ``options``."""
    if config is None:
        return IGOSConfig(**options)
    if not isinstance(config, IGOSConfig):
        raise TypeError(f"`config` must be an IGOSConfig or None, got {type(config).__name__}.")
    changed = [name for name, value in options.items() if value is not getattr(DEFAULTS, name)
               and value != getattr(DEFAULTS, name)]
    if changed:
        raise ValueError(f"pass the options either in `config` or as keywords, not both: {', '.join(changed)} "
                         "given beside `config` (set them in the IGOSConfig, e.g. config.replace(iterations=8)).")
    return config


class _IGOSCallbackLogic:
    """Explain a fixed probe batch every few validation epochs (with I-GOS, or the ``method`` given)
    and log how faithful the explanations are.

    Args:
        probe: the images to explain: an ``(images, targets)`` pair (images as the model takes
            them), an ``(images, targets, boxes)`` triple (``boxes`` ``(B, 4)`` the objects'
            ``(x0, y0, x1, y1)`` in pixels, end exclusive: adds the pointing game,
            ``<prefix>/pointing``), a :class:`lightning_igos.probe.Probe`, the path of a probe file, or None to
            capture ``num_probe`` samples of the first validation dataloader at the first validation
            epoch (not the sanity check), chosen as ``probe_selection`` says among its first
            ``probe_pool`` samples (under DDP those rank 0 sees, which with Lightning's
            DistributedSampler are every ``world_size``-th sample; rank 0's probe is broadcast). The
            probe is kept on the callback and saved in its checkpoint state, so a resumed run explains
            the same images; a checkpointed probe replaces one given here (with a warning when they
            differ), also when the run is resumed with another ``method``, ``target`` or ``prefix``
            (see *Checkpoints* below).
        num_probe: images to capture when ``probe`` is None, at most 1024.
        probe_selection: how a captured probe is chosen: ``"balanced"`` (default) takes samples
            round-robin over the classes of the labels seen (the first of each class in ascending
            class index, then the second of each, ...), so a loader sorted by class (an
            ``ImageFolder``) still gives every class; ``"first"`` the first ``num_probe`` samples.
            Without labels (``target="pred"``) the probe is the first ``num_probe`` samples. A probe
            of one class while the labels read show several warns once.
        probe_pool: how many validation samples (from the first) a captured probe is chosen among;
            None: ``max(512 * num_probe, 4096)``, so a loader sorted by class with up to 512 images per
            class still gives ``num_probe`` classes. Reading them costs their labels and a CPU copy of
            each image chosen, and no extra batch: the validation epoch reads them anyway.
        probe_indices: the probe as indices into the first validation dataloader's dataset
            (``dataset[i]``, collated by that dataloader), read at the first validation epoch;
            ``num_probe`` and ``probe_selection`` are then unused. An index outside the dataset is an
            error at that epoch.
        probe_classes: capture only samples of these class indices, round-robin among them in the
            order given (the classes must appear within ``probe_pool``).
        every_n_epochs: explain at the validation of every n-th epoch (epochs ``n-1, 2n-1, ...``,
            as Lightning's ``check_val_every_n_epoch``); ``trainer.validate()`` always explains. The
            other epochs are unexplained (see *Monitoring* below).
        target: ``"label"`` explains the probe's labels, ``"pred"`` the class the model predicts
            on each probe image at that epoch.
        CONFIG_OPTIONS: the solver and metric options of
            :class:`lightning_igos.core.config.IGOSConfig`, which holds their defaults and checks
            (the same as :func:`lightning_igos.igos` and ``lightning-igos check``); the callback
            keeps them as ``callback.config``. ``method`` is any registered explainer
            (:mod:`lightning_igos.core.explainers`: ``"igos"``, ``"igos++"``, ``"gradient"``,
            ``"integrated_gradients"``, ``"edge_map"``, ``"random"`` and your own).
        config: an :class:`~lightning_igos.core.config.IGOSConfig` holding those options at once
            (the solver and metric keyword options must then be left at their defaults).
        log_images: log the per-image panels and the overlay grid (rank 0 only).
        on_error: ``"warn"``: an exception inside the callback (capturing the probe, explaining
            it, logging the scalars, drawing or writing the panels) gives one warning per epoch and
            training goes on; ``"raise"``: it stops the run (on every rank). The scalars reach the
            loggers through Lightning at the end of the validation epoch, in the same
            ``log_metrics`` call as the module's own: a logger that fails there stops ``fit`` as
            it would for any metric, whatever ``on_error``.
        mean, std: per-channel normalisation of the inputs, to display them. When None the
            callback uses ``pl_module.mean``/``pl_module.std`` if the module has both, else
            rescales each image to [0, 1] (min-max).
        batch_to_probe: ``batch -> (images, targets or None)`` for validation batches that are not
            a tensor, an ``(images, labels, ...)`` tuple or a dict with an ``"image(s)"`` key.
        prefix: the first part of every logged name (``<prefix>/insertion_auc``,
            ``<prefix>/probe_0``, ...) and the name of the PNG folder: letters, digits, ``_``, ``-``
            and ``.``, not starting with ``.`` (``ValueError`` otherwise). Give each callback of one
            Trainer its own, e.g. ``IGOSCallback(method="igos++", prefix="igos_pp")`` next to
            ``IGOSCallback()``; the checkpoint state is keyed by the prefix, method and target.
        class_names: the class names shown next to the indices in the panel headers and the
            overlay grid: a sequence (``names[i]`` is class ``i``, one per class of the model) or a
            mapping from index to name. When None, the module's ``class_names`` or ``classes``
            attribute is used if it holds names that fit the model, else the indices. Checked
            here (``TypeError``/``ValueError``; a probe target without a name included) and against
            the model's number of classes at the first run.
        stability: also log ``<prefix>/stability`` (higher is better), the probe mean of each image's
            Spearman correlation between this explained epoch's saliency and the previous logged
            explained epoch's. The whole probe's maps are kept on the CPU (gathered from every rank,
            area-pooled when they would hold more than 2**21 values) and in the checkpoint, so a
            resumed run with the same options continues the series. The first explained epoch has no
            previous map: the key is not logged and monitors get the unexplained epoch's stand-in.
            No extra model passes.
        sanity_every_n: None (off) or ``n >= 1``: on every n-th explained epoch of ``fit`` (epochs
            ``n*every_n_epochs-1, 2n*every_n_epochs-1, ...``; ``trainer.validate()`` always) run
            :func:`~lightning_igos.core.sanity.sanity_check` on the probe with the epoch's saliency and
            log ``<prefix>/sanity_correlation`` (lower is better): the probe mean Spearman correlation
            with the saliency on a randomised copy of the model (the head and last quarter of the layers
            its forward runs, re-initialised from the callback's own seed, the same every epoch; their
            names are in ``sanity_reinitialized``). Only the network the forward runs is copied: the
            module's other attributes are shared, not copied. It doubles the solver's cost on those
            epochs (one more explanation) and holds one more copy of that network while it runs; a failure
            there skips the epoch like a failed explanation. Other epochs get the unexplained epoch's
            stand-in for this key.

            For both: an image whose explanation is empty (ranks no pixel) has no correlation; the mean is
            over the other images, with a warning, and an epoch where no image has one logs no value (the
            monitors get the stand-in), never a correlation of 1.

    Besides the igos/ quality scalars it logs ``<prefix>/empty_fraction`` (the fraction of probe
    images whose explanation is empty: a mask that never moved, a non-finite gradient, a non-finite
    or a constant saliency; any such image also gives one warning per epoch, with how many and why),
    ``<prefix>/seconds`` (wall time of the run, the slowest rank's) and
    ``<prefix>/passes_per_image`` (images through the model per probe image); with ``road=True``
    also ``<prefix>/road_morf`` (lower is better), ``<prefix>/road_lerf`` and ``<prefix>/road_gap``
    (higher is better), the probe means of the ROAD areas (about the insertion/deletion
    curves' cost again). It prints one line
    with the cost after its first run, and writes the work into the validation progress bar
    while it runs. Panels go to every logger that shows images (TensorBoard, W&B's
    ``log_image``, MLflow artifacts); PNG files only when none does.

    Monitoring: on an unexplained epoch (not one of ``every_n_epochs``, or its explanation failed
    under ``on_error="warn"``, on any rank) no logger gets a ``<prefix>/`` scalar, and each key
    that ``ModelCheckpoint``/``EarlyStopping`` monitor reads as the worst finite value of the
    monitor's ``mode`` (:data:`~lightning_igos.callback.monitors.WORST`). ``ModelCheckpoint`` ranks
    it below every explained epoch, so its top-k places go to explained epochs (an unexplained
    one holds a place only while fewer explained epochs than places exist). An
    ``EarlyStopping`` on a ``<prefix>/`` key does not count an unexplained epoch towards its
    ``patience`` (the callback holds its ``wait_count`` back for that check), never sees a
    non-finite value, and never sees a stand-in beyond its ``divergence_threshold``: training is
    never stopped because an epoch was not explained.

    Checkpoints: the state (the probe, and the options it was explained with) is kept under
    ``state_key``. A run resumed with another ``method``, ``target`` or ``prefix`` has another
    key; the callback then takes the one IGOSCallback state of the checkpoint that no other
    IGOSCallback of the Trainer claims (with several, the one with its prefix), so the probe
    survives. Resuming with other options, that way or under the same key (say ``iterations``),
    warns once: the values before and after the resume are not comparable.

    The model is put in eval mode (each submodule's flag is restored), gradients are taken with
    respect to the mask only, and nothing of training changes: the weights after training with
    and without the callback are bitwise identical on the CPU.

    Example:
        >>> callback = IGOSCallback(num_probe=4, iterations=10, ig_steps=10, every_n_epochs=2)
        >>> callback.every_n_epochs, callback.config.iterations
        (2, 10)

    Use it as ``pytorch_lightning.Trainer(callbacks=[IGOSCallback()])``; it runs in a
    ``lightning.pytorch.Trainer`` too. Where the ``lightning`` package checks the base class
    (``lightning.pytorch.cli.LightningCLI`` and its YAML configs) use
    ``lightning_igos.callback.LightningIGOSCallback`` (same arguments).
    """

    def __init__(
        self,
        probe: ProbeLike = None,
        num_probe: int = 8,
        every_n_epochs: int = 1,
        target: str = "label",
        *,
        method: str = DEFAULTS.method,
        mask_size: None | int | tuple[int, int] = DEFAULTS.mask_size,
        iterations: int = DEFAULTS.iterations,
        ig_steps: int = DEFAULTS.ig_steps,
        l1: float = DEFAULTS.l1,
        tv: float = DEFAULTS.tv,
        tv_power: float = DEFAULTS.tv_power,
        noise_std: float = DEFAULTS.noise_std,
        baseline: BaselineLike = DEFAULTS.baseline,
        tolerance: float = DEFAULTS.tolerance,
        patience: int | None = DEFAULTS.patience,
        autocast_dtype: torch.dtype | None = DEFAULTS.autocast_dtype,
        normalize_score: bool = DEFAULTS.normalize_score,
        objective: str = DEFAULTS.objective,
        quadrature: str = DEFAULTS.quadrature,
        initial_step: float = DEFAULTS.initial_step,
        substrate: BaselineLike | None = DEFAULTS.substrate,
        deletion_substrate: BaselineLike | None = DEFAULTS.deletion_substrate,
        insertion_substrate: BaselineLike | None = DEFAULTS.insertion_substrate,
        metric_steps: int = DEFAULTS.metric_steps,
        log_images: bool = True,
        max_batch_size: int | None = DEFAULTS.max_batch_size,
        on_error: str = "warn",
        seed: int = DEFAULTS.seed,
        mean: Sequence[float] | Tensor | None = None,
        std: Sequence[float] | Tensor | None = None,
        score_fn: ScoreFn | None = DEFAULTS.score_fn,
        batch_to_probe: BatchToProbe | None = None,
        probe_selection: str = "balanced",
        probe_pool: int | None = None,
        probe_indices: Sequence[int] | None = None,
        probe_classes: Sequence[int] | None = None,
        prefix: str = "igos",
        class_names: ClassNamesLike | None = None,
        road: bool = DEFAULTS.road,
        stability: bool = False,
        sanity_every_n: int | None = None,
        config: IGOSConfig | None = None,
    ) -> None:
        arguments = dict(locals())
        super().__init__()
        self.num_probe = check_positive_int(num_probe, "num_probe")
        self.every_n_epochs = check_positive_int(every_n_epochs, "every_n_epochs")
        self.target = check_choice(target, "target", TARGET_MODES)
        # How a captured probe is chosen: checked (conflicts with `probe` included) before a probe file is read.
        self.probe_selection, self.probe_pool, self.probe_indices, self.probe_classes = check_probe_choice(
            probe, self.num_probe, probe_selection, probe_pool, probe_indices, probe_classes)
        # The solver and metric options (the keywords named after IGOSConfig's fields): defaults and validation are
        # IGOSConfig's.
        self.config = _config(config, {name: arguments[name] for name in CONFIG_OPTIONS})
        self.prefix = check_prefix(prefix)
        self.stability = check_bool(stability, "stability")
        self.sanity_every_n = None if sanity_every_n is None else check_positive_int(sanity_every_n, "sanity_every_n")
        # This rank's slice of the saliency of the last logged explained epoch (stability=True), on the CPU.
        self.previous_saliency: Tensor | None = None
        # The modules the last sanity check re-initialised (model.named_modules() names).
        self.sanity_reinitialized: tuple[str, ...] = ()
        self.log_images = check_bool(log_images, "log_images")
        self.on_error = check_choice(on_error, "on_error", ERROR_MODES)
        mean, std = check_display_stats(mean, std)
        if batch_to_probe is not None and not callable(batch_to_probe):
            raise TypeError(f"`batch_to_probe` must be None or a callable batch -> (images, targets), "
                            f"got {batch_to_probe!r}.")
        self.batch_to_probe = batch_to_probe
        self.class_names = None if class_names is None else ClassNames.from_value(class_names)
        images, targets, mean, std, boxes = given_probe(probe, target, mean, std, self.class_names)
        if images is not None and self.config.mask_size is not None:
            size = tuple(images.shape[-2:])
            try:
                check_mask_size(self.config.mask_size, image_size=size)
            except ValueError:
                raise ValueError(
                    f"`mask_size` {self.config.mask_size} is larger than the probe's images {size}: a mask has at "
                    "most one cell per pixel. Pass a smaller `mask_size`, or None for the image's own resolution."
                ) from None
        self.mean, self.std = mean, std
        # The probe and the checkpoint state; what is logged, and what the logging keeps between hooks.
        self.store = ProbeStore(images, targets, num_probe=self.num_probe, target=self.target,
                                batch_to_probe=batch_to_probe, on_error=self.on_error, boxes=boxes,
                                selection=self.probe_selection, pool=self.probe_pool, indices=self.probe_indices,
                                classes=self.probe_classes)
        self.outputs = Outputs(prefix, self.on_error, self.class_names, display=(mean, std),
                               scalars=self._scalars())
        self._last_run: ExplainedRun | None = None  # what save_report writes
        self._mask_size_used: tuple[int, int] | None = None
        self._num_classes: int | None = None

    def _scalars(self) -> tuple:
        epoch = [s.short for s in EPOCH_STATISTICS if getattr(self, s.option) not in (None, False)]
        return callback_scalars(self.config, self.store.boxes is not None, epoch=epoch)

    @property
    def scalar_names(self) -> tuple[str, ...]:
        """The ``<prefix>/`` quality scalars this callback logs (those of the registered statistics that apply)."""
        return self.outputs.scalar_names

    # --------------------------------------------------------------------- public helpers

    @property
    def probe(self) -> tuple[Tensor, Tensor | None] | None:
        """The probe ``(images, targets)`` on the CPU, or None before it is captured."""
        if self.store.images is None:
            return None
        return self.store.images, self.store.targets

    def save_probe(self, path: str | os.PathLike) -> Path:
        """Write the probe to a probe file (see :mod:`lightning_igos.probe`); returns its path.

        Targets are the labels, or with ``target="pred"`` and no labels the classes
        explained at the last run. The display normalisation (the callback's, else the
        module's ``mean``/``std`` seen at the last run) is saved along.

        Example:
            >>> import tempfile, os
            >>> cb = IGOSCallback(probe=(torch.randn(2, 3, 8, 8), torch.tensor([0, 1])))
            >>> cb.save_probe(os.path.join(tempfile.mkdtemp(), "probe.pt")).name
            'probe.pt'
        """
        return self.store.save(path, self.outputs.display)

    def save_report(self, path: str | os.PathLike, checkpoint: str | os.PathLike | None = None) -> Path:
        """Write the last explained epoch as a report of ``lightning-igos check`` (its ``--report`` format).

        The report carries every probe image's statistics, the means with their 95% intervals, the
        probe's hash, the options and versions, so a later ``lightning-igos check --baseline-report``
        (or ``lightning-igos compare``) of a checkpoint on the same probe (:meth:`save_probe`)
        compares with this run without explaining it again. ``checkpoint`` is recorded as the
        report's checkpoint (default: the training run and its epoch). Under DDP the other ranks'
        results reach rank 0 only with ``log_images=True``.

        Raises:
            RuntimeError: no epoch was explained yet (or, under DDP, not every rank's results are here).

        Example:
            >>> IGOSCallback().save_report("report.json")  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            ...
            RuntimeError: IGOSCallback(prefix='igos') has no explained epoch to report yet: ...
        """
        from lightning_igos.callback.report_writer import callback_report
        from lightning_igos.cli.report import write_report

        if self._last_run is None:
            raise RuntimeError(f"IGOSCallback(prefix={self.prefix!r}) has no explained epoch to report yet: call "
                               "save_report after fit or validate.")
        return write_report(callback_report(self, self._last_run, checkpoint), Path(path))

    # --------------------------------------------------------------------- checkpointing

    @property
    def state_key(self) -> str:
        """The key of this callback's checkpoint state: ``IGOSCallback`` with its prefix, method and target.

        Two callbacks of one Trainer (say ``igos`` and ``igos++``) keep separate states. The key
        names ``IGOSCallback`` for both classes (``LightningIGOSCallback`` too), so a checkpoint
        written under one Lightning package resumes under the other.
        """
        return "IGOSCallback" + repr({"prefix": self.prefix, "method": self.config.method, "target": self.target})

    @property
    def options(self) -> dict[str, Any]:
        """What the logged values depend on, as saved with the probe: the prefix, target and config fields."""
        return {"prefix": self.prefix, "target": self.target, **self.config.as_dict()}

    def state_dict(self) -> dict[str, Any]:
        state = self.store.state_dict(options=self.options)
        if state and self.stability and self.previous_saliency is not None:
            state["previous_saliency"] = self.previous_saliency  # a resumed run continues the stability series
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the probe of the checkpointed run (it replaces a probe given to ``__init__``).

        A state this version cannot read never stops the resumed run unless
        ``on_error="raise"``: the callback warns and keeps (or captures anew) its probe. A state
        saved with other options warns once.
        """
        self._restore(state_dict, key=None)

    def on_load_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        """Find this callback's state when the checkpoint holds it under another key (other options).

        Lightning gives ``load_state_dict`` the state under ``state_key`` only; a run resumed with
        another ``method``, ``target`` or ``prefix`` would capture a new probe. The callback then
        takes the one IGOSCallback state that no other IGOSCallback of the Trainer claims (with
        several, the one saved with its prefix).
        """
        states = checkpoint.get("callbacks")
        if not isinstance(states, Mapping) or self.state_key in states:
            return  # Lightning restores it (or there is nothing to restore)
        claimed = {cb.state_key for cb in getattr(trainer, "callbacks", []) if isinstance(cb, _IGOSCallbackLogic)}
        found = {key: state for key, state in states.items() if key not in claimed and is_probe_state(state)}
        if len(found) > 1:
            same_prefix = {key: state for key, state in found.items()
                           if saved_options(state).get("prefix") == self.prefix}
            if len(same_prefix) != 1:
                warnings.warn(
                    f"IGOSCallback(prefix={self.prefix!r}) found no checkpoint state under its own key "
                    f"{self.state_key!r} and {len(found)} states of IGOSCallbacks with other options "
                    f"({', '.join(repr(k) for k in found)}), and cannot tell which is its own: it captures a new "
                    "probe. Resume with the options of the saved run, or give each callback the prefix it had.",
                    IGOSWarning,
                    stacklevel=2,
                )
                return
            found = same_prefix
        if found:
            (key, state), = found.items()
            self._restore(deepcopy(dict(state)), key=str(key))

    def _restore(self, state: dict[str, Any], key: str | None) -> None:
        """Restore ``state`` (found under ``key``, None: its own) and warn once if its options differ."""
        if not self.store.load_state_dict(state):
            return
        self.outputs.declare_scalars(self._scalars())  # the restored probe may have boxes, or none
        saved = saved_options(state)
        # max_batch_size changes how the work is batched, never the values.
        changed = [f"{name}: {saved[name]!r} -> {value!r}" for name, value in self.options.items()
                   if name in saved and name != "max_batch_size" and saved[name] != value]
        # The stability series continues across the resume when the maps fit the probe and the options are the same.
        previous = state.get("previous_saliency")
        fits = isinstance(previous, Tensor) and previous.dim() == 4 \
            and tuple(previous.shape[:2]) == (len(self.store.images), 1)
        self.previous_saliency = previous.float().clone() if fits and not changed and self.stability else None
        if not changed and key is None:
            return
        where = "" if key is None else f" (found under the key {key!r}, not its own {self.state_key!r})"
        what = "; ".join(changed) if changed else "options not recorded in the checkpoint"
        warnings.warn(
            f"IGOSCallback(prefix={self.prefix!r}) resumes a run explained with other options{where}: {what}. "
            "It keeps that run's probe, but its values before and after the resume are not comparable. "
            "Resume with the same options to compare them.",
            IGOSWarning,
            stacklevel=2,
        )

    # --------------------------------------------------------------------- Lightning hooks

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        from lightning_igos.core.statistics import missing_registrations

        # In a spawned worker the plug-ins registered under `if __name__ == "__main__":` are missing.
        missing = missing_registrations(self.config.method, [s.statistic for s in self.outputs.scalars
                                                             if s.statistic is not None])
        if missing is not None:
            raise RuntimeError(f"IGOSCallback: {missing}")
        self.outputs.begin_run()
        clash = [cb for cb in getattr(trainer, "callbacks", []) if cb is not self
                 and isinstance(cb, _IGOSCallbackLogic) and cb.prefix == self.prefix]
        if clash:
            raise ValueError(
                f"Two IGOSCallbacks of one Trainer log under the same prefix {self.prefix!r}; give each its own, "
                "e.g. IGOSCallback(method='igos++', prefix='igos_pp')."
            )

    def on_validation_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if not trainer.sanity_checking and dataloader_idx == 0:
            self.store.capture(batch)

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking:
            return
        self.outputs.begin_epoch()
        self._validation_epoch_end(trainer, pl_module)
        # An epoch without fresh values gives each monitor a stand-in that never ranks or counts as explained.
        self.outputs.log_stand_ins(trainer)

    def _validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if self.store.images is None:
            error = self.store.settle(trainer)
            if error is not None:
                # Every rank holds the same (broadcast) error: all raise, or rank 0 warns.
                own_error = self.store.take_capture_error() or ValueError(
                    f"IGOSCallback could not capture a probe: {error}")
                failure = RankReport(0, error)
                self.outputs.handle_failures(trainer, [failure],
                                             own_error=own_error if trainer.is_global_zero else None)
                return
            if self.store.images is None:
                return
        else:
            self.store.check_coverage(trainer)  # once: a given or restored probe of one class among several
        if not self._should_run(trainer):
            return
        self._run(trainer, pl_module)

    def _should_run(self, trainer: Any) -> bool:
        if trainer.state.fn == "validate":  # an explicit trainer.validate() always explains
            return True
        return (trainer.current_epoch + 1) % self.every_n_epochs == 0

    # --------------------------------------------------------------------- one run

    def _run(self, trainer: Any, pl_module: Any) -> None:
        """One explained epoch, in stages: capture the display statistics, explain this rank's share, draw its
        panels, gather what every rank learnt, then log the scalars (or, when any rank failed, nothing) and write
        the panels (rank 0)."""
        panel_error = self._capture_display(pl_module)
        result, own_error = self._explain(trainer, pl_module)
        panel_error = self._draw(result, panel_error)
        reports = self._gather(trainer, self._rank_report(trainer, result, own_error or panel_error))
        failed = [r for r in reports if not r.explained]
        if failed:
            # As in a single process: an epoch whose explanation failed on any rank is logged on none.
            self.outputs.handle_failures(trainer, failed, own_error=own_error, what="explanations")
            return
        panel_failures = [r for r in reports if r.error is not None]
        self.outputs.handle_failures(trainer, panel_failures, own_error=panel_error, what="panels")
        self._log(trainer, pl_module, result, reports)
        if not panel_failures:
            self._write(trainer, reports)

    def _capture_display(self, pl_module: Any) -> Exception | None:
        """Resolve the display ``(mean, std)`` of this run's panels; the error that costs the panels, if any."""
        from lightning_igos.render import display_stats

        try:
            self.outputs.use_display(display_stats(self.mean, self.std, pl_module, self.store.images.shape[1]))
        except (TypeError, ValueError) as err:  # bad display statistics cost the panels only
            self.outputs.use_display((self.mean, self.std))
            return err if self.log_images else None
        return None

    def _explain(self, trainer: Any, pl_module: Any) -> tuple[ShareResult | None, Exception | None]:
        """This rank's share explained, or the error that stopped it (handled once every rank has reported)."""
        try:
            return self._explain_share(trainer, pl_module), None
        except Exception as err:  # the run must go on (on_error="warn"); handled in _run
            return None, err

    def _draw(self, result: ShareResult | None, panel_error: Exception | None) -> Exception | None:
        """Render the share's panels into ``result.panels`` (with ``log_images``); the error that lost them."""
        if result is None or not self.log_images:
            return panel_error
        try:
            if panel_error is not None:
                raise panel_error
            result.panels = self.outputs.render_panels(self.store.images, result, self.config)
        except Exception as err:  # the scalars are still logged; only the images are lost
            return err
        return None

    def _rank_report(self, trainer: Any, result: ShareResult | None, error: Exception | None) -> RankReport:
        """What the other ranks must learn of this rank's run (see :meth:`_gather`)."""
        return RankReport(
            rank=trainer.global_rank,
            error=None if error is None else error_text(error),
            explained=result is not None,
            targets=None if result is None else result.targets,
            result=result if self.log_images and error is None else None,
            empty_reasons=[] if result is None else result.empty_reasons,
            stability_maps=None if result is None or not self.stability else self._stability_maps(result.saliency),
            correlations={} if result is None else self._correlation_counts(result),
            substrate_scores=None if result is None or "substrate_score" not in result.stats
            else torch.stack([result.stats["substrate_score"], result.stats["clean_score"]], 1),
        )

    def _log(self, trainer: Any, pl_module: Any, result: ShareResult, reports: list[RankReport]) -> None:
        """Keep what the next epochs need, log the scalars, warn, and keep the run for :meth:`save_report`."""
        out = self.outputs
        if all(r.targets is not None for r in reports):
            self.store.remember_targets(torch.cat([r.targets for r in reports]))
        if self.stability:  # the epoch is logged on every rank: the next one compares with it (the whole probe)
            self.previous_saliency = torch.cat([r.stability_maps for r in reports])
        self._drop_undefined_correlations(trainer, reports, result)
        try:
            out.log_scalars(pl_module, result)
        except Exception as err:  # pl_module.log refused them (the loggers get them later, from Lightning)
            out.handle_failures(trainer, [RankReport(trainer.global_rank, error_text(err))], own_error=err,
                                what="scalars", local=True)
        num_images = len(self.store.images)
        out.warn_empty(trainer, reports, num_images)
        self._last_run = explained_run(trainer, pl_module, result, reports, self._mask_size_used, out.display,
                                       out.names, self._num_classes)
        out.warn_substrate(trainer, reports, self._num_classes if self.config.score_fn is None else None)
        if trainer.is_global_zero:
            out.after_scalars(trainer, pl_module, result, num_images, self.every_n_epochs, self.config.method)

    def _write(self, trainer: Any, reports: list[RankReport]) -> None:
        """Rank 0 gives every rank's panels to the loggers that show images, else writes PNG files."""
        rendered = [r.result for r in reports if r.result is not None and len(r.result) > 0]
        if not (self.log_images and trainer.is_global_zero and rendered):
            return
        try:
            self.outputs.write_images(trainer, self.store.images, rendered)
        except Exception as err:
            self.outputs.handle_failures(trainer, [RankReport(0, error_text(err))], own_error=err, what="panels",
                                         local=True)

    def _explain_share(self, trainer: Any, pl_module: nn.Module) -> ShareResult:
        everyone = torch.arange(len(self.store.images))
        indices = everyone.tensor_split(trainer.world_size)[trainer.global_rank]
        due = [statistic for statistic in EPOCH_STATISTICS if getattr(self, statistic.due)(trainer)]
        if indices.numel() == 0:
            result = empty_result(self.config.metric_steps, self.outputs.scalars)
            # An empty share adds nothing to the synced means, but logs the same keys as the other ranks.
            for statistic in due:
                setattr(result, statistic.attribute, torch.empty(0))
            return result
        images = self.store.images[indices].to(pl_module.device)
        targets = "pred" if self.target == "pred" else self.store.targets[indices]
        # evaluate() makes a fresh generator seeded with config.seed at every run, so every epoch sees
        # the same noise and epochs are comparable. The status counts the passes and shows the work
        # on the progress bar (done/total passes and the time left).
        boxes = None if self.store.boxes is None else self.store.boxes[indices].to(pl_module.device)
        with ExplainStatus(trainer, len(indices), self.config, self.prefix) as status:
            evaluation = evaluate(pl_module, images, targets, self.config, on_stage=status.on_stage,
                                  on_forward=status.count, boxes=boxes)
        result = ShareResult.of(indices, evaluation)
        mask = evaluation.explanation.mask
        self._mask_size_used = None if mask is None else (int(mask.shape[-2]), int(mask.shape[-1]))
        self._num_classes = evaluation.num_classes
        result.passes, result.seconds = status.passes, status.seconds
        result.summary = status.summary(trainer.current_epoch)
        self.outputs.use_class_names(run_class_names(self.class_names, pl_module, evaluation.num_classes, result))
        for statistic in due:
            values = getattr(self, statistic.compute)(trainer, pl_module, images, indices, evaluation, result)
            setattr(result, statistic.attribute, values)
        return result

    # The epoch statistics (scalars.EPOCH_STATISTICS): for each, whether this explained epoch computes it (the same
    # answer on every rank) and its (n,) values for the share, on the CPU, NaN where they are undefined.

    def _stability_due(self, trainer: Any) -> bool:
        """With ``stability=True``, when a previous explained epoch's maps are kept to compare with."""
        return self.stability and self.previous_saliency is not None

    def _stability_values(self, trainer: Any, pl_module: nn.Module, images: Tensor, indices: Tensor,
                          evaluation: Evaluation, result: ShareResult) -> Tensor:
        """Each image's Spearman correlation between its saliency and the previous explained epoch's."""
        current, previous = self._stability_maps(result.saliency), self.previous_saliency
        # The same images of the same probe (any world size); another probe compares nothing.
        if previous.shape[0] != len(self.store.images) or previous.shape[1:] != current.shape[1:]:
            return torch.empty(0)
        # An empty explanation this epoch has no correlation with the last one.
        return spearman(current, previous[indices]).masked_fill(evaluation.empty.cpu(), float("nan"))

    def _sanity_values(self, trainer: Any, pl_module: nn.Module, images: Tensor, indices: Tensor,
                       evaluation: Evaluation, result: ShareResult) -> Tensor:
        """The sanity check's correlations (:meth:`_sanity_correlation`); its time counts in the run's seconds."""
        start = time.perf_counter()
        values = self._sanity_correlation(trainer, pl_module, images, evaluation).cpu()
        result.seconds += time.perf_counter() - start
        return values

    def _stability_maps(self, saliency: Tensor) -> Tensor:
        """``saliency`` as stability compares and keeps it: on the CPU, area-pooled when the whole probe's maps
        would hold more than :data:`STABILITY_MAX_VALUES` values (they go into the checkpoint)."""
        maps = saliency.detach().float().cpu()
        height, width = self.store.images.shape[-2:]
        scale = min(1.0, (STABILITY_MAX_VALUES / (len(self.store.images) * height * width)) ** 0.5)
        size = (max(1, int(height * scale)), max(1, int(width * scale)))
        if maps.shape[0] == 0:
            return maps.new_empty(0, 1, *size)
        return maps.clone() if tuple(maps.shape[-2:]) == size else F.adaptive_avg_pool2d(maps, size)

    def _sanity_due(self, trainer: Any) -> bool:
        """Whether this explained epoch runs the sanity check (the same answer on every rank, and after a resume)."""
        if self.sanity_every_n is None:
            return False
        if trainer.state.fn == "validate":
            return True
        explained = (trainer.current_epoch + 1) // self.every_n_epochs  # the ordinal of this explained epoch
        return explained % self.sanity_every_n == 0

    def _sanity_correlation(self, trainer: Any, pl_module: nn.Module, images: Tensor, evaluation: Evaluation) -> Tensor:
        """Per-image Spearman ``(n,)`` of the epoch's saliency with that of a randomised copy of the model (NaN
        where either explanation is empty)."""
        # sanity_check re-initialises a copy of the network the forward runs, never the user's module; the
        # module's other attributes (the Trainer, metrics, data) are shared, not copied, and the
        # re-initialisation draws from the callback's own seed.
        generator = torch.Generator().manual_seed(self.config.seed)
        result = sanity_check(pl_module, images, evaluation.targets.to(images.device), self.config,
                              saliency=evaluation.saliency, empty=evaluation.empty, generator=generator)
        self.sanity_reinitialized = result.reinitialized
        return result.correlation

    @staticmethod
    def _correlation_counts(result: ShareResult) -> dict[str, tuple[int, int]]:
        """The share's defined and undefined (NaN: an empty map) values of each epoch statistic."""
        counts = {}
        for statistic in EPOCH_STATISTICS:
            values = getattr(result, statistic.attribute)
            if values is not None:
                undefined = int(torch.isnan(values).sum())
                counts[statistic.short] = (values.numel() - undefined, undefined)
        return counts

    def _drop_undefined_correlations(self, trainer: Any, reports: list[RankReport], result: ShareResult) -> None:
        """Log each epoch statistic's mean over the images whose value is defined; warn (rank 0) about
        the others; log no value when no image of the probe has one, so the monitors get the stand-in of an
        epoch without it (the decision is the same on every rank: it reads the gathered counts)."""
        for statistic in EPOCH_STATISTICS:
            short, attribute = statistic.short, statistic.attribute
            values = getattr(result, attribute)
            if values is None:
                continue
            defined = sum(r.correlations.get(short, (0, 0))[0] for r in reports)
            undefined = sum(r.correlations.get(short, (0, 0))[1] for r in reports)
            setattr(result, attribute, values[~torch.isnan(values)] if defined else None)
            if undefined and trainer.is_global_zero:
                what = statistic.what
                logged = (f"the logged {self.prefix}/{short} is the mean of the other {defined}" if defined else
                          f"no {self.prefix}/{short} is logged (a monitor on it gets the stand-in of an epoch "
                          "without it)")
                warnings.warn(
                    f"IGOSCallback: {undefined} of {defined + undefined} probe images have no {what} correlation at "
                    f"epoch {trainer.current_epoch}: an explanation is empty (the same everywhere: it ranks no "
                    f"pixel), so its rank correlation is undefined; {logged}.", IGOSWarning, stacklevel=2,
                )

    @staticmethod
    def _gather(trainer: Any, report: RankReport) -> list[RankReport]:
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        if trainer.world_size == 1 or not distributed:
            return [report]
        reports: list[Any] = [None] * trainer.world_size
        torch.distributed.all_gather_object(reports, report)
        return reports


def _option_list(names: Sequence[str], width: int = 100) -> str:
    """``names`` as the docstring's one argument entry: comma-separated lines, the later ones indented."""
    return textwrap.fill(", ".join(names), width=width, subsequent_indent=" " * 12)


# The docstring's entry for the config's options is the config's field list.
_IGOSCallbackLogic.__doc__ = (_IGOSCallbackLogic.__doc__ or "").replace("CONFIG_OPTIONS:", _option_list(CONFIG_OPTIONS)
                                                                         + ":", 1)


class IGOSCallback(_IGOSCallbackLogic, pl.Callback):
    __doc__ = _IGOSCallbackLogic.__doc__

