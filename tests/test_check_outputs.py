"""`lightning-igos check` outputs: --class-names, --html and the GitHub step summary."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from helpers import tiny_check_workspace

from lightning_igos.cli import main
from lightning_igos.demo.toy_module import ObjectClassifier

MODEL = "lightning_igos.demo.toy_module:ObjectClassifier"
FAST = ["--iterations", "1", "--ig-steps", "2", "--metric-steps", "4"]
NAMES = ["stripes", "dots", "checks", "waves"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A Lightning checkpoint of a tiny 4-class model (one training step) and a 3-image probe."""
    return tiny_check_workspace(tmp_path_factory.mktemp("check_outputs"), num_probe=3)


def _check(workspace: Path, *extra: str) -> int:
    return main(["check", "--model", MODEL, "--checkpoint", str(workspace / "run.ckpt"),
                 "--probe", str(workspace / "probe.pt"), "--device", "cpu", *FAST, *extra])


def test_names_html_and_step_summary(workspace: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    names = tmp_path / "names.txt"
    names.write_text("\n".join(NAMES) + "\n")
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    html_path, report_path = tmp_path / "out" / "report.html", tmp_path / "report.json"
    status = _check(workspace, "--class-names", str(names), "--html", str(html_path), "--report", str(report_path),
                    "--min-insertion", "0.0", "--max-deletion", "1.0")
    out = capsys.readouterr().out
    assert status == 0
    assert "0 (stripes)" in out and "2 (checks)" in out  # the printed table

    report = json.loads(report_path.read_text())
    assert [row["target_name"] for row in report["images"]] == NAMES[:3]
    assert report["class_names"] == {str(i): n for i, n in enumerate(NAMES)}

    page = html_path.read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 4  # three panels and the overlay grid
    assert 'id="verdict" class="verdict pass">PASS<' in page
    assert "1 (dots)" in page and "--min-insertion" not in page  # thresholds were given

    text = summary.read_text()
    assert text.startswith("## lightning-igos check: PASS")
    assert "| 1 | 1 (dots) |" in text and "| mean insertion AUC |" in text

    from test_html_report import _browser, _headless  # the same headless-browser helpers

    browser = _browser()
    if browser is None:
        pytest.skip("no Chromium/Chrome installed: the page was checked as text only")
    dom = _headless(browser, tmp_path, "--dump-dom", html_path.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert re.search(r'id="verdict"[^>]*>PASS<', dom.stdout)
    assert len(re.findall(r"<img ", dom.stdout)) == 4


def test_model_attribute_names_are_used_without_a_file(workspace: Path, tmp_path: Path, monkeypatch,
                                                       capsys) -> None:
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    monkeypatch.setattr(ObjectClassifier, "classes", NAMES, raising=False)
    assert _check(workspace, "--report", str(tmp_path / "r.json")) == 0
    assert "3 (waves)" not in capsys.readouterr().out  # no probe image has class 3
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["images"][2]["target_name"] == "checks"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("stripes\ndots\nchecks\n", "3 class names in '.*names.txt' were given but the model has 4 classes"),
        ('{"0": "stripes", "7": "x"}', "name class 7, but the model has 4 classes"),
        ('["stripes", 2]', "must hold strings"),
        ("", "is empty"),
    ],
)
def test_bad_class_names_exit_2(workspace: Path, tmp_path: Path, capsys, content: str, message: str) -> None:
    names = tmp_path / "names.txt"
    names.write_text(content)
    assert _check(workspace, "--class-names", str(names)) == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and err.startswith("lightning-igos: error: --class-names") and "Traceback" not in err


def test_html_path_checked_before_the_work(workspace: Path, tmp_path: Path, capsys) -> None:
    assert _check(workspace, "--html", str(tmp_path)) == 2
    assert "--html" in capsys.readouterr().err
    assert _check(workspace, "--class-names", str(tmp_path / "missing.txt")) == 2
