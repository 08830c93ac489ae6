"""Start-up: ``--version`` and ``--help`` import no torch; the lazy top-level names all still import."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import pytest

import lightning_igos
from lightning_igos.cli import build_parser
from lightning_igos.cli.commands import CONFIG_OPTIONS, source_value

README = Path(__file__).resolve().parents[1] / "README.md"


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """``python -X importtime -m lightning_igos ARGS`` in a fresh interpreter."""
    return subprocess.run([sys.executable, "-X", "importtime", "-m", "lightning_igos", *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)


def _imported(importtime_stderr: str) -> set[str]:
    """The modules named by ``-X importtime`` (its last column)."""
    return {line.rsplit("|", 1)[-1].strip() for line in importtime_stderr.splitlines()
            if line.startswith("import time:")}


def _heavy(modules: set[str]) -> set[str]:
    roots = ("torch", "torchvision", "torchmetrics", "pytorch_lightning", "lightning", "numpy")
    return {m for m in modules if m.split(".")[0] in roots}


def test_version_imports_no_torch(tmp_path: Path) -> None:
    result = _run(tmp_path, "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"lightning-igos {lightning_igos.__version__}"
    modules = _imported(result.stderr)
    assert "lightning_igos.cli.commands" in modules  # the reading works
    assert not _heavy(modules)


def test_check_help_imports_no_torch_and_shows_the_defaults(tmp_path: Path) -> None:
    from lightning_igos.core.config import DEFAULTS

    result = _run(tmp_path, "check", "--help")
    assert result.returncode == 0, result.stderr
    assert not _heavy(_imported(result.stderr))
    text = " ".join(result.stdout.split())  # argparse wraps the lines
    assert text.startswith("usage: lightning-igos check")
    assert f"descent iterations, at most (default: {DEFAULTS.iterations})" in text
    assert f"integrated-gradient steps (default: {DEFAULTS.ig_steps})" in text
    assert f"(default: {DEFAULTS.tolerance:g})" in text
    assert "--method NAME" in text and "igos, igos++, gradient, integrated_gradients, edge_map, random" in text


def test_top_level_help_and_no_command_import_no_torch(tmp_path: Path) -> None:
    result = _run(tmp_path, "--help")
    assert result.returncode == 0 and "check" in result.stdout
    assert not _heavy(_imported(result.stderr))
    result = _run(tmp_path)
    assert result.returncode == 2 and "a command is required" in result.stderr
    assert not _heavy(_imported(result.stderr))


def test_importing_the_package_imports_no_torch() -> None:
    code = ("import sys, lightning_igos; v = lightning_igos.__version__; dir(lightning_igos); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_the_version_is_the_installed_distributions() -> None:
    try:
        installed = importlib.metadata.version("lightning-igos")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("lightning-igos is not installed")
    assert lightning_igos.__version__ == installed


def _readme_names() -> set[str]:
    names: set[str] = set()
    for line in README.read_text(encoding="utf-8").splitlines():
        match = re.match(r"\s*from lightning_igos import ([^#]+)", line)
        if match:
            names.update(n.strip() for n in match.group(1).split(","))
    return names


def test_every_readme_top_level_import_works() -> None:
    names = _readme_names()
    assert {"IGOSCallback", "igos", "causal_curves", "gradient_saliency", "InsertionAUC"} <= names
    for name in sorted(names):
        namespace: dict = {}
        exec(f"from lightning_igos import {name}", namespace)  # noqa: S102 - names from our own README
        assert namespace[name] is not None, name


def test_every_public_name_resolves_to_its_module() -> None:
    from lightning_igos.callback import IGOSCallback
    from lightning_igos.core.causal import CausalCurves, causal_curves
    from lightning_igos.core.gradients import gradient_saliency, integrated_gradients
    from lightning_igos.core.solver import Explanation, igos
    from lightning_igos.metrics import DeletionAUC, InsertionAUC
    from lightning_igos.probe import Probe, load_probe, save_probe

    expected = {
        "CausalCurves": CausalCurves, "causal_curves": causal_curves, "gradient_saliency": gradient_saliency,
        "integrated_gradients": integrated_gradients, "Explanation": Explanation, "igos": igos,
        "IGOSCallback": IGOSCallback, "DeletionAUC": DeletionAUC, "InsertionAUC": InsertionAUC, "Probe": Probe,
        "load_probe": load_probe, "save_probe": save_probe, "__version__": lightning_igos.__version__,
    }
    assert set(lightning_igos.__all__) == set(expected)
    for name, value in expected.items():
        assert getattr(lightning_igos, name) is value, name
    assert set(lightning_igos.__all__) <= set(dir(lightning_igos))
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        lightning_igos.no_such_name  # noqa: B018
    from lightning_igos import render  # a submodule, imported as one

    assert render.__name__ == "lightning_igos.render"


def test_the_lightning_callback_is_exported() -> None:
    pytest.importorskip("lightning")
    from lightning_igos import LightningIGOSCallback
    from lightning_igos.callback import LightningIGOSCallback as from_callback

    assert LightningIGOSCallback is from_callback
    assert "LightningIGOSCallback" in dir(lightning_igos)


def test_the_facts_read_from_the_source_are_the_imported_ones() -> None:
    from lightning_igos import probe
    from lightning_igos.core import baselines, config

    for field in dataclasses.fields(config.IGOSConfig):
        assert source_value("lightning_igos.core.config", field.name, "IGOSConfig") == field.default, field.name
    for name in ("OBJECTIVES", "QUADRATURES"):
        assert source_value("lightning_igos.core.config", name) == getattr(config, name)
    from lightning_igos.core import explainers

    assert source_value("lightning_igos.core.explainers", "BUILTIN_EXPLAINERS") == explainers.explainer_names()
    assert source_value("lightning_igos.core.baselines", "BASELINE_KINDS") == baselines.BASELINE_KINDS
    assert source_value("lightning_igos.probe", "MAX_PROBE_ELEMENTS") == probe.MAX_PROBE_ELEMENTS
    # Not a literal in the source: taken from the imported module.
    assert source_value("lightning_igos.probe", "PROBE_DTYPES") == probe.PROBE_DTYPES


def _input_files(tmp_path: Path, monkeypatch) -> None:
    """Run from ``tmp_path`` holding the inputs ``c`` and ``p``: a missing input stops a parse before the defaults."""
    monkeypatch.chdir(tmp_path)
    for name in ("c", "p"):
        (tmp_path / name).write_bytes(b"")


def test_the_parser_choices_and_defaults_are_the_configs(tmp_path, monkeypatch) -> None:
    from lightning_igos import probe
    from lightning_igos.core import baselines, config

    _input_files(tmp_path, monkeypatch)

    check = build_parser()._subparsers._group_actions[0].choices["check"]
    choices = {a.dest: a.choices for a in check._actions if a.choices}
    assert choices == {"objective": config.OBJECTIVES, "quadrature": config.QUADRATURES,
                       "baseline": baselines.BASELINE_KINDS, "substrate": baselines.BASELINE_KINDS,
                       "deletion_substrate": baselines.BASELINE_KINDS, "insertion_substrate": baselines.BASELINE_KINDS}
    args = build_parser().parse_args(["check", "--model", "m:M", "--checkpoint", "c", "--probe", "p"])
    for name in CONFIG_OPTIONS:
        expected = getattr(config.DEFAULTS, name)
        assert getattr(args, name) == (expected or 0 if name == "patience" else expected), name
    assert args.max_probe_elements == probe.MAX_PROBE_ELEMENTS
    given = build_parser().parse_args(["check", "--model", "m:M", "--checkpoint", "c", "--probe", "p",
                                       "--iterations", "7", "--no-normalize-score", "--max-probe-elements", "5"])
    assert (given.iterations, given.normalize_score, given.max_probe_elements) == (7, False, 5)


def test_the_probe_cap_is_read_when_parsing(tmp_path, monkeypatch) -> None:
    """``lightning_igos.probe.MAX_PROBE_ELEMENTS`` set in-process is the check's default from then on."""
    from lightning_igos import probe

    _input_files(tmp_path, monkeypatch)
    parser = build_parser()
    monkeypatch.setattr(probe, "MAX_PROBE_ELEMENTS", 123)
    args = parser.parse_args(["check", "--model", "m:M", "--checkpoint", "c", "--probe", "p"])
    assert args.max_probe_elements == 123


