"""Send explanation panels to every Lightning logger that can show images.

Which loggers take images, and how (checked in this order, by what the logger can do,
so ``pytorch_lightning`` and ``lightning.pytorch`` loggers and look-alikes all work):

* a logger with a ``log_image(key, images, step, caption=...)`` method, as
  ``WandbLogger``: one call per tag, at the step of the scalars;
* a logger whose ``experiment`` has ``add_image`` (TensorBoard's ``SummaryWriter``): one
  image per tag at that step, so the step slider shows the panels evolving;
* a logger with a ``run_id`` whose ``experiment`` has ``log_artifacts`` (``MLFlowLogger``'s
  ``MlflowClient``): the PNG files of one validation run as artifacts under
  ``igos/epoch_<EEE>_step_<SSSSSS>/``.

A logger none of these fit (``CSVLogger``, ...) gets no images; when no logger of the
trainer takes images, the callback writes PNG files instead. Nothing here imports
``wandb`` or ``mlflow``: the loggers' own methods are called. PNGs are encoded by Pillow.

Example:
    >>> from types import SimpleNamespace
    >>> class Writer:
    ...     def add_image(self, tag, image, global_step): print(tag, tuple(image.shape), global_step)
    >>> sinks = image_sinks([SimpleNamespace(experiment=Writer())])
    >>> [s.kind for s in sinks]
    ['tensorboard']
    >>> import torch
    >>> sinks[0].log([("igos/probe_0", torch.rand(3, 4, 4), "#0")], step=7, epoch=0)
    igos/probe_0 (3, 4, 4) 7
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from lightning_igos.callback.lightning_internals import batches_that_stepped, summary_file_writer
from lightning_igos.callback.scalars import callback_scalars
from lightning_igos.render import to_pil_image
from lightning_igos.render.files import run_folder

__all__ = [
    "ImageSink", "artifact_folder", "comparison_title", "custom_scalars_layout", "image_sinks", "layout_summary",
    "write_custom_scalars",
]

# (tag, image (3, H, W) in [0, 1], caption)
Panel = tuple[str, Tensor, str]


def artifact_folder(epoch: int, step: int, prefix: str = "igos") -> str:
    """The artifact folder of one validation run's panels.

    Example:
        >>> artifact_folder(3, 120)
        'igos/epoch_003_step_000120'
    """
    return f"{prefix}/{run_folder(epoch, step)}"


@dataclass
class ImageSink:
    """One logger that takes images, and how (``kind``: ``"log_image"``, ``"tensorboard"`` or ``"mlflow"``)."""

    logger: Any
    kind: str
    target: Any  # what gets called: the logger, its SummaryWriter or its MlflowClient

    @property
    def name(self) -> str:
        return type(self.logger).__name__

    def log(self, panels: Sequence[Panel], *, step: int, epoch: int, prefix: str = "igos") -> None:
        """Log ``panels`` at ``step`` (the trainer's global step) of ``epoch``; ``prefix``: MLflow's folder."""
        if self.kind == "tensorboard":
            for tag, image, _ in panels:
                self.target.add_image(tag, image.detach().float().cpu().clamp(0, 1), global_step=step)
        elif self.kind == "log_image":
            for tag, image, caption in panels:
                self.target.log_image(key=tag, images=[to_pil_image(image)], step=step, caption=[caption])
        elif self.kind == "mlflow":
            with tempfile.TemporaryDirectory(prefix="igos_panels_") as folder:
                for tag, image, _ in panels:
                    to_pil_image(image).save(Path(folder) / f"{tag.rsplit('/', 1)[-1]}.png", format="PNG")
                where = artifact_folder(epoch, step, prefix)
                self.target.log_artifacts(self.logger.run_id, folder, artifact_path=where)
        else:  # pragma: no cover - kinds are fixed above
            raise ValueError(f"unknown image sink kind {self.kind!r}")


def _sink(logger: Any) -> ImageSink | None:
    if callable(getattr(logger, "log_image", None)):
        return ImageSink(logger, "log_image", logger)
    experiment = getattr(logger, "experiment", None)
    if callable(getattr(experiment, "add_image", None)):
        return ImageSink(logger, "tensorboard", experiment)
    if callable(getattr(experiment, "log_artifacts", None)) and getattr(logger, "run_id", None):
        return ImageSink(logger, "mlflow", experiment)
    return None


def image_sinks(loggers: Iterable[Any]) -> list[ImageSink]:
    """The loggers that can take images, each with the way it takes them (see the module's doc)."""
    sinks = []
    for logger in loggers:
        sink = _sink(logger)
        if sink is not None:
            sinks.append(sink)
    return sinks


# ----------------------------------------------------------------------------- TensorBoard layout


#: ``{prefix: [(scalar, chart), ...]}``: each callback's quality scalars and the chart each is drawn in.
Charts = Mapping[str, Sequence[tuple[str, str]]]


def custom_scalars_layout(charts: str | Sequence[str] | Charts = "igos") -> dict[str, dict[str, list[Any]]]:
    """TensorBoard's Custom Scalars layout of the ``<prefix>/`` scalars: one chart per statistic.

    ``charts`` maps each prefix to its scalars and their chart groups (what
    :func:`~lightning_igos.callback.outputs.callback_scalars` declares, from the statistics
    registry); a prefix or a list of prefixes stands for the default callback's scalars.
    Each prefix gets a category with one chart per scalar, in the registry's order (so the
    scalars of a group sit side by side): TensorBoard draws every series of one run in one
    colour, told apart only by small markers, so a chart of one statistic is the one that
    reads alone. It is a margin chart whose band is the statistic itself (value, lower and upper
    bound the same tag): TensorBoard's default "ignore outliers in chart scaling" drops the values
    outside their 5th-95th percentile before it fits the y-range, which, with 2-5 points, leaves
    out the first and the last (the line runs off the chart, or the chart is empty); a band counts
    each value three times, so every point stays in the range. When several callbacks of one Trainer
    (``igos`` and ``igos_pp``) log the same statistic, a first category, ``igos vs igos_pp``,
    overlays them in one margin chart per shared statistic, a band per callback (a margin
    chart's tags come in threes: value, lower, upper; :func:`layout_summary` writes them). TensorBoard
    keeps one layout per run, so the callbacks of one Trainer share one layout: pass all
    their prefixes.

    Example:
        >>> custom_scalars_layout()["igos"]["insertion_auc"]
        ['Margin', ['igos/insertion_auc', 'igos/insertion_auc', 'igos/insertion_auc']]
        >>> list(custom_scalars_layout(["igos", "igos_pp"]))
        ['igos vs igos_pp', 'igos', 'igos_pp']
        >>> custom_scalars_layout(["igos", "igos_pp"])["igos vs igos_pp"]["deletion_auc"][1][::3]
        ['igos/deletion_auc', 'igos_pp/deletion_auc']
        >>> list(custom_scalars_layout({"igos": [("road_morf", "ROAD"), ("road_lerf", "ROAD")]})["igos"])
        ['road_morf', 'road_lerf']
    """
    if isinstance(charts, str) or not isinstance(charts, Mapping):
        prefixes = [charts] if isinstance(charts, str) else list(dict.fromkeys(charts))
        default = [(s.short, s.group) for s in callback_scalars()]
        charts = {p: default for p in prefixes}

    own: dict[str, dict[str, list[Any]]] = {}
    shared: dict[str, list[str]] = {}
    for prefix, scalars in charts.items():
        # The registry's order, a group's scalars kept together.
        groups: dict[str, list[str]] = {}
        for short, group in scalars:
            groups.setdefault(group or short, []).append(short)
        shorts = [short for members in groups.values() for short in members]
        own[prefix] = {short: ["Margin", [f"{prefix}/{short}"] * 3] for short in shorts}
        for short in shorts:
            shared.setdefault(short, []).append(prefix)
    compared = {short: ["Margin", [f"{p}/{short}" for p in prefixes for _ in range(3)]]
                for short, prefixes in shared.items() if len(prefixes) > 1}
    if not compared:
        return own
    return {comparison_title(list(charts)): compared, **own}


def comparison_title(prefixes: Sequence[str]) -> str:
    """The title of the Custom Scalars category that overlays several callbacks' statistics.

    Example:
        >>> comparison_title(["igos", "igos_pp"])
        'igos vs igos_pp'
    """
    return " vs ".join(prefixes)


def layout_summary(layout: Mapping[str, Mapping[str, Sequence[Any]]]) -> Any:
    """The TensorBoard summary that holds a :func:`custom_scalars_layout` (a margin chart may have several bands).

    TensorBoard's Custom Scalars tab lays the margin charts of a category out last first, so
    they are written in reverse and read in the layout's order.

    Example:
        >>> summary = layout_summary(custom_scalars_layout(["igos", "igos_pp"]))
        >>> summary.value[0].tag
        'custom_scalars__config__'
    """
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.compat.proto.tensor_pb2 import TensorProto
    from tensorboard.compat.proto.tensor_shape_pb2 import TensorShapeProto
    from tensorboard.plugins.custom_scalar import layout_pb2

    categories = []
    for title, charts in layout.items():
        protos = []
        for chart_title, (kind, tags) in charts.items():
            if kind == "Margin":
                series = [layout_pb2.MarginChartContent.Series(value=v, lower=lo, upper=up)
                          for v, lo, up in zip(tags[::3], tags[1::3], tags[2::3])]
                protos.append(layout_pb2.Chart(title=chart_title, margin=layout_pb2.MarginChartContent(series=series)))
            else:
                protos.append(layout_pb2.Chart(title=chart_title,
                                               multiline=layout_pb2.MultilineChartContent(tag=list(tags))))
        if all(chart.HasField("margin") for chart in protos):
            protos.reverse()
        categories.append(layout_pb2.Category(title=title, chart=protos))
    tensor = TensorProto(dtype="DT_STRING", string_val=[layout_pb2.Layout(category=categories).SerializeToString()],
                         tensor_shape=TensorShapeProto())
    metadata = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name="custom_scalars"))
    return Summary(value=[Summary.Value(tag="custom_scalars__config__", tensor=tensor, metadata=metadata)])


