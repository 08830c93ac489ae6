"""The check's report as one self-contained HTML page and as a Markdown summary.

Layouts of the :class:`~lightning_igos.cli.report_model.ReportView` of the JSON report of
``lightning-igos check`` (the dict it writes with ``--report``), and the panel images:
:func:`render_html` gives a page with every image embedded as a base64 ``data:`` URI (it opens
from a downloaded CI artifact, offline, in any browser; the panels, mostly photographs, as JPEG
when that is smaller, else PNG: :func:`lightning_igos.render.notebook.image_data_uri`),
:func:`render_markdown` the summary that :func:`append_step_summary` appends to GitHub Actions'
``$GITHUB_STEP_SUMMARY``. Text is escaped with :func:`html.escape`; PNGs are encoded by Pillow,
JPEGs by torchvision.

Example:
    >>> report = {"passed": True, "thresholds": [], "images": [], "mean": {}, "normalized_mean": {},
    ...           "settings": {"model": "m:Net"}}
    >>> "PASS" in render_html(report, panels=[])
    True
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from lightning_igos.cli.compare import comparison_html, comparison_markdown
from lightning_igos.cli.outputs import append_summary_text
from lightning_igos.cli.report_model import (
    CHECK_TITLE,
    NO_THRESHOLDS,
    PAGE_STYLE,
    THRESHOLD_OPTIONS,
    Column,
    number_text,
    report_view,
)
from lightning_igos.cli.report_model import (
    markdown_text as _md,
)
from lightning_igos.render import png_bytes
from lightning_igos.render.notebook import image_data_uri

__all__ = ["append_step_summary", "png_base64", "render_html", "render_markdown"]


# ----------------------------------------------------------------------------- pieces


def png_base64(image: Tensor) -> str:
    """A (3, H, W) (or grey (1, H, W)) image in [0, 1] as base64-encoded PNG bytes
    (:func:`lightning_igos.render.png_bytes`; a grey image stays one-channel).

    Example:
        >>> import torch
        >>> base64.b64decode(png_base64(torch.rand(3, 4, 4)))[:4]
        b'\\x89PNG'
    """
    if not isinstance(image, Tensor) or image.dim() != 3 or image.shape[0] not in (1, 3):
        shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise ValueError(f"an image to embed must be shaped (3, H, W) or (1, H, W), got {shape}.")
    return base64.b64encode(png_bytes(image)).decode("ascii")


def _directions(columns: Sequence[Column]) -> str:
    """``insertion AUC: higher is better. ...`` for the columns that have a better direction."""
    return " ".join(f"{column.label}: {'higher' if column.higher_is_better else 'lower'} is better."
                    for column in columns if column.higher_is_better is not None)


def _setting_text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "x".join(str(v) for v in value) if all(isinstance(v, int) for v in value) else str(list(value))
    return str(value)


def _ci_text(interval: tuple[Any, Any] | None, column: Column) -> str:
    """``0.3120 - 0.4410``: a mean's 95% interval, or ``""``."""
    if interval is None:
        return ""
    return f"{column.text(interval[0]) or 'nan'} - {column.text(interval[1]) or 'nan'}"


# ----------------------------------------------------------------------------- HTML


