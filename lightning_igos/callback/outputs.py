"""What :class:`~lightning_igos.callback.IGOSCallback` logs: scalars, panels and PNG files.

* scalars: fresh torchmetrics objects given to ``pl_module.log``, so every logger,
  ``ModelCheckpoint``/``EarlyStopping`` and DDP sync see them: ``igos/insertion_auc``,
  ``igos/deletion_auc``, their ``_normalized`` variants (curves divided by the clean score),
  ``igos/mask_mean``, ``igos/mask_min``, ``igos/mask_frac_below_half`` and ``igos/target_prob``
  (mean probability of the explained class), ``igos/empty_fraction`` (the share of probe images
  whose explanation is empty: a mask that never moved, or a non-finite gradient), plus
  ``igos/seconds`` and ``igos/passes_per_image``; with ``road=True`` also ``igos/road_morf``,
  ``igos/road_lerf`` and ``igos/road_gap`` (:data:`ROAD_SCALARS`, the probe means of the ROAD areas);
  with ``stability=True`` ``igos/stability`` (:data:`STABILITY_SCALAR`: the mean Spearman correlation of
  each image's saliency with the previous explained epoch's, from the second explained epoch on) and
  with ``sanity_every_n`` ``igos/sanity_correlation`` (:data:`SANITY_SCALAR`: the mean Spearman
  correlation with the saliency of a randomised copy of the model, on the epochs the check runs);
* stand-ins: on an epoch without fresh scalars the monitors still find every key they monitor
  (:meth:`Outputs.log_stand_ins`, :mod:`~lightning_igos.callback.monitors`);
* panels: one image per probe image (``igos/probe_0``, ...: input, heatmap overlay,
  insertion/deletion curves) and a grid of all overlays (``igos/overlays``), at the step of the
  scalars, to every logger that shows images, or as PNG files under
  ``<log_dir>/igos/epoch_<E>_step_<S>/`` (a new folder per validation run) when there is none;
* failures: one :class:`IGOSWarning` per epoch (on rank 0, naming the failed ranks), or an
  exception with ``on_error="raise"``; empty explanations: one warning per explained epoch.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.aggregation import MaxMetric, MeanMetric, MinMetric

from lightning_igos.callback.loggers import log_panels, scalar_step, write_custom_scalars
from lightning_igos.callback.monitors import MonitorStandIns
from lightning_igos.callback.status import cost_line, progress_bar, terminal_output
from lightning_igos.class_names import ClassNames, module_class_names
from lightning_igos.core.causal import CausalCurves
from lightning_igos.core.evaluation import ROAD_HIGHER_IS_BETTER, ROAD_STATISTICS, STATISTICS, Evaluation
from lightning_igos.metrics import DeletionAUC, InsertionAUC

__all__ = [
    "ROAD_SCALARS", "SANITY_SCALAR", "SCALARS", "STABILITY_SCALAR",
    "SCALAR_NAMES", "EmptyExplanationWarning", "IGOSWarning", "Outputs", "RankReport", "scalar_shorts",
    "ShareResult", "empty_result", "error_text", "new_folder", "png_root", "say", "tensorboard_writers",
]

# Lightning's own logger hierarchy: the first-run cost line shows (and is silenced) like Lightning's info lines.
_log = logging.getLogger("pytorch_lightning.callbacks.igos")

#: The scalars logged each explained epoch, as ``<prefix>/<name>``: the probe means of the
#: per-image statistics, with the clean score logged as ``target_prob``, and the fraction of
#: probe images whose explanation is empty (``empty_fraction``).
SCALARS = tuple(name for name in STATISTICS if name != "clean_score") + ("target_prob", "empty_fraction")
#: Their names with the default prefix ``igos``.
SCALAR_NAMES = tuple(f"igos/{name}" for name in SCALARS)
#: The scalars logged after :data:`SCALARS` with ``road=True``: the probe means of the ROAD statistics.
ROAD_SCALARS = ROAD_STATISTICS
#: Logged with ``stability=True`` from the second explained epoch on (higher is better: the explanation changed less).
STABILITY_SCALAR = "stability"
#: Logged with ``sanity_every_n`` on the epochs the sanity check runs (lower is better).
SANITY_SCALAR = "sanity_correlation"


def scalar_shorts(road: bool = False, stability: bool = False, sanity: bool = False) -> tuple[str, ...]:
    """The short names of the quality scalars a callback with these options logs, in order."""
    return (*SCALARS, *(ROAD_SCALARS if road else ()), *((STABILITY_SCALAR,) if stability else ()),
            *((SANITY_SCALAR,) if sanity else ()))


class HigherIsBetterMean(MeanMetric):
    """A synced mean whose higher values are better (``higher_is_better`` is a class constant in torchmetrics)."""

    higher_is_better = True


class LowerIsBetterMean(MeanMetric):
    """A synced mean whose lower values are better."""

    higher_is_better = False


class IGOSWarning(UserWarning):
    """Warnings of :class:`IGOSCallback` (skipped epochs, PNG fallback)."""


class EmptyExplanationWarning(IGOSWarning):
    """Some probe images of an explained epoch have an empty explanation (a mask that never moved,
    or gradients that were not finite): one per epoch, with how many and why."""


def error_text(err: BaseException) -> str:
    """``Type: message`` without a trailing period, to be followed by one."""
    message = " ".join(str(err).split()).rstrip(". ")
    return f"{type(err).__name__}: {message}" if message else type(err).__name__


# ----------------------------------------------------------------------------- results


@dataclass
class ShareResult:
    """What one rank computed for its slice of the probe, on the CPU."""

    indices: Tensor
    targets: Tensor
    predictions: Tensor
    curves: CausalCurves
    saliency: Tensor
    mask_mean: Tensor
    mask_min: Tensor
    mask_frac_below_half: Tensor
    empty: Tensor  # (n,) bool: the mask never moved, or the gradients were not finite
    empty_reasons: list[str]  # per image: "" when the explanation is fine, else why it is empty
    panels: list[Tensor] = field(default_factory=list)
    passes: int = 0  # images through the model while explaining and scoring
    seconds: float = 0.0
    summary: str = ""  # the run in one line, for a log (see status.ExplainStatus.summary)
    road: dict[str, Tensor] = field(default_factory=dict)  # (n,) per ROAD statistic, when ROAD ran
    stability: Tensor | None = None  # (n,) Spearman with the previous explained epoch's saliency, when there is one
    sanity: Tensor | None = None  # (n,) Spearman with the randomised model's saliency, when the check ran

    def __len__(self) -> int:
        return self.indices.numel()

    @classmethod
    def of(cls, indices: Tensor, evaluation: Evaluation) -> ShareResult:
        ev = evaluation.cpu()
        stats = ev.per_image()
        return cls(
            indices=indices, targets=ev.targets, predictions=ev.predictions, curves=ev.curves,
            saliency=ev.saliency, mask_mean=stats["mask_mean"], mask_min=stats["mask_min"],
            mask_frac_below_half=stats["mask_frac_below_half"],
            empty=evaluation.empty.detach().to("cpu", torch.bool), empty_reasons=list(evaluation.empty_reasons),
            road={name: stats[name] for name in ROAD_STATISTICS if name in stats},
        )


@dataclass
class RankReport:
    """What every rank learns about a rank's run: its failure, its targets and (for images) its results.

    ``empty_reasons``: why each image of the rank's share has an empty explanation (``""``: it has not).
    """

    rank: int
    error: str | None
    explained: bool = False
    targets: Tensor | None = None
    result: ShareResult | None = None
    empty_reasons: list[str] = field(default_factory=list)


def empty_result(metric_steps: int) -> ShareResult:
    empty = torch.empty(0)
    curve = torch.empty(0, metric_steps + 1)
    curves = CausalCurves(
        fractions=torch.linspace(0, 1, metric_steps + 1), insertion=curve, deletion=curve,
        insertion_auc=empty, deletion_auc=empty, clean_score=empty, substrate_score=empty,
    )
    long = torch.empty(0, dtype=torch.long)
    return ShareResult(long, long, long, curves, torch.empty(0, 1, 1, 1), empty, empty, empty,
                       empty=torch.empty(0, dtype=torch.bool), empty_reasons=[])


def run_class_names(
    class_names: ClassNames | None, pl_module: Any, num_classes: int | None, result: ShareResult
) -> ClassNames | None:
    """The names of this run: the callback's (checked against the model: a misfit is an error), else
    the module's ``class_names``/``classes`` when they fit the model, else None (indices)."""
    shown = result.targets.tolist() + result.predictions.tolist()
    if class_names is not None:
        class_names.check_fits(num_classes, shown, what="`class_names`", indices_what="class")
        return class_names
    names = module_class_names(pl_module)
    if names is None:
        return None
    try:
        names.check_fits(num_classes, shown)
    except ValueError:
        return None
    return names


