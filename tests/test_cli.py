"""`lightning-igos check` end to end: a tiny trained checkpoint, a probe, the real command.

The main runs are subprocesses (`python -m lightning_igos`), so exit statuses,
stdout/stderr and the absence of tracebacks are what a CI job would see. Most input
errors run in-process through `main(argv)` as well: each subprocess spends seconds
importing torch, and the error paths do not depend on the process. The solver settings
are tiny: these tests check the command, not the quality of the explanations.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from helpers import FAST_OPTIONS, MODEL, copy_files, option_args, run_cli, run_main
from helpers import check_args as _check_args

from lightning_igos.cli import main
from lightning_igos.cli.model_loading import match_state_dict_keys
from lightning_igos.cli.progress import ProgressLine
from lightning_igos.core.config import IGOSConfig
from lightning_igos.core.evaluation import evaluate
from lightning_igos.demo.synthetic import make_object_images
from lightning_igos.demo.toy_module import ObjectClassifier
from lightning_igos.probe import save_probe

FAST = option_args(FAST_OPTIONS)  # no --device: these runs take the command's default, "auto"

# Classes that do not fit the ObjectClassifier checkpoint, importable from the workspace.
OTHER_MODELS = '''
import pytorch_lightning as pl
from torch import nn

from lightning_igos.demo.synthetic import SmallCNN


class WideCNN(SmallCNN):
    def __init__(self):
        super().__init__(num_classes=4, width=8)


class NaNForLaterImages(SmallCNN):
    """Finite logits for the first image of a batch only."""

    def forward(self, x):
        out = super().forward(x).clone()
        out[1:] = float("nan")
        return out


class OtherModule(pl.LightningModule):
    def __init__(self, hidden: int = 3):
        super().__init__()
        self.layer = nn.Linear(hidden, 2)
'''


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, trained_run) -> Path:
    """A checkpoint trained for a few seconds, a state dict, probes good and bad."""
    root = copy_files(trained_run, tmp_path_factory.mktemp("cli"), "run.ckpt", "cnn_state.pt", "module_state.pt",
                      "probe.pt")
    probe = make_object_images(4, image_size=32, seed=100)
    save_probe(root / "probe_grey.pt", probe.images[:, :1], probe.labels)
    save_probe(root / "probe_target9.pt", probe.images, [0, 1, 9, 2])
    (root / "notes.txt").write_text("not a probe\n")
    # Files whose unpickling would run code (it would create the folder `ran_code`).
    checkpoint = torch.load(root / "run.ckpt", weights_only=True)
    checkpoint["hyper_parameters"]["payload"] = _RunsCode(root / "ran_code")
    torch.save(checkpoint, root / "code_in_hparams.ckpt")
    cnn_state = torch.load(root / "cnn_state.pt", weights_only=True)
    torch.save({**cnn_state, "payload": _RunsCode(root / "ran_code")}, root / "code_in_state.pt")
    torch.save({"format": "lightning-igos-probe", "version": 1, "images": probe.images, "targets": probe.labels,
                "mean": _RunsCode(root / "ran_code"), "std": None}, root / "code_in_probe.pt")
    with open(root / "plain.pkl", "wb") as f:
        pickle.dump({"weights": [1.0, 2.0]}, f, protocol=4)
    (root / "a_folder").mkdir()
    (root / "other_models.py").write_text(OTHER_MODELS)
    return root


class _RunsCode:
    """Unpickling it creates a folder: evidence that a loader ran pickled code."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def __reduce__(self):
        return (os.makedirs, (str(self.folder),))


def check_args(*extra: str, **files: str) -> list[str]:
    return _check_args(*extra, fast=FAST, **files)


def printed_means(stdout: str) -> list[float]:
    row = next(line for line in stdout.splitlines() if line.split()[:1] == ["mean"])
    return [float(v) for v in row.split()[1:]]


@pytest.fixture(scope="module")
def passing(workspace) -> tuple[subprocess.CompletedProcess, dict]:
    result = run_cli(workspace, *check_args("--min-insertion", "0", "--max-deletion", "1", "--report", "out/r.json",
                                            "--images", "panels"))
    report = json.loads((workspace / "out" / "r.json").read_text()) if result.returncode == 0 else {}
    return result, report


def test_lenient_thresholds_pass_quietly(passing):
    result, report = passing
    assert result.returncode == 0, result.stderr
    # Not a terminal: no progress bar, and Lightning's info lines are hidden.
    assert result.stderr == ""
    assert "PASS" in result.stdout
    assert report["passed"] is True
    assert [t["passed"] for t in report["thresholds"]] == [True, True]