def render_html(
    report: Mapping[str, Any],
    panels: Sequence[tuple[str, Tensor]],
    overlays: Tensor | None = None,
    title: str = CHECK_TITLE,
    baseline: Mapping[str, Any] | None = None,
) -> str:
    """One self-contained HTML page: verdict, thresholds, per-image table, panels, settings.

    Args:
        report: the check's report dict (``passed``, ``thresholds``, ``images``, ``mean``,
            ``normalized_mean``, ``settings``, optionally ``versions``, ``elapsed_s``,
            ``class_names``); rows may carry ``target_name``.
        panels: ``(caption, image)`` per probe image, images (3, H, W) in [0, 1].
        overlays: the overlay grid of all probe images, or None.
        title: the page title.
        baseline: the baseline report of the ``comparison`` (``check --baseline``): its overlays are shown
            beside this run's.

    Returns:
        The page as a string; every image is a ``data:image/jpeg;base64`` or ``data:image/png;base64`` URI, there
        is no script and no external resource.
    """
    e = html.escape
    view = report_view(report, title)
    settings = view.settings
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(title)}: {e(view.verdict)}</title>",
        f"<style>{PAGE_STYLE}</style></head><body>",
        f"<h1>{e(title)}</h1>",
    ]
    summary = []
    if "num_images" in settings:
        summary.append(f"{settings['num_images']} probe images")
    if "probe" in settings:
        summary.append(f"from {settings['probe']}")
    if "model" in settings:
        summary.append(f"model {settings['model']}")
    if "device" in settings:
        summary.append(f"on {settings['device']}")
    if summary:
        parts.append(f"<p>{e(', '.join(summary))}</p>")
    parts.append(f'<p id="verdict" class="verdict {"pass" if view.passed else "fail"}">{e(view.verdict)}</p>')
    if view.sanity:
        parts.append(f'<p id="sanity">{e(view.sanity)}: the Spearman rank correlation between the explanations '
                     'of the model and of a copy with its head and last blocks re-initialised.</p>')
    for line in view.warnings:
        parts.append(f'<p class="warning">{e(line)}</p>')
    if view.empty:
        parts.append(f'<p id="empty">{e(view.empty)}: their heatmaps rank nothing and their AUCs say nothing about '
                     f'the model{" (allowed by --allow-empty)" if view.allow_empty else ""}.</p>')

    # Thresholds.
    parts.append('<h2>Thresholds</h2>')
    if view.thresholds:
        parts.append('<table id="thresholds"><tr><th>threshold</th><th>value</th><th></th><th>limit</th>'
                     '<th>result</th></tr>')
        for t in view.thresholds:
            row_class = "" if t.passed else ' class="fail"'
            parts.append(
                f"<tr{row_class}><td>{e(t.label)}</td>"
                f"<td class=\"num\">{t.value_text}</td><td>{e(t.op)}</td><td class=\"num\">{e(t.limit_text)}</td>"
                f"<td>{t.result}</td></tr>"
            )
        parts.append("</table>")
    else:
        options = ", ".join(f"<code>{option}</code>" for option in THRESHOLD_OPTIONS)
        parts.append(f"<p>{NO_THRESHOLDS.capitalize()} ({options}).</p>")

    if view.comparison:
        parts += comparison_html(view.comparison, baseline, report)

    # Per-image table.
    columns, flagged = view.columns, view.explanation_column
    parts.append("<h2>Probe images</h2>")
    parts.append('<table id="images"><tr><th>image</th><th>target</th>'
                 + "".join(f"<th>{e(column.label)}</th>" for column in columns)
                 + ("<th>explanation</th>" if flagged else "") + "</tr>")
    for row in view.rows:
        cells = "".join(f'<td class="num">{e(row.cell(column))}</td>' for column in columns)
        if flagged:
            cells += f"<td>{e(row.explanation)}</td>"
        row_class = ' class="fail empty"' if row.empty else ""
        parts.append(f'<tr{row_class}><td class="num">{e(str(row.index))}</td><td>{e(row.target)}</td>{cells}</tr>')
    if view.has_mean:
        cells = "".join(f'<td class="num">{e(view.mean_cell(column))}</td>' for column in columns)
        parts.append(f'<tr class="mean"><td>mean</td><td></td>{cells}{"<td></td>" if flagged else ""}</tr>')
    if view.has_intervals:
        cells = "".join(f'<td class="num">{e(_ci_text(view.intervals.get(column.name), column))}</td>'
                        for column in columns)
        parts.append(f'<tr class="ci"><td>95% CI</td><td></td>{cells}{"<td></td>" if flagged else ""}</tr>')
    parts.append("</table>")
    parts.append(f"<p>{e(_directions(columns))} (norm.): each curve divided by the image's clean probability."
                 + (" ROAD gap: LeRF - MoRF." if any(column.name == "road_gap" for column in columns) else "")
                 + "</p>")

    # Panels.
    parts.append("<h2>Explanations</h2>")
    if panels:
        parts.append('<p id="panel-key">Each panel: the image, its heatmap, what the map claims (the image with only '
                     "the map's top pixels kept, the rest from the insertion curve's substrate: that curve's point, "
                     "with its share of pixels and the model's score on it) and the insertion (blue) and deletion "
                     "(vermillion) curves. A map on the object keeps the object's telling parts and gets the score "
                     "back; the needed fraction is the share of top pixels that gives back half the clean score.</p>")
    parts.append('<div id="panels">')
    for i, (caption, image) in enumerate(panels):
        parts.append(
            f'<figure class="panel"><img id="panel-{i}" alt="{e(caption, quote=True)}" '
            f'src="{image_data_uri(image)}"><figcaption>{e(caption)}</figcaption></figure>'
        )
    parts.append("</div>")
    if overlays is not None:
        parts.append(
            '<h2>All overlays</h2><figure><img id="overlays" alt="overlays of all probe images" '
            f'src="{image_data_uri(overlays)}"></figure>'
        )

    # Settings, class names, versions.
    parts.append('<h2>Settings</h2><table id="settings">')
    for key, value in settings.items():
        parts.append(f"<tr><th>{e(str(key))}</th><td>{e(_setting_text(value))}</td></tr>")
    if "elapsed_s" in report:
        parts.append(f"<tr><th>elapsed</th><td>{e(number_text(report['elapsed_s'], '.1f'))} s</td></tr>")
    for key, value in (report.get("versions") or {}).items():
        parts.append(f"<tr><th>{e(str(key))} version</th><td>{e(str(value))}</td></tr>")
    if view.run_id:  # the check's run: its JSON report and panel manifest carry the same id
        parts.append(f'<tr><th>run id</th><td id="run-id">{e(str(view.run_id))}</td></tr>')
    parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# ----------------------------------------------------------------------------- Markdown


