"""The pointing game wherever the probe knows its boxes: evaluate, the callback (and its checkpoint), the check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from lightning_igos import IGOSCallback
from lightning_igos.cli.commands import main
from lightning_igos.core.config import IGOSConfig
from lightning_igos.core.evaluation import evaluate
from lightning_igos.core.pointing import pointing_hits
from lightning_igos.demo.synthetic import make_object_images, train_small_cnn
from lightning_igos.demo.toy_module import ObjectClassifier
from lightning_igos.probe import save_probe


def test_evaluate_plays_the_pointing_game_on_the_generated_task(trained_cnn, probe_data) -> None:
    images, labels, boxes = probe_data.images[:8], probe_data.labels[:8], probe_data.boxes[:8]
    result = evaluate(trained_cnn, images, labels, IGOSConfig(), boxes=boxes)
    hits = result.per_image()["pointing"]
    assert torch.equal(hits, pointing_hits(result.saliency, boxes).float())
    assert hits.mean() >= 0.75  # I-GOS points at the object it was trained on
    random = evaluate(trained_cnn, images, labels, IGOSConfig(method="random", metric_steps=4), boxes=boxes)
    assert random.per_image()["pointing"].mean() < hits.mean()
    assert "pointing" not in evaluate(trained_cnn, images, labels, IGOSConfig(iterations=1)).per_image()
    with pytest.raises(ValueError, match="`boxes`"):
        evaluate(trained_cnn, images, labels, IGOSConfig(iterations=1), boxes=boxes[:3])


def _trainer(root: Path, callback: IGOSCallback, **kwargs) -> pl.Trainer:
    return pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=root,
                      accelerator="cpu", callbacks=[callback], num_sanity_val_steps=0, **kwargs)


def test_the_callback_logs_pointing_and_keeps_the_boxes_in_its_checkpoint(tmp_path: Path) -> None:
    data = make_object_images(16, image_size=16, seed=0)
    fast = dict(iterations=1, ig_steps=2, metric_steps=4)
    callback = IGOSCallback(probe=(data.images[:4], data.labels[:4], data.boxes[:4]), **fast)
    assert "igos/pointing" in callback.scalar_names
    loader = torch.utils.data.DataLoader(data.dataset(), batch_size=8)
    torch.manual_seed(0)
    trainer = _trainer(tmp_path, callback, max_epochs=1, enable_checkpointing=False)
    trainer.fit(ObjectClassifier(num_classes=4, width=4), loader, loader)
    assert 0 <= float(trainer.callback_metrics["igos/pointing"]) <= 1
    trainer.save_checkpoint(tmp_path / "run.ckpt")
    resumed = IGOSCallback(**fast)  # no probe given: the checkpoint's, boxes included
    assert "igos/pointing" not in resumed.scalar_names
    _trainer(tmp_path, resumed, max_epochs=2, enable_checkpointing=False).fit(
        ObjectClassifier(num_classes=4, width=4), loader, loader, ckpt_path=tmp_path / "run.ckpt")
    assert torch.equal(resumed.store.boxes, data.boxes[:4].float()) and "igos/pointing" in resumed.scalar_names
    path = resumed.save_probe(tmp_path / "probe.pt")
    from lightning_igos.probe import load_probe

    assert torch.equal(load_probe(path).boxes, data.boxes[:4].float())


def test_the_check_reports_pointing_for_a_probe_with_boxes(tmp_path: Path, monkeypatch, capsys) -> None:
    torch.manual_seed(0)
    data = make_object_images(64, image_size=16, seed=0)
    model = train_small_cnn(data, epochs=1, seed=0)
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    probe = make_object_images(4, image_size=16, seed=3)
    save_probe(tmp_path / "probe.pt", probe.images, probe.labels, boxes=probe.boxes)
    monkeypatch.chdir(tmp_path)
    code = main(["check", "--model", "lightning_igos.demo.synthetic:SmallCNN", "--checkpoint", "weights.pt",
                 "--probe", "probe.pt", "--iterations", "2", "--ig-steps", "3", "--metric-steps", "8",
                 "--device", "cpu", "--report", "r.json", "--require", "pointing>=0", "--allow-empty"])
    out = capsys.readouterr()
    assert code == 0, out.err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["settings"]["boxes"] is True
    assert {row["pointing"] for row in report["images"]} <= {0.0, 1.0}
    assert report["mean"]["pointing"] == pytest.approx(sum(row["pointing"] for row in report["images"]) / 4)
    assert "pointing" in out.out
