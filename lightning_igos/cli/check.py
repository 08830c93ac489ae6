"""``lightning-igos check`` as a Python function: typed settings in, a report out.

:func:`run_check` loads the model, reads the probe, runs
:func:`~lightning_igos.core.evaluation.evaluate` with the settings' configuration and
builds the report; the command line only parses arguments into :class:`CheckSettings`
and prints.

Example:
    >>> settings = CheckSettings(model="pkg.models:Net", checkpoint="run.ckpt", probe="probe.pt",
    ...                          min_insertion=0.3, config=IGOSConfig(iterations=2))
    >>> settings.config.iterations, settings.checkpoint.name
    (2, 'run.ckpt')
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import torch
from torch import Tensor, nn

from lightning_igos.class_names import ClassNames, fitting_class_names, read_class_names
from lightning_igos.cli.compare import check_baseline, compare_reports, load_report
from lightning_igos.cli.early import threshold_problem
from lightning_igos.cli.errors import InputError
from lightning_igos.cli.html_report import render_markdown, write_html
from lightning_igos.cli.images import check_panels, write_images
from lightning_igos.cli.model_loading import (
    check_input_file,
    import_model_class,
    load_model,
    working_directory_importable,
)
from lightning_igos.cli.outputs import check_outputs, step_summary, write_bytes
from lightning_igos.cli.progress import ProgressLine
from lightning_igos.cli.report import build_report, overlay_thumbnails, probe_digest, write_report
from lightning_igos.cli.settings import CheckSettings
from lightning_igos.core.config import IGOSConfig
from lightning_igos.core.evaluation import Evaluation, clean_forward, evaluate, planned_passes
from lightning_igos.core.sanity import SanityResult, sanity_check
from lightning_igos.core.statistics import statistics
from lightning_igos.core.validation import check_logits, check_mask_size
from lightning_igos.probe import Probe, load_probe
from lightning_igos.quiet_logs import lightning_info_hidden

__all__ = ["CheckResult", "CheckSettings", "check_thresholds", "resolve_device", "run_check"]



@dataclass
class CheckResult:
    """The outcome of :func:`run_check`: the JSON report, the evaluation and the verdict."""

    report: dict[str, Any]
    evaluation: Evaluation
    probe: Probe

    @property
    def passed(self) -> bool:
        return bool(self.report["passed"])


def run_check(settings: CheckSettings, progress: IO[str] | None = None) -> CheckResult:
    """Load the model, explain and score the probe, compare with the thresholds and write the outputs.

    The outputs are one run's (:func:`~lightning_igos.cli.outputs.one_run`): each records the run id
    (``report["run_id"]``, the HTML and Markdown reports, the ``--images`` folder's ``manifest.json``),
    they replace the previous ones together at the end (a failed or interrupted check leaves those
    as they were, a concurrent check waits), and an earlier, larger probe's panels are removed.
    The rest is as :func:`_run_check` says.
    """
    from lightning_igos.cli.outputs import one_run

    with one_run():
        return _run_check(settings, progress)


def _run_check(settings: CheckSettings, progress: IO[str] | None = None) -> CheckResult:
    """Load the model, explain and score the probe, compare with the thresholds and write the outputs.

    Problems the user can fix raise :class:`~lightning_igos.cli.errors.InputError` before the
    expensive work; ``progress`` (default: stderr when it is a terminal) gets a progress line.
    The output paths are checked first, before any file is read, and nothing is created until
    the results are written (:func:`~lightning_igos.cli.outputs.check_outputs`): an output that
    is an input or another output, or one that cannot be written, is an input error.
    """
    started = time.perf_counter()
    check_thresholds(settings)
    if settings.max_drop and settings.baseline_report is None:
        raise InputError("--max-drop needs --baseline-report OLD.json: the margins are drops from a baseline report.")
    check_outputs(
        {"--checkpoint": settings.checkpoint, "--probe": settings.probe, "--class-names": settings.class_names,
         "--baseline-report": settings.baseline_report},
        {"--report": settings.report, "--html": settings.html, "--markdown": settings.markdown},
        settings.images,
    )
    baseline = None if settings.baseline_report is None else load_report(settings.baseline_report, "--baseline-report")
    device = resolve_device(settings.device)
    check_input_file(settings.checkpoint, "checkpoint")
    import_plugins(settings.plugins)
    probe = _load_probe_file(settings.probe, settings.max_probe_elements)
    height, width = probe.images.shape[-2:]
    try:
        check_mask_size(settings.config.mask_size, image_size=(height, width))
    except (TypeError, ValueError) as err:
        raise InputError(str(err).replace("`", "")) from err
    check_requirements(settings, probe)
    if baseline is not None:  # another probe or method is an input error before any work
        known = [s.name for s in statistics(settings.config, probe.boxes is not None) if s.in_report]
        this_run = {"probe": str(settings.probe), "probe_sha256": probe_digest(probe.images, probe.targets),
                    "method": settings.config.method, "num_images": len(probe),
                    "image_shape": list(probe.images.shape[1:])}
        check_baseline(baseline, this_run, known, settings.max_drop)
    names = _read_class_names(settings.class_names)
    model_class = import_model_class(settings.model)
    with lightning_info_hidden(not settings.verbose):
        model = load_model(model_class, settings.checkpoint, device, settings.model)
    clean_logits = check_probe_fits(model, probe, device, settings)
    names = _fitting_class_names(names, settings, model, clean_logits.shape[1], probe)
    drawn = settings.images is not None or settings.html is not None
    display = _display_stats(probe, model) if drawn else _display_stats_or_none(probe, model)

    stream = sys.stderr if progress is None else progress
    bar = ProgressLine(stream, enabled=progress is not None or sys.stderr.isatty())
    evaluation = explain(model, probe, device, settings.config, bar, clean_logits=clean_logits)
    sanity = _sanity(model, probe, device, settings.config, evaluation) if settings.sanity else None
    overlays = None if display is None else overlay_thumbnails(_shown(probe, display), evaluation.saliency)
    report = build_report(settings, probe, device, evaluation, time.perf_counter() - started, class_names=names,
                          sanity=sanity, overlays=overlays)
    if baseline is not None:
        report["comparison"] = compare_reports(baseline, report, settings.max_drop, str(settings.baseline_report))
        report["passed"] = bool(report["passed"] and report["comparison"]["passed"])
    if settings.report is not None:
        write_report(report, settings.report)
    rendered = check_panels(probe, evaluation, *display, class_names=names) if drawn else None
    if settings.images is not None:
        write_images(settings.images, probe, evaluation, *display, rendered=rendered)
    if settings.html is not None:
        panels, grid = rendered
        write_html(settings.html, report, list(zip(map(_caption, report["images"]), panels)), grid, baseline=baseline)
    summary = render_markdown(report) + "\n"
    if settings.markdown is not None:
        try:
            write_bytes(settings.markdown, summary.encode("utf-8"))
        except OSError as err:
            raise InputError(f"cannot write the Markdown summary to '{settings.markdown}': {err}") from err
    step_summary(summary)  # on GitHub Actions
    return CheckResult(report=report, evaluation=evaluation, probe=probe)


def _sanity(model: nn.Module, probe: Probe, device: torch.device, config: IGOSConfig,
            evaluation: Evaluation) -> SanityResult:
    """``--sanity``: the per-image Spearman correlation between the evaluation's explanations and
    the method's on a randomised copy of the model (:func:`~lightning_igos.core.sanity.sanity_check`),
    NaN for an image whose explanation is empty on either, and the re-initialised modules."""
    return sanity_check(model, probe.images.to(device), evaluation.targets, config,
                        saliency=evaluation.saliency, empty=evaluation.empty)


def import_plugins(modules: tuple[str, ...]) -> None:
    """Import each ``--plugin`` module (it registers explainers or statistics; the working directory is
    importable); a failure is an input error."""
    import importlib

    if modules:
        working_directory_importable()
    for name in modules:
        try:
            importlib.import_module(name)
        except (Exception, SystemExit) as err:  # a plug-in's sys.exit() must not end the check
            raise InputError(f"--plugin {name}: cannot import it: {type(err).__name__}: {err}") from err


def check_requirements(settings: CheckSettings, probe: Probe) -> None:
    """Every gate names a statistic this run reports (before any work); an unknown one lists those that exist."""
    from lightning_igos.core.statistics import value_range

    reported = {s.name: s for s in statistics(settings.config, probe.boxes is not None) if s.in_report}
    known = list(reported)
    for requirement in settings.requirements():
        if requirement.statistic not in known:
            hint = _missing_statistic_hint(requirement.statistic, settings, probe)
            raise InputError(f"--require {requirement}: no statistic named {requirement.statistic!r} in this run"
                             f"{hint}; the reported ones are: {', '.join(known)}.")
        bounds = value_range(reported[requirement.statistic])
        verdict = None if bounds is None else requirement.decided(*bounds)
        if verdict is not None and requirement.name == "require":
            low, high = bounds
            raise InputError(f"--require {requirement} could never {'pass' if verdict == 'fail' else 'fail'}: "
                             f"{requirement.statistic} lies in [{low:g}, {high:g}].")


def _missing_statistic_hint(name: str, settings: CheckSettings, probe: Probe) -> str:
    """Why a registered statistic is not in this run, and what would add it (``--road``, a probe with boxes)."""
    import dataclasses

    registered = {s.name: s for s in statistics()}
    if name not in registered:
        return ""
    statistic, has_boxes = registered[name], probe.boxes is not None
    if not settings.config.road and statistic.applies_to(dataclasses.replace(settings.config, road=True), has_boxes):
        return " (it is a ROAD statistic: add --road)"
    if not has_boxes and statistic.applies_to(settings.config, True):
        return (" (it needs a probe with boxes, and this probe has none: save one with boxes, "
                "save_probe(path, images, labels, boxes=...))")
    return " (it does not apply to this run's options)"


def _caption(row: dict[str, Any]) -> str:
    """The HTML caption of an image's panel: ``#2 class 3 (cat)``, marked when its explanation is empty."""
    caption = f"#{row['index']} class {row['target']}" + (f" ({row['target_name']})" if "target_name" in row else "")
    return caption + (f": EMPTY explanation ({row['empty_reason']})" if row.get("empty") else "")


def _read_class_names(path: Path | None) -> ClassNames | None:
    """``--class-names FILE``, read and checked on its own; a bad file is an input error."""
    if path is None:
        return None
    check_input_file(path, "class names")
    try:
        return read_class_names(path)
    except (OSError, TypeError, ValueError) as err:
        raise InputError(f"--class-names: {err}") from err


def _fitting_class_names(names: ClassNames | None, settings: CheckSettings, model: nn.Module, num_classes: int,
                         probe: Probe) -> ClassNames | None:
    """The names to show (:func:`~lightning_igos.class_names.fitting_class_names`): the file's, checked against
    the model and the probe (a misfit is an input error), else the model's attribute when it fits, else None."""
    try:
        return fitting_class_names(names, model, num_classes, probe.targets.tolist(),
                                   what=f"class names in '{settings.class_names}'", indices_what="probe target")
    except ValueError as err:
        raise InputError(f"--class-names: {err}") from err


def check_thresholds(settings: Any) -> None:
    """Thresholds that can be met: raw AUCs lie in [0, 1]; normalised ones are >= 0 (and may exceed 1).

    Example:
        >>> check_thresholds(CheckSettings("m:M", "c", "p", min_insertion=1.5, normalized=True))
        >>> check_thresholds(CheckSettings("m:M", "c", "p", min_insertion=1.5))
        Traceback (most recent call last):
        ...
        lightning_igos.cli.errors.InputError: --min-insertion 1.5 could never pass: raw AUCs lie in [0, 1].
    """
    default_sanity = CheckSettings.__dataclass_fields__["max_sanity_correlation"].default
    if not getattr(settings, "sanity", False) and getattr(settings, "max_sanity_correlation", default_sanity) \
            != default_sanity:
        raise InputError(f"--max-sanity-correlation {settings.max_sanity_correlation:g} is only read with --sanity; "
                         "add --sanity to run the sanity check, or drop it.")
    for option, value in (("--min-insertion", settings.min_insertion), ("--max-deletion", settings.max_deletion)):
        problem = threshold_problem(option, value, settings.normalized)
        if problem is not None:
            raise InputError(problem)
def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when available, else the CPU; an unavailable device is an input error.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"--device {name}: CUDA is not available on this machine (use --device cpu or auto).")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) found.")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"--device {name}: MPS is not available on this machine.")
    return device


