"""What `lightning-igos check` gates on: empty explanations fail it, and no output ever overwrites an input.

A checkpoint trained for a few seconds and a 4-image probe; the solver settings are tiny.
One run of each kind goes through the real command (`python -m lightning_igos`), the rest
through `main(argv)` in this process (the same code path, without importing torch again).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import check_args, copy_files, run_cli, run_main

from lightning_igos.cli.errors import InputError
from lightning_igos.cli.outputs import check_outputs, write_bytes, write_with

NAN_MODELS = '''
import torch

from lightning_igos.demo.synthetic import SmallCNN


class NaNWithGrad(SmallCNN):
    """Finite logits without autograd (the check's probe pass, the metrics); NaN when gradients are taken."""

    def forward(self, x):
        logits = super().forward(x)
        if torch.is_grad_enabled():
            return logits * float("nan")
        return logits
'''


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, trained_run) -> Path:
    root = copy_files(trained_run, tmp_path_factory.mktemp("gate"), "run.ckpt", "cnn_state.pt", "probe.pt")
    (root / "names.txt").write_text("stripes\ndots\nchecks\nwaves\n")
    (root / "nan_models.py").write_text(NAN_MODELS)
    return root


def _must_not_run(*args, **kwargs):
    raise AssertionError("the explanations ran although an output collides with an input")


# ----------------------------------------------------------------------------- empty explanations


def test_a_normal_run_has_no_empty_explanation(workspace, monkeypatch, capsys):
    result = run_main(workspace, monkeypatch, capsys, *check_args("--report", "normal.json"))
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((workspace / "normal.json").read_text())
    assert report["num_empty"] == 0 and report["empty_by_reason"] == {}
    assert [(row["empty"], row["empty_reason"]) for row in report["images"]] == [(False, None)] * 4
    assert "EMPTY" not in result.stdout


def test_unmoved_masks_fail_the_check_and_are_named(workspace, tmp_path, monkeypatch):
    """No descent at all: every mask stays at ones, whatever the AUCs say, and the gate says so."""
    summary = tmp_path / "summary.md"
    env = {**os.environ, "GITHUB_STEP_SUMMARY": str(summary)}
    args = check_args("--iterations", "0", "--min-insertion", "0", "--report", "empty.json", "--html", "empty.html")
    result = subprocess.run([sys.executable, "-m", "lightning_igos", *args], cwd=workspace, capture_output=True,
                            text=True, timeout=300, env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "4 of 4 explanations are empty (mask never moved: 4)" in result.stdout
    rows = [line for line in result.stdout.splitlines() if line.strip()[:1].isdigit() and "EMPTY" in line]
    assert len(rows) == 4 and all(line.endswith("EMPTY (mask never moved)") for line in rows)
    assert result.stdout.rstrip().splitlines()[-1].startswith("FAIL")

    report = json.loads((workspace / "empty.json").read_text())
    assert report["passed"] is False and report["num_empty"] == 4
    assert report["empty_by_reason"] == {"mask never moved": 4}
    assert all(row["empty"] is True and row["empty_reason"] == "mask never moved" for row in report["images"])
    assert report["thresholds"][0]["passed"] is True  # the threshold held: the empty explanations failed it

    page = (workspace / "empty.html").read_text(encoding="utf-8")
    assert 'class="verdict fail">FAIL: 4 of 4 explanations are empty (mask never moved: 4)<' in page
    assert page.count("EMPTY (mask never moved)") >= 4 and page.count('class="fail empty"') == 4
    text = summary.read_text()
    assert "FAIL: 4 of 4 explanations are empty" in text.splitlines()[0]
    assert text.count("**EMPTY (mask never moved)**") == 4


def test_regularisers_that_outweigh_the_evidence_fail_the_check(workspace, monkeypatch, capsys):
    result = run_main(workspace, monkeypatch, capsys, *check_args("--l1", "1e30", "--tv", "1e30"))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "explanations are empty (mask never moved:" in result.stdout


def test_allow_empty_passes_and_still_names_them(workspace, monkeypatch, capsys):
    result = run_main(workspace, monkeypatch, capsys,
                      *check_args("--iterations", "0", "--allow-empty", "--report", "allowed.json"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 of 4 explanations are empty (mask never moved: 4): allowed by --allow-empty" in result.stdout
    report = json.loads((workspace / "allowed.json").read_text())
    assert report["passed"] is True and report["num_empty"] == 4 and report["settings"]["allow_empty"] is True


def test_allow_empty_does_not_hide_a_failed_threshold(workspace, monkeypatch, capsys):
    result = run_main(workspace, monkeypatch, capsys,
                      *check_args("--iterations", "0", "--allow-empty", "--max-deletion", "0"))
    assert result.returncode == 1
    assert result.stdout.rstrip().splitlines()[-1].startswith("FAIL: 1 of 1 thresholds failed")


def test_nan_gradients_never_pass(workspace, monkeypatch, capsys):
    """Finite logits on the probe pass, NaN once autograd is on: the solver's gradients are NaN."""
    args = check_args("--report", "nan.json", model="nan_models:NaNWithGrad", checkpoint="cnn_state.pt")
    result = run_main(workspace, monkeypatch, capsys, *args)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "4 of 4 explanations are empty (non-finite gradient: 4)" in result.stdout
    report = json.loads((workspace / "nan.json").read_text())
    assert report["passed"] is False
    assert [row["empty_reason"] for row in report["images"]] == ["non-finite gradient"] * 4


def test_check_settings_take_allow_empty(workspace):
    from lightning_igos.cli.check import CheckSettings

    assert CheckSettings("m:M", "c", "p").allow_empty is False
    with pytest.raises(TypeError, match="allow_empty"):
        CheckSettings("m:M", "c", "p", allow_empty="yes")


# ----------------------------------------------------------------------------- outputs never overwrite inputs


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--report", "probe.pt"], "--report 'probe.pt' is the file given as --probe 'probe.pt'"),
        (["--html", "run.ckpt"], "--html 'run.ckpt' is the file given as --checkpoint 'run.ckpt'"),
        (["--report", "names.txt", "--class-names", "names.txt"], "--report 'names.txt' is the file given as "
                                                                   "--class-names"),
        (["--report", "same.out", "--html", "same.out"], "--html 'same.out' is the file given as --report 'same.out'"),
        (["--report", "link_to_checkpoint.json"], "--report 'link_to_checkpoint.json' is the file given as "
                                                  "--checkpoint 'run.ckpt'"),
        (["--html", "hard_link.html"], "--html 'hard_link.html' is the file given as --probe 'probe.pt'"),
        (["--report", "panels/overlays.png", "--images", "panels"], "--images 'panels' would write overlays.png "
                                                                    "over --report"),
        (["--images", "linked_panels"], "--images 'linked_panels' would write 'probe_0.png', which is --checkpoint"),
    ],
    ids=["report-is-probe", "html-is-checkpoint", "report-is-class-names", "report-is-html", "symlink-to-checkpoint",
         "hard-link-to-probe", "report-among-panels", "panel-links-to-checkpoint"],
)
def test_an_output_that_is_an_input_is_refused_and_nothing_changes(workspace, monkeypatch, capsys, extra, message):
    monkeypatch.chdir(workspace)
    for name, target in (("link_to_checkpoint.json", "run.ckpt"),):
        if not os.path.lexists(name):
            os.symlink(target, name)
    if not os.path.lexists("hard_link.html"):
        os.link("probe.pt", "hard_link.html")
    os.makedirs("linked_panels", exist_ok=True)
    if not os.path.lexists("linked_panels/probe_0.png"):
        os.symlink("../run.ckpt", "linked_panels/probe_0.png")
    before = _digests(workspace)
    monkeypatch.setattr("lightning_igos.cli.check.explain", _must_not_run)
    monkeypatch.setattr("lightning_igos.cli.check.load_model", _must_not_run)
    result = run_main(workspace, monkeypatch, capsys, *check_args(*extra))
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert _digests(workspace) == before
    assert not (workspace / "same.out").exists() and not (workspace / "panels").exists()
    assert os.path.islink(workspace / "link_to_checkpoint.json")


def test_an_output_onto_an_input_through_the_real_command(workspace):
    before = _digests(workspace)
    result = run_cli(workspace, *check_args("--report", "probe.pt"))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip() == ("lightning-igos: error: --report 'probe.pt' is the file given as --probe "
                                     "'probe.pt': an output would overwrite an input; give another path.")
    assert _digests(workspace) == before


def test_a_dangling_report_link_creates_nothing_before_the_work(workspace, monkeypatch, capsys):
    monkeypatch.chdir(workspace)
    os.makedirs("reports", exist_ok=True)
    os.symlink("reports/dangling_target.json", "dangling.json")
    # A later input error: the pre-flight checks ran, nothing else did.
    result = run_main(workspace, monkeypatch, capsys, *check_args("--report", "dangling.json", model="no_such:Net"))
    assert result.returncode == 2
    assert not (workspace / "reports" / "dangling_target.json").exists()
    assert os.path.islink(workspace / "dangling.json")
    # A valid run writes the report through the link: the link stays, its target is the report.
    result = run_main(workspace, monkeypatch, capsys, *check_args("--report", "dangling.json"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert os.path.islink(workspace / "dangling.json")
    assert json.loads((workspace / "reports" / "dangling_target.json").read_text())["format"] == "lightning-igos-check"


def test_a_missing_output_folder_is_created_only_when_the_results_are_written(workspace, monkeypatch, capsys):
    args = check_args("--report", "new/deeper/r.json", "--images", "new_panels", "--html", "new_html/r.html",
                      model="no_such:Net")
    assert run_main(workspace, monkeypatch, capsys, *args).returncode == 2
    assert not any((workspace / name).exists() for name in ("new", "new_panels", "new_html"))


def test_outputs_are_replaced_atomically(workspace, monkeypatch, capsys):
    """The report replaces the old file (a new inode), leaving no temporary file behind."""
    monkeypatch.chdir(workspace)
    Path("atomic.json").write_text("old report\n")
    os.link("atomic.json", "atomic_old_copy.json")
    result = run_main(workspace, monkeypatch, capsys, *check_args("--report", "atomic.json", "--images", "atomic"))
    assert result.returncode == 0, result.stderr
    assert json.loads(Path("atomic.json").read_text())["passed"] is True
    assert Path("atomic_old_copy.json").read_text() == "old report\n"  # replaced, not written over
    leftovers = [p.name for p in [*workspace.iterdir(), *(workspace / "atomic").iterdir()] if p.name.endswith(".tmp")]
    assert leftovers == []
    assert sorted(p.name for p in (workspace / "atomic").iterdir()) == [
        "manifest.json", "overlays.png", "probe_0.png", "probe_1.png", "probe_2.png", "probe_3.png"]


def test_a_failed_write_leaves_the_previous_file(tmp_path):
    target = tmp_path / "report.json"
    target.write_text("previous\n")

    def half_then_fail(temporary: Path) -> None:
        temporary.write_text("half a rep")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_with(target, half_then_fail)
    assert target.read_text() == "previous\n" and sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]
    target.chmod(0o640)
    write_bytes(target, b"new\n")
    assert target.read_bytes() == b"new\n" and target.stat().st_mode & 0o777 == 0o640


def test_check_outputs_creates_nothing(tmp_path):
    check_outputs({"--probe": tmp_path / "p.pt"}, {"--report": tmp_path / "a" / "b" / "r.json"}, tmp_path / "imgs")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="--report .* cannot be written: .* is not a folder"):
        check_outputs({}, {"--report": tmp_path / "file" / "r.json"})
    with pytest.raises(InputError, match="--images .* is a file, not a folder"):
        check_outputs({}, {}, tmp_path / "file")


# ----------------------------------------------------------------------------- options


@pytest.mark.parametrize(("option", "text", "field", "value"), [
    ("--seed", "1180591620717411303424", "seed", 1180591620717411303424), ("--seed", str(2**63), "seed", 2**63),
    ("--seed", "-1", "seed", -1), ("--ig-steps", "0", "ig_steps", 0), ("--tv-power", "0.5", "tv_power", 0.5),
    ("--mask-size", "0", "mask_size", 0), ("--l1", "nan", "l1", float("nan")), ("--iterations", "-1", "iterations", -1),
])
def test_a_solver_option_is_judged_by_the_config_in_its_words(workspace, monkeypatch, capsys, option, text, field,
                                                              value):
    """The command line only reads the text; IGOSConfig says what is wrong with the value, as it does in Python."""
    from lightning_igos.core.config import IGOSConfig

    with pytest.raises(ValueError) as raised:
        IGOSConfig(**{field: value})
    monkeypatch.setattr("lightning_igos.cli.check.explain", _must_not_run)
    result = run_main(workspace, monkeypatch, capsys, *check_args(f"{option}={text}"))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip() == f"lightning-igos: error: {option}: {str(raised.value).replace('`', '')}"


@pytest.mark.parametrize(("option", "text"), [("--seed", "1e3"), ("--ig-steps", "2.5"), ("--mask-size", "4x")])
def test_an_option_that_is_no_number_is_a_usage_error(workspace, monkeypatch, capsys, option, text):
    monkeypatch.setattr("lightning_igos.cli.check.explain", _must_not_run)
    result = run_main(workspace, monkeypatch, capsys, *check_args(f"{option}={text}"))
    assert result.returncode == 2
    assert f"argument {option}: must be an integer" in result.stderr and repr(text) in result.stderr


def test_the_largest_seed_is_accepted(workspace, monkeypatch, capsys):
    result = run_main(workspace, monkeypatch, capsys,
                      *check_args("--seed", str(2**63 - 1), "--iterations", "1", "--report", "seed.json"))
    assert result.returncode == 0, result.stderr
    assert json.loads((workspace / "seed.json").read_text())["settings"]["seed"] == 2**63 - 1
