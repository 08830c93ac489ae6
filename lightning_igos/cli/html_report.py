"""The check's report as one self-contained HTML page and as a Markdown summary.

Pure functions of the JSON report of ``lightning-igos check`` (the dict it writes with
``--report``) and of the panel images: :func:`render_html` gives a page with every image
embedded as a base64 ``data:`` URI (it opens from a downloaded CI artifact, offline, in any
browser; the panels, mostly photographs, as JPEG when that is smaller, else PNG:
:func:`lightning_igos.render.notebook.image_data_uri`), :func:`render_markdown` the summary that
:func:`append_step_summary` appends to GitHub Actions' ``$GITHUB_STEP_SUMMARY``. Text is escaped
with :func:`html.escape`; PNGs are encoded by Pillow, JPEGs by torchvision.

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
from lightning_igos.render import png_bytes
from lightning_igos.render.notebook import image_data_uri

__all__ = ["append_step_summary", "empty_text", "png_base64", "render_html", "render_markdown", "sanity_text",
           "verdict_text"]

SUMMARY_VARIABLE = "GITHUB_STEP_SUMMARY"

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2em auto; max-width: 1100px;
       padding: 0 1em; color: #1b1b1b; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
.verdict { display: inline-block; padding: .3em .8em; border-radius: .3em; font-weight: bold; font-size: 1.3em;
           color: white; }
.verdict.pass { background: #1a7f37; } .verdict.fail { background: #cf222e; }
table { border-collapse: collapse; margin: .5em 0; }
th, td { border: 1px solid #d0d7de; padding: .25em .6em; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.fail td { background: #ffebe9; } tr.mean td { font-weight: bold; }
figure { display: inline-block; margin: .5em; vertical-align: top; }
figure img { image-rendering: pixelated; max-width: 100%; border: 1px solid #d0d7de; }
figcaption { font-size: .9em; color: #57606a; }
tr.ci td { color: #57606a; font-size: .9em; }
img.thumb { width: 128px; image-rendering: pixelated; border: 1px solid #d0d7de; }
""".strip()


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


def empty_text(report: Mapping[str, Any]) -> str:
    """``"3 of 8 explanations are empty (mask never moved: 3)"``, or ``""`` when none is.

    Example:
        >>> empty_text({"images": [{"empty": True, "empty_reason": "mask never moved"}, {"empty": False}]})
        '1 of 2 explanations is empty (mask never moved: 1)'
    """
    rows = report.get("images") or []
    reasons: dict[str, int] = {}
    for row in rows:
        if row.get("empty"):
            reason = str(row.get("empty_reason") or "empty explanation")
            reasons[reason] = reasons.get(reason, 0) + 1
    count = sum(reasons.values())
    if not count:
        return ""
    listed = ", ".join(f"{reason}: {n}" for reason, n in sorted(reasons.items(), key=lambda item: (-item[1], item[0])))
    verb = "is" if count == 1 else "are"
    return f"{count} of {len(rows)} explanations {verb} empty ({listed})"


def _sanity_failure(sanity: Mapping[str, Any]) -> str:
    mean, limit = sanity.get("mean_correlation"), sanity.get("max_correlation")
    if mean is None or mean != mean:  # None in the JSON, NaN before it
        return "the sanity check has no correlation (every image has an empty explanation)"
    if limit is not None and mean > limit:
        return "the sanity check failed (the explanations barely change when the model is randomised)"
    return f"the sanity check has no correlation for {sanity.get('num_empty')} images (an explanation is empty)"


def sanity_text(report: Mapping[str, Any]) -> str:
    """The ``--sanity`` line, or ``""`` when the report has no ``sanity`` object.

    Example:
        >>> sanity_text({"sanity": {"mean_correlation": 0.2, "max_correlation": 0.5, "passed": True}})
        'sanity (model randomisation): mean Spearman 0.2000 <= 0.5 pass'
    """
    sanity = report.get("sanity")
    if not sanity:
        return ""
    mean = sanity.get("mean_correlation")
    shown = "nan" if mean is None else f"{mean:.4f}"
    verdict = "pass" if sanity.get("passed") else "FAIL"
    line = f"sanity (model randomisation): mean Spearman {shown} <= {sanity.get('max_correlation'):g} {verdict}"
    if sanity.get("num_empty"):
        line += (f"; {sanity['num_empty']} of {len(sanity.get('correlation', []))} images have no correlation "
                 "(an explanation is empty)")
    names = list(sanity.get("reinitialized") or [])
    if names:
        shown_names = ", ".join(names) if len(names) <= 3 else f"{names[0]}, ..., {names[-1]}"
        line += f" (re-initialised {len(names)} module{'s' if len(names) > 1 else ''}: {shown_names})"
    return line


