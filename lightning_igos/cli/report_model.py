"""The check's report as the outputs show it: :class:`ReportView`, built once from the JSON report.

:func:`report_view` reads the report dict of ``lightning-igos check`` (what ``--report`` writes)
and decides everything the outputs share: the verdict, the threshold lines, the sanity,
empty-explanation and warning lines, the per-image columns (label, format, better direction),
the rows, the mean and 95% interval rows and the baseline comparison. The text table
(:func:`lightning_igos.cli.table.format_table`), the HTML page and the Markdown summary
(:mod:`lightning_igos.cli.html_report`) only lay a view out. A new format is one function of a
:class:`ReportView` (``def render_csv(view: ReportView) -> str``) plus, to write it from the
check, an output option (``commands.py``, ``settings.py``, ``check.py``).

Pure functions of the dict: no torch or numpy import.

Example:
    >>> view = report_view({"passed": True, "thresholds": [], "images": [
    ...     {"index": 0, "target": 3, "target_name": "cat", "insertion_auc": 0.5}],
    ...     "statistics": [{"name": "insertion_auc", "label": "insertion AUC", "format": ".4f"}]})
    >>> view.verdict, [c.label for c in view.columns], view.rows[0].target, view.rows[0].cell(view.columns[0])
    ('PASS (no thresholds given)', ['insertion AUC'], '3 (cat)', '0.5000')
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lightning_igos.cli.errors import PROG

__all__ = ["NO_THRESHOLDS", "THRESHOLD_OPTIONS", "Column", "ReportView", "Row", "Threshold", "empty_text",
           "markdown_text", "number_text", "report_view", "sanity_text", "verdict_text", "warning_lines"]

#: The report title of a check (HTML page, Markdown heading).
CHECK_TITLE = f"{PROG} check"
#: What the outputs say when the check gates on nothing, and the options that add a gate.
NO_THRESHOLDS = "no thresholds given"
THRESHOLD_OPTIONS = ("--min-insertion", "--max-deletion", "--require")
#: The stylesheet of the HTML pages (the check's page, ``compare --html``).
PAGE_STYLE = """
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


def number_text(value: Any, fmt: str = ".4f") -> str:
    """A number formatted with ``fmt``, ``""`` for None, anything else as text.

    Example:
        >>> number_text(0.25), number_text(None), number_text(3, "g")
        ('0.2500', '', '3')
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return format(value, fmt)
    return "" if value is None else str(value)


def markdown_text(text: Any) -> str:
    """Text safe inside a Markdown table cell, on one line (GitHub renders some HTML: it is escaped too).

    Example:
        >>> print(markdown_text("a|b <i>"))
        a\\|b &lt;i&gt;
    """
    return html.escape(" ".join(str(text).split()), quote=False).replace("|", "\\|")


@dataclass(frozen=True)
class Column:
    """A per-image column: a reported statistic with a table label."""

    name: str
    label: str
    fmt: str = ".4f"
    higher_is_better: bool | None = None

    def text(self, value: Any) -> str:
        """``value`` in this column's format (:func:`number_text`)."""
        return number_text(value, self.fmt)


@dataclass(frozen=True)
class Threshold:
    """A gate's line: ``mean insertion AUC (normalized)  0.4123 >= 0.3  pass``."""

    label: str
    value: Any
    op: str
    limit: Any
    passed: bool

    @property
    def value_text(self) -> str:
        return number_text(self.value)

    @property
    def limit_text(self) -> str:
        return number_text(self.limit, "g")

    @property
    def result(self) -> str:
        return "pass" if self.passed else "FAIL"


@dataclass(frozen=True)
class Row:
    """One probe image: its index, target (``3 (cat)``), its values by statistic, whether its explanation is empty."""

    index: Any
    target: str
    values: Mapping[str, Any]
    empty: bool
    explanation: str  # "ok" or "EMPTY (reason)"

    def cell(self, column: Column) -> str:
        return column.text(self.values.get(column.name))


