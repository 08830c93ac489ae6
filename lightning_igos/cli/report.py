"""The table, JSON report, panels and progress line of ``lightning-igos check``."""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import torch
from torch import Tensor, nn

import lightning_igos
from lightning_igos.cli.errors import InputError
from lightning_igos.core.causal import CausalCurves
from lightning_igos.core.solver import Explanation
from lightning_igos.probe import Probe

PROG = "lightning-igos"
REPORT_FORMAT = "lightning-igos-check"
REPORT_VERSION = 1


class ProgressLine:
    """A one-line progress bar on a terminal; silent when ``enabled`` is False.

    Example:
        >>> import io
        >>> bar = ProgressLine(io.StringIO(), enabled=False)
        >>> bar.start("explaining", 10); bar.advance(5); bar.finish()
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
    args: argparse.Namespace,
    probe: Probe,
    device: torch.device,
    options: dict[str, Any],
    explanation: Explanation,
    curves: CausalCurves,
    elapsed_s: float,
) -> dict[str, Any]:
    """The JSON report: per-image AUCs, means, thresholds with pass/fail, settings, versions."""
    masks = explanation.mask.flatten(1).float().cpu()
    per_image = {
        "clean_score": curves.clean_score.cpu(),
        "insertion_auc": curves.insertion_auc.cpu(),
        "deletion_auc": curves.deletion_auc.cpu(),
        "insertion_auc_normalized": curves.insertion_auc_normalized.cpu(),
        "deletion_auc_normalized": curves.deletion_auc_normalized.cpu(),
        "mask_mean": masks.mean(1),
        "mask_min": masks.min(1).values,
        "mask_frac_below_half": (masks < 0.5).float().mean(1),
    }
    images = [
        {"index": i, "target": int(probe.targets[i]), **{name: float(v[i]) for name, v in per_image.items()}}
        for i in range(len(probe))
    ]
    mean = {name: _mean(per_image[name]) for name in ("clean_score", "insertion_auc", "deletion_auc", "mask_mean")}
    normalized_mean = {name: _mean(per_image[f"{name}_normalized"]) for name in ("insertion_auc", "deletion_auc")}
    thresholds = evaluate_thresholds(args, mean, normalized_mean)
    return {
        "format": REPORT_FORMAT,
        "version": REPORT_VERSION,
        "passed": all(t["passed"] for t in thresholds),
        "thresholds": thresholds,
        "mean": mean,
        "normalized_mean": normalized_mean,
        "images": images,
        "settings": {
            "model": args.model,
            "checkpoint": str(args.checkpoint),
            "probe": str(args.probe),
            "num_images": len(probe),
            "image_shape": list(probe.images.shape[1:]),
            "device": str(device),
            **{k: list(v) if isinstance(v, tuple) else v for k, v in options.items()},
            "mask_size_used": list(explanation.mask.shape[-2:]),
            "metric_steps": args.metric_steps,
            "substrate": args.substrate,
            "seed": args.seed,
            "normalized_thresholds": args.normalized,
        },
        "versions": {
            "lightning_igos": lightning_igos.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "elapsed_s": round(elapsed_s, 3),
    }


def evaluate_thresholds(
    args: argparse.Namespace, mean: dict[str, float], normalized_mean: dict[str, float]
) -> list[dict[str, Any]]:
    """One entry per threshold given: which mean it reads, the limit, the value and pass/fail."""
    source = normalized_mean if args.normalized else mean
    wanted = [
        ("min_insertion", "insertion_auc", ">=", args.min_insertion),
        ("max_deletion", "deletion_auc", "<=", args.max_deletion),
    ]
    results = []
    for name, metric, op, limit in wanted:
        if limit is None:
            continue
        value = source[metric]
        passed = value >= limit if op == ">=" else value <= limit
        results.append({"name": name, "metric": metric, "normalized": args.normalized, "op": op,
                        "limit": limit, "value": value, "passed": bool(passed)})
    return results


def format_table(report: dict[str, Any], args: argparse.Namespace) -> str:
    """The text printed by ``check``: settings, one row per image, means, thresholds, verdict."""
    s = report["settings"]
    mask_h, mask_w = s["mask_size_used"]
    lines = [
        f"{PROG} check: {s['num_images']} probe images from {s['probe']}, {s['model']} on {s['device']}",
        f"  {s['method']}, {s['iterations']} iterations, {s['ig_steps']} ig steps, mask {mask_h}x{mask_w}, "
        f"baseline {s['baseline']}, {s['metric_steps']} metric steps, substrate {s['substrate']}, seed {s['seed']}",
        "",
        f"{'image':>5}  {'target':>6}  {'clean prob':>10}  {'insertion AUC':>13}  {'deletion AUC':>12}  "
        f"{'mask mean':>9}",
    ]
    for row in report["images"]:
        lines.append(
            f"{row['index']:>5}  {row['target']:>6}  {row['clean_score']:>10.4f}  {row['insertion_auc']:>13.4f}  "
            f"{row['deletion_auc']:>12.4f}  {row['mask_mean']:>9.4f}"
        )
    m, n = report["mean"], report["normalized_mean"]
    lines.append(
        f"{'mean':>5}  {'':>6}  {m['clean_score']:>10.4f}  {m['insertion_auc']:>13.4f}  "
        f"{m['deletion_auc']:>12.4f}  {m['mask_mean']:>9.4f}"
    )
    lines.append(
        f"{'normalized mean':>25}  {n['insertion_auc']:>13.4f}  {n['deletion_auc']:>12.4f}  (AUC / clean prob)"
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


def display_normalisation(probe: Probe, model: nn.Module) -> tuple[Any, Any]:
    """The probe's mean/std, else the model's ``mean``/``std`` attributes (as on ObjectClassifier), else None."""
    channels = probe.images.shape[1]

    def per_channel(value: object) -> Any:
        if isinstance(value, Sequence) and len(value) == channels:
            return tuple(value)
        return None

    if probe.mean is not None and probe.std is not None:
        return probe.mean, probe.std
    mean, std = per_channel(getattr(model, "mean", None)), per_channel(getattr(model, "std", None))
    # Without both, render.unnormalize rescales each image to its own range.
    return (mean, std) if mean is not None and std is not None else (None, None)


def write_images(
    folder: Path, probe: Probe, explanation: Explanation, curves: CausalCurves, mean: Any, std: Any
) -> list[Path]:
    """``probe_<i>.png`` (image, heatmap and curves) per image and ``overlays.png`` for all."""
    from lightning_igos.render import overlay_grid, probe_panel, save_png, unnormalize

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"cannot create the image folder '{folder}': {err}") from err
    shown = unnormalize(probe.images, mean, std)
    saliency = explanation.saliency.detach().cpu()
    fractions = curves.fractions.cpu()
    written = []
    for i in range(len(probe)):
        title = f"#{i} target {int(probe.targets[i])} p={float(curves.clean_score[i]):.2f}"
        panel = probe_panel(
            shown[i], saliency[i], curves.insertion[i].cpu(), curves.deletion[i].cpu(), fractions,
            float(curves.insertion_auc[i]), float(curves.deletion_auc[i]), title,
        )
        written.append(folder / f"probe_{i}.png")
        save_png(panel, written[-1])
    written.append(folder / "overlays.png")
    save_png(overlay_grid(shown, saliency), written[-1])
    return written
