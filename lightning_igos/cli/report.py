"""The table, JSON report, panels and progress line of ``lightning-igos check``."""

from __future__ import annotations

import json
import math
import platform
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import torch
from torch import Tensor

import lightning_igos
from lightning_igos.cli.errors import InputError
from lightning_igos.cli.html_report import empty_text, sanity_text, verdict_text
from lightning_igos.cli.outputs import write_bytes, write_with
from lightning_igos.cli.settings import CheckSettings
from lightning_igos.core.evaluation import Evaluation
from lightning_igos.core.statistics import statistics
from lightning_igos.probe import Probe

if TYPE_CHECKING:
    from lightning_igos.class_names import ClassNames

PROG = "lightning-igos"
REPORT_FORMAT = "lightning-igos-check"
REPORT_VERSION = 1
#: The IGOSConfig fields listed in the report's settings (the metric ones come after mask_size_used).
REPORTED_OPTIONS = (
    "method", "mask_size", "iterations", "ig_steps", "l1", "tv", "tv_power", "normalize_score", "noise_std",
    "baseline", "tolerance", "patience", "max_batch_size", "objective", "quadrature",
)


class ProgressLine:
    """A one-line progress bar on a terminal; silent when ``enabled`` is False.

    Example:
        >>> import io
        >>> stream = io.StringIO()
        >>> bar = ProgressLine(stream, enabled=True)
        >>> bar.start("explaining", 10); bar.advance(5); bar.finish()
        >>> last = stream.getvalue().split(chr(13))[-1]
        >>> last.startswith("explaining [########################] 100.0%"), last.endswith(chr(10))
        (True, True)
        >>> silent = io.StringIO()
        >>> ProgressLine(silent, enabled=False).start("scoring", 4); silent.getvalue()
        ''
    """

    WIDTH = 24
    INTERVAL_S = 0.1

    def __init__(self, stream: IO[str], enabled: bool) -> None:
        self.stream, self.enabled = stream, enabled
        self.label, self.total, self.done = "", 0, 0
        self.started = self.last_drawn = 0.0
        self.drawn = False

    def start(self, label: str, total: int) -> None:
        if self.drawn:
            self._draw(force=True)
            self.stream.write("\n")
        self.label, self.total, self.done = label, max(total, 1), 0
        self.started = time.perf_counter()
        self._draw(force=True)

    def advance(self, count: int) -> None:
        self.done = min(self.done + count, self.total)
        self._draw()

    def finish(self) -> None:
        if self.drawn:
            self.done = self.total
            self._draw(force=True)
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False

    def _draw(self, force: bool = False) -> None:
        now = time.perf_counter()
        if not self.enabled or (not force and now - self.last_drawn < self.INTERVAL_S):
            return
        filled = round(self.WIDTH * self.done / self.total)
        bar = "#" * filled + "." * (self.WIDTH - filled)
        self.stream.write(f"\r{self.label:<11}[{bar}] {100 * self.done / self.total:5.1f}%  {now - self.started:6.1f}s")
        self.stream.flush()
        self.last_drawn, self.drawn = now, True


def _mean(values: Tensor) -> float:
    return float(values.double().mean())