def test_report_is_consistent_with_the_table(passing):
    result, report = passing
    assert report["format"] == "lightning-igos-check" and report["version"] == 1
    assert len(report["images"]) == 4
    for name in ("insertion_auc", "deletion_auc", "clean_score", "mask_mean"):
        mean = sum(row[name] for row in report["images"]) / 4
        assert report["mean"][name] == pytest.approx(mean, abs=1e-9)
    m = report["mean"]
    # The table's columns are the report's labelled statistics, in order, each in its own format.
    labelled = [s for s in report["statistics"] if s["label"]]
    assert [s["name"] for s in labelled][:4] == [
        "clean_score", "insertion_auc", "deletion_auc", "insertion_auc_normalized"]
    assert printed_means(result.stdout) == [float(format(m[s["name"]], s["format"])) for s in labelled]
    for row in report["images"]:
        assert row["insertion_auc_normalized"] == pytest.approx(row["insertion_auc"] / row["clean_score"], rel=1e-5)
        assert f"{row['insertion_auc']:.4f}" in result.stdout
    settings = report["settings"]
    assert settings["iterations"] == 2 and settings["ig_steps"] == 3 and settings["metric_steps"] == 8
    assert settings["seed"] == 0 and settings["device"] == "cpu" and settings["method"] == "igos"
    assert set(report["versions"]) == {"lightning_igos", "torch", "python"}


def test_report_is_the_evaluation_of_the_probe(workspace, passing):
    """The check reports what evaluate() gives in Python for the same checkpoint, probe and options."""
    _, report = passing
    model = ObjectClassifier.load_from_checkpoint(workspace / "run.ckpt", map_location="cpu")
    probe = torch.load(workspace / "probe.pt", weights_only=True)
    config = IGOSConfig(iterations=2, ig_steps=3, metric_steps=8)
    evaluation = evaluate(model, probe["images"], probe["targets"], config)
    stats = evaluation.per_image()
    assert set(report["mean"]) == set(stats) - {"empty_fraction"}  # empty explanations are reported on their own
    for name in report["mean"]:
        values = stats[name]
        assert [row[name] for row in report["images"]] == pytest.approx(values.tolist(), abs=1e-6), name


def test_failed_threshold_exits_1_and_says_which(workspace):
    result = run_cli(workspace, *check_args("--min-insertion", "0", "--max-deletion", "0", "--normalized",
                                            "--report", "fail.json"))
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert any("insertion AUC (normalized)" in line and line.endswith("pass") for line in lines)
    assert any("deletion AUC (normalized)" in line and line.endswith("FAIL") for line in lines)
    report = json.loads((workspace / "fail.json").read_text())
    assert report["passed"] is False
    failed = [t for t in report["thresholds"] if not t["passed"]]
    assert [t["name"] for t in failed] == ["max_deletion"]
    assert failed[0]["value"] == report["normalized_mean"]["deletion_auc"]


@pytest.mark.parametrize(
    ("model", "checkpoint", "in_process"),
    [
        ("lightning_igos.demo.synthetic:SmallCNN", "cnn_state.pt", False),
        ("lightning_igos.demo.synthetic:SmallCNN", "run.ckpt", True),
        (MODEL, "module_state.pt", True),
    ],
    ids=["raw-state-dict", "lightning-checkpoint", "lightning-module-from-state-dict"],
)
def test_state_dicts_load_into_plain_modules(workspace, passing, monkeypatch, capsys, model, checkpoint, in_process):
    """SmallCNN is the ObjectClassifier's `model`: same weights, same masks, same AUCs."""
    _, lightning_report = passing
    args = check_args("--report", f"{checkpoint}.json", model=model, checkpoint=checkpoint)
    result = run_main(workspace, monkeypatch, capsys, *args) if in_process else run_cli(workspace, *args)
    assert result.returncode == 0, result.stderr
    report = json.loads((workspace / f"{checkpoint}.json").read_text())
    assert report["mean"] == pytest.approx(lightning_report["mean"], abs=1e-6)


