"""`lightning-igos check` outputs: --class-names, --html and the GitHub step summary."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest
from helpers import FASTEST_ARGS, check_args, tiny_check_workspace

from lightning_igos.cli import main
from lightning_igos.demo.toy_module import ObjectClassifier

NAMES = ["stripes", "dots", "checks", "waves"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_checkpoint) -> Path:
    """A Lightning checkpoint of a tiny 4-class model (one training step) and a 3-image probe."""
    return tiny_check_workspace(tmp_path_factory.mktemp("check_outputs"), tiny_checkpoint, num_probe=3)


def _args(workspace: Path, *extra: str) -> list[str]:
    return check_args(*extra, checkpoint=str(workspace / "run.ckpt"), probe=str(workspace / "probe.pt"),
                      fast=FASTEST_ARGS)


def _check(workspace: Path, *extra: str) -> int:
    return main(_args(workspace, *extra))


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
    assert len(re.findall("data:image/(?:jpeg|png);base64,", page)) == 4  # three panels and the overlay grid
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


# ----------------------------------------------------------------------------- one run's outputs


def test_every_output_carries_the_run_id_and_stale_panels_are_removed(workspace: Path, tmp_path: Path,
                                                                      monkeypatch) -> None:
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    images = tmp_path / "panels"
    images.mkdir()
    for i in range(6):  # an earlier run's panels of a 6-image probe
        (images / f"probe_{i}.png").write_bytes(b"old")
    (images / "notes.txt").write_text("mine")  # not a panel: kept
    report_path, html_path = tmp_path / "report.json", tmp_path / "report.html"
    assert _check(workspace, "--report", str(report_path), "--html", str(html_path), "--images", str(images)) == 0

    report = json.loads(report_path.read_text())
    run_id = report["run_id"]
    assert re.fullmatch(r"[0-9a-f]{32}", run_id)
    assert f'<td id="run-id">{run_id}</td>' in html_path.read_text(encoding="utf-8")
    manifest = json.loads((images / "manifest.json").read_text())
    assert manifest == {"run_id": run_id, "files": ["overlays.png", "probe_0.png", "probe_1.png", "probe_2.png"]}
    assert sorted(p.name for p in images.iterdir()) == ["manifest.json", "notes.txt", "overlays.png",
                                                        "probe_0.png", "probe_1.png", "probe_2.png"]
    assert (images / "probe_0.png").read_bytes().startswith(b"\x89PNG")

    from lightning_igos.cli.html_report import render_markdown

    assert f"run {run_id}" in render_markdown(report)

    assert _check(workspace, "--report", str(report_path)) == 0  # each run has its own id
    assert json.loads(report_path.read_text())["run_id"] != run_id


def test_an_interrupted_check_leaves_every_previous_output_as_it_was(workspace: Path, tmp_path: Path,
                                                                     monkeypatch) -> None:
    import lightning_igos.cli.check as check

    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    report_path, html_path, images = tmp_path / "report.json", tmp_path / "report.html", tmp_path / "panels"
    assert _check(workspace, "--report", str(report_path), "--html", str(html_path), "--images", str(images)) == 0
    before = {p: p.read_bytes() for p in [report_path, html_path, *images.iterdir()]}

    def interrupted(*args, **kwargs):  # Ctrl-C after the report and the panels were written, before the HTML
        raise KeyboardInterrupt

    monkeypatch.setattr(check, "write_html", interrupted)
    assert _check(workspace, "--report", str(report_path), "--html", str(html_path), "--images", str(images)) == 130
    after = {p: p.read_bytes() for p in [report_path, html_path, *images.iterdir()]}
    assert after == before
    leftovers = [p.name for p in [*tmp_path.iterdir(), *images.iterdir()] if p.name.endswith(".tmp")]
    assert leftovers == []


@pytest.mark.skipif(sys.platform == "win32", reason="folder locks are POSIX flock")
def test_a_concurrent_run_waits_for_the_outputs_folder(tmp_path: Path) -> None:
    import fcntl
    import threading
    import time

    from lightning_igos.cli.outputs import one_run, write_bytes

    target = tmp_path / "report.json"
    target.write_bytes(b"old")
    descriptor = os.open(tmp_path, os.O_RDONLY)
    fcntl.flock(descriptor, fcntl.LOCK_EX)  # another run replacing its outputs there

    def run() -> None:
        with one_run("second"):
            write_bytes(target, b"new")

    worker = threading.Thread(target=run)
    worker.start()
    time.sleep(0.5)
    assert target.read_bytes() == b"old"  # waiting for the lock
    os.close(descriptor)
    worker.join(10)
    assert target.read_bytes() == b"new"


SLOW_HTML = '''
import time
from pathlib import Path

import lightning_igos.cli.check as check

_write_html = check.write_html


def slow_write_html(path, *args, **kwargs):
    Path(path).with_name("writing_html").write_text("now")  # the report and the panels are written by now
    time.sleep(60)
    return _write_html(path, *args, **kwargs)


check.write_html = slow_write_html
'''


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM")
def test_a_terminated_check_leaves_the_previous_outputs_and_no_temporary_file(workspace: Path,
                                                                              tmp_path: Path) -> None:
    import signal
    import subprocess
    import time

    (tmp_path / "slow_html.py").write_text(SLOW_HTML)
    report_path, images = tmp_path / "report.json", tmp_path / "panels"
    report_path.write_text("old report\n")
    images.mkdir()
    (images / "probe_0.png").write_bytes(b"old panel")
    args = [sys.executable, "-m", "lightning_igos", *_args(workspace, "--plugin", "slow_html", "--report",
                                                           str(report_path), "--images", str(images),
                                                           "--html", str(tmp_path / "report.html"))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    deadline = time.monotonic() + 240
    while not (tmp_path / "writing_html").exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143, err
    assert report_path.read_text() == "old report\n"
    assert sorted(p.name for p in images.iterdir()) == ["probe_0.png"]
    assert (images / "probe_0.png").read_bytes() == b"old panel"
    assert not (tmp_path / "report.html").exists()
    assert [p.name for p in [*tmp_path.iterdir(), *images.iterdir()] if p.name.endswith(".tmp")] == []
