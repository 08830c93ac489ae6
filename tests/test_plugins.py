"""A user's explainer and a user's statistic, each registered once, reach the callback and the check."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from helpers import check_args, run_main, tiny_check_workspace

from lightning_igos import IGOSCallback
from lightning_igos.core.config import IGOSConfig
from lightning_igos.core.evaluation import evaluate
from lightning_igos.core.explainers import (
    BUILTIN_EXPLAINERS,
    explainer_names,
    get_explainer,
    register_explainer,
    unregister_explainer,
)
from lightning_igos.core.statistics import (
    Statistic,
    get_statistic,
    register_statistic,
    statistics,
    unregister_statistic,
)
from lightning_igos.demo.synthetic import make_object_images
from lightning_igos.demo.toy_module import ObjectClassifier

PLUGIN = '''
import torch

from lightning_igos.core.explainers import register_explainer
from lightning_igos.core.statistics import Statistic, register_statistic


@register_explainer("input_x_gradient", passes=lambda config: 1)
def input_x_gradient(request):
    x = request.images.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(request.scores(x).sum(), x)
    return (x * grad).sum(1, keepdim=True)


def saliency_entropy(evaluation):
    p = evaluation.saliency.clamp_min(0).flatten(1)
    p = p / p.sum(1, keepdim=True).clamp_min(1e-12)
    return -(p * p.clamp_min(1e-12).log()).sum(1)


register_statistic(Statistic("saliency_entropy", saliency_entropy, higher_is_better=False, label="entropy",
                             group="saliency"))
'''


@pytest.fixture()
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The plugin module on the path; afterwards its registrations are undone."""
    (tmp_path / "my_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_plugin"
    unregister_explainer("input_x_gradient")
    unregister_statistic("saliency_entropy")
    sys.modules.pop("my_plugin", None)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> Path:
    return tiny_check_workspace(tmp_path_factory.mktemp("plugins"), tiny_checkpoint, num_probe=3)


def test_the_built_in_explainers_are_registered_in_order() -> None:
    assert explainer_names() == BUILTIN_EXPLAINERS
    assert get_explainer("igos").has_mask and not get_explainer("gradient").has_mask
    with pytest.raises(ValueError, match="already registered"):
        register_explainer("igos", lambda request: request.images)
    with pytest.raises(ValueError, match="`method` must be a registered explainer"):
        IGOSConfig(method="no_such_method")


def test_a_plugin_explainer_and_statistic_run_in_the_check(workspace, plugin, monkeypatch, capsys) -> None:
    result = run_main(workspace, monkeypatch, capsys, *check_args("--plugin", plugin, "--method", "input_x_gradient",
                                                                  "--report", "r.json", "--html", "r.html"))
    assert result.returncode == 0, result.stderr
    report = json.loads((workspace / "r.json").read_text())
    assert report["settings"]["method"] == "input_x_gradient" and report["settings"]["mask_size_used"] is None
    # A saliency-only explainer has no mask statistics; the plugin's statistic is everywhere.
    assert "mask_mean" not in report["mean"] and "saliency_entropy" in report["mean"]
    assert all("saliency_entropy" in row for row in report["images"])
    assert "entropy" in result.stdout.splitlines()[3]  # the table's header
    assert "<th>entropy</th>" in (workspace / "r.html").read_text()
    assert "entropy: lower is better." in (workspace / "r.html").read_text()


def test_without_the_plugin_its_method_is_a_usage_error(workspace, monkeypatch, capsys) -> None:
    result = run_main(workspace, monkeypatch, capsys, *check_args("--method", "input_x_gradient"))
    assert result.returncode == 2 and "registered explainer" in result.stderr and "edge_map" in result.stderr
    result = run_main(workspace, monkeypatch, capsys, *check_args("--plugin", "no_such_plugin_module"))
    assert result.returncode == 2 and "--plugin no_such_plugin_module" in result.stderr


def test_a_plugin_explainer_and_statistic_run_in_the_callback(tmp_path: Path, plugin) -> None:
    __import__(plugin)
    data = make_object_images(8, image_size=16, seed=0)
    callback = IGOSCallback(method="input_x_gradient", probe=(data.images[:4], data.labels[:4]), metric_steps=4)
    assert "igos/saliency_entropy" in callback.scalar_names and "igos/mask_mean" not in callback.scalar_names
    torch.manual_seed(0)
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path, accelerator="cpu",
                         callbacks=[callback])
    trainer.validate(ObjectClassifier(num_classes=4, width=4),
                     torch.utils.data.DataLoader(data.dataset(), batch_size=8), verbose=False)
    metrics = trainer.callback_metrics
    entropy = evaluate(trainer.lightning_module, data.images[:4], data.labels[:4], callback.config).per_image()
    assert float(metrics["igos/saliency_entropy"]) == pytest.approx(float(entropy["saliency_entropy"].mean()),
                                                                    rel=1e-5)
    assert 0 <= float(metrics["igos/insertion_auc"]) <= 1 and "igos/mask_mean" not in metrics


def test_statistics_are_declared_once_and_checked() -> None:
    names = [s.name for s in statistics()]
    assert names[:3] == ["clean_score", "insertion_auc", "deletion_auc"] and len(names) == len(set(names))
    assert get_statistic("mask_min").reduction == "min"
    assert [s.name for s in statistics(IGOSConfig(method="gradient"))] == [
        n for n in names if not n.startswith(("mask_", "road_", "pointing"))]
    with pytest.raises(ValueError, match="already registered"):
        register_statistic(Statistic("deletion_auc", lambda e: e.curves.deletion_auc))
    with pytest.raises(ValueError, match="`reduction`"):
        Statistic("x", lambda e: e.curves.deletion_auc, reduction="median")
    with pytest.raises(ValueError, match="`name`"):
        Statistic("has space", lambda e: e.curves.deletion_auc)


@pytest.mark.parametrize("method", ["gradient", "integrated_gradients", "edge_map", "random"])
def test_every_built_in_explainer_is_scored_by_the_same_metrics(trained_cnn, probe_data, method) -> None:
    images, labels = probe_data.images[:4], probe_data.labels[:4]
    result = evaluate(trained_cnn, images, labels, IGOSConfig(method=method, ig_steps=4, metric_steps=8))
    stats = result.per_image()
    assert result.explanation.mask is None and "mask_mean" not in stats
    assert result.saliency.shape == (4, 1, *images.shape[-2:]) and not result.empty.any()
    assert ((stats["insertion_auc"] >= 0) & (stats["insertion_auc"] <= 1)).all()


def test_a_constant_saliency_is_an_empty_explanation(workspace, plugin, monkeypatch, capsys) -> None:
    register_explainer("flat", lambda request: torch.ones(request.images.shape[0], 1, 4, 4), passes=lambda c: 0)
    try:
        result = run_main(workspace, monkeypatch, capsys, *check_args("--method", "flat"))
    finally:
        unregister_explainer("flat")
    assert result.returncode == 1 and "constant saliency" in result.stdout