@pytest.mark.parametrize("case, message", [
    ("missing checkpoint", "lightning-igos: error: checkpoint file 'missing.ckpt' does not exist."),
    ("missing probe", "lightning-igos: error: probe file 'missing.pt' does not exist."),
    ("--min-insertion 1.5", "lightning-igos: error: --min-insertion 1.5 could never pass: raw AUCs lie in [0, 1]."),
    ("--max-deletion -0.1", "lightning-igos: error: --max-deletion -0.1 could never pass: raw AUCs lie in [0, 1]."),
])
def test_missing_files_and_impossible_thresholds_are_reported_before_torch_loads(tmp_path: Path, case: str,
                                                                                  message: str) -> None:
    (tmp_path / "model.ckpt").write_bytes(b"")
    (tmp_path / "probe.pt").write_bytes(b"")
    args = {"--model": "no_such_package.models:Net", "--checkpoint": "model.ckpt", "--probe": "probe.pt"}
    if case.startswith("missing"):
        args["--checkpoint" if "checkpoint" in case else "--probe"] = "missing." + ("ckpt" if "checkpoint" in case
                                                                                    else "pt")
    extra = case.split() if case.startswith("--") else []
    result = _run(tmp_path, "check", *[x for pair in args.items() for x in pair], *extra)
    assert result.returncode == 2
    assert result.stdout == "" and [line for line in result.stderr.splitlines()
                                     if not line.startswith("import time:")] == [message]
    assert not _heavy(_imported(result.stderr))  # said at once, not after seconds of imports
