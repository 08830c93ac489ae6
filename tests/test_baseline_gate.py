"""The gate relative to the last good run: ``check --baseline-report`` and ``lightning-igos compare``.

A checkpoint trained for a few seconds on the generated task, a copy with its head re-initialised,
a 4-image probe and a second probe; the solver settings are tiny. The commands run through
``main(argv)`` in this process (the same code path as the console script).
"""

from __future__ import annotations

import json
import math
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from helpers import FAST_ARGS as FAST
from helpers import MODEL, fit_object_classifier
from helpers import check_args as check
from helpers import run_main as run
from hypothesis import given
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from lightning_igos.callback import IGOSCallback
from lightning_igos.cli import main
from lightning_igos.cli.compare import DEFAULT_MAX_DROP, compare_reports, parse_max_drop
from lightning_igos.demo.synthetic import make_object_images
from lightning_igos.demo.toy_module import ObjectClassifier
from lightning_igos.intervals import bootstrap_interval, paired_interval
from lightning_igos.probe import save_probe

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """``run.ckpt`` (trained), ``reset.ckpt`` (its head re-initialised), ``probe.pt`` and ``other_probe.pt``."""
    root = tmp_path_factory.mktemp("baseline")
    trainer, module = fit_object_classifier(root, width=8)
    trainer.save_checkpoint(root / "run.ckpt")
    torch.manual_seed(1)
    module.model.classifier.reset_parameters()
    trainer.save_checkpoint(root / "reset.ckpt")
    probe = make_object_images(4, image_size=32, seed=100)
    save_probe(root / "probe.pt", probe.images, probe.labels, probe.mean, probe.std)
    other = make_object_images(4, image_size=32, seed=101)
    save_probe(root / "other_probe.pt", other.images, other.labels, other.mean, other.std)
    return root