@dataclass(frozen=True)
class ReportView:
    """Everything the check's outputs show, decided once (see the module docstring).

    ``mean``: the statistics' probe means (a normalised AUC's from ``normalized_mean``);
    ``intervals``: their 95% intervals ``(low, high)``; ``has_mean`` and ``has_intervals`` say
    whether the report has those blocks at all; ``explanation_column``: the rows say whether their
    explanation is empty.
    """

    title: str
    passed: bool
    verdict: str
    settings: Mapping[str, Any]
    thresholds: tuple[Threshold, ...]
    columns: tuple[Column, ...]
    rows: tuple[Row, ...]
    mean: Mapping[str, Any] = field(default_factory=dict)
    has_mean: bool = False
    intervals: Mapping[str, tuple[Any, Any]] = field(default_factory=dict)
    has_intervals: bool = False
    explanation_column: bool = False
    sanity: str = ""
    sanity_passed: bool = True
    empty: str = ""
    allow_empty: bool = False
    warnings: tuple[str, ...] = ()
    comparison: Mapping[str, Any] | None = None
    run_id: str | None = None

    def mean_cell(self, column: Column) -> str:
        return column.text(self.mean.get(column.name))


def report_view(report: Mapping[str, Any], title: str = CHECK_TITLE) -> ReportView:
    """The :class:`ReportView` of a check report dict (see the module docstring)."""
    settings = report.get("settings") or {}
    columns = tuple(Column(st["name"], st["label"], st.get("format", ".4f"), st.get("higher_is_better"))
                    for st in report.get("statistics") or [] if st.get("label"))
    names = [column.name for column in columns]
    rows = tuple(Row(row.get("index", ""), _target(row), {name: row[name] for name in names if name in row},
                     bool(row.get("empty")), _explanation(row)) for row in report.get("images") or [])
    mean, normalized = report.get("mean") or {}, report.get("normalized_mean") or {}
    means = {name: _mean_value(name, mean, normalized) for name in names}
    intervals = {name: tuple(value) for name, value in (report.get("mean_ci") or {}).items()
                 if isinstance(value, (list, tuple)) and len(value) == 2}
    sanity = report.get("sanity") or {}
    return ReportView(
        title=title, passed=bool(report.get("passed", True)), verdict=verdict_text(report), settings=settings,
        thresholds=tuple(Threshold(_threshold_label(t), t.get("value"), str(t.get("op", "")), t.get("limit"),
                                   bool(t.get("passed"))) for t in report.get("thresholds") or []),
        columns=columns, rows=rows, mean={name: value for name, value in means.items() if value is not None},
        has_mean=bool(mean or normalized), intervals=intervals, has_intervals=bool(report.get("mean_ci")),
        explanation_column=any("empty" in row for row in report.get("images") or []),
        sanity=sanity_text(report), sanity_passed=bool(sanity.get("passed")), empty=empty_text(report),
        allow_empty=bool(settings.get("allow_empty", False)), warnings=tuple(warning_lines(report)),
        comparison=report.get("comparison") or None, run_id=report.get("run_id") or None,
    )


def _threshold_label(t: Mapping[str, Any]) -> str:
    """``mean insertion AUC (normalized)``, ``mean road_gap``: the statistic as ``--require`` names it."""
    return f"mean {str(t.get('metric', '')).replace('_auc', ' AUC')}{' (normalized)' if t.get('normalized') else ''}"


def _target(row: Mapping[str, Any]) -> str:
    name = row.get("target_name")
    return f"{row['target']} ({name})" if name else str(row["target"])


def _explanation(row: Mapping[str, Any]) -> str:
    """``EMPTY (mask never moved)`` for an empty explanation, else ``ok``."""
    return f"EMPTY ({row.get('empty_reason') or 'empty explanation'})" if row.get("empty") else "ok"


def _mean_value(key: str, mean: Mapping[str, Any], normalized: Mapping[str, Any]) -> Any:
    base = key.removesuffix("_normalized")
    return normalized[base] if key != base and base in normalized else mean.get(key)


# ----------------------------------------------------------------------------- lines shared by every output


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
        verdict = "PASS" if thresholds else f"PASS ({NO_THRESHOLDS})"
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