def warning_lines(report: Mapping[str, Any]) -> list[str]:
    """The report's warnings (``warnings``: e.g. a substrate that kept the evidence), each ``"warning: ..."``.

    Example:
        >>> warning_lines({"warnings": ["the substrate kept the evidence"]})
        ['warning: the substrate kept the evidence']
    """
    return [f"warning: {text}" for text in report.get("warnings") or []]


def verdict_text(report: Mapping[str, Any]) -> str:
    """``PASS``, ``FAIL: 1 of 2 thresholds failed``, ``PASS (no thresholds given)``, ``FAIL: 3 of 8 explanations ...``.

    Empty explanations fail the verdict unless the report's settings say ``allow_empty``.

    Example:
        >>> verdict_text({"passed": False, "thresholds": [{"passed": False}, {"passed": True}]})
        'FAIL: 1 of 2 thresholds failed'
        >>> verdict_text({"passed": False, "thresholds": [], "images": [{"empty": True,
        ...               "empty_reason": "non-finite gradient"}]})
        'FAIL: 1 of 1 explanations is empty (non-finite gradient: 1)'
    """
    thresholds = report.get("thresholds") or []
    empty = empty_text(report)
    allowed = bool((report.get("settings") or {}).get("allow_empty", False))
    if report.get("passed", True):
        verdict = "PASS" if thresholds else "PASS (no thresholds given)"
        return f"{verdict}; {empty}, allowed by --allow-empty" if empty and allowed else verdict
    failures = []
    failed = sum(1 for t in thresholds if not t.get("passed"))
    if failed:
        failures.append(f"{failed} of {len(thresholds)} thresholds failed")
    if empty and not allowed:
        failures.append(empty)
    sanity = report.get("sanity")
    if sanity and not sanity.get("passed"):
        failures.append(_sanity_failure(sanity))
    comparison = report.get("comparison")
    if comparison and comparison.get("failed"):
        failures.append(f"worse than the baseline by more than the margin: {', '.join(comparison['failed'])}")
    return "FAIL: " + ("; ".join(failures) or "see the report")


def _threshold_label(t: Mapping[str, Any]) -> str:
    metric = str(t.get("metric", "")).replace("_auc", " AUC").replace("_", " ")
    return f"mean {metric}{' (normalized)' if t.get('normalized') else ''}"


def _target_label(row: Mapping[str, Any]) -> str:
    name = row.get("target_name")
    return f"{row['target']} ({name})" if name else str(row["target"])


def _number(value: Any, fmt: str = "{:.4f}") -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return fmt.format(value)
    return "" if value is None else str(value)


