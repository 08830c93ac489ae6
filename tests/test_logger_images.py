"""Panels reach TensorBoard, W&B (offline) and MLflow (local file store) through the real loggers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import offline_wandb_logger
from PIL import Image
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_igos.callback.loggers import (
    artifact_folder,
    custom_scalars_layout,
    image_sinks,
    write_custom_scalars,
)


def _panels() -> list[tuple[str, torch.Tensor, str]]:
    torch.manual_seed(0)
    return [("igos/probe_0", torch.rand(3, 10, 12), "#0 class 1 (dog)"),
            ("igos/overlays", torch.rand(3, 6, 6), "all overlays")]


def test_tensorboard_gets_images_and_one_layout(tmp_path: Path) -> None:
    logger = TensorBoardLogger(tmp_path, name="tb")
    sinks = image_sinks([logger, CSVLogger(tmp_path, name="csv")])
    assert [s.kind for s in sinks] == ["tensorboard"]
    sinks[0].log(_panels(), step=7, epoch=0)
    done: set[str] = set()
    write_custom_scalars([logger], done)
    write_custom_scalars([logger], done)  # once per log dir
    logger.experiment.flush()
    events = EventAccumulator(logger.log_dir, size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    image = events.Images("igos/probe_0")
    assert [e.step for e in image] == [7] and (image[0].width, image[0].height) == (12, 10)
    configs = events.Tensors("custom_scalars__config__")
    assert len(configs) == 1
    from tensorboard.plugins.custom_scalar import layout_pb2

    layout = layout_pb2.Layout.FromString(configs[0].tensor_proto.string_val[0])
    charts = {c.title: c.margin.series[0] for c in layout.category[0].chart}
    assert set(charts) == set(custom_scalars_layout()["igos"])
    band = charts["insertion_auc_normalized"]
    assert band.value == band.lower == band.upper == "igos/insertion_auc_normalized"


def test_wandb_offline_gets_images_at_the_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("wandb", reason="wandb is in the dev extra")
    logger = offline_wandb_logger(tmp_path, monkeypatch)
    try:
        sinks = image_sinks([logger])
        assert [s.kind for s in sinks] == ["log_image"]
        sinks[0].log(_panels(), step=7, epoch=0)
        run = logger.experiment
        summary = dict(run.summary)
        assert summary["trainer/global_step"] == 7
        assert summary["igos/probe_0"]["_type"] == "images/separated"
        assert summary["igos/probe_0"]["captions"] == ["#0 class 1 (dog)"]
        media = sorted(Path(run.dir, "media", "images", "igos").glob("*.png"))
        assert [p.name.split("_")[0] for p in media] == ["overlays", "probe"]
        assert Image.open(media[1]).size == (12, 10)
    finally:
        logger.experiment.finish()


def test_mlflow_file_store_gets_artifacts_per_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("mlflow", reason="mlflow is in the dev extra")
    from pytorch_lightning.loggers import MLFlowLogger

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # a local folder, no server
    logger = MLFlowLogger(experiment_name="igos-test", tracking_uri=(tmp_path / "mlruns").as_uri())
    sinks = image_sinks([logger])
    assert [s.kind for s in sinks] == ["mlflow"]
    sinks[0].log(_panels(), step=7, epoch=0)
    sinks[0].log(_panels(), step=14, epoch=1)
    client, run_id = logger.experiment, logger.run_id
    folders = sorted(f.path for f in client.list_artifacts(run_id, "igos"))
    assert folders == [artifact_folder(0, 7), artifact_folder(1, 14)] == [
        "igos/epoch_000_step_000007", "igos/epoch_001_step_000014"]
    files = sorted(f.path for f in client.list_artifacts(run_id, folders[0]))
    assert files == [f"{folders[0]}/overlays.png", f"{folders[0]}/probe_0.png"]
    local = client.download_artifacts(run_id, f"{folders[0]}/probe_0.png", str(tmp_path))
    assert Image.open(local).size == (12, 10)


def test_loggers_without_images_get_none(tmp_path: Path) -> None:
    assert image_sinks([CSVLogger(tmp_path)]) == []
    assert image_sinks([]) == []