def test_images_option_writes_panels(workspace, passing):
    result, _ = passing
    assert result.returncode == 0, result.stderr
    written = sorted(p.name for p in (workspace / "panels").iterdir())
    panels = ["overlays.png", "probe_0.png", "probe_1.png", "probe_2.png", "probe_3.png"]
    assert written == ["manifest.json", *panels]  # the manifest names the run's panels
    assert json.loads((workspace / "panels" / "manifest.json").read_text())["files"] == panels
    for name in panels:
        assert (workspace / "panels" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# One of each kind through the real command; the others through main() (same code path).
SUBPROCESS_ERRORS = {"missing-checkpoint", "module-not-importable", "lightning-mismatch", "text-as-probe",
                     "wrong-channels", "usage"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (check_args(checkpoint="missing.ckpt"), "checkpoint file 'missing.ckpt' does not exist"),
        (check_args(probe="missing.pt"), "probe file 'missing.pt' does not exist"),
        (check_args(model="no_such_package.models:Net"), "cannot import module 'no_such_package.models'"),
        (check_args(model="lightning_igos.demo.toy_module:Missing"), "has no attribute 'Missing'"),
        (check_args(model="pathlib:Path"), "must name a torch.nn.Module subclass"),
        (check_args(model="other_models:WideCNN"), "checkpoint 'run.ckpt' does not fit --model other_models:WideCNN"),
        (check_args(model="other_models:OtherModule"), "checkpoint 'run.ckpt' does not fit --model other_models:Other"),
        (check_args(checkpoint="probe.pt"), "is not a Lightning checkpoint"),
        (check_args(probe="notes.txt"), "'notes.txt' is not a lightning-igos probe"),
        (check_args(probe="run.ckpt"), "'run.ckpt' is not a lightning-igos probe"),
        (check_args(probe="probe_grey.pt"), "does not fit --model"),
        (check_args(probe="probe_target9.pt"), "probe targets must be class indices below num_classes = 4"),
        (check_args("--mask-size", "64"), "mask_size must be between 1 and the image size"),
        (check_args("--min-insertion", "1.2"), "--min-insertion 1.2 could never pass: raw AUCs lie in [0, 1]"),
        (check_args("--max-deletion", "-0.1"), "--max-deletion -0.1 could never pass: raw AUCs lie in [0, 1]"),
        (check_args("--max-deletion", "1.5"), "--max-deletion 1.5 could never fail"),
        (check_args("--max-deletion", "-1", "--normalized"), "could never pass: normalized AUCs are >= 0"),
        (check_args("--report", "a_folder"), "--report 'a_folder' is a directory"),
        (check_args("--images", "notes.txt"), "--images 'notes.txt' is a file, not a folder"),
        (check_args(model="other_models:NaNForLaterImages", checkpoint="cnn_state.pt"),
         "returned NaN or infinite outputs on image(s) [1, 2, 3]"),
        (["check", "--model", MODEL, "--checkpoint", "run.ckpt"], "the following arguments are required: --probe"),
    ],
    ids=["missing-checkpoint", "missing-probe", "module-not-importable", "class-missing", "not-a-module",
         "state-dict-mismatch", "lightning-mismatch", "probe-as-checkpoint", "text-as-probe", "checkpoint-as-probe",
         "wrong-channels", "target-out-of-range", "bad-option", "raw-threshold-above-1", "raw-threshold-below-0",
         "vacuous-threshold", "negative-normalized-threshold", "report-is-a-folder", "images-is-a-file",
         "nan-logits", "usage"],
)
def test_input_errors_exit_2_with_one_line(workspace, monkeypatch, capsys, request, args, message):
    case = request.node.callspec.id
    # Every input error is found before the expensive work.
    monkeypatch.setattr("lightning_igos.cli.check.explain", _must_not_run)
    if case in SUBPROCESS_ERRORS:
        result = run_cli(workspace, *args)
    else:
        result = run_main(workspace, monkeypatch, capsys, *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert message in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(error_lines) == 1 and error_lines[0].startswith("lightning-igos")
    assert result.stdout == ""


def _must_not_run(*args, **kwargs):
    raise AssertionError("the explanations ran although the input was bad")


def test_normalized_thresholds_may_exceed_one():
    from lightning_igos.cli.check import check_thresholds

    check_thresholds(types.SimpleNamespace(min_insertion=1.3, max_deletion=1.2, normalized=True))
    check_thresholds(types.SimpleNamespace(min_insertion=0.0, max_deletion=1.0, normalized=False))


def test_a_value_error_inside_the_solver_is_a_bug_not_an_input_error(workspace, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise ValueError("shape mismatch in the line search")

    monkeypatch.setattr("lightning_igos.core.solver.solve", broken)
    result = run_main(workspace, monkeypatch, capsys, *check_args())
    assert result.returncode == 3, result.stderr
    assert "unexpected ValueError: shape mismatch in the line search" in result.stderr


def test_verbose_shows_the_traceback(workspace, monkeypatch, capsys):
    result = run_main(workspace, monkeypatch, capsys, *check_args("--verbose", probe="probe_grey.pt"))
    assert result.returncode == 2
    assert "Traceback" in result.stderr and "lightning-igos: error:" in result.stderr


# In-process tests of the entry point and helpers (fast: no subprocess).


def test_version(capsys):
    import lightning_igos

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"lightning-igos {lightning_igos.__version__}"


def test_no_command_is_a_usage_error(capsys):
    assert main([]) == 2
    assert "lightning-igos: error:" in capsys.readouterr().err


def test_demo_passes_its_arguments_through(monkeypatch):
    seen = []
    fake = types.ModuleType("lightning_igos.demo")
    fake.main = lambda argv=None, prog=None: seen.append((argv, prog)) or 0
    monkeypatch.setitem(sys.modules, "lightning_igos.demo", fake)
    assert main(["demo", "--epochs", "1", "--help-me"]) == 0
    assert seen == [(["--epochs", "1", "--help-me"], "lightning-igos demo")]
    fake.main = lambda argv=None, prog=None: 3
    assert main(["demo"]) == 3


def test_match_state_dict_keys_strips_the_prefix_that_fits():
    t = torch.zeros(1)
    assert set(match_state_dict_keys({"module.a.w": t, "module.b": t}, ["a.w", "b"])) == {"a.w", "b"}
    assert set(match_state_dict_keys({"model.w": t, "criterion.w": t}, ["w"])) == {"w"}
    state = {"x.w": t}
    assert match_state_dict_keys(state, ["y"]) is state


def test_progress_line_draws_only_when_enabled():
    import io

    shown, hidden = io.StringIO(), io.StringIO()
    for stream, enabled in ((shown, True), (hidden, False)):
        bar = ProgressLine(stream, enabled=enabled)
        bar.start("explaining", 4)
        bar.advance(2)
        bar.start("scoring", 2)
        bar.advance(5)
        bar.finish()
    assert hidden.getvalue() == ""
    text = shown.getvalue()
    assert "explaining" in text and "scoring" in text and "100.0%" in text and text.endswith("\n")


# ----------------------------------------------------------------------------- loading runs no code


@pytest.mark.parametrize(
    ("model", "checkpoint", "probe", "message"),
    [
        (MODEL, "code_in_hparams.ckpt", "probe.pt", "checkpoint 'code_in_hparams.ckpt' cannot be read without running"),
        ("lightning_igos.demo.synthetic:SmallCNN", "code_in_hparams.ckpt", "probe.pt",
         "cannot be read without running"),
        ("lightning_igos.demo.synthetic:SmallCNN", "code_in_state.pt", "probe.pt",
         "cannot be read without running code"),
        (MODEL, "run.ckpt", "code_in_probe.pt", "'code_in_probe.pt' is not a lightning-igos probe"),
    ],
    ids=["lightning-module", "plain-module", "state-dict", "probe"],
)
def test_no_pickled_code_runs_even_with_torchs_opt_out(workspace, monkeypatch, capsys, model, checkpoint, probe,
                                                       message):
    """TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD (and torch < 2.6) must not make any file run code."""
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    result = run_main(workspace, monkeypatch, capsys, *check_args(model=model, checkpoint=checkpoint, probe=probe))
    assert not (workspace / "ran_code").exists()
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr and "os.makedirs" in result.stderr
    assert os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] == "1"  # set aside only while loading


def test_lightning_checkpoint_loads_with_torchs_opt_out_set(workspace, passing, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    result = run_main(workspace, monkeypatch, capsys, *check_args("--report", "opt_out.json"))
    assert result.returncode == 0, result.stderr
    report = json.loads((workspace / "opt_out.json").read_text())
    assert report["mean"] == pytest.approx(passing[1]["mean"], abs=1e-6)


def test_non_torch_pickle_is_one_error_line_without_torch_warnings(workspace):
    result = run_cli(workspace, *check_args(checkpoint="plain.pkl"))
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr  # torch's two-line "pickle protocol" warning is not shown
    assert lines[0].startswith("lightning-igos: error: checkpoint 'plain.pkl' is not a file written by torch.save")


@pytest.mark.parametrize(
    ("checkpoint", "probe", "message"),
    [
        ("a_folder", "probe.pt", "checkpoint 'a_folder' is a directory, not a file"),
        ("run.ckpt", "a_folder", "probe 'a_folder' is a directory, not a probe file"),
    ],
    ids=["checkpoint", "probe"],
)
def test_a_directory_is_named_as_one(workspace, monkeypatch, capsys, checkpoint, probe, message):
    result = run_main(workspace, monkeypatch, capsys, *check_args(checkpoint=checkpoint, probe=probe))
    assert result.returncode == 2
    assert message in result.stderr and "does not exist" not in result.stderr
