"""The JSON report of ``lightning-igos check`` (``--report``)."""

from __future__ import annotations

import hashlib
import json
import math
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

import lightning_igos
from lightning_igos.cli.compare import REPORT_FORMAT, interval_block, mean_intervals
from lightning_igos.cli.errors import InputError
from lightning_igos.cli.outputs import current_run_id, write_bytes
from lightning_igos.cli.settings import CheckSettings, code_sources
from lightning_igos.core.config import SOLVER_FIELDS
from lightning_igos.core.evaluation import Evaluation
from lightning_igos.core.sanity import SanityResult
from lightning_igos.core.statistics import statistics
from lightning_igos.probe import Probe

if TYPE_CHECKING:
    from lightning_igos.class_names import ClassNames

REPORT_VERSION = 1
#: The IGOSConfig fields listed in the report's settings (the metric ones come after mask_size_used).
def _mean(values: Tensor) -> float:
    return float(values.double().mean())


def normalized_exclusions(evaluation: Evaluation) -> tuple[float, list[int]]:
    """The chance level ``1 / num_classes`` and the images whose clean probability is below it.

    A normalised AUC divides by the clean probability; for an image the model scores below chance
    (typically misclassified) that divides by noise: a clean probability of 1.4e-5 turned an
    insertion AUC of 0.48 into 34,548, enough to carry the mean of a whole probe. The check's
    normalised means (``mean``, ``normalized_mean`` and the ``--normalized`` gates) leave those
    images out and the report names them (``normalized_excluded``, ``warnings``); their rows
    keep their values.
    """
    classes = evaluation.num_classes or 1
    floor = 1.0 / max(classes, 1)
    clean = evaluation.curves.clean_score.detach().cpu().double()
    return floor, [int(i) for i in torch.nonzero(clean < floor).flatten().tolist()]