@pytest.fixture(scope="module")
def baseline(workspace: Path) -> Path:
    """``old.json``: the report of ``run.ckpt`` (written once for the module, with --html: it carries overlays)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(workspace)
        assert main(check("--report", "old.json", "--html", "old.html")) == 0
    return workspace / "old.json"


def comparison_numbers(comparison: dict) -> list[tuple]:
    return [(e["name"], e["baseline"], e["new"], e["change"], tuple(e["change_ci"]), e["passed"])
            for e in comparison["statistics"]]


def test_same_checkpoint_passes_against_its_own_baseline_and_compare_agrees(workspace, baseline, monkeypatch,
                                                                            capsys):
    result = run(workspace, monkeypatch, capsys,
                 *check("--baseline-report", "old.json", "--report", "same.json", "--markdown", "same.md"))
    assert result.returncode == 0, result.stderr
    report = json.loads((workspace / "same.json").read_text())
    comparison = report["comparison"]
    assert comparison["passed"] and comparison["failed"] == []
    by_name = {e["name"]: e for e in comparison["statistics"]}
    assert by_name["insertion_auc"]["max_drop"] == DEFAULT_MAX_DROP["insertion_auc"]
    assert by_name["insertion_auc"]["change"] == 0 and by_name["insertion_auc"]["change_ci"] == [0.0, 0.0]
    assert "baseline: PASS" in result.stdout and "95% CI of change" in result.stdout
    assert "Against the baseline: PASS" in (workspace / "same.md").read_text()

    compared = run(workspace, monkeypatch, capsys, "compare", "old.json", "same.json")
    assert compared.returncode == 0, compared.stderr
    assert "baseline: PASS" in compared.stdout
    again = compare_reports(json.loads(baseline.read_text()), report)
    assert comparison_numbers(again) == comparison_numbers(comparison)


def test_head_reset_fails_on_the_named_statistic_and_compare_agrees(workspace, baseline, monkeypatch, capsys):
    result = run(workspace, monkeypatch, capsys, *check("--baseline-report", "old.json", "--report", "reset.json",
                                                        "--html", "reset.html", checkpoint="reset.ckpt"))
    assert result.returncode == 1, result.stderr
    report = json.loads((workspace / "reset.json").read_text())
    assert not report["passed"] and "insertion_auc" in report["comparison"]["failed"]
    entry = {e["name"]: e for e in report["comparison"]["statistics"]}["insertion_auc"]
    assert entry["worse_by"] > entry["max_drop"] and entry["passed"] is False
    low, high = entry["change_ci"]
    assert low <= entry["change"] <= high
    assert re.search(r"insertion AUC .* FAIL", result.stdout)
    assert "insertion_auc" in result.stdout.splitlines()[-1]  # the verdict names it

    # The HTML shows the baseline's and the new overlay of every probe image side by side.
    page = (workspace / "reset.html").read_text()
    for i in range(4):
        assert f'id="baseline-overlay-{i}"' in page and f'id="new-overlay-{i}"' in page
    assert 'id="comparison"' in page and "FAIL" in page

    compared = run(workspace, monkeypatch, capsys, "compare", "old.json", "reset.json", "--html", "cmp.html")
    assert compared.returncode == 1
    assert comparison_numbers(compare_reports(json.loads(baseline.read_text()), report)) == \
        comparison_numbers(report["comparison"])
    assert 'id="new-overlay-3"' in (workspace / "cmp.html").read_text()
    # A margin wide enough lets the same drop pass, in both commands.
    wide = run(workspace, monkeypatch, capsys, "compare", "old.json", "reset.json", "--max-drop", "insertion_auc=1",
               "--max-drop", "deletion_auc=1")
    assert wide.returncode == 0, wide.stdout


def test_a_baseline_of_another_probe_or_method_is_an_input_error(workspace, baseline, monkeypatch, capsys):
    result = run(workspace, monkeypatch, capsys,
                 *check("--baseline-report", "old.json", "--report", "other.json", probe="other_probe.pt"))
    assert result.returncode == 2
    assert "another probe" in result.stderr and "other_probe.pt" in result.stderr
    assert not (workspace / "other.json").exists()  # refused before any work

    assert run(workspace, monkeypatch, capsys, *check("--report", "other.json", probe="other_probe.pt")).returncode == 0
    compared = run(workspace, monkeypatch, capsys, "compare", "old.json", "other.json")
    assert compared.returncode == 2 and "another probe" in compared.stderr

    method = run(workspace, monkeypatch, capsys, *check("--baseline-report", "old.json", "--method", "gradient"))
    assert method.returncode == 2 and "'igos' in the baseline, 'gradient' now" in method.stderr


def test_another_option_warns_and_goes_on(workspace, baseline, monkeypatch, capsys):
    old = json.loads(baseline.read_text())
    new = json.loads(baseline.read_text())
    new["settings"]["iterations"] = 3
    comparison = compare_reports(old, new)
    assert comparison["passed"]
    assert comparison["warnings"] == ["iterations differs: 2 in the baseline, 3 now"]


def test_bad_margins_are_input_errors(workspace, baseline, monkeypatch, capsys):
    unknown = run(workspace, monkeypatch, capsys, *check("--baseline-report", "old.json", "--max-drop", "nope=0.1"))
    assert unknown.returncode == 2 and "no statistic named 'nope'" in unknown.stderr and "insertion_auc" in \
        unknown.stderr
    alone = run(workspace, monkeypatch, capsys, *check("--max-drop", "insertion_auc=0.1"))
    assert alone.returncode == 2 and "--baseline-report" in alone.stderr
    directionless = run(workspace, monkeypatch, capsys, "compare", "old.json", "old.json", "--max-drop",
                        "clean_score=0.1")
    assert directionless.returncode == 2 and "no better direction" in directionless.stderr
    negative = run(workspace, monkeypatch, capsys, "compare", "old.json", "old.json", "--max-drop",
                   "insertion_auc=-1")
    assert negative.returncode == 2
    (workspace / "not_a_report.json").write_text("{}")
    foreign = run(workspace, monkeypatch, capsys, "compare", "not_a_report.json", "old.json")
    assert foreign.returncode == 2 and "not a report of lightning-igos check" in foreign.stderr
    with pytest.raises(ValueError, match="NAME=X"):
        parse_max_drop("insertion_auc")


def test_every_mean_has_its_interval_in_json_table_html_and_markdown(workspace, baseline, monkeypatch, capsys):
    result = run(workspace, monkeypatch, capsys, *check("--report", "ci.json", "--html", "ci.html",
                                                        "--markdown", "ci.md"))
    assert result.returncode == 0
    report = json.loads((workspace / "ci.json").read_text())
    assert set(report["mean_ci"]) == set(report["mean"])
    for name, (low, high) in report["mean_ci"].items():
        values = [row[name] for row in report["images"]]
        if all(v is not None and math.isfinite(v) for v in values):
            assert min(values) <= low <= report["mean"][name] <= high <= max(values), name
    assert report["interval"]["level"] == 0.95
    assert "95% CI low" in result.stdout and "95% CI high" in result.stdout
    assert '<tr class="ci"><td>95% CI</td>' in (workspace / "ci.html").read_text()
    assert "| 95% CI |" in (workspace / "ci.md").read_text()


def test_the_readme_ci_recipe_runs_end_to_end(workspace, baseline, monkeypatch, capsys):
    """The two commands of the README's GitHub Actions recipe: main saves the report, a pull request checks
    against it (the artifact downloaded into baseline/); the model, checkpoint and probe are this workspace's."""
    text = README.read_text()
    recipe = text[text.index("<!-- ci-recipe -->"):text.index("<!-- /ci-recipe -->")]
    commands = [" ".join(line.strip().rstrip("\\").strip() for line in block.splitlines())
                for block in re.findall(r"run: \|\n((?:\s+.*\n)+?)(?=\s+- |\s*```)", recipe)]
    commands = [command for command in commands if command.startswith("lightning-igos check")]
    assert len(commands) == 2, commands
    folder = workspace / "recipe"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    codes = []
    for command in commands:
        argv = shlex.split(command)[1:]
        for option, value in (("--model", MODEL), ("--checkpoint", str(workspace / "run.ckpt")),
                              ("--probe", str(workspace / "probe.pt"))):
            argv[argv.index(option) + 1] = value
        codes.append(run(folder, monkeypatch, capsys, *argv, *FAST).returncode)
        for produced in folder.glob("*.json"):  # what upload-artifact / download-artifact carry between the jobs
            (folder / "baseline").mkdir(exist_ok=True)
            shutil.copy(produced, folder / "baseline" / produced.name)
    assert codes == [0, 0]
    report = json.loads((folder / argv[argv.index("--report") + 1]).read_text())
    assert report["comparison"]["passed"] and report["comparison"]["baseline"].startswith("baseline")


