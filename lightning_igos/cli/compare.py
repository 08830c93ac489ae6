"""The baseline gate: compare a check report with an earlier one of the same probe, image by image.

Pure functions of two JSON reports of ``lightning-igos check`` (no torch import, no model):
``lightning-igos compare OLD.json NEW.json`` and ``check --baseline-report OLD.json`` both call
:func:`compare_reports`, so they give the same comparison and the same verdict.

* Comparable: both reports must come from the same probe (``settings.probe_sha256``, a hash
  of the images and targets) and the same ``method``; otherwise :func:`comparable` raises an
  :class:`~lightning_igos.cli.errors.InputError` naming the difference (exit 2). Another
  solver or metric option (any setting but those in :data:`NOT_COMPARED`), or another package version,
  is a warning and the comparison goes on.
* Paired: each statistic is compared on the images both reports have a finite value for, in
  the direction the statistic declares (``higher_is_better``). ``worse_by`` is the drop of the
  mean in that direction (negative: it improved); ``change_ci`` is the 95% bootstrap interval of
  the mean of the per-image changes (:func:`~lightning_igos.intervals.paired_interval`).
* Gated: a statistic with a margin (``--max-drop NAME=X``; :data:`DEFAULT_MAX_DROP` for the
  AUCs) fails when ``worse_by > X``.

Example:
    >>> def report(ins):
    ...     return {"format": REPORT_FORMAT, "settings": {"probe_sha256": "ab", "method": "igos"},
    ...             "statistics": [{"name": "insertion_auc", "label": "insertion AUC", "higher_is_better": True}],
    ...             "images": [{"index": i, "insertion_auc": v} for i, v in enumerate(ins)]}
    >>> result = compare_reports(report([0.5, 0.6, 0.7]), report([0.3, 0.4, 0.5]))
    >>> result["passed"], result["failed"], round(result["statistics"][0]["worse_by"], 4)
    (False, ['insertion_auc'], 0.2)
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lightning_igos.cli.errors import PROG, InputError
from lightning_igos.cli.report_model import PAGE_STYLE
from lightning_igos.cli.report_model import markdown_text as _md
from lightning_igos.intervals import LEVEL, RESAMPLES, SEED, bootstrap_interval, finite_values, paired_interval

__all__ = [
    "DEFAULT_MAX_DROP", "NOT_COMPARED", "REPORT_FORMAT", "comparable", "compare_reports", "comparison_lines",
    "comparison_markdown", "interval_block", "load_report", "max_drops", "mean_intervals", "parse_max_drop",
]

REPORT_FORMAT = "lightning-igos-check"

#: The margins used when ``--max-drop`` does not name the statistic: how much the probe mean may get worse.
#: Chosen from ``bench/intervals.py`` (see the README, "A gate relative to the last good run").
DEFAULT_MAX_DROP: dict[str, float] = {"insertion_auc": 0.05, "deletion_auc": 0.05}

#: The report settings that do not change the numbers (or are compared on their own): every other setting
#: (a solver or metric option) with another value in the baseline warns.
NOT_COMPARED = (
    "model", "checkpoint", "probe", "probe_sha256", "num_images", "image_shape", "device", "method",
    "max_batch_size", "normalized_thresholds", "allow_empty", "max_probe_elements", "epoch", "run_id",
)


def interval_block() -> dict[str, Any]:
    """How the report's intervals are computed (the report's ``interval`` object).

    Example:
        >>> interval_block()["level"]
        0.95
    """
    return {"level": LEVEL, "method": "percentile bootstrap over the probe images", "resamples": RESAMPLES,
            "seed": SEED}


def mean_intervals(rows: Sequence[Mapping[str, Any]], names: Sequence[str],
                   left_out: Mapping[str, Sequence[int]] | None = None) -> dict[str, list[float]]:
    """The 95% interval ``[low, high]`` of the probe mean of each statistic in ``names`` (the report's ``mean_ci``).

    ``left_out[name]``: the images (``index``) the mean of ``name`` leaves out, e.g. those below chance for the
    normalised AUCs; the interval leaves them out too.

    Example:
        >>> mean_intervals([{"index": 0, "a": 0.5}, {"index": 1, "a": 0.9}], ["a"], left_out={"a": [1]})
        {'a': [0.5, 0.5]}
    """
    skipped = {name: set(indices) for name, indices in (left_out or {}).items()}
    return {name: list(bootstrap_interval([row.get(name) for row in rows
                                           if row.get("index") not in skipped.get(name, ())])) for name in names}


def _left_out(report: Mapping[str, Any]) -> set[Any]:
    """The images a report's normalised means leave out (``normalized_excluded``)."""
    block = report.get("normalized_excluded")
    return set(block.get("images") or []) if isinstance(block, Mapping) else set()


# ----------------------------------------------------------------------------- margins


def parse_max_drop(text: str) -> tuple[str, float | None]:
    """``"NAME=X"`` as ``(NAME, X)``; ``X`` is a number >= 0, or ``none`` (no gate on that statistic).

    Example:
        >>> parse_max_drop("insertion_auc=0.03"), parse_max_drop("deletion_auc=none")
        (('insertion_auc', 0.03), ('deletion_auc', None))
    """
    match = re.fullmatch(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(\S+)\s*", str(text))
    if match is None:
        raise ValueError(f"must be NAME=X (e.g. insertion_auc=0.03, or NAME=none for no gate), got {text!r}")
    name, value = match.groups()
    if value.lower() == "none":
        return name, None
    try:
        limit = float(value)
    except ValueError:
        raise ValueError(f"the margin of {text!r} must be a number >= 0 or none") from None
    if not math.isfinite(limit) or limit < 0:
        raise ValueError(f"the margin of {text!r} must be a finite number >= 0 or none")
    return name, limit


def max_drops(given: Sequence[tuple[str, float | None]]) -> dict[str, float | None]:
    """The margin of each statistic: :data:`DEFAULT_MAX_DROP`, then each ``--max-drop`` (the last one wins).

    Example:
        >>> max_drops([("road_gap", 0.02), ("deletion_auc", None)])
        {'insertion_auc': 0.05, 'deletion_auc': None, 'road_gap': 0.02}
    """
    margins: dict[str, float | None] = dict(DEFAULT_MAX_DROP)
    for name, limit in given:
        margins[name] = limit
    return margins


def _check_margins(given: Sequence[tuple[str, float | None]], statistics: Mapping[str, Mapping[str, Any]]) -> None:
    """Every ``--max-drop`` names a statistic both reports have, with a better direction."""
    for name, _ in given:
        if name not in statistics:
            raise InputError(f"--max-drop {name}: no statistic named {name!r} in both reports; the compared ones "
                             f"are: {', '.join(statistics) or 'none'}.")
        if statistics[name].get("higher_is_better") is None:
            raise InputError(f"--max-drop {name}: {name} has no better direction (neither higher nor lower is "
                             "better), so it cannot get worse; gate another statistic.")


# ----------------------------------------------------------------------------- reports


def load_report(path: str | Path, what: str) -> dict[str, Any]:
    """Read a check report (``--report`` of ``lightning-igos check``); a missing or foreign file is an input error.

    ``what`` names the argument in the messages (``--baseline-report``, ``OLD``).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{what} '{path}': no such file.") from None
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{what} '{path}': cannot read it: {err}") from err
    try:
        report = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(f"{what} '{path}' is not JSON ({err}); give a report written by check --report.") from err
    if not isinstance(report, dict) or report.get("format") != REPORT_FORMAT:
        raise InputError(f"{what} '{path}' is not a report of {PROG} check (no \"format\": "
                         f"\"{REPORT_FORMAT}\"); give a file written by check --report or save_report.")
    for key, kind in (("settings", dict), ("statistics", list), ("images", list)):
        if not isinstance(report.get(key), kind):
            raise InputError(f"{what} '{path}': the report has no {key!r} {kind.__name__}; it is damaged.")
    return report


def comparable(baseline: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Check that ``new`` can be compared with ``baseline``; returns the warnings (other options, versions).

    Raises:
        InputError: another probe (hash, size or shape) or another method, naming both.

    Example:
        >>> comparable({"settings": {"probe_sha256": "a", "method": "igos", "iterations": 4}},
        ...            {"settings": {"probe_sha256": "a", "method": "igos", "iterations": 2}})
        ['iterations differs: 4 in the baseline, 2 now']
    """
    old_s, new_s = baseline.get("settings") or {}, new.get("settings") or {}
    old_hash, new_hash = old_s.get("probe_sha256"), new_s.get("probe_sha256")
    if not old_hash or not new_hash:
        which = "baseline" if not old_hash else "new"
        raise InputError(f"the {which} report records no probe hash (settings.probe_sha256); write it again with "
                         "this version of check --report or save_report.")
    if old_hash != new_hash:
        detail = ""
        for key in ("num_images", "image_shape"):
            if key in old_s and key in new_s and old_s[key] != new_s[key]:
                detail += f"; {key} {old_s[key]} in the baseline, {new_s[key]} now"
        raise InputError(f"the baseline comes from another probe: probe sha256 {old_hash[:12]} "
                         f"('{old_s.get('probe', '?')}') in the baseline, {new_hash[:12]} "
                         f"('{new_s.get('probe', '?')}') now{detail}; compare runs of the same probe file.")
    if old_s.get("method") != new_s.get("method"):
        raise InputError(f"the baseline was explained with another method: {old_s.get('method')!r} in the baseline, "
                         f"{new_s.get('method')!r} now; compare runs of the same --method.")
    warnings = [f"{key} differs: {_shown(old_s[key])} in the baseline, {_shown(new_s[key])} now"
                for key in new_s if key not in NOT_COMPARED and key in old_s and old_s[key] != new_s[key]]
    old_v = (baseline.get("versions") or {}).get("lightning_igos")
    new_v = (new.get("versions") or {}).get("lightning_igos")
    if old_v and new_v and old_v != new_v:
        warnings.append(f"lightning_igos version differs: {old_v} in the baseline, {new_v} now")
    return warnings


def _shown(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def _statistics(baseline: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The statistics both reports have, in the new report's order (its declaration wins)."""
    old_names = {st.get("name") for st in baseline.get("statistics") or []}
    return {st["name"]: st for st in new.get("statistics") or [] if st.get("name") in old_names}


def check_baseline(baseline: Mapping[str, Any], new_settings: Mapping[str, Any], statistic_names: Sequence[str],
                   given: Sequence[tuple[str, float | None]]) -> list[str]:
    """Before a check runs: the baseline fits the probe and method (:func:`comparable`) and each ``--max-drop``
    names a statistic both runs report. Returns the warnings."""
    warnings = comparable(baseline, {"settings": new_settings, "versions": {}})
    names = set(statistic_names)
    shared = {st["name"]: st for st in baseline.get("statistics") or [] if st.get("name") in names}
    _check_margins(given, shared)
    return warnings


def compare_reports(baseline: Mapping[str, Any], new: Mapping[str, Any],
                    given: Sequence[tuple[str, float | None]] = (), baseline_path: str | None = None) -> dict[str, Any]:
    """The comparison of ``new`` with ``baseline`` (the report's ``comparison`` object).

    Args:
        baseline, new: check reports of the same probe and method.
        given: the ``--max-drop`` margins, ``(name, X or None)``.
        baseline_path: where the baseline was read from (shown in the outputs).

    Returns:
        ``{"baseline", "baseline_checkpoint", "probe_sha256", "method", "warnings", "statistics", "passed",
        "failed"}``; each entry of ``statistics`` holds ``name``, ``label``, ``format``,
        ``higher_is_better``, ``num_pairs``, ``baseline`` and ``new`` (the means over the paired
        images; a normalised AUC leaves out the images either report's normalised means leave out),
        ``baseline_ci`` and ``new_ci``, ``change`` (new - baseline), ``change_ci``,
        ``worse_by``, ``max_drop`` and ``passed`` (None without a margin).

    Raises:
        InputError: the reports are not comparable, or a margin names an unknown statistic.
    """
    warnings = comparable(baseline, new)
    statistics = _statistics(baseline, new)
    _check_margins(given, statistics)
    margins = max_drops(given)
    old_rows = {row.get("index"): row for row in baseline.get("images") or []}
    new_rows = [row for row in new.get("images") or [] if row.get("index") in old_rows]
    skipped = _left_out(baseline) | _left_out(new)  # as in the reports' normalised means
    entries = []
    for name, st in statistics.items():
        pairs = [(old_rows[row["index"]].get(name), row.get(name)) for row in new_rows
                 if not (name.endswith("_normalized") and row["index"] in skipped)]
        pairs = [(a, b) for a, b in pairs if _finite(a) and _finite(b)]
        old_values, new_values = [a for a, _ in pairs], [b for _, b in pairs]
        old_mean, new_mean = _mean(old_values), _mean(new_values)
        change = new_mean - old_mean
        higher = st.get("higher_is_better")
        worse = None if higher is None else (-change if higher else change)
        margin = margins.get(name) if higher is not None else None
        entries.append({
            "name": name, "label": st.get("label") or name, "format": st.get("format", ".4f"),
            "higher_is_better": higher, "num_pairs": len(pairs),
            "baseline": old_mean, "new": new_mean,
            "baseline_ci": list(bootstrap_interval(old_values)), "new_ci": list(bootstrap_interval(new_values)),
            "change": change, "change_ci": list(paired_interval(old_values, new_values)),
            "worse_by": worse, "max_drop": margin,
            "passed": None if margin is None else bool(worse is not None and not math.isnan(worse) and worse <= margin),
        })
    failed = [entry["name"] for entry in entries if entry["passed"] is False]
    old_s = baseline.get("settings") or {}
    return {"baseline": baseline_path, "baseline_checkpoint": old_s.get("checkpoint"),
            "probe_sha256": old_s.get("probe_sha256"), "method": old_s.get("method"), "warnings": warnings,
            "statistics": entries, "passed": not failed, "failed": failed}


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _mean(values: Sequence[float]) -> float:
    data = finite_values(values)
    return float(data.mean()) if data.size else math.nan


# ----------------------------------------------------------------------------- layouts


def _num(value: Any, fmt: str = ".4f", sign: bool = False) -> str:
    if not _finite(value):
        return "nan" if value is not None or not sign else "-"
    return format(value, ("+" if sign else "") + fmt)


def _interval(values: Any, fmt: str = ".4f", sign: bool = False) -> str:
    if not isinstance(values, (list, tuple)) or len(values) != 2:
        return ""
    return f"[{_num(values[0], fmt, sign)}, {_num(values[1], fmt, sign)}]"


def _result(entry: Mapping[str, Any]) -> str:
    return "-" if entry.get("passed") is None else ("pass" if entry["passed"] else "FAIL")


def _cells(entry: Mapping[str, Any], no_margin: str) -> tuple[str, ...]:
    """An entry's baseline, new, change, change interval, worse-by, margin and result, as every layout shows them."""
    fmt = entry.get("format", ".4f")
    margin = no_margin if entry.get("max_drop") is None else f"{entry['max_drop']:g}"
    return (_num(entry.get("baseline"), fmt), _num(entry.get("new"), fmt), _num(entry.get("change"), fmt, True),
            _interval(entry.get("change_ci"), fmt, True), _num(entry.get("worse_by"), fmt, True), margin,
            _result(entry))


def comparison_header(comparison: Mapping[str, Any]) -> str:
    """``baseline 'main.json' (checkpoint main.ckpt): the same probe (sha256 1a2b3c4d5e6f), method igos``."""
    where = f"'{comparison['baseline']}'" if comparison.get("baseline") else "report"
    checkpoint = f" (checkpoint {comparison['baseline_checkpoint']})" if comparison.get("baseline_checkpoint") else ""
    return (f"baseline {where}{checkpoint}: the same probe (sha256 {str(comparison.get('probe_sha256'))[:12]}), "
            f"method {comparison.get('method')}")


def comparison_verdict(comparison: Mapping[str, Any]) -> str:
    """``no statistic got worse than its margin`` or ``FAIL: insertion_auc got worse than its margin``."""
    failed = comparison.get("failed") or []
    if not failed:
        gated = sum(1 for entry in comparison.get("statistics") or [] if entry.get("passed") is not None)
        return f"baseline: PASS ({gated} statistic{'s' if gated != 1 else ''} gated, none got worse than its margin)"
    return f"baseline: FAIL: {', '.join(failed)} got worse than {'its' if len(failed) == 1 else 'their'} margin"


def comparison_lines(comparison: Mapping[str, Any]) -> list[str]:
    """The comparison as lines of text (the check's and ``compare``'s table).

    Example:
        >>> lines = comparison_lines({"baseline": "old.json", "probe_sha256": "ab", "method": "igos",
        ...     "warnings": [], "failed": [], "statistics": [{"name": "insertion_auc", "label": "insertion AUC",
        ...     "baseline": 0.5, "new": 0.48, "change": -0.02, "change_ci": [-0.03, -0.01], "worse_by": 0.02,
        ...     "max_drop": 0.05, "passed": True}]})
        >>> print(lines[-2])
        insertion AUC               0.5000    0.4800    -0.0200  [-0.0300, -0.0100]    +0.0200      0.05  pass
    """
    lines = [comparison_header(comparison)]
    lines += [f"warning: {text}" for text in comparison.get("warnings") or []]
    lines.append(f"{'statistic':<24}{'baseline':>10}{'new':>10}{'change':>11}  {'95% CI of change':<19}"
                 f"{'worse by':>10}{'max drop':>10}  result")
    for entry in comparison.get("statistics") or []:
        old, new, change, change_ci, worse, margin, result = _cells(entry, "-")
        lines.append(f"{entry['label'][:23]:<24}{old:>10}{new:>10}{change:>11}  {change_ci:<19}{worse:>10}{margin:>10}"
                     f"  {result}")
    lines.append(comparison_verdict(comparison))
    return lines


def comparison_markdown(comparison: Mapping[str, Any]) -> list[str]:
    """The comparison as Markdown lines (a heading, the warnings, one table row per statistic).

    Example:
        >>> comparison_markdown({"baseline": "old.json", "probe_sha256": "ab", "method": "igos", "statistics": [],
        ...                      "warnings": [], "failed": []})[0]
        '### Against the baseline: PASS'
    """
    passed = not comparison.get("failed")
    lines = [f"### Against the baseline: {'PASS' if passed else ':x: FAIL'}", "", _md(comparison_header(comparison)),
             ""]
    for text in comparison.get("warnings") or []:
        lines += [f"Warning: {_md(text)}", ""]
    lines += ["| statistic | baseline | new | change | 95% CI of change | worse by | max drop | result |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for entry in comparison.get("statistics") or []:
        *numbers, result = _cells(entry, "")
        shown = "**FAIL**" if result == "FAIL" else result
        lines.append(f"| {_md(entry['label'])} | {' | '.join(numbers)} | {shown} |")
    lines += ["", _md(comparison_verdict(comparison)), ""]
    return lines


def comparison_html(comparison: Mapping[str, Any], baseline: Mapping[str, Any] | None = None,
                    new: Mapping[str, Any] | None = None) -> list[str]:
    """The comparison as HTML parts: the table and, when both reports carry ``overlays``, each probe image's
    baseline and new overlay side by side."""
    e = html.escape
    passed = not comparison.get("failed")
    parts = ['<h2>Against the baseline</h2>',
             f'<p id="baseline-verdict" class="verdict {"pass" if passed else "fail"}">'
             f'{e(comparison_verdict(comparison))}</p>',
             f"<p>{e(comparison_header(comparison))}</p>"]
    parts += [f'<p class="warning">Warning: {e(text)}</p>' for text in comparison.get("warnings") or []]
    parts.append('<table id="comparison"><tr><th>statistic</th><th>baseline</th><th>new</th><th>change</th>'
                 '<th>95% CI of change</th><th>worse by</th><th>max drop</th><th>result</th></tr>')
    for entry in comparison.get("statistics") or []:
        *numbers, result = _cells(entry, "")
        row_class = ' class="fail"' if result == "FAIL" else ""
        cells = "".join(f'<td class="num">{text}</td>' for text in numbers)
        parts.append(f'<tr{row_class}><td>{e(entry["label"])}</td>{cells}<td>{result}</td></tr>')
    parts.append("</table>")
    parts.append("<p>change: new - baseline, paired image by image; worse by: the drop in the statistic's own "
                 "direction; the interval is that of the mean change over the probe images (95%, bootstrap).</p>")
    old_overlays = (baseline or {}).get("overlays")
    new_overlays = (new or {}).get("overlays")
    if isinstance(old_overlays, list) and isinstance(new_overlays, list) and old_overlays and new_overlays:
        parts.append('<h2>Baseline and new explanation of each probe image</h2><div id="side-by-side">')
        for i, (old_png, new_png) in enumerate(zip(old_overlays, new_overlays)):
            parts.append(
                f'<figure class="pair"><img id="baseline-overlay-{i}" class="thumb" alt="baseline overlay {i}" '
                f'src="data:image/png;base64,{e(str(old_png), quote=True)}"> '
                f'<img id="new-overlay-{i}" class="thumb" alt="new overlay {i}" '
                f'src="data:image/png;base64,{e(str(new_png), quote=True)}">'
                f"<figcaption>#{i}: baseline | new</figcaption></figure>")
        parts.append("</div>")
    elif baseline is not None:
        parts.append("<p>No side-by-side overlays: a report leaves them out when the display normalisation "
                     "was unusable.</p>")
    return parts


def render_comparison_page(comparison: Mapping[str, Any], baseline: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """``compare --html``: one self-contained page with the comparison and the side-by-side overlays."""
    title = f"{PROG} compare"
    verdict = comparison_verdict(comparison)
    return "\n".join(["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
                      f"<title>{html.escape(title)}: {html.escape(verdict)}</title>",
                      f"<style>{PAGE_STYLE}</style></head><body>", f"<h1>{html.escape(title)}</h1>",
                      *comparison_html(comparison, baseline, new), "</body></html>"]) + "\n"


# ----------------------------------------------------------------------------- the command


def run_compare(old: Path, new: Path, given: Sequence[tuple[str, float | None]] = (), *,
                markdown: Path | None = None, html_path: Path | None = None) -> tuple[dict[str, Any], str]:
    """``lightning-igos compare OLD NEW``: the comparison and its text; writes ``--markdown`` and ``--html``.

    Also appends the Markdown to ``$GITHUB_STEP_SUMMARY`` when it is set.
    """
    from lightning_igos.cli.outputs import check_outputs, step_summary, write_bytes

    check_outputs({"OLD": old, "NEW": new}, {"--markdown": markdown, "--html": html_path})
    baseline = load_report(old, "OLD")
    report = load_report(new, "NEW")
    comparison = compare_reports(baseline, report, given, baseline_path=str(old))
    text = "\n".join(comparison_lines(comparison))
    summary = "\n".join(comparison_markdown(comparison)) + "\n"
    page = None if html_path is None else render_comparison_page(comparison, baseline, report)
    for option, path, data in (("--markdown", markdown, summary), ("--html", html_path, page)):
        if path is not None:
            try:
                write_bytes(path, str(data).encode("utf-8"))
            except OSError as err:
                raise InputError(f"{option}: cannot write '{path}': {err}") from err
    step_summary(summary)
    return comparison, text