def _display_stats_or_none(probe: Probe, model: nn.Module) -> tuple[Any, Any] | None:
    """The display normalisation for the report's overlays when nothing else is drawn; None when it is unusable
    (the report then carries no overlays: only ``--images`` and ``--html`` make it an input error)."""
    try:
        return _display_stats(probe, model)
    except InputError:
        return None


def _shown(probe: Probe, display: tuple[Any, Any]) -> Tensor:
    from lightning_igos.render import unnormalize

    return unnormalize(probe.images, *display)


def _display_stats(probe: Probe, model: nn.Module) -> tuple[Any, Any]:
    """The probe's display normalisation, else the model's ``mean``/``std``; bad ones are an input error."""
    from lightning_igos.render import display_stats

    try:
        return display_stats(probe.mean, probe.std, model, probe.images.shape[1])
    except (TypeError, ValueError) as err:
        raise InputError(f"--model {type(model).__name__}: its display normalisation: {err}".replace("`", "")) \
            from err


def _load_probe_file(path: Path, max_elements: int) -> Probe:
    """``--probe``, read within the cap (``--max-probe-elements``); any problem with it is an input error."""
    try:
        return load_probe(path, max_elements=max_elements)
    except (OSError, TypeError, ValueError) as err:
        raise InputError(str(err)) from err