def build_report(
    settings: CheckSettings,
    probe: Probe,
    device: torch.device,
    evaluation: Evaluation,
    elapsed_s: float,
    class_names: ClassNames | None = None,
    sanity: Tensor | SanityResult | None = None,
    overlays: list[str] | None = None,
) -> dict[str, Any]:
    """The JSON report: per-image AUCs, means, thresholds with pass/fail, empty explanations, settings, versions.

    Each image row says whether its explanation is empty (``empty``, and ``empty_reason``: one of
    :data:`~lightning_igos.core.solver.EMPTY_REASONS`, or None); the report counts them
    (``num_empty``, ``empty_by_reason``) and fails (``passed`` False) when there is one,
    unless ``settings.allow_empty``. With ``class_names`` each image row carries
    ``target_name`` (when its class is named) and the report the names as ``class_names``
    (index -> name). Each image row and ``mean`` carry every registered statistic that applies
    to the run (:mod:`lightning_igos.core.statistics`: with ``road`` also ``road_morf``,
    ``road_lerf`` and ``road_gap``, with probe boxes ``pointing``), and ``statistics`` describes
    them (name, table label, format, which way is better) for the tables. With ``sanity`` (the
    :class:`~lightning_igos.core.sanity.SanityResult` of ``--sanity``, or its per-image Spearman correlations)
    the report carries a ``sanity`` object (:func:`sanity_report`: ``mean_correlation``, ``correlation``,
    ``max_correlation``, ``num_empty``, ``empty``, ``reinitialized``, ``passed``), and fails when it did not pass.

    ``mean_ci`` holds the 95% interval of every mean (a seeded bootstrap over the probe images,
    described by ``interval``); ``settings.probe_sha256`` identifies the probe (:func:`probe_digest`),
    so a later run can be compared with this one (``check --baseline-report``, ``lightning-igos compare``).
    ``overlays`` (base64 PNGs, one per image: :func:`overlay_thumbnails`) go into the report as is.
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
    floor, excluded = normalized_exclusions(evaluation)
    if excluded:  # the normalised means leave out the images the model scores below chance
        kept = torch.ones(len(probe), dtype=torch.bool)
        kept[excluded] = False
        for name, values in per_image.items():
            if name.endswith("_normalized"):
                mean[name] = _mean(values[kept]) if bool(kept.any()) else math.nan
    normalized_mean = {name: mean[f"{name}_normalized"] for name in ("insertion_auc", "deletion_auc")}
    thresholds = evaluate_thresholds(settings, mean)
    num_empty = sum(empty)
    config = settings.config
    options = config.as_dict()
    solver = {name: options[name] for name in SOLVER_FIELDS}  # dtypes and callables as text
    sanity_block = None if sanity is None else sanity_report(
        sanity, settings.max_sanity_correlation, allow_empty=settings.allow_empty)
    softmax_classes = evaluation.num_classes if config.score_fn is None else None
    report_warnings = [text for text in (_substrate_warning(every, softmax_classes),) if text]
    if excluded:
        report_warnings.append(
            f"{len(excluded)} of {len(probe)} images (index {', '.join(map(str, excluded[:10]))}"
            f"{', ...' if len(excluded) > 10 else ''}) have a clean probability below chance (1/{round(1 / floor)}"
            f" = {floor:.4g}): their normalised AUCs (AUC / clean probability) are left out of the normalised means")
    return {
        "format": REPORT_FORMAT,
        "version": REPORT_VERSION,
        "run_id": current_run_id(),  # the check's run (cli.outputs.one_run): its other outputs carry it too
        "normalized_excluded": {"floor": floor, "images": excluded},  # left out of the normalised means
        "passed": all(t["passed"] for t in thresholds) and (num_empty == 0 or settings.allow_empty)
        and (sanity_block is None or sanity_block["passed"]),
        "thresholds": thresholds,
        "num_empty": num_empty,
        "empty_by_reason": dict(sorted(by_reason.items(), key=lambda item: (-item[1], item[0]))),
        "mean": mean,
        "mean_ci": mean_intervals(images, list(per_image), left_out={name: excluded for name in per_image
                                                                     if name.endswith("_normalized")}),
        "interval": interval_block(),
        "normalized_mean": normalized_mean,
        "warnings": report_warnings,
        "statistics": [{"name": st.name, "label": st.label, "format": st.fmt, "higher_is_better": st.higher_is_better}
                       for st in reported],
        "images": images,
        "settings": {
            "model": settings.model,
            **code_sources(settings),  # the --plugin modules and the explainer's defining module
            "checkpoint": str(settings.checkpoint),
            "probe": str(settings.probe),
            "probe_sha256": probe_digest(probe.images, probe.targets),
            "num_images": len(probe),
            "image_shape": list(probe.images.shape[1:]),
            "device": str(device),
            **solver,
            "mask_size_used": None if evaluation.explanation.mask is None
            else list(evaluation.explanation.mask.shape[-2:]),
            "metric_steps": config.metric_steps,
            "substrate": config.substrate,
            **dict(zip(("deletion_substrate", "insertion_substrate"), config.curve_substrates())),
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
        **({} if overlays is None else {"overlays": overlays}),
    }


def _substrate_warning(per_image: dict[str, Tensor], num_classes: int | None) -> str | None:
    from lightning_igos.core.causal import substrate_warning

    scores = per_image.get("substrate_score")
    return None if scores is None else substrate_warning(scores, clean_scores=per_image.get("clean_score"),
                                                          num_classes=num_classes)


def probe_digest(images: Tensor, targets: Tensor) -> str:
    """The sha256 of a probe's images and targets (each one's dtype, shape and bytes): its identity in reports.

    Example:
        >>> a = probe_digest(torch.zeros(2, 3, 4, 4), torch.tensor([0, 1]))
        >>> a == probe_digest(torch.zeros(2, 3, 4, 4), torch.tensor([0, 1])), a == probe_digest(
        ...     torch.zeros(2, 3, 4, 4), torch.tensor([1, 1]))
        (True, False)
    """
    digest = hashlib.sha256()
    for tensor in (images, targets):
        data = tensor.detach().cpu().contiguous()
        digest.update(f"{data.dtype}{tuple(data.shape)};".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


#: The longest side of the overlays a report carries (they are shown side by side against a baseline).
OVERLAY_SIDE = 64


def overlay_thumbnails(shown: Tensor, saliency: Tensor) -> list[str]:
    """One small base64 PNG per image: the saliency over the displayed image, at most :data:`OVERLAY_SIDE` px.

    Example:
        >>> len(overlay_thumbnails(torch.rand(2, 3, 8, 8), torch.rand(2, 1, 8, 8)))
        2
    """
    import base64

    import torch.nn.functional as F

    from lightning_igos.render import overlay, png_bytes

    pictures = overlay(shown.detach().cpu().float(), saliency.detach().cpu().float())
    height, width = pictures.shape[-2:]
    scale = OVERLAY_SIDE / max(height, width)
    if scale < 1:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        pictures = F.interpolate(pictures, size=size, mode="area")
    return [base64.b64encode(png_bytes(picture.clamp(0, 1))).decode("ascii") for picture in pictures]


def sanity_report(correlation: Tensor | SanityResult, max_correlation: float, *,
                  allow_empty: bool = False) -> dict[str, Any]:
    """The report's ``sanity`` object: the mean and per-image Spearman correlations, the limit, pass/fail,
    the images without a correlation and the re-initialised modules.

    ``correlation``: a :class:`~lightning_igos.core.sanity.SanityResult`, or its per-image correlations.
    An image whose explanation is empty on either model has no correlation (NaN, ``null`` in the JSON,
    listed in ``empty``); the mean is over the others. The check fails when no image has a
    correlation (``mean_correlation`` NaN), and when any lacks one unless ``allow_empty``.

    Example:
        >>> sanity_report(torch.tensor([0.25, 0.5]), 0.5)["mean_correlation"]
        0.375
        >>> block = sanity_report(torch.tensor([float("nan"), float("nan")]), 0.5)
        >>> block["mean_correlation"], block["empty"], block["passed"]
        (nan, [0, 1], False)
    """
    reinitialized: list[str] = []
    if isinstance(correlation, SanityResult):
        reinitialized = list(correlation.reinitialized)
        correlation = correlation.correlation
    values = correlation.detach().cpu().double()
    undefined = torch.isnan(values)
    mean = _mean(values[~undefined]) if bool((~undefined).any()) else math.nan
    empty = [int(i) for i in undefined.nonzero().flatten().tolist()]
    passed = not math.isnan(mean) and mean <= max_correlation and (not empty or allow_empty)
    return {"mean_correlation": mean, "correlation": [float(v) for v in values.tolist()],
            "max_correlation": float(max_correlation), "num_empty": len(empty), "empty": empty,
            "reinitialized": reinitialized, "passed": bool(passed)}


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