# ----------------------------------------------------------------------------- what one callback logs


class Outputs:
    """The logging side of one callback: scalars, stand-ins, panels, failures and what it keeps between hooks.

    ``display`` (the ``(mean, std)`` of the last run) and ``names`` (its class names) are set per run.
    """

    def __init__(self, prefix: str, on_error: str, class_names: ClassNames | None, display: tuple[Any, Any],
                 road: bool = False, stability: bool = False, sanity: bool = False) -> None:
        self.prefix = prefix
        self.on_error = on_error
        self.road = road  # the ROAD scalars are logged too
        self.stability = stability  # <prefix>/stability, on explained epochs with a previous saliency
        self.sanity = sanity  # <prefix>/sanity_correlation, on the epochs the sanity check runs
        self.scalar_names = tuple(f"{prefix}/{name}" for name in scalar_shorts(road, stability, sanity))
        # Every name log_scalars logs: the quality scalars and what the run cost.
        self.logged_names = (*self.scalar_names, f"{prefix}/seconds", f"{prefix}/passes_per_image")
        self.display = display
        self.names = class_names  # those of the current run (or the module's)
        self.png_warned = False
        # The names logged in the current validation epoch (see log_stand_ins).
        self.logged: set[str] = set()
        self.stand_ins = MonitorStandIns()
        self.layouts_written: set[str] = set()  # TensorBoard log dirs given the custom-scalars layout
        self.cost_reported = False

    # --------------------------------------------------------------------- failures

    def handle_failures(
        self, trainer: Any, failures: list[RankReport], own_error: Exception | None, what: str = "explanations",
        *, local: bool = False,
    ) -> None:
        """Raise (on every rank, so none waits forever) or warn once per epoch.

        ``failures`` are what every rank learnt (the same list on every rank): rank 0 warns once,
        naming the failed ranks under DDP. ``local``: only this process knows of the failure
        (``own_error``), and it warns itself. ``what`` failed: ``"explanations"`` (nothing of the
        epoch is logged, on any rank), ``"panels"`` (the scalars are logged, the images are not)
        or ``"scalars"``.
        """
        if not failures:
            return
        if self.on_error == "raise":
            if own_error is not None:
                raise own_error
            ranks = ", ".join(str(f.rank) for f in failures)
            raise RuntimeError(f"IGOSCallback failed on rank {ranks}: {failures[0].error}")
        distributed = trainer.world_size > 1
        if local:
            if own_error is None:
                return
            where = f" on rank {trainer.global_rank}" if distributed else ""
            errors = error_text(own_error)
        else:
            if not trainer.is_global_zero:
                return
            where = f" (rank {', '.join(str(f.rank) for f in failures)} failed)" if distributed else ""
            errors = "; ".join(f"rank {f.rank}: {f.error}" if distributed else str(f.error) for f in failures)
        epoch = trainer.current_epoch
        lead = {
            "explanations": f"IGOSCallback skipped the explanations of epoch {epoch}{where}",
            "panels": f"IGOSCallback logged the {self.prefix}/ scalars of epoch {epoch} but could not draw or "
                      f"write its explanation panels{where}",
            "scalars": f"IGOSCallback explained epoch {epoch} but could not log its {self.prefix}/ scalars{where}",
        }[what]
        after = " Nothing of this epoch is logged, on any rank." if what == "explanations" and distributed else ""
        warnings.warn(
            f"{lead}: {errors}.{after} Training continues; pass on_error='raise' to stop instead.",
            IGOSWarning,
            stacklevel=2,
        )

    def warn_empty(self, trainer: Any, reports: list[RankReport], num_images: int) -> None:
        """One warning (rank 0) when any probe image's explanation is empty: how many, and why."""
        reasons = [reason for report in reports for reason in report.empty_reasons if reason]
        if not reasons or not trainer.is_global_zero:
            return
        counts: dict[str, int] = {}
        for reason in reasons:
            counts[reason] = counts.get(reason, 0) + 1
        why = ", ".join(f"{reason}: {count}" for reason, count in counts.items())
        warnings.warn(
            f"IGOSCallback: {len(reasons)} of {num_images} probe explanations of epoch {trainer.current_epoch} are "
            f"empty ({why}); their AUCs do not describe the model, and {self.prefix}/empty_fraction logs their "
            "share. A mask that never moved: raise `iterations`, or lower `l1`/`tv`; a non-finite gradient: "
            "check the model's outputs on the probe images (and `autocast_dtype`).",
            EmptyExplanationWarning,
            stacklevel=2,
        )

    # --------------------------------------------------------------------- scalars

    def log_stand_ins(self, trainer: Any) -> None:
        """Give ``ModelCheckpoint``/``EarlyStopping`` their ``<prefix>/`` keys on an epoch without fresh scalars.

        On an epoch that is not explained (``every_n_epochs``) or whose explanation failed
        (``on_error="warn"``), a monitored key reads as the worst finite value of the monitor's
        ``mode`` (-3.4e38 for ``"max"``, +3.4e38 for ``"min"``), which ``ModelCheckpoint`` ranks
        below every explained epoch, and an ``EarlyStopping`` on it does not count the epoch
        towards its ``patience`` (see :mod:`~lightning_igos.callback.monitors`). Unmonitored keys
        are dropped from ``trainer.callback_metrics``. Stand-ins go to ``trainer.callback_metrics``
        only, which is what the monitors read: no logger records a value that was not measured.
        """
        try:
            self.stand_ins.apply(trainer, self.logged_names, self.logged)
        except Exception as err:
            if self.on_error == "raise":
                raise
            warnings.warn(
                f"IGOSCallback could not give the monitors their {self.prefix}/ values at epoch "
                f"{trainer.current_epoch} ({error_text(err)}). Training continues.", IGOSWarning, stacklevel=2,
            )

    def log_scalars(self, pl_module: Any, result: ShareResult) -> None:
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
            "empty_fraction": MeanMetric(),  # synced: the fraction over the whole probe under DDP
        }
        if self.road:
            for short in ROAD_SCALARS:
                metrics[short] = HigherIsBetterMean() if ROAD_HIGHER_IS_BETTER[short] else LowerIsBetterMean()
        # Decided alike on every rank (the same history and schedule), so the synced keys match; an empty
        # share contributes an empty tensor.
        if self.stability and result.stability is not None:
            metrics[STABILITY_SCALAR] = HigherIsBetterMean()
        if self.sanity and result.sanity is not None:
            metrics[SANITY_SCALAR] = LowerIsBetterMean()
        n = len(result)
        values = {
            "empty_fraction": result.empty.float(),
            "mask_mean": result.mask_mean,
            "mask_min": result.mask_min,
            "mask_frac_below_half": result.mask_frac_below_half,
            "target_prob": result.curves.clean_score,
            "seconds": torch.tensor([result.seconds]),
            "passes_per_image": torch.full((n,), result.passes / max(n, 1)),
        }
        if self.road:  # an empty share (fewer probe images than ranks) adds nothing to the synced means
            values.update({short: result.road.get(short, torch.empty(0)) for short in ROAD_SCALARS})
        if STABILITY_SCALAR in metrics:
            values[STABILITY_SCALAR] = result.stability
        if SANITY_SCALAR in metrics:
            values[SANITY_SCALAR] = result.sanity
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
            self.logged.add(name)

    # --------------------------------------------------------------------- images

    def render_panels(self, probe_images: Tensor, result: ShareResult) -> list[Tensor]:
        from lightning_igos import render

        if len(result) == 0:  # an empty share (fewer probe images than ranks) has nothing to draw
            return []
        mean, std = self.display  # resolved once per run
        display = render.unnormalize(probe_images[result.indices], mean, std)
        return render.explanation_panels(display, result.saliency, result.curves, result.targets,
                                         result.predictions, result.indices.tolist(), class_names=self.names)

    def write_images(self, trainer: Any, probe_images: Tensor, results: list[ShareResult]) -> None:
        """Give the panels to every logger that shows images (TensorBoard, W&B, MLflow, ...), else write PNGs."""
        from lightning_igos import render
        from lightning_igos.class_names import label

        indices = torch.cat([r.indices for r in results])
        targets = torch.cat([r.targets for r in results])
        panels = [p for r in results for p in r.panels]
        saliency = torch.cat([r.saliency for r in results])
        mean, std = self.display
        labels = None if self.names is None else render.grid_labels(indices.tolist(), targets, self.names)
        grid = render.overlay_grid(render.unnormalize(probe_images[indices], mean, std), saliency,
                                   labels=labels)
        step = scalar_step(trainer)  # the step of the scalars, so W&B and TensorBoard line them up
        items = [(f"{self.prefix}/probe_{index}", panel, f"#{index} class {label(int(target), self.names)}")
                 for index, target, panel in zip(indices.tolist(), targets.tolist(), panels)]
        items.append((f"{self.prefix}/overlays", grid, "all probe images"))
        if log_panels(trainer.loggers, items, step=step, epoch=trainer.current_epoch, prefix=self.prefix):
            return
        root, where = png_root(trainer, self.prefix)
        # The step of the scalars, as every logger records them (CSVLogger's "step" column, MLflow's folders).
        folder = new_folder(root, f"epoch_{trainer.current_epoch:03d}_step_{step:06d}")
        for index, panel in zip(indices.tolist(), panels):
            render.save_png(panel, folder / f"probe_{index}.png")
        render.save_png(grid, folder / "overlays.png")
        if not self.png_warned:
            self.png_warned = True
            warnings.warn(
                f"IGOSCallback found no logger that shows images; the explanation panels are written as PNG files "
                f"under {root} ({where}), one folder per validation run (epoch_<E>_step_<S>). "
                "Add a TensorBoardLogger, WandbLogger or MLFlowLogger to see them there.",
                IGOSWarning,
                stacklevel=2,
            )

    # --------------------------------------------------------------------- layout and cost (rank 0)

    def after_scalars(
        self, trainer: Any, pl_module: Any, result: ShareResult | None, num_images: int, every_n_epochs: int
    ) -> None:
        """The TensorBoard custom-scalars layout (one for all the Trainer's IGOSCallbacks, once per run); after
        the first run its cost, and after later runs, when the progress bar writes into a log, the run's line."""
        try:
            # One layout for every IGOSCallback of the Trainer (TensorBoard keeps one per run).
            outputs = [cb.outputs for cb in getattr(trainer, "callbacks", [])
                       if isinstance(getattr(cb, "outputs", None), Outputs)]
            every = [*outputs, self]
            road = [o.prefix for o in every if o.road]
            stability = [o.prefix for o in every if getattr(o, "stability", False)]
            sanity = [o.prefix for o in every if getattr(o, "sanity", False)]
            write_custom_scalars(trainer.loggers, self.layouts_written, [*(o.prefix for o in outputs), self.prefix],
                                 road=road, stability=stability, sanity=sanity)
        except Exception as err:
            self.handle_failures(trainer, [RankReport(0, error_text(err))], own_error=err, what="scalars",
                                 local=True)
        if result is None or len(result) == 0:
            return
        if not self.cost_reported:
            self.cost_reported = True
            passes = round(result.passes / len(result) * num_images)  # under DDP: rank 0's share, scaled
            say(trainer, cost_line(num_images, passes, result.seconds, every_n_epochs, pl_module.device))
            return
        bar = progress_bar(trainer)
        if bar is not None and result.summary and not terminal_output(bar):
            # Into a log the bar is not redrawn while explaining: one line per explained epoch instead.
            say(trainer, result.summary)


