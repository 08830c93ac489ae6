"""The text table that ``lightning-igos check`` prints: settings, one row per image, means, gates, verdict.

A layout of the :class:`~lightning_igos.cli.report_model.ReportView`, as the HTML page and the Markdown summary are.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lightning_igos.cli.compare import comparison_lines
from lightning_igos.cli.report_model import NO_THRESHOLDS, THRESHOLD_OPTIONS, report_view


def substrate_text(settings: dict[str, Any]) -> str:
    """``"substrate blur"``, or ``"substrate zeros (deletion), blur (insertion)"`` when the curves' differ.

    Example:
        >>> substrate_text({"substrate": None, "deletion_substrate": "zeros", "insertion_substrate": "blur"})
        'substrate zeros (deletion), blur (insertion)'
    """
    deletion = settings.get("deletion_substrate", settings.get("substrate"))
    insertion = settings.get("insertion_substrate", settings.get("substrate"))
    if deletion == insertion:
        return f"substrate {deletion}"
    return f"substrate {deletion} (deletion), {insertion} (insertion)"


def format_table(report: dict[str, Any]) -> str:
    """The text printed by ``check``: settings, one row per image, means, gates, verdict."""
    view = report_view(report)
    s = view.settings
    mask = "x".join(map(str, s["mask_size_used"])) if s.get("mask_size_used") else "none"
    width = max([6, *(len(row.target) for row in view.rows)])
    widths = [max(9, len(column.label)) for column in view.columns]

    def cells(values: Mapping[str, Any]) -> str:
        return "".join(f"  {column.text(values.get(column.name)):>{w}}" for column, w in zip(view.columns, widths))

    lines = [
        f"{view.title}: {s['num_images']} probe images from {s['probe']}, {s['model']} on {s['device']}",
        f"  {s['method']}, "
        + (f"{s['iterations']} iterations, {s['ig_steps']} ig steps, mask {mask}, " if s.get("mask_size_used") else "")
        + f"baseline {s['baseline']}, {s['metric_steps']} metric steps, {substrate_text(s)}, seed {s['seed']}",
        "",
        f"{'image':>5}  {'target':>{width}}" + "".join(f"  {c.label:>{w}}" for c, w in zip(view.columns, widths)),
    ]
    for row in view.rows:
        lines.append(f"{row.index:>5}  {row.target:>{width}}" + cells(row.values)
                     + (f"  {row.explanation}" if row.empty else ""))
    lines.append(f"{'mean':>5}  {'':>{width}}" + cells(view.mean))
    if view.has_intervals:
        for side, label in ((0, "95% CI low"), (1, "95% CI high")):
            lines.append(f"{label:>{7 + width}}" + cells({name: ci[side] for name, ci in view.intervals.items()}))
    lines.append("")
    if not view.thresholds:
        lines.append(f"{NO_THRESHOLDS} ({', '.join(THRESHOLD_OPTIONS)})")
    for t in view.thresholds:
        lines.append(f"{t.label:<36} {t.value_text} {t.op} {t.limit_text:<8} {t.result}")
    if view.empty:
        lines.append(f"{view.empty}: "
                     f"{'allowed by --allow-empty' if view.allow_empty else 'FAIL (--allow-empty accepts them)'}")
    if view.sanity:
        lines.append(view.sanity)
    lines.extend(view.warnings)
    if view.comparison:
        lines += ["", *comparison_lines(view.comparison), ""]
    lines.append(view.verdict)
    return "\n".join(lines)
