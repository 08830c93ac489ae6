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

import numbers
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
from torchmetrics.aggregation import MeanMetric, MinMetric

from lightning_igos.callback.outputs import error_text, new_folder, png_root, tensorboard_writers
from lightning_igos.callback.probe_state import (
    BatchToProbe,
    ProbeLike,
    batch_parts,
    check_bool,
    check_choice,
    check_display_stats,
    check_mask_size,
    cpu_copy,
    read_probe,
)
from lightning_igos.core.baselines import BaselineLike, check_baseline
from lightning_igos.core.causal import CausalCurves, causal_curves
from lightning_igos.core.runtime import autocast_context, evaluation_mode, model_input_dtype
from lightning_igos.core.scoring import ScoreFn
from lightning_igos.core.solver import METHODS, check_solver_options, igos
from lightning_igos.core.validation import (
    check_autocast_dtype,
    check_images,
    check_positive_int,
    check_targets,
)
from lightning_igos.metrics import DeletionAUC, InsertionAUC

__all__ = ["IGOSCallback", "IGOSWarning"]  # and LightningIGOSCallback, made on first access

SCALAR_NAMES = (
    "igos/insertion_auc",
    "igos/deletion_auc",
    "igos/insertion_auc_normalized",
    "igos/deletion_auc_normalized",
    "igos/mask_mean",
    "igos/mask_min",
    "igos/mask_frac_below_half",
    "igos/target_prob",
)
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

    def __len__(self) -> int:
        return self.indices.numel()


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
    """Everything of the callback except its Lightning base class (see :class:`IGOSCallback`)."""

    def __init__(
        self,
        probe: ProbeLike = None,
        num_probe: int = 8,
        every_n_epochs: int = 1,
        target: str = "label",
        *,
        method: str = "igos",
        mask_size: None | int | tuple[int, int] = None,
        iterations: int = 4,
        ig_steps: int = 20,
        l1: float = 0.1,
        tv: float = 2.0,
        tv_power: float = 2.0,
        noise_std: float = 0.2,
        baseline: BaselineLike = "blur",
        tolerance: float = 1e-5,
        patience: int | None = 3,
        autocast_dtype: torch.dtype | None = None,
        normalize_score: bool = True,
        initial_step: float = 1.0,
        substrate: BaselineLike = "blur",
        metric_steps: int = 50,
        log_images: bool = True,
        max_batch_size: int | None = None,
        on_error: str = "warn",
        seed: int = 0,
        mean: Sequence[float] | Tensor | None = None,
        std: Sequence[float] | Tensor | None = None,
        score_fn: ScoreFn | None = None,
        batch_to_probe: BatchToProbe | None = None,
    ) -> None:
        super().__init__()
        self.num_probe = check_positive_int(num_probe, "num_probe")
        self.every_n_epochs = check_positive_int(every_n_epochs, "every_n_epochs")
        self.target = check_choice(target, "target", TARGET_MODES)
        check_choice(method, "method", METHODS)
        check_mask_size(mask_size)
        check_autocast_dtype(autocast_dtype)
        check_solver_options(
            method=method, iterations=iterations, ig_steps=ig_steps, l1=l1, tv=tv, tv_power=tv_power,
            noise_std=noise_std, baseline=baseline, max_batch_size=max_batch_size, autocast_dtype=autocast_dtype,
            tolerance=tolerance, patience=patience, normalize_score=normalize_score,
        )
        self.solver_options: dict[str, Any] = dict(
            method=method, mask_size=mask_size, iterations=iterations, ig_steps=ig_steps, l1=l1, tv=tv,
            tv_power=tv_power, noise_std=noise_std, baseline=baseline, max_batch_size=max_batch_size,
            tolerance=tolerance, patience=patience, autocast_dtype=autocast_dtype, score_fn=score_fn,
            normalize_score=normalize_score, initial_step=initial_step,
        )
        if not (isinstance(initial_step, numbers.Real) and not isinstance(initial_step, bool) and initial_step > 0):
            raise ValueError(f"`initial_step` must be a number > 0, got {initial_step!r}.")
        check_baseline(substrate, "substrate")
        self.substrate = substrate
        self.metric_steps = check_positive_int(metric_steps, "metric_steps")
        self.log_images = check_bool(log_images, "log_images")
        self.max_batch_size = max_batch_size
        self.on_error = check_choice(on_error, "on_error", ERROR_MODES)
        self.seed = check_positive_int(seed, "seed", minimum=0)
        mean, std = check_display_stats(mean, std)
        if score_fn is not None and not callable(score_fn):
            raise TypeError(f"`score_fn` must be None or a callable (logits, targets) -> scores, got {score_fn!r}.")
        if batch_to_probe is not None and not callable(batch_to_probe):
            raise TypeError(f"`batch_to_probe` must be None or a callable batch -> (images, targets), "
                            f"got {batch_to_probe!r}.")
        self.score_fn = score_fn
        self.batch_to_probe = batch_to_probe

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
                if k in SCALAR_NAMES and isinstance(v, (int, float)) and not isinstance(v, bool)
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
        for name in SCALAR_NAMES:
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
        self._last_display = self._display_stats(pl_module)
        try:
            result = self._explain_share(trainer, pl_module)
        except Exception as err:  # the run must go on (on_error="warn"); handled below
            own_error = err
        if result is not None and self.log_images:
            try:
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
            self._log_scalars(pl_module, result if result is not None else _empty_result(self.metric_steps))
        except Exception as err:  # e.g. a logger that rejects the values: training still goes on
            self._handle_failures(trainer, [_RankReport(trainer.global_rank, error_text(err))], own_error=err,
                                  what="scalars")
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
            return _empty_result(self.metric_steps)
        device = pl_module.device
        images = self._probe_images[indices].to(device)
        predictions = self._predict(pl_module, images)
        if self.target == "pred":
            targets = predictions
        else:
            targets = self._probe_targets[indices].to(device)
        # A fresh generator per run: every epoch sees the same noise, so epochs are comparable.
        generator = torch.Generator(device=device)
        generator.manual_seed(self.seed)
        explanation = igos(pl_module, images, targets, generator=generator, **self.solver_options)
        curves = causal_curves(
            pl_module, images, explanation.saliency, targets, steps=self.metric_steps, substrate=self.substrate,
            score_fn=self.score_fn, max_batch_size=self.max_batch_size,
        )
        mask = explanation.mask.detach().float().flatten(1)
        result = _ShareResult(
            indices=indices,
            targets=targets.cpu(),
            predictions=predictions.cpu(),
            curves=_curves_to_cpu(curves),
            saliency=explanation.saliency.detach().cpu(),
            mask_mean=mask.mean(1).cpu(),
            mask_min=mask.amin(1).cpu(),
            mask_frac_below_half=(mask < 0.5).float().mean(1).cpu(),
        )
        return result

    def _predict(self, pl_module: nn.Module, images: Tensor) -> Tensor:
        """The class the model predicts on each image (eval mode, no autograd)."""
        autocast_dtype = self.solver_options["autocast_dtype"]
        with evaluation_mode(pl_module), torch.no_grad(), autocast_context(images.device, autocast_dtype):
            input_dtype = images.dtype if autocast_dtype is not None else model_input_dtype(pl_module, images.dtype)
            logits = pl_module(images.to(input_dtype))
        if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] != images.shape[0]:
            shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
            raise ValueError(
                f"IGOSCallback needs `pl_module(images)` to return logits shaped (B, num_classes), got {shape}. "
                "Make the LightningModule's forward return the classification logits."
            )
        return logits.argmax(1)

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
            "panels": f"IGOSCallback logged the igos/ scalars of epoch {epoch} but could not draw or write its "
                      f"explanation panels{where}",
            "scalars": f"IGOSCallback explained epoch {epoch} but could not log its igos/ scalars{where}",
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
            for name in SCALAR_NAMES:
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
                f"IGOSCallback could not give the monitors their igos/ values at epoch {trainer.current_epoch} "
                f"({error_text(err)}). Training continues.", IGOSWarning, stacklevel=2,
            )

    def _log_scalars(self, pl_module: Any, result: _ShareResult) -> None:
        """Log fresh Metric objects on every rank; Lightning computes (and syncs) them at epoch end."""
        metrics: dict[str, Metric] = {
            "igos/insertion_auc": InsertionAUC(),
            "igos/deletion_auc": DeletionAUC(),
            "igos/insertion_auc_normalized": InsertionAUC(normalize=True),
            "igos/deletion_auc_normalized": DeletionAUC(normalize=True),
            "igos/mask_mean": MeanMetric(),
            "igos/mask_min": MinMetric(),
            "igos/mask_frac_below_half": MeanMetric(),
            "igos/target_prob": MeanMetric(),
        }
        values = {
            "igos/mask_mean": result.mask_mean,
            "igos/mask_min": result.mask_min,
            "igos/mask_frac_below_half": result.mask_frac_below_half,
            "igos/target_prob": result.curves.clean_score,
        }
        for name, metric in metrics.items():
            metric.to(pl_module.device)
            value = values.get(name)
            metric.update(result.curves if value is None else value.to(pl_module.device))
            # The metric is not a module attribute, so its attribute name is given explicitly;
            # Lightning only uses it as a label.
            pl_module.log(
                name, metric, on_step=False, on_epoch=True, add_dataloader_idx=False,
                metric_attribute="igos_callback_" + name.split("/")[1],
            )
            self._logged.add(name)
            self._measured = True

    # --------------------------------------------------------------------- images

    def _display_stats(self, pl_module: Any) -> tuple[Any, Any]:
        """Display normalisation: the callback's, else the module's ``mean``/``std``, else None (min-max)."""
        if self.mean is not None:
            return self.mean, self.std
        mean, std = getattr(pl_module, "mean", None), getattr(pl_module, "std", None)
        if mean is None or std is None:
            return None, None
        return mean, std

    def _render_panels(self, result: _ShareResult) -> list[Tensor]:
        from lightning_igos import render

        if len(result) == 0:  # an empty share (fewer probe images than ranks) has nothing to draw
            return []
        mean, std = self._last_display  # resolved once per run in _run
        display = render.unnormalize(self._probe_images[result.indices], mean, std)
        curves = result.curves
        panels = []
        for j, index in enumerate(result.indices.tolist()):
            target, predicted = int(result.targets[j]), int(result.predictions[j])
            title = f"#{index} class {target} p={float(curves.clean_score[j]):.2f}"
            if predicted != target:
                title += f" (pred {predicted})"
            panels.append(render.probe_panel(
                display[j], result.saliency[j], curves.insertion[j], curves.deletion[j], curves.fractions,
                curves.insertion_auc[j], curves.deletion_auc[j], title,
            ))
        return panels

    def _write_images(self, trainer: Any, results: list[_ShareResult]) -> None:
        from lightning_igos import render

        indices = torch.cat([r.indices for r in results])
        panels = [p for r in results for p in r.panels]
        saliency = torch.cat([r.saliency for r in results])
        mean, std = self._last_display
        grid = render.overlay_grid(render.unnormalize(self._probe_images[indices], mean, std), saliency)
        writers = tensorboard_writers(trainer)
        step = trainer.global_step
        for writer in writers:
            for index, panel in zip(indices.tolist(), panels):
                writer.add_image(f"igos/probe_{index}", panel, global_step=step)
            writer.add_image("igos/overlays", grid, global_step=step)
        if writers:
            return
        root, where = png_root(trainer, "igos")
        folder = new_folder(root, f"epoch_{trainer.current_epoch:03d}_step_{trainer.global_step:06d}")
        for index, panel in zip(indices.tolist(), panels):
            render.save_png(panel, folder / f"probe_{index}.png")
        render.save_png(grid, folder / "overlays.png")
        if not self._png_warned:
            self._png_warned = True
            warnings.warn(
                f"IGOSCallback found no TensorBoard logger; the explanation panels are written as PNG files "
                f"under {root} ({where}), one folder per validation run (epoch_<E>_step_<S>). "
                "Add a TensorBoardLogger to see them in TensorBoard.",
                IGOSWarning,
                stacklevel=2,
            )