def _columns(report: Mapping[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    """``(name, header, format, higher_is_better)`` of the per-image columns: the report's labelled statistics."""
    return [(st["name"], st["label"], "{:" + st.get("format", ".4f") + "}", st.get("higher_is_better"))
            for st in report.get("statistics") or [] if st.get("label")]


def _directions(columns: Sequence[tuple[str, str, str, bool | None]]) -> str:
    """``insertion AUC: higher is better. ...`` for the columns that have a better direction."""
    return " ".join(f"{label}: {'higher' if better else 'lower'} is better." for _, label, _, better in columns
                    if better is not None)


def _setting_text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "x".join(str(v) for v in value) if all(isinstance(v, int) for v in value) else str(list(value))
    return str(value)


# ----------------------------------------------------------------------------- HTML


def render_html(
    report: Mapping[str, Any],
    panels: Sequence[tuple[str, Tensor]],
    overlays: Tensor | None = None,
    title: str = "lightning-igos check",
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
    passed = bool(report.get("passed", True))
    verdict = verdict_text(report)
    settings = report.get("settings") or {}
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(title)}: {e(verdict)}</title>",
        f"<style>{_STYLE}</style></head><body>",
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
    parts.append(f'<p id="verdict" class="verdict {"pass" if passed else "fail"}">{e(verdict)}</p>')
    sanity_line = sanity_text(report)
    if sanity_line:
        parts.append(f'<p id="sanity">{e(sanity_line)}: the Spearman rank correlation between the explanations '
                     'of the model and of a copy with its head and last blocks re-initialised.</p>')
    for line in warning_lines(report):
        parts.append(f'<p class="warning">{e(line)}</p>')
    empty = empty_text(report)
    if empty:
        allowed = bool(settings.get("allow_empty", False))
        parts.append(f'<p id="empty">{e(empty)}: their heatmaps rank nothing and their AUCs say nothing about the '
                     f'model{" (allowed by --allow-empty)" if allowed else ""}.</p>')

    # Thresholds.
    parts.append('<h2>Thresholds</h2>')
    thresholds = report.get("thresholds") or []
    if thresholds:
        parts.append('<table id="thresholds"><tr><th>threshold</th><th>value</th><th></th><th>limit</th>'
                     '<th>result</th></tr>')
        for t in thresholds:
            row_class = "" if t.get("passed") else ' class="fail"'
            parts.append(
                f"<tr{row_class}><td>{e(_threshold_label(t))}</td><td class=\"num\">{_number(t.get('value'))}</td>"
                f"<td>{e(str(t.get('op', '')))}</td><td class=\"num\">{e(_number(t.get('limit'), '{:g}'))}</td>"
                f"<td>{'pass' if t.get('passed') else 'FAIL'}</td></tr>"
            )
        parts.append("</table>")
    else:
        parts.append("<p>No thresholds given (<code>--min-insertion</code>, <code>--max-deletion</code>).</p>")

    if report.get("comparison"):
        parts += comparison_html(report["comparison"], baseline, report)

    # Per-image table.
    columns = _columns(report)
    flagged = _has_empty_column(report)
    parts.append("<h2>Probe images</h2>")
    parts.append('<table id="images"><tr><th>image</th><th>target</th>'
                 + "".join(f"<th>{e(header)}</th>" for _, header, _, _ in columns)
                 + ("<th>explanation</th>" if flagged else "") + "</tr>")
    for row in report.get("images") or []:
        cells = "".join(f'<td class="num">{e(_number(row.get(key), fmt))}</td>' for key, _, fmt, _ in columns)
        if flagged:
            cells += f"<td>{e(_explanation_label(row))}</td>"
        row_class = ' class="fail empty"' if row.get("empty") else ""
        parts.append(f'<tr{row_class}><td class="num">{e(str(row.get("index", "")))}</td>'
                     f"<td>{e(_target_label(row))}</td>{cells}</tr>")
    mean, normalized = report.get("mean") or {}, report.get("normalized_mean") or {}
    if mean or normalized:
        cells = "".join(
            f'<td class="num">{e(_number(_mean_value(key, mean, normalized), fmt))}</td>' for key, _, fmt, _ in columns
        )
        parts.append(f'<tr class="mean"><td>mean</td><td></td>{cells}{"<td></td>" if flagged else ""}</tr>')
    intervals = report.get("mean_ci") or {}
    if intervals:
        cells = "".join(f'<td class="num">{e(_ci_text(intervals.get(key), fmt))}</td>' for key, _, fmt, _ in columns)
        parts.append(f'<tr class="ci"><td>95% CI</td><td></td>{cells}{"<td></td>" if flagged else ""}</tr>')
    parts.append("</table>")
    parts.append(f"<p>{e(_directions(columns))} (norm.): each curve divided by the image's clean probability."
                 + (" ROAD gap: LeRF - MoRF." if any(key == "road_gap" for key, _, _, _ in columns) else "") + "</p>")

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
        parts.append(f"<tr><th>elapsed</th><td>{e(_number(report['elapsed_s'], '{:.1f}'))} s</td></tr>")
    for key, value in (report.get("versions") or {}).items():
        parts.append(f"<tr><th>{e(str(key))} version</th><td>{e(str(value))}</td></tr>")
    if report.get("run_id"):  # the check's run: its JSON report and panel manifest carry the same id
        parts.append(f'<tr><th>run id</th><td id="run-id">{e(str(report["run_id"]))}</td></tr>')
    parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _ci_text(interval: Any, fmt: str = "{:.4f}") -> str:
    """``0.3120 - 0.4410``: a mean's 95% interval (``[low, high]`` in the report), or ``""``."""
    if not isinstance(interval, (list, tuple)) or len(interval) != 2:
        return ""
    return f"{_number(interval[0], fmt) or 'nan'} - {_number(interval[1], fmt) or 'nan'}"


def _has_empty_column(report: Mapping[str, Any]) -> bool:
    return any("empty" in row for row in report.get("images") or [])


def _explanation_label(row: Mapping[str, Any]) -> str:
    """``EMPTY (mask never moved)`` for an empty explanation, else ``ok``."""
    return f"EMPTY ({row.get('empty_reason') or 'empty explanation'})" if row.get("empty") else "ok"


def _mean_value(key: str, mean: Mapping[str, Any], normalized: Mapping[str, Any]) -> Any:
    if key.endswith("_normalized"):
        return normalized.get(key[: -len("_normalized")])
    return mean.get(key)


# ----------------------------------------------------------------------------- Markdown


def _md(text: str) -> str:
    """Text safe inside a Markdown table cell (GitHub renders some HTML: escape it too)."""
    return html.escape(" ".join(str(text).split()), quote=False).replace("|", "\\|")


def render_markdown(report: Mapping[str, Any], title: str = "lightning-igos check") -> str:
    """A Markdown summary: a verdict heading, the thresholds and the per-image table.

    Example:
        >>> print(render_markdown({"passed": True, "thresholds": [], "images": [
        ...     {"index": 0, "target": 3, "target_name": "cat", "insertion_auc": 0.5}],
        ...     "statistics": [{"name": "insertion_auc", "label": "insertion AUC", "format": ".4f"}]}))
        ## lightning-igos check: PASS (no thresholds given)
        <BLANKLINE>
        No thresholds given.
        <BLANKLINE>
        | image | target | insertion AUC |
        | ---: | --- | ---: |
        | 0 | 3 (cat) | 0.5000 |
        <BLANKLINE>
    """
    verdict = verdict_text(report)
    mark = "" if report.get("passed", True) else ":x: "
    lines = [f"## {_md(title)}: {mark}{_md(verdict)}", ""]
    if report.get("run_id"):  # the check's run: its JSON report and panel manifest carry the same id
        lines += [f"<sub>run {_md(str(report['run_id']))}</sub>", ""]
    settings = report.get("settings") or {}
    if "model" in settings and "num_images" in settings:
        lines += [f"{settings['num_images']} probe images, model `{_md(settings['model'])}`"
                  f"{', ' + _md(settings['device']) if 'device' in settings else ''}.", ""]
    thresholds = report.get("thresholds") or []
    if thresholds:
        lines += ["| threshold | value | limit | result |", "| --- | ---: | ---: | --- |"]
        for t in thresholds:
            lines.append(f"| {_md(_threshold_label(t))} | {_number(t.get('value'))} | "
                         f"{_md(str(t.get('op', '')))} {_number(t.get('limit'), '{:g}')} | "
                         f"{'pass' if t.get('passed') else '**FAIL**'} |")
        lines.append("")
    else:
        lines += ["No thresholds given.", ""]
    sanity_line = sanity_text(report)
    if sanity_line:
        lines += [f"{'' if report['sanity'].get('passed') else ':x: '}{_md(sanity_line)}", ""]
    for line in warning_lines(report):
        lines += [f":warning: {_md(line)}", ""]
    empty = empty_text(report)
    if empty:
        allowed = bool(settings.get("allow_empty", False))
        lines += [f"{'' if allowed else ':x: '}{_md(empty)}{' (allowed by --allow-empty)' if allowed else ''}.", ""]
    columns = _columns(report)
    flagged = _has_empty_column(report)
    rows = report.get("images") or []
    if rows:
        lines.append("| image | target | " + " | ".join(header for _, header, _, _ in columns)
                     + (" | explanation" if flagged else "") + " |")
        lines.append("| ---: | --- | " + " | ".join("---:" for _ in columns) + (" | ---" if flagged else "") + " |")
        for row in rows:
            cells = " | ".join(_number(row.get(key), fmt) for key, _, fmt, _ in columns)
            if flagged:
                label = _explanation_label(row)
                cells += f" | {'**' + _md(label) + '**' if row.get('empty') else _md(label)}"
            lines.append(f"| {row.get('index', '')} | {_md(_target_label(row))} | {cells} |")
        mean, normalized = report.get("mean") or {}, report.get("normalized_mean") or {}
        if mean or normalized:
            cells = " | ".join(f"**{_number(_mean_value(key, mean, normalized), fmt)}**" for key, _, fmt, _ in columns)
            lines.append(f"| **mean** | | {cells}{' |' if flagged else ''} |")
        intervals = report.get("mean_ci") or {}
        if intervals:
            cells = " | ".join(_ci_text(intervals.get(key), fmt) for key, _, fmt, _ in columns)
            lines.append(f"| 95% CI | | {cells}{' |' if flagged else ''} |")
        lines.append("")
    if report.get("comparison"):
        lines += comparison_markdown(report["comparison"])
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
    if path is None:
        path = os.environ.get(SUMMARY_VARIABLE) or None
        if path is None:
            return None
    target = Path(path)
    with open(target, "a", encoding="utf-8") as stream:
        stream.write(render_markdown(report) + "\n")
    return target


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
