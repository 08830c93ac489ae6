"""``IGOSCallback``: explain a fixed probe batch with I-GOS at validation time.

Every ``every_n_epochs`` validation epochs (never during the sanity check) the
callback explains the same *probe* images with :func:`~lightning_igos.igos`,
scores the explanations with the causal insertion and deletion metrics, and
logs

* scalars through ``pl_module.log`` as torchmetrics objects (so every logger,
  ``ModelCheckpoint(monitor=...)`` and ``EarlyStopping`` see them, and they
  sync under DDP): ``igos/insertion_auc``, ``igos/deletion_auc``, their
  ``_normalized`` variants (curves divided by the clean score),
  ``igos/mask_mean``, ``igos/mask_min``, ``igos/mask_frac_below_half`` and
  ``igos/target_prob`` (mean probability of the explained class);
* one TensorBoard image per probe image (``igos/probe_0``, ...: input, heatmap
  overlay, insertion/deletion curves) and a grid of all overlays
  (``igos/overlays``), at ``trainer.global_step``. Without a TensorBoard logger
  the same images are written as PNG files under
  ``<log_dir>/igos/epoch_<E>_step_<S>/`` (a new folder for every validation run).

Two classes share one implementation, because ``pytorch_lightning`` and
``lightning.pytorch`` have distinct ``Callback`` base classes:
:class:`IGOSCallback` for ``pytorch_lightning.Trainer`` and
``LightningIGOSCallback`` (created on first access, so ``lightning`` is only
imported when asked for) for ``lightning.pytorch.Trainer``.

Distributed training: the probe is the same on every rank (rank 0's capture is
broadcast); rank ``r`` of ``W`` explains the ``r``-th of ``W`` contiguous
slices of it; the metrics are sum/count states synced by torchmetrics; each
rank renders the panels of its own slice, the panels are gathered, and only
rank 0 writes images.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.aggregation import MaxMetric, MeanMetric, MinMetric

from lightning_igos.callback.loggers import log_panels, scalar_step, write_custom_scalars
from lightning_igos.callback.outputs import error_text, new_folder, png_root
from lightning_igos.callback.probe_state import (
    BatchToProbe,
    batch_parts,
    check_bool,
    check_choice,
    check_display_stats,
)
from lightning_igos.callback.status import ExplainStatus, cost_line
from lightning_igos.class_names import ClassNames, ClassNamesLike, module_class_names
from lightning_igos.core.baselines import BaselineLike
from lightning_igos.core.causal import CausalCurves
from lightning_igos.core.config import DEFAULTS, IGOSConfig
from lightning_igos.core.evaluation import Evaluation, evaluate
from lightning_igos.core.runtime import cpu_copy
from lightning_igos.core.scoring import ScoreFn
from lightning_igos.core.validation import (
    check_images,
    check_positive_int,
    check_targets,
)
from lightning_igos.metrics import DeletionAUC, InsertionAUC
from lightning_igos.probe import ProbeLike, read_probe

__all__ = ["IGOSCallback", "IGOSWarning"]  # and LightningIGOSCallback, made on first access

# Lightning's own logger hierarchy: the first-run cost line shows (and is silenced) like Lightning's info lines.
_log = logging.getLogger("pytorch_lightning.callbacks.igos")

#: The scalars logged each explained epoch, as ``<prefix>/<name>``.
SCALARS = (
    "insertion_auc",
    "deletion_auc",
    "insertion_auc_normalized",
    "deletion_auc_normalized",
    "mask_mean",
    "mask_min",
    "mask_frac_below_half",
    "target_prob",
)
#: Their names with the default prefix ``igos``.
SCALAR_NAMES = tuple(f"igos/{name}" for name in SCALARS)
# What a monitor sees for a scalar that has never been computed: the worst finite value of its mode.
_NEVER_COMPUTED = {"max": -torch.finfo(torch.float32).max, "min": torch.finfo(torch.float32).max}
TARGET_MODES = ("label", "pred")
ERROR_MODES = ("warn", "raise")
STATE_VERSION = 1


class IGOSWarning(UserWarning):
    """Warnings of :class:`IGOSCallback` (skipped epochs, PNG fallback)."""


# ----------------------------------------------------------------------------- results


@dataclass
class _ShareResult:
    """What one rank computed for its slice of the probe, on the CPU."""

    indices: Tensor
    targets: Tensor
    predictions: Tensor
    curves: CausalCurves
    saliency: Tensor
    mask_mean: Tensor
    mask_min: Tensor
    mask_frac_below_half: Tensor
    panels: list[Tensor] = field(default_factory=list)
    passes: int = 0  # images through the model while explaining and scoring
    seconds: float = 0.0

    def __len__(self) -> int:
        return self.indices.numel()

    @classmethod
    def of(cls, indices: Tensor, evaluation: Evaluation) -> _ShareResult:
        ev = evaluation.cpu()
        stats = ev.per_image()
        return cls(
            indices=indices, targets=ev.targets, predictions=ev.predictions, curves=ev.curves,
            saliency=ev.saliency, mask_mean=stats["mask_mean"], mask_min=stats["mask_min"],
            mask_frac_below_half=stats["mask_frac_below_half"],
        )


@dataclass
class _RankReport:
    """What every rank learns about a rank's run: its failure, its targets and (for images) its results."""

    rank: int
    error: str | None
    explained: bool = False
    targets: Tensor | None = None
    result: _ShareResult | None = None


