"""The text table that ``lightning-igos check`` prints: settings, one row per image, means, gates, verdict."""

from __future__ import annotations

from typing import Any

from lightning_igos.cli.compare import comparison_lines
from lightning_igos.cli.html_report import empty_text, sanity_text, verdict_text, warning_lines
from lightning_igos.cli.report import PROG


def table_columns(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    """``(name, label, format)`` of the report's per-image columns: its statistics that have a table label.

    Example:
        >>> table_columns({"statistics": [{"name": "deletion_auc", "label": "deletion AUC", "format": ".4f"},
        ...                               {"name": "mask_min", "label": "", "format": ".4f"}]})
        [('deletion_auc', 'deletion AUC', '.4f')]
    """
    return [(st["name"], st["label"], st["format"]) for st in report.get("statistics") or [] if st.get("label")]


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
        f"  {s['method']}, "
        + (f"{s['iterations']} iterations, {s['ig_steps']} ig steps, mask {mask}, " if s.get("mask_size_used") else "")
        + f"baseline {s['baseline']}, {s['metric_steps']} metric steps, {substrate_text(s)}, seed {s['seed']}",
        "",
        f"{'image':>5}  {'target':>{width}}" + "".join(f"  {label:>{w}}" for _, label, _, w in columns),
    ]
    for row, target in zip(report["images"], targets):
        marker = f"  EMPTY ({row.get('empty_reason')})" if row.get("empty") else ""
        lines.append(f"{row['index']:>5}  {target:>{width}}" + cells(row) + marker)
    lines.append(f"{'mean':>5}  {'':>{width}}" + cells(report["mean"]))
    intervals = report.get("mean_ci") or {}
    for side, label in ((0, "95% CI low"), (1, "95% CI high")):
        if intervals:
            bound = {name: value[side] for name, value in intervals.items()
                     if isinstance(value, (list, tuple)) and value[side] is not None}
            lines.append(f"{label:>{7 + width}}" + cells(bound))
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
    lines.extend(warning_lines(report))
    if report.get("comparison"):
        lines += ["", *comparison_lines(report["comparison"]), ""]
    lines.append(verdict_text(report))
    return "\n".join(lines)
