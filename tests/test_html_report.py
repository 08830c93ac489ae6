"""The HTML report and the Markdown step summary, and the page opened in a real headless browser."""

from __future__ import annotations

import base64
import html
import io
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from PIL import Image

from lightning_igos.cli.html_report import append_step_summary, png_base64, render_html, render_markdown
from lightning_igos.render import overlay_grid, probe_panel

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def _report(passed: bool = False) -> dict:
    rows = [
        {"index": i, "target": i % 3, "target_name": ["cat", "dog", "<b>x|y</b>"][i % 3], "clean_score": 0.9,
         "insertion_auc": 0.8 - i / 10, "deletion_auc": 0.1 + i / 10, "insertion_auc_normalized": 0.9,
         "deletion_auc_normalized": 0.2, "mask_mean": 0.7}
        for i in range(3)
    ]
    return {
        "passed": passed,
        "thresholds": [
            {"name": "min_insertion", "metric": "insertion_auc", "normalized": False, "op": ">=", "limit": 0.5,
             "value": 0.7, "passed": True},
            {"name": "max_deletion", "metric": "deletion_auc", "normalized": False, "op": "<=", "limit": 0.1,
             "value": 0.2, "passed": passed},
        ],
        "mean": {"clean_score": 0.9, "insertion_auc": 0.7, "deletion_auc": 0.2, "mask_mean": 0.7},
        "normalized_mean": {"insertion_auc": 0.9, "deletion_auc": 0.2},
        "images": rows,
        "settings": {"model": "pkg.models:Net", "probe": "probe.pt", "num_images": 3, "device": "cpu",
                     "image_shape": [3, 16, 16], "iterations": 1},
        "versions": {"lightning_igos": "0.1.0"},
        "elapsed_s": 1.25,
    }


def _panels(n: int = 3) -> tuple[list[tuple[str, torch.Tensor]], torch.Tensor]:
    torch.manual_seed(0)
    images, saliency = torch.rand(n, 3, 16, 16), torch.rand(n, 1, 16, 16)
    f = torch.linspace(0, 1, 5)
    panels = [(f"#{i} class {i}", probe_panel(images[i], saliency[i], f, 1 - f, f, 0.5, 0.5, f"#{i}"))
              for i in range(n)]
    return panels, overlay_grid(images, saliency)


def test_png_base64_round_trips_through_pillow() -> None:
    image = torch.rand(3, 5, 7)
    decoded = Image.open(io.BytesIO(base64.b64decode(png_base64(image))))
    assert decoded.size == (7, 5) and decoded.mode == "RGB"
    with pytest.raises(ValueError, match="shaped"):
        png_base64(torch.rand(2, 4, 4))


def test_html_is_self_contained_and_escaped() -> None:
    panels, grid = _panels()
    page = render_html(_report(), panels, grid)
    assert page.startswith("<!DOCTYPE html>")
    assert len(re.findall("data:image/(?:jpeg|png);base64,", page)) == len(panels) + 1
    assert "FAIL: 1 of 2 thresholds failed" in page
    assert "<b>x|y</b>" not in page and html.escape("2 (<b>x|y</b>)") in page
    assert "0 (cat)" in page and "pkg.models:Net" in page
    # Nothing to fetch: no script, no stylesheet or image from elsewhere.
    assert "<script" not in page and not re.search(r"""(src|href)=["'](?!data:)""", page)


def test_markdown_summary_appends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    assert append_step_summary(_report(passed=False)) == summary
    text = summary.read_text()
    assert text.startswith("earlier step\n## lightning-igos check: :x: FAIL: 1 of 2 thresholds failed")
    assert "| mean deletion AUC | 0.2000 | &lt;= 0.1 | **FAIL** |" in text
    assert "| 2 | 2 (&lt;b&gt;x\\|y&lt;/b&gt;) |" in text  # escaped for the table and for GitHub's HTML
    monkeypatch.delenv("GITHUB_STEP_SUMMARY")
    assert append_step_summary(_report()) is None
    assert render_markdown(_report(passed=True)).startswith("## lightning-igos check: PASS")


# ----------------------------------------------------------------------------- real browser


def _browser() -> str | None:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    return None


def _headless(browser: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(_browser() is None, reason="no Chromium/Chrome installed (apt-get install chromium)")
def test_report_in_a_headless_browser(tmp_path: Path) -> None:
    """The page loads, every image decodes at its size, and the verdict is on it."""
    browser = _browser()
    panels, grid = _panels()
    page = render_html(_report(), panels, grid)
    (tmp_path / "report.html").write_text(page, encoding="utf-8")
    # A copy that writes, on load, what the browser made of each image into the DOM.
    probe = ("<script>window.addEventListener('load', () => { document.body.dataset.images = "
             "Array.from(document.images).map(i => `${i.id}:${i.complete}:${i.naturalWidth}x${i.naturalHeight}`)"
             ".join(' '); });</script></body>")
    (tmp_path / "probed.html").write_text(page.replace("</body>", probe), encoding="utf-8")
    dom = _headless(browser, tmp_path, "--dump-dom", (tmp_path / "probed.html").as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    found = re.search(r'data-images="([^"]*)"', dom.stdout)
    assert found, dom.stdout[:2000]
    seen = dict(entry.split(":", 1) for entry in found.group(1).split())
    expected = {f"panel-{i}": panel for i, (_, panel) in enumerate(panels)} | {"overlays": grid}
    assert set(seen) == set(expected)
    for key, image in expected.items():
        assert seen[key] == f"true:{image.shape[2]}x{image.shape[1]}", (key, seen[key])
    assert re.search(r'id="verdict"[^>]*>FAIL: 1 of 2 thresholds failed<', dom.stdout)

    shot = tmp_path / "shot.png"
    result = _headless(browser, tmp_path, f"--screenshot={shot}", "--window-size=1000,900",
                       (tmp_path / "report.html").as_uri())
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    pixels = Image.open(shot).convert("RGB")
    assert pixels.size == (1000, 900)
    assert len(set(pixels.resize((50, 45)).getdata())) > 20  # rendered content, not a blank page


def _with_empty(allow: bool) -> dict:
    report = _report(passed=allow)
    report["thresholds"][1]["passed"] = True
    for row in report["images"]:
        row["empty"], row["empty_reason"] = False, None
    report["images"][1].update(empty=True, empty_reason="mask never moved")
    report["num_empty"], report["empty_by_reason"] = 1, {"mask never moved": 1}
    report["settings"]["allow_empty"] = allow
    return report


def test_empty_explanations_are_named_in_the_page_and_the_summary() -> None:
    panels, grid = _panels()
    failing, allowed = _with_empty(allow=False), _with_empty(allow=True)
    page = render_html(failing, panels, grid)
    assert 'class="verdict fail">FAIL: 1 of 3 explanations is empty (mask never moved: 1)<' in page
    assert '<tr class="fail empty"><td class="num">1</td>' in page and page.count(">ok<") == 2
    assert "EMPTY (mask never moved)" in page
    text = render_markdown(failing)
    assert text.splitlines()[0] == ("## lightning-igos check: :x: FAIL: 1 of 3 explanations is empty "
                                    "(mask never moved: 1)")
    assert "| **EMPTY (mask never moved)** |" in text
    assert render_markdown(allowed).splitlines()[0] == (
        "## lightning-igos check: PASS; 1 of 3 explanations is empty (mask never moved: 1), allowed by --allow-empty")
    assert 'class="verdict pass">' in render_html(allowed, panels, grid)