def say(trainer: Any, line: str) -> None:
    """Print ``line`` on its own line through the progress bar (``tqdm.write``, Rich's console), so it is
    not glued to a bar; without a progress bar, as one of Lightning's info lines."""
    bar = progress_bar(trainer)
    if bar is not None and callable(getattr(bar, "print", None)):
        try:
            bar.print(line)
            return
        except Exception:  # a bar that cannot print: the log line below
            pass
    _log.info(line)


# ----------------------------------------------------------------------------- panel helpers
def tensorboard_writers(trainer: Any) -> list[Any]:
    """The experiments of the trainer's loggers that can take images (TensorBoard's SummaryWriter)."""
    writers = []
    for logger in trainer.loggers:
        experiment = getattr(logger, "experiment", None)
        if callable(getattr(experiment, "add_image", None)):
            writers.append(experiment)
    return writers


def png_root(trainer: Any, prefix: str) -> tuple[Path, str]:
    """The absolute folder of the PNG panels and, in words, where it comes from."""
    # Not trainer.log_dir: under DDP it is a collective call, and only rank 0 gets here.
    for logger in trainer.loggers:
        log_dir = getattr(logger, "log_dir", None)
        if log_dir:
            return (Path(log_dir) / prefix).resolve(), f"the log_dir of {type(logger).__name__}"
    if not trainer.loggers:
        where = "no logger: the Trainer's default_root_dir, by default the current directory"
    else:
        where = "the Trainer's default_root_dir: no logger has a log_dir"
    return (Path(trainer.default_root_dir) / prefix).resolve(), where


def new_folder(root: Path, name: str) -> Path:
    """``root/name``, or ``root/name_2``, ``_3``, ... if taken: panels are never overwritten."""
    folder, copy = root / name, 1
    while folder.exists():
        copy += 1
        folder = root / f"{name}_{copy}"
    folder.mkdir(parents=True)
    return folder


def write_panels(writers: list[Any], prefix: str, step: int, indices: list[int], panels: list[Tensor],
                 grid: Tensor) -> None:
    """Add the panels (``<prefix>/probe_<i>``) and the grid (``<prefix>/overlays``) to each writer."""
    for writer in writers:
        for index, panel in zip(indices, panels):
            writer.add_image(f"{prefix}/probe_{index}", panel, global_step=step)
        writer.add_image(f"{prefix}/overlays", grid, global_step=step)
