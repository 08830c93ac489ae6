"""The model-randomisation sanity check: the randomised copy, the rank correlation, the control and `check --sanity`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from lightning_igos.cli import main
from lightning_igos.cli.check import CheckSettings
from lightning_igos.cli.html_report import render_html, render_markdown, verdict_text
from lightning_igos.core.config import IGOSConfig
from lightning_igos.core.sanity import (
    edge_explainer,
    edge_map,
    randomized_copy,
    resettable_modules,
    sanity_check,
    spearman,
)
from lightning_igos.probe import save_probe

FAST = IGOSConfig(iterations=2, ig_steps=4)


@pytest.fixture()
def batch(probe_data):
    return probe_data.images[:4], probe_data.labels[:4]


def test_the_users_model_and_the_global_rng_are_untouched(trained_cnn) -> None:
    before = {name: value.clone() for name, value in trained_cnn.state_dict().items()}
    rng = torch.random.get_rng_state()
    randomized = randomized_copy(trained_cnn, torch.Generator().manual_seed(3))
    assert torch.equal(torch.random.get_rng_state(), rng)
    after = trained_cnn.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[name], after[name]) for name in before)
    assert randomized is not trained_cnn
    changed = [not torch.equal(a, b) for a, b in zip(trained_cnn.parameters(), randomized.parameters())]
    assert changed[-1] and not changed[0]  # the head is re-initialised, the first layer kept


def test_the_last_quarter_and_at_least_two_modules_are_reset() -> None:
    torch.manual_seed(0)
    layers = [nn.Linear(4, 4) for _ in range(12)]
    model = nn.Sequential(*layers, nn.ReLU())
    randomized = randomized_copy(model)
    changed = [not torch.equal(a.weight, b.weight) for a, b in zip(layers, resettable_modules(randomized))]
    assert changed == [False] * 9 + [True] * 3
    small = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2))
    changed = [not torch.equal(a.weight, b.weight) for a, b in zip(small, randomized_copy(small))]
    assert changed == [False, True, True]


def test_the_copy_is_reproducible_from_the_generator(tiny_model) -> None:
    a = randomized_copy(tiny_model, torch.Generator().manual_seed(5))
    b = randomized_copy(tiny_model, torch.Generator().manual_seed(5))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_a_model_with_nothing_to_reset_is_an_error() -> None:
    with pytest.raises(ValueError, match="reset_parameters"):
        randomized_copy(nn.Sequential(nn.Flatten(), nn.ReLU()))


def test_spearman_of_a_map_with_itself_and_its_negation() -> None:
    s = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(spearman(s, s), torch.ones(3))
    assert torch.allclose(spearman(s, -s), -torch.ones(3))
    other = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    assert spearman(s, other).abs().max() < 0.5
    with pytest.raises(ValueError, match="shaped"):
        spearman(s, s[:, :, :4])


def test_the_edge_map_ignores_the_model(batch) -> None:
    images, _ = batch
    edges = edge_map(images)
    assert edges.shape == (4, 1, *images.shape[-2:]) and (edges >= 0).all()
    assert torch.equal(edge_explainer(None, images, 0, steps=3), edges)


def test_igos_depends_on_the_weights_and_the_edge_map_does_not(trained_cnn, batch) -> None:
    images, labels = batch
    rng = torch.random.get_rng_state()
    igos_result = sanity_check(trained_cnn, images, labels, FAST)
    edge_result = sanity_check(trained_cnn, images, labels, explainer=edge_explainer)
    assert torch.equal(torch.random.get_rng_state(), rng)
    assert torch.equal(edge_result.correlation, torch.ones(4))
    # Measured: igos about 0.11 (0.04 to 0.15 per image) on this probe, the edge map exactly 1.
    assert igos_result.mean_correlation < 0.4
    assert igos_result.correlation.max() < 0.6
    assert igos_result.saliency.shape == igos_result.randomized_saliency.shape == (4, 1, *images.shape[-2:])


@pytest.fixture()
def workspace(tmp_path: Path, trained_cnn, probe_data) -> Path:
    torch.save(trained_cnn.state_dict(), tmp_path / "cnn_state.pt")
    save_probe(tmp_path / "probe.pt", probe_data.images[:4], probe_data.labels[:4], probe_data.mean, probe_data.std)
    return tmp_path


def _check(workspace: Path, monkeypatch, *extra: str) -> tuple[int, dict]:
    monkeypatch.chdir(workspace)
    code = main(["check", "--model", "lightning_igos.demo.synthetic:SmallCNN", "--checkpoint", "cnn_state.pt",
                 "--probe", "probe.pt", "--device", "cpu", "--iterations", "2", "--ig-steps", "4",
                 "--metric-steps", "8", "--sanity", "--report", "report.json", *extra])
    return code, json.loads((workspace / "report.json").read_text())


def test_check_sanity_passes_for_igos_and_reports_it(workspace, monkeypatch, capsys) -> None:
    code, report = _check(workspace, monkeypatch)
    out = capsys.readouterr().out
    assert code == 0, out
    sanity = report["sanity"]
    assert set(sanity) == {"mean_correlation", "correlation", "max_correlation", "passed"}
    assert len(sanity["correlation"]) == 4 and sanity["max_correlation"] == 0.5 and sanity["passed"] is True
    assert sanity["mean_correlation"] < 0.4
    assert report["passed"] is True
    assert "sanity (model randomisation): mean Spearman" in out and "<= 0.5 pass" in out
    assert "mean Spearman" in render_markdown(report)
    assert '<p id="sanity">sanity (model randomisation): mean Spearman' in render_html(report, [])

    # A limit below the measured mean fails the check.
    code, failed = _check(workspace, monkeypatch, "--max-sanity-correlation", f"{sanity['mean_correlation'] - 0.01}")
    out = capsys.readouterr().out
    assert code == 1
    assert failed["passed"] is False and failed["sanity"]["passed"] is False
    assert failed["sanity"]["correlation"] == sanity["correlation"]
    assert "sanity check failed" in verdict_text(failed) and "FAIL" in out


def test_check_sanity_fails_the_registered_edge_map_control(workspace, monkeypatch, capsys) -> None:
    code, report = _check(workspace, monkeypatch, "--method", "edge_map")
    out = capsys.readouterr().out
    assert code == 1, out
    assert report["settings"]["method"] == "edge_map"
    assert report["sanity"]["correlation"] == [1.0] * 4 and report["sanity"]["passed"] is False
    assert "sanity check failed" in verdict_text(report)


def test_without_sanity_the_report_has_no_sanity_block(workspace, monkeypatch, capsys) -> None:
    monkeypatch.chdir(workspace)
    code = main(["check", "--model", "lightning_igos.demo.synthetic:SmallCNN", "--checkpoint", "cnn_state.pt",
                 "--probe", "probe.pt", "--device", "cpu", "--iterations", "1", "--ig-steps", "2",
                 "--metric-steps", "4", "--report", "plain.json"])
    assert code == 0, capsys.readouterr()
    assert "sanity" not in json.loads((workspace / "plain.json").read_text())


def test_check_settings_validate_the_sanity_options() -> None:
    assert CheckSettings("m:M", "c", "p").sanity is False
    assert CheckSettings("m:M", "c", "p").max_sanity_correlation == 0.5
    with pytest.raises(TypeError, match="sanity"):
        CheckSettings("m:M", "c", "p", sanity="yes")
    with pytest.raises(TypeError, match="max_sanity_correlation"):
        CheckSettings("m:M", "c", "p", max_sanity_correlation=float("nan"))