_CLASS_DOC = """Explain a fixed probe batch with I-GOS every few validation epochs and log how faithful
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
            tolerance, patience, autocast_dtype, normalize_score, initial_step: options of
            :func:`lightning_igos.igos`, same names and defaults.
        substrate: what the causal metrics replace pixels with (as ``baseline``).
        metric_steps: points minus one of the insertion/deletion curves.
        log_images: log the per-image panels and the overlay grid (rank 0 only).
        max_batch_size: images per forward pass for the solver and the metrics (None: per device).
        on_error: ``"warn"``: an exception inside the callback gives one warning per epoch and
            training goes on; ``"raise"``: it stops the run (on every rank).
        seed: seed of the callback's own ``torch.Generator`` for the integration noise, created
            afresh (on the module's device) at every run so epochs are comparable; the global RNG
            is never used.
        mean, std: per-channel normalisation of the inputs, to display them. When None the
            callback uses ``pl_module.mean``/``pl_module.std`` if the module has both, else
            rescales each image to [0, 1] (min-max).
        score_fn: ``score_fn(logits, targets) -> (B,)`` for heads whose score is not the softmax
            probability of the target.
        batch_to_probe: ``batch -> (images, targets or None)`` for validation batches that are not
            a tensor, an ``(images, labels, ...)`` tuple or a dict with an ``"image(s)"`` key.

    The model is put in eval mode (each submodule's flag is restored), gradients are taken with
    respect to the mask only, and nothing of training changes: the weights after training with
    and without the callback are bitwise identical on the CPU.

    Example:
        >>> callback = IGOSCallback(num_probe=4, iterations=10, ig_steps=10, every_n_epochs=2)
        >>> callback.every_n_epochs, callback.solver_options["iterations"]
        (2, 10)

    Use it as ``pytorch_lightning.Trainer(callbacks=[IGOSCallback()])``; with
    ``lightning.pytorch.Trainer`` use ``lightning_igos.callback.LightningIGOSCallback`` (same
    arguments).
    """


class IGOSCallback(_IGOSCallbackLogic, pl.Callback):
    __doc__ = _CLASS_DOC


_lightning_class: type | None = None


def lightning_callback_class() -> type:
    """The same callback for ``lightning.pytorch.Trainer``, made once, on first use."""
    global _lightning_class
    if _lightning_class is None:
        from lightning.pytorch import Callback

        # The same qualified name keeps checkpoints interchangeable between the two packages.
        _lightning_class = type(
            "IGOSCallback", (_IGOSCallbackLogic, Callback),
            {"__doc__": _CLASS_DOC, "__module__": "lightning_igos.callback"},
        )
    return _lightning_class