def test_the_callback_report_is_a_baseline_for_the_check(workspace, tmp_path, monkeypatch, capsys):
    """``save_report`` after fit writes the check's format; the check of the saved checkpoint on the saved probe
    compares with it and passes with no change."""
    probe = make_object_images(4, image_size=32, seed=100)
    callback = IGOSCallback(probe=(probe.images, probe.labels), iterations=2, ig_steps=3, metric_steps=8,
                            log_images=False, mean=probe.mean, std=probe.std)
    data = make_object_images(64, image_size=32, seed=0)
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path, accelerator="cpu",
                         callbacks=[callback], num_sanity_val_steps=0)
    trainer.fit(ObjectClassifier(width=8), DataLoader(data.dataset(), batch_size=32),
                DataLoader(data.dataset(), batch_size=32))
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    callback.save_probe(tmp_path / "probe.pt")
    callback.save_report(tmp_path / "training.json")
    saved = json.loads((tmp_path / "training.json").read_text())
    assert saved["format"] == "lightning-igos-check" and len(saved["images"]) == 4 and saved["mean_ci"]
    result = run(tmp_path, monkeypatch, capsys, *check("--baseline-report", "training.json", "--report", "ci.json",
                                                       checkpoint="last.ckpt"))
    assert result.returncode == 0, result.stderr + result.stdout
    comparison = json.loads((tmp_path / "ci.json").read_text())["comparison"]
    assert comparison["warnings"] == []
    for entry in comparison["statistics"]:
        assert entry["change"] == pytest.approx(0, abs=1e-5), entry["name"]


def test_compare_imports_no_torch(workspace, baseline):
    code = ("import sys; from lightning_igos.cli import main; "
            "code = main(['compare', 'old.json', 'old.json']); print(code, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=workspace, capture_output=True, text=True, check=True)
    assert out.stdout.split()[-2:] == ["0", "False"]


# ----------------------------------------------------------------------------- the intervals


values = st.lists(st.floats(-10, 10, allow_nan=False), min_size=1, max_size=40)


@given(values)
def test_bootstrap_interval_lies_within_the_values_and_is_seeded(data):
    low, high = bootstrap_interval(data)
    assert min(data) - 1e-9 <= low <= high <= max(data) + 1e-9
    assert bootstrap_interval(data) == (low, high)


@given(values, st.floats(-5, 5, allow_nan=False))
def test_paired_interval_of_a_constant_shift_is_that_shift(data, shift):
    low, high = paired_interval(data, [v + shift for v in data])
    assert low == pytest.approx(shift, abs=1e-9) and high == pytest.approx(shift, abs=1e-9)


def test_missing_values_are_left_out_of_an_interval():
    assert bootstrap_interval([0.5, None, float("nan")]) == (0.5, 0.5)
    assert all(math.isnan(v) for v in bootstrap_interval([None]))