def build_report(
    settings: CheckSettings,
    probe: Probe,
    device: torch.device,
    evaluation: Evaluation,
    elapsed_s: float,
    class_names: ClassNames | None = None,
    sanity: Tensor | None = None,
) -> dict[str, Any]:
    """The JSON report: per-image AUCs, means, thresholds with pass/fail, empty explanations, settings, versions.

    Each image row says whether its explanation is empty (``empty``, and ``empty_reason``:
    ``"non-finite gradient"``, ``"mask never moved"`` or None); the report counts them
    (``num_empty``, ``empty_by_reason``) and fails (``passed`` False) when there is one,
    unless ``settings.allow_empty``. With ``class_names`` each image row carries
    ``target_name`` (when its class is named) and the report the names as ``class_names``
    (index -> name). Each image row and ``mean`` carry every registered statistic that applies
    to the run (:mod:`lightning_igos.core.statistics`: with ``road`` also ``road_morf``,
    ``road_lerf`` and ``road_gap``, with probe boxes ``pointing``), and ``statistics`` describes
    them (name, table label, format, which way is better) for the tables. With ``sanity`` (the per-image Spearman
    correlations of ``--sanity``) the report carries a ``sanity`` object (``mean_correlation``,
    ``correlation``, ``max_correlation``, ``passed``), and fails when it did not pass.
    """
    reported = [st for st in statistics(settings.config, evaluation.boxes is not None) if st.in_report]
    every = evaluation.per_image()
    per_image = {st.name: every[st.name].detach().cpu() for st in reported}
    empty = [bool(flag) for flag in evaluation.empty.detach().cpu().tolist()]
    reasons = [str(reason) for reason in evaluation.empty_reasons]
    images = [
        {"index": i, "target": int(probe.targets[i]), **{name: float(v[i]) for name, v in per_image.items()},
         "empty": empty[i], "empty_reason": (reasons[i] or "empty explanation") if empty[i] else None}
        for i in range(len(probe))
    ]
    by_reason: dict[str, int] = {}
    for row in images:
        if row["empty"]:
            by_reason[row["empty_reason"]] = by_reason.get(row["empty_reason"], 0) + 1
    for row in images:
        name = None if class_names is None else class_names.name(row["target"])
        if name is not None:
            row["target_name"] = name
    mean = {name: _mean(values) for name, values in per_image.items()}
    normalized_mean = {name: mean[f"{name}_normalized"] for name in ("insertion_auc", "deletion_auc")}
    thresholds = evaluate_thresholds(settings, mean)
    num_empty = sum(empty)
    config = settings.config
    options = config.as_dict()
    solver = {name: options[name] for name in REPORTED_OPTIONS}
    sanity_block = None if sanity is None else sanity_report(sanity, settings.max_sanity_correlation)
    return {
        "format": REPORT_FORMAT,
        "version": REPORT_VERSION,
        "passed": all(t["passed"] for t in thresholds) and (num_empty == 0 or settings.allow_empty)
        and (sanity_block is None or sanity_block["passed"]),
        "thresholds": thresholds,
        "num_empty": num_empty,
        "empty_by_reason": dict(sorted(by_reason.items(), key=lambda item: (-item[1], item[0]))),
        "mean": mean,
        "normalized_mean": normalized_mean,
        "statistics": [{"name": st.name, "label": st.label, "format": st.fmt, "higher_is_better": st.higher_is_better}
                       for st in reported],
        "images": images,
        "settings": {
            "model": settings.model,
            "checkpoint": str(settings.checkpoint),
            "probe": str(settings.probe),
            "num_images": len(probe),
            "image_shape": list(probe.images.shape[1:]),
            "device": str(device),
            **solver,
            "mask_size_used": None if evaluation.explanation.mask is None
            else list(evaluation.explanation.mask.shape[-2:]),
            "metric_steps": config.metric_steps,
            "substrate": config.substrate,
            "seed": config.seed,
            "road": config.road,
            "boxes": evaluation.boxes is not None,
            "normalized_thresholds": settings.normalized,
            "allow_empty": settings.allow_empty,
            "max_probe_elements": settings.max_probe_elements,
        },
        "versions": {
            "lightning_igos": lightning_igos.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        **({} if sanity_block is None else {"sanity": sanity_block}),
        "elapsed_s": round(elapsed_s, 3),
        **({} if class_names is None else {"class_names": class_names.to_json()}),
    }


def sanity_report(correlation: Tensor, max_correlation: float) -> dict[str, Any]:
    """The report's ``sanity`` object: the mean and per-image Spearman correlations, the limit, pass/fail.

    A NaN mean fails.

    Example:
        >>> sanity_report(torch.tensor([0.25, 0.5]), 0.5)
        {'mean_correlation': 0.375, 'correlation': [0.25, 0.5], 'max_correlation': 0.5, 'passed': True}
    """
    values = [float(v) for v in correlation.detach().cpu().double().tolist()]
    mean = _mean(correlation.detach().cpu())
    return {"mean_correlation": mean, "correlation": values, "max_correlation": float(max_correlation),
            "passed": bool(mean <= max_correlation)}


def evaluate_thresholds(settings: CheckSettings, mean: dict[str, float]) -> list[dict[str, Any]]:
    """One entry per gate (:meth:`CheckSettings.requirements`): which mean it reads, the limit, the value, pass/fail.

    A NaN mean fails every gate on it.
    """
    results = []
    for requirement in settings.requirements():
        value = mean[requirement.statistic]
        normalized = requirement.name != "require" and settings.normalized
        metric = requirement.statistic.removesuffix("_normalized") if normalized else requirement.statistic
        results.append({"name": requirement.name, "metric": metric, "normalized": normalized, "op": requirement.op,
                        "limit": requirement.limit, "value": value,
                        "passed": bool(not math.isnan(value) and requirement.holds(value))})
    return results


def table_columns(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    """``(name, label, format)`` of the report's per-image columns: its statistics that have a table label.

    Example:
        >>> table_columns({"statistics": [{"name": "deletion_auc", "label": "deletion AUC", "format": ".4f"},
        ...                               {"name": "mask_min", "label": "", "format": ".4f"}]})
        [('deletion_auc', 'deletion AUC', '.4f')]
    """
    return [(st["name"], st["label"], st["format"]) for st in report.get("statistics") or [] if st.get("label")]


def format_table(report: dict[str, Any]) -> str:
    """The text printed by ``check``: settings, one row per image, means, gates, verdict."""
    s = report["settings"]
    mask = "x".join(map(str, s["mask_size_used"])) if s.get("mask_size_used") else "none"
    targets = [f"{row['target']} ({row['target_name']})" if "target_name" in row else str(row["target"])
               for row in report["images"]]
    width = max([6, *map(len, targets)])
    columns = [(name, label, fmt, max(9, len(label))) for name, label, fmt in table_columns(report)]

    def cells(values: dict[str, Any]) -> str:
        return "".join(f"  {format(values[name], fmt) if name in values else '':>{w}}" for name, _, fmt, w in columns)

    lines = [
        f"{PROG} check: {s['num_images']} probe images from {s['probe']}, {s['model']} on {s['device']}",
        f"  {s['method']}, {s['iterations']} iterations, {s['ig_steps']} ig steps, mask {mask}, "
        f"baseline {s['baseline']}, {s['metric_steps']} metric steps, substrate {s['substrate']}, seed {s['seed']}",
        "",
        f"{'image':>5}  {'target':>{width}}" + "".join(f"  {label:>{w}}" for _, label, _, w in columns),
    ]
    for row, target in zip(report["images"], targets):
        marker = f"  EMPTY ({row.get('empty_reason')})" if row.get("empty") else ""
        lines.append(f"{row['index']:>5}  {target:>{width}}" + cells(row) + marker)
    lines.append(f"{'mean':>5}  {'':>{width}}" + cells(report["mean"]))
    lines.append("")
    if not report["thresholds"]:
        lines.append("no thresholds given (--min-insertion, --max-deletion, --require)")
    for t in report["thresholds"]:
        label = f"mean {t['metric'].replace('_auc', ' AUC')}{' (normalized)' if t['normalized'] else ''}"
        lines.append(f"{label:<36} {t['value']:.4f} {t['op']} {t['limit']:<8g} {'pass' if t['passed'] else 'FAIL'}")
    empty = empty_text(report)
    if empty:
        allowed = s.get("allow_empty", False)
        lines.append(f"{empty}: {'allowed by --allow-empty' if allowed else 'FAIL (--allow-empty accepts them)'}")
    line = sanity_text(report)
    if line:
        lines.append(line)
    lines.append(verdict_text(report))
    return "\n".join(lines)


def write_report(report: dict[str, Any], path: Path) -> Path:
    """Write the JSON report to ``path`` atomically (:func:`~lightning_igos.cli.outputs.write_bytes`).

    Non-finite numbers are written as ``null``, so the file is strict JSON.
    """
    text = json.dumps(_finite(report), indent=2, allow_nan=False) + "\n"
    try:
        return write_bytes(path, text.encode("utf-8"))
    except OSError as err:
        raise InputError(f"cannot write the report to '{path}': {err}") from err


def _finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def check_panels(probe: Probe, evaluation: Evaluation, mean: Any, std: Any,
                 class_names: ClassNames | None = None) -> tuple[list[Tensor], Tensor]:
    """The panel of each probe image (image, heatmap and curves) and the overlay grid of all.

    With ``class_names`` the panel headers read ``class 3 (cat)`` and the grid's tiles are captioned.
    """
    from lightning_igos.render import explanation_panels, grid_labels, overlay_grid, unnormalize

    evaluation = evaluation.cpu()
    shown = unnormalize(probe.images, mean, std)
    panels = explanation_panels(shown, evaluation.saliency, evaluation.curves, evaluation.targets,
                                evaluation.predictions, indices=range(len(probe)), class_names=class_names)
    labels = None if class_names is None else grid_labels(range(len(probe)), evaluation.targets, class_names)
    return panels, overlay_grid(shown, evaluation.saliency, labels=labels)


def write_images(folder: Path, probe: Probe, evaluation: Evaluation, mean: Any, std: Any,
                 rendered: tuple[list[Tensor], Tensor] | None = None) -> list[Path]:
    """``probe_<i>.png`` (image, heatmap and curves) per image and ``overlays.png`` for all, each written atomically.

    ``rendered``: the output of :func:`check_panels` when already drawn (else drawn here).
    """
    from lightning_igos.render import save_png

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"cannot create the image folder '{folder}': {err}") from err
    panels, grid = rendered if rendered is not None else check_panels(probe, evaluation, mean, std)
    written = []
    for name, image in [*((f"probe_{i}.png", panel) for i, panel in enumerate(panels)), ("overlays.png", grid)]:
        written.append(folder / name)
        try:
            write_with(written[-1], lambda temporary, image=image: save_png(image, temporary))
        except OSError as err:
            raise InputError(f"cannot write '{written[-1]}': {err}") from err
    return written