def check_probe_fits(model: nn.Module, probe: Probe, device: torch.device, settings: CheckSettings) -> Tensor:
    """The one clean forward over the probe: the model must take it and return finite logits covering the targets.

    Returns the logits, which the evaluation reuses (so every probe image goes through the
    model unmodified once). This is all the input validation the model gets: a failure inside
    the explainer or the metrics afterwards is unexpected (exit 3), not an input error.
    """
    images = probe.images.to(device)
    try:
        logits = clean_forward(model, images, settings.config)
    except (Exception, SystemExit) as err:
        raise InputError(
            f"probe '{settings.probe}' (images {tuple(probe.images.shape[1:])}) does not fit --model "
            f"{settings.model}: the forward pass failed with {type(err).__name__}: {err}"
        ) from err
    try:  # the rule every entry point applies (core.validation.check_logits), in the command's words
        check_logits(logits, len(images), probe.targets.to(logits.device), None)
    except (TypeError, ValueError) as err:
        what = str(err).replace("`model`", f"--model {settings.model}").replace("`targets`", "probe targets")
        raise InputError(f"probe '{settings.probe}': {what}".replace("`", "")) from err
    return logits


def explain(model: nn.Module, probe: Probe, device: torch.device, config: IGOSConfig,
            progress: ProgressLine, clean_logits: Tensor | None = None) -> Evaluation:
    """:func:`~lightning_igos.core.evaluation.evaluate` on the probe, with a progress line.

    The inputs were validated before (:func:`check_probe_fits`, whose ``clean_logits`` it
    reuses): any exception from here on, a ``ValueError`` included, is unexpected (exit 3).
    """
    images, targets = probe.images.to(device), probe.targets.to(device)
    explaining, scoring = planned_passes(config, len(probe))
    # The explainer's gradient passes are those run with gradients on; the metrics' all run without.
    totals = {"explaining": (explaining, True), "scoring": (scoring, False)}
    stage = {"with_grad": True}

    def start(name: str) -> None:
        total, stage["with_grad"] = totals[name]
        progress.start(name, total)

    def count(num_images: int, with_grad: bool) -> None:
        if with_grad == stage["with_grad"]:
            progress.advance(num_images)

    try:
        return evaluate(model, images, targets, config, on_stage=start, on_forward=count if progress.enabled else None,
                        boxes=None if probe.boxes is None else probe.boxes.to(device), clean_logits=clean_logits)
    finally:
        progress.finish()
