"""IGOSCallback's outputs: class names, panels in W&B/MLflow/TensorBoard, the
custom-scalars layout, the cost scalars and line, and the progress-bar status."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from helpers import FASTEST_OPTIONS, offline_wandb_logger
from pytorch_lightning.callbacks import TQDMProgressBar
from pytorch_lightning.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import DataLoader

from lightning_igos import IGOSCallback
from lightning_igos.callback import EmptyExplanationWarning, IGOSWarning
from lightning_igos.demo.synthetic import make_object_images
from lightning_igos.demo.toy_module import ObjectClassifier

FAST = dict(num_probe=2, **FASTEST_OPTIONS)
NAMES = ["stripes", "dots", "checks", "waves"]


@pytest.fixture(scope="module")
def loaders() -> tuple[DataLoader, DataLoader]:
    train = make_object_images(16, image_size=16, seed=0)
    val = make_object_images(4, image_size=16, seed=1)
    return DataLoader(train.dataset(), batch_size=16), DataLoader(val.dataset(), batch_size=4)


def _module() -> ObjectClassifier:
    torch.manual_seed(0)
    return ObjectClassifier(num_classes=4, width=4)


def _fit(tmp_path: Path, callback: IGOSCallback, loaders, logger=False, module=None, **kwargs) -> pl.Trainer:
    options = dict(accelerator="cpu", devices=1, max_epochs=1, logger=logger, default_root_dir=tmp_path,
                   enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                   num_sanity_val_steps=0)
    options.update(kwargs)
    trainer = pl.Trainer(callbacks=[callback, *options.pop("callbacks", [])], **options)
    trainer.fit(module or _module(), *loaders)
    return trainer


# ----------------------------------------------------------------------------- class names


def test_bad_class_names_fail_at_construction() -> None:
    with pytest.raises(TypeError, match="strings"):
        IGOSCallback(class_names=["a", 1])
    with pytest.raises(TypeError, match="sequence of names"):
        IGOSCallback(class_names="abc")
    with pytest.raises(ValueError, match="probe target 3 is beyond the 2 `class_names`"):
        IGOSCallback(probe=(torch.randn(2, 3, 8, 8), torch.tensor([0, 3])), class_names=["a", "b"])
    assert IGOSCallback(class_names={3: "x"}).class_names.names == {3: "x"}


def test_class_names_of_the_wrong_length_are_an_error_at_the_first_run(tmp_path: Path, loaders) -> None:
    with pytest.raises(ValueError, match="3 `class_names` were given but the model has 4 classes"):
        _fit(tmp_path, IGOSCallback(class_names=NAMES[:3], on_error="raise", log_images=False, **FAST), loaders)


def test_class_names_label_the_overlay_grid(tmp_path: Path, loaders) -> None:
    def grid_size(callback: IGOSCallback, module=None) -> tuple[int, int]:
        logger = TensorBoardLogger(tmp_path, name=f"tb{id(callback)}")
        _fit(tmp_path, callback, loaders, logger=logger, module=module)
        events = EventAccumulator(logger.log_dir, size_guidance={"images": 0})
        events.Reload()
        image = events.Images("igos/overlays")[0]
        return image.width, image.height

    plain = grid_size(IGOSCallback(**FAST))
    named = grid_size(IGOSCallback(class_names=NAMES, **FAST))
    module = _module()
    module.class_names = NAMES  # a module attribute the user already has
    from_module = grid_size(IGOSCallback(**FAST), module=module)
    assert named[1] > plain[1] and from_module == named


# ----------------------------------------------------------------------------- loggers


def test_wandb_gets_panels_with_names_at_the_scalars_step(tmp_path: Path, loaders, monkeypatch) -> None:
    pytest.importorskip("wandb", reason="wandb is in the dev extra")
    logger = offline_wandb_logger(tmp_path, monkeypatch)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", IGOSWarning)  # no PNG fallback warning: W&B took the images
            warnings.simplefilter("ignore", EmptyExplanationWarning)  # the tiny untrained model's masks
            trainer = _fit(tmp_path, IGOSCallback(class_names=NAMES, **FAST), loaders, logger=logger)
        summary = dict(logger.experiment.summary)
        assert summary["trainer/global_step"] == trainer.global_step - 1  # the step of the epoch-end scalars
        assert "igos/insertion_auc" in summary and "igos/seconds" in summary
        captions = summary["igos/probe_0"]["captions"]
        target = int(trainer.callbacks[0].probe[1][0])
        assert captions == [f"#0 class {target} ({NAMES[target]})"]
        assert summary["igos/overlays"]["_type"] == "images/separated"
        assert not (tmp_path / "igos").exists()
    finally:
        logger.experiment.finish()


def test_mlflow_gets_panel_artifacts_per_validation_run(tmp_path: Path, loaders, monkeypatch) -> None:
    pytest.importorskip("mlflow", reason="mlflow is in the dev extra")
    from pytorch_lightning.loggers import MLFlowLogger

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    logger = MLFlowLogger(experiment_name="igos-test", tracking_uri=(tmp_path / "mlruns").as_uri())
    with warnings.catch_warnings():
        warnings.simplefilter("error", IGOSWarning)
        warnings.simplefilter("ignore", EmptyExplanationWarning)  # the tiny untrained model's masks
        trainer = _fit(tmp_path, IGOSCallback(**FAST), loaders, logger=logger, max_epochs=2)
    client = logger.experiment
    folders = [f.path for f in client.list_artifacts(logger.run_id, "igos")]
    assert len(folders) == 2 and folders[-1] == f"igos/epoch_001_step_{trainer.global_step - 1:06d}"
    files = sorted(f.path.rsplit("/", 1)[1] for f in client.list_artifacts(logger.run_id, folders[0]))
    assert files == ["overlays.png", "probe_0.png", "probe_1.png"]
    assert "igos/insertion_auc" in client.get_run(logger.run_id).data.metrics


def test_tensorboard_layout_once_and_cost_scalars(tmp_path: Path, loaders) -> None:
    logger = TensorBoardLogger(tmp_path, name="tb")
    handler_records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            handler_records.append(record.getMessage())

    handler = Keep(level=logging.INFO)
    igos_logger = logging.getLogger("pytorch_lightning.callbacks.igos")
    igos_logger.addHandler(handler)
    level = igos_logger.level
    igos_logger.setLevel(logging.INFO)  # whatever other tests did to Lightning's logger levels
    try:
        callback = IGOSCallback(every_n_epochs=1, **FAST)
        trainer = _fit(tmp_path, callback, loaders, logger=logger, max_epochs=2)
        trainer.validate(trainer.lightning_module, loaders[1], verbose=False)
    finally:
        igos_logger.removeHandler(handler)
        igos_logger.setLevel(level)
    assert len(handler_records) == 1, handler_records
    assert handler_records[0].startswith("IGOSCallback igos: explaining 2 probe images with I-GOS took ")
    assert "model passes per image" in handler_records[0] and "every epoch" in handler_records[0]
    logger.experiment.flush()
    events = EventAccumulator(logger.log_dir, size_guidance={"tensors": 0, "scalars": 0})
    events.Reload()
    assert len(events.Tensors("custom_scalars__config__")) == 1  # three validation runs, one layout
    passes = [e.value for e in events.Scalars("igos/passes_per_image")]
    seconds = [e.value for e in events.Scalars("igos/seconds")]
    assert len(passes) == 3 and len(seconds) == 3
    # At least the solver's ig_steps gradient passes and the 2 * (metric_steps + 1) metric passes per image.
    assert all(p >= FAST["ig_steps"] + 2 * (FAST["metric_steps"] + 1) for p in passes)
    assert all(s > 0 for s in seconds)


def test_progress_bar_says_explanations_are_computed(tmp_path: Path, loaders) -> None:
    seen: list[str] = []

    class Watched(ObjectClassifier):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            bar = self.trainer.progress_bar_callback
            if not self.training and self.trainer.validating and torch.is_grad_enabled():
                seen.append(bar.val_progress_bar.desc)  # the solver's gradient passes
            return super().forward(x)

    torch.manual_seed(0)
    module = Watched(num_classes=4, width=4)
    bar = TQDMProgressBar()
    _fit(tmp_path, IGOSCallback(log_images=False, **FAST), loaders, module=module, enable_progress_bar=True,
         callbacks=[bar])
    assert seen and all(text == "igos: explaining 2 probe images with I-GOS" for text in seen)
