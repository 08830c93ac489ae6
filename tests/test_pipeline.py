"""One evaluation pipeline: each probe image goes through the model unmodified once, the options come
as one config, and any reported statistic can gate the check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import check_args, run_main, tiny_check_workspace

from lightning_igos import IGOSCallback
from lightning_igos.core.config import IGOSConfig
from lightning_igos.core.evaluation import clean_forward, evaluate
from lightning_igos.probe import load_probe

# A model whose class records every image it is given, so a test can count the unmodified probe images.
RECORDING_MODEL = '''
from lightning_igos.demo.toy_module import ObjectClassifier

SEEN = []


class RecordingClassifier(ObjectClassifier):
    def forward(self, x):
        SEEN.append(x.detach().float().cpu().clone())
        return super().forward(x)
'''


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> Path:
    root = tiny_check_workspace(tmp_path_factory.mktemp("pipeline"), tiny_checkpoint, num_probe=4)
    (root / "recording_model.py").write_text(RECORDING_MODEL)
    return root


@pytest.mark.parametrize("extra", [[], ["--method", "igos++", "--road"]], ids=["igos", "igos++ with ROAD"])
def test_a_check_of_a_four_image_probe_pushes_each_image_through_unmodified_once(
        workspace, monkeypatch, capsys, extra) -> None:
    result = run_main(workspace, monkeypatch, capsys,
                      *check_args(*extra, model="recording_model:RecordingClassifier"))
    assert result.returncode in (0, 1), result.stderr
    import recording_model

    probe = load_probe(workspace / "probe.pt").images
    seen = [image for batch in recording_model.SEEN for image in batch]
    recording_model.SEEN.clear()
    unmodified = sum(any(torch.equal(image, p) for p in probe) for image in seen)
    assert unmodified == 4  # the fit check's forward, reused by the solver, the curves and ROAD
    assert len(seen) > 40  # the rest of the work was done on perturbed images


def test_evaluate_reuses_clean_logits_it_is_given(trained_cnn, probe_data) -> None:
    images, labels = probe_data.images[:3], probe_data.labels[:3]
    config = IGOSConfig(iterations=1, ig_steps=2, metric_steps=4)
    logits = clean_forward(trained_cnn, images, config)
    given = evaluate(trained_cnn, images, labels, config, clean_logits=logits)
    fresh = evaluate(trained_cnn, images, labels, config)
    for name, values in fresh.per_image().items():
        assert torch.equal(given.per_image()[name], values), name
    assert given.num_classes == logits.shape[1] == 4


def test_the_callback_takes_one_config_or_keywords_not_both() -> None:
    config = IGOSConfig(iterations=7, road=True)
    callback = IGOSCallback(config=config)
    assert callback.config is config and "igos/road_lerf" in callback.scalar_names
    with pytest.raises(ValueError, match="iterations"):
        IGOSCallback(config=config, iterations=3)
    with pytest.raises(TypeError, match="`config`"):
        IGOSCallback(config={"iterations": 3})


def test_require_gates_on_any_reported_statistic(workspace, monkeypatch, capsys) -> None:
    passing = run_main(workspace, monkeypatch, capsys, *check_args("--road", "--require", "road_lerf>=0",
                                                                   "--require", "mask_mean<=1", "--report", "r.json"))
    assert passing.returncode == 0, passing.stderr
    report = json.loads((workspace / "r.json").read_text())
    gates = {t["metric"]: t for t in report["thresholds"]}
    assert gates["road_lerf"]["name"] == "require" and gates["road_lerf"]["passed"]
    assert gates["road_lerf"]["value"] == pytest.approx(report["mean"]["road_lerf"])
    # A gate that can be decided and fails (insertion_auc>1 could never pass: an input error, exit 2).
    failing = run_main(workspace, monkeypatch, capsys, *check_args("--require", "insertion_auc>0.999"))
    assert failing.returncode == 1 and "FAIL" in failing.stdout


@pytest.mark.parametrize("gate, known, hint", [
    ("road_lerf>=0.4", "insertion_auc", "(it is a ROAD statistic: add --road)"),
    ("pointing>=0.5", "deletion_auc", "(it needs a probe with boxes, and this probe has none"),
    ("nonsense<=1", "mask_mean", None)])
def test_a_gate_on_a_statistic_this_run_lacks_lists_the_ones_it_has(workspace, monkeypatch, capsys, gate,
                                                                    known, hint) -> None:
    result = run_main(workspace, monkeypatch, capsys, *check_args("--require", gate))
    assert result.returncode == 2
    assert "no statistic named" in result.stderr and known in result.stderr and "road_lerf" not in \
        result.stderr.split("reported ones are:")[1]
    # What would add the statistic, when one would.
    assert (hint in result.stderr) if hint else ("(it" not in result.stderr), result.stderr


@pytest.mark.parametrize("gate", ["road_lerf", "road_lerf=>0.4", "road_lerf>=high", "road_lerf>=nan"])
def test_a_malformed_gate_is_a_usage_error(workspace, monkeypatch, capsys, gate) -> None:
    result = run_main(workspace, monkeypatch, capsys, *check_args("--require", gate))
    assert result.returncode == 2 and "--require" in result.stderr
