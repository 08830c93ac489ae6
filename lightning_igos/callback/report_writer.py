"""``IGOSCallback.save_report``: the last explained epoch as a report of ``lightning-igos check``.

The run that trained the model becomes the baseline of later checks (``check --baseline-report``,
``lightning-igos compare``) without a second explanation pass. The report is built by the
check's own :func:`~lightning_igos.cli.report.build_report`, from what the callback kept of its
last explained epoch (:class:`ExplainedRun`), so both write the same format: the same
statistics per image, means with their intervals, the probe's hash, the options and versions.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from lightning_igos.callback.outputs import ShareResult

__all__ = ["ExplainedRun", "callback_report", "explained_run"]


@dataclass
class ExplainedRun:
    """What a report needs of one explained epoch: every probe image's results, in probe order."""

    epoch: int
    shares: list[ShareResult]
    mask_size_used: tuple[int, int] | None
    device: str
    seconds: float
    model: str
    display: tuple[Any, Any] = (None, None)
    class_names: Any = None
    num_classes: int | None = None


def explained_run(trainer: Any, pl_module: Any, result: ShareResult | None, reports: list[Any],
                  mask_size_used: tuple[int, int] | None, display: tuple[Any, Any],
                  class_names: Any, num_classes: int | None = None) -> ExplainedRun | None:
    """The run to keep after an explained epoch, or None when some rank's results did not reach this one
    (under DDP they are gathered only with ``log_images=True``)."""
    if result is None:
        return None
    if trainer.world_size == 1:
        shares = [result]
    else:
        shares = [r.result for r in reports]
        if any(share is None for share in shares):
            return None
    cls = type(pl_module)
    return ExplainedRun(epoch=int(trainer.current_epoch), shares=shares, mask_size_used=mask_size_used,
                        device=str(pl_module.device), seconds=sum(s.seconds for s in shares),
                        model=f"{cls.__module__}:{cls.__qualname__}", display=display, class_names=class_names,
                        num_classes=num_classes)


def callback_report(callback: Any, run: ExplainedRun, checkpoint: str | os.PathLike | None = None,
                    probe_name: str | None = None) -> dict[str, Any]:
    """The check's JSON report of ``run`` (see :func:`~lightning_igos.cli.report.build_report`)."""
    from lightning_igos.cli.report import build_report, overlay_thumbnails
    from lightning_igos.cli.settings import CheckSettings
    from lightning_igos.core.statistics import statistics
    from lightning_igos.probe import Probe
    from lightning_igos.render import unnormalize

    order = torch.cat([share.indices for share in run.shares]).argsort()
    targets = torch.cat([share.targets for share in run.shares])[order]
    names = [st.name for st in statistics(callback.config, callback.store.boxes is not None) if st.in_report]
    per_image = {name: torch.cat([share.stats[name] for share in run.shares])[order] for name in names}
    empty = torch.cat([share.empty for share in run.shares])[order]
    reasons_all = [reason for share in run.shares for reason in share.empty_reasons]
    reasons = [reasons_all[i] for i in order.tolist()]
    saliency = torch.cat([share.saliency for share in run.shares])[order]
    images = callback.store.images
    probe = Probe(images, targets, boxes=callback.store.boxes)
    mask = None if run.mask_size_used is None else torch.empty(0, 1, *run.mask_size_used)
    # What build_report reads of an Evaluation, from the kept per-image results.
    evaluation = SimpleNamespace(per_image=lambda: per_image, empty=empty, empty_reasons=reasons,
                                 boxes=callback.store.boxes, explanation=SimpleNamespace(mask=mask),
                                 num_classes=run.num_classes,
                                 curves=SimpleNamespace(clean_score=torch.cat([s.curves.clean_score
                                                                               for s in run.shares])[order]))
    settings = CheckSettings(model=run.model, checkpoint=Path(checkpoint or f"(training run, epoch {run.epoch})"),
                             probe=Path(probe_name or f"(IGOSCallback prefix {callback.prefix!r} probe)"),
                             device=run.device if run.device in ("cpu", "mps") else "auto", config=callback.config)
    try:
        overlays = overlay_thumbnails(unnormalize(images, *run.display), saliency)
    except (TypeError, ValueError):  # display statistics that do not fit: the report carries no overlays
        overlays = None
    report = build_report(settings, probe, torch.device(run.device), evaluation, run.seconds,
                          class_names=run.class_names, overlays=overlays)
    report["settings"]["epoch"] = run.epoch
    return report
