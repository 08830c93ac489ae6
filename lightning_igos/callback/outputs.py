"""What :class:`~lightning_igos.callback.IGOSCallback` logs: scalars, panels and PNG files.

* scalars: the callback's torchmetrics objects (kept, and reset each explained epoch) given to
  ``pl_module.log``, so every logger, ``ModelCheckpoint``/``EarlyStopping`` and DDP sync see them:
  one ``<prefix>/<name>`` per registered per-image statistic that applies to the callback's
  options (:func:`callback_scalars`, from :mod:`lightning_igos.core.statistics`):
  ``igos/insertion_auc``, ``igos/deletion_auc``, their ``_normalized`` variants (curves divided
  by the clean score), ``igos/target_prob`` (mean probability of the explained class), the
  mask statistics ``igos/mask_mean``, ``igos/mask_min``, ``igos/mask_frac_below_half`` (for
  explainers with a mask), ``igos/empty_fraction`` (the share of probe images whose explanation
  is empty), with ``road=True`` ``igos/road_morf``, ``igos/road_lerf`` and ``igos/road_gap``, with
  a probe that has boxes ``igos/pointing``; plus ``igos/seconds`` and ``igos/passes_per_image``;
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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.aggregation import MaxMetric, MeanMetric, MinMetric

from lightning_igos.callback.loggers import log_panels, scalar_step, write_custom_scalars
from lightning_igos.callback.messages import EmptyExplanationWarning, IGOSWarning, error_text
from lightning_igos.callback.monitors import MonitorStandIns
from lightning_igos.callback.scalars import (
    EPOCH_STATISTICS,
    SANITY_SCALAR,
    STABILITY_SCALAR,
    Scalar,
    callback_scalars,
    scalar_shorts,
)
from lightning_igos.callback.status import cost_line, progress_bar, terminal_output
from lightning_igos.class_names import ClassNames, fitting_class_names
from lightning_igos.core.causal import CausalCurves
from lightning_igos.core.config import DEFAULTS, IGOSConfig
from lightning_igos.core.evaluation import Evaluation
from lightning_igos.metrics import HigherIsBetterMean, LowerIsBetterMean
from lightning_igos.render.files import OVERLAYS_FILE, panel_file, run_folder

__all__ = [
    "SANITY_SCALAR", "STABILITY_SCALAR", "EmptyExplanationWarning", "HigherIsBetterMean", "IGOSWarning",
    "LowerIsBetterMean", "Outputs", "RankReport",
    "Scalar", "ShareResult", "callback_scalars", "empty_result", "error_text", "new_folder", "png_root", "say",
    "scalar_shorts",
]

# Lightning's own logger hierarchy: the first-run cost line shows (and is silenced) like Lightning's info lines.
_log = logging.getLogger("pytorch_lightning.callbacks.igos")


def _metric(scalar: Scalar) -> Metric:
    """The synced Metric of a scalar: its reduction, and which way is better."""
    if scalar.reduction == "min":
        return MinMetric()
    if scalar.reduction == "max":
        return MaxMetric()
    return {True: HigherIsBetterMean, False: LowerIsBetterMean}.get(scalar.higher_is_better, MeanMetric)()


# ----------------------------------------------------------------------------- results


@dataclass
class ShareResult:
    """What one rank computed for its slice of the probe, on the CPU."""

    indices: Tensor
    targets: Tensor
    predictions: Tensor
    curves: CausalCurves
    saliency: Tensor
    stats: dict[str, Tensor]  # (n,) per registered statistic that applies (Evaluation.per_image)
    empty: Tensor  # (n,) bool: an empty explanation (see empty_reasons)
    # per image: "" when the explanation is fine, else why it is empty: "non-finite gradient", "mask never moved",
    # "non-finite saliency" or "constant saliency" (lightning_igos.core.solver)
    empty_reasons: list[str]
    panels: list[Tensor] = field(default_factory=list)
    passes: int = 0  # images through the model while explaining and scoring
    seconds: float = 0.0
    summary: str = ""  # the run in one line, for a log (see status.ExplainStatus.summary)
    stability: Tensor | None = None  # (n,) Spearman with the previous explained epoch's saliency, when there is one
    sanity: Tensor | None = None  # (n,) Spearman with the randomised model's saliency, when the check ran

    def __len__(self) -> int:
        return self.indices.numel()

    @classmethod
    def of(cls, indices: Tensor, evaluation: Evaluation) -> ShareResult:
        ev = replace(evaluation, images=None).cpu()  # the callback keeps the probe images itself: not copied back
        return cls(
            indices=indices, targets=ev.targets, predictions=ev.predictions, curves=ev.curves,
            saliency=ev.saliency, stats=ev.per_image(), empty=ev.empty, empty_reasons=list(ev.empty_reasons),
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
    stability_maps: Tensor | None = None  # with stability=True: the share's saliency as kept for the next epoch
    # epoch statistic (scalars.EPOCH_STATISTICS) -> (defined, undefined) values of the share (an empty map has none)
    correlations: dict[str, tuple[int, int]] = field(default_factory=dict)
    substrate_scores: Tensor | None = None  # (n, 2) the share's substrate_score and clean score per image


def empty_result(metric_steps: int, scalars: tuple[Scalar, ...] = ()) -> ShareResult:
    """The result of a rank with no probe image: every statistic of ``scalars`` as an empty tensor."""
    empty = torch.empty(0)
    curve = torch.empty(0, metric_steps + 1)
    curves = CausalCurves(
        fractions=torch.linspace(0, 1, metric_steps + 1), insertion=curve, deletion=curve,
        insertion_auc=empty, deletion_auc=empty, clean_score=empty, substrate_score=empty,
    )
    long = torch.empty(0, dtype=torch.long)
    stats = {s.statistic: empty for s in scalars if s.statistic is not None}
    return ShareResult(long, long, long, curves, torch.empty(0, 1, 1, 1), stats,
                       empty=torch.empty(0, dtype=torch.bool), empty_reasons=[])


def run_class_names(
    class_names: ClassNames | None, pl_module: Any, num_classes: int | None, result: ShareResult
) -> ClassNames | None:
    """The names of this run (:func:`~lightning_igos.class_names.fitting_class_names` over its targets and
    predictions): the callback's (a misfit is an error), else the module's when they fit, else None."""
    shown = result.targets.tolist() + result.predictions.tolist()
    return fitting_class_names(class_names, pl_module, num_classes, shown)


# ----------------------------------------------------------------------------- what one callback logs


class Outputs:
    """The logging side of one callback: scalars, stand-ins, panels, failures and what it keeps between hooks.

    ``display`` (the ``(mean, std)`` of the last run) and ``names`` (its class names) are set per run.
    """

    def __init__(self, prefix: str, on_error: str, class_names: ClassNames | None, display: tuple[Any, Any],
                 scalars: tuple[Scalar, ...] | None = None) -> None:
        self.prefix = prefix
        self.on_error = on_error
        self.declare_scalars(callback_scalars() if scalars is None else scalars)
        self.display = display
        self.names = class_names  # those of the current run (or the module's)
        self.png_warned = False
        # The names logged in the current validation epoch (see log_stand_ins).
        self.logged: set[str] = set()
        self.stand_ins = MonitorStandIns()
        self.layouts_written: set[str] = set()  # TensorBoard log dirs given the custom-scalars layout
        self.cost_reported = False
        self.substrate_warned = False

    def declare_scalars(self, scalars: tuple[Scalar, ...]) -> None:
        """What :meth:`log_scalars` logs (and the monitors' stand-ins cover); its Metrics are made anew."""
        self.scalars = scalars
        self.scalar_names = tuple(f"{self.prefix}/{s.short}" for s in scalars)
        # Every name log_scalars logs: the quality scalars and what the run cost.
        self.logged_names = (*self.scalar_names, f"{self.prefix}/seconds", f"{self.prefix}/passes_per_image")
        self.metrics: dict[str, Metric] | None = None  # made at the first log, on the module's device

    def begin_run(self) -> None:
        """A new fit or validate: the PNG fallback may warn again."""
        self.png_warned = False

    def begin_epoch(self) -> None:
        """A new validation epoch: nothing logged yet (see :meth:`log_stand_ins`)."""
        self.logged = set()

    def use_display(self, display: tuple[Any, Any]) -> None:
        """The ``(mean, std)`` the panels of this run undo."""
        self.display = display

    def use_class_names(self, names: ClassNames | None) -> None:
        """The class names of this run's panels."""
        self.names = names

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

    def warn_substrate(self, trainer: Any, reports: list[RankReport], num_classes: int | None = None) -> None:
        """One warning per callback (rank 0) when the substrate kept the evidence on most of the probe.

        ``num_classes``: the softmax's width, to count the evidence above chance (None: plain ratios)."""
        from lightning_igos.core.causal import substrate_warning

        scores = [r.substrate_scores for r in reports if r.substrate_scores is not None]
        if self.substrate_warned or not scores or not trainer.is_global_zero:
            return
        both = torch.cat(scores)
        text = substrate_warning(both[:, 0], clean_scores=both[:, 1], num_classes=num_classes)
        if text is not None:
            self.substrate_warned = True
            warnings.warn(f"IGOSCallback: {text}", IGOSWarning, stacklevel=2)

    # --------------------------------------------------------------------- scalars

    def log_stand_ins(self, trainer: Any) -> None:
        """Give ``ModelCheckpoint``/``EarlyStopping`` their ``<prefix>/`` keys on an epoch without fresh scalars.

        On an epoch that is not explained (``every_n_epochs``) or whose explanation failed
        (``on_error="warn"``), a monitored key reads as the worst finite value of the monitor's
        ``mode`` (:data:`~lightning_igos.callback.monitors.WORST`), which ``ModelCheckpoint`` ranks
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
        """Update the callback's Metrics (reset first) on every rank and log them; Lightning computes and syncs them
        at epoch end. A scalar without a value this epoch (``stability`` on the first explained epoch, the sanity
        check on epochs it does not run) is not logged; the decision is the same on every rank, so the synced keys
        match, and an empty share adds an empty tensor."""
        if self.metrics is None:
            self.metrics = {s.short: _metric(s) for s in self.scalars}
            self.metrics["seconds"] = MaxMetric()  # the slowest rank's wall time
            self.metrics["passes_per_image"] = MeanMetric()
        n = len(result)
        extras = {e.short: getattr(result, e.attribute) for e in EPOCH_STATISTICS}
        extras |= {"seconds": torch.tensor([result.seconds]),
                  "passes_per_image": torch.full((n,), result.passes / max(n, 1))}
        statistic_of = {s.short: s.statistic for s in self.scalars}
        for short, metric in self.metrics.items():
            statistic = statistic_of.get(short)
            value = result.stats.get(statistic, torch.empty(0)) if statistic is not None else extras.get(short)
            if value is None:
                continue
            name = f"{self.prefix}/{short}"
            metric.to(pl_module.device)
            metric.reset()
            metric.update(value.to(pl_module.device))
            # The metric is not a module attribute, so its attribute name is given explicitly;
            # Lightning only uses it as a label.
            pl_module.log(
                name, metric, on_step=False, on_epoch=True, add_dataloader_idx=False,
                metric_attribute=f"{self.prefix}_callback_{short}",
            )
            self.logged.add(name)

    # --------------------------------------------------------------------- images

    def render_panels(self, probe_images: Tensor, result: ShareResult, config: IGOSConfig = DEFAULTS) -> list[Tensor]:
        """The share's panels; each shows what its map claims over ``config``'s insertion substrate."""
        from lightning_igos import render

        if len(result) == 0:  # an empty share (fewer probe images than ranks) has nothing to draw
            return []
        mean, std = self.display  # resolved once per run
        images = probe_images[result.indices]
        display = render.unnormalize(images, mean, std)
        substrate = render.unnormalize(render.insertion_substrate(images, config), mean, std, range_of=images)
        return render.explanation_panels(display, result.saliency, result.curves, result.targets,
                                         result.predictions, result.indices.tolist(), class_names=self.names,
                                         substrate=substrate)

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
        folder = new_folder(root, run_folder(trainer.current_epoch, step))
        for index, panel in zip(indices.tolist(), panels):
            render.save_png(panel, folder / panel_file(index))
        render.save_png(grid, folder / OVERLAYS_FILE)
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
        self, trainer: Any, pl_module: Any, result: ShareResult | None, num_images: int, every_n_epochs: int,
        method: str = "igos",
    ) -> None:
        """The TensorBoard custom-scalars layout (one for all the Trainer's IGOSCallbacks, once per run); after
        the first run its cost, and after later runs, when the progress bar writes into a log, the run's line."""
        try:
            # One layout for every IGOSCallback of the Trainer (TensorBoard keeps one per run).
            outputs = [cb.outputs for cb in getattr(trainer, "callbacks", [])
                       if isinstance(getattr(cb, "outputs", None), Outputs)]
            charts = {o.prefix: [(s.short, s.group) for s in o.scalars] for o in [*outputs, self]}
            write_custom_scalars(trainer.loggers, self.layouts_written, charts)
        except Exception as err:
            self.handle_failures(trainer, [RankReport(0, error_text(err))], own_error=err, what="scalars",
                                 local=True)
        if result is None or len(result) == 0:
            return
        if not self.cost_reported:
            self.cost_reported = True
            passes = round(result.passes / len(result) * num_images)  # under DDP: rank 0's share, scaled
            say(trainer, cost_line(num_images, passes, result.seconds, every_n_epochs, pl_module.device, self.prefix,
                                   method))
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
