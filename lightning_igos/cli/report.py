"""The table, JSON report, panels and progress line of ``lightning-igos check``."""

from __future__ import annotations

import json
import platform
import tempfile
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import torch
from torch import Tensor

import lightning_igos
from lightning_igos.cli.errors import InputError
from lightning_igos.core.evaluation import Evaluation
from lightning_igos.probe import Probe

if TYPE_CHECKING:
    from lightning_igos.class_names import ClassNames
    from lightning_igos.cli.check import CheckSettings

PROG = "lightning-igos"
REPORT_FORMAT = "lightning-igos-check"
REPORT_VERSION = 1
#: The IGOSConfig fields listed in the report's settings (the metric ones come after mask_size_used).
REPORTED_OPTIONS = (
    "method", "mask_size", "iterations", "ig_steps", "l1", "tv", "tv_power", "normalize_score", "noise_std",
    "baseline", "tolerance", "patience", "max_batch_size",
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
) -> dict[str, Any]:
    """The JSON report: per-image AUCs, means, thresholds with pass/fail, settings, versions.

    With ``class_names`` each image row carries ``target_name`` (when its class is named) and
    the report the names as ``class_names`` (index -> name).
    """
    per_image = {name: values.detach().cpu() for name, values in evaluation.per_image().items()}
    images = [
        {"index": i, "target": int(probe.targets[i]), **{name: float(v[i]) for name, v in per_image.items()}}
        for i in range(len(probe))
    ]
    for row in images:
        name = None if class_names is None else class_names.name(row["target"])
        if name is not None:
            row["target_name"] = name
    mean = {name: _mean(per_image[name]) for name in ("clean_score", "insertion_auc", "deletion_auc", "mask_mean")}
    normalized_mean = {name: _mean(per_image[f"{name}_normalized"]) for name in ("insertion_auc", "deletion_auc")}
    thresholds = evaluate_thresholds(settings, mean, normalized_mean)
    config = settings.config
    options = config.as_dict()
    solver = {name: options[name] for name in REPORTED_OPTIONS}
    return {
        "format": REPORT_FORMAT,
        "version": REPORT_VERSION,
        "passed": all(t["passed"] for t in thresholds),
        "thresholds": thresholds,
        "mean": mean,
        "normalized_mean": normalized_mean,
        "images": images,
        "settings": {
            "model": settings.model,
            "checkpoint": str(settings.checkpoint),
            "probe": str(settings.probe),
            "num_images": len(probe),
            "image_shape": list(probe.images.shape[1:]),
            "device": str(device),
            **solver,
            "mask_size_used": list(evaluation.explanation.mask.shape[-2:]),
            "metric_steps": config.metric_steps,
            "substrate": config.substrate,
            "seed": config.seed,
            "normalized_thresholds": settings.normalized,
        },
        "versions": {
            "lightning_igos": lightning_igos.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "elapsed_s": round(elapsed_s, 3),
        **({} if class_names is None else {"class_names": class_names.to_json()}),
    }


def evaluate_thresholds(
    settings: CheckSettings, mean: dict[str, float], normalized_mean: dict[str, float]
) -> list[dict[str, Any]]:
    """One entry per threshold given: which mean it reads, the limit, the value and pass/fail."""
    source = normalized_mean if settings.normalized else mean
    wanted = [
        ("min_insertion", "insertion_auc", ">=", settings.min_insertion),
        ("max_deletion", "deletion_auc", "<=", settings.max_deletion),
    ]
    results = []
    for name, metric, op, limit in wanted:
        if limit is None:
            continue
        value = source[metric]
        passed = value >= limit if op == ">=" else value <= limit
        results.append({"name": name, "metric": metric, "normalized": settings.normalized, "op": op,
                        "limit": limit, "value": value, "passed": bool(passed)})
    return results


def format_table(report: dict[str, Any]) -> str:
    """The text printed by ``check``: settings, one row per image, means, thresholds, verdict."""
    s = report["settings"]
    mask_h, mask_w = s["mask_size_used"]
    targets = [f"{row['target']} ({row['target_name']})" if "target_name" in row else str(row["target"])
               for row in report["images"]]
    width = max([6, *map(len, targets)])
    lines = [
        f"{PROG} check: {s['num_images']} probe images from {s['probe']}, {s['model']} on {s['device']}",
        f"  {s['method']}, {s['iterations']} iterations, {s['ig_steps']} ig steps, mask {mask_h}x{mask_w}, "
        f"baseline {s['baseline']}, {s['metric_steps']} metric steps, substrate {s['substrate']}, seed {s['seed']}",
        "",
        f"{'image':>5}  {'target':>{width}}  {'clean prob':>10}  {'insertion AUC':>13}  {'deletion AUC':>12}  "
        f"{'mask mean':>9}",
    ]
    for row, target in zip(report["images"], targets):
        lines.append(
            f"{row['index']:>5}  {target:>{width}}  {row['clean_score']:>10.4f}  {row['insertion_auc']:>13.4f}  "
            f"{row['deletion_auc']:>12.4f}  {row['mask_mean']:>9.4f}"
        )
    m, n = report["mean"], report["normalized_mean"]
    lines.append(
        f"{'mean':>5}  {'':>{width}}  {m['clean_score']:>10.4f}  {m['insertion_auc']:>13.4f}  "
        f"{m['deletion_auc']:>12.4f}  {m['mask_mean']:>9.4f}"
    )
    lines.append(
        f"{'normalized mean':>{19 + width}}  {n['insertion_auc']:>13.4f}  {n['deletion_auc']:>12.4f}  "
        "(AUC / clean prob)"
    )
    lines.append("")
    if not report["thresholds"]:
        lines.append("no thresholds given (--min-insertion, --max-deletion): PASS")
        return "\n".join(lines)
    for t in report["thresholds"]:
        label = f"mean {t['metric'].replace('_auc', ' AUC')}{' (normalized)' if t['normalized'] else ''}"
        lines.append(f"{label:<36} {t['value']:.4f} {t['op']} {t['limit']:<8g} {'pass' if t['passed'] else 'FAIL'}")
    failed = [t for t in report["thresholds"] if not t["passed"]]
    lines.append("PASS" if not failed else f"FAIL: {len(failed)} of {len(report['thresholds'])} thresholds failed")
    return "\n".join(lines)


def check_report_path(path: Path) -> None:
    """Fail (InputError) before any work when ``--report`` cannot be written; creates missing parents."""
    if path.is_dir():
        raise InputError(f"--report '{path}' is a directory; give a file name such as '{path / 'report.json'}'.")
    existed = path.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a"):
            pass
    except OSError as err:
        raise InputError(f"--report '{path}' cannot be written: {err}") from err
    if not existed:
        path.unlink()


def check_images_folder(folder: Path) -> None:
    """Fail (InputError) before any work when ``--images`` is not a writable folder; creates it."""
    if folder.exists() and not folder.is_dir():
        raise InputError(f"--images '{folder}' is a file, not a folder.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise InputError(f"--images '{folder}': cannot write into the folder: {err}") from err


def write_report(report: dict[str, Any], path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")
    except OSError as err:
        raise InputError(f"cannot write the report to '{path}': {err}") from err


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
    """``probe_<i>.png`` (image, heatmap and curves) per image and ``overlays.png`` for all.

    ``rendered``: the output of :func:`check_panels` when already drawn (else drawn here).
    """
    from lightning_igos.render import save_png

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"cannot create the image folder '{folder}': {err}") from err
    panels, grid = rendered if rendered is not None else check_panels(probe, evaluation, mean, std)
    written = []
    for i, panel in enumerate(panels):
        written.append(folder / f"probe_{i}.png")
        save_png(panel, written[-1])
    written.append(folder / "overlays.png")
    save_png(grid, written[-1])
    return written