# Set on a SummaryWriter once it holds the layout: every callback of the Trainer then leaves it alone.
_LAYOUT_MARK = "_lightning_igos_custom_scalars"


def write_custom_scalars(loggers: Iterable[Any], done: set[str] | None = None,
                         charts: str | Sequence[str] | Charts = "igos") -> None:
    """Write one :func:`custom_scalars_layout` of all the ``charts`` to every TensorBoard logger, once per run.

    TensorBoard shows one layout per run (a later one replaces, not extends, the first), so
    the callbacks of one Trainer write a single layout with a category per prefix: the first
    one to log writes it for all, and marks the writer. ``done`` (updated) holds the log
    directories written to, for callers that keep their own record.
    """
    for logger in loggers:
        experiment = getattr(logger, "experiment", None)
        add = getattr(experiment, "add_custom_scalars", None)
        if not callable(add):
            continue
        key = str(getattr(experiment, "log_dir", None) or getattr(logger, "log_dir", None) or id(experiment))
        if getattr(experiment, _LAYOUT_MARK, False) or (done is not None and key in done):
            continue
        file_writer = summary_file_writer(experiment)
        if file_writer is not None:  # torch's SummaryWriter: margin charts with several bands
            file_writer.add_summary(layout_summary(custom_scalars_layout(charts)))
        else:
            add(custom_scalars_layout(charts))
        try:
            setattr(experiment, _LAYOUT_MARK, True)
        except AttributeError:  # a writer that takes no attributes: ``done`` is the record
            pass
        if done is not None:
            done.add(key)


def log_panels(loggers: Iterable[Any], panels: Sequence[Panel], *, step: int, epoch: int,
               prefix: str = "igos") -> list[str]:
    """Give ``panels`` to every logger that takes images; the class names of those that took them.

    An empty list means no logger can show images (the caller then writes PNG files).
    """
    taken = []
    for sink in image_sinks(loggers):
        sink.log(panels, step=step, epoch=epoch, prefix=prefix)
        taken.append(sink.name)
    return taken


def scalar_step(trainer: Any) -> int:
    """The step Lightning gives the epoch-end scalars it sends to the loggers (the optimizer steps taken
    before this validation, ``trainer.global_step`` less one inside an epoch's last batch), so panels
    and scalars share a step; ``trainer.global_step`` where that counter is missing."""
    step = batches_that_stepped(trainer)
    return int(trainer.global_step) if step is None else step