def render_markdown(report: Mapping[str, Any], title: str = CHECK_TITLE) -> str:
    """A Markdown summary: a verdict heading, the thresholds and the per-image table.

    Example:
        >>> print(render_markdown({"passed": True, "thresholds": [], "images": [
        ...     {"index": 0, "target": 3, "target_name": "cat", "insertion_auc": 0.5}],
        ...     "statistics": [{"name": "insertion_auc", "label": "insertion AUC", "format": ".4f"}]}))
        ## lightning-igos check: PASS (no thresholds given)
        <BLANKLINE>
        No thresholds given (`--min-insertion`, `--max-deletion`, `--require`).
        <BLANKLINE>
        | image | target | insertion AUC |
        | ---: | --- | ---: |
        | 0 | 3 (cat) | 0.5000 |
        <BLANKLINE>
    """
    view = report_view(report, title)
    mark = "" if view.passed else ":x: "
    lines = [f"## {_md(title)}: {mark}{_md(view.verdict)}", ""]
    if view.run_id:  # the check's run: its JSON report and panel manifest carry the same id
        lines += [f"<sub>run {_md(str(view.run_id))}</sub>", ""]
    settings = view.settings
    if "model" in settings and "num_images" in settings:
        lines += [f"{settings['num_images']} probe images, model `{_md(settings['model'])}`"
                  f"{', ' + _md(settings['device']) if 'device' in settings else ''}.", ""]
    if view.thresholds:
        lines += ["| threshold | value | limit | result |", "| --- | ---: | ---: | --- |"]
        for t in view.thresholds:
            lines.append(f"| {_md(t.label)} | {t.value_text} | {_md(t.op)} {t.limit_text} | "
                         f"{'pass' if t.passed else '**FAIL**'} |")
        lines.append("")
    else:
        lines += [f"{NO_THRESHOLDS.capitalize()} ({', '.join(f'`{option}`' for option in THRESHOLD_OPTIONS)}).", ""]
    if view.sanity:
        lines += [f"{'' if view.sanity_passed else ':x: '}{_md(view.sanity)}", ""]
    for line in view.warnings:
        lines += [f":warning: {_md(line)}", ""]
    if view.empty:
        allowed = view.allow_empty
        lines += [f"{'' if allowed else ':x: '}{_md(view.empty)}{' (allowed by --allow-empty)' if allowed else ''}.",
                  ""]
    columns, flagged = view.columns, view.explanation_column
    if view.rows:
        lines.append("| image | target | " + " | ".join(column.label for column in columns)
                     + (" | explanation" if flagged else "") + " |")
        lines.append("| ---: | --- | " + " | ".join("---:" for _ in columns) + (" | ---" if flagged else "") + " |")
        for row in view.rows:
            cells = " | ".join(row.cell(column) for column in columns)
            if flagged:
                cells += f" | {'**' + _md(row.explanation) + '**' if row.empty else _md(row.explanation)}"
            lines.append(f"| {row.index} | {_md(row.target)} | {cells} |")
        if view.has_mean:
            cells = " | ".join(f"**{view.mean_cell(column)}**" for column in columns)
            lines.append(f"| **mean** | | {cells}{' |' if flagged else ''} |")
        if view.has_intervals:
            cells = " | ".join(_ci_text(view.intervals.get(column.name), column) for column in columns)
            lines.append(f"| 95% CI | | {cells}{' |' if flagged else ''} |")
        lines.append("")
    if view.comparison:
        lines += comparison_markdown(view.comparison)
    return "\n".join(lines)


def append_step_summary(report: Mapping[str, Any], path: str | os.PathLike | None = None) -> Path | None:
    """Append :func:`render_markdown` to ``path``, by default ``$GITHUB_STEP_SUMMARY``; None if unset.

    Example:
        >>> import tempfile
        >>> summary = Path(tempfile.mkdtemp()) / "summary.md"
        >>> _ = append_step_summary({"passed": True, "thresholds": []}, summary)
        >>> summary.read_text().splitlines()[0]
        '## lightning-igos check: PASS (no thresholds given)'
    """
    return append_summary_text(render_markdown(report) + "\n", path)


# ----------------------------------------------------------------------------- files


def write_html(path: Path, report: Mapping[str, Any], panels: Sequence[tuple[str, Tensor]],
               overlays: Tensor | None = None, baseline: Mapping[str, Any] | None = None) -> Path:
    """Write :func:`render_html` to ``path`` (UTF-8, atomically: :func:`~lightning_igos.cli.outputs.write_bytes`)."""
    from lightning_igos.cli.errors import InputError
    from lightning_igos.cli.outputs import write_bytes

    try:
        write_bytes(path, render_html(report, panels, overlays, baseline=baseline).encode("utf-8"))
    except OSError as err:
        raise InputError(f"cannot write the HTML report to '{path}': {err}") from err
    return path