def _empty_result(metric_steps: int) -> _ShareResult:
    empty = torch.empty(0)
    curve = torch.empty(0, metric_steps + 1)
    curves = CausalCurves(
        fractions=torch.linspace(0, 1, metric_steps + 1), insertion=curve, deletion=curve,
        insertion_auc=empty, deletion_auc=empty, clean_score=empty, substrate_score=empty,
    )
    long = torch.empty(0, dtype=torch.long)
    return _ShareResult(long, long, long, curves, torch.empty(0, 1, 1, 1), empty, empty, empty)


def _curves_to_cpu(curves: CausalCurves) -> CausalCurves:
    return CausalCurves(**{name: getattr(curves, name).detach().cpu() for name in curves.__dataclass_fields__})


# ----------------------------------------------------------------------------- the callback


class _IGOSCallbackLogic:
    """Explain a fixed probe batch with I-GOS every few validation epochs and log how faithful
    the explanations are.

    Args:
        probe: the images to explain: an ``(images, targets)`` pair (images as the model takes
            them), a :class:`lightning_igos.probe.Probe`, the path of a probe file, or None to
            take the first ``num_probe`` samples of the first validation dataloader at the first
            validation epoch (not the sanity check; under DDP the first samples rank 0 sees, which
            with Lightning's DistributedSampler are every ``world_size``-th sample). The probe is
            kept on the callback and saved in its checkpoint state, so a resumed run explains the
            same images; a checkpointed probe replaces one given here.
        num_probe: images to capture when ``probe`` is None.
        every_n_epochs: explain at the validation of every n-th epoch (epochs ``n-1, 2n-1, ...``,
            as Lightning's ``check_val_every_n_epoch``); ``trainer.validate()`` always explains. On
            the other epochs (and after a failure under ``on_error="warn"``) no logger gets igos/
            scalars, and ``ModelCheckpoint``/``EarlyStopping`` see the last explained value (before
            any, the worst finite value of their ``mode``), so monitoring an igos/ key never stops
            training.
        target: ``"label"`` explains the probe's labels, ``"pred"`` the class the model predicts
            on each probe image at that epoch.
        method, mask_size, iterations, ig_steps, l1, tv, tv_power, noise_std, baseline,
            tolerance, patience, autocast_dtype, normalize_score, initial_step, substrate,
            metric_steps, max_batch_size, seed, score_fn: the solver and metric options of
            :class:`lightning_igos.core.config.IGOSConfig`, which holds their defaults and checks
            (the same as :func:`lightning_igos.igos` and ``lightning-igos check``); the callback
            keeps them as ``callback.config``.
        log_images: log the per-image panels and the overlay grid (rank 0 only).
        on_error: ``"warn"``: an exception inside the callback gives one warning per epoch and
            training goes on; ``"raise"``: it stops the run (on every rank).
        mean, std: per-channel normalisation of the inputs, to display them. When None the
            callback uses ``pl_module.mean``/``pl_module.std`` if the module has both, else
            rescales each image to [0, 1] (min-max).
        batch_to_probe: ``batch -> (images, targets or None)`` for validation batches that are not
            a tensor, an ``(images, labels, ...)`` tuple or a dict with an ``"image(s)"`` key.
        prefix: the first part of every logged name (``<prefix>/insertion_auc``,
            ``<prefix>/probe_0``, ...) and of the PNG folder. Give each callback of one Trainer
            its own, e.g. ``IGOSCallback(method="igos++", prefix="igos++")`` next to
            ``IGOSCallback()``; the checkpoint state is keyed by the prefix, method and target.
        class_names: the class names shown next to the indices in the panel headers and the
            overlay grid: a sequence (``names[i]`` is class ``i``, one per class of the model) or a
            mapping from index to name. When None, the module's ``class_names`` or ``classes``
            attribute is used if it holds names that fit the model, else the indices. Checked
            here (``TypeError``/``ValueError``; a probe target without a name included) and against
            the model's number of classes at the first run.

    Besides the igos/ quality scalars it logs ``<prefix>/seconds`` (wall time of the run, the
    slowest rank's) and ``<prefix>/passes_per_image`` (images through the model per probe
    image), prints one line with the cost after its first run, and writes the work into the
    validation progress bar while it runs. Panels go to every logger that shows images
    (TensorBoard, W&B's ``log_image``, MLflow artifacts); PNG files only when none does.

    The model is put in eval mode (each submodule's flag is restored), gradients are taken with
    respect to the mask only, and nothing of training changes: the weights after training with
    and without the callback are bitwise identical on the CPU.

    Example:
        >>> callback = IGOSCallback(num_probe=4, iterations=10, ig_steps=10, every_n_epochs=2)
        >>> callback.every_n_epochs, callback.config.iterations
        (2, 10)

    Use it as ``pytorch_lightning.Trainer(callbacks=[IGOSCallback()])``; with
    ``lightning.pytorch.Trainer`` use ``lightning_igos.callback.LightningIGOSCallback`` (same
    arguments).
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
        initial_step: float = DEFAULTS.initial_step,
        substrate: BaselineLike = DEFAULTS.substrate,
        metric_steps: int = DEFAULTS.metric_steps,
        log_images: bool = True,
        max_batch_size: int | None = DEFAULTS.max_batch_size,
        on_error: str = "warn",
        seed: int = DEFAULTS.seed,
        mean: Sequence[float] | Tensor | None = None,
        std: Sequence[float] | Tensor | None = None,
        score_fn: ScoreFn | None = DEFAULTS.score_fn,
        batch_to_probe: BatchToProbe | None = None,
        prefix: str = "igos",
        class_names: ClassNamesLike | None = None,
    ) -> None:
        super().__init__()
        self.num_probe = check_positive_int(num_probe, "num_probe")
        self.every_n_epochs = check_positive_int(every_n_epochs, "every_n_epochs")
        self.target = check_choice(target, "target", TARGET_MODES)
        # The solver and metric options: defaults and validation are IGOSConfig's.
        self.config = IGOSConfig(
            method=method, mask_size=mask_size, iterations=iterations, ig_steps=ig_steps, l1=l1, tv=tv,
            tv_power=tv_power, noise_std=noise_std, baseline=baseline, tolerance=tolerance, patience=patience,
            autocast_dtype=autocast_dtype, normalize_score=normalize_score, initial_step=initial_step,
            substrate=substrate, metric_steps=metric_steps, max_batch_size=max_batch_size, seed=seed,
            score_fn=score_fn,
        )
        if not isinstance(prefix, str) or not prefix or "/" in prefix:
            raise ValueError(f"`prefix` must be a non-empty str without '/', got {prefix!r}.")
        self.prefix = prefix
        self.scalar_names = tuple(f"{prefix}/{name}" for name in SCALARS)
        self.log_images = check_bool(log_images, "log_images")
        self.on_error = check_choice(on_error, "on_error", ERROR_MODES)
        mean, std = check_display_stats(mean, std)
        if batch_to_probe is not None and not callable(batch_to_probe):
            raise TypeError(f"`batch_to_probe` must be None or a callable batch -> (images, targets), "
                            f"got {batch_to_probe!r}.")
        self.batch_to_probe = batch_to_probe
        self.class_names = None if class_names is None else ClassNames.from_value(class_names)

        given = read_probe(probe)
        self._probe_images: Tensor | None = None
        self._probe_targets: Tensor | None = None
        if given is not None:
            self._probe_images, self._probe_targets = given[0], given[1]
            if mean is None and given[2] is not None and given[3] is not None:
                mean, std = given[2], given[3]
            # Known images: the display statistics must have one value per channel.
            mean, std = check_display_stats(mean, std, channels=self._probe_images.shape[1])
            if target == "label" and self._probe_targets is None:
                raise ValueError("`probe` has no targets; give (images, targets) or use target='pred'.")
            if self.class_names is not None and self._probe_targets is not None:
                self.class_names.check_fits(indices=self._probe_targets.tolist(), what="`class_names`",
                                            indices_what="probe target")
        self.mean, self.std = mean, std
        self._captured: list[tuple[Tensor, Tensor | None]] = []
        self._capture_error: Exception | None = None
        self._last_targets: Tensor | None = None
        self._last_display: tuple[Any, Any] = (mean, std)
        self._png_warned = False
        # The igos/ scalars of the last explained epoch (as the loggers got them) and the names
        # logged in the current validation epoch: see _log_stand_ins.
        self._last_values: dict[str, float] = {}
        self._logged: set[str] = set()
        self._measured = False
        self._names: ClassNames | None = self.class_names  # those of the current run (or the module's)
        self._layouts_written: set[str] = set()  # TensorBoard log dirs given the custom-scalars layout
        self._cost_reported = False

    # --------------------------------------------------------------------- public helpers

    @property
    def probe(self) -> tuple[Tensor, Tensor | None] | None:
        """The probe ``(images, targets)`` on the CPU, or None before it is captured."""
        if self._probe_images is None:
            return None
        return self._probe_images, self._probe_targets

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
        from lightning_igos.probe import save_probe

        if self._probe_images is None:
            raise RuntimeError(
                "IGOSCallback has no probe yet: it is taken from the first validation epoch. "
                "Call save_probe after trainer.fit/validate, or pass `probe=` to the callback."
            )
        targets = self._probe_targets if self._probe_targets is not None else self._last_targets
        if targets is None:
            raise RuntimeError("The probe has no labels and no epoch has been explained yet (target='pred').")
        mean, std = self._last_display
        return save_probe(path, self._probe_images, targets, mean=mean, std=std)

    # --------------------------------------------------------------------- checkpointing

    @property
    def state_key(self) -> str:
        """The key of this callback's checkpoint state: its class, prefix, method and target.

        Two callbacks of one Trainer (say ``igos`` and ``igos++``) keep separate states.
        """
        return self._generate_state_key(prefix=self.prefix, method=self.config.method, target=self.target)

    @property
    def _legacy_state_key(self) -> str:
        # Checkpoints written before the state key carried the options used the class name.
        return "IGOSCallback"

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {}
        if self._probe_images is not None:
            state.update(probe_images=self._probe_images, probe_targets=self._probe_targets)
        if self._last_values:
            state["last_values"] = dict(self._last_values)
        return {"version": STATE_VERSION, **state} if state else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the probe of the checkpointed run (it replaces a probe given to ``__init__``).

        A state this version cannot read never stops the resumed run unless
        ``on_error="raise"``: the callback warns and keeps (or captures anew) its probe.
        """
        if not state_dict:
            return
        last_values = state_dict.get("last_values")
        if isinstance(last_values, dict):
            self._last_values = {
                k: float(v) for k, v in last_values.items()
                if k in self.scalar_names and isinstance(v, (int, float)) and not isinstance(v, bool)
            }
        if "probe_images" not in state_dict:
            return
        try:
            images = check_images(state_dict["probe_images"], "checkpointed probe images")
            targets = state_dict.get("probe_targets")
            if targets is not None:
                targets = check_targets(targets, images.shape[0], targets.device, "checkpointed probe targets")
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
            return
        self._probe_images = cpu_copy(images)
        self._probe_targets = None if targets is None else cpu_copy(targets)
        self._captured, self._capture_error = [], None

    # --------------------------------------------------------------------- Lightning hooks

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        self._png_warned = False
        clash = [cb for cb in getattr(trainer, "callbacks", []) if cb is not self
                 and isinstance(cb, _IGOSCallbackLogic) and cb.prefix == self.prefix]
        if clash:
            raise ValueError(
                f"Two IGOSCallbacks of one Trainer log under the same prefix {self.prefix!r}; give each its own, "
                "e.g. IGOSCallback(method='igos++', prefix='igos++')."
            )

    def on_validation_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if self._probe_images is not None or trainer.sanity_checking or dataloader_idx != 0:
            return
        if self._capture_error is not None or sum(len(c[0]) for c in self._captured) >= self.num_probe:
            return
        try:
            self._capture(batch)
        except Exception as err:  # reported at epoch end, through the same path as other failures
            self._capture_error = err

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking:
            return
        self._logged, self._measured = set(), False
        self._validation_epoch_end(trainer, pl_module)
        # A skipped or failed epoch (or scalars that failed half way) still gives every monitor its key.
        self._log_stand_ins(trainer, pl_module)

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        """Remember the scalars Lightning computed (and synced) from this epoch's explanations."""
        if trainer.sanity_checking or not self._measured:
            return
        metrics = trainer.callback_metrics
        for name in self.scalar_names:
            value = metrics.get(name)
            if isinstance(value, Tensor) and value.numel() == 1 and torch.isfinite(value):
                self._last_values[name] = float(value)
        self._measured = False

    def _validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if self._probe_images is None:
            error = self._settle_probe(trainer)
            if error is not None:
                # Every rank holds the same (broadcast) error: all raise, or rank 0 warns.
                own_error = self._capture_error or ValueError(f"IGOSCallback could not capture a probe: {error}")
                self._capture_error = None
                failure = _RankReport(0, error)
                self._handle_failures(trainer, [failure], own_error=own_error if trainer.is_global_zero else None)
                return
            if self._probe_images is None:
                return
        if not self._should_run(trainer):
            return
        self._run(trainer, pl_module)

    # --------------------------------------------------------------------- probe capture

    def _capture(self, batch: Any) -> None:
        images, targets = self.batch_to_probe(batch) if self.batch_to_probe is not None else batch_parts(batch)
        take = self.num_probe - sum(len(c[0]) for c in self._captured)
        images = check_images(images, "validation batch images")
        if targets is not None:
            targets = check_targets(targets, images.shape[0], targets.device, "validation batch labels")
            targets = cpu_copy(targets[:take])
        self._captured.append((cpu_copy(images[:take]), targets))

    def _settle_probe(self, trainer: Any) -> str | None:
        """Fix the probe from this epoch's captured batches (rank 0's, under DDP); return an error text."""
        local: tuple[Tensor, Tensor | None] | str | None
        if self._capture_error is not None:
            local = error_text(self._capture_error)
        elif self._captured:
            labels = [c[1] for c in self._captured]
            with torch.inference_mode(False):
                images = torch.cat([c[0] for c in self._captured])
                targets = None if any(t is None for t in labels) else torch.cat(labels)
            local = (images, targets)
            if targets is None and self.target == "label":
                local = ("the validation batches carry no labels; use target='pred' "
                         "or pass probe=(images, targets)")
        else:
            local = None
        self._captured = []
        if trainer.world_size > 1:
            local = trainer.strategy.broadcast(local, src=0)
        if isinstance(local, str):
            return local
        if local is not None:
            # Under trainer.validate() this runs in inference mode: keep normal tensors.
            images, targets = local
            self._probe_images = cpu_copy(images)
            self._probe_targets = None if targets is None else cpu_copy(targets)
            if len(self._probe_images) < self.num_probe:
                warnings.warn(
                    f"IGOSCallback: the first validation epoch held {len(self._probe_images)} images, fewer "
                    f"than num_probe={self.num_probe}; the probe keeps those.", IGOSWarning, stacklevel=2,
                )
        return None

    def _should_run(self, trainer: Any) -> bool:
        if trainer.state.fn == "validate":  # an explicit trainer.validate() always explains
            return True
        return (trainer.current_epoch + 1) % self.every_n_epochs == 0

    # --------------------------------------------------------------------- one run

    def _run(self, trainer: Any, pl_module: Any) -> None:
        own_error: Exception | None = None
        panel_error: Exception | None = None
        result = None
        from lightning_igos.render import display_stats

        try:
            self._last_display = display_stats(self.mean, self.std, pl_module, self._probe_images.shape[1])
        except (TypeError, ValueError) as err:  # bad display statistics cost the panels only
            self._last_display = (self.mean, self.std)
            panel_error = err if self.log_images else None
        try:
            result = self._explain_share(trainer, pl_module)
        except Exception as err:  # the run must go on (on_error="warn"); handled below
            own_error = err
        if result is not None and self.log_images:
            try:
                if panel_error is not None:
                    raise panel_error
                result.panels = self._render_panels(result)
            except Exception as err:  # the scalars are still logged; only the images are lost
                panel_error = err
        error = own_error or panel_error
        report = _RankReport(
            rank=trainer.global_rank,
            error=None if error is None else error_text(error),
            explained=result is not None,
            targets=None if result is None else result.targets,
            result=result if self.log_images and error is None else None,
        )
        reports = self._gather(trainer, report)
        self._handle_failures(trainer, [r for r in reports if r.error is not None], own_error=error,
                              what="explanations" if own_error is not None else "panels")
        if not any(r.explained for r in reports):
            return
        if all(r.targets is not None for r in reports):
            self._last_targets = torch.cat([r.targets for r in reports])
        # A rank whose explanation failed logs empty states, so every rank logs the same names.
        try:
            self._log_scalars(pl_module, result if result is not None else _empty_result(self.config.metric_steps))
        except Exception as err:  # e.g. a logger that rejects the values: training still goes on
            self._handle_failures(trainer, [_RankReport(trainer.global_rank, error_text(err))], own_error=err,
                                  what="scalars")
        if trainer.is_global_zero:
            self._after_scalars(trainer, pl_module, result)
        rendered = [r.result for r in reports if r.result is not None and len(r.result) > 0]
        if self.log_images and trainer.is_global_zero and rendered:
            try:
                self._write_images(trainer, rendered)
            except Exception as err:
                self._handle_failures(trainer, [_RankReport(0, error_text(err))], own_error=err, what="panels")

    def _share_indices(self, trainer: Any) -> Tensor:
        everyone = torch.arange(len(self._probe_images))
        return everyone.tensor_split(trainer.world_size)[trainer.global_rank]

    def _explain_share(self, trainer: Any, pl_module: nn.Module) -> _ShareResult:
        indices = self._share_indices(trainer)
        if indices.numel() == 0:
            return _empty_result(self.config.metric_steps)
        images = self._probe_images[indices].to(pl_module.device)
        targets = "pred" if self.target == "pred" else self._probe_targets[indices]
        # evaluate() makes a fresh generator seeded with config.seed at every run, so every epoch sees
        # the same noise and epochs are comparable. The status counts the passes and shows the work
        # on the progress bar.
        with ExplainStatus(trainer, pl_module, len(indices)) as status:
            evaluation = evaluate(pl_module, images, targets, self.config)
        result = _ShareResult.of(indices, evaluation)
        result.passes, result.seconds = status.passes, status.seconds
        self._names = self._run_class_names(pl_module, status.num_classes, result)
        return result

    def _run_class_names(self, pl_module: Any, num_classes: int | None, result: _ShareResult) -> ClassNames | None:
        """The names of this run: the callback's (checked against the model: a misfit is an error), else
        the module's ``class_names``/``classes`` when they fit the model, else None (indices)."""
        shown = result.targets.tolist() + result.predictions.tolist()
        if self.class_names is not None:
            self.class_names.check_fits(num_classes, shown, what="`class_names`", indices_what="class")
            return self.class_names
        names = module_class_names(pl_module)
        if names is None:
            return None
        try:
            names.check_fits(num_classes, shown)
        except ValueError:
            return None
        return names

    # --------------------------------------------------------------------- distributed

    @staticmethod
    def _gather(trainer: Any, report: _RankReport) -> list[_RankReport]:
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        if trainer.world_size == 1 or not distributed:
            return [report]
        reports: list[Any] = [None] * trainer.world_size
        torch.distributed.all_gather_object(reports, report)
        return reports

    def _handle_failures(
        self, trainer: Any, failures: list[_RankReport], own_error: Exception | None, what: str = "explanations"
    ) -> None:
        """Raise (on every rank, so none waits forever) or warn once per failing rank and epoch.

        ``what`` failed: ``"explanations"`` (nothing of the epoch is logged), ``"panels"`` (the
        scalars are logged, the images are not) or ``"scalars"``.
        """
        if not failures:
            return
        if self.on_error == "raise":
            if own_error is not None:
                raise own_error
            ranks = ", ".join(str(f.rank) for f in failures)
            raise RuntimeError(f"IGOSCallback failed on rank {ranks}: {failures[0].error}")
        if own_error is None:
            return  # the failing rank warns in its own process
        where = f" on rank {trainer.global_rank}" if trainer.world_size > 1 else ""
        epoch = trainer.current_epoch
        lead = {
            "explanations": f"IGOSCallback skipped the explanations of epoch {epoch}{where}",
            "panels": f"IGOSCallback logged the {self.prefix}/ scalars of epoch {epoch} but could not draw or "
                      f"write its explanation panels{where}",
            "scalars": f"IGOSCallback explained epoch {epoch} but could not log its {self.prefix}/ scalars{where}",
        }[what]
        warnings.warn(
            f"{lead}: {error_text(own_error)}. Training continues; pass on_error='raise' to stop instead.",
            IGOSWarning,
            stacklevel=2,
        )

    # --------------------------------------------------------------------- scalars

    def _log_stand_ins(self, trainer: Any, pl_module: Any) -> None:
        """Give ``ModelCheckpoint``/``EarlyStopping`` every igos/ key on an epoch without fresh scalars.

        On an epoch that is not explained (``every_n_epochs``) or whose explanation failed
        (``on_error="warn"``), the monitors see the value of the last explained epoch (Lightning
        keeps it in ``trainer.callback_metrics``; after a resume it comes from the callback's
        checkpoint state): never an improvement, so a checkpoint that was not explained never
        ranks above one that was. Before any epoch was explained, a scalar that a callback
        monitors reads as the worst finite value of that callback's ``mode`` (-3.4e38 for
        ``"max"``, +3.4e38 for ``"min"``). Stand-ins go to ``trainer.callback_metrics`` only,
        which is what the monitors read: no logger records a value that was not measured.
        """
        try:
            metrics = trainer.callback_metrics
            for name in self.scalar_names:
                if name in self._logged or name in metrics:
                    continue
                value = self._last_values.get(name)
                if value is None:
                    modes = [getattr(cb, "mode", None) for cb in getattr(trainer, "callbacks", [])
                             if getattr(cb, "monitor", None) == name]
                    modes = [mode for mode in modes if mode in _NEVER_COMPUTED]
                    if not modes:
                        continue
                    value = _NEVER_COMPUTED[modes[0]]
                metrics[name] = torch.tensor(value, dtype=torch.float32)
        except Exception as err:
            if self.on_error == "raise":
                raise
            warnings.warn(
                f"IGOSCallback could not give the monitors their {self.prefix}/ values at epoch "
                f"{trainer.current_epoch} ({error_text(err)}). Training continues.", IGOSWarning, stacklevel=2,
            )

    def _log_scalars(self, pl_module: Any, result: _ShareResult) -> None:
        """Log fresh Metric objects on every rank; Lightning computes (and syncs) them at epoch end."""
        metrics: dict[str, Metric] = {
            "insertion_auc": InsertionAUC(),
            "deletion_auc": DeletionAUC(),
            "insertion_auc_normalized": InsertionAUC(normalize=True),
            "deletion_auc_normalized": DeletionAUC(normalize=True),
            "mask_mean": MeanMetric(),
            "mask_min": MinMetric(),
            "mask_frac_below_half": MeanMetric(),
            "target_prob": MeanMetric(),
            "seconds": MaxMetric(),  # the slowest rank's wall time
            "passes_per_image": MeanMetric(),
        }
        n = len(result)
        values = {
            "mask_mean": result.mask_mean,
            "mask_min": result.mask_min,
            "mask_frac_below_half": result.mask_frac_below_half,
            "target_prob": result.curves.clean_score,
            "seconds": torch.tensor([result.seconds]),
            "passes_per_image": torch.full((n,), result.passes / max(n, 1)),
        }
        for short, metric in metrics.items():
            name = f"{self.prefix}/{short}"
            metric.to(pl_module.device)
            value = values.get(short)
            metric.update(result.curves if value is None else value.to(pl_module.device))
            # The metric is not a module attribute, so its attribute name is given explicitly;
            # Lightning only uses it as a label.
            pl_module.log(
                name, metric, on_step=False, on_epoch=True, add_dataloader_idx=False,
                metric_attribute=f"{self.prefix}_callback_{short}",
            )
            self._logged.add(name)
            self._measured = True

    # --------------------------------------------------------------------- images

    def _render_panels(self, result: _ShareResult) -> list[Tensor]:
        from lightning_igos import render

        if len(result) == 0:  # an empty share (fewer probe images than ranks) has nothing to draw
            return []
        mean, std = self._last_display  # resolved once per run in _run
        display = render.unnormalize(self._probe_images[result.indices], mean, std)
        return render.explanation_panels(display, result.saliency, result.curves, result.targets,
                                         result.predictions, result.indices.tolist(), class_names=self._names)

    def _write_images(self, trainer: Any, results: list[_ShareResult]) -> None:
        """Give the panels to every logger that shows images (TensorBoard, W&B, MLflow, ...), else write PNGs."""
        from lightning_igos import render
        from lightning_igos.class_names import label

        indices = torch.cat([r.indices for r in results])
        targets = torch.cat([r.targets for r in results])
        panels = [p for r in results for p in r.panels]
        saliency = torch.cat([r.saliency for r in results])
        mean, std = self._last_display
        labels = None if self._names is None else render.grid_labels(indices.tolist(), targets, self._names)
        grid = render.overlay_grid(render.unnormalize(self._probe_images[indices], mean, std), saliency,
                                   labels=labels)
        step = scalar_step(trainer)  # the step of the scalars, so W&B and TensorBoard line them up
        items = [(f"{self.prefix}/probe_{index}", panel, f"#{index} class {label(int(target), self._names)}")
                 for index, target, panel in zip(indices.tolist(), targets.tolist(), panels)]
        items.append((f"{self.prefix}/overlays", grid, "all probe images"))
        if log_panels(trainer.loggers, items, step=step, epoch=trainer.current_epoch, prefix=self.prefix):
            return
        root, where = png_root(trainer, self.prefix)
        folder = new_folder(root, f"epoch_{trainer.current_epoch:03d}_step_{trainer.global_step:06d}")
        for index, panel in zip(indices.tolist(), panels):
            render.save_png(panel, folder / f"probe_{index}.png")
        render.save_png(grid, folder / "overlays.png")
        if not self._png_warned:
            self._png_warned = True
            warnings.warn(
                f"IGOSCallback found no logger that shows images; the explanation panels are written as PNG files "
                f"under {root} ({where}), one folder per validation run (epoch_<E>_step_<S>). "
                "Add a TensorBoardLogger, WandbLogger or MLFlowLogger to see them there.",
                IGOSWarning,
                stacklevel=2,
            )

    # --------------------------------------------------------------------- layout and cost (rank 0)

    def _after_scalars(self, trainer: Any, pl_module: Any, result: _ShareResult | None) -> None:
        """The TensorBoard custom-scalars layout (once per log dir) and, after the first run, its cost."""
        try:
            write_custom_scalars(trainer.loggers, self._layouts_written, self.prefix)
        except Exception as err:
            self._handle_failures(trainer, [_RankReport(0, error_text(err))], own_error=err, what="scalars")
        if self._cost_reported or result is None or len(result) == 0:
            return
        self._cost_reported = True
        num_images = len(self._probe_images)
        passes = round(result.passes / len(result) * num_images)  # under DDP: rank 0's share, scaled
        _log.info(cost_line(num_images, passes, result.seconds, self.every_n_epochs, pl_module.device))


class IGOSCallback(_IGOSCallbackLogic, pl.Callback):
    __doc__ = _IGOSCallbackLogic.__doc__


_lightning_class: type | None = None


def lightning_callback_class() -> type:
    """The same callback for ``lightning.pytorch.Trainer``, made once, on first use."""
    global _lightning_class
    if _lightning_class is None:
        from lightning.pytorch import Callback

        # The same qualified name keeps checkpoints interchangeable between the two packages.
        _lightning_class = type(
            "IGOSCallback", (_IGOSCallbackLogic, Callback),
            {"__doc__": _IGOSCallbackLogic.__doc__, "__module__": "lightning_igos.callback"},
        )
    return _lightning_class
